//! hostbrick's private state directory (`/run/hostbrick` under the host's /run) and the
//! rules for every file in it.
//!
//! hostbrick runs as root on hosts with local users, so nothing it keeps may be reachable
//! by them:
//!
//! - every directory is created mode 0700, and one that exists is used only when it is a
//!   real directory (not a symlink) owned by the running user (the effective uid) that
//!   neither the group nor others can write to ([`Error::UnsafeStateDir`] otherwise). A
//!   directory of ours that others may only read or search (the 0755 that an earlier
//!   hostbrick left) is tightened to 0700 when hostbrick next writes in it;
//! - files are created with `O_EXCL | O_NOFOLLOW` and mode 0600 from the start, and
//!   opened with `O_NOFOLLOW`: a planted symlink is refused, never followed;
//! - records are replaced atomically (a temporary file in the same directory, written,
//!   synced, renamed over the record, then the directory synced).
//!
//! The layout: `locks/` (the default lock directory), `attachments/<protocol>/` (the
//! attachment registry) and `keyrings/` (short-lived Ceph keyrings).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::OFlag;

use crate::error::{Error, Result};

/// The mode of every directory hostbrick creates for its state.
pub(crate) const DIR_MODE: u32 = 0o700;

/// The mode of every file hostbrick creates for its state.
pub(crate) const FILE_MODE: u32 = 0o600;

/// `O_NOFOLLOW`, for [`OpenOptionsExt::custom_flags`].
pub(crate) fn nofollow() -> i32 {
    OFlag::O_NOFOLLOW.bits()
}

/// The effective uid of this process: the owner every state directory must have.
pub(crate) fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn unsafe_path(path: &Path, reason: impl Into<String>) -> Error {
    Error::UnsafeStateDir {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Why the directory `meta` describes may not hold hostbrick's state, if it may not.
/// Group or other read and search bits alone are no reason: nobody else can change
/// what such a directory holds.
fn refusal(meta: &fs::Metadata) -> Option<String> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        return Some("it is a symbolic link".into());
    }
    if !ft.is_dir() {
        return Some("it is not a directory".into());
    }
    let me = euid();
    if meta.uid() != me {
        return Some(format!("it is owned by uid {}, not {me}", meta.uid()));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Some(format!(
            "its mode {mode:04o} lets the group or others write to it (want 0700)"
        ));
    }
    None
}

/// Checks the directory `path` without creating or changing anything: `Ok(false)` when it
/// does not exist, `Ok(true)` when it is safe to read, [`Error::UnsafeStateDir`] otherwise.
pub(crate) fn check_dir(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(meta) => match refusal(&meta) {
            Some(reason) => Err(unsafe_path(path, reason)),
            None => Ok(true),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Checks `root` and each directory of `rel` below it without creating or changing
/// anything: the full path when all exist and are safe, `None` when one is missing.
pub(crate) fn existing_dir(root: &Path, rel: &[&str]) -> Result<Option<PathBuf>> {
    let mut path = root.to_path_buf();
    if !check_dir(&path)? {
        return Ok(None);
    }
    for part in rel {
        path.push(part);
        if !check_dir(&path)? {
            return Ok(None);
        }
    }
    Ok(Some(path))
}

/// Makes `path` a private directory: created mode 0700 when missing (`parents` creates
/// its missing parents too, also 0700), then checked as [`check_dir`] does and, when
/// others may still read or search it, tightened to 0700 (through a descriptor opened
/// without following links, so the change lands on the directory checked).
fn ensure_one(path: &Path, parents: bool) -> Result<()> {
    let created = fs::DirBuilder::new()
        .recursive(parents)
        .mode(DIR_MODE)
        .create(path);
    match created {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(path, e)),
    }
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits())
        .open(path)
        .map_err(|e| {
            // A symlink or a file in the way (ELOOP, ENOTDIR): say which.
            match fs::symlink_metadata(path).ok().as_ref().and_then(refusal) {
                Some(reason) => unsafe_path(path, reason),
                None => Error::io(path, e),
            }
        })?;
    let meta = dir.metadata().map_err(|e| Error::io(path, e))?;
    if let Some(reason) = refusal(&meta) {
        return Err(unsafe_path(path, reason));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        tracing::info!(dir = %path.display(), mode = format!("{mode:04o}"), "tightening a state directory to 0700");
        dir.set_permissions(fs::Permissions::from_mode(DIR_MODE))
            .map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// Makes `root` (and its missing parents) and each directory of `rel` below it private
/// directories (see [`ensure_one`]); returns the full path.
pub(crate) fn ensure_dir(root: &Path, rel: &[&str]) -> Result<PathBuf> {
    ensure_one(root, true)?;
    let mut path = root.to_path_buf();
    for part in rel {
        path.push(part);
        ensure_one(&path, false)?;
    }
    Ok(path)
}

/// Maps a key to a file name: safe characters kept (at most 120), the rest replaced by
/// `_`, then `-`, a 64-bit hash of the whole key in hex, and `ext`. Distinct keys never
/// share a file, whatever characters they differ in (`a/b` and `a_b`).
pub(crate) fn key_file_name(key: &str, ext: &str) -> String {
    let mut name = safe_name(key, 120);
    name.push('-');
    name.push_str(&format!("{:016x}", fnv1a(key.as_bytes())));
    name.push_str(ext);
    name
}

/// `key` with every character other than ASCII letters, digits, `.`, `-` and `_` replaced
/// by `_`, cut to `max` characters.
pub(crate) fn safe_name(key: &str, max: usize) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(max)
        .collect()
}

/// The part of a name [`key_file_name`] made before its hash, when `stem` (the name
/// without its extension) is one.
pub(crate) fn strip_key_hash(stem: &str) -> Option<&str> {
    let (head, hash) = stem.rsplit_once('-')?;
    (hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(head)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// True when `e` is the error of an `O_NOFOLLOW` open of a symlink.
pub(crate) fn is_symlink_refusal(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(nix::Error::ELOOP as i32)
}

/// The error for a state file that `O_NOFOLLOW` found to be a symlink (`e` is ELOOP), or
/// the plain I/O error.
pub(crate) fn open_error(path: &Path, e: std::io::Error) -> Error {
    if is_symlink_refusal(&e) {
        unsafe_path(path, "it is a symbolic link")
    } else {
        Error::io(path, e)
    }
}

/// Creates the new file `path` for writing: `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600
/// from the start (never widened by the umask nor narrowed later by a chmod).
pub(crate) fn create_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(nofollow())
        .open(path)
}

/// Opens an existing state file for reading without following a symlink.
pub(crate) fn open_read(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nofollow())
        .open(path)
}

/// Reads a whole state file without following a symlink; `None` when it does not exist.
pub(crate) fn read_file(path: &Path) -> Result<Option<Vec<u8>>> {
    let mut f = match open_read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(open_error(path, e)),
    };
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut out).map_err(|e| Error::io(path, e))?;
    Ok(Some(out))
}

/// Replaces (or creates) `dir/name` with `content` atomically: a new temporary file in
/// `dir` (see [`create_private`]), written and synced, renamed over `name` (a symlink
/// there is replaced, not followed), then `dir` synced. The temporary file is removed
/// when a step fails.
pub(crate) fn write_atomic(dir: &Path, name: &str, content: &[u8]) -> Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let path = dir.join(name);
    let write = || -> Result<()> {
        let mut f = create_private(&tmp).map_err(|e| open_error(&tmp, e))?;
        f.write_all(content).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// `fsync(2)` of a directory, so a rename or unlink in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits())
        .open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| open_error(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn directories_are_made_private_and_unsafe_ones_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("run/hostbrick");
        assert_eq!(existing_dir(&root, &["locks"]).unwrap(), None);
        let locks = ensure_dir(&root, &["locks"]).unwrap();
        assert_eq!(locks, root.join("locks"));
        assert_eq!((mode(&root), mode(&locks)), (0o700, 0o700));
        assert_eq!(
            existing_dir(&root, &["locks"]).unwrap(),
            Some(locks.clone())
        );

        // Readable by others (as an earlier hostbrick left it): read as is, tightened on write.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_dir(&root).unwrap());
        assert_eq!(mode(&root), 0o755, "a check changes nothing");
        ensure_dir(&root, &[]).unwrap();
        assert_eq!(mode(&root), 0o700);

        for bad in [0o770, 0o702, 0o1777] {
            fs::set_permissions(&root, fs::Permissions::from_mode(bad)).unwrap();
            for r in [
                ensure_dir(&root, &["locks"]),
                check_dir(&root).map(|_| root.clone()),
            ] {
                match r {
                    Err(Error::UnsafeStateDir { path, reason }) => {
                        assert_eq!(path, root);
                        assert!(reason.contains("write"), "{reason}");
                    }
                    other => panic!("{bad:o}: {other:?}"),
                }
            }
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();

        let link = d.path().join("link");
        symlink(&root, &link).unwrap();
        let e = ensure_dir(&link, &[]).unwrap_err();
        assert_eq!(e.kind(), "unsafe_state_dir");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(check_dir(&link).is_err());
        let file = d.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(ensure_dir(&file, &[])
            .unwrap_err()
            .to_string()
            .contains("not a directory"));
    }

    #[test]
    fn names_hash_the_whole_key() {
        let a = key_file_name("a/b", ".json");
        let b = key_file_name("a_b", ".json");
        assert_ne!(a, b);
        assert!(a.starts_with("a_b-") && a.ends_with(".json"));
        assert_eq!(strip_key_hash(a.trim_end_matches(".json")), Some("a_b"));
        assert_eq!(strip_key_hash("stale"), None);
        assert_eq!(strip_key_hash("x-notahash"), None);
    }

    #[test]
    fn files_are_private_from_creation_and_links_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let f = create_private(&p).unwrap();
        // Inspected through the new descriptor before anything is written or changed.
        assert_eq!(f.metadata().unwrap().mode() & 0o777, 0o600);
        assert!(create_private(&p).is_err(), "O_EXCL");
        drop(f);

        let target = d.path().join("target");
        fs::write(&target, "keep").unwrap();
        let link = d.path().join("link");
        symlink(&target, &link).unwrap();
        assert!(create_private(&link).is_err());
        let e = read_file(&link).unwrap_err();
        assert_eq!(e.kind(), "unsafe_state_dir");
        write_atomic(d.path(), "link", b"new").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(read_file(&link).unwrap().unwrap(), b"new");
        assert_eq!(mode(&link), 0o600);
        assert_eq!(read_file(&d.path().join("none")).unwrap(), None);
        let left: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty());
    }
}
