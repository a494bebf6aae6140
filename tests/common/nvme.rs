//! A simulated NVMe-oF initiator stack: `nvme connect`/`disconnect`, `mdadm` and
//! `blockdev` over a fake host tree, answering as the real tools do.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hostbrick::testing::{FakeHost, FakeRunner};
use hostbrick::{Arg, Command, CommandOutput, ConnectionInfo, ConnectorOptions, HostContext};

pub const NQN: &str = "nqn.2014-08.org.hostbrick:vm1";
pub const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:0f8fad5b-d9cb-469f-a165-70867728950e";
pub const HOSTID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
pub const UUID_1: &str = "11111111-1111-4111-8111-111111111111";
pub const UUID_2: &str = "22222222-2222-4222-8222-222222222222";
pub const MIB: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct SimSubsystem {
    pub nqn: String,
    pub instance: u32,
    /// (address, port, reachable)
    pub portals: Vec<(String, u16, bool)>,
    /// (nsid, uuid, size)
    pub namespaces: Vec<(u32, String, u64)>,
}

#[derive(Default)]
struct State {
    subsystems: Vec<SimSubsystem>,
    /// (controller number, nqn, address, port, hostnqn)
    controllers: Vec<(u32, String, String, u16, String)>,
    next_ctrl: u32,
    arrays: Vec<String>,
}

#[derive(Clone)]
pub struct NvmeSim {
    pub fake: FakeHost,
    pub runner: Arc<FakeRunner>,
    state: Arc<Mutex<State>>,
}

fn plain(c: &Command) -> Vec<String> {
    c.arg_list()
        .iter()
        .map(|a| match a {
            Arg::Plain(s) => s.clone(),
            Arg::Secret(s) => s.expose().to_string(),
        })
        .collect()
}

fn nguid_of(uuid: &str) -> String {
    uuid.replace('-', "")
}

impl NvmeSim {
    /// The copy the runner's rules hold: the same tree and state without the runner, so the
    /// rules do not keep the sim (and its temporary tree) alive in a reference cycle.
    fn for_handlers(&self) -> Self {
        Self {
            fake: self.fake.clone(),
            runner: Arc::new(FakeRunner::new()),
            state: self.state.clone(),
        }
    }

    pub fn new(native_multipath: bool) -> Self {
        let sim = NvmeSim {
            fake: FakeHost::new(),
            runner: Arc::new(FakeRunner::new()),
            state: Arc::new(Mutex::new(State::default())),
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
        sim.install();
        sim
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_subsystem(&self, nqn: &str, portals: &[&str], namespaces: &[(u32, &str, u64)]) {
        let mut st = self.st();
        let instance = st.subsystems.len() as u32;
        st.subsystems.push(SimSubsystem {
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

    pub fn set_reachable(&self, address: &str, up: bool) {
        for s in self.st().subsystems.iter_mut() {
            for p in s.portals.iter_mut().filter(|p| p.0 == address) {
                p.2 = up;
            }
        }
    }

    pub fn controllers(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.fake.root().join("sys/class/nvme"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    pub fn registry_entries(&self) -> usize {
        std::fs::read_dir(self.fake.root().join("run/hostbrick/attachments/nvme"))
            .map(|rd| rd.count())
            .unwrap_or(0)
    }

    pub fn assert_clean(&self) {
        assert_eq!(self.controllers(), Vec::<String>::new(), "controllers left");
        assert_eq!(self.registry_entries(), 0, "registry entries left");
        assert!(self.st().arrays.is_empty(), "md arrays left");
        let heads: Vec<_> = std::fs::read_dir(self.fake.root().join("sys/block"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(heads.is_empty(), "block devices left: {heads:?}");
    }

    pub fn options(&self) -> ConnectorOptions {
        ConnectorOptions::with_context(HostContext::new(self.fake.host(), self.runner.clone()))
            .operation_timeout(Duration::from_secs(5))
            .scan_timeout(Duration::from_millis(300))
            .lock_dir(self.fake.root().join("run/lock/hostbrick"))
    }

    fn install(&self) {
        let s = self.for_handlers();
        self.runner.on("nvme", &[], move |c| s.nvme(c));
        let s = self.for_handlers();
        self.runner.on("mdadm", &[], move |c| s.mdadm(c));
        let root = self.fake.root().to_path_buf();
        self.runner.on("blockdev", &["--flushbufs"], move |c| {
            let dev = plain(c).last().cloned().unwrap_or_default();
            if root.join(dev.trim_start_matches('/')).exists() {
                CommandOutput::ok("")
            } else {
                CommandOutput::exit(
                    1,
                    format!("blockdev: cannot open {dev}: No such file or directory\n"),
                )
            }
        });
    }

    fn nvme(&self, c: &Command) -> CommandOutput {
        let a = plain(c);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        match a.as_slice() {
            ["connect", "-t", "tcp", "-a", addr, "-s", port, "-n", nqn, "-q", hostnqn, "-I", _hostid, "-l", _tmo] =>
            {
                let port: u16 = port.parse().unwrap();
                let mut st = self.st();
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
                let mut st = self.st();
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
                let uuid = std::fs::read_to_string(
                    self.fake.root().join(format!("sys/block/{head}/uuid")),
                )
                .unwrap_or_default();
                let st = self.st();
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

    /// Grows the namespace `uuid` on the target; `head` shows it after a rescan.
    pub fn resize(&self, uuid: &str, head: &str, size: u64) {
        for s in self.st().subsystems.iter_mut() {
            for n in s.namespaces.iter_mut().filter(|n| n.1 == uuid) {
                n.2 = size;
            }
        }
        self.fake.resize_nvme_namespace(head, size);
    }

    fn mdadm(&self, c: &Command) -> CommandOutput {
        let a = plain(c);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        match a.as_slice() {
            ["--examine", dev] => {
                CommandOutput::exit(1, format!("mdadm: No md superblock detected on {dev}.\n"))
            }
            ["--create", array, ..] => {
                let alias = array.trim_start_matches("/dev/md/").to_string();
                let root = self.fake.root();
                std::fs::create_dir_all(root.join("dev/md")).unwrap();
                std::fs::write(root.join(format!("dev/md/{alias}")), vec![0u8; 4096]).unwrap();
                self.st().arrays.push(alias);
                CommandOutput::exit(0, format!("mdadm: array {array} started.\n"))
            }
            ["--stop", array] => {
                let alias = array.trim_start_matches("/dev/md/").to_string();
                let _ = std::fs::remove_file(self.fake.root().join(format!("dev/md/{alias}")));
                self.st().arrays.retain(|x| *x != alias);
                CommandOutput::exit(0, format!("mdadm: stopped {array}\n"))
            }
            _ => CommandOutput::exit(1, format!("mdadm: unsupported {a:?}\n")),
        }
    }
}

pub fn nvme_info(data: serde_json::Value) -> ConnectionInfo {
    ConnectionInfo::from_value(&serde_json::json!({"driver_volume_type": "nvmeof", "data": data}))
        .unwrap()
}

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
