//! A simulated iSCSI initiator stack on a fake host tree: `iscsiadm` (node records, logins
//! with or without CHAP, sessions, SendTargets discovery), `multipath`/`multipathd`,
//! `dmsetup remove` and `blockdev`, answering with the text the real tools print. A login
//! makes the session and its SCSI host in the tree; with `node.session.scan = manual` the
//! target's LUNs wait to be scanned, otherwise they appear at once, as with open-iscsi.
//!
//! Records are files in the tree's `/etc/iscsi`, laid out and written as open-iscsi 2.1.8
//! does: `iscsiadm -m node ... --op new` writes `nodes/<iqn>/<address>,<port>` (no portal
//! group tag), discovery writes `nodes/<iqn>/<address>,<port>,<tpgt>/<iface>`, a
//! `discoverydb --op new` writes `send_targets/<address>,<port>/st_config`, and `--op update`
//! rewrites a record in place (keeping its mode). A login reads the record file, so CHAP
//! works only with the credentials in the file, whatever was on the command line; so does a
//! discovery at a portal that [`IscsiSim::require_discovery_chap`] protects.
//!
//! ```
//! use hostbrick::testing::sim::iscsi::{single, IscsiSim, WWID_1};
//! use hostbrick::testing::sim::MIB;
//! use hostbrick::{connector_for, DisconnectOptions, Protocol};
//!
//! let sim = IscsiSim::new();
//! sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
//! let c = connector_for(Protocol::Iscsi, sim.options()).unwrap();
//! let ci = single("127.0.0.1:3260", 1, "vol-1");
//! let rec = c.connect_volume(&ci).unwrap();
//! assert_eq!(sim.session_count(), 1);
//! c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default()).unwrap();
//! sim.assert_clean();
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{answer_flushbufs, args, connection_info, names_in, Tools};
use crate::iscsi::by_path_name;
use crate::iscsi::records::{line_name, record_value};
use crate::testing::{FakeHost, FakeRunner, LunSpec};
use crate::{Command, CommandOutput, ConnectionInfo, ConnectorOptions, HostContext};
use crate::{Portal, Wwid};

/// The target name every simulated target has.
pub const IQN: &str = "iqn.2003-01.org.linux-iscsi.vm:t1";
/// A LUN's `wwid` as sysfs shows it (`naa.` + the NAA identifier).
pub const WWID_1: &str = "naa.6001405aaaaaaaaaaaaaaaaaaaaaaa1";
/// Another LUN's `wwid`.
pub const WWID_2: &str = "naa.6001405bbbbbbbbbbbbbbbbbbbbbbb2";

/// A target portal and what it offers.
#[derive(Debug, Clone)]
struct Target {
    iqn: String,
    portal: Portal,
    /// (lun, sysfs wwid, size)
    luns: Vec<(u64, String, u64)>,
    chap: Option<(String, String)>,
    reachable: bool,
}

#[derive(Debug, Clone)]
struct Session {
    sid: u32,
    iqn: String,
    portal: Portal,
}

#[derive(Default)]
struct State {
    targets: Vec<Target>,
    /// (iqn, portal) → the record file
    nodes: HashMap<(String, String), PathBuf>,
    /// portal → discovery CHAP (user, password) it requires
    discovery_chap: HashMap<Portal, (String, String)>,
    sessions: Vec<Session>,
    next_sid: u32,
    multipathd: bool,
    wwids: Vec<String>,
}

/// The simulated iSCSI stack: a fake host tree and a runner whose `iscsiadm`,
/// `multipath`, `multipathd`, `dmsetup` and `blockdev` act on it. Cloning shares both.
#[derive(Clone)]
pub struct IscsiSim {
    /// The host tree the simulated tools change (initiator name set, multipathd running).
    pub fake: FakeHost,
    /// The runner the simulated tools answer on; it records every command.
    pub runner: Arc<FakeRunner>,
    tools: Tools<State>,
}

impl Default for IscsiSim {
    fn default() -> Self {
        Self::new()
    }
}

impl IscsiSim {
    /// A host with initiator `iqn.1993-08.org.debian:01:testhost`, multipathd running and
    /// no target.
    pub fn new() -> Self {
        let fake = FakeHost::new();
        fake.set_initiator_name("iqn.1993-08.org.debian:01:testhost");
        let sim = IscsiSim {
            fake: fake.clone(),
            runner: Arc::new(FakeRunner::new()),
            tools: Tools::new(
                fake,
                State {
                    next_sid: 1,
                    multipathd: true,
                    ..State::default()
                },
            ),
        };
        let (t, r) = (&sim.tools, &*sim.runner);
        t.answer(r, "iscsiadm", &[], |t, c| t.iscsiadm(c));
        t.answer(r, "multipathd", &[], |t, c| t.multipathd(c));
        t.answer(r, "multipath", &[], |t, c| t.multipath(c));
        t.answer(r, "dmsetup", &["remove"], |t, c| {
            let name = args(c).last().cloned().unwrap_or_default();
            t.remove_map(&name)
        });
        answer_flushbufs(&sim.fake, r);
        sim
    }

    /// Adds target [`IQN`] at `portal` (`address:port`) with `luns`, each `(lun, sysfs
    /// wwid, size)`; it is reachable and needs no CHAP.
    pub fn add_target(&self, portal: &str, luns: &[(u64, &str, u64)]) {
        self.tools.state().targets.push(Target {
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

    /// Makes every target added so far refuse logins without CHAP `user` and `pass`.
    pub fn require_chap(&self, user: &str, pass: &str) {
        for t in self.tools.state().targets.iter_mut() {
            t.chap = Some((user.into(), pass.into()));
        }
    }

    /// Makes sendtargets discovery at `portal` (`address:port`) refuse (exit 24) unless
    /// the discovery record's file holds CHAP `user` and `pass`.
    pub fn require_discovery_chap(&self, portal: &str, user: &str, pass: &str) {
        self.tools
            .state()
            .discovery_chap
            .insert(portal.parse().unwrap(), (user.into(), pass.into()));
    }

    /// The node record file of target [`IQN`] at `portal` (`address:port`), if there is one.
    pub fn node_record(&self, portal: &str) -> Option<PathBuf> {
        self.tools
            .state()
            .nodes
            .iter()
            .find(|((_, p), _)| p == portal)
            .map(|(_, f)| f.clone())
    }

    /// The sendtargets discovery record file of `portal` (`address:port`) (it may not exist).
    pub fn discovery_record(&self, portal: &str) -> PathBuf {
        let p: Portal = portal.parse().unwrap();
        self.fake.root().join(format!(
            "etc/iscsi/send_targets/{},{}/st_config",
            p.host(),
            p.port()
        ))
    }

    /// Makes logins to and discovery at `portal` time out (`up` false) or work again.
    pub fn set_reachable(&self, portal: &str, up: bool) {
        let p: Portal = portal.parse().unwrap();
        for t in self
            .tools
            .state()
            .targets
            .iter_mut()
            .filter(|t| t.portal == p)
        {
            t.reachable = up;
        }
    }

    /// Starts or stops multipathd.
    pub fn set_multipathd(&self, running: bool) {
        self.tools.state().multipathd = running;
    }

    /// Grows (or shrinks) the LUN with sysfs wwid `wwid` to `size`; its disks show the new
    /// size after a rescan.
    pub fn resize(&self, wwid: &str, size: u64) {
        for t in self.tools.state().targets.iter_mut() {
            for l in t.luns.iter_mut().filter(|l| l.1 == wwid) {
                l.2 = size;
            }
        }
        self.fake.resize_lun(wwid, size);
    }

    /// How many sessions are logged in.
    pub fn session_count(&self) -> usize {
        self.tools.state().sessions.len()
    }

    /// How many node records there are.
    pub fn node_count(&self) -> usize {
        self.tools.state().nodes.len()
    }

    /// Whether a node record for `portal` (`address:port`) exists.
    pub fn has_node(&self, portal: &str) -> bool {
        self.tools.state().nodes.keys().any(|(_, p)| p == portal)
    }

    /// The multipath maps' names (`/dev/mapper`), sorted.
    pub fn maps(&self) -> Vec<String> {
        names_in(&self.fake.root().join("dev/mapper"))
    }

    /// Nothing of any volume is left: no session, node record (nor its file), SCSI disk, map
    /// or by-path link.
    ///
    /// # Panics
    ///
    /// When something is left, naming it.
    pub fn assert_clean(&self) {
        assert_eq!(self.session_count(), 0, "sessions left");
        assert_eq!(self.node_count(), 0, "node records left");
        assert_eq!(
            names_in(&self.fake.root().join("etc/iscsi/nodes")),
            Vec::<String>::new(),
            "node record files left"
        );
        assert_eq!(self.fake.devices(), vec![], "SCSI disks left");
        assert_eq!(self.maps(), Vec::<String>::new(), "multipath maps left");
        let links: Vec<_> = std::fs::read_dir(self.fake.root().join("dev/disk/by-path"))
            .unwrap()
            .flatten()
            .collect();
        assert!(links.is_empty(), "by-path links left: {links:?}");
    }

    /// A context on the simulated host.
    pub fn context(&self) -> HostContext {
        super::context(&self.fake, &self.runner)
    }

    /// Connector options on the simulated host, with time limits short enough for tests
    /// (operations 10 s, scans 500 ms, extra paths 300 ms, multipath maps 3 s).
    pub fn options(&self) -> ConnectorOptions {
        let mut o = super::options(
            &self.fake,
            &self.runner,
            Duration::from_secs(10),
            Duration::from_millis(500),
        );
        o.iscsi.extra_path_grace = Duration::from_millis(300);
        o.iscsi.multipath_timeout = Duration::from_secs(3);
        o
    }
}

/// What the simulated tools answer.
impl Tools<State> {
    fn iscsiadm(&self, c: &Command) -> CommandOutput {
        // A real iscsiadm takes a while to start: concurrent calls overlap.
        std::thread::sleep(Duration::from_millis(2));
        let a = args(c);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        match a.as_slice() {
            ["-m", "session"] => self.session_list(),
            ["-m", "node"] => self.node_list(),
            ["-m", "node", "-T", iqn, "-p", portal, rest @ ..] => self.node_op(iqn, portal, rest),
            ["-m", "discoverydb", "-t", "sendtargets", "-p", portal, "--interface", iface, rest @ ..] => {
                self.discovery(portal, iface, rest)
            }
            ["-m", "discovery", "-t", "sendtargets", "-p", portal, "--interface", iface] => {
                self.discovery(portal, iface, &["--discover"])
            }
            _ => CommandOutput::exit(7, format!("iscsiadm: unsupported arguments {a:?}\n")),
        }
    }

    fn session_list(&self) -> CommandOutput {
        let st = self.state();
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
        let st = self.state();
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

    /// `nodes/<iqn>/<address>,<port>`: the record `--op new` makes (no portal group tag).
    fn flat_record(&self, iqn: &str, portal: &Portal) -> PathBuf {
        self.root().join(format!(
            "etc/iscsi/nodes/{iqn}/{},{}",
            portal.host(),
            portal.port()
        ))
    }

    fn node_op(&self, iqn: &str, portal: &str, rest: &[&str]) -> CommandOutput {
        let key = (iqn.to_string(), portal.to_string());
        let portal_p: Portal = portal.parse().unwrap();
        let bracket = format!("{},{}", portal_p.host(), portal_p.port());
        let mut st = self.state();
        let no_records = || CommandOutput::exit(21, "iscsiadm: No records found\n");
        match rest {
            [] => match st.nodes.get(&key) {
                Some(_) => CommandOutput::ok(format!("# BEGIN RECORD 2.1.8\nnode.name = {iqn}\nnode.conn[0].address = {}\n# END RECORD\n", portal_p.host())),
                None => no_records(),
            },
            ["--interface", iface, "--op", "new"] => {
                // As open-iscsi does: `--op new` of an existing record rewrites it with the
                // defaults, and it is missing while that happens.
                if let Some(old) = st.nodes.remove(&key) {
                    remove_record(&old);
                    drop(st);
                    std::thread::sleep(Duration::from_millis(5));
                    st = self.state();
                }
                let file = self.flat_record(iqn, &portal_p);
                write_record(&file, &node_defaults(iqn, -1, iface, &portal_p));
                st.nodes.insert(key, file);
                CommandOutput::ok(format!("New iSCSI node [tcp:[hw=,ip=,net_if=,iscsi_if={iface}] {bracket},-1 {iqn}] added\n"))
            }
            ["--op", "update", pairs @ ..] => {
                let Some(file) = st.nodes.get(&key) else { return no_records() };
                let mut settings = Vec::new();
                for kv in pairs.chunks(4) {
                    match kv {
                        ["-n", k, "-v", v] => settings.push((*k, *v)),
                        _ => return CommandOutput::exit(7, "iscsiadm: invalid update arguments\n"),
                    }
                }
                update_record(file, &settings);
                CommandOutput::ok("")
            }
            ["--op", "delete"] => match st.nodes.remove(&key) {
                Some(file) => {
                    remove_record(&file);
                    CommandOutput::ok("")
                }
                None => no_records(),
            },
            ["--interface", iface, "--login"] => {
                let Some(file) = st.nodes.get(&key) else { return no_records() };
                // iscsiadm logs in with what the record file says.
                let record = std::fs::read_to_string(file).unwrap_or_default();
                let setting = |name: &str| record_value(&record, name).map(str::to_string);
                let what = format!("[iface: {iface}, target: {iqn}, portal: {bracket}]");
                if st.sessions.iter().any(|s| s.iqn == iqn && s.portal == portal_p) {
                    return CommandOutput::exit(15, format!("iscsiadm: {iface}: 1 session requested, but 1 already present.\niscsiadm: Could not log into all portals\nLogging in to {what}\n"));
                }
                let Some(t) = st.targets.iter().find(|t| t.iqn == iqn && t.portal == portal_p && t.reachable).cloned() else {
                    return CommandOutput::exit(8, format!("Logging in to {what}\niscsiadm: Could not login to {what}.\niscsiadm: initiator reported error (8 - connection timed out)\niscsiadm: Could not log into all portals\n"));
                };
                if let Some((u, p)) = &t.chap {
                    let ok = setting("node.session.auth.authmethod").as_deref() == Some("CHAP")
                        && setting("node.session.auth.username").as_ref() == Some(u)
                        && setting("node.session.auth.password").as_ref() == Some(p);
                    if !ok {
                        return CommandOutput::exit(24, format!("Logging in to {what}\niscsiadm: Could not login to {what}.\niscsiadm: initiator reported error (24 - iSCSI login failed due to authorization failure)\niscsiadm: Could not log into all portals\n"));
                    }
                }
                let sid = st.next_sid;
                st.next_sid += 1;
                let host_no = sid + 1;
                st.sessions.push(Session { sid, iqn: iqn.into(), portal: portal_p.clone() });
                let manual = setting("node.session.scan").as_deref() == Some("manual");
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

    fn discovery(&self, portal: &str, iface: &str, rest: &[&str]) -> CommandOutput {
        let p: Portal = portal.parse().unwrap();
        let st_config = self.root().join(format!(
            "etc/iscsi/send_targets/{},{}/st_config",
            p.host(),
            p.port()
        ));
        match rest {
            ["--op", "new"] => {
                write_record(&st_config, &discovery_defaults(&p));
                CommandOutput::ok(format!(
                    "New discovery record for [{},{}] added.\n",
                    p.host(),
                    p.port()
                ))
            }
            ["--op", "update", "-n", k, "-v", v] => {
                if !st_config.exists() {
                    return CommandOutput::exit(
                        21,
                        format!(
                            "iscsiadm: Discovery record [{},{}] not found.\n",
                            p.host(),
                            p.port()
                        ),
                    );
                }
                update_record(&st_config, &[(*k, *v)]);
                CommandOutput::ok("")
            }
            ["--discover"] => {
                let mut st = self.state();
                let Some(t) = st
                    .targets
                    .iter()
                    .find(|t| t.portal == p && t.reachable)
                    .cloned()
                else {
                    return CommandOutput::exit(4, format!("iscsiadm: cannot make connection to {}: Connection refused\niscsiadm: connection login retries (reopen_max) 5 exceeded\niscsiadm: Could not perform SendTargets discovery: encountered connection failure\n", p.host()));
                };
                if let Some((u, pw)) = st.discovery_chap.get(&p) {
                    let record = std::fs::read_to_string(&st_config).unwrap_or_default();
                    let setting = |name: &str| record_value(&record, name);
                    let ok = setting("discovery.sendtargets.auth.authmethod") == Some("CHAP")
                        && setting("discovery.sendtargets.auth.username") == Some(u.as_str())
                        && setting("discovery.sendtargets.auth.password") == Some(pw.as_str());
                    if !ok {
                        return CommandOutput::exit(24, format!("iscsiadm: Login failed to authenticate with target \niscsiadm: discovery login to {} rejected: initiator failed authorization\n\niscsiadm: Could not perform SendTargets discovery: iSCSI login failed due to authorization failure\n", p.host()));
                    }
                }
                let found: Vec<Target> = st
                    .targets
                    .iter()
                    .filter(|x| x.iqn == t.iqn)
                    .cloned()
                    .collect();
                let mut out = String::new();
                for f in found {
                    let key = (f.iqn.clone(), f.portal.to_string());
                    if let std::collections::hash_map::Entry::Vacant(e) = st.nodes.entry(key) {
                        let file = self.root().join(format!(
                            "etc/iscsi/nodes/{}/{},{},1/{iface}",
                            f.iqn,
                            f.portal.host(),
                            f.portal.port()
                        ));
                        write_record(&file, &node_defaults(&f.iqn, 1, iface, &f.portal));
                        e.insert(file);
                    }
                    out.push_str(&format!("{},1 {}\n", f.portal, f.iqn));
                }
                CommandOutput::ok(out)
            }
            _ => CommandOutput::exit(7, "iscsiadm: unsupported discovery arguments\n"),
        }
    }

    fn dev_wwid(&self, dev: &str) -> Option<String> {
        let name = Path::new(dev).file_name()?.to_string_lossy().into_owned();
        let raw =
            std::fs::read_to_string(self.root().join(format!("sys/block/{name}/device/wwid")))
                .ok()?;
        Some(Wwid::from_sysfs(&raw).ok()?.to_string())
    }

    fn multipathd(&self, c: &Command) -> CommandOutput {
        let a = args(c);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        if !self.state().multipathd {
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
                if !self.state().wwids.contains(&wwid) {
                    return CommandOutput::ok("ok\n"); // blacklisted by find_multipaths: no map
                }
                let name = Path::new(dev)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let mapper = self.root().join(format!("dev/mapper/{wwid}"));
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
                let Ok(dm) = std::fs::canonicalize(self.root().join(format!("dev/mapper/{name}")))
                else {
                    return CommandOutput::ok("fail\n");
                };
                let dm = dm.file_name().unwrap().to_string_lossy().into_owned();
                let slave = std::fs::read_dir(self.root().join(format!("sys/block/{dm}/slaves")))
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
        let a = args(c);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        match a.as_slice() {
            ["-a", wwid] => {
                self.state().wwids.push(wwid.to_string());
                CommandOutput::ok(format!("wwid '{wwid}' added\n"))
            }
            ["-f", name] => self.remove_map(name),
            _ => CommandOutput::exit(1, "multipath: unsupported\n"),
        }
    }

    fn remove_map(&self, name: &str) -> CommandOutput {
        match std::fs::canonicalize(self.root().join(format!("dev/mapper/{name}"))) {
            Ok(dm) => {
                self.fake
                    .remove_multipath_map(&dm.file_name().unwrap().to_string_lossy());
                CommandOutput::ok("")
            }
            Err(_) => CommandOutput::exit(1, format!("{name}: map not present\n")),
        }
    }
}

/// A new node record as `idbm_print` writes it (the settings the simulator reads, and a
/// few more).
fn node_defaults(iqn: &str, tpgt: i32, iface: &str, portal: &Portal) -> String {
    format!(
        "# BEGIN RECORD 2.1.8\nnode.name = {iqn}\nnode.tpgt = {tpgt}\nnode.startup = manual\n\
         iface.iscsi_ifacename = {iface}\nnode.session.scan = auto\n\
         node.session.auth.authmethod = None\nnode.session.auth.chap_algs = MD5\n\
         node.conn[0].address = {}\nnode.conn[0].port = {}\n# END RECORD\n",
        portal.host(),
        portal.port()
    )
}

/// A new sendtargets discovery record.
fn discovery_defaults(portal: &Portal) -> String {
    format!(
        "# BEGIN RECORD 2.1.8\ndiscovery.startup = manual\ndiscovery.type = sendtargets\n\
         discovery.sendtargets.address = {}\ndiscovery.sendtargets.port = {}\n\
         discovery.sendtargets.auth.authmethod = None\n# END RECORD\n",
        portal.host(),
        portal.port()
    )
}

/// Writes a record file as iscsiadm does (`fopen(path, "w")`: a new file gets the default
/// mode, an existing one keeps its own).
fn write_record(file: &Path, text: &str) {
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, text).unwrap();
}

/// `--op update`: reads the record, sets `settings` and writes it back in place.
fn update_record(file: &Path, settings: &[(&str, &str)]) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !line_name(l).is_some_and(|n| settings.iter().any(|(k, _)| *k == n)))
        .map(str::to_string)
        .collect();
    let end = lines
        .iter()
        .rposition(|l| l.starts_with("# END RECORD"))
        .unwrap_or(lines.len());
    for (i, (k, v)) in settings.iter().enumerate() {
        lines.insert(end + i, format!("{k} = {v}"));
    }
    write_record(file, &(lines.join("\n") + "\n"));
}

/// Deletes a node record file and the directories it leaves empty, as `idbm_delete_node`.
fn remove_record(file: &Path) {
    let _ = std::fs::remove_file(file);
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d.file_name().is_some_and(|n| n == "nodes") || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// An iSCSI `connection_info` with `data` as its `data` object.
pub fn info(data: serde_json::Value) -> ConnectionInfo {
    connection_info("iscsi", data)
}

/// The `connection_info` of LUN `lun` of target [`IQN`] at `portal`, single path, for
/// volume `volume`.
pub fn single(portal: &str, lun: u64, volume: &str) -> ConnectionInfo {
    info(serde_json::json!({
        "target_portal": portal, "target_iqn": IQN, "target_lun": lun,
        "volume_id": volume, "target_discovered": false, "encrypted": false, "qos_specs": null
    }))
}

/// The `connection_info` of LUN `lun` of target [`IQN`] at every one of `portals` (the
/// first is the primary), for volume `volume`.
pub fn multi(portals: &[&str], lun: u64, volume: &str) -> ConnectionInfo {
    info(serde_json::json!({
        "target_portal": portals[0], "target_iqn": IQN, "target_lun": lun,
        "target_portals": portals, "target_iqns": vec![IQN; portals.len()], "target_luns": vec![lun; portals.len()],
        "volume_id": volume
    }))
}
