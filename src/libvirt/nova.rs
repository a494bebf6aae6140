//! Nova's mapping of an attached volume to its disk: a connection_info and a device record
//! become a [`DiskConfig`].

use crate::error::{Error, Result};
use crate::model::connection::{AccessMode, ConnectionInfo};
use crate::model::record::{DeviceKind, DeviceRecord, NetworkSource};

use super::config::{
    is_user_alias, BlockIo, CacheMode, DiscardMode, DiskAuth, DiskConfig, DiskDevice, DiskSource,
    DiskTarget, IoTune, NetworkDisk, NetworkHost, NetworkProtocol,
};

impl DiskConfig {
    /// The disk for an attached volume, with Nova's mapping: a block record (iSCSI,
    /// NVMe-oF, mapped RBD, local) becomes a block source at the record's
    /// [`guest_path`](DeviceRecord::guest_path) (the decrypted device of a volume opened
    /// on this host, else its path) with
    /// `cache='none' io='native'`; an RBD network record becomes a network source with its
    /// monitors (none: librbd reads ceph.conf) and auth. `access_mode: ro` →
    /// `<readonly/>`, `discard` → `discard='unmap'`, `multiattach` → `<shareable/>`, the
    /// serial (else the volume id) → `<serial>` and the user alias `ua-<id>`, `qos_specs` →
    /// `<iotune>`, block sizes → `<blockio>`. The same as
    /// [`DiskConfig::for_volume_as`] with [`DiskDevice::Disk`].
    pub fn for_volume(
        info: &ConnectionInfo,
        device: &DeviceRecord,
        target: DiskTarget,
    ) -> Result<DiskConfig> {
        Self::for_volume_as(info, device, target, DiskDevice::Disk)
    }

    /// [`DiskConfig::for_volume`] for a block device mapping's `device_type` (Nova's
    /// `disk_info['type']`): for [`DiskDevice::Lun`] (SCSI passthrough), Nova writes no
    /// `<serial>` and no `<blockio>`, and neither does this; the alias stays.
    pub fn for_volume_as(
        info: &ConnectionInfo,
        record: &DeviceRecord,
        target: DiskTarget,
        device: DiskDevice,
    ) -> Result<DiskConfig> {
        let mut disk = match record.kind {
            // An encrypted volume opened on this host: the guest gets the decrypted device.
            DeviceKind::Block => Self::block(record.guest_path(), target),
            DeviceKind::Network => {
                let net = record
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
        disk.device = device;
        let props = info.disk();
        if props.discard {
            disk.driver.discard = Some(DiscardMode::Unmap);
        }
        disk.readonly = props.access_mode == AccessMode::Ro;
        disk.shareable = props.multiattach;
        let id = props.serial.clone().or_else(|| record.volume_id.clone());
        // Nova's `make_libvirt_device_alias`. libvirt drops a user alias with other
        // characters without a word; here it is left out with a warning.
        disk.alias = id.as_ref().map(|id| format!("ua-{id}")).filter(|alias| {
            let ok = is_user_alias(alias);
            if !ok {
                tracing::warn!(alias = %alias, "not a libvirt user alias; the disk gets none");
            }
            ok
        });
        disk.iotune = match &props.qos_specs {
            Some(specs) => IoTune::from_qos_specs(specs)?,
            None => None,
        };
        if device != DiskDevice::Lun {
            disk.serial = id;
            if props.logical_block_size.is_some() || props.physical_block_size.is_some() {
                disk.blockio = Some(BlockIo {
                    logical_block_size: props.logical_block_size,
                    physical_block_size: props.physical_block_size,
                });
            }
        }
        disk.check()?;
        Ok(disk)
    }
}

/// The network source of a network record. A `null` port (os-brick and Cinder send them)
/// writes a host without a port; no hosts at all leaves librbd to read ceph.conf.
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
            let port = match net.ports.get(i).and_then(Option::as_ref) {
                Some(p) => Some(p.parse::<u16>().map_err(|_| Error::InvalidDeviceRecord {
                    reason: format!("network source port {p:?} is not a port number"),
                })?),
                None => None,
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
        name: Some(net.name.clone()),
        hosts,
        auth,
    })
}
