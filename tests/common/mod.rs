//! A simulated iSCSI initiator stack for driving hostbrick's connectors on a fake host
//! tree: iscsiadm (node records, logins, sessions, discovery), multipath/multipathd and
//! blockdev, answering with the text the real tools print.

#![allow(dead_code)] // each test file uses a different part

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hostbrick::iscsi::by_path_name;
use hostbrick::testing::{FakeHost, FakeRunner, LunSpec};
use hostbrick::{
    Arg, Command, CommandOutput, ConnectionInfo, ConnectorOptions, HostContext, Portal,
};

pub const IQN: &str = "iqn.2003-01.org.linux-iscsi.vm:t1";
pub const WWID_1: &str = "naa.6001405aaaaaaaaaaaaaaaaaaaaaaa1";
pub const WWID_2: &str = "naa.6001405bbbbbbbbbbbbbbbbbbbbbbb2";
pub const MIB: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct SimTarget {
    pub iqn: String,
    pub portal: Portal,
    /// (lun, sysfs wwid, size)
    pub luns: Vec<(u64, String, u64)>,
    pub chap: Option<(String, String)>,
    pub reachable: bool,
}

#[derive(Debug, Clone)]
struct SimSession {
    sid: u32,
    host_no: u32,
    iqn: String,
    portal: Portal,
}

#[derive(Default)]
struct SimState {
    targets: Vec<SimTarget>,
    nodes: HashMap<(String, String), HashMap<String, String>>,
    sessions: Vec<SimSession>,
    next_sid: u32,
    multipathd: bool,
    wwids: Vec<String>,
}

#[derive(Clone)]
pub struct Sim {
    pub fake: FakeHost,
    pub runner: Arc<FakeRunner>,
    state: Arc<Mutex<SimState>>,
}

fn lock(m: &Mutex<SimState>) -> MutexGuard<'_, SimState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

impl Sim {
    /// The copy the runner's rules hold: the same tree and state without the runner, so the
    /// rules do not keep the sim (and its temporary tree) alive in a reference cycle.
    fn for_handlers(&self) -> Self {
        Self {
            fake: self.fake.clone(),
            runner: Arc::new(FakeRunner::new()),
            state: self.state.clone(),
        }
    }

    pub fn new() -> Self {
        let sim = Sim {
            fake: FakeHost::new(),
            runner: Arc::new(FakeRunner::new()),
            state: Arc::new(Mutex::new(SimState {
                next_sid: 1,
                multipathd: true,
                ..SimState::default()
            })),
        };
        sim.fake
            .set_initiator_name("iqn.1993-08.org.debian:01:testhost");
        sim.install();
        sim
    }

    pub fn add_target(&self, portal: &str, luns: &[(u64, &str, u64)]) {
        lock(&self.state).targets.push(SimTarget {
            iqn: IQN.to_string(),
            portal: portal.parse().unwrap(),
            luns: luns
                .iter()
                .map(|(l, w, s)| (*l, w.to_string(), *s))
                .collect(),
            chap: None,
            reachable: true,
        });
    }

    pub fn require_chap(&self, user: &str, pass: &str) {
        for t in lock(&self.state).targets.iter_mut() {
            t.chap = Some((user.into(), pass.into()));
        }
    }

    pub fn set_reachable(&self, portal: &str, up: bool) {
        let p: Portal = portal.parse().unwrap();
        for t in lock(&self.state)
            .targets
            .iter_mut()
            .filter(|t| t.portal == p)
        {
            t.reachable = up;
        }
    }

    pub fn set_multipathd(&self, running: bool) {
        lock(&self.state).multipathd = running;
    }

    pub fn resize(&self, wwid: &str, size: u64) {
        for t in lock(&self.state).targets.iter_mut() {
            for l in t.luns.iter_mut().filter(|l| l.1 == wwid) {
                l.2 = size;
            }
        }
        self.fake.resize_lun(wwid, size);
    }

    pub fn session_count(&self) -> usize {
        lock(&self.state).sessions.len()
    }

    pub fn node_count(&self) -> usize {
        lock(&self.state).nodes.len()
    }

    pub fn has_node(&self, portal: &str) -> bool {
        lock(&self.state).nodes.keys().any(|(_, p)| p == portal)
    }

    pub fn maps(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.fake.root().join("dev/mapper"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Nothing of any volume is left: no session, node, SCSI disk, map or by-path link.
    pub fn assert_clean(&self) {
        assert_eq!(self.session_count(), 0, "sessions left");
        assert_eq!(self.node_count(), 0, "node records left");
        assert_eq!(self.fake.devices(), vec![], "SCSI disks left");
        assert_eq!(self.maps(), Vec::<String>::new(), "multipath maps left");
        let links: Vec<_> = std::fs::read_dir(self.fake.root().join("dev/disk/by-path"))
            .unwrap()
            .flatten()
            .collect();
        assert!(links.is_empty(), "by-path links left: {links:?}");
    }

    pub fn context(&self) -> HostContext {
        HostContext::new(self.fake.host(), self.runner.clone())
    }

    pub fn options(&self) -> ConnectorOptions {
        let mut o = ConnectorOptions::with_context(self.context())
            .operation_timeout(Duration::from_secs(10))
            .scan_timeout(Duration::from_millis(500))
            .lock_dir(self.fake.root().join("run/lock/hostbrick"));
        o.iscsi.extra_path_grace = Duration::from_millis(300);
        o.iscsi.multipath_timeout = Duration::from_secs(3);
        o
    }

    fn install(&self) {
        let s = self.for_handlers();
        self.runner.on("iscsiadm", &[], move |c| s.iscsiadm(c));
        let s = self.for_handlers();
        self.runner.on("multipathd", &[], move |c| s.multipathd(c));
        let s = self.for_handlers();
        self.runner.on("multipath", &[], move |c| s.multipath(c));
        let s = self.for_handlers();
        self.runner.on("dmsetup", &["remove"], move |c| {
            let name = plain(c).last().cloned().unwrap_or_default();
            s.remove_map(&name)
        });
        let root = self.fake.root().to_path_buf();
        self.runner.on("blockdev", &["--flushbufs"], move |c| {
            let dev = plain(c).last().cloned().unwrap_or_default();
            let local = root.join(dev.trim_start_matches('/'));
            if local.exists() {
                CommandOutput::ok("")
            } else {
                CommandOutput::exit(
                    1,
                    format!("blockdev: cannot open {dev}: No such file or directory\n"),
                )
            }
        });
    }

    fn iscsiadm(&self, c: &Command) -> CommandOutput {
        // A real iscsiadm takes a while to start: concurrent calls overlap.
        std::thread::sleep(Duration::from_millis(2));
        let a = plain(c);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        match a.as_slice() {
            ["-m", "session"] => self.session_list(),
            ["-m", "node"] => self.node_list(),
            ["-m", "node", "-T", iqn, "-p", portal, rest @ ..] => self.node_op(iqn, portal, rest),
            ["-m", "discoverydb", "-t", "sendtargets", "-p", portal, "--interface", _, rest @ ..] => {
                self.discovery(portal, rest)
            }
            ["-m", "discovery", "-t", "sendtargets", "-p", portal, "--interface", _] => {
                self.discovery(portal, &["--discover"])
            }
            _ => CommandOutput::exit(7, format!("iscsiadm: unsupported arguments {a:?}\n")),
        }
    }

    fn session_list(&self) -> CommandOutput {
        let st = lock(&self.state);
        if st.sessions.is_empty() {
            return CommandOutput::exit(21, "iscsiadm: No active sessions.\n");
        }
        CommandOutput::ok(
            st.sessions
                .iter()
                .map(|s| format!("tcp: [{}] {},1 {} (non-flash)\n", s.sid, s.portal, s.iqn))
                .collect::<String>(),
        )
    }

    fn node_list(&self) -> CommandOutput {
        let st = lock(&self.state);
        if st.nodes.is_empty() {
            return CommandOutput::exit(21, "iscsiadm: No records found\n");
        }
        let mut lines: Vec<String> = st
            .nodes
            .keys()
            .map(|(iqn, portal)| format!("{portal},1 {iqn}\n"))
            .collect();
        lines.sort();
        CommandOutput::ok(lines.concat())
    }

    fn node_op(&self, iqn: &str, portal: &str, rest: &[&str]) -> CommandOutput {
        let key = (iqn.to_string(), portal.to_string());
        let portal_p: Portal = portal.parse().unwrap();
        let bracket = format!("{},{}", portal_p.host(), portal_p.port());
        let mut st = lock(&self.state);
        let no_records = || CommandOutput::exit(21, "iscsiadm: No records found\n");
        match rest {
            [] => match st.nodes.get(&key) {
                Some(_) => CommandOutput::ok(format!("# BEGIN RECORD 2.1.8\nnode.name = {iqn}\nnode.conn[0].address = {}\n# END RECORD\n", portal_p.host())),
                None => no_records(),
            },
            ["--interface", iface, "--op", "new"] => {
                // As open-iscsi does: `--op new` of an existing record rewrites it with the
                // defaults, and it is missing while that happens.
                if st.nodes.remove(&key).is_some() {
                    drop(st);
                    std::thread::sleep(Duration::from_millis(5));
                    st = lock(&self.state);
                }
                st.nodes.insert(key, HashMap::new());
                CommandOutput::ok(format!("New iSCSI node [tcp:[hw=,ip=,net_if=,iscsi_if={iface}] {bracket},-1 {iqn}] added\n"))
            }
            ["--op", "update", pairs @ ..] => {
                let Some(params) = st.nodes.get_mut(&key) else { return no_records() };
                for kv in pairs.chunks(4) {
                    match kv {
                        ["-n", k, "-v", v] => {
                            params.insert(k.to_string(), v.to_string());
                        }
                        _ => return CommandOutput::exit(7, "iscsiadm: invalid update arguments\n"),
                    }
                }
                CommandOutput::ok("")
            }
            ["--op", "delete"] => match st.nodes.remove(&key) {
                Some(_) => CommandOutput::ok(""),
                None => no_records(),
            },
            ["--interface", iface, "--login"] => {
                let Some(params) = st.nodes.get(&key).cloned() else { return no_records() };
                let what = format!("[iface: {iface}, target: {iqn}, portal: {bracket}]");
                if st.sessions.iter().any(|s| s.iqn == iqn && s.portal == portal_p) {
                    return CommandOutput::exit(15, format!("iscsiadm: {iface}: 1 session requested, but 1 already present.\niscsiadm: Could not log into all portals\nLogging in to {what}\n"));
                }
                let Some(t) = st.targets.iter().find(|t| t.iqn == iqn && t.portal == portal_p && t.reachable).cloned() else {
                    return CommandOutput::exit(8, format!("Logging in to {what}\niscsiadm: Could not login to {what}.\niscsiadm: initiator reported error (8 - connection timed out)\niscsiadm: Could not log into all portals\n"));
                };
                if let Some((u, p)) = &t.chap {
                    let ok = params.get("node.session.auth.authmethod").map(String::as_str) == Some("CHAP")
                        && params.get("node.session.auth.username") == Some(u)
                        && params.get("node.session.auth.password") == Some(p);
                    if !ok {
                        return CommandOutput::exit(24, format!("Logging in to {what}\niscsiadm: Could not login to {what}.\niscsiadm: initiator reported error (24 - iSCSI login failed due to authorization failure)\niscsiadm: Could not log into all portals\n"));
                    }
                }
                let sid = st.next_sid;
                st.next_sid += 1;
                let host_no = sid + 1;
                st.sessions.push(SimSession { sid, host_no, iqn: iqn.into(), portal: portal_p.clone() });
                let manual = params.get("node.session.scan").map(String::as_str) == Some("manual");
                drop(st);
                self.fake.add_iscsi_session(sid, host_no, 0, iqn, &portal_p);
                for (lun, wwid, size) in &t.luns {
                    let spec = LunSpec::new(0, 0, *lun, wwid, *size).by_path(by_path_name(&portal_p, iqn, *lun));
                    if !manual {
                        self.fake.add_scsi_disk(host_no, &spec);
                    }
                    self.fake.offer_lun(host_no, spec);
                }
                CommandOutput::ok(format!("Logging in to {what}\nLogin to {what} successful.\n"))
            }
            ["--interface", _, "--logout"] => {
                let Some(pos) = st.sessions.iter().position(|s| s.iqn == iqn && s.portal == portal_p) else {
                    return CommandOutput::exit(21, "iscsiadm: No matching sessions found\n");
                };
                let s = st.sessions.remove(pos);
                drop(st);
                self.fake.remove_iscsi_session(s.sid);
                CommandOutput::ok(format!("Logging out of session [sid: {}, target: {iqn}, portal: {bracket}]\nLogout of [sid: {}, target: {iqn}, portal: {bracket}] successful.\n", s.sid, s.sid))
            }
            _ => CommandOutput::exit(7, format!("iscsiadm: unsupported node arguments {rest:?}\n")),
        }
    }

    fn discovery(&self, portal: &str, rest: &[&str]) -> CommandOutput {
        match rest {
            ["--op", "new"] | ["--op", "update", ..] => CommandOutput::ok(""),
            ["--discover"] => {
                let p: Portal = portal.parse().unwrap();
                let mut st = lock(&self.state);
                let Some(t) = st
                    .targets
                    .iter()
                    .find(|t| t.portal == p && t.reachable)
                    .cloned()
                else {
                    return CommandOutput::exit(4, format!("iscsiadm: cannot make connection to {}: Connection refused\niscsiadm: connection login retries (reopen_max) 5 exceeded\niscsiadm: Could not perform SendTargets discovery: encountered connection failure\n", p.host()));
                };
                let found: Vec<SimTarget> = st
                    .targets
                    .iter()
                    .filter(|x| x.iqn == t.iqn)
                    .cloned()
                    .collect();
                let mut out = String::new();
                for f in found {
                    st.nodes
                        .entry((f.iqn.clone(), f.portal.to_string()))
                        .or_default();
                    out.push_str(&format!("{},1 {}\n", f.portal, f.iqn));
                }
                CommandOutput::ok(out)
            }
            _ => CommandOutput::exit(7, "iscsiadm: unsupported discovery arguments\n"),
        }
    }

    fn dev_wwid(&self, dev: &str) -> Option<String> {
        let name = Path::new(dev).file_name()?.to_string_lossy().into_owned();
        let raw = std::fs::read_to_string(
            self.fake
                .root()
                .join(format!("sys/block/{name}/device/wwid")),
        )
        .ok()?;
        Some(hostbrick::Wwid::from_sysfs(&raw).ok()?.to_string())
    }

    fn multipathd(&self, c: &Command) -> CommandOutput {
        let a = plain(c);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        if !lock(&self.state).multipathd {
            return CommandOutput::exit(1, "error -104 receiving packet\n");
        }
        match a.as_slice() {
            ["show", "status"] => CommandOutput::ok(
                "path checker states:\nup                  2\n\npaths: 2\nbusy: False\n",
            ),
            ["add", "path", dev] => {
                let Some(wwid) = self.dev_wwid(dev) else {
                    return CommandOutput::ok("fail\n");
                };
                if !lock(&self.state).wwids.contains(&wwid) {
                    return CommandOutput::ok("ok\n"); // blacklisted by find_multipaths: no map
                }
                let name = Path::new(dev)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let mapper = self.fake.root().join(format!("dev/mapper/{wwid}"));
                match std::fs::canonicalize(&mapper) {
                    Ok(dm) => self
                        .fake
                        .add_multipath_slave(&dm.file_name().unwrap().to_string_lossy(), &name),
                    Err(_) => {
                        self.fake.add_multipath_map(&wwid, &wwid, &[&name]);
                    }
                }
                CommandOutput::ok("ok\n")
            }
            ["resize", "map", name] => {
                let Ok(dm) =
                    std::fs::canonicalize(self.fake.root().join(format!("dev/mapper/{name}")))
                else {
                    return CommandOutput::ok("fail\n");
                };
                let dm = dm.file_name().unwrap().to_string_lossy().into_owned();
                let slave =
                    std::fs::read_dir(self.fake.root().join(format!("sys/block/{dm}/slaves")))
                        .unwrap()
                        .flatten()
                        .next()
                        .unwrap()
                        .file_name();
                let size: u64 = std::fs::read_to_string(
                    self.fake
                        .root()
                        .join(format!("sys/block/{}/size", slave.to_string_lossy())),
                )
                .unwrap()
                .trim()
                .parse()
                .unwrap();
                self.fake.set_block_size(&dm, size * 512);
                CommandOutput::ok("ok\n")
            }
            _ => CommandOutput::exit(1, "multipathd: unsupported\n"),
        }
    }

    fn multipath(&self, c: &Command) -> CommandOutput {
        let a = plain(c);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        match a.as_slice() {
            ["-a", wwid] => {
                lock(&self.state).wwids.push(wwid.to_string());
                CommandOutput::ok(format!("wwid '{wwid}' added\n"))
            }
            ["-f", name] => self.remove_map(name),
            _ => CommandOutput::exit(1, "multipath: unsupported\n"),
        }
    }

    fn remove_map(&self, name: &str) -> CommandOutput {
        match std::fs::canonicalize(self.fake.root().join(format!("dev/mapper/{name}"))) {
            Ok(dm) => {
                self.fake
                    .remove_multipath_map(&dm.file_name().unwrap().to_string_lossy());
                CommandOutput::ok("")
            }
            Err(_) => CommandOutput::exit(1, format!("{name}: map not present\n")),
        }
    }
}

pub fn info(data: serde_json::Value) -> ConnectionInfo {
    ConnectionInfo::from_value(&serde_json::json!({"driver_volume_type": "iscsi", "data": data}))
        .unwrap()
}

pub fn single(portal: &str, lun: u64, volume: &str) -> ConnectionInfo {
    info(serde_json::json!({
        "target_portal": portal, "target_iqn": IQN, "target_lun": lun,
        "volume_id": volume, "target_discovered": false, "encrypted": false, "qos_specs": null
    }))
}

pub fn multi(portals: &[&str], lun: u64, volume: &str) -> ConnectionInfo {
    info(serde_json::json!({
        "target_portal": portals[0], "target_iqn": IQN, "target_lun": lun,
        "target_portals": portals, "target_iqns": vec![IQN; portals.len()], "target_luns": vec![lun; portals.len()],
        "volume_id": volume
    }))
}
