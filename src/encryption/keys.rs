//! Keys: what a key manager returns for a volume's `encryption_key_id`, the passphrase
//! cryptsetup gets from it (as os-brick derives it), and a key manager over a directory.

use std::fmt;
use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::metadata::check_key_id;
use crate::error::{Error, Result};
use crate::model::secret::Secret;
use crate::platform::state;

/// What kind of secret a key manager holds (castellan's `managed_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Binary key material (Cinder's `symmetric` keys): the passphrase is its hex form.
    Symmetric,
    /// A passphrase used as it is (Nova's `passphrase` secrets).
    Passphrase,
}

/// A volume's key. `Debug` prints only its kind and length; the bytes are zeroed on drop.
pub struct EncryptionKey {
    kind: KeyKind,
    bytes: Zeroizing<Vec<u8>>,
}

impl EncryptionKey {
    /// Binary key material.
    pub fn symmetric(bytes: impl Into<Vec<u8>>) -> Self {
        EncryptionKey {
            kind: KeyKind::Symmetric,
            bytes: Zeroizing::new(bytes.into()),
        }
    }

    /// A passphrase secret.
    pub fn passphrase(text: impl Into<Vec<u8>>) -> Self {
        EncryptionKey {
            kind: KeyKind::Passphrase,
            bytes: Zeroizing::new(text.into()),
        }
    }

    fn owned(kind: KeyKind, bytes: Zeroizing<Vec<u8>>) -> Self {
        EncryptionKey { kind, bytes }
    }

    /// The kind of secret.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The raw bytes. Call only where they are handed on.
    pub fn expose(&self) -> &[u8] {
        &self.bytes
    }

    /// The passphrase cryptsetup (and QEMU's LUKS driver) gets, derived exactly as
    /// os-brick's `get_passphrase_from_secret`: a `passphrase` secret as it is, any other
    /// key as lowercase hex (`binascii.hexlify`). A passphrase that is not UTF-8 is refused.
    pub fn cryptsetup_passphrase(&self) -> Result<Secret> {
        match self.kind {
            KeyKind::Symmetric => {
                let mut hex = Zeroizing::new(String::with_capacity(self.bytes.len() * 2));
                for b in self.bytes.iter() {
                    hex.push(char::from(HEX[usize::from(b >> 4)]));
                    hex.push(char::from(HEX[usize::from(b & 0xf)]));
                }
                Ok(Secret::new(hex.as_str()))
            }
            KeyKind::Passphrase => {
                std::str::from_utf8(&self.bytes)
                    .map(Secret::new)
                    .map_err(|_| Error::InvalidEncryption {
                        field: "key".into(),
                        reason: "a passphrase secret that is not UTF-8 text".into(),
                    })
            }
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EncryptionKey({:?}, {} bytes, ***)",
            self.kind,
            self.bytes.len()
        )
    }
}

/// Returns the key of an `encryption_key_id` (Barbican through castellan in OpenStack).
pub trait KeyManager: Send + Sync + fmt::Debug {
    /// The key, or [`Error::KeyNotFound`] when the manager has none under `key_id`.
    fn key(&self, key_id: &str) -> Result<EncryptionKey>;
}

/// The largest key file read (a key or passphrase is far smaller).
const MAX_KEY_FILE: u64 = 4096;

/// A key manager over a directory of one file per key id, for examples and hosts whose
/// keys an outside controller places.
///
/// - `DIR/<key id>` holds a symmetric key as hexadecimal text (surrounding white space is
///   ignored), as `openssl rand -hex 32` writes it;
/// - `DIR/<key id>.passphrase` holds a passphrase used as it is (a trailing newline is not
///   part of it).
///
/// The directory must be owned by this user and closed to the group and others (0700);
/// each key file a regular file of this user, mode 0600 or tighter, not a symlink.
/// Anything else is refused with [`Error::UnsafeStateDir`] before a byte is read.
#[derive(Debug, Clone)]
pub struct FileKeyManager {
    dir: PathBuf,
}

impl FileKeyManager {
    /// A key manager over `dir`, checked now (it must exist and be private).
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        check_private(&dir, true)?;
        Ok(FileKeyManager { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let path = self.dir.join(name);
        let mut f = match state::open_read(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(state::open_error(&path, e)),
        };
        let meta = f.metadata().map_err(|e| Error::io(&path, e))?;
        check_private_meta(&path, &meta, false)?;
        if meta.len() > MAX_KEY_FILE {
            return Err(Error::UnexpectedContent {
                path,
                reason: format!(
                    "a key file of {} bytes (at most {MAX_KEY_FILE})",
                    meta.len()
                ),
            });
        }
        let mut out = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
        f.read_to_end(&mut out).map_err(|e| Error::io(&path, e))?;
        Ok(Some(out))
    }
}

impl KeyManager for FileKeyManager {
    fn key(&self, key_id: &str) -> Result<EncryptionKey> {
        let id = check_key_id(key_id)?;
        check_private(&self.dir, true)?;
        if let Some(text) = self.read(&id)? {
            let path = self.dir.join(&id);
            return decode_hex(&text)
                .map(|b| EncryptionKey::owned(KeyKind::Symmetric, b))
                .ok_or_else(|| Error::UnexpectedContent {
                    path,
                    reason: "not a key in hexadecimal text".into(),
                });
        }
        if let Some(mut text) = self.read(&format!("{id}.passphrase"))? {
            while text.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                text.pop();
            }
            return Ok(EncryptionKey::owned(KeyKind::Passphrase, text));
        }
        Err(Error::KeyNotFound { key_id: id })
    }
}

/// Hex text (white space around it ignored) to bytes; `None` if it is not hex or empty.
fn decode_hex(text: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let t = text.trim_ascii();
    if t.is_empty() || t.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Zeroizing::new(Vec::with_capacity(t.len() / 2));
    for pair in t.chunks(2) {
        out.push(digit(pair[0])? << 4 | digit(pair[1])?);
    }
    Some(out)
}

fn check_private(path: &Path, dir: bool) -> Result<()> {
    let meta = fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
    check_private_meta(path, &meta, dir)
}

/// A key directory (0700) or key file (0600): this user's, not a symlink, nothing for the
/// group or others.
fn check_private_meta(path: &Path, meta: &fs::Metadata, dir: bool) -> Result<()> {
    let refuse = |reason: String| {
        Err(Error::UnsafeStateDir {
            path: path.to_path_buf(),
            reason,
        })
    };
    let ft = meta.file_type();
    if ft.is_symlink() {
        return refuse("it is a symbolic link".into());
    }
    if dir && !ft.is_dir() {
        return refuse("it is not a directory".into());
    }
    if !dir && !ft.is_file() {
        return refuse("it is not a regular file".into());
    }
    let me = state::euid();
    if meta.uid() != me {
        return refuse(format!("it is owned by uid {}, not {me}", meta.uid()));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        let want = if dir { "0700" } else { "0600" };
        return refuse(format!(
            "its mode {mode:04o} opens it to the group or others (want {want})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn private_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    fn put(dir: &Path, name: &str, content: &str, mode: u32) {
        let p = dir.join(name);
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn passphrase_is_os_bricks_hexlify() {
        // Leading zero nibbles stay: binascii.hexlify(b"\x00\x0f\xa0") == b"000fa0".
        let k = EncryptionKey::symmetric(vec![0x00, 0x0f, 0xa0, 0xff]);
        assert_eq!(k.cryptsetup_passphrase().unwrap().expose(), "000fa0ff");
        let p = EncryptionKey::passphrase("correct horse");
        assert_eq!(p.cryptsetup_passphrase().unwrap().expose(), "correct horse");
        let bad = EncryptionKey::passphrase(vec![0xff, 0xfe]);
        assert_eq!(
            bad.cryptsetup_passphrase().unwrap_err().kind(),
            "invalid_encryption"
        );
        let shown = format!("{k:?}");
        assert!(
            !shown.contains("0f") && shown.contains("4 bytes"),
            "{shown}"
        );
    }

    #[test]
    fn file_key_manager_reads_hex_and_passphrase_files() {
        let d = private_dir();
        put(
            d.path(),
            "vol-key-1",
            "00112233445566778899aabbccddeeff\n",
            0o600,
        );
        put(d.path(), "vol-key-2.passphrase", "s3cret words\n", 0o400);
        let km = FileKeyManager::new(d.path()).unwrap();
        let k = km.key("vol-key-1").unwrap();
        assert_eq!(k.kind(), KeyKind::Symmetric);
        assert_eq!(k.expose()[..3], [0x00, 0x11, 0x22]);
        assert_eq!(
            k.cryptsetup_passphrase().unwrap().expose(),
            "00112233445566778899aabbccddeeff"
        );
        let p = km.key("vol-key-2").unwrap();
        assert_eq!(
            (p.kind(), p.expose()),
            (KeyKind::Passphrase, &b"s3cret words"[..])
        );
        match km.key("missing") {
            Err(Error::KeyNotFound { key_id }) => assert_eq!(key_id, "missing"),
            other => panic!("{other:?}"),
        }
        assert_eq!(km.key("../x").unwrap_err().kind(), "invalid_encryption");
    }

    #[test]
    fn file_key_manager_refuses_what_others_could_read_or_plant() {
        let open = tempfile::tempdir().unwrap();
        fs::set_permissions(open.path(), fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            FileKeyManager::new(open.path()).unwrap_err().kind(),
            "unsafe_state_dir"
        );

        let d = private_dir();
        put(d.path(), "readable", "00ff", 0o644);
        put(d.path(), "nothex", "zz", 0o600);
        put(d.path(), "odd", "abc", 0o600);
        let elsewhere = private_dir();
        put(elsewhere.path(), "real", "00ff", 0o600);
        std::os::unix::fs::symlink(elsewhere.path().join("real"), d.path().join("link")).unwrap();
        fs::create_dir(d.path().join("adir")).unwrap();
        let km = FileKeyManager::new(d.path()).unwrap();
        for id in ["readable", "link", "adir"] {
            assert_eq!(km.key(id).unwrap_err().kind(), "unsafe_state_dir", "{id}");
        }
        for id in ["nothex", "odd"] {
            let e = km.key(id).unwrap_err();
            assert_eq!(e.kind(), "unexpected_content", "{id}");
            assert!(!e.chain().contains("zz"), "{}", e.chain());
        }
    }
}
