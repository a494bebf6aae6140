//! The encryption metadata a storage service returns for a volume (Cinder's
//! `GET /volumes/{id}/encryption`, which Nova hands to os-brick's encryptors as keyword
//! arguments), parsed into a typed value.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Which dm-crypt format the host opens the volume with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionProvider {
    /// A LUKS1 header (os-brick's `LuksEncryptor`).
    Luks,
    /// A LUKS2 header (os-brick's `Luks2Encryptor`).
    Luks2,
    /// Plain dm-crypt, no header (os-brick's `CryptsetupEncryptor`).
    Plain,
}

impl EncryptionProvider {
    /// The short name Cinder stores (`luks`, `luks2`, `plain`).
    pub fn as_str(self) -> &'static str {
        match self {
            EncryptionProvider::Luks => "luks",
            EncryptionProvider::Luks2 => "luks2",
            EncryptionProvider::Plain => "plain",
        }
    }

    /// The provider a Cinder `provider` value names: `Ok(None)` for os-brick's no-op
    /// encryptor. Accepts the short names and every class-path spelling os-brick still
    /// maps (Nova's in-tree classes, os-brick's, and the bare class names).
    pub fn parse(value: &str) -> Result<Option<EncryptionProvider>> {
        use EncryptionProvider::*;
        let p = match value {
            "luks"
            | "LuksEncryptor"
            | "nova.volume.encryptors.luks.LuksEncryptor"
            | "os_brick.encryptors.luks.LuksEncryptor" => Some(Luks),
            "luks2" | "Luks2Encryptor" | "os_brick.encryptors.luks.Luks2Encryptor" => Some(Luks2),
            "plain"
            | "CryptsetupEncryptor"
            | "nova.volume.encryptors.cryptsetup.CryptsetupEncryptor"
            | "os_brick.encryptors.cryptsetup.CryptsetupEncryptor" => Some(Plain),
            "NoOpEncryptor"
            | "nova.volume.encryptors.nop.NoopEncryptor"
            | "os_brick.encryptors.nop.NoopEncryptor"
            | "os_brick.encryptors.nop.NoOpEncryptor" => None,
            other => {
                return Err(invalid(
                    "provider",
                    format!(
                        "unknown encryption provider {other:?}: accepted are luks, luks2, plain \
                         and os-brick's class names (out-of-tree encryptor classes are not loaded)"
                    ),
                ))
            }
        };
        Ok(p)
    }
}

impl fmt::Display for EncryptionProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the volume is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ControlLocation {
    /// The host (or QEMU) encrypts: hostbrick opens the volume.
    #[serde(rename = "front-end")]
    FrontEnd,
    /// The storage array encrypts: the host sees plaintext and does nothing.
    #[serde(rename = "back-end")]
    BackEnd,
}

/// A volume's encryption metadata as Cinder returns it.
///
/// ```
/// use hostbrick::encryption::{ControlLocation, EncryptionMetadata, EncryptionProvider};
/// let meta = EncryptionMetadata::from_json(r#"{
///     "provider": "luks", "cipher": "aes-xts-plain64", "key_size": 256,
///     "control_location": "front-end",
///     "encryption_key_id": "1e6f3f3a-6f5c-4c49-a4a4-29e4f1d2d1b7"
/// }"#).unwrap().unwrap();
/// assert_eq!(meta.provider, Some(EncryptionProvider::Luks));
/// assert!(meta.host_decrypts());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionMetadata {
    /// The format; `None` is os-brick's no-op encryptor (nothing to open).
    pub provider: Option<EncryptionProvider>,
    /// The dm-crypt cipher spec (`aes-xts-plain64`); cryptsetup's default when `None`.
    pub cipher: Option<String>,
    /// The key size in bits; cryptsetup's default when `None`.
    pub key_size: Option<u32>,
    /// Who encrypts.
    pub control_location: ControlLocation,
    /// The key manager's id of the volume's key.
    pub encryption_key_id: Option<String>,
}

impl EncryptionMetadata {
    /// Parses the metadata; `Ok(None)` for a volume without encryption (`null`, `{}`, or an
    /// object with neither a provider nor a key id, as Cinder returns for a plain volume).
    pub fn from_value(v: &Value) -> Result<Option<EncryptionMetadata>> {
        let obj = match v {
            Value::Null => return Ok(None),
            Value::Object(o) => o,
            other => {
                return Err(invalid(
                    "encryption",
                    format!("expected an object, found {}", kind(other)),
                ))
            }
        };
        let provider_text = str_field(obj, "provider")?;
        let key_id = str_field(obj, "encryption_key_id")?;
        if provider_text.is_none() && key_id.is_none() {
            return Ok(None);
        }
        let provider = match provider_text {
            Some(p) => EncryptionProvider::parse(p)?,
            None => None,
        };
        let control_location = match str_field(obj, "control_location")? {
            None => ControlLocation::FrontEnd,
            Some(l) if l.eq_ignore_ascii_case("front-end") => ControlLocation::FrontEnd,
            Some(l) if l.eq_ignore_ascii_case("back-end") => ControlLocation::BackEnd,
            Some(other) => {
                return Err(invalid(
                    "control_location",
                    format!("{other:?} is neither front-end nor back-end"),
                ))
            }
        };
        let cipher = str_field(obj, "cipher")?.map(check_cipher).transpose()?;
        let key_size = key_size(obj.get("key_size"))?;
        let encryption_key_id = key_id.map(check_key_id).transpose()?;
        let meta = EncryptionMetadata {
            provider,
            cipher,
            key_size,
            control_location,
            encryption_key_id,
        };
        if meta.host_decrypts() && meta.encryption_key_id.is_none() {
            return Err(invalid(
                "encryption_key_id",
                "a front-end encrypted volume needs a key id",
            ));
        }
        Ok(Some(meta))
    }

    /// Parses the metadata from JSON text.
    pub fn from_json(text: &str) -> Result<Option<EncryptionMetadata>> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| invalid("encryption", e.to_string()))?;
        EncryptionMetadata::from_value(&v)
    }

    /// True when the host (or QEMU on it) must decrypt: front-end, with a provider.
    pub fn host_decrypts(&self) -> bool {
        self.control_location == ControlLocation::FrontEnd && self.provider.is_some()
    }

    /// The key id, or the error for metadata without one.
    pub fn key_id(&self) -> Result<&str> {
        self.encryption_key_id
            .as_deref()
            .ok_or_else(|| invalid("encryption_key_id", "missing"))
    }
}

pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::InvalidEncryption {
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(
            key,
            format!("expected a string, found {}", kind(other)),
        )),
    }
}

/// A cipher spec goes to cryptsetup's `--cipher`: dm-crypt spellings only
/// (`aes-xts-plain64`, `capi:xts(aes)-plain64`), never something that reads as an option.
fn check_cipher(c: &str) -> Result<String> {
    let ok = c.len() <= 128
        && c.chars()
            .next()
            .is_some_and(|ch| ch.is_ascii_alphanumeric())
        && c.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_:()".contains(ch));
    if ok {
        Ok(c.to_string())
    } else {
        Err(invalid(
            "cipher",
            format!("{c:?} is not a dm-crypt cipher spec"),
        ))
    }
}

/// A key size in bits: a number or a numeric string, a multiple of 8 from 64 to 4096.
fn key_size(v: Option<&Value>) -> Result<Option<u32>> {
    let n = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(other) => {
            return Err(invalid(
                "key_size",
                format!("expected a number, found {}", kind(other)),
            ))
        }
    };
    match n {
        Some(n) if (64..=4096).contains(&n) && n % 8 == 0 => Ok(u32::try_from(n).ok()),
        _ => Err(invalid(
            "key_size",
            format!(
                "{v:?} is not a key size in bits (a multiple of 8 from 64 to 4096)",
                v = v.map(|v| v.to_string()).unwrap_or_default()
            ),
        )),
    }
}

/// A key id names a file of the file key manager and a dm name part: letters, digits,
/// `-`, `_`, `.`, not starting with a dot, at most 255 bytes.
pub(crate) fn check_key_id(id: &str) -> Result<String> {
    let ok = !id.is_empty()
        && id.len() <= 255
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(id.to_string())
    } else {
        Err(invalid(
            "encryption_key_id",
            format!("{id:?} is not a key id (letters, digits, '-', '_', '.'; no leading dot)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Option<EncryptionMetadata>> {
        EncryptionMetadata::from_value(&v)
    }

    #[test]
    fn every_provider_spelling() {
        use EncryptionProvider::*;
        for (name, want) in [
            ("luks", Some(Luks)),
            ("LuksEncryptor", Some(Luks)),
            ("nova.volume.encryptors.luks.LuksEncryptor", Some(Luks)),
            ("os_brick.encryptors.luks.LuksEncryptor", Some(Luks)),
            ("luks2", Some(Luks2)),
            ("Luks2Encryptor", Some(Luks2)),
            ("os_brick.encryptors.luks.Luks2Encryptor", Some(Luks2)),
            ("plain", Some(Plain)),
            ("CryptsetupEncryptor", Some(Plain)),
            (
                "nova.volume.encryptors.cryptsetup.CryptsetupEncryptor",
                Some(Plain),
            ),
            (
                "os_brick.encryptors.cryptsetup.CryptsetupEncryptor",
                Some(Plain),
            ),
            ("NoOpEncryptor", None),
            ("nova.volume.encryptors.nop.NoopEncryptor", None),
            ("os_brick.encryptors.nop.NoopEncryptor", None),
        ] {
            assert_eq!(EncryptionProvider::parse(name).unwrap(), want, "{name}");
            let m = parse(json!({"provider": name, "control_location": "front-end",
                                 "encryption_key_id": "k1"}))
            .unwrap()
            .unwrap();
            assert_eq!(m.provider, want);
            assert_eq!(m.host_decrypts(), want.is_some());
        }
        let e = EncryptionProvider::parse("my.own.Encryptor").unwrap_err();
        assert_eq!(e.kind(), "invalid_encryption");
    }

    #[test]
    fn cinder_shapes() {
        let m = parse(
            json!({"provider": "luks", "cipher": "aes-xts-plain64", "key_size": 256,
                             "control_location": "FRONT-END", "encryption_key_id": "abc-1"}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(m.cipher.as_deref(), Some("aes-xts-plain64"));
        assert_eq!(m.key_size, Some(256));
        assert_eq!(m.control_location, ControlLocation::FrontEnd);
        assert_eq!(m.key_id().unwrap(), "abc-1");
        // key_size as a string, cipher null
        let m = parse(
            json!({"provider": "plain", "key_size": "512", "cipher": null,
                             "encryption_key_id": "k"}),
        )
        .unwrap()
        .unwrap();
        assert_eq!((m.key_size, m.cipher), (Some(512), None));
        // back-end: the array encrypts, no key needed
        let m = parse(json!({"provider": "luks", "control_location": "back-end"}))
            .unwrap()
            .unwrap();
        assert!(!m.host_decrypts());
        // not encrypted
        assert_eq!(parse(json!({})).unwrap(), None);
        assert_eq!(parse(Value::Null).unwrap(), None);
        assert_eq!(
            parse(json!({"provider": null, "encryption_key_id": null, "cipher": null})).unwrap(),
            None
        );
    }

    #[test]
    fn bad_metadata_is_a_typed_error() {
        for (v, field) in [
            (json!([]), "encryption"),
            (json!({"provider": 3}), "provider"),
            (json!({"provider": "luks"}), "encryption_key_id"),
            (
                json!({"provider": "luks", "encryption_key_id": "../etc/passwd"}),
                "encryption_key_id",
            ),
            (
                json!({"provider": "luks", "encryption_key_id": ".hidden"}),
                "encryption_key_id",
            ),
            (
                json!({"provider": "luks", "encryption_key_id": "k", "control_location": "middle"}),
                "control_location",
            ),
            (
                json!({"provider": "luks", "encryption_key_id": "k", "cipher": "--key-file=/x"}),
                "cipher",
            ),
            (
                json!({"provider": "luks", "encryption_key_id": "k", "cipher": "aes xts"}),
                "cipher",
            ),
            (
                json!({"provider": "luks", "encryption_key_id": "k", "key_size": 100}),
                "key_size",
            ),
            (
                json!({"provider": "luks", "encryption_key_id": "k", "key_size": -8}),
                "key_size",
            ),
            (
                json!({"provider": "luks", "encryption_key_id": "k", "key_size": "big"}),
                "key_size",
            ),
            (
                json!({"provider": "luks", "encryption_key_id": "k", "key_size": true}),
                "key_size",
            ),
        ] {
            match parse(v.clone()) {
                Err(Error::InvalidEncryption { field: f, .. }) => assert_eq!(f, field, "{v}"),
                other => panic!("{v}: {other:?}"),
            }
        }
        assert!(EncryptionMetadata::from_json("{").is_err());
    }
}
