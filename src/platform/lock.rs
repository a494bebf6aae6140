//! Cross-process locks: `flock(2)` on files in one lock directory.
//!
//! Locks are keyed narrowly: per volume for connect/disconnect, per target (portal + IQN)
//! for login/logout. Connects of one target share its lock; the logout check takes it
//! exclusively, so a session is never logged out under a LUN that is being attached.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// A directory of lock files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockDir {
    dir: PathBuf,
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
    /// Locks in `dir` (created on first use, mode 0700).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LockDir { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Takes the lock named by `key` (any text; it is turned into a safe file name),
    /// blocking until it is free.
    pub fn lock(&self, key: &str, mode: LockMode) -> Result<LockGuard> {
        if !self.dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| Error::io(&self.dir, e))?;
        }
        let path = self.dir.join(file_name_for(key));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
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

    /// True when someone holds the lock named by `key` right now, in either mode. Creates
    /// nothing: a lock file that does not exist has never been taken. A free lock is taken
    /// for an instant to find out, so a taker arriving just then waits that long.
    pub fn is_held(&self, key: &str) -> Result<bool> {
        let path = self.dir.join(file_name_for(key));
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(&path, e)),
        };
        match flock(&file, &path, FlockArg::LockExclusiveNonblock)? {
            // Taken at once: nobody held it (released again on drop).
            Ok(_free) => Ok(false),
            Err(nix::Error::EWOULDBLOCK) => Ok(true),
            Err(source) => Err(Error::Lock { path, source }),
        }
    }
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

/// Maps a key to a file name: safe characters kept, the rest replaced, and a hash of the
/// whole key appended so that distinct keys never share a file.
fn file_name_for(key: &str) -> String {
    let mut safe: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect();
    safe.push('-');
    safe.push_str(&format!("{:016x}", fnv1a(key.as_bytes())));
    safe.push_str(".lock");
    safe
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
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
}
