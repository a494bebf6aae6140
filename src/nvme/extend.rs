//! Extend: rescan of the controllers that serve the volume, then the head device awaited at
//! the size the controller reports.

use std::path::PathBuf;
use std::time::Instant;

use super::cli;
use super::controllers::ControllerFinder;
use super::teardown::heads;
use super::{NvmeDriver, NvmeProperties};
use crate::connector::Operation;
use crate::devices::block;
use crate::error::{AttemptFailure, Error, Result};
use crate::platform::wait::DeviceWatch;

impl NvmeDriver {
    pub(super) fn extend(&self, op: &Operation<'_>, props: &NvmeProperties) -> Result<u64> {
        let deadline = op.deadline;
        let host = op.host();
        let (hostnqn, _) = self.identity(host, props)?;
        let mut ctrls = ControllerFinder::new(host);
        let heads = heads(host, props, &hostnqn, &mut ctrls)?;
        let Some(head) = heads.first() else {
            return Err(Error::VolumeDeviceNotFound {
                tried: vec![AttemptFailure {
                    target: props.target.nqn.to_string(),
                    reason: "no attached namespace".into(),
                }],
            });
        };
        let mut watch = DeviceWatch::open(host, &["block"]);
        for copy in props.copies() {
            for portal in &copy.portals {
                if let Some(c) = ctrls.find(copy.nqn.as_str(), portal, &hostnqn)? {
                    host.write_attr(
                        &host.sys(format!("class/nvme/{}/rescan_controller", c.name)),
                        "1",
                    )?;
                }
            }
        }
        // The controller's answer is the size; the rescan brings the block device to it in
        // the background.
        let dev = PathBuf::from("/dev").join(head);
        let want = cli::namespace_size(op.runner(), &dev, deadline)?;
        let settle = deadline.min(Instant::now() + op.opts.scan_timeout);
        let size = watch.wait_for(&format!("{head} to reach {want} bytes"), settle, || {
            let now = block::size_bytes(host, head)?;
            Ok((now == want).then_some(now))
        })?;
        tracing::debug!(size, device = %head, "namespace grown");
        Ok(size)
    }
}
