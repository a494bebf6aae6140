//! [`FakeHost`]: the fake host tree (`sys`, `dev`, `etc`, `run` in a temporary directory),
//! its block devices and dm-multipath maps, and the fake kernel that answers attribute
//! writes. The SCSI/iSCSI and NVMe parts of the tree are in `scsi.rs` and `nvme.rs`.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::lock;
use super::scsi::LunSpec;
use crate::{Hctl, Host};

/// What the fake kernel keeps besides the tree itself.
#[derive(Default)]
pub(super) struct State {
    pub(super) nvme_pending_sizes: HashMap<String, u64>,
    pub(super) offered: HashMap<u32, Vec<LunSpec>>,
    pub(super) devices: HashMap<Hctl, String>,
    /// Every device flush asked of the kernel, by its `/dev` name, in order.
    flushes: Vec<String>,
    /// Devices whose flush fails, with the errno it fails with.
    failing_flushes: HashMap<String, i32>,
    pub(super) next_disk: u32,
    next_dm: u32,
}

/// Answers exchanges with one control device of the tree in place of the kernel: gets the
/// tree and the request.
pub(crate) type ExchangeAnswer =
    Arc<dyn Fn(&FakeHost, &str) -> std::io::Result<String> + Send + Sync>;

struct Inner {
    dir: tempfile::TempDir,
    state: Mutex<State>,
    /// Control devices (path relative to the root) and what answers them.
    answers: Mutex<Vec<(PathBuf, ExchangeAnswer)>>,
    /// Every exchange so far: the device (relative to the root) and the request.
    exchanges: Mutex<Vec<(PathBuf, String)>>,
}

/// A fake host tree in a temporary directory (`sys`, `dev`, `etc`, `run`), laid out like
/// the kernel's, with a "kernel" that answers writes of `scan`, `delete`, `rescan`,
/// `rescan_controller` and `delete_controller` attributes made through [`FakeHost::host`],
/// and, where a simulator set one up, exchanges with a control device (the NVMe simulator's
/// `/dev/nvme-fabrics`), which it records ([`FakeHost::exchanges`]). Cloning shares the tree; it is removed when
/// the last clone goes.
#[derive(Clone)]
pub struct FakeHost {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FakeHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FakeHost({})", self.root().display())
    }
}

impl Default for FakeHost {
    fn default() -> Self {
        Self::new()
    }
}

pub(super) fn write(path: &Path, content: &str) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).expect("fake tree: create dir");
    }
    fs::write(path, content).expect("fake tree: write file");
}

pub(super) fn link(target: &Path, at: &Path) {
    if let Some(p) = at.parent() {
        fs::create_dir_all(p).expect("fake tree: create dir");
    }
    let _ = fs::remove_file(at);
    symlink(target, at).expect("fake tree: symlink");
}

impl FakeHost {
    /// An empty tree with its fake kernel running, in the system's temporary directory.
    pub fn new() -> Self {
        Self::new_in(std::env::temp_dir())
    }

    /// An empty tree in a new directory under `parent` (e.g. `/dev/shm`, so that building
    /// a host with thousands of devices never waits on a disk).
    pub fn new_in(parent: impl AsRef<Path>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("hostbrick-fake-")
            .tempdir_in(parent)
            .expect("fake tree: temp dir");
        for d in [
            "sys/block",
            "sys/class/nvme",
            "sys/class/nvme-subsystem",
            "sys/bus/scsi/devices",
            "sys/class/scsi_host",
            "sys/class/iscsi_session",
            "sys/class/iscsi_connection",
            "dev/disk/by-path",
            "dev/disk/by-id",
            "dev/mapper",
            "etc",
            "run",
        ] {
            fs::create_dir_all(dir.path().join(d)).expect("fake tree: create dir");
        }
        FakeHost {
            inner: Arc::new(Inner {
                dir,
                state: Mutex::new(State::default()),
                answers: Mutex::new(Vec::new()),
                exchanges: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The tree's root directory.
    pub fn root(&self) -> &Path {
        self.inner.dir.path()
    }

    /// A [`Host`] handle on the tree; its attribute writes and its exchanges with control
    /// devices ([`Host::exchange`]) reach the fake kernel.
    pub fn host(&self) -> Host {
        let weak = Arc::downgrade(&self.inner);
        let flushing = weak.clone();
        let weak2 = weak.clone();
        Host::with_root(self.root())
            .with_write_hook(Arc::new(move |path, value| {
                if let Some(inner) = weak.upgrade() {
                    FakeHost { inner }.on_write(path, value);
                }
            }))
            .with_flush_hook(Arc::new(move |path| match flushing.upgrade() {
                Some(inner) => FakeHost { inner }.on_flush(path),
                None => Ok(()),
            }))
            .with_exchange_hook(Arc::new(move |path, request| match weak2.upgrade() {
                Some(inner) => FakeHost { inner }.on_exchange(path, request),
                None => Err(std::io::Error::from_raw_os_error(nix::libc::ENODEV)),
            }))
    }

    /// The `/dev` names of the devices flushed through [`FakeHost::host`] so far, in order.
    pub fn flushes(&self) -> Vec<String> {
        lock(&self.inner.state).flushes.clone()
    }

    /// Makes every later flush of `dev` (a `/dev` name, e.g. `/dev/sda`) fail with `errno`
    /// (e.g. `libc::EIO`), as a device whose writes fail does.
    pub fn fail_flush(&self, dev: &str, errno: i32) {
        lock(&self.inner.state)
            .failing_flushes
            .insert(dev.to_string(), errno);
    }

    /// Answers exchanges with the control device `rel` (relative to the root, e.g.
    /// `dev/nvme-fabrics`) with `answer`, in place of the kernel. A device nothing answers
    /// fails every request with `ENODEV`.
    pub(crate) fn answer_exchanges(&self, rel: &str, answer: ExchangeAnswer) {
        lock(&self.inner.answers).push((PathBuf::from(rel), answer));
    }

    /// Every request written to a control device through [`FakeHost::host`] so far, in
    /// order: the device's path relative to the root (e.g. `dev/nvme-fabrics`) and the
    /// request.
    pub fn exchanges(&self) -> Vec<(PathBuf, String)> {
        lock(&self.inner.exchanges).clone()
    }

    fn on_exchange(&self, path: &Path, request: &str) -> std::io::Result<String> {
        let rel = path.strip_prefix(self.root()).unwrap_or(path).to_path_buf();
        lock(&self.inner.exchanges).push((rel.clone(), request.to_string()));
        let answer = lock(&self.inner.answers)
            .iter()
            .rev()
            .find(|(p, _)| *p == rel)
            .map(|(_, a)| a.clone());
        match answer {
            Some(a) => a(self, request),
            None => Err(std::io::Error::from_raw_os_error(nix::libc::ENODEV)),
        }
    }

    pub(super) fn p(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    pub(super) fn add_block(&self, name: &str, size: u64, devnum: &str) {
        self.add_block_at(name, None, size, devnum);
    }

    /// Adds block device `name`; with `dir` its sysfs directory lives there and
    /// `sys/block/<name>` links to it, as for the kernel's devices under a parent.
    pub(super) fn add_block_at(&self, name: &str, dir: Option<&Path>, size: u64, devnum: &str) {
        let b = match dir {
            Some(d) => {
                fs::create_dir_all(d).expect("fake tree: create dir");
                link(d, &self.p(&format!("sys/block/{name}")));
                d.to_path_buf()
            }
            None => self.p(&format!("sys/block/{name}")),
        };
        write(&b.join("size"), &format!("{}\n", size / 512));
        write(&b.join("dev"), &format!("{devnum}\n"));
        fs::create_dir_all(b.join("holders")).expect("fake tree: create dir");
        fs::create_dir_all(b.join("slaves")).expect("fake tree: create dir");
        let f = fs::File::create(self.p(&format!("dev/{name}"))).expect("fake tree: device node");
        f.set_len(size.min(1 << 20))
            .expect("fake tree: device size");
    }

    /// Sets a block device's size.
    pub fn set_block_size(&self, name: &str, size: u64) {
        write(
            &self.p(&format!("sys/block/{name}/size")),
            &format!("{}\n", size / 512),
        );
    }

    /// Sets a block device's read-only flag (its `ro` attribute).
    pub fn set_read_only(&self, name: &str, ro: bool) {
        write(
            &self.p(&format!("sys/block/{name}/ro")),
            if ro { "1\n" } else { "0\n" },
        );
    }

    /// Adds a dm-multipath map `dm-N` named `name` over `slaves`; returns `dm-N`.
    pub fn add_multipath_map(&self, name: &str, wwid: &str, slaves: &[&str]) -> String {
        let size = slaves
            .first()
            .and_then(|s| fs::read_to_string(self.p(&format!("sys/block/{s}/size"))).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 512;
        self.add_dm_device(name, &format!("mpath-{wwid}"), slaves, size)
    }

    /// Adds a device-mapper device `dm-N` of `size` bytes named `name`, with dm uuid
    /// `uuid` (`mpath-<wwid>` for a multipath map, `CRYPT-LUKS2-<uuid>-<name>` for a
    /// dm-crypt mapping), over `slaves`, and its `/dev/mapper/<name>` link; returns `dm-N`.
    pub fn add_dm_device(&self, name: &str, uuid: &str, slaves: &[&str], size: u64) -> String {
        let dm = {
            let mut st = self.state();
            let n = st.next_dm;
            st.next_dm += 1;
            format!("dm-{n}")
        };
        self.add_block(&dm, size, &format!("254:{}", dm.trim_start_matches("dm-")));
        write(
            &self.p(&format!("sys/block/{dm}/dm/name")),
            &format!("{name}\n"),
        );
        write(
            &self.p(&format!("sys/block/{dm}/dm/uuid")),
            &format!("{uuid}\n"),
        );
        for s in slaves {
            self.add_multipath_slave(&dm, s);
        }
        fs::create_dir_all(self.p("dev/mapper")).expect("fake tree: create dir");
        link(
            Path::new(&format!("../{dm}")),
            &self.p(&format!("dev/mapper/{name}")),
        );
        dm
    }

    /// Removes a device-mapper device, as [`FakeHost::remove_multipath_map`] does (its
    /// slaves stay).
    pub fn remove_dm_device(&self, dm: &str) {
        self.remove_multipath_map(dm);
    }

    /// Adds a path to a map.
    pub fn add_multipath_slave(&self, dm: &str, slave: &str) {
        fs::create_dir_all(self.p(&format!("sys/block/{dm}/slaves/{slave}")))
            .expect("fake tree: create dir");
        fs::create_dir_all(self.p(&format!("sys/block/{slave}/holders/{dm}")))
            .expect("fake tree: create dir");
    }

    /// Removes a map (its paths stay).
    pub fn remove_multipath_map(&self, dm: &str) {
        if let Ok(rd) = fs::read_dir(self.p(&format!("sys/block/{dm}/slaves"))) {
            for e in rd.flatten() {
                let _ = fs::remove_dir_all(self.p(&format!(
                    "sys/block/{}/holders/{dm}",
                    e.file_name().to_string_lossy()
                )));
            }
        }
        if let Ok(name) = fs::read_to_string(self.p(&format!("sys/block/{dm}/dm/name"))) {
            let _ = fs::remove_file(self.p(&format!("dev/mapper/{}", name.trim())));
        }
        let _ = fs::remove_dir_all(self.p(&format!("sys/block/{dm}")));
        let _ = fs::remove_file(self.p(&format!("dev/{dm}")));
    }

    /// The fake kernel's flush of the device at `path` (in the tree): it must be there, and
    /// fails as [`FakeHost::fail_flush`] asked.
    fn on_flush(&self, path: &Path) -> std::io::Result<()> {
        let name = match path.strip_prefix(self.p("dev")) {
            Ok(rel) => Path::new("/dev").join(rel).display().to_string(),
            Err(_) => path.display().to_string(),
        };
        let mut st = lock(&self.inner.state);
        st.flushes.push(name.clone());
        if !path.exists() {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        match st.failing_flushes.get(&name) {
            Some(&errno) => Err(std::io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }

    /// The fake kernel: answers a write to a `scan`, `delete` or `rescan` attribute.
    fn on_write(&self, path: &Path, value: &str) {
        let Some(attr) = path.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        let Some(dir) = path.parent() else { return };
        let dir_name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match attr {
            "scan" => self.kernel_scan(path, &dir_name, value),
            "delete_controller" if value.trim() == "1" => self.remove_nvme_controller(&dir_name),
            "rescan_controller" if value.trim() == "1" => self.kernel_rescan_controller(path),
            "delete" | "rescan" if value.trim() == "1" => {
                self.kernel_scsi_device(path, attr, &dir_name)
            }
            _ => {}
        }
    }
}
