//! The Ceph RBD connector: local attach through kernel rbd or rbd-nbd, or (non-local) a
//! network-disk record for the hypervisor to open itself.

pub(crate) mod audit;
mod cli;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use crate::model::rbd::{ImageSpec, Monitor, RbdMapper, RbdProperties};
pub use cli::{
    is_auth_failure, parse_image_size, parse_mapped_device, parse_mappings, CephFiles, Mapping,
};

use crate::connector::{Connector, ConnectorOptions, DisconnectOptions};
use crate::devices::block;
use crate::error::{Error, Result};
use crate::model::connection::{ConnectionInfo, Protocol};
use crate::model::record::{DeviceKind, DeviceRecord, NetworkSource, RbdRecord};
use crate::platform::host::Host;
use crate::platform::lock::{LockDir, LockMode};
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

/// The RBD connector. Build it with [`crate::connector_for`].
#[derive(Debug)]
pub struct RbdConnector {
    opts: ConnectorOptions,
    locks: LockDir,
    registry: Registry,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
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

impl RbdConnector {
    /// A connector with these options.
    pub fn new(opts: ConnectorOptions) -> Self {
        RbdConnector {
            locks: opts.locks(),
            registry: Registry::new(&opts.context.host, REGISTRY),
            opts,
        }
    }

    fn host(&self) -> &Host {
        &self.opts.context.host
    }

    fn runner(&self) -> &dyn crate::platform::cmd::CommandRunner {
        &*self.opts.context.runner
    }

    fn props<'a>(&self, info: &'a ConnectionInfo) -> Result<&'a RbdProperties> {
        info.rbd().ok_or_else(|| info.mismatch(Protocol::Rbd))
    }

    /// The device already mapping the image through `mapper`, if any.
    fn existing(
        &self,
        mapper: RbdMapper,
        props: &RbdProperties,
        deadline: Instant,
    ) -> Result<Option<String>> {
        if mapper == RbdMapper::Krbd {
            // udev's link is the cheap answer; the listing is the authoritative one.
            let mut link = self.host().dev("rbd").join(&props.image.pool);
            if let Some(ns) = &props.image.namespace {
                link = link.join(ns);
            }
            let link = link.join(&props.image.image);
            if let Some(t) = self.host().canonical(&link)? {
                if let Some(n) = t.file_name().and_then(|n| n.to_str()) {
                    return Ok(Some(format!("/dev/{n}")));
                }
            }
        }
        Ok(cli::mappings(self.runner(), mapper, deadline)?
            .into_iter()
            .find(|m| m.maps(&props.image))
            .map(|m| m.device))
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

    fn connect(&self, props: &RbdProperties) -> Result<DeviceRecord> {
        if !self.opts.rbd_local_attach {
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
        let started = Instant::now();
        let deadline = started + self.opts.operation_timeout;
        let mapper = self.opts.rbd_mapper;
        let _volume = self.locks.lock(&props.volume_key(), LockMode::Exclusive)?;
        let _image = self
            .locks
            .lock(&image_lock_key(&props.image), LockMode::Exclusive)?;
        if let Some(dev) = self.existing(mapper, props, deadline)? {
            tracing::info!(device = %dev, "image already mapped; reusing it");
            return Ok(self.record(props, mapper, &dev));
        }
        let files = CephFiles::write(props)?;
        let mut watch = DeviceWatch::open(self.host(), &["block"]);
        let read_only = props.access_mode == crate::model::connection::AccessMode::Ro;
        let device = cli::map(self.runner(), mapper, props, &files, read_only, deadline)?;
        drop(files);
        tracing::info!(phase = "map", elapsed_ms = ms(started.elapsed()), %device, "image mapped");
        let name = dev_name(&device).to_string();
        let host = self.host();
        if let Err(e) = watch.wait_for(&format!("{device} for {}", props.image), deadline, || {
            Ok(block::is_ready(host, &name)?.then_some(()))
        }) {
            let cleanup = Instant::now() + self.opts.cleanup_timeout;
            if let Err(u) = cli::unmap(self.runner(), mapper, &device, true, cleanup) {
                tracing::warn!(error = %u.chain(), "undo: unmapping failed");
            }
            return Err(e);
        }
        tracing::info!(phase = "device_found", elapsed_ms = ms(started.elapsed()), %device, "device ready");
        Ok(self.record(props, mapper, &device))
    }

    fn disconnect(
        &self,
        props: &RbdProperties,
        record: Option<&DeviceRecord>,
        opts: DisconnectOptions,
    ) -> Result<()> {
        if !self.opts.rbd_local_attach && record.is_none_or(|r| r.kind == DeviceKind::Network) {
            return Ok(());
        }
        let started = Instant::now();
        let deadline = started + self.opts.operation_timeout;
        let _volume = self.locks.lock(&props.volume_key(), LockMode::Exclusive)?;
        let _image = self
            .locks
            .lock(&image_lock_key(&props.image), LockMode::Exclusive)?;
        let recorded = record.and_then(|r| r.rbd.as_ref()).map(|r| r.mapper);
        // The recorded mapper first, then the other: a record from another configuration
        // (or none) must still find the mapping.
        let mut mappers = vec![recorded.unwrap_or(self.opts.rbd_mapper)];
        for m in [RbdMapper::Krbd, RbdMapper::Nbd] {
            if !mappers.contains(&m) {
                mappers.push(m);
            }
        }
        for mapper in mappers {
            let devices = match cli::mappings(self.runner(), mapper, deadline) {
                Ok(all) => all
                    .into_iter()
                    .filter(|m| m.maps(&props.image))
                    .map(|m| m.device)
                    .collect::<Vec<_>>(),
                // The other mapper may simply not be installed.
                Err(Error::CommandNotFound { .. }) if Some(mapper) != recorded => continue,
                Err(e) => return Err(e),
            };
            for device in devices {
                self.unmap(mapper, &device, opts.force, deadline)?;
            }
        }
        self.registry.remove(&props.volume_key())?;
        tracing::info!(
            phase = "disconnected",
            elapsed_ms = ms(started.elapsed()),
            "volume disconnected"
        );
        Ok(())
    }

    fn unmap(&self, mapper: RbdMapper, device: &str, force: bool, deadline: Instant) -> Result<()> {
        let host = self.host();
        let name = dev_name(device).to_string();
        let mut watch = DeviceWatch::open(host, &["block"]);
        cli::unmap(self.runner(), mapper, device, force, deadline)?;
        // An nbd device stays in sysfs, disconnected (size 0); a krbd one goes away.
        watch.wait_for(&format!("unmap of {device}"), deadline, || {
            let gone = !block::exists(host, &name) || block::size_bytes(host, &name)? == 0;
            Ok(gone.then_some(()))
        })
    }

    fn extend(&self, props: &RbdProperties) -> Result<u64> {
        let deadline = Instant::now() + self.opts.operation_timeout;
        let files = CephFiles::write(props)?;
        let size = cli::image_size(self.runner(), props, &files, deadline)?;
        drop(files);
        if !self.opts.rbd_local_attach {
            return Ok(size);
        }
        let Some(device) = self.existing(self.opts.rbd_mapper, props, deadline)? else {
            return Err(Error::VolumeDeviceNotFound {
                tried: vec![crate::error::AttemptFailure {
                    target: props.image.to_string(),
                    reason: "not mapped".into(),
                }],
            });
        };
        let host = self.host();
        let name = dev_name(&device).to_string();
        let mut watch = DeviceWatch::open(host, &["block"]);
        // The client follows the image header by itself; wait for it to catch up.
        let settle = deadline.min(Instant::now() + self.opts.scan_timeout);
        watch.wait_for(&format!("{device} to reach {size} bytes"), settle, || {
            Ok((block::size_bytes(host, &name)? >= size).then_some(()))
        })?;
        tracing::info!(size, %device, "volume extended");
        Ok(size)
    }
}

impl Connector for RbdConnector {
    fn protocol(&self) -> Protocol {
        Protocol::Rbd
    }

    fn connect_volume(&self, info: &ConnectionInfo) -> Result<DeviceRecord> {
        let props = self.props(info)?;
        let span = tracing::info_span!("connect_volume", protocol = "rbd", volume = ?props.volume_id, image = %props.image);
        let _e = span.enter();
        self.connect(props)
    }

    fn disconnect_volume(
        &self,
        info: &ConnectionInfo,
        device: Option<&DeviceRecord>,
        options: DisconnectOptions,
    ) -> Result<()> {
        let props = self.props(info)?;
        let span = tracing::info_span!("disconnect_volume", protocol = "rbd", volume = ?props.volume_id, image = %props.image, force = options.force);
        let _e = span.enter();
        self.disconnect(props, device, options)
    }

    fn extend_volume(&self, info: &ConnectionInfo) -> Result<u64> {
        let props = self.props(info)?;
        let span = tracing::info_span!("extend_volume", protocol = "rbd", volume = ?props.volume_id, image = %props.image);
        let _e = span.enter();
        self.extend(props)
    }

    fn get_volume_paths(&self, info: &ConnectionInfo) -> Result<Vec<PathBuf>> {
        let props = self.props(info)?;
        if !self.opts.rbd_local_attach {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + self.opts.operation_timeout;
        Ok(self
            .existing(self.opts.rbd_mapper, props, deadline)?
            .map(PathBuf::from)
            .into_iter()
            .collect())
    }

    fn get_search_path(&self) -> Option<PathBuf> {
        None
    }

    fn get_all_available_volumes(&self) -> Result<Vec<PathBuf>> {
        let deadline = Instant::now() + self.opts.operation_timeout;
        Ok(
            cli::mappings(self.runner(), self.opts.rbd_mapper, deadline)?
                .into_iter()
                .map(|m| PathBuf::from(m.device))
                .collect(),
        )
    }

    fn check_valid_device(&self, path: &Path) -> Result<()> {
        block::check_readable(&self.host().map_dev_path(path))
    }
}
