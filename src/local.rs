//! The `local` protocol: a block device that is already on this host (a loop device, a
//! local LV, a disk a controller outside hostbrick attached). Connect validates it and
//! returns its record; disconnect leaves the device alone, as it was there before.

use std::path::{Path, PathBuf};

use crate::connector::{Connector, ConnectorOptions, DisconnectOptions};
use crate::devices::block;
use crate::error::{AttemptFailure, Error, Result};
use crate::model::connection::{ConnectionInfo, Protocol};
use crate::model::local::LocalProperties;
use crate::model::record::DeviceRecord;

/// Hands an existing local block device through, for the same flow as remote volumes.
#[derive(Debug)]
pub struct LocalConnector {
    opts: ConnectorOptions,
}

impl LocalConnector {
    /// A connector with these options (only the host handle is used).
    pub fn new(opts: ConnectorOptions) -> Self {
        LocalConnector { opts }
    }

    fn props<'a>(&self, info: &'a ConnectionInfo) -> Result<&'a LocalProperties> {
        info.local().ok_or_else(|| info.mismatch(Protocol::Local))
    }

    /// The device's name under /sys/class/block, when the path is a block device there.
    fn block_name(&self, props: &LocalProperties) -> Result<Option<String>> {
        let host = &self.opts.context.host;
        let Some(real) = host.canonical(&host.map_dev_path(&props.device_path))? else {
            return Ok(None);
        };
        let name = real
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| block::exists(host, n));
        Ok(name)
    }
}

fn not_a_block_device(props: &LocalProperties) -> Error {
    Error::VolumeDeviceNotFound {
        tried: vec![AttemptFailure {
            target: props.device_path.display().to_string(),
            reason: "not a block device on this host".into(),
        }],
    }
}

impl Connector for LocalConnector {
    fn protocol(&self) -> Protocol {
        Protocol::Local
    }

    fn connect_volume(&self, info: &ConnectionInfo) -> Result<DeviceRecord> {
        let props = self.props(info)?;
        let span = tracing::info_span!("connect_volume", protocol = "local", volume = ?props.volume_id, device = %props.device_path.display());
        let _e = span.enter();
        if self.block_name(props)?.is_none() {
            return Err(not_a_block_device(props));
        }
        Ok(DeviceRecord::block(
            Protocol::Local,
            props.device_path.clone(),
            props.volume_id.clone(),
        ))
    }

    fn disconnect_volume(
        &self,
        info: &ConnectionInfo,
        _device: Option<&DeviceRecord>,
        _options: DisconnectOptions,
    ) -> Result<()> {
        // The device was on the host before connect and stays after it.
        self.props(info).map(|_| ())
    }

    fn extend_volume(&self, info: &ConnectionInfo) -> Result<u64> {
        let props = self.props(info)?;
        match self.block_name(props)? {
            Some(name) => block::size_bytes(&self.opts.context.host, &name),
            None => Err(not_a_block_device(props)),
        }
    }

    fn get_volume_paths(&self, info: &ConnectionInfo) -> Result<Vec<PathBuf>> {
        let props = self.props(info)?;
        Ok(self
            .block_name(props)?
            .map(|_| props.device_path.clone())
            .into_iter()
            .collect())
    }

    fn get_search_path(&self) -> Option<PathBuf> {
        None
    }

    fn get_all_available_volumes(&self) -> Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }

    fn check_valid_device(&self, path: &Path) -> Result<()> {
        block::check_readable(&self.opts.context.host.map_dev_path(path))
    }
}
