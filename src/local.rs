//! The `local` protocol: a block device that is already on this host (a loop device, a
//! local LV, a disk a controller outside hostbrick attached). Connect validates it and
//! returns its record; disconnect leaves the device alone, as it was there before.
//!
//! The connector comes from [`crate::connector_for`] (`Protocol::Local`); its parsed data is
//! [`LocalProperties`].

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use crate::connector::{ConnectorOptions, DisconnectOptions, Driver, Operation, VolumeProps};
use crate::devices::block;
use crate::error::{AttemptFailure, Error, Result};
use crate::model::connection::{ConnectionInfo, Protocol};
pub use crate::model::local::LocalProperties;
use crate::model::record::{DeviceRecord, LocalRecord};
use crate::platform::host::Host;

/// Hands an existing local block device through, for the same flow as remote volumes.
#[derive(Debug)]
pub(crate) struct LocalDriver {
    opts: ConnectorOptions,
}

impl LocalDriver {
    /// The driver for connectors with these options (only the host handle is used).
    pub(crate) fn new(opts: ConnectorOptions) -> Self {
        LocalDriver { opts }
    }
}

impl VolumeProps for LocalProperties {
    fn volume_id(&self) -> Option<&str> {
        self.volume_id.as_deref()
    }

    fn volume_key(&self) -> String {
        match &self.volume_id {
            Some(id) => format!("volume-{id}"),
            None => format!("local-{}", self.device_path.display()),
        }
    }

    fn target(&self) -> String {
        self.device_path.display().to_string()
    }
}

/// The block device `props.device_path` resolves to now, resolved once: its name under
/// /sys/class/block and its identity. `None` unless the kernel lists it as a block device
/// (and, on the running system, the path is a block special file).
fn resolve(host: &Host, props: &LocalProperties) -> Result<Option<(String, LocalRecord)>> {
    let local = host.map_dev_path(&props.device_path);
    let Some(real) = host.canonical(&local)? else {
        return Ok(None);
    };
    let Some(name) = real.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(None);
    };
    if !block::exists(host, &name) {
        return Ok(None);
    }
    if host.is_system() {
        let is_block = std::fs::metadata(&real).is_ok_and(|m| m.file_type().is_block_device());
        if !is_block {
            return Ok(None);
        }
    }
    let Some(devnum) = host.read_attr_opt(&host.sys(format!("block/{name}/dev")))? else {
        return Ok(None);
    };
    let diskseq = host
        .read_attr_opt(&host.sys(format!("block/{name}/diskseq")))?
        .and_then(|s| s.parse().ok());
    let identity = LocalRecord {
        device: host.public_dev_path(&host.dev(&name)),
        devnum,
        diskseq,
    };
    Ok(Some((name, identity)))
}

fn not_a_block_device(props: &LocalProperties) -> Error {
    Error::VolumeDeviceNotFound {
        tried: vec![AttemptFailure {
            target: props.device_path.display().to_string(),
            reason: "not a block device on this host".into(),
        }],
    }
}

impl Driver for LocalDriver {
    type Props = LocalProperties;

    fn protocol(&self) -> Protocol {
        Protocol::Local
    }

    fn options(&self) -> &ConnectorOptions {
        &self.opts
    }

    fn props<'a>(&self, info: &'a ConnectionInfo) -> Option<&'a LocalProperties> {
        info.local()
    }

    fn connect(&self, op: &Operation<'_>, props: &LocalProperties) -> Result<DeviceRecord> {
        let Some((_, identity)) = resolve(op.host(), props)? else {
            return Err(not_a_block_device(props));
        };
        Ok(DeviceRecord {
            local: Some(identity),
            ..DeviceRecord::block(
                Protocol::Local,
                props.device_path.clone(),
                props.volume_id.clone(),
            )
        })
    }

    fn disconnect(
        &self,
        op: &Operation<'_>,
        props: &LocalProperties,
        record: Option<&DeviceRecord>,
        _options: DisconnectOptions,
    ) -> Result<()> {
        // The device was on the host before connect and stays after it: nothing is done,
        // but a path that now names another device than the recorded one is worth a word.
        if let Some(was) = record.and_then(|r| r.local.as_ref()) {
            let now = resolve(op.host(), props)?.map(|(_, id)| id);
            if now.as_ref() != Some(was) {
                tracing::warn!(path = %props.device_path.display(), recorded = %was.device.display(), "the path no longer names the recorded device");
            }
        }
        Ok(())
    }

    fn extend(&self, op: &Operation<'_>, props: &LocalProperties) -> Result<u64> {
        match resolve(op.host(), props)? {
            Some((name, _)) => block::size_bytes(op.host(), &name),
            None => Err(not_a_block_device(props)),
        }
    }

    fn volume_paths(&self, op: &Operation<'_>, props: &LocalProperties) -> Result<Vec<PathBuf>> {
        Ok(resolve(op.host(), props)?
            .map(|_| props.device_path.clone())
            .into_iter()
            .collect())
    }
}
