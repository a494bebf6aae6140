//! The NVMe-oF connector (TCP, RDMA).
//!
//! Connect, per portal: reuse a live controller for (subsystem, transport, address, port,
//! host NQN) and rescan it, else a new one from the kernel (the connect's options written
//! to `/dev/nvme-fabrics`, as nvme-cli does, with no process); then the
//! namespace by UUID, NGUID or namespace id, awaited through udev, as its multipath head
//! device. With native multipath every portal is connected, otherwise the first that works.
//! A replicated volume gets an MD RAID1 over its replicas. A controller is shared by every
//! namespace of its subsystem, so connects record themselves in the attachment registry and
//! a disconnect only drops a controller no other attachment needs.
//!
//! The connector comes from [`crate::connector_for`] (`Protocol::NvmeOf`). This module holds
//! what a caller may need to name: the parsed `connection_info` data ([`NvmeProperties`],
//! [`NvmeTarget`], [`NvmePortal`], [`NamespaceId`], [`Nqn`]), the connector's options
//! ([`NvmeOptions`]) and the host's NVMe identity ([`host_identity`]).
//!
//! Inside: `connect` (portals, controllers, the namespace wait, MD over replicas), `teardown`
//! (disconnect, controller release), `extend`, `controllers` and `namespaces` (sysfs lookups,
//! with the one namespace resolver), `identity` (host NQN and host id), `fabrics` (the
//! kernel's connect and disconnect interface), `cli` (the `nvme` wrapper, for `id-ns`) and
//! `audit`.

pub(crate) mod audit;
pub(crate) mod cli;
mod connect;
pub(crate) mod controllers;
mod extend;
pub(crate) mod fabrics;
pub(crate) mod identity;
pub(crate) mod namespaces;
mod teardown;

use std::path::PathBuf;

pub use crate::connector::{ControllerLoss, NvmeOptions};
pub use crate::model::nvme::{
    NamespaceId, Nqn, NvmePortal, NvmeProperties, NvmeTarget, NvmeTransport,
};
pub(crate) use controllers::{native_multipath, ControllerFinder};
pub use identity::{host_identity, IdentitySource, NvmeHostIdentity};
pub(crate) use namespaces::head_name;

use serde::{Deserialize, Serialize};

use crate::connector::{ConnectorOptions, DisconnectOptions, Driver, Operation, VolumeProps};
use crate::devices::md;
use crate::error::Result;
use crate::model::connection::{ConnectionInfo, Protocol};
use crate::model::record::DeviceRecord;
use crate::platform::host::Host;
use crate::platform::registry::Registry;

/// The NVMe-oF connector's steps, framed by [`crate::connector::Framed`]. Build the
/// connector with [`crate::connector_for`].
#[derive(Debug)]
pub(crate) struct NvmeDriver {
    opts: ConnectorOptions,
    registry: Registry,
}

/// The attachment registry's name for NVMe-oF volumes.
const REGISTRY: &str = "nvme";

/// What the registry keeps of an attached NVMe volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Attachment {
    /// The volume's copies (one, or one per replica) with their portals.
    copies: Vec<NvmeTarget>,
}

impl Attachment {
    fn uses(&self, nqn: &str, portal: &NvmePortal) -> bool {
        self.copies
            .iter()
            .any(|c| c.nqn.as_str() == nqn && c.portals.contains(portal))
    }

    /// True when one of `ctrls` serves a copy of the volume at one of its portals
    /// (whatever host NQN it connected with). An attachment without one is stale: another
    /// tool detached the volume.
    fn has_controller(&self, ctrls: &[controllers::Controller]) -> bool {
        self.copies.iter().any(|copy| {
            copy.portals.iter().any(|p| {
                ctrls
                    .iter()
                    .any(|c| c.serves(copy.nqn.as_str(), p, c.hostnqn.as_deref().unwrap_or("")))
            })
        })
    }
}

/// The lock connects through one controller share, and its disconnect check takes
/// exclusively (an audit only asks whether anyone holds it).
fn controller_lock_key(nqn: &str, portal: &NvmePortal) -> String {
    format!("nvme-ctrl-{nqn}-{portal}")
}

impl NvmeDriver {
    /// The driver for connectors with these options ([`NvmeOptions::validate`]d).
    pub(crate) fn new(opts: ConnectorOptions) -> Result<Self> {
        opts.nvme.validate()?;
        Ok(NvmeDriver {
            registry: Registry::new(&opts.context.host, REGISTRY),
            opts,
        })
    }

    /// The host NQN and host id to connect with: the storage's `host_nqn` when it named
    /// one, else this host's own.
    fn identity(&self, host: &Host, props: &NvmeProperties) -> Result<(String, String)> {
        let (own_nqn, hostid, _) = identity::saved_identity(host)?;
        let hostnqn = props.host_nqn.as_ref().map_or(own_nqn, |n| n.to_string());
        Ok((hostnqn, hostid))
    }
}

impl VolumeProps for NvmeProperties {
    fn volume_id(&self) -> Option<&str> {
        self.volume_id.as_deref()
    }

    fn volume_key(&self) -> String {
        NvmeProperties::volume_key(self)
    }

    fn target(&self) -> String {
        self.target.nqn.to_string()
    }
}

impl Driver for NvmeDriver {
    type Props = NvmeProperties;

    fn protocol(&self) -> Protocol {
        Protocol::NvmeOf
    }

    fn options(&self) -> &ConnectorOptions {
        &self.opts
    }

    fn props<'a>(&self, info: &'a ConnectionInfo) -> Option<&'a NvmeProperties> {
        info.nvme()
    }

    fn connect(&self, op: &Operation<'_>, props: &NvmeProperties) -> Result<DeviceRecord> {
        NvmeDriver::connect(self, op, props)
    }

    fn disconnect(
        &self,
        op: &Operation<'_>,
        props: &NvmeProperties,
        record: Option<&DeviceRecord>,
        options: DisconnectOptions,
    ) -> Result<()> {
        NvmeDriver::disconnect(self, op, props, record, options)
    }

    fn extend(&self, op: &Operation<'_>, props: &NvmeProperties) -> Result<u64> {
        NvmeDriver::extend(self, op, props)
    }

    fn volume_paths(&self, op: &Operation<'_>, props: &NvmeProperties) -> Result<Vec<PathBuf>> {
        let host = op.host();
        let (hostnqn, _) = self.identity(host, props)?;
        let heads = teardown::heads(host, props, &hostnqn, &mut ControllerFinder::new(host))?;
        // A replicated volume is its array when the array is up over its replicas
        // (os-brick answers `/dev/md/<alias>` for a replicated volume).
        if let Some(alias) = props
            .alias
            .as_deref()
            .filter(|_| !props.replicas.is_empty())
        {
            if md::owned_array(host, alias, &heads)?.is_some() {
                return Ok(vec![md::array_path(alias)]);
            }
        }
        Ok(heads
            .into_iter()
            .map(|h| PathBuf::from("/dev").join(h))
            .collect())
    }

    fn search_path(&self, _host: &Host) -> Option<PathBuf> {
        Some(PathBuf::from("/dev"))
    }

    fn all_volumes(&self, op: &Operation<'_>) -> Result<Vec<PathBuf>> {
        let host = op.host();
        Ok(host
            .list_dir(&host.sys("block"))?
            .into_iter()
            .filter(|n| head_name(n).as_deref() == Some(n.as_str()))
            .map(|n| PathBuf::from("/dev").join(n))
            .collect())
    }
}
