//! The `cryptsetup` and `blkid` command lines the encryptors run, as os-brick's encryptors
//! write them, and the parser of `blkid -p -o export`. Building a command and reading its
//! answer are separate from running it, so both are table-tested.
//!
//! Every key goes to cryptsetup's stdin (`--key-file=-`: the whole input is the key, a
//! trailing newline included, as os-brick passes it), never into the argument vector.

use std::path::Path;
use std::time::{Duration, Instant};

use super::metadata::EncryptionMetadata;
use crate::error::Result;
use crate::model::secret::Secret;
use crate::platform::cmd::{Command, CommandOutput};

/// cryptsetup's exit code for a passphrase that opens no key slot ("No key available with
/// this passphrase").
pub const EXIT_WRONG_KEY: i32 = 2;
/// cryptsetup's exit code for wrong parameters, and for a device that is not LUKS.
pub const EXIT_INVALID: i32 = 1;
/// cryptsetup's exit code for a device that does not exist (`luksClose` of a mapping
/// that is not open: os-brick's idempotent close accepts it).
pub const EXIT_NO_DEVICE: i32 = 4;

/// `blkid`'s exit code when it finds nothing on the device.
pub const BLKID_NOTHING: i32 = 2;
/// `blkid`'s exit code when it finds several signatures that contradict each other.
pub const BLKID_AMBIVALENT: i32 = 8;

/// The longest a single cryptsetup call may take: a LUKS format or open runs the key
/// derivation function (PBKDF2 or argon2i, about a second each by cryptsetup's defaults,
/// more on a slow host) and may wait for udev.
pub const CRYPTSETUP_TIMEOUT: Duration = Duration::from_secs(120);

/// The longest a `blkid` probe may take.
pub const BLKID_TIMEOUT: Duration = Duration::from_secs(30);

fn cryptsetup(deadline: Instant) -> Command {
    Command::new("cryptsetup")
        .timeout(CRYPTSETUP_TIMEOUT)
        .deadline(deadline)
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

/// `cryptsetup luksOpen --key-file=- RAW NAME` (os-brick's `LuksEncryptor._open_volume`).
pub fn luks_open(raw: &Path, name: &str, key: &Secret, deadline: Instant) -> Command {
    cryptsetup(deadline)
        .args(["luksOpen", "--key-file=-"])
        .arg(path_arg(raw))
        .arg(name)
        .stdin_secret(key)
}

/// `cryptsetup isLuks --verbose RAW` (os-brick's `is_luks`): exit 0 when it is LUKS.
pub fn is_luks(raw: &Path, deadline: Instant) -> Command {
    cryptsetup(deadline)
        .args(["isLuks", "--verbose"])
        .arg(path_arg(raw))
}

/// `--cipher C` and `--key-size N` when the metadata sets them.
fn cipher_args(mut cmd: Command, meta: &EncryptionMetadata) -> Command {
    if let Some(c) = &meta.cipher {
        cmd = cmd.arg("--cipher").arg(c.as_str());
    }
    if let Some(k) = meta.key_size {
        cmd = cmd.arg("--key-size").arg(k.to_string());
    }
    cmd
}

/// `cryptsetup --batch-mode luksFormat --type luks1|luks2 --key-file=- [--cipher C]
/// [--key-size N] RAW` (os-brick's `_format_luks_volume`).
pub fn luks_format(
    raw: &Path,
    luks_type: &str,
    meta: &EncryptionMetadata,
    key: &Secret,
    deadline: Instant,
) -> Command {
    let cmd = cryptsetup(deadline).args([
        "--batch-mode",
        "luksFormat",
        "--type",
        luks_type,
        "--key-file=-",
    ]);
    cipher_args(cmd, meta).arg(path_arg(raw)).stdin_secret(key)
}

/// `cryptsetup create --key-file=- [--cipher C] [--key-size N] NAME RAW` (os-brick's
/// `CryptsetupEncryptor._open_volume`: plain dm-crypt, no header).
pub fn plain_create(
    raw: &Path,
    name: &str,
    meta: &EncryptionMetadata,
    key: &Secret,
    deadline: Instant,
) -> Command {
    let cmd = cryptsetup(deadline).args(["create", "--key-file=-"]);
    cipher_args(cmd, meta)
        .arg(name)
        .arg(path_arg(raw))
        .stdin_secret(key)
}

/// `cryptsetup luksClose NAME` (LUKS) or `cryptsetup remove NAME` (plain), as os-brick
/// closes; exit 4 (no such mapping) is success.
pub fn close(name: &str, plain: bool, deadline: Instant) -> Command {
    let verb = if plain { "remove" } else { "luksClose" };
    cryptsetup(deadline).arg(verb).arg(name)
}

/// `cryptsetup resize [--key-file=-] NAME`: the mapping takes the size of the device
/// beneath. A LUKS2 mapping whose volume key is not in the kernel keyring needs the
/// passphrase for it, so LUKS mappings get it on stdin; plain ones need none.
pub fn resize(name: &str, key: Option<&Secret>, deadline: Instant) -> Command {
    let cmd = cryptsetup(deadline).arg("resize");
    match key {
        Some(k) => cmd.arg("--key-file=-").arg(name).stdin_secret(k),
        None => cmd.arg(name),
    }
}

/// `blkid -p -o export RAW`: the low-level probe (no cache) of superblocks and partition
/// tables.
pub fn blkid_probe(raw: &Path, deadline: Instant) -> Command {
    Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(path_arg(raw))
        .timeout(BLKID_TIMEOUT)
        .deadline(deadline)
}

/// What a `blkid -p` run found: `None` for nothing (a blank device), else a short
/// description (`TYPE=ext4`, `PTTYPE=gpt`, `TYPE=crypto_LUKS`). Any other outcome (blkid
/// failed) is its error: a device that cannot be probed is never taken for blank.
pub fn signature(cmd: &Command, out: &CommandOutput) -> Result<Option<String>> {
    match out.status.code() {
        Some(0) => Ok(Some(describe_signature(&out.stdout))),
        Some(BLKID_NOTHING) => Ok(None),
        Some(BLKID_AMBIVALENT) => Ok(Some(
            "several contradicting signatures (blkid: ambivalent result)".to_string(),
        )),
        _ => Err(cmd.failure(out)),
    }
}

/// The signature keys of `blkid -o export` text, in a short description: the `TYPE`,
/// `PTTYPE` and `USAGE` values (e.g. `TYPE=ext4`), or the whole key list when it has none
/// of them.
pub fn describe_signature(export: &str) -> String {
    let pairs = parse_export(export);
    let wanted: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "TYPE" | "PTTYPE" | "USAGE"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !wanted.is_empty() {
        return wanted.join(" ");
    }
    let keys: Vec<&str> = pairs
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| *k != "DEVNAME")
        .collect();
    if keys.is_empty() {
        "a signature blkid does not name".to_string()
    } else {
        format!("a signature ({})", keys.join(", "))
    }
}

/// `KEY=value` lines of `blkid -o export`, in order (lines without `=` are skipped).
pub fn parse_export(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.trim().split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encryption::EncryptionMetadata;

    fn meta(v: serde_json::Value) -> EncryptionMetadata {
        EncryptionMetadata::from_value(&v).unwrap().unwrap()
    }

    #[test]
    fn command_lines_are_os_bricks_and_keys_only_on_stdin() {
        let key = Secret::new("00112233");
        let d = Instant::now() + Duration::from_secs(5);
        let raw = Path::new("/dev/sdb");
        let m = meta(
            serde_json::json!({"provider": "luks", "encryption_key_id": "k",
                                        "cipher": "aes-xts-plain64", "key_size": 512}),
        );
        let bare = meta(serde_json::json!({"provider": "luks2", "encryption_key_id": "k"}));
        for (cmd, shown, with_key) in [
            (
                luks_open(raw, "crypt-sdb", &key, d),
                "cryptsetup luksOpen --key-file=- /dev/sdb crypt-sdb <stdin ***>",
                true,
            ),
            (
                is_luks(raw, d),
                "cryptsetup isLuks --verbose /dev/sdb",
                false,
            ),
            (
                luks_format(raw, "luks1", &m, &key, d),
                "cryptsetup --batch-mode luksFormat --type luks1 --key-file=- --cipher \
                 aes-xts-plain64 --key-size 512 /dev/sdb <stdin ***>",
                true,
            ),
            (
                luks_format(raw, "luks2", &bare, &key, d),
                "cryptsetup --batch-mode luksFormat --type luks2 --key-file=- /dev/sdb <stdin ***>",
                true,
            ),
            (
                plain_create(raw, "crypt-sdb", &m, &key, d),
                "cryptsetup create --key-file=- --cipher aes-xts-plain64 --key-size 512 \
                 crypt-sdb /dev/sdb <stdin ***>",
                true,
            ),
            (
                close("crypt-sdb", false, d),
                "cryptsetup luksClose crypt-sdb",
                false,
            ),
            (
                close("crypt-sdb", true, d),
                "cryptsetup remove crypt-sdb",
                false,
            ),
            (
                resize("crypt-sdb", Some(&key), d),
                "cryptsetup resize --key-file=- crypt-sdb <stdin ***>",
                true,
            ),
            (
                resize("crypt-sdb", None, d),
                "cryptsetup resize crypt-sdb",
                false,
            ),
            (blkid_probe(raw, d), "blkid -p -o export /dev/sdb", false),
        ] {
            assert_eq!(cmd.to_string(), shown);
            assert!(!format!("{cmd:?}").contains("00112233"), "{cmd:?}");
            assert!(!cmd.shown_args().contains("00112233"));
            assert_eq!(
                cmd.stdin().map(|s| s.expose()),
                with_key.then_some("00112233"),
                "{shown}"
            );
            assert!(cmd.time_limit().is_some());
        }
    }

    #[test]
    fn blkid_outcomes() {
        let cmd = blkid_probe(Path::new("/dev/sdb"), Instant::now());
        let ext4 = "DEVNAME=/dev/sdb\nUUID=5b7c\nVERSION=1.0\nBLOCK_SIZE=4096\nTYPE=ext4\nUSAGE=filesystem\n";
        assert_eq!(
            signature(&cmd, &CommandOutput::ok(ext4))
                .unwrap()
                .as_deref(),
            Some("TYPE=ext4 USAGE=filesystem")
        );
        let gpt = "DEVNAME=/dev/sdb\nPTUUID=0c3a\nPTTYPE=gpt\n";
        assert_eq!(
            signature(&cmd, &CommandOutput::ok(gpt)).unwrap().as_deref(),
            Some("PTTYPE=gpt")
        );
        let luks = "DEVNAME=/dev/sdb\nUUID=1f2e\nVERSION=2\nTYPE=crypto_LUKS\nUSAGE=crypto\n";
        assert_eq!(
            signature(&cmd, &CommandOutput::ok(luks))
                .unwrap()
                .as_deref(),
            Some("TYPE=crypto_LUKS USAGE=crypto")
        );
        assert_eq!(
            signature(&cmd, &CommandOutput::ok("DEVNAME=/dev/sdb\nSBMAGIC=x\n"))
                .unwrap()
                .as_deref(),
            Some("a signature (SBMAGIC)")
        );
        assert_eq!(
            signature(&cmd, &CommandOutput::exit(BLKID_NOTHING, "")).unwrap(),
            None
        );
        assert!(signature(&cmd, &CommandOutput::exit(BLKID_AMBIVALENT, ""))
            .unwrap()
            .is_some());
        // blkid failing is never "blank".
        let e = signature(&cmd, &CommandOutput::exit(4, "usage")).unwrap_err();
        assert_eq!(e.kind(), "command_failed");
    }
}
