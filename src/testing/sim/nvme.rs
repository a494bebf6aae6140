//! A simulated NVMe-oF initiator stack on a fake host tree: `nvme connect`, `disconnect`
//! and `id-ns`, `mdadm` and `blockdev`, answering as the real tools do. A connect makes
//! the controller and its namespaces in the tree, as native NVMe multipath shows them.
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

use super::{answer_flushbufs, args, connection_info, names_in, Tools};
use crate::testing::{FakeHost, FakeRunner};
use crate::{Command, CommandOutput, ConnectionInfo, ConnectorOptions, HostContext};

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
    arrays: Vec<String>,
}

fn nguid_of(uuid: &str) -> String {
    uuid.replace('-', "")
}

/// The simulated NVMe-oF stack: a fake host tree and a runner whose `nvme`, `mdadm` and
/// `blockdev` act on it. Cloning shares both.
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
        let (t, r) = (&sim.tools, &*sim.runner);
        t.answer(r, "nvme", &[], |t, c| t.nvme(c));
        t.answer(r, "mdadm", &[], |t, c| t.mdadm(c));
        answer_flushbufs(&sim.fake, r);
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
            ["connect", "-t", "tcp", "-a", addr, "-s", port, "-n", nqn, "-q", hostnqn, "-I", _hostid, "-l", _tmo] =>
            {
                let port: u16 = port.parse().unwrap();
                let mut st = self.state();
                let Some(sub) = st
                    .subsystems
                    .iter()
                    .find(|s| {
                        s.nqn == *nqn
                            && s.portals.iter().any(|p| p.0 == *addr && p.1 == port && p.2)
                    })
                    .cloned()
                else {
                    return CommandOutput::exit(1, "Failed to write to /dev/nvme-fabrics: Connection refused\ncould not add new controller: failed to write to nvme-fabrics device\n");
                };
                if st
                    .controllers
                    .iter()
                    .any(|x| x.1 == *nqn && x.2 == *addr && x.3 == port && x.4 == *hostnqn)
                {
                    return CommandOutput::exit(1, "already connected\n");
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
                drop(st);
                self.fake
                    .add_nvme_controller(ctrl, nqn, "tcp", addr, port, hostnqn);
                for (nsid, uuid, size) in &sub.namespaces {
                    self.fake.add_nvme_namespace(
                        ctrl,
                        sub.instance,
                        *nsid,
                        uuid,
                        &nguid_of(uuid),
                        *size,
                    );
                }
                CommandOutput::ok("")
            }
            ["disconnect", "-d", name] => {
                let n: u32 = name.trim_start_matches("nvme").parse().unwrap();
                let mut st = self.state();
                let Some(pos) = st.controllers.iter().position(|x| x.0 == n) else {
                    return CommandOutput::exit(0, format!("Did not find device {name}\n"));
                };
                let nqn = st.controllers.remove(pos).1;
                drop(st);
                self.fake.remove_nvme_controller(name);
                let _ = nqn;
                CommandOutput::ok("")
            }
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
            _ => CommandOutput::exit(1, format!("nvme: unsupported {a:?}\n")),
        }
    }

    fn mdadm(&self, c: &Command) -> CommandOutput {
        let a = args(c);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        match a.as_slice() {
            ["--examine", dev] => {
                CommandOutput::exit(1, format!("mdadm: No md superblock detected on {dev}.\n"))
            }
            ["--create", array, ..] => {
                let alias = array.trim_start_matches("/dev/md/").to_string();
                let root = self.root();
                std::fs::create_dir_all(root.join("dev/md")).unwrap();
                std::fs::write(root.join(format!("dev/md/{alias}")), vec![0u8; 4096]).unwrap();
                self.state().arrays.push(alias);
                CommandOutput::exit(0, format!("mdadm: array {array} started.\n"))
            }
            ["--stop", array] => {
                let alias = array.trim_start_matches("/dev/md/").to_string();
                let _ = std::fs::remove_file(self.root().join(format!("dev/md/{alias}")));
                self.state().arrays.retain(|x| *x != alias);
                CommandOutput::exit(0, format!("mdadm: stopped {array}\n"))
            }
            _ => CommandOutput::exit(1, format!("mdadm: unsupported {a:?}\n")),
        }
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
