//! iSCSI sessions in sysfs (`class/iscsi_session`, `class/iscsi_connection`): which
//! session serves a target, its SCSI host and target id, and the LUNs it carries.

use std::collections::hash_map::{Entry, HashMap};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use crate::devices::scsi;
use crate::error::{Error, Result};
use crate::iscsi::by_path_name;
use crate::model::ids::Hctl;
use crate::model::iscsi::IscsiTarget;
use crate::platform::host::Host;

/// A logged-in session as sysfs shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// The session id (`sessionN`).
    pub sid: u32,
    /// The SCSI host number (`hostH`) the session sits on.
    pub host_no: u32,
    /// The SCSI channel (always 0 for iSCSI software transports).
    pub channel: u32,
    /// The SCSI target id, when the kernel has assigned one.
    pub target_id: Option<u32>,
}

impl Session {
    /// The address of `lun` on this session, when the target id is known.
    pub fn hctl(&self, lun: u64) -> Option<Hctl> {
        self.target_id.map(|target| Hctl {
            host: self.host_no,
            channel: self.channel,
            target,
            lun,
        })
    }
}

fn session_class_dir(host: &Host, sid: u32) -> PathBuf {
    host.sys(format!("class/iscsi_session/session{sid}"))
}

/// The open-iscsi iface session `sid` was logged in through (its `ifacename`: `default`,
/// `iser`, an iface of `/etc/iscsi/ifaces`), when the kernel shows one. A session that is
/// gone, or shows none (`<NULL>`, empty), gives `None`.
pub fn iface(host: &Host, sid: u32) -> Result<Option<String>> {
    Ok(host
        .read_attr_opt(&session_class_dir(host, sid).join("ifacename"))?
        .filter(|i| !i.is_empty() && i != "<NULL>"))
}

/// The session's device directory (`.../hostH/sessionN`).
fn session_device_dir(host: &Host, sid: u32) -> Result<Option<PathBuf>> {
    host.canonical(&session_class_dir(host, sid).join("device"))
}

/// Finds the session logged in to `target` (same IQN and portal), if any: directly when the
/// target's LUN is on the host, else by reading the sessions (see [`SessionFinder`]).
pub fn find(host: &Host, target: &IscsiTarget) -> Result<Option<Session>> {
    SessionFinder::new(host).find(target)
}

/// What one session showed of its target and portal. A session's target name and portal
/// never change, and the kernel never reuses a session id before a reboot, so an operation
/// reads them once per session.
#[derive(Debug, Clone, Default)]
struct Seen {
    /// The target name; `None` once the session was found gone.
    iqn: Option<String>,
    /// The portal address and port, read only for sessions of a wanted target.
    portal: Option<(String, u16)>,
}

/// Finds the sessions of iSCSI targets for one operation (a connect, a disconnect, ...).
///
/// The kernel keeps no index of sessions by target, so telling that no session serves a
/// target means reading every session's target name. The finder goes directly wherever the
/// host already points at the session and reads each session at most once per operation:
///
/// 1. sessions it already matched, and those behind SCSI addresses it was given
///    ([`SessionFinder::hint`], e.g. a device record's paths);
/// 2. the target's LUN when it is on the host: udev's `/dev/disk/by-path` link names the
///    block device, and the device's sysfs path runs through its session;
/// 3. only then the session list, reading sessions this finder has not read yet.
///
/// So a lookup whose LUN is attached costs the same on a host with 16 sessions as on one
/// with thousands, and a connect's second lookup (after its login) reads only the sessions
/// that appeared since its first. Whatever route finds it, a session is returned only after
/// its own target name and portal were checked.
#[derive(Debug)]
pub struct SessionFinder<'h> {
    host: &'h Host,
    seen: HashMap<u32, Seen>,
    candidates: Vec<u32>,
}

impl<'h> SessionFinder<'h> {
    /// A finder that has read nothing yet.
    pub fn new(host: &'h Host) -> Self {
        SessionFinder {
            host,
            seen: HashMap::new(),
            candidates: Vec::new(),
        }
    }

    /// Names a SCSI device that may sit on a wanted session (a recorded path): its session
    /// is checked first, directly. An address no longer present is ignored.
    pub fn hint(&mut self, hctl: Hctl) -> Result<()> {
        if let Some(sid) = sid_of_sysfs_link(self.host, &scsi::device_dir(self.host, hctl))? {
            self.candidate(sid);
        }
        Ok(())
    }

    fn candidate(&mut self, sid: u32) {
        if !self.candidates.contains(&sid) {
            self.candidates.push(sid);
        }
    }

    /// The session logged in to `target` (same IQN and portal), if any.
    pub fn find(&mut self, target: &IscsiTarget) -> Result<Option<Session>> {
        for i in 0..self.candidates.len() {
            let sid = self.candidates[i];
            if let Some(s) = self.check(sid, target)? {
                return Ok(Some(s));
            }
        }
        if let Some(sid) = sid_of_lun(self.host, target)? {
            if let Some(s) = self.check(sid, target)? {
                self.candidate(sid);
                return Ok(Some(s));
            }
        }
        for name in self.host.list_dir(&self.host.sys("class/iscsi_session"))? {
            let Some(sid) = name
                .strip_prefix("session")
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(s) = self.check(sid, target)? {
                self.candidate(sid);
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// Session `sid` when it exists and serves `target`.
    fn check(&mut self, sid: u32, target: &IscsiTarget) -> Result<Option<Session>> {
        if !self.serves(sid, target)? {
            return Ok(None);
        }
        describe(self.host, sid)
    }

    fn serves(&mut self, sid: u32, target: &IscsiTarget) -> Result<bool> {
        let host = self.host;
        let seen = match self.seen.entry(sid) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => {
                // A session can vanish between the listing and the reads: it is gone then.
                // One still being set up shows no target name yet: not remembered.
                let iqn = host.read_attr_opt(&session_class_dir(host, sid).join("targetname"))?;
                if iqn
                    .as_deref()
                    .is_some_and(|n| n.is_empty() || n == "(null)")
                {
                    return Ok(false);
                }
                v.insert(Seen { iqn, portal: None })
            }
        };
        if seen.iqn.as_deref() != Some(target.iqn.as_str()) {
            return Ok(false);
        }
        if seen.portal.is_none() {
            // Not remembered while the connection is not there yet.
            seen.portal = connection_address(host, sid)?;
        }
        Ok(seen.portal.as_ref().is_some_and(|(addr, port)| {
            *port == target.portal.port() && same_host(addr, target.portal.host())
        }))
    }
}

/// The session id in a sysfs device path (`.../hostH/sessionN/targetH:C:T/H:C:T:L`).
fn sid_in_path(path: &Path) -> Option<u32> {
    path.components().rev().find_map(|c| {
        c.as_os_str()
            .to_str()?
            .strip_prefix("session")?
            .parse()
            .ok()
    })
}

/// The session a sysfs link into the device tree runs through (`bus/scsi/devices/H:C:T:L`
/// and `block/sdX` are such links): read from the link itself, else from where it resolves.
fn sid_of_sysfs_link(host: &Host, path: &Path) -> Result<Option<u32>> {
    // Not a link (or unreadable as one): resolving the path below says what it is.
    if let Ok(Some(t)) = host.link_target(path) {
        if let Some(sid) = sid_in_path(&t) {
            return Ok(Some(sid));
        }
    }
    Ok(host.canonical(path)?.as_deref().and_then(sid_in_path))
}

/// The session carrying the SCSI device at `hctl`, from its sysfs path.
pub fn session_of_hctl(host: &Host, hctl: Hctl) -> Result<Option<u32>> {
    sid_of_sysfs_link(host, &host.sys(format!("bus/scsi/devices/{hctl}")))
}

/// The session carrying `target`'s LUN, from udev's by-path link of the LUN: the link
/// names the block device, whose sysfs path runs through the session.
fn sid_of_lun(host: &Host, target: &IscsiTarget) -> Result<Option<u32>> {
    let link = host.dev("disk/by-path").join(by_path_name(
        &target.portal,
        target.iqn.as_str(),
        target.lun,
    ));
    let dev = match host.link_target(&link) {
        Ok(Some(t)) => t,
        // No link, or not a link (udev makes links): nothing to go by.
        Ok(None) | Err(_) => return Ok(None),
    };
    let Some(name) = dev.file_name().and_then(|n| n.to_str()) else {
        return Ok(None);
    };
    if name.is_empty() || name.starts_with('.') {
        return Ok(None);
    }
    sid_of_sysfs_link(host, &host.sys(format!("block/{name}")))
}

/// The portal address and port the session logged in to (its first connection's
/// `persistent_address`/`persistent_port`, falling back to `address`/`port`).
pub(crate) fn connection_address(host: &Host, sid: u32) -> Result<Option<(String, u16)>> {
    // open-iscsi makes one connection per session, number 0; others are looked up.
    let first = host.sys(format!("class/iscsi_connection/connection{sid}:0"));
    let cdir = if first.exists() {
        first
    } else {
        let Some(dev) = session_device_dir(host, sid)? else {
            return Ok(None);
        };
        let prefix = format!("connection{sid}:");
        let Some(conn) = host
            .list_dir(&dev)?
            .into_iter()
            .find(|n| n.starts_with(&prefix))
        else {
            return Ok(None);
        };
        host.sys(format!("class/iscsi_connection/{conn}"))
    };
    let addr = match host.read_attr_opt(&cdir.join("persistent_address"))? {
        Some(a) if !a.is_empty() => Some(a),
        _ => host.read_attr_opt(&cdir.join("address"))?,
    };
    let port = match host.read_attr_opt(&cdir.join("persistent_port"))? {
        Some(p) if !p.is_empty() && p != "-1" => Some(p),
        _ => host.read_attr_opt(&cdir.join("port"))?,
    };
    let (Some(addr), Some(port)) = (addr, port) else {
        return Ok(None);
    };
    let port = port.parse::<u16>().map_err(|_| Error::UnexpectedContent {
        path: cdir.join("persistent_port"),
        reason: format!("{port:?} is not a port"),
    })?;
    Ok(Some((addr, port)))
}

fn same_host(sysfs: &str, wanted: &str) -> bool {
    if sysfs.eq_ignore_ascii_case(wanted) {
        return true;
    }
    match (sysfs.parse::<Ipv6Addr>(), wanted.parse::<Ipv6Addr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The session state the kernel shows for a session whose login is complete and whose
/// connection is up (`state`, `iscsi_session_state_name()` in scsi_transport_iscsi.c);
/// `FAILED` while it recovers, `FREE` before its first login completes.
pub const LOGGED_IN: &str = "LOGGED_IN";

/// The session's `state` attribute ([`LOGGED_IN`], `FAILED`, `FREE`); `None` when the
/// kernel shows none (the session gone, or a kernel without the attribute).
pub fn state(host: &Host, sid: u32) -> Result<Option<String>> {
    host.read_attr_opt(&session_class_dir(host, sid).join("state"))
}

/// The session's SCSI host and target id.
pub fn describe(host: &Host, sid: u32) -> Result<Option<Session>> {
    let Some(dev) = session_device_dir(host, sid)? else {
        return Ok(None);
    };
    let host_no = dev
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("host"))
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| Error::UnexpectedContent {
            path: dev.clone(),
            reason: "an iSCSI session not under a SCSI host".into(),
        })?;
    // A scanned session has a `targetH:C:T` directory; before any scan the kernel's
    // `target_id` attribute says which id the first scan will use.
    let mut channel = 0;
    let mut target_id = None;
    if let Some(t) = host
        .list_dir(&dev)?
        .into_iter()
        .find(|n| n.starts_with("target"))
    {
        let parts: Vec<&str> = t.trim_start_matches("target").split(':').collect();
        if let [_, c, t] = parts[..] {
            channel = c.parse().unwrap_or(0);
            target_id = t.parse().ok();
        }
    }
    if target_id.is_none() {
        target_id = host
            .read_attr_opt(&session_class_dir(host, sid).join("target_id"))?
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|v| *v != u32::MAX);
    }
    Ok(Some(Session {
        sid,
        host_no,
        channel,
        target_id,
    }))
}

/// The SCSI devices (LUNs) the session carries.
pub fn luns(host: &Host, sid: u32) -> Result<Vec<Hctl>> {
    let Some(dev) = session_device_dir(host, sid)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for t in host.list_dir(&dev)? {
        if !t.starts_with("target") {
            continue;
        }
        for d in host.list_dir(&dev.join(&t))? {
            if let Ok(h) = d.parse::<Hctl>() {
                out.push(h);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeHost, LunSpec};

    const IQN: &str = "iqn.2003-01.org.linux-iscsi.vm:t1";

    fn target(portal: &str, lun: u64) -> IscsiTarget {
        IscsiTarget {
            portal: portal.parse().unwrap(),
            iqn: IQN.parse().unwrap(),
            lun,
        }
    }

    /// Session `sid` on host `sid + 1` logged in to `t`, with `t`'s LUN when `lun` (and
    /// udev's by-path link for it).
    fn session(fake: &FakeHost, sid: u32, t: &IscsiTarget, lun: bool) {
        fake.add_iscsi_session(sid, sid + 1, 0, t.iqn.as_str(), &t.portal);
        if lun {
            let spec = LunSpec::new(0, 0, t.lun, &format!("naa.6001405{sid:08x}"), 1 << 20)
                .by_path(by_path_name(&t.portal, t.iqn.as_str(), t.lun));
            fake.add_scsi_disk(sid + 1, &spec);
        }
    }

    fn sid_of(found: Option<Session>) -> Option<u32> {
        found.map(|s| s.sid)
    }

    #[test]
    fn a_sessions_iface_is_its_ifacename_when_it_shows_one() {
        let fake = FakeHost::new();
        let host = fake.host();
        let t = target("10.0.0.1:3260", 1);
        session(&fake, 1, &t, false);
        // No attribute (an older kernel, a session going away): none.
        assert_eq!(iface(&host, 1).unwrap(), None);
        fake.set_iscsi_session_iface(1, "iser");
        assert_eq!(iface(&host, 1).unwrap().as_deref(), Some("iser"));
        for shown in ["<NULL>", ""] {
            fake.set_iscsi_session_iface(1, shown);
            assert_eq!(iface(&host, 1).unwrap(), None, "{shown:?}");
        }
        assert_eq!(iface(&host, 9).unwrap(), None);
    }

    #[test]
    fn ipv6_hosts_compare_by_value() {
        assert!(same_host("fe80:0:0:0:0:0:0:1", "fe80::1"));
        assert!(same_host("127.0.0.1", "127.0.0.1"));
        assert!(!same_host("127.0.0.2", "127.0.0.1"));
    }

    #[test]
    fn session_ids_in_device_paths() {
        let p = Path::new("/sys/devices/platform/host3/session12/target3:0:0/3:0:0:1");
        assert_eq!(sid_in_path(p), Some(12));
        assert_eq!(
            sid_in_path(Path::new(
                "/sys/devices/pci0000:00/host0/target0:0:0/0:0:0:0"
            )),
            None
        );
        assert_eq!(
            sid_in_path(Path::new("/sys/devices/platform/host3/sessionx")),
            None
        );
    }

    #[test]
    fn scan_finds_the_session_of_portal_and_iqn() {
        let fake = FakeHost::new();
        let host = fake.host();
        let a = target("10.0.0.1:3260", 1);
        let b = target("10.0.0.2:3260", 1);
        session(&fake, 1, &a, false);
        session(&fake, 2, &b, false);
        assert_eq!(sid_of(find(&host, &b).unwrap()), Some(2));
        assert_eq!(sid_of(find(&host, &a).unwrap()), Some(1));
        assert_eq!(find(&host, &target("10.0.0.3:3260", 1)).unwrap(), None);
        assert_eq!(find(&host, &target("10.0.0.1:3261", 1)).unwrap(), None);
        let other_iqn = IscsiTarget {
            iqn: "iqn.2003-01.org.linux-iscsi.vm:t2".parse().unwrap(),
            ..a.clone()
        };
        assert_eq!(find(&host, &other_iqn).unwrap(), None);
    }

    #[test]
    fn the_luns_by_path_link_leads_to_its_session() {
        let fake = FakeHost::new();
        let host = fake.host();
        let t = target("10.0.0.1:3260", 1);
        // Two sessions to the same target (two ifaces); the LUN sits on the second. The
        // session list would answer session 1; the LUN's link answers session 2.
        session(&fake, 1, &t, false);
        session(&fake, 2, &t, true);
        assert_eq!(sid_of(find(&host, &t).unwrap()), Some(2));
        // Another LUN of the target has no link: the list answers.
        assert_eq!(
            sid_of(find(&host, &target("10.0.0.1:3260", 2)).unwrap()),
            Some(1)
        );
    }

    #[test]
    fn a_stale_by_path_link_is_checked_and_ignored() {
        let fake = FakeHost::new();
        let host = fake.host();
        let t = target("10.0.0.1:3260", 1);
        let other = target("10.0.0.9:3260", 1);
        session(&fake, 1, &other, true);
        session(&fake, 2, &t, false);
        // The link of t's LUN points at the device on the other target's session.
        let by_path = fake.root().join("dev/disk/by-path");
        std::os::unix::fs::symlink(
            "../../sda",
            by_path.join(by_path_name(&t.portal, t.iqn.as_str(), t.lun)),
        )
        .unwrap();
        assert_eq!(sid_of(find(&host, &t).unwrap()), Some(2));
    }

    #[test]
    fn hints_name_the_session_of_a_recorded_path() {
        let fake = FakeHost::new();
        let host = fake.host();
        let t = target("10.0.0.1:3260", 1);
        let other = target("10.0.0.9:3260", 1);
        session(&fake, 1, &t, false);
        session(&fake, 2, &other, true);
        session(&fake, 3, &t, false);
        // Session 3 sits on SCSI host 4.
        fake.add_scsi_disk(4, &LunSpec::new(0, 0, 5, "naa.60014050000000f", 1 << 20));
        let mut finder = SessionFinder::new(&host);
        // A path on session 3 (no by-path link), one on another target's session, one
        // gone. The session list would answer session 1; the hint answers session 3.
        finder.hint("4:0:0:5".parse().unwrap()).unwrap();
        finder.hint("3:0:0:1".parse().unwrap()).unwrap();
        finder.hint("9:0:0:1".parse().unwrap()).unwrap();
        assert_eq!(sid_of(finder.find(&t).unwrap()), Some(3));
        assert_eq!(sid_of(finder.find(&other).unwrap()), Some(2));
    }

    #[test]
    fn one_finder_reads_each_session_once() {
        let fake = FakeHost::new();
        let host = fake.host();
        let t = target("10.0.0.1:3260", 1);
        session(&fake, 1, &target("10.0.0.9:3260", 1), false);
        let mut finder = SessionFinder::new(&host);
        assert_eq!(finder.find(&t).unwrap(), None);
        // A login makes session 2: the next look reads it (and only it).
        session(&fake, 2, &t, false);
        // Session 1's portal cannot change; were it read again it would match now.
        let c = fake.root().join("sys/class/iscsi_connection/connection1:0");
        std::fs::write(c.join("persistent_address"), "10.0.0.1\n").unwrap();
        assert_eq!(sid_of(finder.find(&t).unwrap()), Some(2));
        // A fresh finder reads everything again.
        fake.remove_iscsi_session(2);
        assert_eq!(sid_of(find(&host, &t).unwrap()), Some(1));
    }

    #[test]
    fn a_found_session_that_ends_is_looked_for_again() {
        let fake = FakeHost::new();
        let host = fake.host();
        let t = target("10.0.0.1:3260", 1);
        session(&fake, 1, &t, false);
        let mut finder = SessionFinder::new(&host);
        assert_eq!(sid_of(finder.find(&t).unwrap()), Some(1));
        fake.remove_iscsi_session(1);
        assert_eq!(finder.find(&t).unwrap(), None);
        session(&fake, 2, &t, false);
        assert_eq!(sid_of(finder.find(&t).unwrap()), Some(2));
    }

    #[test]
    fn a_session_still_being_set_up_is_read_again() {
        let fake = FakeHost::new();
        let host = fake.host();
        let t = target("10.0.0.1:3260", 1);
        session(&fake, 1, &t, false);
        let class = fake.root().join("sys/class/iscsi_session/session1");
        let conn = fake.root().join("sys/class/iscsi_connection/connection1:0");
        let parked = fake.root().join("parked-connection");
        std::fs::write(class.join("targetname"), "(null)\n").unwrap();
        std::fs::rename(&conn, &parked).unwrap();
        let mut finder = SessionFinder::new(&host);
        assert_eq!(finder.find(&t).unwrap(), None);
        std::fs::write(class.join("targetname"), format!("{IQN}\n")).unwrap();
        assert_eq!(finder.find(&t).unwrap(), None, "no connection yet");
        std::fs::rename(&parked, &conn).unwrap();
        assert_eq!(sid_of(finder.find(&t).unwrap()), Some(1));
    }
}
