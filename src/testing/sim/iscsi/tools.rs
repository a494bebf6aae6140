//! What the simulated iSCSI tools answer: `iscsiadm` (node and discovery records as files,
//! logins, sessions, discovery), `multipath` / `multipathd` and `dmsetup remove`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::super::{args, names_in, Tools};
use super::{Session, State, Target};
use crate::iscsi::by_path_name;
use crate::iscsi::idbm::NodeRecord;
use crate::iscsi::records::{line_name, record_value};
use crate::testing::LunSpec;
use crate::{Command, CommandOutput};
use crate::{Portal, Wwid};

/// What the simulated tools answer.
impl Tools<State> {
    pub(super) fn iscsiadm(&self, c: &Command) -> CommandOutput {
        // A real iscsiadm takes a while to start: concurrent calls overlap.
        std::thread::sleep(Duration::from_millis(2));
        let a = args(c);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        match a.as_slice() {
            ["-m", "session"] => self.session_list(),
            ["-m", "node"] => self.node_list(),
            ["-m", "discoverydb", "-o", "show", "-P", "1"] => self.discoverydb_list(),
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
        let nodes = node_files(&self.nodes_dir());
        if nodes.is_empty() {
            return CommandOutput::exit(21, "iscsiadm: No records found\n");
        }
        // A record `--op new` made (`nodes/<iqn>/<address>,<port>`) has no portal group
        // tag: iscsiadm prints -1 for it.
        let mut lines: Vec<String> = nodes
            .iter()
            .map(|n| format!("{},{} {}\n", n.portal, n.tpgt, n.iqn))
            .collect();
        lines.sort();
        lines.dedup();
        CommandOutput::ok(lines.concat())
    }

    /// `-m discoverydb -o show -P 1`: each discovery record with the node records its
    /// discovery made (and that are still there), as open-iscsi prints them.
    fn discoverydb_list(&self) -> CommandOutput {
        let nodes = node_files(&self.nodes_dir());
        let st = self.state();
        let mut out = String::from("SENDTARGETS:\n");
        if st.discovery_portals.is_empty() {
            out.push_str("No targets found.\n");
        }
        for d in &st.discovery_portals {
            out.push_str(&format!("DiscoveryAddress: {},{}\n", d.host(), d.port()));
            let mut by_target: Vec<(&String, &String, &String)> = st
                .discovered_by
                .iter()
                .filter(|((iqn, portal), (dp, _))| {
                    dp == d && nodes.iter().any(|n| &n.iqn == iqn && &n.portal == portal)
                })
                .map(|((iqn, portal), (_, iface))| (iqn, portal, iface))
                .collect();
            by_target.sort();
            let mut last: Option<&String> = None;
            for (iqn, portal, iface) in by_target {
                if last != Some(iqn) {
                    out.push_str(&format!("Target: {iqn}\n"));
                    last = Some(iqn);
                }
                out.push_str(&format!("\tPortal: {portal},1\n\t\tIface Name: {iface}\n"));
            }
        }
        out.push_str(
            "iSNS:\nNo targets found.\nSTATIC:\nNo targets found.\nFIRMWARE:\nNo targets found.\n",
        );
        CommandOutput::ok(out)
    }

    /// `nodes/<iqn>/<address>,<port>`: the record `--op new` makes (no portal group tag).
    fn flat_record(nodes_dir: &Path, iqn: &str, portal: &Portal) -> PathBuf {
        nodes_dir.join(format!("{iqn}/{},{}", portal.host(), portal.port()))
    }

    /// The node records' directory the simulated iscsiadm uses.
    pub(super) fn nodes_dir(&self) -> PathBuf {
        self.root().join(self.state().nodes_dir)
    }

    fn node_op(&self, iqn: &str, portal: &str, rest: &[&str]) -> CommandOutput {
        let key = (iqn.to_string(), portal.to_string());
        let portal_p: Portal = portal.parse().unwrap();
        let bracket = format!("{},{}", portal_p.host(), portal_p.port());
        let nodes_dir = self.nodes_dir();
        let mut st = self.state();
        let no_records = || CommandOutput::exit(21, "iscsiadm: No records found\n");
        let files: Vec<NodeFile> = node_files(&nodes_dir)
            .into_iter()
            .filter(|n| n.iqn == iqn && n.portal == portal_p.to_string())
            .collect();
        match rest {
            [] => match files.first() {
                Some(f) => CommandOutput::ok(std::fs::read_to_string(&f.file).unwrap_or_default()),
                None => no_records(),
            },
            ["--interface", iface, "--op", "new"] => {
                // As open-iscsi does: `--op new` of an existing record rewrites it with the
                // defaults, and it is missing while that happens.
                if !files.is_empty() {
                    for f in &files {
                        remove_record(&f.file);
                    }
                    drop(st);
                    std::thread::sleep(Duration::from_millis(5));
                    st = self.state();
                }
                st.discovered_by.remove(&key);
                let file = Self::flat_record(&nodes_dir, iqn, &portal_p);
                write_record(
                    &file,
                    &node_defaults(self.root(), iqn, -1, iface, &portal_p),
                );
                CommandOutput::ok(format!("New iSCSI node [tcp:[hw=,ip=,net_if=,iscsi_if={iface}] {bracket},-1 {iqn}] added\n"))
            }
            ["--op", "update", pairs @ ..] => {
                if files.is_empty() {
                    return no_records();
                }
                let mut settings = Vec::new();
                for kv in pairs.chunks(4) {
                    match kv {
                        ["-n", k, "-v", v] => settings.push((*k, *v)),
                        _ => return CommandOutput::exit(7, "iscsiadm: invalid update arguments\n"),
                    }
                }
                for f in &files {
                    update_record(&f.file, &settings);
                }
                CommandOutput::ok("")
            }
            ["--op", "delete"] => {
                if files.is_empty() {
                    return no_records();
                }
                st.discovered_by.remove(&key);
                for f in &files {
                    remove_record(&f.file);
                }
                CommandOutput::ok("")
            }
            ["--interface", iface, "--login"] => {
                // iscsiadm logs in with what the record file of that iface says: a flat
                // record's iface is the one it names, a portal directory's its file name.
                let Some(file) = files.iter().find(|f| f.iface == *iface) else {
                    return no_records();
                };
                let record = std::fs::read_to_string(&file.file).unwrap_or_default();
                let setting = |name: &str| record_value(&record, name).map(str::to_string);
                if !record.starts_with("# BEGIN RECORD ")
                    || !record.ends_with("# END RECORD\n")
                    || setting("node.name").as_deref() != Some(iqn)
                    || setting("node.conn[0].address").as_deref() != Some(portal_p.host())
                {
                    return CommandOutput::exit(
                        6,
                        format!("iscsiadm: could not read record {}\n", file.file.display()),
                    );
                }
                let what = format!("[iface: {iface}, target: {iqn}, portal: {bracket}]");
                if st
                    .sessions
                    .iter()
                    .any(|s| s.iqn == iqn && s.portal == portal_p)
                {
                    return CommandOutput::exit(15, format!("iscsiadm: {iface}: 1 session requested, but 1 already present.\niscsiadm: Could not log into all portals\nLogging in to {what}\n"));
                }
                let Some(t) = st
                    .targets
                    .iter()
                    .find(|t| t.iqn == iqn && t.portal == portal_p && t.reachable)
                    .cloned()
                else {
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
                st.sessions.push(Session {
                    sid,
                    iqn: iqn.into(),
                    portal: portal_p.clone(),
                    iface: iface.to_string(),
                });
                let manual = setting("node.session.scan").as_deref() == Some("manual");
                let failing = st.sessions_fail;
                drop(st);
                self.fake.add_iscsi_session(sid, host_no, 0, iqn, &portal_p);
                self.fake.set_iscsi_session_iface(sid, iface);
                if failing {
                    self.fake.set_iscsi_session_state(sid, "FAILED");
                }
                for (lun, wwid, size) in &t.luns {
                    let spec = LunSpec::new(0, 0, *lun, wwid, *size)
                        .by_path(by_path_name(&portal_p, iqn, *lun));
                    if !manual {
                        self.fake.add_scsi_disk(host_no, &spec);
                    }
                    self.fake.offer_lun(host_no, spec);
                }
                CommandOutput::ok(format!(
                    "Logging in to {what}\nLogin to {what} successful.\n"
                ))
            }
            ["--interface", iface, "--logout"] => {
                // Only the sessions logged in through that iface (iscsiadm walks the
                // iface's records and logs out the sessions that match them).
                let Some(pos) = st
                    .sessions
                    .iter()
                    .position(|s| s.iqn == iqn && s.portal == portal_p && s.iface == *iface)
                else {
                    return CommandOutput::exit(21, "iscsiadm: No matching sessions found\n");
                };
                let s = st.sessions.remove(pos);
                drop(st);
                self.fake.remove_iscsi_session(s.sid);
                CommandOutput::ok(format!("Logging out of session [sid: {}, target: {iqn}, portal: {bracket}]\nLogout of [sid: {}, target: {iqn}, portal: {bracket}] successful.\n", s.sid, s.sid))
            }
            _ => CommandOutput::exit(
                7,
                format!("iscsiadm: unsupported node arguments {rest:?}\n"),
            ),
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
                let nodes_dir = self.nodes_dir();
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
                // The array reports every target it has, whatever its name.
                let found: Vec<Target> = st.targets.clone();
                if !st.discovery_portals.contains(&t.portal) {
                    st.discovery_portals.push(t.portal.clone());
                }
                let mut out = String::new();
                for f in found {
                    let key = (f.iqn.clone(), f.portal.to_string());
                    st.discovered_by
                        .insert(key.clone(), (t.portal.clone(), iface.to_string()));
                    let there = node_files(&nodes_dir)
                        .iter()
                        .any(|n| n.iqn == key.0 && n.portal == key.1);
                    if !there {
                        let file = nodes_dir.join(format!(
                            "{}/{},{},1/{iface}",
                            f.iqn,
                            f.portal.host(),
                            f.portal.port()
                        ));
                        write_record(
                            &file,
                            &node_defaults(self.root(), &f.iqn, 1, iface, &f.portal),
                        );
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

    pub(super) fn multipathd(&self, c: &Command) -> CommandOutput {
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
                        let dm = self.fake.add_multipath_map(&wwid, &wwid, &[&name]);
                        if let Some(d) = self.state().maps_read_only_for {
                            self.fake.set_read_only(&dm, true);
                            let fake = self.fake.clone();
                            std::thread::spawn(move || {
                                std::thread::sleep(d);
                                fake.set_read_only(&dm, false);
                            });
                        }
                    }
                }
                CommandOutput::ok("ok\n")
            }
            // Its paths: the disks under maps, and those it has not dropped yet.
            ["show", "paths", "raw", "format", "%d"] => {
                let mut names = self.state().lingering_paths.clone();
                let block = self.root().join("sys/block");
                for dm in std::fs::read_dir(&block).into_iter().flatten().flatten() {
                    let name = dm.file_name().to_string_lossy().into_owned();
                    if !name.starts_with("dm-") {
                        continue;
                    }
                    for slave in std::fs::read_dir(block.join(&name).join("slaves"))
                        .into_iter()
                        .flatten()
                        .flatten()
                    {
                        names.push(slave.file_name().to_string_lossy().into_owned());
                    }
                }
                CommandOutput::ok(names.iter().map(|n| format!("{n}\n")).collect::<String>())
            }
            ["del", "path", name] => {
                let mut st = self.state();
                let before = st.lingering_paths.len();
                st.lingering_paths.retain(|p| p != name);
                CommandOutput::ok(if st.lingering_paths.len() < before {
                    "ok\n"
                } else {
                    "fail\n"
                })
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

    pub(super) fn multipath(&self, c: &Command) -> CommandOutput {
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

    pub(super) fn remove_map(&self, name: &str) -> CommandOutput {
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

/// One node record file in the tree, as open-iscsi finds it.
pub(super) struct NodeFile {
    pub(super) iqn: String,
    /// `address:port` (IPv6 in brackets), as the simulator's keys spell it.
    pub(super) portal: String,
    pub(super) tpgt: i32,
    pub(super) iface: String,
    pub(super) file: PathBuf,
}

/// Every node record file under `nodes` (the tree's `/etc/iscsi/nodes`): flat
/// `<target>/<address>,<port>` files and `<target>/<address>,<port>,<tpgt>/<iface>` ones
/// (entries without a comma, like a writer's temporary file, are not records).
pub(super) fn node_files(nodes: &Path) -> Vec<NodeFile> {
    let mut out = Vec::new();
    for iqn in names_in(nodes) {
        let tdir = nodes.join(&iqn);
        for entry in names_in(&tdir) {
            let mut parts = entry.split(',');
            let (Some(address), Some(port)) = (parts.next(), parts.next()) else {
                continue;
            };
            let tpgt = parts.next();
            let portal = if address.contains(':') {
                format!("[{address}]:{port}")
            } else {
                format!("{address}:{port}")
            };
            let path = tdir.join(&entry);
            match tpgt {
                None if path.is_file() => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let iface = record_value(&text, "iface.iscsi_ifacename")
                        .unwrap_or("default")
                        .to_string();
                    out.push(NodeFile {
                        iqn: iqn.clone(),
                        portal,
                        tpgt: -1,
                        iface,
                        file: path,
                    });
                }
                Some(g) if path.is_dir() => {
                    for iface in names_in(&path) {
                        out.push(NodeFile {
                            iqn: iqn.clone(),
                            portal: portal.clone(),
                            tpgt: g.parse().unwrap_or(-1),
                            iface: iface.clone(),
                            file: path.join(iface),
                        });
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// A new node record as `--op new` (or discovery, with a portal group tag) writes it, from
/// the tree's iscsid.conf.
fn node_defaults(root: &Path, iqn: &str, tpgt: i32, iface: &str, portal: &Portal) -> String {
    let conf = std::fs::read_to_string(root.join("etc/iscsi/iscsid.conf")).unwrap_or_default();
    // An iface of /etc/iscsi/ifaces (none of whose settings the simulator keeps): the
    // default iface's record under its name.
    let builtin = matches!(iface, "default" | "iser");
    let rec = NodeRecord::new(
        iqn,
        portal.host(),
        portal.port(),
        tpgt,
        if builtin { iface } else { "default" },
        &conf,
    )
    .expect("the simulator's iscsid.conf makes a record");
    let text = rec.text().to_string();
    if builtin {
        text
    } else {
        text.replace(
            "iface.iscsi_ifacename = default",
            &format!("iface.iscsi_ifacename = {iface}"),
        )
    }
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
