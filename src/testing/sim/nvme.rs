//! A simulated NVMe-oF initiator stack on a fake host tree: the kernel's `/dev/nvme-fabrics`
//! (a connect's option string in, `instance=N,cntlid=M` or the kernel's errno out; every
//! request recorded, [`NvmeSim::fabrics_requests`]) and `delete_controller`, `modprobe
//! nvme-fabrics`, `nvme id-ns`, `mdadm` (`--examine`, `--create`, `--assemble`, `--grow
//! --size max`, `--stop`, with superblocks kept on the target's namespaces),
//! answering as the kernel and the real tools do. A connect makes the controller and its
//! namespaces in the tree, as native NVMe multipath shows them.
//!
//! ```
//! use hostbrick::testing::sim::nvme::{volume, NvmeSim, NQN, UUID_1};
//! use hostbrick::testing::sim::MIB;
//! use hostbrick::{connector_for, DisconnectOptions, Protocol};
//!
//! let sim = NvmeSim::new(true);
//! sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, 64 * MIB)]);
//! let c = connector_for(Protocol::NvmeOf, sim.options()).unwrap();
//! let ci = volume(UUID_1, &["127.0.0.1:4420"], "vol-1");
//! let rec = c.connect_volume(&ci).unwrap();
//! assert_eq!(sim.controllers(), ["nvme0"]);
//! c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default()).unwrap();
//! sim.assert_clean();
//! ```

use std::sync::Arc;
use std::time::Duration;

use super::{args, connection_info, names_in, Tools};
use crate::testing::{FakeHost, FakeRunner};
use crate::{Command, CommandOutput, ConnectionInfo, ConnectorOptions, HostContext};

/// The fabrics control device, relative to the tree's root.
const FABRICS_DEVICE: &str = "dev/nvme-fabrics";

/// The subsystem NQN of the volumes [`volume`] describes.
pub const NQN: &str = "nqn.2014-08.org.hostbrick:vm1";
/// The simulated host's NQN (`/etc/nvme/hostnqn`).
pub const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:0f8fad5b-d9cb-469f-a165-70867728950e";
/// The simulated host's id (`/etc/nvme/hostid`, also the DMI product UUID).
pub const HOSTID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
/// A namespace UUID.
pub const UUID_1: &str = "11111111-1111-4111-8111-111111111111";
/// Another namespace UUID.
pub const UUID_2: &str = "22222222-2222-4222-8222-222222222222";

/// A subsystem on the simulated target.
#[derive(Debug, Clone)]
struct Subsystem {
    nqn: String,
    instance: u32,
    /// (address, port, reachable)
    portals: Vec<(String, u16, bool)>,
    /// (nsid, uuid, size)
    namespaces: Vec<(u32, String, u64)>,
}

#[derive(Default)]
struct State {
    subsystems: Vec<Subsystem>,
    /// (controller number, nqn, address, port, hostnqn)
    controllers: Vec<(u32, String, String, u16, String)>,
    next_ctrl: u32,
    /// Running MD arrays: (`mdN`, alias when `/dev/md/<alias>` names it).
    arrays: Vec<(String, Option<String>)>,
    /// MD superblocks on the target's namespaces: namespace uuid to array name.
    superblocks: std::collections::HashMap<String, String>,
    /// Assemble an array as `/dev/mdN` (no alias) when a namespace carrying a superblock
    /// appears, as udev's incremental assembly does.
    incremental: bool,
    /// Connects answered `EALREADY` with no controller to show for it: the kernel's list
    /// held a controller that went away before the caller looked (its connect undone, or
    /// given up after a loss).
    vanished_already: u32,
    /// How long after a connect the kernel's namespace scan adds the namespaces (none: at
    /// once, before the connect returns).
    scan_delay: Option<Duration>,
}

fn nguid_of(uuid: &str) -> String {
    uuid.replace('-', "")
}

/// The simulated NVMe-oF stack: a fake host tree whose kernel answers NVMe-oF connects,
/// controller deletes and flushes, and a runner whose `modprobe`, `nvme` and `mdadm` act on
/// it. Cloning shares both.
#[derive(Clone)]
pub struct NvmeSim {
    /// The host tree the simulated tools change (host NQN and id set).
    pub fake: FakeHost,
    /// The runner the simulated tools answer on; it records every command.
    pub runner: Arc<FakeRunner>,
    tools: Tools<State>,
}

impl NvmeSim {
    /// A host with identity [`HOSTNQN`]/[`HOSTID`], with the kernel's native NVMe
    /// multipath on or off, and no subsystem.
    pub fn new(native_multipath: bool) -> Self {
        let fake = FakeHost::new();
        let sim = NvmeSim {
            fake: fake.clone(),
            runner: Arc::new(FakeRunner::new()),
            tools: Tools::new(fake, State::default()),
        };
        let root = sim.fake.root().to_path_buf();
        for (p, v) in [
            ("etc/nvme/hostnqn", HOSTNQN),
            ("etc/nvme/hostid", HOSTID),
            (
                "sys/module/nvme_core/parameters/multipath",
                if native_multipath { "Y" } else { "N" },
            ),
            ("sys/class/dmi/id/product_uuid", HOSTID),
        ] {
            std::fs::create_dir_all(root.join(p).parent().unwrap()).unwrap();
            std::fs::write(root.join(p), format!("{v}\n")).unwrap();
        }
        std::fs::write(root.join(FABRICS_DEVICE), "").unwrap();
        let (t, r) = (&sim.tools, &*sim.runner);
        t.answer_exchanges(FABRICS_DEVICE, |t, request| t.fabrics_connect(request));
        t.answer(r, "modprobe", &["nvme-fabrics"], |t, _| {
            std::fs::write(t.root().join(FABRICS_DEVICE), "").unwrap();
            CommandOutput::ok("")
        });
        t.answer(r, "nvme", &[], |t, c| t.nvme(c));
        t.answer(r, "mdadm", &[], |t, c| t.mdadm(c));
        sim
    }

    /// Adds subsystem `nqn` reachable at `portals` (`address:port`) with `namespaces`,
    /// each `(nsid, uuid, size)`; its NGUIDs are the UUIDs without dashes.
    pub fn add_subsystem(&self, nqn: &str, portals: &[&str], namespaces: &[(u32, &str, u64)]) {
        let mut st = self.tools.state();
        let instance = st.subsystems.len() as u32;
        st.subsystems.push(Subsystem {
            nqn: nqn.into(),
            instance,
            portals: portals
                .iter()
                .map(|p| {
                    let (a, port) = p.split_once(':').unwrap();
                    (a.to_string(), port.parse().unwrap(), true)
                })
                .collect(),
            namespaces: namespaces
                .iter()
                .map(|(n, u, s)| (*n, u.to_string(), *s))
                .collect(),
        });
    }

    /// Every connect written to `/dev/nvme-fabrics` so far: the kernel's option strings, in
    /// order.
    pub fn fabrics_requests(&self) -> Vec<String> {
        self.fake
            .exchanges()
            .into_iter()
            .filter(|(p, _)| p.as_path() == std::path::Path::new(FABRICS_DEVICE))
            .map(|(_, r)| r)
            .collect()
    }

    /// Unloads the `nvme-fabrics` module: `/dev/nvme-fabrics` is gone until a `modprobe
    /// nvme-fabrics` loads it again.
    pub fn unload_fabrics_module(&self) {
        let _ = std::fs::remove_file(self.fake.root().join(FABRICS_DEVICE));
    }

    /// Answers the next `n` connects `EALREADY` although no controller serves them, as the
    /// kernel does when the controller it matched goes away right after.
    pub fn answer_already_then_vanish(&self, n: u32) {
        self.tools.state().vanished_already = n;
    }

    /// Makes the kernel's namespace scan of a new controller add its namespaces `delay`
    /// after the connect returned (from a thread of its own), as the real scan runs after
    /// the controller is live; `None` adds them before the connect returns.
    pub fn set_scan_delay(&self, delay: Option<Duration>) {
        self.tools.state().scan_delay = delay;
    }

    /// Makes connects to `address` be refused (`up` false) or work again.
    pub fn set_reachable(&self, address: &str, up: bool) {
        for s in self.tools.state().subsystems.iter_mut() {
            for p in s.portals.iter_mut().filter(|p| p.0 == address) {
                p.2 = up;
            }
        }
    }

    /// The controllers present (`nvme0`, ...), sorted.
    pub fn controllers(&self) -> Vec<String> {
        names_in(&self.fake.root().join("sys/class/nvme"))
    }

    /// How many attachments hostbrick's NVMe registry holds.
    pub fn registry_entries(&self) -> usize {
        std::fs::read_dir(self.fake.root().join("run/hostbrick/attachments/nvme"))
            .map(|rd| rd.count())
            .unwrap_or(0)
    }

    /// Nothing of any volume is left: no controller, registry entry, md array or block
    /// device.
    ///
    /// # Panics
    ///
    /// When something is left, naming it.
    pub fn assert_clean(&self) {
        assert_eq!(self.controllers(), Vec::<String>::new(), "controllers left");
        assert_eq!(self.registry_entries(), 0, "registry entries left");
        assert!(self.tools.state().arrays.is_empty(), "md arrays left");
        let heads: Vec<_> = std::fs::read_dir(self.fake.root().join("sys/block"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(heads.is_empty(), "block devices left: {heads:?}");
    }

    /// A context on the simulated host.
    pub fn context(&self) -> HostContext {
        super::context(&self.fake, &self.runner)
    }

    /// Connector options on the simulated host, with time limits short enough for tests
    /// (operations 5 s, scans 300 ms).
    pub fn options(&self) -> ConnectorOptions {
        super::options(
            &self.fake,
            &self.runner,
            Duration::from_secs(5),
            Duration::from_millis(300),
        )
    }

    /// Grows the namespace `uuid` on the target; `head` shows it after a rescan.
    pub fn resize(&self, uuid: &str, head: &str, size: u64) {
        for s in self.tools.state().subsystems.iter_mut() {
            for n in s.namespaces.iter_mut().filter(|n| n.1 == uuid) {
                n.2 = size;
            }
        }
        self.fake.resize_nvme_namespace(head, size);
    }
}

/// What the simulated tools answer.
impl Tools<State> {
    fn nvme(&self, c: &Command) -> CommandOutput {
        let a = args(c);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        match a.as_slice() {
            ["id-ns", dev, "-o", "json"] => {
                let head = dev.trim_start_matches("/dev/");
                let uuid =
                    std::fs::read_to_string(self.root().join(format!("sys/block/{head}/uuid")))
                        .unwrap_or_default();
                let st = self.state();
                let Some(size) = st
                    .subsystems
                    .iter()
                    .flat_map(|s| &s.namespaces)
                    .find(|n| n.1 == uuid.trim())
                    .map(|n| n.2)
                else {
                    return CommandOutput::exit(1, format!("{dev}: No such file or directory\n"));
                };
                CommandOutput::ok(format!("{{\n  \"nsze\":{},\n  \"ncap\":{},\n  \"flbas\":0,\n  \"lbafs\":[\n    {{\n      \"ms\":0,\n      \"ds\":12,\n      \"rp\":0\n    }}\n  ]\n}}\n", size >> 12, size >> 12))
            }
            ["list-ns", dev] => self.list_ns(dev),
            _ => CommandOutput::exit(1, format!("nvme: unsupported {a:?}\n")),
        }
    }

    /// The kernel's answer to a connect written to `/dev/nvme-fabrics`: the options parsed
    /// as the kernel parses them (unknown or missing ones are `EINVAL`), `ECONNREFUSED` where
    /// no reachable portal offers the subsystem, `EALREADY` for a controller that exists
    /// (the tree's controllers are the kernel's list), else the controller made with its
    /// namespaces and `instance=N,cntlid=M`.
    fn fabrics_connect(&self, request: &str) -> std::io::Result<String> {
        use nix::libc;
        let err = std::io::Error::from_raw_os_error;
        let mut opts = std::collections::HashMap::new();
        for field in request.split([',', '\n']).filter(|f| !f.is_empty()) {
            let Some((k, v)) = field.split_once('=') else {
                return Err(err(libc::EINVAL));
            };
            if !matches!(
                k,
                "nqn"
                    | "transport"
                    | "traddr"
                    | "trsvcid"
                    | "hostnqn"
                    | "hostid"
                    | "reconnect_delay"
                    | "ctrl_loss_tmo"
                    | "fast_io_fail_tmo"
            ) || opts.insert(k, v).is_some()
            {
                return Err(err(libc::EINVAL));
            }
        }
        let (Some(nqn), Some(&"tcp"), Some(addr), Some(hostnqn)) = (
            opts.get("nqn").copied(),
            opts.get("transport"),
            opts.get("traddr").copied(),
            opts.get("hostnqn").copied(),
        ) else {
            return Err(err(libc::EINVAL));
        };
        let port: u16 = match opts.get("trsvcid") {
            Some(p) => p.parse().map_err(|_| err(libc::EINVAL))?,
            None => 4420,
        };
        if opts.get("hostid").is_some_and(|id| id.len() != 36) {
            return Err(err(libc::EINVAL));
        }
        // The kernel's defaults and checks (nvmf_parse_options): a reconnect delay of at
        // least 1 s (10 s), a negative controller-loss timeout for never (600 s), a negative
        // fast I/O fail timeout for off (off).
        let int = |k: &str, default: i32| match opts.get(k) {
            Some(v) => v.parse::<i32>().map_err(|_| err(libc::EINVAL)),
            None => Ok(default),
        };
        let delay = int("reconnect_delay", 10)?;
        let loss = int("ctrl_loss_tmo", 600)?;
        let fast = int("fast_io_fail_tmo", -1)?;
        if delay <= 0 {
            return Err(err(libc::EINVAL));
        }
        // What the controller's attributes then read (nvme_ctrl_loss_tmo_show and the
        // others): the loss timeout as whole reconnect attempts.
        let recovery = [
            (
                "ctrl_loss_tmo",
                if loss < 0 {
                    "off".to_string()
                } else {
                    ((loss + delay - 1) / delay * delay).to_string()
                },
            ),
            ("reconnect_delay", delay.to_string()),
            (
                "fast_io_fail_tmo",
                if fast < 0 {
                    "off".to_string()
                } else {
                    fast.to_string()
                },
            ),
        ];
        let root = self.root().to_path_buf();
        let mut st = self.state();
        let Some(sub) = st
            .subsystems
            .iter()
            .find(|s| s.nqn == nqn && s.portals.iter().any(|p| p.0 == addr && p.1 == port && p.2))
            .cloned()
        else {
            return Err(err(libc::ECONNREFUSED));
        };
        if st.vanished_already > 0 {
            st.vanished_already -= 1;
            return Err(err(libc::EALREADY));
        }
        // A controller deleted through sysfs is gone from the kernel's list.
        st.controllers
            .retain(|x| root.join(format!("sys/class/nvme/nvme{}", x.0)).exists());
        if st
            .controllers
            .iter()
            .any(|x| x.1 == nqn && x.2 == addr && x.3 == port && x.4 == hostnqn)
        {
            return Err(err(libc::EALREADY));
        }
        let ctrl = st.next_ctrl;
        st.next_ctrl += 1;
        st.controllers.push((
            ctrl,
            nqn.to_string(),
            addr.to_string(),
            port,
            hostnqn.to_string(),
        ));
        let delay = st.scan_delay;
        drop(st);
        let name = self
            .fake
            .add_nvme_controller(ctrl, nqn, "tcp", addr, port, hostnqn);
        let dir = root.join(format!("sys/class/nvme/{name}"));
        for (attr, value) in recovery {
            std::fs::write(
                dir.join(attr),
                format!(
                    "{value}
"
                ),
            )
            .unwrap();
        }
        match delay {
            None => self.scan(ctrl, &sub),
            Some(d) => {
                let tools = self.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(d);
                    tools.scan(ctrl, &sub);
                });
            }
        }
        Ok(format!(
            "instance={ctrl},cntlid={}
",
            ctrl + 1
        ))
    }

    /// The kernel's namespace scan of controller `nvme{ctrl}` of `sub`: every namespace
    /// the subsystem has, if the controller is still there.
    fn scan(&self, ctrl: u32, sub: &Subsystem) {
        if !self
            .root()
            .join(format!("sys/class/nvme/nvme{ctrl}"))
            .exists()
        {
            return;
        }
        for (nsid, uuid, size) in &sub.namespaces {
            let head = self.fake.add_nvme_namespace(
                ctrl,
                sub.instance,
                *nsid,
                uuid,
                &nguid_of(uuid),
                *size,
            );
            self.incremental(&head);
        }
    }

    /// `nvme list-ns /dev/nvmeN`: the nsids the controller's subsystem has, as nvme-cli
    /// prints the Identify Active Namespace ID list.
    fn list_ns(&self, dev: &str) -> CommandOutput {
        let n: Option<u32> = dev.strip_prefix("/dev/nvme").and_then(|n| n.parse().ok());
        let st = self.state();
        let sub = n
            .filter(|n| self.root().join(format!("sys/class/nvme/nvme{n}")).exists())
            .and_then(|n| st.controllers.iter().find(|c| c.0 == n))
            .and_then(|c| st.subsystems.iter().find(|s| s.nqn == c.1));
        let Some(sub) = sub else {
            return CommandOutput::exit(
                1,
                format!("open {dev} failed: No such file or directory\n"),
            );
        };
        let mut nsids: Vec<u32> = sub.namespaces.iter().map(|n| n.0).collect();
        nsids.sort_unstable();
        let text: String = nsids
            .iter()
            .enumerate()
            .map(|(i, n)| format!("[{i:>4}]:{n:#x}\n"))
            .collect();
        CommandOutput::ok(text)
    }

    fn mdadm(&self, c: &Command) -> CommandOutput {
        let a = args(c);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        match a.as_slice() {
            ["--examine", dev] => match self.superblock(dev) {
                Some(name) => CommandOutput::ok(format!(
                    "{dev}:\n          Magic : a92b4efc\n        Version : 1.2\n    Feature Map : 0x1\n           Name : any:{name}\n     Raid Level : raid1\n   Raid Devices : 2\n"
                )),
                None => CommandOutput::exit(1, format!("mdadm: No md superblock detected on {dev}.\n")),
            },
            ["--create", array, rest @ ..] => {
                let alias = array.trim_start_matches("/dev/md/").to_string();
                let members: Vec<&str> = rest.iter().copied().filter(|m| m.starts_with("/dev/")).collect();
                for m in &members {
                    let uuid = self.uuid_of(m);
                    self.state().superblocks.insert(uuid, alias.clone());
                }
                self.md_up(Some(&alias), &members);
                CommandOutput::exit(0, format!("mdadm: array {array} started.\n"))
            }
            ["--assemble", "--run", array, members @ ..] => {
                let alias = array.trim_start_matches("/dev/md/");
                for m in members {
                    if self.superblock(m).as_deref() != Some(alias) {
                        return CommandOutput::exit(1, format!("mdadm: no RAID superblock on {m}\nmdadm: {m} has no superblock - assembly aborted\n"));
                    }
                    let head = m.trim_start_matches("/dev/");
                    if names_in(&self.root().join(format!("sys/block/{head}/holders"))).iter().any(|h| h.starts_with("md")) {
                        return CommandOutput::exit(1, format!("mdadm: {m} is busy - skipping\nmdadm: /dev/md/{alias} assembled from 0 drives - not enough to start the array.\n"));
                    }
                }
                self.md_up(Some(alias), members);
                CommandOutput::exit(0, format!("mdadm: /dev/md/{alias} has been started with {} drives.\n", members.len()))
            }
            ["--grow", "--size", "max", array] => {
                let Some(md) = self.md_named(array) else {
                    return CommandOutput::exit(1, format!("mdadm: error opening {array}: No such file or directory\n"));
                };
                let members = names_in(&self.root().join(format!("sys/block/{md}/slaves")));
                let size = members
                    .iter()
                    .filter_map(|m| std::fs::read_to_string(self.root().join(format!("sys/block/{m}/size"))).ok())
                    .filter_map(|s| s.trim().parse::<u64>().ok())
                    .min()
                    .unwrap_or(0);
                self.fake.set_block_size(&md, size * 512);
                CommandOutput::ok("")
            }
            ["--stop", array] => match self.md_named(array) {
                Some(md) => {
                    self.fake.remove_md_array(&md);
                    self.state().arrays.retain(|x| x.0 != md);
                    CommandOutput::exit(0, format!("mdadm: stopped {array}\n"))
                }
                None => CommandOutput::exit(1, format!("mdadm: error opening {array}: No such file or directory\n")),
            },
            _ => CommandOutput::exit(1, format!("mdadm: unsupported {a:?}\n")),
        }
    }

    /// The namespace uuid of the block device `dev` (`/dev/nvmeXnY`).
    fn uuid_of(&self, dev: &str) -> String {
        let head = dev.trim_start_matches("/dev/");
        std::fs::read_to_string(self.root().join(format!("sys/block/{head}/uuid")))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The array name in the MD superblock of `dev`, if it carries one.
    fn superblock(&self, dev: &str) -> Option<String> {
        let uuid = self.uuid_of(dev);
        self.state().superblocks.get(&uuid).cloned()
    }

    /// The running array (`mdN`) `array` (`/dev/md/<alias>` or `/dev/mdN`) names.
    fn md_named(&self, array: &str) -> Option<String> {
        let st = self.state();
        st.arrays
            .iter()
            .find(|(md, alias)| {
                array
                    .strip_prefix("/dev/md/")
                    .is_some_and(|a| alias.as_deref() == Some(a))
                    || array.strip_prefix("/dev/") == Some(md.as_str())
            })
            .map(|(md, _)| md.clone())
    }

    /// Starts an array over `members` (`/dev/...`), numbered down from `md127` as the
    /// kernel numbers arrays without a fixed minor.
    fn md_up(&self, alias: Option<&str>, members: &[&str]) -> String {
        let md = {
            let st = self.state();
            (0..=127u32)
                .rev()
                .map(|n| format!("md{n}"))
                .find(|m| !st.arrays.iter().any(|x| x.0 == *m))
                .expect("a free md number")
        };
        let names: Vec<&str> = members
            .iter()
            .map(|m| m.trim_start_matches("/dev/"))
            .collect();
        self.fake.add_md_array(&md, alias, &names);
        self.state()
            .arrays
            .push((md.clone(), alias.map(str::to_string)));
        md
    }

    /// udev's incremental assembly after `head` appeared: an array `/dev/mdN` (no alias)
    /// over it when it carries a superblock and is in no array yet.
    fn incremental(&self, head: &str) {
        if !self.state().incremental {
            return;
        }
        let dev = format!("/dev/{head}");
        let held = names_in(&self.root().join(format!("sys/block/{head}/holders")))
            .iter()
            .any(|h| h.starts_with("md"));
        if !held && self.superblock(&dev).is_some() {
            self.md_up(None, &[dev.as_str()]);
        }
    }
}

impl NvmeSim {
    /// Puts an MD superblock of the array `name` on the target's namespace `uuid`, as a
    /// replicated volume's earlier attachment left it.
    pub fn put_md_superblock(&self, uuid: &str, name: &str) {
        self.tools
            .state()
            .superblocks
            .insert(uuid.to_string(), name.to_string());
    }

    /// Turns udev's incremental MD assembly on or off: with it on, a namespace that
    /// carries a superblock is assembled as `/dev/mdN` (under no alias) when it appears.
    pub fn set_incremental_assembly(&self, on: bool) {
        self.tools.state().incremental = on;
    }

    /// The running MD arrays: (`mdN`, alias).
    pub fn md_arrays(&self) -> Vec<(String, Option<String>)> {
        self.tools.state().arrays.clone()
    }
}

/// An NVMe-oF `connection_info` with `data` as its `data` object.
pub fn nvme_info(data: serde_json::Value) -> ConnectionInfo {
    connection_info("nvmeof", data)
}

/// The `connection_info` of the namespace `uuid` of subsystem [`NQN`] over TCP at
/// `portals` (`address:port`), for volume `id`.
pub fn volume(uuid: &str, portals: &[&str], id: &str) -> ConnectionInfo {
    let portals: Vec<serde_json::Value> = portals
        .iter()
        .map(|p| {
            let (a, port) = p.split_once(':').unwrap();
            serde_json::json!([a, port, "tcp"])
        })
        .collect();
    nvme_info(
        serde_json::json!({"target_nqn": NQN, "portals": portals, "vol_uuid": uuid, "volume_id": id}),
    )
}
