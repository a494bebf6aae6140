//! The Ceph RBD connector: local attach through kernel rbd or rbd-nbd, or (non-local) a
//! network-disk record for the hypervisor to open itself.
//!
//! The connector comes from [`crate::connector_for`] (`Protocol::Rbd`). This module holds
//! what a caller may need to name: the parsed `connection_info` data ([`RbdProperties`],
//! [`ImageSpec`], [`Monitor`]), the connector's options ([`RbdOptions`], [`RbdMapper`],
//! [`RbdAttach`]) and the network-disk description of a volume ([`network_source`]).
//! Inside: the driver here, `cli` (the `rbd` / `rbd-nbd` wrappers, their parsers and the
//! private Ceph files) and `audit`.

pub(crate) mod audit;
pub(crate) mod cli;

use std::path::PathBuf;
use std::time::Instant;

pub use crate::connector::{RbdAttach, RbdOptions};
pub use crate::model::rbd::{ImageSpec, Monitor, RbdMapper, RbdProperties};
pub(crate) use cli::CephFiles;

use crate::connector::{ConnectorOptions, DisconnectOptions, Driver, Operation, VolumeProps};
use crate::devices::block;
use crate::error::{Error, Result};
use crate::model::connection::{ConnectionInfo, Protocol};
use crate::model::record::{DeviceKind, DeviceRecord, NetworkSource, RbdRecord};
use crate::platform::cancel;
use crate::platform::host::Host;
use crate::platform::lock::LockMode;
use crate::platform::registry::Registry;
use crate::platform::wait::DeviceWatch;

/// The lock under which one map or unmap of an image runs at a time, whatever volume key
/// the connection_info gives; an audit asks it to tell a mapping still being made.
fn image_lock_key(spec: &ImageSpec) -> String {
    format!("rbd-image-{spec}")
}

/// The attachment registry's name for mapped RBD images: one [`DeviceRecord`] per volume
/// this host mapped, so an audit can tell hostbrick's mappings from orphans.
const REGISTRY: &str = "rbd";

/// The RBD connector's steps, framed by [`crate::connector::Framed`]. Build the connector
/// with [`crate::connector_for`].
#[derive(Debug)]
pub(crate) struct RbdDriver {
    opts: ConnectorOptions,
    registry: Registry,
}

impl VolumeProps for RbdProperties {
    fn volume_id(&self) -> Option<&str> {
        self.volume_id.as_deref()
    }

    fn volume_key(&self) -> String {
        RbdProperties::volume_key(self)
    }

    fn target(&self) -> String {
        self.image.to_string()
    }
}

/// Where this call puts the image: the connection_info's `do_local_attach` when it has
/// one (os-brick reads it per call), else the connector's [`RbdOptions::attach`].
fn attach_mode(op: &Operation<'_>, props: &RbdProperties) -> RbdAttach {
    match props.do_local_attach {
        Some(true) => RbdAttach::Local,
        Some(false) => RbdAttach::Network,
        None => op.opts.rbd.attach,
    }
}

fn dev_name(device: &str) -> &str {
    device.rsplit('/').next().unwrap_or(device)
}

/// The network-disk description of a volume (what libvirt's `<disk type='network'>` needs).
pub fn network_source(props: &RbdProperties) -> NetworkSource {
    NetworkSource {
        protocol: "rbd".into(),
        name: props.image.to_string(),
        hosts: props.monitors.iter().map(|m| m.host.clone()).collect(),
        ports: props.monitors.iter().map(|m| m.port.clone()).collect(),
        auth_username: props.auth_enabled.then(|| props.user().to_string()),
        secret_type: props.secret_type.clone().filter(|_| props.auth_enabled),
        secret_uuid: props.secret_uuid.clone().filter(|_| props.auth_enabled),
        cluster_name: Some(props.cluster_name.clone()),
    }
}

/// The device already mapping the image through `mapper`, if any.
fn existing(
    op: &Operation<'_>,
    mapper: RbdMapper,
    props: &RbdProperties,
) -> Result<Option<String>> {
    if mapper == RbdMapper::Krbd {
        // The kernel's own list of its mappings; never a /dev link, which anyone who can
        // write /dev (or name an image `../sda`) could point anywhere.
        return krbd_mapping(op.host(), &props.image);
    }
    Ok(cli::mappings(op.runner(), mapper, op.deadline)?
        .into_iter()
        .find(|m| m.maps(&props.image))
        .map(|m| m.device))
}

/// The kernel rbd device mapping the head of `spec`, from the kernel's mapping list
/// (`/sys/bus/rbd/devices/N/{pool,pool_ns,name,current_snap}`; `rbdN` is its block device).
pub(crate) fn krbd_mapping(host: &Host, spec: &ImageSpec) -> Result<Option<String>> {
    Ok(krbd_mappings(host, spec)?.into_iter().next())
}

/// Every kernel rbd device mapping the head of `spec` (an image may be mapped more than
/// once), from the kernel's mapping list, as `rbd showmapped` reads it.
pub(crate) fn krbd_mappings(host: &Host, spec: &ImageSpec) -> Result<Vec<String>> {
    let dir = host.sys("bus/rbd/devices");
    let mut found = Vec::new();
    for id in host.list_dir(&dir)? {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let attr = |name: &str| host.read_attr_opt(&dir.join(&id).join(name));
        let (Some(pool), Some(name)) = (attr("pool")?, attr("name")?) else {
            continue;
        };
        let pool_ns = attr("pool_ns")?.unwrap_or_default();
        let snap = attr("current_snap")?.unwrap_or_else(|| "-".into());
        if pool == spec.pool
            && pool_ns == spec.namespace.clone().unwrap_or_default()
            && name == spec.image
            && snap == "-"
            && block::exists(host, &format!("rbd{id}"))
        {
            found.push(format!("/dev/rbd{id}"));
        }
    }
    Ok(found)
}

/// True when some nbd device is connected (`/sys/block/nbdN/pid` names its daemon): only
/// then can rbd-nbd have a mapping to list.
fn nbd_connected(host: &Host) -> Result<bool> {
    for name in host.list_dir(&host.sys("block"))? {
        if name.starts_with("nbd") && host.sys("block").join(&name).join("pid").exists() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn unmap(op: &Operation<'_>, mapper: RbdMapper, device: &str, force: bool) -> Result<()> {
    let host = op.host();
    let name = dev_name(device).to_string();
    let mut watch = DeviceWatch::open(host, &["block"]);
    cli::unmap(op.runner(), mapper, device, force, op.deadline)?;
    // An nbd device stays in sysfs, disconnected (size 0); a krbd one goes away.
    watch.wait_for(&format!("unmap of {device}"), op.deadline, || {
        let gone = !block::exists(host, &name) || block::size_bytes(host, &name)? == 0;
        Ok(gone.then_some(()))
    })
}

impl RbdDriver {
    /// The driver for connectors with these options.
    pub(crate) fn new(opts: ConnectorOptions) -> Self {
        RbdDriver {
            registry: Registry::new(&opts.context.host, REGISTRY),
            opts,
        }
    }

    /// The record of a mapped image, noted in the registry too.
    fn record(&self, props: &RbdProperties, mapper: RbdMapper, device: &str) -> DeviceRecord {
        let record = DeviceRecord {
            rbd: Some(RbdRecord {
                mapper,
                image: props.image.to_string(),
                device: device.to_string(),
            }),
            ..DeviceRecord::block(Protocol::Rbd, device, props.volume_id.clone())
        };
        if let Err(e) = self.registry.put(&props.volume_key(), &record) {
            tracing::warn!(error = %e.chain(), "cannot note the mapping in the registry; an audit will list it as unrecorded");
        }
        record
    }
}

impl Driver for RbdDriver {
    type Props = RbdProperties;

    fn protocol(&self) -> Protocol {
        Protocol::Rbd
    }

    fn options(&self) -> &ConnectorOptions {
        &self.opts
    }

    fn props<'a>(&self, info: &'a ConnectionInfo) -> Option<&'a RbdProperties> {
        info.rbd()
    }

    fn connect(&self, op: &Operation<'_>, props: &RbdProperties) -> Result<DeviceRecord> {
        if attach_mode(op, props) == RbdAttach::Network {
            return Ok(DeviceRecord {
                kind: DeviceKind::Network,
                network: Some(network_source(props)),
                ..DeviceRecord::block(
                    Protocol::Rbd,
                    format!("rbd:{}", props.image),
                    props.volume_id.clone(),
                )
            });
        }
        let deadline = op.deadline;
        let mapper = op.opts.rbd.mapper;
        let _image = op.lock(&image_lock_key(&props.image), LockMode::Exclusive)?;
        if let Some(dev) = existing(op, mapper, props)? {
            tracing::info!(device = %dev, "image already mapped; reusing it");
            return Ok(self.record(props, mapper, &dev));
        }
        let files = CephFiles::write(op.host(), props)?;
        let host = op.host();
        let mut watch = DeviceWatch::open(host, &["block"]);
        let read_only = props.access_mode == crate::model::connection::AccessMode::Ro;
        // Not cut short by the cancel: a killed map may still leave the image mapped, on a
        // device nobody would know to unmap. The wait after it sees the cancel.
        let device = {
            let _whole = cancel::shield();
            cli::map(op.runner(), mapper, props, &files, read_only, deadline)?
        };
        drop(files);
        tracing::info!(phase = "map", elapsed_ms = op.elapsed_ms(), %device, "image mapped");
        let name = dev_name(&device).to_string();
        if let Err(e) = watch.wait_for(&format!("{device} for {}", props.image), deadline, || {
            Ok(block::is_ready(host, &name)?.then_some(()))
        }) {
            let _undo = cancel::shield();
            if let Err(u) = cli::unmap(op.runner(), mapper, &device, true, op.cleanup_deadline()) {
                tracing::warn!(error = %u.chain(), "undo: unmapping failed");
            }
            return Err(e);
        }
        tracing::info!(phase = "device_found", elapsed_ms = op.elapsed_ms(), %device, "device ready");
        Ok(self.record(props, mapper, &device))
    }

    fn disconnect(
        &self,
        op: &Operation<'_>,
        props: &RbdProperties,
        record: Option<&DeviceRecord>,
        options: DisconnectOptions,
    ) -> Result<()> {
        if attach_mode(op, props) == RbdAttach::Network
            && record.is_none_or(|r| r.kind == DeviceKind::Network)
        {
            return Ok(());
        }
        let _image = op.lock(&image_lock_key(&props.image), LockMode::Exclusive)?;
        let recorded = record.and_then(|r| r.rbd.as_ref()).map(|r| r.mapper);
        // The recorded mapper first, then the other: a record from another configuration
        // (or none) must still find the mapping.
        let mut mappers = vec![recorded.unwrap_or(op.opts.rbd.mapper)];
        for m in [RbdMapper::Krbd, RbdMapper::Nbd] {
            if !mappers.contains(&m) {
                mappers.push(m);
            }
        }
        for mapper in mappers {
            // krbd's mappings are in sysfs; rbd-nbd is asked only when an nbd device is
            // connected at all.
            let devices = match mapper {
                RbdMapper::Krbd => krbd_mappings(op.host(), &props.image)?,
                RbdMapper::Nbd if !nbd_connected(op.host())? => Vec::new(),
                RbdMapper::Nbd => match cli::mappings(op.runner(), mapper, op.deadline) {
                    Ok(all) => all
                        .into_iter()
                        .filter(|m| m.maps(&props.image))
                        .map(|m| m.device)
                        .collect::<Vec<_>>(),
                    // rbd-nbd may simply not be installed.
                    Err(Error::CommandNotFound { .. }) if Some(mapper) != recorded => continue,
                    Err(e) => return Err(e),
                },
            };
            for device in &devices {
                block::ensure_unused(op.host(), dev_name(device), &[])?;
            }
            for device in devices {
                unmap(op, mapper, &device, options.force)?;
            }
        }
        self.registry.remove(&props.volume_key())
    }

    fn extend(&self, op: &Operation<'_>, props: &RbdProperties) -> Result<u64> {
        let deadline = op.deadline;
        let files = CephFiles::write(op.host(), props)?;
        let size = cli::image_size(op.runner(), props, &files, deadline)?;
        drop(files);
        if attach_mode(op, props) == RbdAttach::Network {
            return Ok(size);
        }
        let Some(device) = existing(op, op.opts.rbd.mapper, props)? else {
            return Err(Error::VolumeDeviceNotFound {
                tried: vec![crate::error::AttemptFailure {
                    target: props.image.to_string(),
                    reason: "not mapped".into(),
                }],
            });
        };
        let host = op.host();
        let name = dev_name(&device).to_string();
        let mut watch = DeviceWatch::open(host, &["block"]);
        // The client follows the image header by itself; wait for it to catch up.
        let settle = deadline.min(Instant::now() + op.opts.scan_timeout);
        watch.wait_for(&format!("{device} to reach {size} bytes"), settle, || {
            Ok((block::size_bytes(host, &name)? >= size).then_some(()))
        })?;
        tracing::debug!(size, %device, "mapping grown");
        Ok(size)
    }

    fn volume_paths(&self, op: &Operation<'_>, props: &RbdProperties) -> Result<Vec<PathBuf>> {
        if attach_mode(op, props) == RbdAttach::Network {
            return Ok(Vec::new());
        }
        Ok(existing(op, op.opts.rbd.mapper, props)?
            .map(PathBuf::from)
            .into_iter()
            .collect())
    }

    fn all_volumes(&self, op: &Operation<'_>) -> Result<Vec<PathBuf>> {
        Ok(cli::mappings(op.runner(), op.opts.rbd.mapper, op.deadline)?
            .into_iter()
            .map(|m| PathBuf::from(m.device))
            .collect())
    }
}
