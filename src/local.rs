//! The `local` protocol: a block device that is already on this host (a loop device, a
//! local LV, a disk a controller outside hostbrick attached). Connect validates it and
//! returns its record; disconnect leaves the device alone, as it was there before.
//!
//! The connector comes from [`crate::connector_for`] (`Protocol::Local`); its parsed data is
//! [`LocalProperties`].

use std::path::PathBuf;

use crate::connector::{ConnectorOptions, DisconnectOptions, Driver, Operation, VolumeProps};
use crate::devices::block;
use crate::error::{AttemptFailure, Error, Result};
use crate::model::connection::{ConnectionInfo, Protocol};
pub use crate::model::local::LocalProperties;
use crate::model::record::DeviceRecord;
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

/// The device's name under /sys/class/block, when the path is a block device there.
fn block_name(host: &Host, props: &LocalProperties) -> Result<Option<String>> {
    let Some(real) = host.canonical(&host.map_dev_path(&props.device_path))? else {
        return Ok(None);
    };
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| block::exists(host, n));
    Ok(name)
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
        if block_name(op.host(), props)?.is_none() {
            return Err(not_a_block_device(props));
        }
        Ok(DeviceRecord::block(
            Protocol::Local,
            props.device_path.clone(),
            props.volume_id.clone(),
        ))
    }

    fn disconnect(
        &self,
        _op: &Operation<'_>,
        _props: &LocalProperties,
        _record: Option<&DeviceRecord>,
        _options: DisconnectOptions,
    ) -> Result<()> {
        // The device was on the host before connect and stays after it.
        Ok(())
    }

    fn extend(&self, op: &Operation<'_>, props: &LocalProperties) -> Result<u64> {
        match block_name(op.host(), props)? {
            Some(name) => block::size_bytes(op.host(), &name),
            None => Err(not_a_block_device(props)),
        }
    }

    fn volume_paths(&self, op: &Operation<'_>, props: &LocalProperties) -> Result<Vec<PathBuf>> {
        Ok(block_name(op.host(), props)?
            .map(|_| props.device_path.clone())
            .into_iter()
            .collect())
    }
}
