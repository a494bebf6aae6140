//! Test doubles for code that links hostbrick (cargo feature `testing`): a scriptable
//! command runner and a fake host tree with a small "kernel" that answers LUN scans,
//! device deletes and rescans the way sysfs does: synchronously, inside the write.
//!
//! ```
//! use hostbrick::testing::{FakeHost, FakeRunner, LunSpec};
//! use hostbrick::{Command, CommandOutput, CommandRunner};
//!
//! let fake = FakeHost::new();
//! fake.add_scsi_host(2);
//! fake.offer_lun(2, LunSpec::new(0, 0, 1, "naa.6001405aaaa", 1 << 20));
//! let runner = FakeRunner::new();
//! runner.on("blockdev", &["--flushbufs"], |_| CommandOutput::ok(""));
//! assert!(runner.run(&Command::new("blockdev").arg("--flushbufs").arg("/dev/sdb")).is_ok());
//! ```

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::model::ids::{Hctl, Portal};
use crate::platform::cmd::{Command, CommandOutput, CommandRunner};
use crate::platform::host::Host;

type Handler = Arc<dyn Fn(&Command) -> CommandOutput + Send + Sync>;
type Matcher = Box<dyn Fn(&Command) -> bool + Send + Sync>;

struct Rule {
    matches: Matcher,
    handler: Handler,
}

/// A [`CommandRunner`] that answers from rules instead of running anything, and records
/// every command it was asked to run. The newest matching rule answers; a command no rule
/// matches is [`Error::CommandNotFound`]. Commands from several threads are answered
/// concurrently, as real ones run.
#[derive(Default)]
pub struct FakeRunner {
    rules: Mutex<Vec<Rule>>,
    calls: Mutex<Vec<Command>>,
}

impl std::fmt::Debug for FakeRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRunner")
            .field("rules", &lock(&self.rules).len())
            .field("calls", &lock(&self.calls).len())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeRunner {
    /// A runner with no rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers commands of `program` whose arguments start with `prefix`.
    pub fn on(
        &self,
        program: &str,
        prefix: &[&str],
        handler: impl Fn(&Command) -> CommandOutput + Send + Sync + 'static,
    ) -> &Self {
        let program = program.to_string();
        let prefix: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        self.on_match(
            move |c| {
                let p: Vec<&str> = prefix.iter().map(String::as_str).collect();
                c.program() == program && c.args_start_with(&p)
            },
            handler,
        )
    }

    /// Answers commands `matches` accepts.
    pub fn on_match(
        &self,
        matches: impl Fn(&Command) -> bool + Send + Sync + 'static,
        handler: impl Fn(&Command) -> CommandOutput + Send + Sync + 'static,
    ) -> &Self {
        lock(&self.rules).push(Rule {
            matches: Box::new(matches),
            handler: Arc::new(handler),
        });
        self
    }

    /// Every command run so far, in order.
    pub fn commands(&self) -> Vec<Command> {
        lock(&self.calls).clone()
    }

    /// Every command run so far as shown in logs (secrets masked).
    pub fn calls(&self) -> Vec<String> {
        lock(&self.calls).iter().map(|c| c.to_string()).collect()
    }

    /// How many commands shown as containing `needle` ran.
    pub fn count(&self, needle: &str) -> usize {
        self.calls().iter().filter(|c| c.contains(needle)).count()
    }

    /// Forgets the recorded commands.
    pub fn clear_calls(&self) {
        lock(&self.calls).clear();
    }
}

impl CommandRunner for FakeRunner {
    fn run(&self, cmd: &Command) -> Result<CommandOutput> {
        lock(&self.calls).push(cmd.clone());
        if let Some(c) = cmd.cancellation() {
            if c.is_cancelled() {
                return Err(Error::CommandCancelled {
                    program: cmd.program().to_string(),
                    args: cmd.shown_args(),
                });
            }
        }
        let handler = lock(&self.rules)
            .iter()
            .rev()
            .find(|r| (r.matches)(cmd))
            .map(|r| r.handler.clone());
        match handler {
            Some(h) => Ok(h(cmd)),
            None => Err(Error::CommandNotFound {
                program: cmd.program().to_string(),
                searched: vec![PathBuf::from("(fake runner: no rule)")],
            }),
        }
    }
}

/// A LUN a fake SCSI host offers: it appears when scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunSpec {
    /// Channel.
    pub channel: u32,
    /// Target id.
    pub target: u32,
    /// LUN.
    pub lun: u64,
    /// The `wwid` attribute as sysfs shows it, e.g. `naa.6001405...`.
    pub wwid: String,
    /// Size in bytes.
    pub size: u64,
    /// A `/dev/disk/by-path` link name to create with the device, if any.
    pub by_path: Option<String>,
}

impl LunSpec {
    /// A LUN without a by-path link.
    pub fn new(channel: u32, target: u32, lun: u64, wwid: &str, size: u64) -> Self {
        LunSpec {
            channel,
            target,
            lun,
            wwid: wwid.to_string(),
            size,
            by_path: None,
        }
    }

    /// With a by-path link.
    pub fn by_path(mut self, name: impl Into<String>) -> Self {
        self.by_path = Some(name.into());
        self
    }
}

#[derive(Default)]
struct State {
    nvme_pending_sizes: HashMap<String, u64>,
    offered: HashMap<u32, Vec<LunSpec>>,
    devices: HashMap<Hctl, String>,
    next_disk: u32,
    next_dm: u32,
}

struct Inner {
    dir: tempfile::TempDir,
    state: Mutex<State>,
}

/// A fake host tree in a temporary directory (`sys`, `dev`, `etc`, `run`), laid out like
/// the kernel's, with a "kernel" that answers writes of `scan`, `delete` and `rescan`
/// attributes made through [`FakeHost::host`]. Cloning shares the tree; it is removed when
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

fn write(path: &Path, content: &str) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).expect("fake tree: create dir");
    }
    fs::write(path, content).expect("fake tree: write file");
}

fn link(target: &Path, at: &Path) {
    if let Some(p) = at.parent() {
        fs::create_dir_all(p).expect("fake tree: create dir");
    }
    let _ = fs::remove_file(at);
    symlink(target, at).expect("fake tree: symlink");
}

fn disk_name(n: u32) -> String {
    // sda..sdz, sdaa..sdzz, ... as the kernel names them.
    let mut n = n as usize + 1;
    let mut s = Vec::new();
    while n > 0 {
        n -= 1;
        s.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    s.reverse();
    format!("sd{}", String::from_utf8_lossy(&s))
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
            }),
        }
    }

    /// The tree's root directory.
    pub fn root(&self) -> &Path {
        self.inner.dir.path()
    }

    /// A [`Host`] handle on the tree; its attribute writes reach the fake kernel.
    pub fn host(&self) -> Host {
        let weak = Arc::downgrade(&self.inner);
        Host::with_root(self.root()).with_write_hook(Arc::new(move |path, value| {
            if let Some(inner) = weak.upgrade() {
                FakeHost { inner }.on_write(path, value);
            }
        }))
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// Writes `/etc/iscsi/initiatorname.iscsi`.
    pub fn set_initiator_name(&self, iqn: &str) {
        write(
            &self.p("etc/iscsi/initiatorname.iscsi"),
            &format!("## generated\nInitiatorName={iqn}\n"),
        );
    }

    /// Adds SCSI host `hostH` with its `scan` attribute.
    pub fn add_scsi_host(&self, host_no: u32) {
        let dev = self.p(&format!("sys/devices/platform/host{host_no}"));
        write(&dev.join(format!("scsi_host/host{host_no}/scan")), "");
        link(
            &dev.join(format!("scsi_host/host{host_no}")),
            &self.p(&format!("sys/class/scsi_host/host{host_no}")),
        );
    }

    /// Removes a SCSI host and everything under it.
    pub fn remove_scsi_host(&self, host_no: u32) {
        let hctls: Vec<Hctl> = self
            .state()
            .devices
            .keys()
            .filter(|h| h.host == host_no)
            .copied()
            .collect();
        for h in hctls {
            self.remove_scsi_device(h);
        }
        let _ = fs::remove_file(self.p(&format!("sys/class/scsi_host/host{host_no}")));
        let _ = fs::remove_dir_all(self.p(&format!("sys/devices/platform/host{host_no}")));
        self.state().offered.remove(&host_no);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// Adds an iSCSI session `sid` on SCSI host `host_no` (created too) logged in to
    /// `iqn` at `portal`, with the kernel's `target_id` for its first scan.
    pub fn add_iscsi_session(
        &self,
        sid: u32,
        host_no: u32,
        target_id: u32,
        iqn: &str,
        portal: &Portal,
    ) {
        self.add_scsi_host(host_no);
        let sdev = self.p(&format!("sys/devices/platform/host{host_no}/session{sid}"));
        fs::create_dir_all(sdev.join(format!("connection{sid}:0"))).expect("fake tree: create dir");
        let class = self.p(&format!("sys/class/iscsi_session/session{sid}"));
        write(&class.join("targetname"), &format!("{iqn}\n"));
        write(&class.join("target_id"), &format!("{target_id}\n"));
        write(&class.join("tpgt"), "1\n");
        link(&sdev, &class.join("device"));
        let conn = self.p(&format!("sys/class/iscsi_connection/connection{sid}:0"));
        write(
            &conn.join("persistent_address"),
            &format!("{}\n", portal.host()),
        );
        write(
            &conn.join("persistent_port"),
            &format!("{}\n", portal.port()),
        );
        write(&conn.join("address"), &format!("{}\n", portal.host()));
        write(&conn.join("port"), &format!("{}\n", portal.port()));
    }

    /// Removes session `sid` and its SCSI host, with every device on it (a logout).
    pub fn remove_iscsi_session(&self, sid: u32) {
        let class = self.p(&format!("sys/class/iscsi_session/session{sid}"));
        let host_no = fs::canonicalize(class.join("device"))
            .ok()
            .and_then(|d| {
                d.parent()
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .and_then(|n| n.strip_prefix("host").and_then(|n| n.parse::<u32>().ok()));
        let _ = fs::remove_dir_all(&class);
        let _ =
            fs::remove_dir_all(self.p(&format!("sys/class/iscsi_connection/connection{sid}:0")));
        if let Some(h) = host_no {
            self.remove_scsi_host(h);
        }
    }

    /// Makes `spec` appear when SCSI host `host_no` scans it.
    pub fn offer_lun(&self, host_no: u32, spec: LunSpec) {
        self.state().offered.entry(host_no).or_default().push(spec);
    }

    /// Changes an offered LUN's size (seen after a rescan of its device).
    pub fn resize_lun(&self, wwid: &str, size: u64) {
        for specs in self.state().offered.values_mut() {
            for s in specs.iter_mut().filter(|s| s.wwid == wwid) {
                s.size = size;
            }
        }
    }

    /// The device name the kernel gave `hctl`, if present.
    pub fn device_at(&self, hctl: Hctl) -> Option<String> {
        self.state().devices.get(&hctl).cloned()
    }

    /// Every SCSI disk present, by address.
    pub fn devices(&self) -> Vec<(Hctl, String)> {
        let mut v: Vec<(Hctl, String)> = self
            .state()
            .devices
            .iter()
            .map(|(h, n)| (*h, n.clone()))
            .collect();
        v.sort();
        v
    }

    /// Adds a SCSI disk now (as a scan would) and returns its name.
    pub fn add_scsi_disk(&self, host_no: u32, spec: &LunSpec) -> String {
        let hctl = Hctl {
            host: host_no,
            channel: spec.channel,
            target: spec.target,
            lun: spec.lun,
        };
        let name = {
            let mut st = self.state();
            if let Some(n) = st.devices.get(&hctl) {
                return n.clone();
            }
            let n = disk_name(st.next_disk);
            st.next_disk += 1;
            st.devices.insert(hctl, n.clone());
            n
        };
        // Under the session's target directory when the host carries a session.
        let hostdir = self.p(&format!("sys/devices/platform/host{host_no}"));
        let parent = fs::read_dir(&hostdir)
            .ok()
            .and_then(|rd| {
                rd.flatten().map(|e| e.path()).find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("session"))
                })
            })
            .unwrap_or(hostdir);
        let tdir = parent.join(format!(
            "target{}:{}:{}",
            host_no, spec.channel, spec.target
        ));
        let ddir = tdir.join(hctl.to_string());
        write(&ddir.join("wwid"), &format!("{}\n", spec.wwid));
        write(&ddir.join("state"), "running\n");
        for a in ["delete", "rescan"] {
            write(&ddir.join(a), "");
        }
        link(&ddir, &self.p(&format!("sys/bus/scsi/devices/{hctl}")));
        let minor = 16 * self.state().next_disk;
        // As the kernel shows it: `sys/block/sdX` links into the SCSI device's directory.
        let bdir = ddir.join(format!("block/{name}"));
        self.add_block_at(&name, Some(&bdir), spec.size, &format!("8:{minor}"));
        link(&ddir, &self.p(&format!("sys/block/{name}/device")));
        if let Some(bp) = &spec.by_path {
            link(
                Path::new(&format!("../../{name}")),
                &self.p(&format!("dev/disk/by-path/{bp}")),
            );
        }
        name
    }

    fn add_block(&self, name: &str, size: u64, devnum: &str) {
        self.add_block_at(name, None, size, devnum);
    }

    /// Adds block device `name`; with `dir` its sysfs directory lives there and
    /// `sys/block/<name>` links to it, as for the kernel's devices under a parent.
    fn add_block_at(&self, name: &str, dir: Option<&Path>, size: u64, devnum: &str) {
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

    /// Removes a SCSI disk (as `delete` or a logout would), with its links.
    pub fn remove_scsi_device(&self, hctl: Hctl) {
        let Some(name) = self.state().devices.remove(&hctl) else {
            return;
        };
        if let Ok(d) = fs::canonicalize(self.p(&format!("sys/bus/scsi/devices/{hctl}"))) {
            let _ = fs::remove_dir_all(d);
        }
        let _ = fs::remove_file(self.p(&format!("sys/bus/scsi/devices/{hctl}")));
        let _ = fs::remove_dir_all(self.p(&format!("sys/block/{name}")));
        let _ = fs::remove_file(self.p(&format!("dev/{name}")));
        if let Ok(rd) = fs::read_dir(self.p("dev/disk/by-path")) {
            for e in rd.flatten() {
                if fs::read_link(e.path())
                    .is_ok_and(|t| t.file_name().is_some_and(|n| n == name.as_str()))
                {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }

    /// Sets a block device's size.
    pub fn set_block_size(&self, name: &str, size: u64) {
        write(
            &self.p(&format!("sys/block/{name}/size")),
            &format!("{}\n", size / 512),
        );
    }

    /// Adds a dm-multipath map `dm-N` named `name` over `slaves`; returns `dm-N`.
    pub fn add_multipath_map(&self, name: &str, wwid: &str, slaves: &[&str]) -> String {
        let dm = {
            let mut st = self.state();
            let n = st.next_dm;
            st.next_dm += 1;
            format!("dm-{n}")
        };
        let size = slaves
            .first()
            .and_then(|s| fs::read_to_string(self.p(&format!("sys/block/{s}/size"))).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 512;
        self.add_block(&dm, size, &format!("254:{}", dm.trim_start_matches("dm-")));
        write(
            &self.p(&format!("sys/block/{dm}/dm/name")),
            &format!("{name}\n"),
        );
        write(
            &self.p(&format!("sys/block/{dm}/dm/uuid")),
            &format!("mpath-{wwid}\n"),
        );
        for s in slaves {
            self.add_multipath_slave(&dm, s);
        }
        link(
            Path::new(&format!("../{dm}")),
            &self.p(&format!("dev/mapper/{name}")),
        );
        dm
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

    /// Adds an NVMe-oF controller `nvme{ctrl}` (state `live`) of the subsystem `nqn`.
    pub fn add_nvme_controller(
        &self,
        ctrl: u32,
        nqn: &str,
        transport: &str,
        traddr: &str,
        trsvcid: u16,
        hostnqn: &str,
    ) -> String {
        let name = format!("nvme{ctrl}");
        let dir = self.p(&format!("sys/devices/virtual/nvme-fabrics/ctl/{name}"));
        write(&dir.join("subsysnqn"), &format!("{nqn}\n"));
        write(&dir.join("transport"), &format!("{transport}\n"));
        write(
            &dir.join("address"),
            &format!("traddr={traddr},trsvcid={trsvcid},src_addr={traddr}\n"),
        );
        write(&dir.join("hostnqn"), &format!("{hostnqn}\n"));
        if let Some(id) = hostnqn.rsplit(':').next().filter(|u| u.len() == 36) {
            write(&dir.join("hostid"), &format!("{id}\n"));
        }
        write(&dir.join("state"), "live\n");
        write(&dir.join("rescan_controller"), "");
        write(&dir.join("delete_controller"), "");
        link(&dir, &self.p(&format!("sys/class/nvme/{name}")));
        name
    }

    /// Adds namespace `nsid` to controller `nvme{ctrl}` the way native multipath shows it:
    /// a path entry `nvme{subsys}c{ctrl}n{nsid}` under the controller and the head block
    /// device `nvme{subsys}n{nsid}` (created once, shared by every controller) under the
    /// subsystem `nvme-subsys{subsys}`, which lists its controllers; and, as udev makes it,
    /// the head's `/dev/disk/by-id/nvme-<wwid>` link (`uuid.<uuid>`, else `eui.<nguid>`).
    /// Returns the head's name.
    pub fn add_nvme_namespace(
        &self,
        ctrl: u32,
        subsys: u32,
        nsid: u32,
        uuid: &str,
        nguid: &str,
        size: u64,
    ) -> String {
        let head = format!("nvme{subsys}n{nsid}");
        let entry = self.p(&format!(
            "sys/class/nvme/nvme{ctrl}/nvme{subsys}c{ctrl}n{nsid}"
        ));
        write(&entry.join("uuid"), &format!("{uuid}\n"));
        write(&entry.join("nguid"), &format!("{nguid}\n"));
        write(&entry.join("nsid"), &format!("{nsid}\n"));
        let sdir = self.p(&format!(
            "sys/devices/virtual/nvme-subsystem/nvme-subsys{subsys}"
        ));
        if !sdir.join("subsysnqn").exists() {
            let nqn = fs::read_to_string(self.p(&format!("sys/class/nvme/nvme{ctrl}/subsysnqn")))
                .unwrap_or_default();
            write(&sdir.join("subsysnqn"), &nqn);
            link(
                &sdir,
                &self.p(&format!("sys/class/nvme-subsystem/nvme-subsys{subsys}")),
            );
        }
        if let Ok(c) = fs::canonicalize(self.p(&format!("sys/class/nvme/nvme{ctrl}"))) {
            link(&c, &sdir.join(format!("nvme{ctrl}")));
        }
        if !self.p(&format!("sys/block/{head}")).exists() {
            let hdir = sdir.join(&head);
            self.add_block_at(
                &head,
                Some(&hdir),
                size,
                &format!("259:{}", subsys * 64 + nsid),
            );
            for (a, v) in [("uuid", uuid), ("nguid", nguid)] {
                write(&hdir.join(a), &format!("{v}\n"));
            }
            let wwid = if uuid.chars().any(|c| c.is_ascii_hexdigit() && c != '0') {
                format!("uuid.{}", uuid.to_ascii_lowercase())
            } else {
                format!("eui.{}", nguid.replace('-', "").to_ascii_lowercase())
            };
            write(&hdir.join("wwid"), &format!("{wwid}\n"));
            link(
                Path::new(&format!("../../{head}")),
                &self.p(&format!("dev/disk/by-id/nvme-{wwid}")),
            );
        }
        head
    }

    /// Removes controller `name` with its path entries; a head no controller shows any
    /// more goes too (as when the last path of a namespace is gone).
    pub fn remove_nvme_controller(&self, name: &str) {
        let dir = self.p(&format!("sys/class/nvme/{name}"));
        let heads: Vec<String> = fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| crate::nvme::head_name(&e.file_name().to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default();
        if let Ok(real) = fs::canonicalize(&dir) {
            let _ = fs::remove_dir_all(real);
        }
        let _ = fs::remove_file(&dir);
        if let Ok(rd) = fs::read_dir(self.p("sys/class/nvme-subsystem")) {
            for s in rd.flatten() {
                let _ = fs::remove_file(s.path().join(name));
            }
        }
        let remaining: Vec<String> = fs::read_dir(self.p("sys/class/nvme"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .flat_map(|c| {
                fs::read_dir(c)
                    .map(|rd| {
                        rd.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
            .filter_map(|e| crate::nvme::head_name(&e))
            .collect();
        for h in heads.iter().filter(|h| !remaining.contains(h)) {
            let block = self.p(&format!("sys/block/{h}"));
            if let Ok(wwid) = fs::read_to_string(block.join("wwid")) {
                let _ = fs::remove_file(self.p(&format!("dev/disk/by-id/nvme-{}", wwid.trim())));
            }
            if let Ok(real) = fs::canonicalize(&block) {
                let _ = fs::remove_dir_all(real);
            }
            let _ = fs::remove_file(&block);
            let _ = fs::remove_dir_all(&block);
            let _ = fs::remove_file(self.p(&format!("dev/{h}")));
        }
    }

    /// Makes the namespace head `head` show `size` after its controller's next rescan.
    pub fn resize_nvme_namespace(&self, head: &str, size: u64) {
        self.state()
            .nvme_pending_sizes
            .insert(head.to_string(), size);
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
            "scan" => {
                let Some(h) = dir_name
                    .strip_prefix("host")
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    return;
                };
                let _ = fs::write(path, "");
                let parts: Vec<&str> = value.split_whitespace().collect();
                let want = |i: usize, v: u64| {
                    parts
                        .get(i)
                        .is_some_and(|p| *p == "-" || p.parse::<u64>().ok() == Some(v))
                };
                let specs: Vec<LunSpec> = self.state().offered.get(&h).cloned().unwrap_or_default();
                for s in specs.iter().filter(|s| {
                    want(0, s.channel.into()) && want(1, s.target.into()) && want(2, s.lun)
                }) {
                    self.add_scsi_disk(h, s);
                }
            }
            "delete_controller" if value.trim() == "1" => self.remove_nvme_controller(&dir_name),
            "rescan_controller" if value.trim() == "1" => {
                let _ = fs::write(path, "");
                let pending: Vec<(String, u64)> = self.state().nvme_pending_sizes.drain().collect();
                for (head, size) in pending {
                    self.set_block_size(&head, size);
                }
            }
            "delete" | "rescan" if value.trim() == "1" => {
                let Ok(hctl) = dir_name.parse::<Hctl>() else {
                    return;
                };
                let _ = fs::write(path, "");
                if attr == "delete" {
                    self.remove_scsi_device(hctl);
                    return;
                }
                let Some(name) = self.device_at(hctl) else {
                    return;
                };
                let wwid = fs::read_to_string(dir.join("wwid")).unwrap_or_default();
                let size = self
                    .state()
                    .offered
                    .values()
                    .flatten()
                    .find(|s| s.wwid == wwid.trim())
                    .map(|s| s.size);
                if let Some(size) = size {
                    self.set_block_size(&name, size);
                }
            }
            _ => {}
        }
    }
}

/// Validates a `<disk>` element against libvirt's own RNG schema: wraps it in a minimal
/// domain and runs `virt-xml-validate` (Debian packages `libvirt-clients` and
/// `libxml2-utils`). Returns `Ok(false)` when the validator is not installed on a developer
/// machine; where `HOSTBRICK_SCHEMA_CHECK=required` (set by `scripts/test`, so in CI) or `CI`
/// is set, a missing validator is an error, so the check cannot silently stop running.
pub fn validate_disk_xml(disk_xml: &str) -> std::result::Result<bool, String> {
    let Ok(validator) = which::which("virt-xml-validate") else {
        let required = std::env::var("HOSTBRICK_SCHEMA_CHECK").is_ok_and(|v| v == "required")
            || std::env::var_os("CI").is_some();
        if required {
            return Err("virt-xml-validate is not installed (the schema check is required)".into());
        }
        eprintln!("virt-xml-validate not installed: disk XML not schema-checked");
        return Ok(false);
    };
    let domain = format!(
        "<domain type='qemu'>\n<name>hostbrick-schema-check</name>\n<memory unit='MiB'>64</memory>\n\
         <os><type arch='x86_64'>hvm</type></os>\n<devices>\n{disk_xml}\n</devices>\n</domain>\n"
    );
    let mut file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    std::io::Write::write_all(&mut file, domain.as_bytes()).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(validator)
        .arg(file.path())
        .arg("domain")
        .output()
        .map_err(|e| format!("running virt-xml-validate: {e}"))?;
    if out.status.success() {
        Ok(true)
    } else {
        Err(format!(
            "virt-xml-validate rejected the disk:\n{disk_xml}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_names_like_the_kernel() {
        assert_eq!(disk_name(0), "sda");
        assert_eq!(disk_name(25), "sdz");
        assert_eq!(disk_name(26), "sdaa");
        assert_eq!(disk_name(27), "sdab");
    }

    #[test]
    fn kernel_answers_scan_delete_rescan() {
        let fake = FakeHost::new();
        let host = fake.host();
        fake.add_iscsi_session(
            1,
            2,
            0,
            "iqn.2003-01.x:t",
            &"127.0.0.1:3260".parse().unwrap(),
        );
        fake.offer_lun(
            2,
            LunSpec::new(0, 0, 1, "naa.6001405aa", 1 << 20).by_path("ip-x-lun-1"),
        );
        crate::devices::scsi::scan_lun(&host, 2, Some(0), Some(0), 1).unwrap();
        let h: Hctl = "2:0:0:1".parse().unwrap();
        assert!(fake.device_at(h).is_some());
        let name = crate::devices::scsi::block_name(&host, h).unwrap().unwrap();
        assert_eq!(name, "sda");
        assert_eq!(
            crate::devices::scsi::wwid(&host, h)
                .unwrap()
                .unwrap()
                .as_str(),
            "36001405aa"
        );
        assert!(fake.root().join("dev/disk/by-path/ip-x-lun-1").exists());
        fake.resize_lun("naa.6001405aa", 2 << 20);
        crate::devices::scsi::rescan(&host, h).unwrap();
        assert_eq!(
            crate::devices::block::size_bytes(&host, "sda").unwrap(),
            2 << 20
        );
        crate::devices::scsi::delete(&host, h).unwrap();
        assert!(fake.device_at(h).is_none());
        assert!(!crate::devices::block::exists(&host, "sda"));
        assert!(!fake.root().join("dev/disk/by-path/ip-x-lun-1").exists());
    }

    #[test]
    fn runner_rules_newest_first_and_unmatched_is_an_error() {
        let r = FakeRunner::new();
        r.on("iscsiadm", &["-m", "session"], |_| {
            CommandOutput::exit(21, "iscsiadm: No active sessions.\n")
        });
        r.on("iscsiadm", &["-m", "session"], |_| {
            CommandOutput::ok("tcp: [1] 127.0.0.1:3260,1 iqn.2003-01.x:t (non-flash)\n")
        });
        let out = r
            .run(&Command::new("iscsiadm").args(["-m", "session"]))
            .unwrap();
        assert!(out.status.success());
        assert!(matches!(
            r.run(&Command::new("nvme")),
            Err(Error::CommandNotFound { .. })
        ));
        assert_eq!(r.count("iscsiadm -m session"), 1);
    }
}
