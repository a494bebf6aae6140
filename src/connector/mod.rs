//! The connector interface: the [`Connector`] trait every protocol serves, the host it works
//! on ([`HostContext`]), its options, and the operation frame that gives every protocol's
//! operations the same span, deadline, lock and logging.

mod frame;
mod options;

pub(crate) use frame::{ms, Driver, Framed, Operation, VolumeProps};
pub use options::{
    ConnectorOptions, ControllerLoss, IscsiOptions, MultipathMode, NvmeOptions, RbdAttach,
    RbdOptions,
};

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
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
    /// Carry on past failures to remove whatever can be removed: devices whose buffers
    /// will not flush, a multipath map that will not flush (force-removed; data not yet
    /// written may be lost), targets that will not log out. The failures are reported
    /// together at the end ([`Error::DisconnectIncomplete`]). os-brick's `force`.
    pub force: bool,
    /// Report the failures `force` carried on past in the result ([`Disconnected`])
    /// instead of failing the call. Without `force` the first failure still ends the
    /// disconnect with its error. os-brick's `ignore_errors`.
    pub ignore_errors: bool,
}

/// What a disconnect that returned successfully left undone.
#[derive(Debug, Default)]
pub struct Disconnected {
    /// The failures `force` carried on past and `ignore_errors` let through, in order
    /// (empty for a clean disconnect). Leftovers may remain on the host for each.
    pub failures: Vec<Error>,
}

impl Disconnected {
    /// True when nothing failed.
    pub fn is_clean(&self) -> bool {
        self.failures.is_empty()
    }

    /// The failures as an error ([`Error::DisconnectIncomplete`]), for a caller to whom
    /// leftovers are a failure whatever `ignore_errors` said.
    pub fn into_result(self) -> Result<()> {
        if self.failures.is_empty() {
            Ok(())
        } else {
            Err(Error::DisconnectIncomplete {
                failures: self.failures,
            })
        }
    }
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
    ) -> Result<Disconnected>;

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
