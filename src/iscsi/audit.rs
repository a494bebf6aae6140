//! The iSCSI part of an audit: sessions none of whose LUNs is in use.

use crate::audit::{split_busy, Found, OrphanLun, OrphanSession, SessionReason, StaleRecord};
use crate::devices::block;
use crate::devices::multipath::{self, MultipathMap};
use crate::devices::scsi;
use crate::error::Result;
use crate::model::ids::{Hctl, Portal};
use crate::model::record::DeviceRecord;
use crate::platform::host::Host;
use crate::platform::lock::LockDir;
use crate::platform::registry::Registry;

use super::{session, target_lock_key_for, REGISTRY};

/// The iSCSI sessions on `host` with no LUN in use, split by whether a hostbrick operation
/// holds their target lock in `locks`.
pub(crate) fn orphans(host: &Host, locks: &LockDir) -> Result<Found<OrphanSession>> {
    split_busy(sessions(host)?, |s| {
        let Some(portal) = &s.portal else {
            return Ok(false);
        };
        locks.is_held(&target_lock_key_for(portal, &s.target))
    })
}

/// The registry entries of iSCSI volumes the host no longer shows: none of the recorded
/// paths has a SCSI device with the recorded WWID, and the recorded map is gone.
pub(crate) fn stale_records(host: &Host) -> Result<Vec<StaleRecord>> {
    let mut out = Vec::new();
    for (entry, r) in Registry::new(host, REGISTRY).entries::<DeviceRecord>()? {
        if !on_host(host, &r)? {
            out.push(StaleRecord {
                registry: REGISTRY.to_string(),
                entry,
                volume_id: r.volume_id,
                reason: "none of its SCSI paths or its multipath map is on the host".into(),
            });
        }
    }
    Ok(out)
}

/// True when the host still shows the attachment of `r`: a recorded path's SCSI address
/// carries the recorded WWID through the recorded session (a new session to the same LUN
/// after another tool's logout gets the same address, but never the same session id).
/// A record without paths cannot be checked and counts as shown; so does one that names
/// no session (an earlier hostbrick's) while its map exists.
fn on_host(host: &Host, r: &DeviceRecord) -> Result<bool> {
    if r.paths.is_empty() {
        return Ok(true);
    }
    for p in &r.paths {
        if !scsi::device_exists(host, p.hctl) {
            continue;
        }
        let same_wwid = match (scsi::wwid(host, p.hctl).ok().flatten(), &r.scsi_wwn) {
            (Some(have), Some(want)) => have.to_string() == *want,
            _ => true,
        };
        let same_session = match p.session {
            Some(sid) => session::session_of_hctl(host, p.hctl)? == Some(sid),
            None => true,
        };
        if same_wwid && same_session {
            return Ok(true);
        }
    }
    let sessions_named = r.paths.iter().all(|p| p.session.is_some());
    Ok(!sessions_named
        && r.multipath_id
            .as_ref()
            .is_some_and(|m| host.dev(format!("mapper/{m}")).exists()))
}

/// What hostbrick recorded of its iSCSI volumes.
struct IscsiRecords(Vec<DeviceRecord>);

impl IscsiRecords {
    /// The records of volumes the host still shows: a stale one (another tool detached
    /// its volume) must not hide a session that now carries the same LUN unused.
    fn load(host: &Host) -> Result<Self> {
        let entries = Registry::new(host, REGISTRY).entries::<DeviceRecord>()?;
        let mut live = Vec::new();
        for (_, r) in entries {
            if on_host(host, &r)? {
                live.push(r);
            }
        }
        Ok(IscsiRecords(live))
    }

    /// True when a record names the device at `hctl` showing `wwid`.
    fn has_lun(&self, hctl: Hctl, wwid: Option<&str>) -> bool {
        self.0.iter().any(|r| {
            let same_volume = match (wwid, r.scsi_wwn.as_deref()) {
                (Some(have), Some(want)) => have == want,
                _ => false,
            };
            let same_path = r.paths.iter().any(|p| p.hctl == hctl)
                && match (wwid, r.scsi_wwn.as_deref()) {
                    (Some(have), Some(want)) => have == want,
                    _ => true,
                };
            same_volume || same_path
        })
    }

    /// True when a record names the multipath map.
    fn has_map(&self, m: &MultipathMap) -> bool {
        self.0.iter().any(|r| {
            r.multipath_id.as_deref() == Some(m.name.as_str())
                || r.scsi_wwn.as_deref() == Some(m.wwid.as_str())
        })
    }
}

/// The holders of block device `name` and of its partitions.
fn all_holders(host: &Host, name: &str) -> Result<Vec<String>> {
    let mut out = block::holders(host, name)?;
    for entry in host.list_dir(&host.sys(format!("block/{name}")))? {
        if entry.starts_with(name) && host.sys(format!("block/{name}/{entry}/partition")).exists() {
            for h in host.list_dir(&host.sys(format!("block/{name}/{entry}/holders")))? {
                if !out.contains(&h) {
                    out.push(h);
                }
            }
        }
    }
    Ok(out)
}

/// True when a holder of a SCSI disk is in use: anything but a multipath map, or a
/// multipath map that is recorded or held itself.
fn holder_in_use(host: &Host, records: &IscsiRecords, holder: &str) -> Result<bool> {
    match multipath::map_info(host, holder)? {
        Some(m) => Ok(records.has_map(&m) || !all_holders(host, holder)?.is_empty()),
        None => Ok(true),
    }
}

/// Every iSCSI session on `host` with no LUN in use, held or not.
fn sessions(host: &Host) -> Result<Vec<OrphanSession>> {
    let records = IscsiRecords::load(host)?;
    let mut out = Vec::new();
    for name in host.list_dir(&host.sys("class/iscsi_session"))? {
        let Some(sid) = name
            .strip_prefix("session")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = host.sys(format!("class/iscsi_session/{name}"));
        // A session can end between the listing and the reads: skip it then.
        let Some(target) = host.read_attr_opt(&dir.join("targetname"))? else {
            continue;
        };
        let Some(s) = session::describe(host, sid)? else {
            continue;
        };
        let mut luns = Vec::new();
        let mut in_use = false;
        for hctl in session::luns(host, sid)? {
            let device = scsi::block_name(host, hctl)?;
            let wwid = match scsi::wwid(host, hctl) {
                Ok(w) => w.map(|w| w.to_string()),
                Err(e) => {
                    tracing::debug!(%hctl, error = %e.chain(), "unreadable WWID");
                    None
                }
            };
            let holders = match &device {
                Some(d) => all_holders(host, d)?,
                None => Vec::new(),
            };
            let mut used = records.has_lun(hctl, wwid.as_deref());
            for h in &holders {
                used = used || holder_in_use(host, &records, h)?;
            }
            in_use = in_use || used;
            luns.push(OrphanLun {
                hctl,
                device,
                wwid,
                holders,
            });
        }
        if in_use {
            continue;
        }
        let portal = session::connection_address(host, sid)?
            .and_then(|(addr, port)| Portal::new(addr, port).ok());
        out.push(OrphanSession {
            sid,
            target,
            portal,
            iface: session::iface(host, sid)?,
            state: host.read_attr_opt(&dir.join("state"))?,
            host_no: s.host_no,
            reason: if luns.is_empty() {
                SessionReason::NoLuns
            } else {
                SessionReason::LunsUnused
            },
            luns,
        });
    }
    Ok(out)
}
