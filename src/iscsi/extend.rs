//! Extend: rescan of the volume's SCSI devices and resize of its multipath map.

use super::session::SessionFinder;
use super::{IscsiDriver, IscsiProperties};
use crate::connector::Operation;
use crate::devices::multipath;
use crate::devices::{block, scsi};
use crate::error::{AttemptFailure, Error, Result};
use crate::platform::wait::DeviceWatch;

impl IscsiDriver {
    pub(super) fn extend(&self, op: &Operation<'_>, props: &IscsiProperties) -> Result<u64> {
        let deadline = op.deadline;
        let host = self.host();
        let devices = self.volume_devices(&props.targets, &mut SessionFinder::new(host))?;
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
            tracing::debug!(size, "devices rescanned");
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
        tracing::debug!(size, map = %map.name, "multipath map resized");
        Ok(size)
    }
}
