//! What hostbrick finds orphaned on a host, listed without touching anything.
//!
//! [`audit`] compares what the kernel shows (sysfs) with what hostbrick recorded when it
//! attached volumes (the attachment registry under `/run/hostbrick`) and lists:
//!
//! - iSCSI sessions none of whose LUNs is in use: the session carries no SCSI disk, or
//!   none of its disks is recorded by hostbrick or held by anything (LVM, MD, a multipath
//!   map that is itself held or recorded);
//! - dm-multipath maps without paths;
//! - NVMe-oF controllers (TCP, RDMA) without namespaces, or whose namespaces no hostbrick
//!   attachment uses and nothing holds;
//! - RBD mappings (kernel rbd and rbd-nbd) without a hostbrick record;
//! - stale records: registry entries of volumes the host no longer shows (another tool,
//!   such as os-brick, detached them): none of their SCSI paths or multipath map, no
//!   controller of their subsystem at their portals, their image no longer mapped on
//!   their device. They are harmless to delete (`entry` names the file).
//!
//! It reads sysfs and the registry and runs only the read-only listing commands of `rbd`
//! and `rbd-nbd`, and those only when sysfs shows a kernel rbd device or a connected nbd
//! device (a missing program means nothing is mapped that way). It takes no lock, but
//! it asks whether one is held: a session, controller or RBD mapping whose target (image)
//! lock a hostbrick operation holds right now (an attach or detach in progress) goes to
//! [`AuditReport::in_progress`] instead of the orphans. It does not see mounts or
//! open file handles, so a disk used directly (a file system on a bare path) is listed;
//! each entry carries what is needed to look closer or to clean up.
//!
//! This module holds the report types and assembles the report; each protocol's part
//! lives beside its connector (`iscsi::audit`, `nvme::audit`, `rbd::audit`), where its
//! lock keys and registry name are private.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::connector::HostContext;
use crate::devices::multipath;
use crate::error::Result;
use crate::model::ids::{Hctl, Portal};
use crate::nvme::NvmePortal;
use crate::platform::host::Host;
use crate::platform::lock::LockDir;
use crate::rbd::RbdMapper;
use crate::{iscsi, nvme, rbd};

/// How long each listing command of an audit (`rbd showmapped`, `rbd-nbd list-mapped`)
/// may run.
pub const AUDIT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything an audit found orphaned. Empty lists mean nothing of that kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    /// iSCSI sessions with no LUN in use.
    pub iscsi_sessions: Vec<OrphanSession>,
    /// dm-multipath maps without paths.
    pub multipath_maps: Vec<OrphanMap>,
    /// NVMe-oF controllers without namespaces in use.
    pub nvme_controllers: Vec<OrphanController>,
    /// RBD mappings without a hostbrick record.
    pub rbd_mappings: Vec<OrphanMapping>,
    /// Registry entries of volumes the host no longer shows.
    #[serde(default)]
    pub stale_records: Vec<StaleRecord>,
    /// What would be listed above but for a hostbrick operation holding its target's lock
    /// at the time of the audit: most likely an attach or detach still under way. Look
    /// again once it is done; never clean these up.
    #[serde(default, skip_serializing_if = "InProgress::is_empty")]
    pub in_progress: InProgress,
}

/// Candidates an operation in progress holds (see [`AuditReport::in_progress`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InProgress {
    /// iSCSI sessions whose target lock is held.
    pub iscsi_sessions: Vec<OrphanSession>,
    /// NVMe-oF controllers whose lock is held.
    pub nvme_controllers: Vec<OrphanController>,
    /// RBD mappings whose image lock is held (mapped, not yet recorded).
    pub rbd_mappings: Vec<OrphanMapping>,
}

impl InProgress {
    /// True when no candidate was held.
    pub fn is_empty(&self) -> bool {
        self.iscsi_sessions.is_empty()
            && self.nvme_controllers.is_empty()
            && self.rbd_mappings.is_empty()
    }

    fn len(&self) -> usize {
        self.iscsi_sessions.len() + self.nvme_controllers.len() + self.rbd_mappings.len()
    }
}

impl AuditReport {
    /// True when nothing orphaned was found (candidates in progress do not count).
    pub fn is_empty(&self) -> bool {
        self.iscsi_sessions.is_empty()
            && self.multipath_maps.is_empty()
            && self.nvme_controllers.is_empty()
            && self.rbd_mappings.is_empty()
            && self.stale_records.is_empty()
    }
}

/// A registry entry whose volume the host no longer shows: detached by another tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleRecord {
    /// The protocol's registry (`iscsi`, `nvme`, `rbd`).
    pub registry: String,
    /// The entry's file in that registry (under `/run/hostbrick/attachments/<registry>`).
    pub entry: String,
    /// The volume id it was recorded for, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_id: Option<String>,
    /// What the host no longer shows.
    pub reason: String,
}

/// Why an iSCSI session is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SessionReason {
    /// The session carries no SCSI device (logged in, never scanned, or its LUNs gone).
    NoLuns,
    /// It carries SCSI devices, but hostbrick recorded none of them and nothing holds
    /// them.
    LunsUnused,
}

/// A SCSI device of an orphaned session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanLun {
    /// Its SCSI address.
    pub hctl: Hctl,
    /// Its block device (`sdX`), once the kernel made one.
    pub device: Option<String>,
    /// Its WWID in udev's form.
    pub wwid: Option<String>,
    /// What holds the device (e.g. `dm-3`, an idle multipath map).
    pub holders: Vec<String>,
}

/// An iSCSI session with no LUN in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanSession {
    /// The session id (`iscsiadm -m session -r SID`).
    pub sid: u32,
    /// The target name.
    pub target: String,
    /// The portal it logged in to.
    pub portal: Option<Portal>,
    /// The open-iscsi iface.
    pub iface: Option<String>,
    /// The session state (`LOGGED_IN`, `FAILED`, ...).
    pub state: Option<String>,
    /// The SCSI host (`hostH`) it sits on.
    pub host_no: u32,
    /// Why it is listed.
    pub reason: SessionReason,
    /// Its SCSI devices.
    pub luns: Vec<OrphanLun>,
}

/// Why a multipath map is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MapReason {
    /// The map has no path devices.
    NoPaths,
}

/// A dm-multipath map without paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanMap {
    /// The map name (`/dev/mapper/<name>`; `multipath -f <name>`).
    pub name: String,
    /// The kernel name, `dm-N`.
    pub dm: String,
    /// The WWID from the map's dm uuid.
    pub wwid: String,
    /// Why it is listed.
    pub reason: MapReason,
}

/// Why an NVMe-oF controller is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ControllerReason {
    /// The controller shows no namespace.
    NoNamespaces,
    /// It shows namespaces, but no hostbrick attachment uses the controller's subsystem
    /// and portal and nothing holds them.
    NamespacesUnused,
}

/// An NVMe-oF controller without namespaces in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanController {
    /// The controller, `nvmeN` (`/sys/class/nvme/nvmeN`).
    pub name: String,
    /// The subsystem NQN.
    pub subsysnqn: String,
    /// The transport, address and port it connects to.
    pub portal: Option<NvmePortal>,
    /// The host NQN it connected with.
    pub hostnqn: Option<String>,
    /// The controller state (`live`, `connecting`, ...).
    pub state: String,
    /// Why it is listed.
    pub reason: ControllerReason,
    /// Its namespaces' block devices (multipath heads).
    pub namespaces: Vec<String>,
}

/// Why an RBD mapping is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MappingReason {
    /// No hostbrick record names this mapping.
    Unrecorded,
}

/// An RBD mapping without a hostbrick record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanMapping {
    /// Kernel rbd or rbd-nbd.
    pub mapper: RbdMapper,
    /// The device, e.g. `/dev/rbd0` (`rbd unmap /dev/rbd0`).
    pub device: String,
    /// The pool.
    pub pool: String,
    /// The RADOS namespace, if any.
    pub namespace: Option<String>,
    /// The image.
    pub image: String,
    /// The snapshot, if a snapshot is mapped.
    pub snap: Option<String>,
    /// Why it is listed.
    pub reason: MappingReason,
}

/// Lists what hostbrick finds orphaned on the host of `ctx`, changing nothing.
///
/// See the module documentation for what counts as orphaned.
pub fn audit(ctx: &HostContext) -> Result<AuditReport> {
    audit_with_locks(ctx, &LockDir::default_for(&ctx.host))
}

/// [`audit`] for connectors that use their own lock directory
/// ([`ConnectorOptions::lock_dir`](crate::ConnectorOptions::lock_dir)): the one whose locks
/// tell an operation in progress.
pub fn audit_with_locks(ctx: &HostContext, locks: &LockDir) -> Result<AuditReport> {
    let span = tracing::info_span!("audit");
    let _e = span.enter();
    let host = &ctx.host;
    let sessions = iscsi::audit::orphans(host, locks)?;
    let controllers = nvme::audit::orphans(host, locks)?;
    let mappings = rbd::audit::orphans(ctx, locks)?;
    let mut stale_records = iscsi::audit::stale_records(host)?;
    stale_records.extend(nvme::audit::stale_records(host)?);
    stale_records.extend(rbd::audit::stale_records(host)?);
    let report = AuditReport {
        iscsi_sessions: sessions.orphans,
        multipath_maps: multipath_maps(host)?,
        nvme_controllers: controllers.orphans,
        rbd_mappings: mappings.orphans,
        stale_records,
        in_progress: InProgress {
            iscsi_sessions: sessions.in_progress,
            nvme_controllers: controllers.in_progress,
            rbd_mappings: mappings.in_progress,
        },
    };
    tracing::info!(
        iscsi_sessions = report.iscsi_sessions.len(),
        multipath_maps = report.multipath_maps.len(),
        nvme_controllers = report.nvme_controllers.len(),
        rbd_mappings = report.rbd_mappings.len(),
        stale_records = report.stale_records.len(),
        in_progress = report.in_progress.len(),
        "audit done"
    );
    Ok(report)
}

/// One protocol's candidates, split by whether an operation in progress holds them.
pub(crate) struct Found<T> {
    /// Candidates nothing holds: orphans.
    pub(crate) orphans: Vec<T>,
    /// Candidates whose lock a hostbrick operation holds (see [`AuditReport::in_progress`]).
    pub(crate) in_progress: Vec<T>,
}

/// Splits candidates into orphans and those held by an operation in progress.
pub(crate) fn split_busy<T>(
    candidates: Vec<T>,
    mut busy: impl FnMut(&T) -> Result<bool>,
) -> Result<Found<T>> {
    let mut found = Found {
        orphans: Vec::new(),
        in_progress: Vec::new(),
    };
    for c in candidates {
        if busy(&c)? {
            found.in_progress.push(c);
        } else {
            found.orphans.push(c);
        }
    }
    Ok(found)
}

/// dm-multipath maps without paths: this part belongs to no protocol.
fn multipath_maps(host: &Host) -> Result<Vec<OrphanMap>> {
    let mut out = Vec::new();
    for dm in host.list_dir(&host.sys("block"))? {
        if !dm.starts_with("dm-") {
            continue;
        }
        let Some(m) = multipath::map_info(host, &dm)? else {
            continue;
        };
        if host
            .list_dir(&host.sys(format!("block/{dm}/slaves")))?
            .is_empty()
        {
            out.push(OrphanMap {
                name: m.name,
                dm: m.dm,
                wwid: m.wwid,
                reason: MapReason::NoPaths,
            });
        }
    }
    Ok(out)
}
