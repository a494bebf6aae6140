//! Extend: rescan of the controllers that serve the volume, then the head device awaited at
//! the size the controller reports; for a replicated volume, every replica's namespace,
//! then the MD array grown over them (`mdadm --grow --size max`).

use std::path::PathBuf;
use std::time::Instant;

use super::cli;
use super::controllers::ControllerFinder;
use super::teardown::heads;
use super::{NvmeDriver, NvmeProperties};
use crate::connector::Operation;
use crate::devices::{block, md};
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
        // A replicated volume whose array is up (os-brick: the path is under /dev/md):
        // every replica's namespace grows, then the array grows over them.
        let array = match props
            .alias
            .as_deref()
            .filter(|_| !props.replicas.is_empty())
        {
            Some(alias) => md::owned_array(host, alias, &heads)?.map(|md| (alias, md)),
            None => None,
        };
        let Some((alias, md)) = array else {
            let size = self.settle(op, &mut watch, head)?;
            tracing::debug!(size, device = %head, "namespace grown");
            return Ok(size);
        };
        for h in &heads {
            self.settle(op, &mut watch, h)?;
        }
        md::grow_to_max(op.runner(), alias, deadline)?;
        let size = block::size_bytes(host, &md)?;
        tracing::debug!(size, array = %alias, device = %md, "array grown");
        Ok(size)
    }

    /// Waits (within the scan budget) for the namespace `head` to show the size its
    /// controller reports; the rescan brings the block device to it in the background.
    fn settle(&self, op: &Operation<'_>, watch: &mut DeviceWatch, head: &str) -> Result<u64> {
        let host = op.host();
        let dev = PathBuf::from("/dev").join(head);
        let want = cli::namespace_size(op.runner(), &dev, op.deadline)?;
        let settle = op.deadline.min(Instant::now() + op.opts.scan_timeout);
        watch.wait_for(&format!("{head} to reach {want} bytes"), settle, || {
            let now = block::size_bytes(host, head)?;
            Ok((now == want).then_some(now))
        })
    }
}
