//! The connector interface, its options and the protocol-keyed factory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::iscsi::IscsiConnector;
use crate::local::LocalConnector;
use crate::model::connection::{ConnectionInfo, Protocol};
use crate::model::record::DeviceRecord;
use crate::nvme::NvmeConnector;
use crate::platform::cmd::{CommandRunner, SystemRunner};
use crate::platform::host::Host;
use crate::platform::lock::LockDir;
use crate::rbd::{RbdConnector, RbdMapper};

/// The host a connector works on: its file roots and the runner for its commands.
#[derive(Clone)]
pub struct HostContext {
    /// Where sysfs, /dev, /etc and /run are.
    pub host: Host,
    /// How external commands run.
    pub runner: Arc<dyn CommandRunner>,
}

impl HostContext {
    /// The running system with the system runner.
    pub fn system() -> Self {
        HostContext {
            host: Host::system(),
            runner: Arc::new(SystemRunner::new()),
        }
    }

    /// A given host and runner.
    pub fn new(host: Host, runner: Arc<dyn CommandRunner>) -> Self {
        HostContext { host, runner }
    }
}

impl fmt::Debug for HostContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostContext")
            .field("host", &self.host)
            .field("runner", &self.runner)
            .finish()
    }
}

/// How a connector behaves. Build with [`ConnectorOptions::new`] and the setters, or start
/// from a preset.
#[derive(Debug, Clone)]
pub struct ConnectorOptions {
    /// The host and command runner.
    pub context: HostContext,
    /// Attach every path and assemble a dm-multipath map.
    pub use_multipath: bool,
    /// Fail rather than fall back to a single path when the map cannot be made.
    pub enforce_multipath: bool,
    /// The deadline of one whole operation (connect, disconnect, extend): logins, scans and
    /// every device wait share it.
    pub operation_timeout: Duration,
    /// How long a LUN may take to appear after its targeted scan, within the operation
    /// deadline. The kernel scans synchronously, so a LUN missing after this is not
    /// offered by the target (wrong LUN, no ACL) and the path fails early.
    pub scan_timeout: Duration,
    /// iSCSI login timeout per attempt (`node.conn[0].timeo.login_timeout`), written into
    /// the node record before login.
    pub login_timeout: Duration,
    /// iSCSI login retries (`node.session.initial_login_retry_max`). With
    /// [`ConnectorOptions::login_timeout`] it bounds how long a dead portal holds up a
    /// connect before the next path is tried: about `login_timeout × (login_retries + 1)`.
    pub login_retries: u32,
    /// How long a multipath connect waits for the dm map once a path is up, within the
    /// operation deadline, before falling back to the single path.
    pub multipath_timeout: Duration,
    /// How long a multipath connect waits for paths still logging in once the map is
    /// usable; later ones are stopped.
    pub extra_path_grace: Duration,
    /// The open-iscsi iface for node records (`default`, or `iser` for iSER).
    pub iscsi_iface: Option<String>,
    /// Where lock files go; default `/run/lock/hostbrick` under the host's /run.
    pub lock_dir: Option<PathBuf>,
    /// NVMe-oF: how long the kernel keeps reconnecting a lost controller before giving it
    /// up (`nvme connect --ctrl-loss-tmo`).
    pub nvme_ctrl_loss_timeout: Duration,
    /// How RBD images are mapped: kernel rbd (default) or rbd-nbd.
    pub rbd_mapper: RbdMapper,
    /// Map RBD images on this host (default). When false, an RBD connect maps nothing and
    /// returns a network record for the hypervisor to open the image itself.
    pub rbd_local_attach: bool,
    /// How long cleanup after a failure may take, counted from when it starts (the
    /// operation's own deadline may already have passed).
    pub cleanup_timeout: Duration,
}

impl ConnectorOptions {
    /// Single path, on the running system, with the default budgets.
    pub fn new() -> Self {
        Self::with_context(HostContext::system())
    }

    /// Defaults on a given host and runner.
    pub fn with_context(context: HostContext) -> Self {
        ConnectorOptions {
            context,
            use_multipath: false,
            enforce_multipath: false,
            operation_timeout: Duration::from_secs(120),
            scan_timeout: Duration::from_secs(5),
            login_timeout: Duration::from_secs(5),
            login_retries: 1,
            multipath_timeout: Duration::from_secs(15),
            extra_path_grace: Duration::from_secs(5),
            iscsi_iface: None,
            lock_dir: None,
            cleanup_timeout: Duration::from_secs(60),
            nvme_ctrl_loss_timeout: Duration::from_secs(600),
            rbd_mapper: RbdMapper::Krbd,
            rbd_local_attach: true,
        }
    }

    /// Preset: multipath on.
    pub fn multipath(mut self, enforce: bool) -> Self {
        self.use_multipath = true;
        self.enforce_multipath = enforce;
        self
    }

    /// Sets the operation deadline.
    pub fn operation_timeout(mut self, t: Duration) -> Self {
        self.operation_timeout = t;
        self
    }

    /// Sets how long a scanned LUN may take to appear.
    pub fn scan_timeout(mut self, t: Duration) -> Self {
        self.scan_timeout = t;
        self
    }

    /// Sets the iSCSI iface.
    pub fn iscsi_iface(mut self, iface: impl Into<String>) -> Self {
        self.iscsi_iface = Some(iface.into());
        self
    }

    /// Sets the lock directory.
    pub fn lock_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.lock_dir = Some(dir.into());
        self
    }

    /// The lock directory connectors (and the attach orchestrator) use.
    pub fn locks(&self) -> LockDir {
        LockDir::new(
            self.lock_dir
                .clone()
                .unwrap_or_else(|| self.context.host.default_lock_dir()),
        )
    }
}

impl Default for ConnectorOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// How a disconnect treats failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DisconnectOptions {
    /// Remove devices even when flushing their buffers fails, and force-remove a
    /// multipath map that will not flush (data not yet written may be lost).
    pub force: bool,
    /// Carry on past failures and report all of them at the end.
    pub ignore_errors: bool,
}

/// Attaches and detaches volumes of one protocol.
///
/// Every method is synchronous and may block for up to the operation deadline; async
/// callers run it on a blocking pool.
pub trait Connector: Send + Sync + fmt::Debug {
    /// The protocol served.
    fn protocol(&self) -> Protocol;

    /// Attaches the volume and returns its device record.
    fn connect_volume(&self, info: &ConnectionInfo) -> Result<DeviceRecord>;

    /// Detaches the volume. `device` is the record connect returned, when the caller kept
    /// it; without it the connector works from what the host shows. A volume already
    /// detached is success.
    fn disconnect_volume(
        &self,
        info: &ConnectionInfo,
        device: Option<&DeviceRecord>,
        options: DisconnectOptions,
    ) -> Result<()>;

    /// Makes the host see the volume's new size; returns it in bytes.
    fn extend_volume(&self, info: &ConnectionInfo) -> Result<u64>;

    /// The device paths the volume has (or would have) on this host that exist now.
    fn get_volume_paths(&self, info: &ConnectionInfo) -> Result<Vec<PathBuf>>;

    /// The directory where this protocol's device links appear, if any.
    fn get_search_path(&self) -> Option<PathBuf>;

    /// Every volume of this protocol found under the search path.
    fn get_all_available_volumes(&self) -> Result<Vec<PathBuf>>;

    /// Reads the first block of `path`: the device answers I/O.
    fn check_valid_device(&self, path: &Path) -> Result<()>;
}

/// Makes the connector for `protocol`.
///
/// `iser` gives the iSCSI connector with the `iser` iface.
pub fn connector_for(protocol: Protocol, options: ConnectorOptions) -> Result<Box<dyn Connector>> {
    match protocol {
        Protocol::Iscsi | Protocol::Iser => Ok(Box::new(IscsiConnector::new(protocol, options)?)),
        Protocol::NvmeOf => Ok(Box::new(NvmeConnector::new(options))),
        Protocol::Rbd => Ok(Box::new(RbdConnector::new(options))),
        Protocol::Local => Ok(Box::new(LocalConnector::new(options))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factory_by_protocol() {
        let c = connector_for(Protocol::Iscsi, ConnectorOptions::new()).unwrap();
        assert_eq!(c.protocol(), Protocol::Iscsi);
        let c = connector_for(Protocol::Iser, ConnectorOptions::new()).unwrap();
        assert_eq!(c.protocol(), Protocol::Iser);
        let c = connector_for(Protocol::NvmeOf, ConnectorOptions::new()).unwrap();
        assert_eq!(c.protocol(), Protocol::NvmeOf);
        let c = connector_for(Protocol::Rbd, ConnectorOptions::new()).unwrap();
        assert_eq!(c.protocol(), Protocol::Rbd);
        let c = connector_for(Protocol::Local, ConnectorOptions::new()).unwrap();
        assert_eq!(c.protocol(), Protocol::Local);
    }

    #[test]
    fn connectors_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Box<dyn Connector>>();
        check::<ConnectorOptions>();
    }
}
