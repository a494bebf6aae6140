//! The NVMe-oF connector (TCP, RDMA).
//!
//! Connect, per portal: reuse a live controller for (subsystem, transport, address, port,
//! host NQN) and rescan it, else `nvme connect` with the host NQN and host id; then the
//! namespace by UUID, NGUID or namespace id, awaited through udev, as its multipath head
//! device. With native multipath every portal is connected, otherwise the first that works.
//! A replicated volume gets an MD RAID1 over its replicas. A controller is shared by every
//! namespace of its subsystem, so connects record themselves in the attachment registry and
//! a disconnect only drops a controller no other attachment needs.

pub(crate) mod audit;
mod cli;
mod controllers;
mod identity;
mod namespaces;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use crate::model::nvme::{
    NamespaceId, Nqn, NvmePortal, NvmeProperties, NvmeTarget, NvmeTransport,
};
pub use cli::{is_already_connected, parse_id_ns_size, ConnectOutcome};
pub use controllers::{
    find_controller, native_multipath, parse_address, Controller, ControllerFinder,
};
pub use identity::{
    conflicting_controller, host_identity, system_uuid, IdentitySource, NvmeHostIdentity,
};
pub use namespaces::{find_namespace, head_name, Namespace};

use serde::{Deserialize, Serialize};

use crate::connector::{Connector, ConnectorOptions, DisconnectOptions};
use crate::devices::block;
use crate::devices::md;
use crate::error::{AttemptFailure, Error, Failures, Result};
use crate::model::connection::{ConnectionInfo, Protocol};
use crate::model::record::{DeviceRecord, NvmePathRecord};
use crate::platform::host::Host;
use crate::platform::lock::{LockDir, LockGuard, LockMode};
use crate::platform::registry::Registry;
use crate::platform::wait::DeviceWatch;
use namespaces::{resolve_namespace, Resolved};

/// The NVMe-oF connector. Build it with [`crate::connector_for`].
#[derive(Debug)]
pub struct NvmeConnector {
    opts: ConnectorOptions,
    locks: LockDir,
    registry: Registry,
}

/// The attachment registry's name for NVMe-oF volumes.
const REGISTRY: &str = "nvme";

/// What the registry keeps of an attached NVMe volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Attachment {
    /// The volume's copies (one, or one per replica) with their portals.
    copies: Vec<NvmeTarget>,
}

impl Attachment {
    fn uses(&self, nqn: &str, portal: &NvmePortal) -> bool {
        self.copies
            .iter()
            .any(|c| c.nqn.as_str() == nqn && c.portals.contains(portal))
    }
}

/// One portal that came up.
struct PortalUp {
    record: NvmePathRecord,
    _shared: LockGuard,
}

/// Controllers a failed connect made and must drop again.
#[derive(Default)]
struct Made {
    controllers: Vec<(Nqn, NvmePortal)>,
}

/// The lock connects through one controller share, and its disconnect check takes
/// exclusively (an audit only asks whether anyone holds it).
fn controller_lock_key(nqn: &str, portal: &NvmePortal) -> String {
    format!("nvme-ctrl-{nqn}-{portal}")
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl NvmeConnector {
    /// A connector with these options.
    pub fn new(opts: ConnectorOptions) -> Self {
        NvmeConnector {
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

    fn props<'a>(&self, info: &'a ConnectionInfo) -> Result<&'a NvmeProperties> {
        info.nvme().ok_or_else(|| info.mismatch(Protocol::NvmeOf))
    }

    /// The host NQN and host id to connect with: the storage's `host_nqn` when it named
    /// one, else this host's own.
    fn identity(&self, props: &NvmeProperties) -> Result<(String, String)> {
        let (own_nqn, hostid, _) = identity::saved_identity(self.host())?;
        let hostnqn = props.host_nqn.as_ref().map_or(own_nqn, |n| n.to_string());
        Ok((hostnqn, hostid))
    }

    // ---------------------------------------------------------------- connect

    fn connect(&self, props: &NvmeProperties) -> Result<DeviceRecord> {
        let started = Instant::now();
        let deadline = started + self.opts.operation_timeout;
        let _volume = self.locks.lock(&props.volume_key(), LockMode::Exclusive)?;
        let (hostnqn, hostid) = self.identity(props)?;
        let native = native_multipath(self.host())?;
        let mut made = Made::default();
        let mut ups: Vec<PortalUp> = Vec::new();
        let mut heads: Vec<String> = Vec::new();
        let mut ctrls = ControllerFinder::new(self.host());
        let mut attempt = || -> Result<PathBuf> {
            for copy in props.copies() {
                let (head, copy_ups) = self.connect_copy(
                    props, copy, &hostnqn, &hostid, native, deadline, &mut made, &mut ctrls,
                )?;
                heads.push(head);
                ups.extend(copy_ups);
            }
            match (&props.alias, heads.len()) {
                (Some(alias), n) if n > 1 => {
                    let members: Vec<PathBuf> = heads
                        .iter()
                        .map(|h| PathBuf::from("/dev").join(h))
                        .collect();
                    md::assemble_or_create(self.runner(), alias, &members, deadline)
                }
                _ => Ok(PathBuf::from("/dev").join(&heads[0])),
            }
        };
        let path = match attempt() {
            Ok(p) => p,
            Err(e) => {
                drop(ups);
                self.undo(&made, &hostnqn);
                return Err(e);
            }
        };
        let attachment = Attachment {
            copies: props.copies().into_iter().cloned().collect(),
        };
        if let Err(e) = self.registry.put(&props.volume_key(), &attachment) {
            drop(ups);
            self.undo(&made, &hostnqn);
            return Err(e);
        }
        let record = DeviceRecord {
            nvme_paths: ups.iter().map(|u| u.record.clone()).collect(),
            md_alias: props.alias.clone().filter(|_| heads.len() > 1),
            ..DeviceRecord::block(Protocol::NvmeOf, path, props.volume_id.clone())
        };
        drop(ups);
        tracing::info!(phase = "connected", elapsed_ms = ms(started.elapsed()), path = %record.path.display(), "volume connected");
        Ok(record)
    }

    /// Connects one copy of the volume: every portal with native multipath (all must work
    /// when multipath is enforced), else the first portal that works. Returns the head
    /// device and the portals that came up.
    #[allow(clippy::too_many_arguments)]
    fn connect_copy(
        &self,
        props: &NvmeProperties,
        copy: &NvmeTarget,
        hostnqn: &str,
        hostid: &str,
        native: bool,
        deadline: Instant,
        made: &mut Made,
        ctrls: &mut ControllerFinder<'_>,
    ) -> Result<(String, Vec<PortalUp>)> {
        let mut ups: Vec<PortalUp> = Vec::new();
        let mut tried = Vec::new();
        // An attached namespace shows which controllers reach it: those are checked first.
        ctrls.hint_namespace(&copy.namespace)?;
        for portal in &copy.portals {
            if Instant::now() >= deadline {
                break;
            }
            let known = ups.first().map(|u| u.record.namespace.clone());
            match self.connect_portal(
                copy,
                portal,
                hostnqn,
                hostid,
                known.as_deref(),
                deadline,
                made,
                ctrls,
            ) {
                Ok(up) => {
                    ups.push(up);
                    if !native {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(%portal, nqn = %copy.nqn, error = %e.chain(), "portal failed");
                    tried.push(AttemptFailure {
                        target: format!("{portal} {}", copy.nqn),
                        reason: e.chain(),
                    });
                }
            }
        }
        if ups.is_empty() {
            return Err(Error::VolumeDeviceNotFound { tried });
        }
        if native && props.enforce_multipath && !tried.is_empty() {
            return Err(Error::VolumeDeviceNotFound { tried });
        }
        let head = ups[0].record.namespace.clone();
        if let Some(other) = ups.iter().find(|u| u.record.namespace != head) {
            tracing::warn!(first = %head, other = %other.record.namespace, "portals show the namespace under different devices");
        }
        Ok((head, ups))
    }

    /// Brings up one portal. `known_head` is the namespace's head device when an earlier
    /// portal of the same copy found it: a further path of a multipath namespace appears
    /// as a hidden path disk the kernel announces with no uevent, while the head is already
    /// usable.
    #[allow(clippy::too_many_arguments)]
    fn connect_portal(
        &self,
        copy: &NvmeTarget,
        portal: &NvmePortal,
        hostnqn: &str,
        hostid: &str,
        known_head: Option<&str>,
        deadline: Instant,
        made: &mut Made,
        ctrls: &mut ControllerFinder<'_>,
    ) -> Result<PortalUp> {
        let host = self.host();
        let started = Instant::now();
        let shared = self.locks.lock(
            &controller_lock_key(copy.nqn.as_str(), portal),
            LockMode::Shared,
        )?;
        let mut watch = DeviceWatch::open(host, &["nvme", "block"]);
        let ctrl = match ctrls.find(copy.nqn.as_str(), portal, hostnqn)? {
            Some(c) => {
                tracing::debug!(controller = %c.name, "reusing controller; rescanning namespaces");
                match host.write_attr(
                    &host.sys(format!("class/nvme/{}/rescan_controller", c.name)),
                    "1",
                ) {
                    Err(e) if !e.is_not_found() => return Err(e),
                    _ => {}
                }
                c.name
            }
            None => {
                if let Some((other, other_nqn)) =
                    identity::conflicting_controller(host, hostnqn, hostid)?
                {
                    return Err(Error::InvalidArgument {
                        name: "host_nqn".into(),
                        reason: format!("controller {other} already uses host id {hostid} with host NQN {other_nqn}; the kernel refuses {hostnqn} with the same host id"),
                    });
                }
                let args = cli::ConnectArgs {
                    nqn: &copy.nqn,
                    portal,
                    hostnqn,
                    hostid,
                    ctrl_loss_tmo: self.opts.nvme.ctrl_loss_timeout,
                };
                if cli::connect(self.runner(), &args, deadline)? == ConnectOutcome::Connected {
                    made.controllers.push((copy.nqn.clone(), portal.clone()));
                }
                // Each check reads only the controllers that appeared since the last.
                let what = format!("controller for {} at {portal}", copy.nqn);
                watch.wait_for(&what, deadline, || {
                    Ok(ctrls
                        .find(copy.nqn.as_str(), portal, hostnqn)?
                        .map(|c| c.name))
                })?
            }
        };
        tracing::info!(phase = "connect", elapsed_ms = ms(started.elapsed()), controller = %ctrl, "controller ready");
        let what = format!("namespace ({}) of {} on {ctrl}", copy.namespace, copy.nqn);
        let ns = watch.wait_for(&what, deadline, || {
            let found = match resolve_namespace(host, &ctrl, &copy.namespace)? {
                Resolved::Found(ns) => Some(ns),
                Resolved::Missing => None,
                Resolved::Ambiguous(n) => {
                    return Err(Error::InvalidConnectionInfo {
                        field: "data.vol_uuid".into(),
                        reason: format!(
                            "{} has {n} namespaces and the volume names none of them",
                            copy.nqn
                        ),
                    });
                }
            };
            if let Some(ns) = found {
                if block::is_ready(host, &ns.head)? {
                    return Ok(Some(ns));
                }
            }
            match known_head {
                Some(h) if block::is_ready(host, h)? => Ok(Some(Namespace {
                    head: h.to_string(),
                    entry: h.to_string(),
                    nsid: None,
                    uuid: copy.namespace.uuid.clone(),
                    nguid: copy.namespace.nguid.clone(),
                })),
                _ => Ok(None),
            }
        })?;
        tracing::info!(phase = "device_found", elapsed_ms = ms(started.elapsed()), device = %ns.head, "namespace ready");
        Ok(PortalUp {
            record: NvmePathRecord {
                controller: ctrl,
                nqn: copy.nqn.to_string(),
                portal: portal.clone(),
                namespace: ns.head,
                uuid: ns.uuid,
            },
            _shared: shared,
        })
    }

    fn undo(&self, made: &Made, hostnqn: &str) {
        let deadline = Instant::now() + self.opts.cleanup_timeout;
        let mut ctrls = ControllerFinder::new(self.host());
        for (nqn, portal) in &made.controllers {
            if let Err(e) =
                self.release_controller(nqn, portal, hostnqn, None, &mut ctrls, deadline)
            {
                tracing::warn!(error = %e.chain(), "undo: dropping the controller failed");
            }
        }
    }

    // ---------------------------------------------------------------- disconnect

    /// Drops the controller serving `nqn` at `portal` unless another attachment uses it
    /// (or another of its namespaces is held open by a device mapper or MD array).
    fn release_controller(
        &self,
        nqn: &Nqn,
        portal: &NvmePortal,
        hostnqn: &str,
        ours: Option<&str>,
        ctrls: &mut ControllerFinder<'_>,
        deadline: Instant,
    ) -> Result<()> {
        let host = self.host();
        let _x = self.locks.lock(
            &controller_lock_key(nqn.as_str(), portal),
            LockMode::Exclusive,
        )?;
        let Some(ctrl) = ctrls.find(nqn.as_str(), portal, hostnqn)? else {
            return Ok(());
        };
        let users: Vec<String> = self
            .registry
            .entries::<Attachment>()?
            .into_iter()
            .filter(|(_, a)| a.uses(nqn.as_str(), portal))
            .map(|(k, _)| k)
            .collect();
        if !users.is_empty() {
            tracing::debug!(controller = %ctrl.name, ?users, "controller still used by other attachments; keeping it");
            return Ok(());
        }
        for ns in namespaces::namespaces(host, &ctrl.name)? {
            if Some(ns.head.as_str()) != ours && !block::holders(host, &ns.head)?.is_empty() {
                tracing::debug!(controller = %ctrl.name, namespace = %ns.head, "another namespace is held; keeping the controller");
                return Ok(());
            }
        }
        let started = Instant::now();
        let mut watch = DeviceWatch::open(host, &["nvme", "block"]);
        cli::disconnect(self.runner(), &ctrl.name, deadline)?;
        watch.wait_for(
            &format!("removal of controller {}", ctrl.name),
            deadline,
            || Ok((!host.sys(format!("class/nvme/{}", ctrl.name)).exists()).then_some(())),
        )?;
        tracing::info!(phase = "disconnect", elapsed_ms = ms(started.elapsed()), controller = %ctrl.name, "controller removed");
        Ok(())
    }

    /// The volume's head devices now, from the host (and the record's when it still names
    /// the same namespace).
    fn heads(
        &self,
        props: &NvmeProperties,
        hostnqn: &str,
        ctrls: &mut ControllerFinder<'_>,
    ) -> Result<Vec<String>> {
        let host = self.host();
        let mut out: Vec<String> = Vec::new();
        for copy in props.copies() {
            ctrls.hint_namespace(&copy.namespace)?;
            for portal in &copy.portals {
                let Some(c) = ctrls.find(copy.nqn.as_str(), portal, hostnqn)? else {
                    continue;
                };
                // Not found, or an empty id among several namespaces: the next portal.
                if let Resolved::Found(ns) = resolve_namespace(host, &c.name, &copy.namespace)? {
                    if !out.contains(&ns.head) {
                        out.push(ns.head);
                    }
                    break;
                }
            }
        }
        Ok(out)
    }

    fn disconnect(
        &self,
        props: &NvmeProperties,
        record: Option<&DeviceRecord>,
        opts: DisconnectOptions,
    ) -> Result<()> {
        let started = Instant::now();
        let deadline = started + self.opts.operation_timeout;
        let _volume = self.locks.lock(&props.volume_key(), LockMode::Exclusive)?;
        let (hostnqn, _) = self.identity(props)?;
        let mut failures = Failures::new(opts.ignore_errors);
        let mut ctrls = ControllerFinder::new(self.host());
        for p in record.map_or(&[][..], |r| &r.nvme_paths[..]) {
            ctrls.hint(&p.controller);
        }
        let heads = self.heads(props, &hostnqn, &mut ctrls)?;
        let alias = props
            .alias
            .as_deref()
            .filter(|_| props.replicas.len() > 1)
            .or_else(|| record.and_then(|r| r.md_alias.as_deref()));
        if let Some(alias) = alias {
            let r = self
                .flush(&md::array_path(alias), opts.force, deadline)
                .and_then(|()| md::stop(self.runner(), self.host(), alias, deadline));
            failures.step(r)?;
        }
        for h in &heads {
            failures.step(self.flush(&PathBuf::from("/dev").join(h), opts.force, deadline))?;
        }
        failures.step(self.registry.remove(&props.volume_key()))?;
        for copy in props.copies() {
            for portal in &copy.portals {
                let ours = heads.first().map(String::as_str);
                failures.step(
                    self.release_controller(
                        &copy.nqn, portal, &hostnqn, ours, &mut ctrls, deadline,
                    ),
                )?;
            }
        }
        tracing::info!(
            phase = "disconnected",
            elapsed_ms = ms(started.elapsed()),
            "volume disconnected"
        );
        failures.finish()
    }

    fn flush(&self, dev: &Path, force: bool, deadline: Instant) -> Result<()> {
        if !self.host().map_dev_path(dev).exists() {
            return Ok(());
        }
        block::flush_before_removal(self.runner(), dev, force, deadline)
    }

    // ---------------------------------------------------------------- extend

    fn extend(&self, props: &NvmeProperties) -> Result<u64> {
        let deadline = Instant::now() + self.opts.operation_timeout;
        let host = self.host();
        let _volume = self.locks.lock(&props.volume_key(), LockMode::Exclusive)?;
        let (hostnqn, _) = self.identity(props)?;
        let mut ctrls = ControllerFinder::new(host);
        let heads = self.heads(props, &hostnqn, &mut ctrls)?;
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
        let want = cli::namespace_size(self.runner(), &dev, deadline)?;
        let settle = deadline.min(Instant::now() + self.opts.scan_timeout);
        let size = watch.wait_for(&format!("{head} to reach {want} bytes"), settle, || {
            let now = block::size_bytes(host, head)?;
            Ok((now == want).then_some(now))
        })?;
        tracing::info!(size, device = %head, "volume extended");
        Ok(size)
    }
}

impl Connector for NvmeConnector {
    fn protocol(&self) -> Protocol {
        Protocol::NvmeOf
    }

    fn connect_volume(&self, info: &ConnectionInfo) -> Result<DeviceRecord> {
        let props = self.props(info)?;
        let span = tracing::info_span!("connect_volume", protocol = "nvmeof", volume = ?props.volume_id, nqn = %props.target.nqn);
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
        let span = tracing::info_span!("disconnect_volume", protocol = "nvmeof", volume = ?props.volume_id, nqn = %props.target.nqn, force = options.force, ignore_errors = options.ignore_errors);
        let _e = span.enter();
        self.disconnect(props, device, options)
    }

    fn extend_volume(&self, info: &ConnectionInfo) -> Result<u64> {
        let props = self.props(info)?;
        let span = tracing::info_span!("extend_volume", protocol = "nvmeof", volume = ?props.volume_id, nqn = %props.target.nqn);
        let _e = span.enter();
        self.extend(props)
    }

    fn get_volume_paths(&self, info: &ConnectionInfo) -> Result<Vec<PathBuf>> {
        let props = self.props(info)?;
        let (hostnqn, _) = self.identity(props)?;
        Ok(self
            .heads(props, &hostnqn, &mut ControllerFinder::new(self.host()))?
            .into_iter()
            .map(|h| PathBuf::from("/dev").join(h))
            .collect())
    }

    fn get_search_path(&self) -> Option<PathBuf> {
        Some(PathBuf::from("/dev"))
    }

    fn get_all_available_volumes(&self) -> Result<Vec<PathBuf>> {
        let host = self.host();
        Ok(host
            .list_dir(&host.sys("block"))?
            .into_iter()
            .filter(|n| head_name(n).as_deref() == Some(n.as_str()))
            .map(|n| PathBuf::from("/dev").join(n))
            .collect())
    }

    fn check_valid_device(&self, path: &Path) -> Result<()> {
        block::check_readable(&self.host().map_dev_path(path))
    }
}
