//! Nova's mapping of an attached volume to its disk: a connection_info and a device record
//! become a [`DiskConfig`].

use crate::error::{Error, Result};
use crate::model::connection::{AccessMode, ConnectionInfo};
use crate::model::record::{DeviceKind, DeviceRecord, NetworkSource};

use super::config::{
    BlockIo, CacheMode, DiscardMode, DiskAuth, DiskConfig, DiskSource, DiskTarget, IoTune,
    NetworkDisk, NetworkHost, NetworkProtocol,
};

impl DiskConfig {
    /// The disk for an attached volume, with Nova's mapping: a block record (iSCSI,
    /// NVMe-oF, mapped RBD, local) becomes a block source at the record's path with
    /// `cache='none' io='native'`; an RBD network record becomes a network source with its
    /// monitors and auth. `access_mode: ro` → `<readonly/>`, `discard` → `discard='unmap'`,
    /// `multiattach` → `<shareable/>`, the serial (else the volume id) → `<serial>`,
    /// `qos_specs` → `<iotune>`, block sizes → `<blockio>`.
    pub fn for_volume(
        info: &ConnectionInfo,
        device: &DeviceRecord,
        target: DiskTarget,
    ) -> Result<DiskConfig> {
        let mut disk = match device.kind {
            DeviceKind::Block => Self::block(&device.path, target),
            DeviceKind::Network => {
                let net = device
                    .network
                    .as_ref()
                    .ok_or_else(|| Error::InvalidDeviceRecord {
                        reason: "a network record without its network source".into(),
                    })?;
                let mut disk = Self::new(DiskSource::Network(network_disk(net)?), target);
                disk.driver.cache = Some(CacheMode::None);
                disk
            }
        };
        let props = info.disk();
        if props.discard {
            disk.driver.discard = Some(DiscardMode::Unmap);
        }
        disk.readonly = props.access_mode == AccessMode::Ro;
        disk.shareable = props.multiattach;
        disk.serial = props.serial.clone().or_else(|| device.volume_id.clone());
        disk.iotune = match &props.qos_specs {
            Some(specs) => IoTune::from_qos_specs(specs)?,
            None => None,
        };
        if props.logical_block_size.is_some() || props.physical_block_size.is_some() {
            disk.blockio = Some(BlockIo {
                logical_block_size: props.logical_block_size,
                physical_block_size: props.physical_block_size,
            });
        }
        disk.check()?;
        Ok(disk)
    }
}

/// The RBD network source of a network record.
fn network_disk(net: &NetworkSource) -> Result<NetworkDisk> {
    let protocol: NetworkProtocol = net.protocol.parse()?;
    if !net.ports.is_empty() && net.ports.len() != net.hosts.len() {
        return Err(Error::InvalidDeviceRecord {
            reason: format!(
                "network source has {} hosts but {} ports",
                net.hosts.len(),
                net.ports.len()
            ),
        });
    }
    let hosts = net
        .hosts
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let port = match net.ports.get(i) {
                Some(Some(p)) => {
                    Some(p.parse::<u16>().map_err(|_| Error::InvalidDeviceRecord {
                        reason: format!("network source port {p:?} is not a port number"),
                    })?)
                }
                _ => None,
            };
            Ok(NetworkHost {
                name: name.clone(),
                port,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let auth = match (&net.auth_username, &net.secret_uuid) {
        (Some(user), Some(uuid)) => Some(DiskAuth {
            username: user.clone(),
            secret_type: net.secret_type.as_deref().unwrap_or("ceph").parse()?,
            secret_uuid: uuid.clone(),
        }),
        (Some(user), None) => {
            return Err(Error::InvalidDiskConfig {
                field: "auth",
                reason: format!(
                    "user {user:?} needs a libvirt secret (secret_uuid) holding its key"
                ),
            })
        }
        (None, _) => None,
    };
    Ok(NetworkDisk {
        protocol,
        name: net.name.clone(),
        hosts,
        auth,
    })
}
