//! The iSCSI (and iSER) connector.
//!
//! Connect, per path: node record (written into open-iscsi's files with the manual-scan
//! setting, login timeouts, `node.startup=automatic` and CHAP, under open-iscsi's database
//! lock) → login (or reuse; the one iscsiadm a cold path runs) → targeted scan of the one
//! LUN → block device (udev-driven wait) → WWID. Disconnect logs out and removes the record
//! file. Where open-iscsi's database is not the one hostbrick knows, iscsiadm makes and
//! deletes the records (`--op new`, `--op update`, `--op delete`). Single path tries the targets in order; multipath logs in to all of them at once
//! and assembles a dm-multipath map as soon as one path is up. Every failed attempt undoes
//! what it created.
//!
//! The connector comes from [`crate::connector_for`] (`Protocol::Iscsi` or `Iser`). This
//! module holds what a caller of it may need to name: the parsed `connection_info` data
//! ([`IscsiProperties`], [`IscsiTarget`], [`ChapCredentials`]), the connector's own options
//! ([`IscsiOptions`]) and udev's by-path name of a LUN ([`by_path_name`]).
//!
//! Inside: `connect` (target choice, single path and multipath), `login` (one path: node
//! record, login, targeted scan, device wait), `teardown` (disconnect), `extend`,
//! `iscsiadm` (the CLI wrapper and its parsers), `idbm` (the node record open-iscsi writes),
//! `records` (open-iscsi's record files and lock: node records, CHAP never on a command
//! line), `session` (sessions in sysfs) and `audit`.

pub(crate) mod audit;
mod connect;
mod extend;
pub(crate) mod idbm;
pub(crate) mod iscsiadm;
mod late;
mod login;
pub(crate) mod records;
pub(crate) mod session;
mod teardown;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub use crate::connector::IscsiOptions;
pub use crate::model::iscsi::{AddressingMode, ChapCredentials, IscsiProperties, IscsiTarget};
pub(crate) use iscsiadm::{Iscsiadm, LoginOutcome, NodeParam};
pub use late::{cancel_late_paths, late_paths_pending, wait_for_late_paths};

use crate::connector::{ms, ConnectorOptions, DisconnectOptions, Driver, Operation, VolumeProps};
use crate::error::{Error, Result};
use crate::model::connection::{ConnectionInfo, Protocol};
use crate::model::ids::{Hctl, Portal, Wwid};
use crate::model::record::DeviceRecord;
use crate::platform::host::Host;
use crate::platform::lock::LockDir;
use crate::platform::registry::Registry;

/// The attachment registry's name for iSCSI (and iSER) volumes: one [`DeviceRecord`] per
/// attached volume, so an audit can tell sessions in use from orphans.
const REGISTRY: &str = "iscsi";

/// The iSCSI/iSER connector's steps, framed by [`crate::connector::Framed`]. Build the
/// connector with [`crate::connector_for`].
#[derive(Debug)]
pub(crate) struct IscsiDriver {
    protocol: Protocol,
    opts: ConnectorOptions,
    iface: String,
    locks: LockDir,
    registry: Registry,
    /// Node records are written into open-iscsi's files (where its database is the known
    /// one) until a login shows iscsiadm reads them from elsewhere. Shared with the
    /// driver's [`IscsiDriver::detached`] copies.
    direct_records: Arc<AtomicBool>,
}

/// One path that came up during a connect.
#[derive(Debug, Clone)]
struct AttachedPath {
    target: IscsiTarget,
    hctl: Hctl,
    name: String,
    wwid: Option<Wwid>,
}

/// One device of a volume found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VolumeDevice {
    hctl: Hctl,
    name: String,
}

/// The lock connects of a target share while they attach through it, and the logout check
/// takes exclusively.
fn target_lock_key(t: &IscsiTarget) -> String {
    target_lock_key_for(&t.portal, t.iqn.as_str())
}

/// [`target_lock_key`] of a target known by its portal and name (a session's, in an audit).
fn target_lock_key_for(portal: &Portal, iqn: &str) -> String {
    format!("iscsi-target-{portal}-{iqn}")
}

/// The lock under which one connect at a time sets a target's node record up and logs in.
fn target_setup_key(t: &IscsiTarget) -> String {
    format!("iscsi-login-{}-{}", t.portal, t.iqn)
}

/// The lock under which one connect at a time makes a portal's discovery record, writes
/// its CHAP settings and discovers with it.
fn discovery_lock_key(portal: &Portal) -> String {
    format!("iscsi-discovery-{portal}")
}

/// Whether `name` can be an open-iscsi iface name (the file name of its record under
/// `/etc/iscsi/ifaces`, and a single iscsiadm argument).
fn is_iface_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && !name.chars().any(char::is_whitespace)
}

/// udev's `by-path` name for an iSCSI LUN (as `path_id` builds it).
pub fn by_path_name(portal: &Portal, iqn: &str, lun: u64) -> String {
    let lun = if lun < 256 {
        format!("lun-{lun}")
    } else {
        format!(
            "lun-0x{:04x}{:04x}00000000",
            lun & 0xffff,
            (lun >> 16) & 0xffff
        )
    };
    format!(
        "ip-{}:{}-iscsi-{}-{}",
        portal.host(),
        portal.port(),
        iqn,
        lun
    )
}

impl IscsiDriver {
    /// The driver for `protocol` (`Iscsi` or `Iser`).
    pub(crate) fn new(protocol: Protocol, opts: ConnectorOptions) -> Result<Self> {
        let iface = match (&opts.iscsi.iface, protocol) {
            (Some(i), _) => i.clone(),
            (None, Protocol::Iser) => "iser".to_string(),
            (None, _) => "default".to_string(),
        };
        if !is_iface_name(&iface) {
            return Err(Error::InvalidArgument {
                name: "iscsi_iface".into(),
                reason: format!("{iface:?} is not an iface name"),
            });
        }
        if !matches!(protocol, Protocol::Iscsi | Protocol::Iser) {
            return Err(Error::ProtocolMismatch {
                expected: "iscsi".into(),
                found: protocol.to_string(),
            });
        }
        opts.iscsi.validate()?;
        let locks = opts.locks();
        let registry = Registry::new(&opts.context.host, REGISTRY);
        Ok(IscsiDriver {
            protocol,
            opts,
            iface,
            locks,
            registry,
            direct_records: Arc::new(AtomicBool::new(true)),
        })
    }

    /// A copy of the driver for threads that outlive the operation (the paths of a
    /// multipath connect still logging in when it returns): the same options, locks,
    /// registry and node-record mode.
    fn detached(&self) -> IscsiDriver {
        IscsiDriver {
            protocol: self.protocol,
            opts: self.opts.clone(),
            iface: self.iface.clone(),
            locks: self.locks.clone(),
            registry: self.registry.clone(),
            direct_records: self.direct_records.clone(),
        }
    }

    /// Whether node records are written into open-iscsi's files directly.
    fn direct_records(&self) -> bool {
        self.direct_records.load(Ordering::Relaxed)
    }

    fn host(&self) -> &Host {
        &self.opts.context.host
    }

    fn adm(&self, deadline: Instant) -> Iscsiadm<'_> {
        Iscsiadm::new(
            &self.opts.context.host,
            &*self.opts.context.runner,
            &self.iface,
            deadline,
        )
    }

    fn cleanup_deadline(&self) -> Instant {
        Instant::now() + self.opts.cleanup_timeout
    }
}

impl VolumeProps for IscsiProperties {
    fn volume_id(&self) -> Option<&str> {
        self.volume_id.as_deref()
    }

    fn volume_key(&self) -> String {
        IscsiProperties::volume_key(self)
    }

    fn target(&self) -> String {
        self.primary().to_string()
    }
}

impl Driver for IscsiDriver {
    type Props = IscsiProperties;

    fn protocol(&self) -> Protocol {
        self.protocol
    }

    fn options(&self) -> &ConnectorOptions {
        &self.opts
    }

    fn props<'a>(&self, info: &'a ConnectionInfo) -> Option<&'a IscsiProperties> {
        info.iscsi()
    }

    /// An iSCSI record detaches an iSER volume of the same target and the other way round.
    fn accepts_record(&self, record: &DeviceRecord) -> bool {
        matches!(record.protocol, Some(Protocol::Iscsi | Protocol::Iser))
    }

    fn connect(&self, op: &Operation<'_>, props: &IscsiProperties) -> Result<DeviceRecord> {
        IscsiDriver::connect(self, op, props)
    }

    fn disconnect(
        &self,
        op: &Operation<'_>,
        props: &IscsiProperties,
        record: Option<&DeviceRecord>,
        options: DisconnectOptions,
    ) -> Result<()> {
        IscsiDriver::disconnect(self, op, props, record, options)
    }

    fn extend(&self, op: &Operation<'_>, props: &IscsiProperties) -> Result<u64> {
        IscsiDriver::extend(self, op, props)
    }

    fn volume_paths(&self, op: &Operation<'_>, props: &IscsiProperties) -> Result<Vec<PathBuf>> {
        let host = op.host();
        Ok(props
            .targets
            .iter()
            .map(|t| {
                host.dev("disk/by-path")
                    .join(by_path_name(&t.portal, t.iqn.as_str(), t.lun))
            })
            .filter(|p| p.exists())
            .map(|p| host.public_dev_path(&p))
            .collect())
    }

    fn search_path(&self, host: &Host) -> Option<PathBuf> {
        Some(host.public_dev_path(&host.dev("disk/by-path")))
    }

    fn all_volumes(&self, op: &Operation<'_>) -> Result<Vec<PathBuf>> {
        let host = op.host();
        let dir = host.dev("disk/by-path");
        Ok(host
            .list_dir(&dir)?
            .into_iter()
            .filter(|n| n.starts_with("ip-") && n.contains("-iscsi-") && !n.contains("-part"))
            .map(|n| host.public_dev_path(&dir.join(n)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_path_names_follow_udev() {
        let p: Portal = "127.0.0.1:3260".parse().unwrap();
        assert_eq!(
            by_path_name(&p, "iqn.2003-01.x:t", 0),
            "ip-127.0.0.1:3260-iscsi-iqn.2003-01.x:t-lun-0"
        );
        let p6: Portal = "[fe80::1]:3260".parse().unwrap();
        assert_eq!(
            by_path_name(&p6, "iqn.2003-01.x:t", 256),
            "ip-fe80::1:3260-iscsi-iqn.2003-01.x:t-lun-0x0100000000000000"
        );
        // LUN 256 under SAM2 is the kernel's 16640, as os-brick's `_format_lun_id` names it.
        assert_eq!(
            by_path_name(&p, "iqn.2003-01.x:t", 16640),
            "ip-127.0.0.1:3260-iscsi-iqn.2003-01.x:t-lun-0x4100000000000000"
        );
    }
}
