//! Cross-process locks: `flock(2)` on files in one lock directory.
//!
//! Locks are keyed narrowly: per volume for connect/disconnect, per target (portal + IQN)
//! for login/logout. Connects of one target share its lock; the logout check takes it
//! exclusively, so a session is never logged out under a LUN that is being attached.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};
use crate::platform::cancel;
use crate::platform::host::{Host, LOCKS_SUBDIR};
use crate::platform::state;

/// How often [`LockDir::lock_until`] tries a lock someone else holds again.
pub const LOCK_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A directory of lock files.
///
/// The directory is created mode 0700 and refused ([`Error::UnsafeStateDir`]) when it is
/// a symlink, not a directory, owned by another user or writable by the group or others;
/// lock files are created `O_EXCL | O_NOFOLLOW`, mode 0600, and never opened through a
/// symlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockDir {
    dir: PathBuf,
    /// The state directory `dir` is `locks/` of, checked too (the default lock directory).
    state: Option<PathBuf>,
}

/// Shared or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders at once (connects of one target).
    Shared,
    /// One holder (a volume's connect/disconnect, a target's logout).
    Exclusive,
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct LockGuard {
    _lock: Flock<File>,
    path: PathBuf,
    acquired: Instant,
}

impl LockGuard {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        tracing::trace!(lock = %self.path.display(), held_ms = self.acquired.elapsed().as_millis() as u64, "lock released");
    }
}

impl LockDir {
    /// Locks in `dir` (created on first use, mode 0700, with its missing parents; an
    /// existing one must pass the checks above).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LockDir {
            dir: dir.into(),
            state: None,
        }
    }

    /// The default lock directory of `host`: `locks/` in its private
    /// [state directory](Host::state_dir), which is checked (and created) too.
    pub fn default_for(host: &Host) -> Self {
        LockDir {
            dir: host.default_lock_dir(),
            state: Some(host.state_dir()),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates (or checks) the directory.
    fn ensure(&self) -> Result<()> {
        match &self.state {
            Some(root) => state::ensure_dir(root, &[LOCKS_SUBDIR]).map(drop),
            None => state::ensure_dir(&self.dir, &[]).map(drop),
        }
    }

    /// The directory when it exists and passes the checks, changing nothing.
    fn existing(&self) -> Result<bool> {
        match &self.state {
            Some(root) => Ok(state::existing_dir(root, &[LOCKS_SUBDIR])?.is_some()),
            None => state::check_dir(&self.dir),
        }
    }

    /// The lock file of `key`, opened (created when new) without following a symlink.
    fn open(&self, key: &str) -> Result<(File, PathBuf)> {
        self.ensure()?;
        let path = self.dir.join(file_name_for(key));
        let file = open_lock_file(&path)?;
        Ok((file, path))
    }

    /// Takes the lock named by `key` (any text; it is turned into a safe file name),
    /// blocking until it is free, however long that takes. Operations with a deadline
    /// use [`LockDir::lock_until`].
    pub fn lock(&self, key: &str, mode: LockMode) -> Result<LockGuard> {
        let (file, path) = self.open(key)?;
        let arg = match mode {
            LockMode::Shared => FlockArg::LockShared,
            LockMode::Exclusive => FlockArg::LockExclusive,
        };
        let started = Instant::now();
        let lock = match flock(&file, &path, arg)? {
            Ok(l) => l,
            Err(source) => return Err(Error::Lock { path, source }),
        };
        tracing::trace!(lock = %path.display(), ?mode, waited_ms = started.elapsed().as_millis() as u64, "lock taken");
        Ok(LockGuard {
            _lock: lock,
            path,
            acquired: Instant::now(),
        })
    }

    /// Takes the lock named by `key` like [`LockDir::lock`], waiting at most until
    /// `deadline`: a lock someone else holds is tried again every [`LOCK_POLL_INTERVAL`],
    /// and still held at the deadline it is [`Error::LockTimeout`] naming the key. A
    /// deadline already past still gets one try. Within an operation whose cancel fires
    /// the wait ends at the next try ([`Error::WaitCancelled`]).
    pub fn lock_until(&self, key: &str, mode: LockMode, deadline: Instant) -> Result<LockGuard> {
        let (mut file, path) = self.open(key)?;
        let arg = match mode {
            LockMode::Shared => FlockArg::LockSharedNonblock,
            LockMode::Exclusive => FlockArg::LockExclusiveNonblock,
        };
        let started = Instant::now();
        let lock = loop {
            match Flock::lock(file, arg) {
                Ok(l) => break l,
                Err((f, nix::Error::EINTR)) => file = f,
                Err((f, nix::Error::EWOULDBLOCK)) => {
                    cancel::check(|| format!("lock {key} ({})", path.display()))?;
                    let now = Instant::now();
                    if now >= deadline {
                        tracing::debug!(lock = %path.display(), key, ?mode, "lock still held at the deadline");
                        return Err(Error::LockTimeout {
                            key: key.to_string(),
                            path,
                            waited: started.elapsed(),
                        });
                    }
                    std::thread::sleep(LOCK_POLL_INTERVAL.min(deadline - now));
                    file = f;
                }
                Err((_, source)) => return Err(Error::Lock { path, source }),
            }
        };
        tracing::trace!(lock = %path.display(), ?mode, waited_ms = started.elapsed().as_millis() as u64, "lock taken");
        Ok(LockGuard {
            _lock: lock,
            path,
            acquired: Instant::now(),
        })
    }

    /// True when someone holds the lock named by `key` right now, in either mode. Creates
    /// nothing: a lock file that does not exist has never been taken. A free lock is taken
    /// for an instant to find out, so a taker arriving just then waits that long.
    pub fn is_held(&self, key: &str) -> Result<bool> {
        if !self.existing()? {
            return Ok(false);
        }
        let path = self.dir.join(file_name_for(key));
        let file = match state::open_read(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(state::open_error(&path, e)),
        };
        match flock(&file, &path, FlockArg::LockExclusiveNonblock)? {
            // Taken at once: nobody held it (released again on drop).
            Ok(_free) => Ok(false),
            Err(nix::Error::EWOULDBLOCK) => Ok(true),
            Err(source) => Err(Error::Lock { path, source }),
        }
    }
}

/// Opens the lock file `path`: created new (`O_EXCL | O_NOFOLLOW`, mode 0600) when it does
/// not exist, else opened without following a symlink; it must be a regular file of ours.
fn open_lock_file(path: &Path) -> Result<File> {
    // A lock file removed between the two opens is simply created on the next round.
    for _ in 0..8 {
        let file = match state::create_private(path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => match OpenOptions::new()
                .write(true)
                .custom_flags(state::nofollow())
                .open(path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(state::open_error(path, e)),
            },
            Err(e) => return Err(state::open_error(path, e)),
        };
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        let reason = if !meta.file_type().is_file() {
            Some("it is not a regular file".to_string())
        } else if meta.uid() != state::euid() {
            Some(format!(
                "it is owned by uid {}, not {}",
                meta.uid(),
                state::euid()
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(Error::UnsafeStateDir {
                path: path.to_path_buf(),
                reason,
            });
        }
        return Ok(file);
    }
    Err(Error::io(
        path,
        std::io::Error::new(ErrorKind::NotFound, "the lock file keeps disappearing"),
    ))
}

/// `flock(2)` on (a clone of) `file`, retried when a signal interrupts it. The outer error
/// is the clone failing; the inner one is flock's own answer.
fn flock(
    file: &File,
    path: &Path,
    arg: FlockArg,
) -> Result<std::result::Result<Flock<File>, nix::Error>> {
    loop {
        match Flock::lock(file.try_clone().map_err(|e| Error::io(path, e))?, arg) {
            Err((_, nix::Error::EINTR)) => continue,
            done => return Ok(done.map_err(|(_, e)| e)),
        }
    }
}

/// Maps a key to a lock file name: safe characters kept, the rest replaced, and a hash of
/// the whole key appended so that distinct keys never share a file.
fn file_name_for(key: &str) -> String {
    state::key_file_name(key, ".lock")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn names_are_safe_and_distinct() {
        let a = file_name_for("target 127.0.0.1:3260 iqn.x:y/../z");
        assert!(!a.contains('/') && !a.contains(' '));
        assert_ne!(file_name_for("a:b"), file_name_for("a_b"));
    }

    #[test]
    fn exclusive_waits_for_shared_holders() {
        let d = tempfile::tempdir().unwrap();
        let locks = LockDir::new(d.path().join("locks"));
        let s1 = locks.lock("t", LockMode::Shared).unwrap();
        let _s2 = locks.lock("t", LockMode::Shared).unwrap(); // shared holders coexist
        let done = Arc::new(AtomicBool::new(false));
        let (l2, done2) = (locks.clone(), done.clone());
        let t = std::thread::spawn(move || {
            let _x = l2.lock("t", LockMode::Exclusive).unwrap();
            done2.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(!done.load(Ordering::SeqCst));
        drop(s1);
        drop(_s2);
        t.join().unwrap();
        assert!(done.load(Ordering::SeqCst));
        // Different keys never wait on each other.
        assert!(!locks.is_held("t").unwrap());
        assert!(!locks.is_held("never-taken").unwrap());
        assert!(!locks.path().join(file_name_for("never-taken")).exists());
        let _a = locks.lock("vol-a", LockMode::Exclusive).unwrap();
        let _b = locks.lock("vol-b", LockMode::Exclusive).unwrap();
        assert!(locks.is_held("vol-a").unwrap());
        let s = locks.lock("t", LockMode::Shared).unwrap();
        assert!(locks.is_held("t").unwrap(), "a shared holder counts");
        drop(s);
        assert!(!locks.is_held("t").unwrap());
    }

    #[test]
    fn a_held_lock_is_waited_for_until_the_deadline_only() {
        let d = tempfile::tempdir().unwrap();
        let locks = LockDir::new(d.path().join("locks"));
        let held = locks.lock("vol", LockMode::Exclusive).unwrap();
        let started = Instant::now();
        let e = locks
            .lock_until(
                "vol",
                LockMode::Shared,
                started + Duration::from_millis(150),
            )
            .unwrap_err();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        match &e {
            Error::LockTimeout { key, path, .. } => {
                assert_eq!(key, "vol");
                assert_eq!(path, held.path());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.kind(), "lock_timeout");
        // A past deadline still gets one try; a free lock is taken at once.
        let past = Instant::now();
        assert!(locks.lock_until("vol", LockMode::Exclusive, past).is_err());
        drop(held);
        let _g = locks
            .lock_until("vol", LockMode::Exclusive, Instant::now())
            .unwrap();
        // Released while waiting: taken.
        let (l2, g) = (
            locks.clone(),
            locks.lock("other", LockMode::Exclusive).unwrap(),
        );
        let t = std::thread::spawn(move || {
            l2.lock_until(
                "other",
                LockMode::Exclusive,
                Instant::now() + Duration::from_secs(5),
            )
            .map(drop)
        });
        std::thread::sleep(Duration::from_millis(50));
        drop(g);
        t.join().unwrap().unwrap();
    }

    #[test]
    fn lock_files_are_private_and_never_followed() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("locks");
        let locks = LockDir::new(&dir);
        let g = locks.lock("a", LockMode::Exclusive).unwrap();
        let meta = std::fs::symlink_metadata(g.path()).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(g);

        // A symlink planted where a lock file goes: root creates nothing through it.
        let victim = d.path().join("victim");
        let link = dir.join(file_name_for("b"));
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = locks.lock("b", LockMode::Exclusive).unwrap_err();
        assert_eq!(e.kind(), "unsafe_state_dir", "{e}");
        assert!(locks
            .lock_until("b", LockMode::Exclusive, Instant::now())
            .is_err());
        assert!(locks.is_held("b").is_err());
        assert!(!victim.exists(), "nothing created through the link");

        // A lock directory others may write to is refused, for taking and for asking.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = locks.lock("a", LockMode::Shared).unwrap_err();
        assert!(
            matches!(&e, Error::UnsafeStateDir { path, .. } if path == &dir),
            "{e:?}"
        );
        assert!(locks.is_held("a").is_err());
    }
}
