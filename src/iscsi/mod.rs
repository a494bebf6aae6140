//! The iSCSI (and iSER) connector.
//!
//! Connect, per path: node record → manual-scan setting → CHAP → login (or reuse) →
//! `node.startup=automatic` → targeted scan of the one LUN → block device (udev-driven wait)
//! → WWID. Single path tries the targets in order; multipath logs in to all of them at once
//! and assembles a dm-multipath map as soon as one path is up. Every failed attempt undoes
//! what it created.

mod connect;
mod extend;
mod iscsiadm;
mod login;
pub(crate) mod session;
mod teardown;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use crate::model::iscsi::{ChapCredentials, IscsiProperties, IscsiTarget};
pub use iscsiadm::{
    parse_nodes, parse_sessions, Iscsiadm, IscsiadmStatus, LoginOutcome, NodeEntry, NodeParam,
    SessionEntry,
};
pub use session::{find as find_session, luns as session_luns, Session, SessionFinder};

use crate::connector::{Connector, ConnectorOptions, DisconnectOptions};
use crate::devices::block;
use crate::error::{Error, Result};
use crate::model::connection::{ConnectionInfo, Protocol};
use crate::model::ids::{Hctl, Portal, Wwid};
use crate::model::record::DeviceRecord;
use crate::platform::host::Host;
use crate::platform::lock::LockDir;
use crate::platform::registry::Registry;

/// The attachment registry's name for iSCSI (and iSER) volumes: one [`DeviceRecord`] per
/// attached volume, so an audit can tell sessions in use from orphans.
pub(crate) const REGISTRY: &str = "iscsi";

/// The iSCSI/iSER connector. Build it with [`crate::connector_for`].
#[derive(Debug)]
pub struct IscsiConnector {
    protocol: Protocol,
    opts: ConnectorOptions,
    iface: String,
    locks: LockDir,
    registry: Registry,
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
pub(crate) fn target_lock_key_for(portal: &Portal, iqn: &str) -> String {
    format!("iscsi-target-{portal}-{iqn}")
}

/// The lock under which one connect at a time sets a target's node record up and logs in.
fn target_setup_key(t: &IscsiTarget) -> String {
    format!("iscsi-login-{}-{}", t.portal, t.iqn)
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
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

impl IscsiConnector {
    /// A connector for `protocol` (`Iscsi` or `Iser`).
    pub fn new(protocol: Protocol, opts: ConnectorOptions) -> Result<Self> {
        let iface = match (&opts.iscsi.iface, protocol) {
            (Some(i), _) => i.clone(),
            (None, Protocol::Iser) => "iser".to_string(),
            (None, _) => "default".to_string(),
        };
        if iface.is_empty() || iface.contains('/') || iface.chars().any(char::is_whitespace) {
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
        let locks = opts.locks();
        let registry = Registry::new(&opts.context.host, REGISTRY);
        Ok(IscsiConnector {
            protocol,
            opts,
            iface,
            locks,
            registry,
        })
    }

    fn host(&self) -> &Host {
        &self.opts.context.host
    }

    fn adm(&self, deadline: Instant) -> Iscsiadm<'_> {
        Iscsiadm::new(&*self.opts.context.runner, &self.iface, deadline)
    }

    fn cleanup_deadline(&self) -> Instant {
        Instant::now() + self.opts.cleanup_timeout
    }

    fn props<'a>(&self, info: &'a ConnectionInfo) -> Result<&'a IscsiProperties> {
        info.iscsi().ok_or_else(|| info.mismatch(self.protocol))
    }
}

impl Connector for IscsiConnector {
    fn protocol(&self) -> Protocol {
        self.protocol
    }

    fn connect_volume(&self, info: &ConnectionInfo) -> Result<DeviceRecord> {
        let props = self.props(info)?;
        let span = tracing::info_span!("connect_volume", protocol = %self.protocol, volume = ?props.volume_id, target = %props.primary(), multipath = self.opts.multipath.is_on());
        let _e = span.enter();
        self.connect(props)
    }

    fn disconnect_volume(
        &self,
        info: &ConnectionInfo,
        device: Option<&DeviceRecord>,
        options: DisconnectOptions,
    ) -> Result<()> {
        let props = self.props(info)?;
        let span = tracing::info_span!("disconnect_volume", protocol = %self.protocol, volume = ?props.volume_id, target = %props.primary(), force = options.force, ignore_errors = options.ignore_errors);
        let _e = span.enter();
        self.disconnect(props, device, options)
    }

    fn extend_volume(&self, info: &ConnectionInfo) -> Result<u64> {
        let props = self.props(info)?;
        let span = tracing::info_span!("extend_volume", volume = ?props.volume_id, target = %props.primary());
        let _e = span.enter();
        self.extend(props)
    }

    fn get_volume_paths(&self, info: &ConnectionInfo) -> Result<Vec<PathBuf>> {
        let props = self.props(info)?;
        let host = self.host();
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

    fn get_search_path(&self) -> Option<PathBuf> {
        Some(
            self.host()
                .public_dev_path(&self.host().dev("disk/by-path")),
        )
    }

    fn get_all_available_volumes(&self) -> Result<Vec<PathBuf>> {
        let host = self.host();
        let dir = host.dev("disk/by-path");
        Ok(host
            .list_dir(&dir)?
            .into_iter()
            .filter(|n| n.starts_with("ip-") && n.contains("-iscsi-") && !n.contains("-part"))
            .map(|n| host.public_dev_path(&dir.join(n)))
            .collect())
    }

    fn check_valid_device(&self, path: &Path) -> Result<()> {
        block::check_readable(&self.host().map_dev_path(path))
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
    }
}
