//! How a connector behaves: the options every protocol shares, and one options type per
//! protocol for what only that protocol reads.

use std::path::PathBuf;
use std::time::Duration;

use crate::connector::HostContext;
use crate::model::rbd::RbdMapper;
use crate::platform::cmd::Cancel;
use crate::platform::lock::LockDir;

/// Whether a connect attaches every path and assembles a dm-multipath map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MultipathMode {
    /// One path (the default).
    #[default]
    Off,
    /// Every path and a multipath map; a single path when the map cannot be made.
    Optional,
    /// Every path and a multipath map, or the connect fails.
    Enforced,
}

impl MultipathMode {
    /// The mode that Cinder's pair of flags (`multipath`, `enforce_multipath`) asks for;
    /// enforcing without multipath means no multipath, as in os-brick.
    pub fn from_flags(multipath: bool, enforce: bool) -> Self {
        match (multipath, enforce) {
            (false, _) => MultipathMode::Off,
            (true, false) => MultipathMode::Optional,
            (true, true) => MultipathMode::Enforced,
        }
    }

    /// Multipath is on (optional or enforced).
    pub fn is_on(self) -> bool {
        self != MultipathMode::Off
    }

    /// A connect must fail rather than fall back to a single path.
    pub fn is_enforced(self) -> bool {
        self == MultipathMode::Enforced
    }
}

/// What only the iSCSI (and iSER) connector reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IscsiOptions {
    /// Login timeout per attempt (`node.conn[0].timeo.login_timeout`), written into the
    /// node record before login.
    pub login_timeout: Duration,
    /// Login retries (`node.session.initial_login_retry_max`). With
    /// [`IscsiOptions::login_timeout`] it bounds how long a dead portal holds up a connect
    /// before the next path is tried: about `login_timeout × (login_retries + 1)`.
    pub login_retries: u32,
    /// How long a multipath connect waits for the dm map once a path is up, within the
    /// operation deadline, before falling back to the single path.
    pub multipath_timeout: Duration,
    /// How long a multipath connect waits for paths still logging in once the map is
    /// usable; later ones are stopped.
    pub extra_path_grace: Duration,
    /// The open-iscsi iface for node records (`default`, or `iser` for iSER); `None` picks
    /// from the protocol.
    pub iface: Option<String>,
    /// How many paths a multipath connect logs in to at once (default 16, at least 1);
    /// the others wait for a free slot, within the operation deadline.
    pub max_parallel_logins: usize,
    /// The most paths a connect accepts (default 64): a connection_info whose target
    /// lists are longer, or a sendtargets discovery reply offering more portals for the
    /// volume's target, fails the connect with [`crate::Error::TooManyTargets`] before any
    /// login.
    pub max_targets: usize,
}

impl IscsiOptions {
    /// The default for [`IscsiOptions::max_parallel_logins`].
    pub const DEFAULT_MAX_PARALLEL_LOGINS: usize = 16;

    /// The default for [`IscsiOptions::max_targets`].
    pub const DEFAULT_MAX_TARGETS: usize = 64;

    /// The default budgets: 5 s login timeout, 1 retry, 15 s for the map, 5 s grace; at
    /// most 16 logins at once and 64 paths.
    pub fn new() -> Self {
        IscsiOptions {
            login_timeout: Duration::from_secs(5),
            login_retries: 1,
            multipath_timeout: Duration::from_secs(15),
            extra_path_grace: Duration::from_secs(5),
            iface: None,
            max_parallel_logins: Self::DEFAULT_MAX_PARALLEL_LOGINS,
            max_targets: Self::DEFAULT_MAX_TARGETS,
        }
    }

    /// Sets how many paths log in at once (0 is taken as 1).
    pub fn max_parallel_logins(mut self, n: usize) -> Self {
        self.max_parallel_logins = n;
        self
    }

    /// Sets the most paths a connect accepts.
    pub fn max_targets(mut self, n: usize) -> Self {
        self.max_targets = n;
        self
    }

    /// Sets the iface.
    pub fn iface(mut self, iface: impl Into<String>) -> Self {
        self.iface = Some(iface.into());
        self
    }

    /// Sets the login timeout per attempt.
    pub fn login_timeout(mut self, t: Duration) -> Self {
        self.login_timeout = t;
        self
    }

    /// Sets how long a multipath connect waits for the map.
    pub fn multipath_timeout(mut self, t: Duration) -> Self {
        self.multipath_timeout = t;
        self
    }

    /// Sets the grace for paths still logging in once the map is usable.
    pub fn extra_path_grace(mut self, t: Duration) -> Self {
        self.extra_path_grace = t;
        self
    }
}

impl Default for IscsiOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// What only the NVMe-oF connector reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmeOptions {
    /// How long the kernel keeps reconnecting a lost controller before giving it up
    /// (the connect's `ctrl_loss_tmo` option, `nvme connect --ctrl-loss-tmo`).
    pub ctrl_loss_timeout: Duration,
}

impl NvmeOptions {
    /// The default: 600 s controller-loss timeout.
    pub fn new() -> Self {
        NvmeOptions {
            ctrl_loss_timeout: Duration::from_secs(600),
        }
    }
}

impl Default for NvmeOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// Where an RBD connect puts the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RbdAttach {
    /// Map the image on this host (the default): a block device record.
    #[default]
    Local,
    /// Map nothing: a network record for the hypervisor to open the image itself.
    Network,
}

/// What only the Ceph RBD connector reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RbdOptions {
    /// How images are mapped: kernel rbd (default) or rbd-nbd.
    pub mapper: RbdMapper,
    /// Map on this host, or hand the hypervisor a network record.
    pub attach: RbdAttach,
}

impl RbdOptions {
    /// Kernel rbd, mapped on this host.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the mapper.
    pub fn mapper(mut self, mapper: RbdMapper) -> Self {
        self.mapper = mapper;
        self
    }

    /// Sets where the image goes.
    pub fn attach(mut self, attach: RbdAttach) -> Self {
        self.attach = attach;
        self
    }
}

/// How a connector behaves. Build with [`ConnectorOptions::new`] and the setters:
///
/// ```
/// use std::time::Duration;
/// use hostbrick::iscsi::IscsiOptions;
/// use hostbrick::{ConnectorOptions, MultipathMode};
///
/// let options = ConnectorOptions::new()
///     .multipath(MultipathMode::Enforced)
///     .operation_timeout(Duration::from_secs(60))
///     .iscsi(IscsiOptions::new().iface("iser"));
/// assert!(options.multipath.is_enforced());
/// ```
#[derive(Debug, Clone)]
pub struct ConnectorOptions {
    /// The host and command runner.
    pub context: HostContext,
    /// Single path, or every path and a dm-multipath map.
    pub multipath: MultipathMode,
    /// The deadline of one whole operation (connect, disconnect, extend): logins, scans and
    /// every device wait share it.
    pub operation_timeout: Duration,
    /// How long a device may take to appear (or show its new size) after its targeted scan,
    /// within the operation deadline. The kernel scans synchronously, so a LUN missing after
    /// this is not offered by the target (wrong LUN, no ACL) and the path fails early.
    pub scan_timeout: Duration,
    /// How long cleanup after a failure may take, counted from when it starts (the
    /// operation's own deadline may already have passed).
    pub cleanup_timeout: Duration,
    /// Where lock files go; default `locks/` in the host's private state directory
    /// ([`Host::state_dir`](crate::Host::state_dir), `/run/hostbrick/locks`). A directory
    /// given here is created mode 0700 and must pass the same checks: a real directory,
    /// owned by the running user, not writable by the group or others.
    pub lock_dir: Option<PathBuf>,
    /// Stops the connector's operations when it fires (see [`ConnectorOptions::cancel`]).
    pub cancel: Option<Cancel>,
    /// iSCSI and iSER.
    pub iscsi: IscsiOptions,
    /// NVMe-oF.
    pub nvme: NvmeOptions,
    /// Ceph RBD.
    pub rbd: RbdOptions,
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
            multipath: MultipathMode::Off,
            operation_timeout: Duration::from_secs(120),
            scan_timeout: Duration::from_secs(5),
            cleanup_timeout: Duration::from_secs(60),
            lock_dir: None,
            cancel: None,
            iscsi: IscsiOptions::new(),
            nvme: NvmeOptions::new(),
            rbd: RbdOptions::new(),
        }
    }

    /// Sets the multipath mode.
    pub fn multipath(mut self, mode: MultipathMode) -> Self {
        self.multipath = mode;
        self
    }

    /// Sets the operation deadline.
    pub fn operation_timeout(mut self, t: Duration) -> Self {
        self.operation_timeout = t;
        self
    }

    /// Sets how long a scanned device may take to appear.
    pub fn scan_timeout(mut self, t: Duration) -> Self {
        self.scan_timeout = t;
        self
    }

    /// Sets the lock directory.
    pub fn lock_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.lock_dir = Some(dir.into());
        self
    }

    /// Lets `cancel` stop the operations of connectors made with these options: once it
    /// fires, a running connect, disconnect or extend stops at its next wait (a device, a
    /// lock, a retry: within about 25 ms) or command (killed), and one not yet started
    /// does not start; each fails with [`Error::Cancelled`](crate::Error::Cancelled).
    ///
    /// A cancelled connect undoes what it had made (the iSCSI sessions it logged in, the
    /// devices it scanned, the multipath map, NVMe-oF controllers, an RBD mapping) as after
    /// any failed connect: shielded from the cancel, within
    /// [`cleanup_timeout`](ConnectorOptions::cleanup_timeout). A cancelled disconnect stops
    /// between steps (`force` does not carry on past a cancel); running it again finishes.
    ///
    /// A few steps are not cut short, and the cancel is seen when they end: an iSCSI login
    /// (iscsid carries on logging in when iscsiadm is killed, so a killed login could leave
    /// a session nobody logs out; bounded by the login timeout and retries), an RBD map,
    /// the write of an NVMe-oF connect to `/dev/nvme-fabrics` (it blocks in the kernel;
    /// checked before it starts), and the flush of a device's buffers. A cancel that comes
    /// after the last of a connect's waits does not undo a connect that succeeded.
    ///
    /// The cancel is one-shot: a connector whose cancel has fired fails every operation.
    /// Give each connector (or each call, with a connector made for it) the cancel its
    /// caller may want to stop, e.g. one for the whole service to stop it on `SIGTERM`.
    ///
    /// ```
    /// use hostbrick::{Cancel, ConnectorOptions};
    ///
    /// let stop = Cancel::new();
    /// let options = ConnectorOptions::new().cancel(stop.clone());
    /// // ... connectors made with `options`; on shutdown, from any thread:
    /// stop.cancel();
    /// # assert!(options.cancel.is_some_and(|c| c.is_cancelled()));
    /// ```
    pub fn cancel(mut self, cancel: Cancel) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// Sets the iSCSI options.
    pub fn iscsi(mut self, iscsi: IscsiOptions) -> Self {
        self.iscsi = iscsi;
        self
    }

    /// Sets the NVMe-oF options.
    pub fn nvme(mut self, nvme: NvmeOptions) -> Self {
        self.nvme = nvme;
        self
    }

    /// Sets the RBD options.
    pub fn rbd(mut self, rbd: RbdOptions) -> Self {
        self.rbd = rbd;
        self
    }

    /// The lock directory connectors (and the attach orchestrator) use.
    pub fn locks(&self) -> LockDir {
        match &self.lock_dir {
            Some(dir) => LockDir::new(dir.clone()),
            None => LockDir::default_for(&self.context.host),
        }
    }
}

impl Default for ConnectorOptions {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipath_flags_read_as_cinder_means_them() {
        assert_eq!(MultipathMode::from_flags(false, false), MultipathMode::Off);
        assert_eq!(MultipathMode::from_flags(false, true), MultipathMode::Off);
        assert_eq!(
            MultipathMode::from_flags(true, false),
            MultipathMode::Optional
        );
        assert_eq!(
            MultipathMode::from_flags(true, true),
            MultipathMode::Enforced
        );
        assert!(!MultipathMode::Off.is_on());
        assert!(MultipathMode::Optional.is_on() && !MultipathMode::Optional.is_enforced());
        assert!(MultipathMode::Enforced.is_on() && MultipathMode::Enforced.is_enforced());
    }
}
