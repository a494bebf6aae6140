//! The RBD part of an audit: mappings (kernel rbd, rbd-nbd) without a hostbrick record.

use std::time::Instant;

use crate::audit::{
    split_busy, Found, MappingReason, OrphanMapping, StaleRecord, AUDIT_COMMAND_TIMEOUT,
};
use crate::connector::HostContext;
use crate::error::{Error, Result};
use crate::model::record::DeviceRecord;
use crate::platform::lock::LockDir;
use crate::platform::registry::Registry;

use super::{cli, image_lock_key, krbd_mapping, ImageSpec, RbdMapper, REGISTRY};
use crate::platform::host::Host;

/// The RBD mappings on the host of `ctx` without a hostbrick record, split by whether a
/// hostbrick operation holds their image lock in `locks`.
pub(crate) fn orphans(ctx: &HostContext, locks: &LockDir) -> Result<Found<OrphanMapping>> {
    split_busy(mappings(ctx)?, |m| {
        if m.snap.is_some() {
            return Ok(false); // hostbrick maps images, never snapshots
        }
        let spec = ImageSpec {
            pool: m.pool.clone(),
            namespace: m.namespace.clone(),
            image: m.image.clone(),
        };
        locks.is_held(&image_lock_key(&spec))
    })
}

/// The registry entries of RBD volumes the host no longer shows: their image is not
/// mapped on their device (kernel rbd), or their nbd device is not connected (rbd-nbd).
pub(crate) fn stale_records(host: &Host) -> Result<Vec<StaleRecord>> {
    let mut out = Vec::new();
    for (entry, r) in Registry::new(host, REGISTRY).entries::<DeviceRecord>()? {
        let Some(rec) = &r.rbd else { continue };
        let name = rec.device.strip_prefix("/dev/").unwrap_or(&rec.device);
        let live = match rec.mapper {
            RbdMapper::Krbd => match rec.image.parse::<ImageSpec>() {
                Ok(spec) => krbd_mapping(host, &spec)?.is_some_and(|d| d == rec.device),
                Err(_) => continue,
            },
            RbdMapper::Nbd => host.sys(format!("block/{name}/pid")).exists(),
        };
        if !live {
            out.push(StaleRecord {
                registry: REGISTRY.to_string(),
                entry,
                volume_id: r.volume_id,
                reason: format!("{} no longer maps {}", rec.device, rec.image),
            });
        }
    }
    Ok(out)
}

/// Every RBD mapping on the host of `ctx` without a hostbrick record, held or not.
fn mappings(ctx: &HostContext) -> Result<Vec<OrphanMapping>> {
    let records: Vec<DeviceRecord> = Registry::new(&ctx.host, REGISTRY)
        .entries::<DeviceRecord>()?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let host = &ctx.host;
    let deadline = Instant::now() + AUDIT_COMMAND_TIMEOUT;
    let mut out = Vec::new();
    for mapper in [RbdMapper::Krbd, RbdMapper::Nbd] {
        // Nothing mapped that way: no need to run the tool (they are slow to start).
        let any = match mapper {
            RbdMapper::Krbd => !host.list_dir(&host.sys("bus/rbd/devices"))?.is_empty(),
            RbdMapper::Nbd => host
                .list_dir(&host.sys("block"))?
                .iter()
                .any(|n| n.starts_with("nbd") && host.sys(format!("block/{n}/pid")).exists()),
        };
        if !any {
            continue;
        }
        let mappings = match cli::mappings(&*ctx.runner, mapper, deadline) {
            Ok(m) => m,
            Err(Error::CommandNotFound { .. }) => {
                tracing::debug!(
                    program = mapper.program(),
                    "not installed; no mappings of that kind"
                );
                continue;
            }
            Err(e) => return Err(e),
        };
        for m in mappings {
            let recorded = records.iter().filter_map(|r| r.rbd.as_ref()).any(|r| {
                r.mapper == mapper
                    && r.device == m.device
                    && r.image.parse::<ImageSpec>().is_ok_and(|spec| m.maps(&spec))
            });
            if recorded {
                continue;
            }
            let snap = Some(m.snap).filter(|s| !s.is_empty() && s != "-");
            out.push(OrphanMapping {
                mapper,
                device: m.device,
                pool: m.pool,
                namespace: Some(m.namespace).filter(|n| !n.is_empty()),
                image: m.name,
                snap,
                reason: MappingReason::Unrecorded,
            });
        }
    }
    Ok(out)
}
