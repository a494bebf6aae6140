//! The host handle: the roots of sysfs, /dev, /etc and /run.
//!
//! Every file hostbrick reads or writes on the host goes through a [`Host`], so a test can
//! point it at a fake tree in a temporary directory. This is the only module that names
//! absolute host paths.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};

/// The lock directory's name in the state directory.
pub(crate) const LOCKS_SUBDIR: &str = "locks";

/// Called after every attribute write through a [`Host`] with the path and value, so a
/// fake tree can answer as the kernel does: synchronously, inside the write.
pub type WriteHook = Arc<dyn Fn(&Path, &str) + Send + Sync>;

/// Called in place of the kernel's buffer flush ([`Host::flush_device`]) on a fake tree,
/// with the device's path in the tree; its error is the flush's.
pub type FlushHook = Arc<dyn Fn(&Path) -> std::io::Result<()> + Send + Sync>;
/// Answers an [exchange](Host::exchange) with a kernel control device in place of the
/// kernel, for fake trees: gets the device's path and the request written, returns what the
/// kernel would give back on the same open file, or the error (with the kernel's errno,
/// [`std::io::Error::from_raw_os_error`]) the write would fail with.
pub type ExchangeHook = Arc<dyn Fn(&Path, &str) -> std::io::Result<String> + Send + Sync>;

/// Where the host's kernel and system files live.
#[derive(Clone)]
pub struct Host {
    sys: PathBuf,
    dev: PathBuf,
    etc: PathBuf,
    run: PathBuf,
    proc: PathBuf,
    real: bool,
    write_hook: Option<WriteHook>,
    flush_hook: Option<FlushHook>,
    exchange_hook: Option<ExchangeHook>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("sys", &self.sys)
            .field("dev", &self.dev)
            .field("etc", &self.etc)
            .field("run", &self.run)
            .field("proc", &self.proc)
            .field("write_hook", &self.write_hook.is_some())
            .field("flush_hook", &self.flush_hook.is_some())
            .field("exchange_hook", &self.exchange_hook.is_some())
            .finish()
    }
}

impl PartialEq for Host {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.sys, &self.dev, &self.etc, &self.run, &self.proc, self.real,
        ) == (
            &other.sys,
            &other.dev,
            &other.etc,
            &other.run,
            &other.proc,
            other.real,
        )
    }
}

impl Eq for Host {}

impl Default for Host {
    fn default() -> Self {
        Host::system()
    }
}

impl Host {
    /// The running system: `/sys`, `/dev`, `/etc`, `/run`, `/proc`.
    pub fn system() -> Self {
        Host {
            sys: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
            etc: PathBuf::from("/etc"),
            run: PathBuf::from("/run"),
            proc: PathBuf::from("/proc"),
            real: true,
            write_hook: None,
            flush_hook: None,
            exchange_hook: None,
        }
    }

    /// A tree under `root` (`root/sys`, `root/dev`, `root/etc`, `root/run`, `root/proc`), e.g. a fake
    /// host in a temporary directory. udev is never used for such a tree: waits poll it.
    pub fn with_root(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref();
        let real = root == Path::new("/");
        Host {
            sys: root.join("sys"),
            dev: root.join("dev"),
            etc: root.join("etc"),
            run: root.join("run"),
            proc: root.join("proc"),
            real,
            write_hook: None,
            flush_hook: None,
            exchange_hook: None,
        }
    }

    /// Calls `hook` after every attribute write (for fake trees; see [`WriteHook`]).
    pub fn with_write_hook(mut self, hook: WriteHook) -> Self {
        self.write_hook = Some(hook);
        self
    }

    /// Calls `hook` for every device flush instead of the kernel (for fake trees; see
    /// [`FlushHook`]).
    pub fn with_flush_hook(mut self, hook: FlushHook) -> Self {
        self.flush_hook = Some(hook);
        self
    }

    /// Answers every [exchange](Host::exchange) with `hook` instead of the device (for fake
    /// trees; see [`ExchangeHook`]).
    pub fn with_exchange_hook(mut self, hook: ExchangeHook) -> Self {
        self.exchange_hook = Some(hook);
        self
    }

    /// Replaces the sysfs root.
    pub fn sys_root(mut self, path: impl Into<PathBuf>) -> Self {
        self.sys = path.into();
        self.real = false;
        self
    }

    /// Replaces the /dev root.
    pub fn dev_root(mut self, path: impl Into<PathBuf>) -> Self {
        self.dev = path.into();
        self.real = false;
        self
    }

    /// Replaces the /etc root.
    pub fn etc_root(mut self, path: impl Into<PathBuf>) -> Self {
        self.etc = path.into();
        self
    }

    /// Replaces the /run root.
    pub fn run_root(mut self, path: impl Into<PathBuf>) -> Self {
        self.run = path.into();
        self
    }

    /// A path under sysfs, e.g. `sys("block/sda/size")`.
    pub fn sys(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.sys.join(rel)
    }

    /// A path under /dev.
    pub fn dev(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dev.join(rel)
    }

    /// A path under /etc.
    pub fn etc(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.etc.join(rel)
    }

    /// A path under /run.
    pub fn run(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.run.join(rel)
    }

    /// A path under /proc (mounts and swaps, for the in-use checks).
    pub fn proc(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.proc.join(rel)
    }

    /// hostbrick's private state directory, `/run/hostbrick` (mode 0700, owned by the
    /// running user; refused otherwise): the lock files (`locks/`), the attachment
    /// registry (`attachments/<protocol>/`) and short-lived Ceph keyrings (`keyrings/`).
    pub fn state_dir(&self) -> PathBuf {
        self.run("hostbrick")
    }

    /// The default directory for hostbrick's cross-process lock files: `locks/` in the
    /// [state directory](Host::state_dir).
    pub fn default_lock_dir(&self) -> PathBuf {
        self.state_dir().join(LOCKS_SUBDIR)
    }

    /// True when this handle is the running system and udevd is running on it, so device
    /// waits can listen to udev events.
    pub fn udev_active(&self) -> bool {
        self.real && self.run("udev/control").exists()
    }

    /// True when this handle is the running system (not a fake tree).
    pub fn is_system(&self) -> bool {
        self.real
    }

    /// Reads a small text file (a sysfs attribute), trimmed.
    pub fn read_attr(&self, path: &Path) -> Result<String> {
        fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .map_err(|e| Error::io(path, e))
    }

    /// Reads a text file, `None` when it does not exist.
    pub fn read_attr_opt(&self, path: &Path) -> Result<Option<String>> {
        match fs::read_to_string(path) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Reads a decimal number attribute.
    pub fn read_u64(&self, path: &Path) -> Result<u64> {
        let s = self.read_attr(path)?;
        s.parse().map_err(|_| Error::UnexpectedContent {
            path: path.to_path_buf(),
            reason: format!("{s:?} is not a number"),
        })
    }

    /// Writes to a sysfs attribute: the file must exist (it is never created), and the
    /// value goes in one write call, as the kernel expects (the same as `echo v > attr`).
    pub fn write_attr(&self, path: &Path, value: &str) -> Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        f.write_all(value.as_bytes())
            .map_err(|e| Error::io(path, e))?;
        drop(f);
        if let Some(hook) = &self.write_hook {
            hook(path, value);
        }
        Ok(())
    }

    /// Writes block device `dev`'s dirty buffers out, in this process: an `fsync` of the
    /// device, which writes its dirty pages, waits for them and asks the device to write
    /// its own cache (the kernel's `blkdev_fsync`). That is what `blockdev --flushbufs`
    /// (`BLKFLSBUF`) does before a removal, without its process, plus the cache flush; the
    /// clean pages `BLKFLSBUF` would also drop go with the device.
    ///
    /// The flush waits for the device's writes to complete, which a device whose target is
    /// gone may never do: it runs on a thread of its own, and when `deadline` passes first
    /// this returns a [`Error::Timeout`] and leaves that thread to finish (or stay blocked
    /// in the kernel) on its own, as a timed-out `blockdev` process would.
    pub fn flush_device(&self, dev: &Path, deadline: Instant) -> Result<()> {
        if let Some(hook) = &self.flush_hook {
            return hook(dev).map_err(|e| Error::io(dev, e));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let path = dev.to_path_buf();
        let started = Instant::now();
        std::thread::Builder::new()
            .name("hostbrick-flush".into())
            .spawn(move || {
                let _ = tx.send(flush_buffers(&path));
            })
            .map_err(|e| Error::io(dev, e))?;
        match rx.recv_timeout(deadline.saturating_duration_since(started)) {
            Ok(done) => done.map_err(|e| Error::io(dev, e)),
            Err(_) => Err(Error::Timeout {
                what: format!("the buffer flush of {}", dev.display()),
                waited: started.elapsed(),
            }),
        }
    }

    /// One request to a kernel control device that answers on the same open file (e.g.
    /// `/dev/nvme-fabrics`): the device is opened read-write, `request` goes in one write
    /// call, and what one read then returns is the answer.
    ///
    /// The outer result is the device's: an [`Error::Io`] when it cannot be opened (`ENOENT`:
    /// not there) or its answer cannot be read. The inner one is the kernel's answer to the
    /// request: the text, or the error the write failed with, carrying the kernel's errno
    /// ([`std::io::Error::raw_os_error`]). The write blocks for as long as the kernel works
    /// on the request. With an [exchange hook](Host::with_exchange_hook) the device is opened
    /// (so a missing one fails the same way) and the hook answers in place of the kernel.
    pub fn exchange(&self, path: &Path, request: &str) -> Result<std::io::Result<String>> {
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        if let Some(hook) = &self.exchange_hook {
            drop(f);
            return Ok(hook(path, request));
        }
        match f.write(request.as_bytes()) {
            Ok(n) if n == request.len() => {}
            Ok(n) => {
                return Err(Error::UnexpectedContent {
                    path: path.to_path_buf(),
                    reason: format!("the kernel took {n} of the {} bytes written", request.len()),
                })
            }
            Err(e) => return Ok(Err(e)),
        }
        // The answer is one short line: what the kernel has fits one read.
        let mut buf = vec![0u8; 4096];
        let n = std::io::Read::read(&mut f, &mut buf).map_err(|e| Error::io(path, e))?;
        buf.truncate(n);
        String::from_utf8(buf)
            .map(Ok)
            .map_err(|_| Error::UnexpectedContent {
                path: path.to_path_buf(),
                reason: "the answer is not UTF-8".into(),
            })
    }

    /// Names of the entries of a directory, sorted; empty when it does not exist.
    pub fn list_dir(&self, path: &Path) -> Result<Vec<String>> {
        let rd = match fs::read_dir(path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(path, e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// The entries of a directory with their inode numbers, in directory order; empty
    /// when it does not exist. The inode tells a re-created entry from the one seen
    /// before under the same name (sysfs gives a new object a new inode).
    pub fn list_dir_inodes(&self, path: &Path) -> Result<Vec<(String, u64)>> {
        use std::os::unix::fs::DirEntryExt;
        let rd = match fs::read_dir(path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(path, e))?;
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.ino(),
            ));
        }
        Ok(out)
    }

    /// The final component of a symlink's target (e.g. `host2` for a `device` link).
    pub fn link_target(&self, path: &Path) -> Result<Option<PathBuf>> {
        match fs::read_link(path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Resolves a path through symlinks, `None` when it does not exist.
    pub fn canonical(&self, path: &Path) -> Result<Option<PathBuf>> {
        match fs::canonicalize(path) {
            Ok(p) => Ok(Some(p)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// A fresh random (version 4) UUID from the kernel's random source.
    pub fn random_uuid(&self) -> Result<String> {
        let path = Path::new("/dev/urandom");
        let mut b = [0u8; 16];
        std::io::Read::read_exact(
            &mut fs::File::open(path).map_err(|e| Error::io(path, e))?,
            &mut b,
        )
        .map_err(|e| Error::io(path, e))?;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        Ok(crate::model::ids::uuid_from_hex(&h))
    }

    /// Maps a path the running system would show (e.g. `/dev/sdb` from a device record)
    /// into this handle's /dev root. Paths outside /dev are returned unchanged.
    pub fn map_dev_path(&self, path: &Path) -> PathBuf {
        match path.strip_prefix("/dev") {
            Ok(rel) if !self.real => self.dev.join(rel),
            _ => path.to_path_buf(),
        }
    }

    /// The inverse of [`Host::map_dev_path`]: the `/dev/...` name a caller should see.
    pub fn public_dev_path(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.dev) {
            Ok(rel) if !self.real => Path::new("/dev").join(rel),
            _ => path.to_path_buf(),
        }
    }
}

/// `fsync` of the block device at `path` (refused for anything else).
fn flush_buffers(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_CLOEXEC)
        .open(path)?;
    if !f.metadata()?.file_type().is_block_device() {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            "not a block device",
        ));
    }
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_flush_is_of_a_block_device_and_bounded_by_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::with_root(dir.path());
        let soon = || Instant::now() + Duration::from_secs(5);
        // Not a block device: refused, not fsynced as if it were one.
        let file = dir.path().join("plain");
        fs::write(&file, "x").unwrap();
        let e = host.flush_device(&file, soon()).unwrap_err();
        assert_eq!(e.kind(), "io", "{e}");
        assert!(e.chain().contains("not a block device"), "{}", e.chain());
        // Gone: the open's error.
        let e = host
            .flush_device(&dir.path().join("absent"), soon())
            .unwrap_err();
        assert!(e.chain().contains("No such file"), "{}", e.chain());
        // A flush that does not come back (here an open that blocks: a FIFO without a
        // writer) ends at the deadline; the thread is left to finish on its own.
        let fifo = dir.path().join("stuck");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let t0 = Instant::now();
        let e = host
            .flush_device(&fifo, Instant::now() + Duration::from_millis(100))
            .unwrap_err();
        assert_eq!(e.kind(), "timeout", "{e}");
        assert!(t0.elapsed() < Duration::from_secs(3));
        // Let the blocked open finish (it then finds no block device).
        drop(fs::OpenOptions::new().write(true).open(&fifo).unwrap());
    }

    #[test]
    fn a_flush_hook_answers_for_a_fake_tree() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = calls.clone();
        let host = Host::with_root("/tmp/fake").with_flush_hook(Arc::new(move |p| {
            seen.lock().unwrap().push(p.to_path_buf());
            Err(std::io::Error::from_raw_os_error(nix::libc::EIO))
        }));
        let e = host
            .flush_device(Path::new("/tmp/fake/dev/sda"), Instant::now())
            .unwrap_err();
        assert!(e.chain().contains("Input/output error"), "{}", e.chain());
        assert_eq!(*calls.lock().unwrap(), [PathBuf::from("/tmp/fake/dev/sda")]);
    }

    #[test]
    fn roots_and_mapping() {
        let h = Host::with_root("/tmp/fake");
        assert_eq!(h.sys("block/sda"), PathBuf::from("/tmp/fake/sys/block/sda"));
        assert_eq!(
            h.map_dev_path(Path::new("/dev/sdb")),
            PathBuf::from("/tmp/fake/dev/sdb")
        );
        assert_eq!(
            h.public_dev_path(Path::new("/tmp/fake/dev/sdb")),
            PathBuf::from("/dev/sdb")
        );
        assert!(!h.udev_active());
        let s = Host::system();
        assert_eq!(
            s.map_dev_path(Path::new("/dev/sdb")),
            PathBuf::from("/dev/sdb")
        );
        assert!(Host::with_root("/").is_system());
    }

    #[test]
    fn attrs() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::with_root(d.path());
        let p = d.path().join("size");
        std::fs::write(&p, "2048\n").unwrap();
        assert_eq!(h.read_u64(&p).unwrap(), 2048);
        assert_eq!(h.read_attr_opt(&d.path().join("none")).unwrap(), None);
        h.write_attr(&p, "1").unwrap();
        assert_eq!(h.read_attr(&p).unwrap(), "1");
        assert!(h
            .write_attr(&d.path().join("missing"), "1")
            .unwrap_err()
            .is_not_found());
        assert_eq!(
            h.list_dir(&d.path().join("nope")).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn exchanges() {
        let d = tempfile::tempdir().unwrap();
        let dev = d.path().join("dev/ctl");
        std::fs::create_dir_all(dev.parent().unwrap()).unwrap();
        // No device: the open fails, nothing is asked.
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let h = Host::with_root(d.path()).with_exchange_hook(Arc::new(move |p, req| {
            s.lock().unwrap().push((p.to_path_buf(), req.to_string()));
            match req {
                "busy" => Err(std::io::Error::from_raw_os_error(nix::libc::EALREADY)),
                _ => Ok(format!("got {req}\n")),
            }
        }));
        assert!(h.exchange(&dev, "x").unwrap_err().is_not_found());
        assert!(seen.lock().unwrap().is_empty());
        std::fs::write(&dev, "").unwrap();
        assert_eq!(h.exchange(&dev, "a=1").unwrap().unwrap(), "got a=1\n");
        let refused = h.exchange(&dev, "busy").unwrap().unwrap_err();
        assert_eq!(refused.raw_os_error(), Some(nix::libc::EALREADY));
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert_eq!(seen.lock().unwrap()[0], (dev.clone(), "a=1".to_string()));
        // Without a hook a plain file takes the write and has nothing more to read.
        let plain = Host::with_root(d.path());
        assert_eq!(plain.exchange(&dev, "a=1").unwrap().unwrap(), "");
        assert_eq!(std::fs::read_to_string(&dev).unwrap(), "a=1");
    }
}
