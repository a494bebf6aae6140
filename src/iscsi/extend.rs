//! Extend: rescan of the volume's SCSI devices and resize of its multipath map.

use std::time::Instant;

use super::session::SessionFinder;
use super::{IscsiConnector, IscsiProperties};
use crate::devices::multipath;
use crate::devices::{block, scsi};
use crate::error::{AttemptFailure, Error, Result};
use crate::platform::lock::LockMode;
use crate::platform::wait::DeviceWatch;

impl IscsiConnector {
    pub(super) fn extend(&self, props: &IscsiProperties) -> Result<u64> {
        let deadline = Instant::now() + self.opts.operation_timeout;
        let host = self.host();
        let _volume = self.locks.lock(&props.volume_key(), LockMode::Exclusive)?;
        let devices = self.volume_devices(&props.targets, None, &mut SessionFinder::new(host))?;
        if devices.is_empty() {
            return Err(Error::VolumeDeviceNotFound {
                tried: props
                    .targets
                    .iter()
                    .map(|t| AttemptFailure {
                        target: t.to_string(),
                        reason: "no attached device".into(),
                    })
                    .collect(),
            });
        }
        let mut size = 0;
        for d in &devices {
            scsi::rescan(host, d.hctl)?;
            size = size.max(block::size_bytes(host, &d.name)?);
        }
        let Some(map) = multipath::holder_map(host, &devices[0].name)? else {
            tracing::info!(size, "volume extended");
            return Ok(size);
        };
        let mut watch = DeviceWatch::open(host, &["block"]);
        multipath::resize_map(&*self.opts.context.runner, &map.name, deadline)?;
        let size = watch.wait_for(
            &format!("multipath map {} to grow to {size} bytes", map.name),
            deadline,
            || {
                let now = block::size_bytes(host, &map.dm)?;
                Ok((now >= size).then_some(now))
            },
        )?;
        tracing::info!(size, map = %map.name, "volume extended");
        Ok(size)
    }
}
