//! A simulated iSCSI initiator stack on a fake host tree: `iscsiadm` (node records, logins
//! with or without CHAP, sessions, SendTargets discovery), `multipath`/`multipathd`,
//! and `dmsetup remove`, answering with the text the real tools print. A login
//! makes the session and its SCSI host in the tree; with `node.session.scan = manual` the
//! target's LUNs wait to be scanned, otherwise they appear at once, as with open-iscsi.
//!
//! Records are files in the tree's `/etc/iscsi`, laid out and written as open-iscsi 2.1.8
//! does: `iscsiadm -m node ... --op new` writes `nodes/<iqn>/<address>,<port>` (no portal
//! group tag), discovery writes `nodes/<iqn>/<address>,<port>,<tpgt>/<iface>`, a
//! `discoverydb --op new` writes `send_targets/<address>,<port>/st_config`, and `--op update`
//! rewrites a record in place (keeping its mode). `iscsiadm -m node` prints a record
//! `--op new` made with portal group tag -1; `-m discoverydb -o show -P 1` lists each
//! discovery address with the node records its discovery made that are still there.
//! Discovery at any portal reports every target added, whatever its name
//! ([`IscsiSim::add_target_named`] makes an array with a target name per portal). A login reads the record file, so CHAP
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
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod tools;

use super::{args, connection_info, names_in, Tools};
use crate::testing::{FakeHost, FakeRunner};
use crate::Portal;
use crate::{ConnectionInfo, ConnectorOptions, HostContext};

/// Debian 12's `/etc/iscsi/iscsid.conf` (open-iscsi 2.1.8), as the simulated host has it.
pub const ISCSID_CONF: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/iscsi/records/iscsid.conf"
));

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
    /// The iface it was logged in through: only a logout through it ends the session.
    iface: String,
}

#[derive(Default)]
struct State {
    targets: Vec<Target>,
    /// (iqn, portal) of a node record discovery made → (discovery portal, iface): what
    /// `-m discoverydb -o show -P 1` lists under the discovery address.
    discovered_by: HashMap<(String, String), (Portal, String)>,
    /// The discovery records, in the order made.
    discovery_portals: Vec<Portal>,
    /// portal → discovery CHAP (user, password) it requires
    discovery_chap: HashMap<Portal, (String, String)>,
    sessions: Vec<Session>,
    next_sid: u32,
    /// Where the simulated iscsiadm keeps node records, under the tree's root.
    nodes_dir: &'static str,
    multipathd: bool,
    wwids: Vec<String>,
    /// Paths multipathd still lists although their disks are gone (its event thread
    /// behind), until `multipathd del path`.
    lingering_paths: Vec<String>,
    /// A map multipathd makes is read-only this long before it turns writable.
    maps_read_only_for: Option<std::time::Duration>,
    /// Sessions lose their connection right after the login and stay in recovery.
    sessions_fail: bool,
}

/// The simulated iSCSI stack: a fake host tree and a runner whose `iscsiadm`,
/// `multipath`, `multipathd` and `dmsetup` act on it. Cloning shares both.
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
        // open-iscsi's configuration as the Debian 12 guest has it: the record database is
        // the one hostbrick writes node records into.
        std::fs::write(fake.root().join("etc/iscsi/iscsid.conf"), ISCSID_CONF).unwrap();
        let sim = IscsiSim {
            fake: fake.clone(),
            runner: Arc::new(FakeRunner::new()),
            tools: Tools::new(
                fake,
                State {
                    next_sid: 1,
                    multipathd: true,
                    nodes_dir: "etc/iscsi/nodes",
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
        t.answer(r, "dmsetup", &["message"], |_, _| {
            crate::CommandOutput::ok("")
        });
        sim
    }

    /// Adds target [`IQN`] at `portal` (`address:port`) with `luns`, each `(lun, sysfs
    /// wwid, size)`; it is reachable and needs no CHAP.
    pub fn add_target(&self, portal: &str, luns: &[(u64, &str, u64)]) {
        self.add_target_named(IQN, portal, luns);
    }

    /// Adds target `iqn` at `portal` (`address:port`) with `luns`, as [`IscsiSim::add_target`]
    /// does for [`IQN`]: an array with a different target name per portal. Sendtargets
    /// discovery at any portal reports every target added.
    pub fn add_target_named(&self, iqn: &str, portal: &str, luns: &[(u64, &str, u64)]) {
        self.tools.state().targets.push(Target {
            iqn: iqn.to_string(),
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
        tools::node_files(&self.tools.nodes_dir())
            .into_iter()
            .find(|n| n.iqn == IQN && n.portal == portal)
            .map(|n| n.file)
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

    /// Makes the sessions of logins from now on lose their connection at once and stay in
    /// recovery (`state` `FAILED`, which the kernel does not scan) when `on`, as a target
    /// that drops its connections right after a login does; or log in normally again.
    pub fn fail_sessions_after_login(&self, on: bool) {
        self.tools.state().sessions_fail = on;
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

    /// Makes the simulated iscsiadm keep its node records in `/var/lib/iscsi/nodes` (as
    /// builds with another `ISCSI_DB_ROOT` do), while `/etc/iscsi/iscsid.conf` stays.
    pub fn records_elsewhere(&self) {
        self.tools.state().nodes_dir = "var/lib/iscsi/nodes";
    }

    /// Makes multipathd keep listing `names` (as if it had not handled their removal yet)
    /// until `multipathd del path` drops them.
    pub fn multipathd_lags(&self, names: &[&str]) {
        self.tools.state().lingering_paths = names.iter().map(|n| n.to_string()).collect();
    }

    /// Makes every map multipathd makes read-only for `d` before it turns writable, as a
    /// map loaded from its first path can be for a moment.
    pub fn maps_start_read_only(&self, d: std::time::Duration) {
        self.tools.state().maps_read_only_for = Some(d);
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

    /// The iscsiadm commands run so far, in order.
    pub fn iscsiadm_calls(&self) -> Vec<String> {
        self.runner
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("iscsiadm"))
            .collect()
    }

    /// How many sessions are logged in.
    pub fn session_count(&self) -> usize {
        self.tools.state().sessions.len()
    }

    /// How many node records there are (record files, one per target, portal and iface).
    pub fn node_count(&self) -> usize {
        tools::node_files(&self.tools.nodes_dir()).len()
    }

    /// Whether a node record for `portal` (`address:port`) exists.
    pub fn has_node(&self, portal: &str) -> bool {
        tools::node_files(&self.tools.nodes_dir())
            .iter()
            .any(|n| n.portal == portal)
    }

    /// Whether a node record for target `iqn` at `portal` (`address:port`) exists.
    pub fn has_node_of(&self, iqn: &str, portal: &str) -> bool {
        tools::node_files(&self.tools.nodes_dir())
            .iter()
            .any(|n| n.iqn == iqn && n.portal == portal)
    }

    /// The sessions as (target name, portal), sorted.
    pub fn sessions(&self) -> Vec<(String, String)> {
        let mut out: Vec<_> = self
            .tools
            .state()
            .sessions
            .iter()
            .map(|s| (s.iqn.clone(), s.portal.to_string()))
            .collect();
        out.sort();
        out
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
        for dir in ["etc/iscsi/nodes", "var/lib/iscsi/nodes"] {
            assert_eq!(
                names_in(&self.fake.root().join(dir)),
                Vec::<String>::new(),
                "node record files left in {dir}"
            );
        }
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
