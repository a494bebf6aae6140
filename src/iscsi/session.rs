//! iSCSI sessions in sysfs (`class/iscsi_session`, `class/iscsi_connection`): which
//! session serves a target, its SCSI host and target id, and the LUNs it carries.

use std::net::Ipv6Addr;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::host::Host;
use crate::ids::Hctl;
use crate::iscsi::props::IscsiTarget;

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

/// The session's device directory (`.../hostH/sessionN`).
fn session_device_dir(host: &Host, sid: u32) -> Result<Option<PathBuf>> {
    host.canonical(&session_class_dir(host, sid).join("device"))
}

/// Finds the session logged in to `target` (same IQN and portal), if any.
pub fn find(host: &Host, target: &IscsiTarget) -> Result<Option<Session>> {
    for name in host.list_dir(&host.sys("class/iscsi_session"))? {
        let Some(sid) = name
            .strip_prefix("session")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = session_class_dir(host, sid);
        // A session can vanish between the listing and the reads: skip it then.
        let Some(iqn) = host.read_attr_opt(&dir.join("targetname"))? else {
            continue;
        };
        if iqn != target.iqn.as_str() {
            continue;
        }
        let Some((addr, port)) = connection_address(host, sid)? else {
            continue;
        };
        if port == target.portal.port() && same_host(&addr, target.portal.host()) {
            if let Some(s) = describe(host, sid)? {
                return Ok(Some(s));
            }
        }
    }
    Ok(None)
}

/// The portal address and port the session logged in to (its first connection's
/// `persistent_address`/`persistent_port`, falling back to `address`/`port`).
fn connection_address(host: &Host, sid: u32) -> Result<Option<(String, u16)>> {
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
    let cdir = host.sys(format!("class/iscsi_connection/{conn}"));
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

    #[test]
    fn ipv6_hosts_compare_by_value() {
        assert!(same_host("fe80:0:0:0:0:0:0:1", "fe80::1"));
        assert!(same_host("127.0.0.1", "127.0.0.1"));
        assert!(!same_host("127.0.0.2", "127.0.0.1"));
    }
}
