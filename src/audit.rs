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
//! - RBD mappings (kernel rbd and rbd-nbd) without a hostbrick record.
//!
//! It reads sysfs and the registry and runs only the read-only listing commands of `rbd`
//! and `rbd-nbd`, and those only when sysfs shows a kernel rbd device or a connected nbd
//! device (a missing program means nothing is mapped that way). It takes no lock, but
//! it asks whether one is held: a session, controller or RBD mapping whose target (image)
//! lock a hostbrick operation holds right now (an attach or detach in progress) goes to
//! [`AuditReport::in_progress`] instead of the orphans. It does not see mounts or
//! open file handles, so a disk used directly (a file system on a bare path) is listed;
//! each entry carries what is needed to look closer or to clean up.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::connector::HostContext;
use crate::devices::block;
use crate::devices::multipath::{self, MultipathMap};
use crate::devices::scsi;
use crate::error::{Error, Result};
use crate::iscsi::{self, session};
use crate::model::ids::{Hctl, Portal};
use crate::model::record::DeviceRecord;
use crate::nvme::{self, NvmePortal, NvmeTransport};
use crate::platform::host::Host;
use crate::platform::lock::LockDir;
use crate::platform::registry::Registry;
use crate::rbd::{self, ImageSpec, RbdMapper};

/// How long each listing command of an audit (`rbd showmapped`, `rbd-nbd list-mapped`)
/// may run.
pub const AUDIT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The NQN of NVMe discovery controllers: they never carry namespaces.
const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

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
    }
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
    /// The controller, `nvmeN` (`nvme disconnect -d nvmeN`).
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
    audit_with_locks(ctx, &LockDir::new(ctx.host.default_lock_dir()))
}

/// [`audit`] for connectors that use their own lock directory
/// ([`ConnectorOptions::lock_dir`](crate::ConnectorOptions::lock_dir)): the one whose locks
/// tell an operation in progress.
pub fn audit_with_locks(ctx: &HostContext, locks: &LockDir) -> Result<AuditReport> {
    let span = tracing::info_span!("audit");
    let _e = span.enter();
    let host = &ctx.host;
    let (iscsi_sessions, busy_sessions) = split_busy(iscsi_sessions(host)?, |s| {
        let Some(portal) = &s.portal else {
            return Ok(false);
        };
        locks.is_held(&iscsi::target_lock_key_for(portal, &s.target))
    })?;
    let (nvme_controllers, busy_controllers) = split_busy(nvme_controllers(host)?, |c| {
        let Some(portal) = &c.portal else {
            return Ok(false);
        };
        locks.is_held(&nvme::controller_lock_key(&c.subsysnqn, portal))
    })?;
    let (rbd_mappings, busy_mappings) = split_busy(rbd_mappings(ctx)?, |m| {
        if m.snap.is_some() {
            return Ok(false); // hostbrick maps images, never snapshots
        }
        let spec = ImageSpec {
            pool: m.pool.clone(),
            namespace: m.namespace.clone(),
            image: m.image.clone(),
        };
        locks.is_held(&rbd::image_lock_key(&spec))
    })?;
    let report = AuditReport {
        iscsi_sessions,
        multipath_maps: multipath_maps(host)?,
        nvme_controllers,
        rbd_mappings,
        in_progress: InProgress {
            iscsi_sessions: busy_sessions,
            nvme_controllers: busy_controllers,
            rbd_mappings: busy_mappings,
        },
    };
    tracing::info!(
        iscsi_sessions = report.iscsi_sessions.len(),
        multipath_maps = report.multipath_maps.len(),
        nvme_controllers = report.nvme_controllers.len(),
        rbd_mappings = report.rbd_mappings.len(),
        in_progress = report.in_progress.len(),
        "audit done"
    );
    Ok(report)
}

/// Splits candidates into (orphans, held by an operation in progress).
fn split_busy<T>(
    candidates: Vec<T>,
    mut busy: impl FnMut(&T) -> Result<bool>,
) -> Result<(Vec<T>, Vec<T>)> {
    let (mut free, mut held) = (Vec::new(), Vec::new());
    for c in candidates {
        if busy(&c)? {
            held.push(c);
        } else {
            free.push(c);
        }
    }
    Ok((free, held))
}

// ---------------------------------------------------------------- iSCSI

/// What hostbrick recorded of its iSCSI volumes.
struct IscsiRecords(Vec<DeviceRecord>);

impl IscsiRecords {
    fn load(host: &Host) -> Result<Self> {
        let entries = Registry::new(host, crate::iscsi::REGISTRY).entries::<DeviceRecord>()?;
        Ok(IscsiRecords(entries.into_iter().map(|(_, r)| r).collect()))
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

fn iscsi_sessions(host: &Host) -> Result<Vec<OrphanSession>> {
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
            iface: host
                .read_attr_opt(&dir.join("ifacename"))?
                .filter(|i| !i.is_empty() && i != "<NULL>"),
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

// ---------------------------------------------------------------- multipath

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

// ---------------------------------------------------------------- NVMe-oF

fn nvme_controllers(host: &Host) -> Result<Vec<OrphanController>> {
    let attachments: Vec<nvme::Attachment> = Registry::new(host, nvme::REGISTRY)
        .entries::<nvme::Attachment>()?
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    let mut out = Vec::new();
    for name in host.list_dir(&host.sys("class/nvme"))? {
        let Some(c) = nvme::controllers::controller(host, &name)? else {
            continue;
        };
        // Only fabrics transports hostbrick connects (not PCIe disks, not loop or FC),
        // and never discovery controllers.
        let Ok(transport) = c.transport.parse::<NvmeTransport>() else {
            continue;
        };
        if c.subsysnqn == DISCOVERY_NQN {
            continue;
        }
        let namespaces: Vec<String> = nvme::namespaces::namespaces(host, &c.name)?
            .into_iter()
            .map(|n| n.head)
            .collect();
        let hostnqn = c.hostnqn.clone().unwrap_or_default();
        let recorded = attachments.iter().any(|a| {
            a.copies.iter().any(|copy| {
                copy.portals
                    .iter()
                    .any(|p| c.serves(copy.nqn.as_str(), p, &hostnqn))
            })
        });
        let mut held = false;
        for head in &namespaces {
            held = held || !block::holders(host, head)?.is_empty();
        }
        if !namespaces.is_empty() && (recorded || held) {
            continue;
        }
        let portal = match (c.address.get("traddr"), c.address.get("trsvcid")) {
            (Some(a), Some(p)) => p.parse::<u16>().ok().map(|port| NvmePortal {
                address: a.clone(),
                port,
                transport,
            }),
            _ => None,
        };
        out.push(OrphanController {
            reason: if namespaces.is_empty() {
                ControllerReason::NoNamespaces
            } else {
                ControllerReason::NamespacesUnused
            },
            name: c.name,
            subsysnqn: c.subsysnqn,
            portal,
            hostnqn: c.hostnqn,
            state: c.state,
            namespaces,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------- RBD

fn rbd_mappings(ctx: &HostContext) -> Result<Vec<OrphanMapping>> {
    let records: Vec<DeviceRecord> = Registry::new(&ctx.host, rbd::REGISTRY)
        .entries::<DeviceRecord>()?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let host = &ctx.host;
    let deadline = Instant::now() + AUDIT_COMMAND_TIMEOUT;
    let mut out = Vec::new();
    for mapper in [RbdMapper::Krbd, RbdMapper::Nbd] {
        // Nothing mapped that way: no need to run the tool (they are slow to start).
        let any = match mapper {
            RbdMapper::Krbd => !host.list_dir(&host.sys("bus/rbd/devices"))?.is_empty(),
            RbdMapper::Nbd => host
                .list_dir(&host.sys("block"))?
                .iter()
                .any(|n| n.starts_with("nbd") && host.sys(format!("block/{n}/pid")).exists()),
        };
        if !any {
            continue;
        }
        let mappings = match rbd::mappings(&*ctx.runner, mapper, deadline) {
            Ok(m) => m,
            Err(Error::CommandNotFound { .. }) => {
                tracing::debug!(
                    program = mapper.program(),
                    "not installed; no mappings of that kind"
                );
                continue;
            }
            Err(e) => return Err(e),
        };
        for m in mappings {
            let recorded = records.iter().filter_map(|r| r.rbd.as_ref()).any(|r| {
                r.mapper == mapper
                    && r.device == m.device
                    && r.image.parse::<ImageSpec>().is_ok_and(|spec| m.maps(&spec))
            });
            if recorded {
                continue;
            }
            let snap = Some(m.snap).filter(|s| !s.is_empty() && s != "-");
            out.push(OrphanMapping {
                mapper,
                device: m.device,
                pool: m.pool,
                namespace: Some(m.namespace).filter(|n| !n.is_empty()),
                image: m.name,
                snap,
                reason: MappingReason::Unrecorded,
            });
        }
    }
    Ok(out)
}
