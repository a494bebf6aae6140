//! The connector interface: the [`Connector`] trait every protocol serves, the host it works
//! on ([`HostContext`]), its options, and the operation frame that gives every protocol's
//! operations the same span, deadline, lock and logging.

mod frame;
mod options;

pub(crate) use frame::{ms, Driver, Framed, Operation, VolumeProps};
pub use options::{
    ConnectorOptions, IscsiOptions, MultipathMode, NvmeOptions, RbdAttach, RbdOptions,
};

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Result;
use crate::model::connection::{ConnectionInfo, Protocol};
use crate::model::record::DeviceRecord;
use crate::platform::cmd::{CommandRunner, SystemRunner};
use crate::platform::host::Host;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connectors_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Box<dyn Connector>>();
        check::<ConnectorOptions>();
    }
}
