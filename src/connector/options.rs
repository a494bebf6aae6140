//! How a connector behaves: the options every protocol shares, and one options type per
//! protocol for what only that protocol reads.

use std::path::PathBuf;
use std::time::Duration;

use crate::connector::HostContext;
use crate::error::{Error, Result};
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
    /// How long a multipath connect, once its map is usable, waits for the paths that have
    /// logged in to show their device and join the map. The connect then returns; the
    /// paths still coming up then (and the logins still under way half a second after the
    /// map was usable, or at the end of this grace if shorter) finish in the background of
    /// this process: each joins the map when it is up, or is undone (see
    /// [`crate::iscsi::late_paths_pending`]); a disconnect of the volume stops them first.
    /// A connect that cannot hand them off (a path only sendtargets discovery offered,
    /// which a later disconnect could not know) stops them at the end of this grace, as
    /// every pending path was stopped before background paths existed. Zero hands off at
    /// once.
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
    /// How long the kernel holds I/O while a lost session is being re-established before it
    /// fails the I/O back (`node.session.timeo.replacement_timeout`; default 120 s, open-iscsi's
    /// own; 0 fails it at once). Written into the node record before login, over what
    /// `iscsid.conf` says.
    pub replacement_timeout: Duration,
    /// How often the initiator pings the target with a NOP-Out on an idle connection
    /// (`node.conn[0].timeo.noop_out_interval`; default 5 s; 0 sends none). Written into the
    /// node record before login.
    pub noop_out_interval: Duration,
    /// How long a NOP-Out may go unanswered before the connection is taken as lost and
    /// session recovery starts (`node.conn[0].timeo.noop_out_timeout`; default 5 s). Written
    /// into the node record before login.
    pub noop_out_timeout: Duration,
}

impl IscsiOptions {
    /// The default for [`IscsiOptions::max_parallel_logins`].
    pub const DEFAULT_MAX_PARALLEL_LOGINS: usize = 16;

    /// The default for [`IscsiOptions::max_targets`].
    pub const DEFAULT_MAX_TARGETS: usize = 64;

    /// The default for [`IscsiOptions::replacement_timeout`]: open-iscsi's, 120 s.
    pub const DEFAULT_REPLACEMENT_TIMEOUT: Duration = Duration::from_secs(120);

    /// The default for [`IscsiOptions::noop_out_interval`]: open-iscsi's, 5 s.
    pub const DEFAULT_NOOP_OUT_INTERVAL: Duration = Duration::from_secs(5);

    /// The default for [`IscsiOptions::noop_out_timeout`]: open-iscsi's, 5 s.
    pub const DEFAULT_NOOP_OUT_TIMEOUT: Duration = Duration::from_secs(5);

    /// The default budgets: 5 s login timeout, 1 retry, 15 s for the map, 5 s grace; at
    /// most 16 logins at once and 64 paths; open-iscsi's session timers (120 s replacement
    /// timeout, a NOP-Out every 5 s answered within 5 s).
    pub fn new() -> Self {
        IscsiOptions {
            login_timeout: Duration::from_secs(5),
            login_retries: 1,
            multipath_timeout: Duration::from_secs(15),
            extra_path_grace: Duration::from_secs(5),
            iface: None,
            max_parallel_logins: Self::DEFAULT_MAX_PARALLEL_LOGINS,
            max_targets: Self::DEFAULT_MAX_TARGETS,
            replacement_timeout: Self::DEFAULT_REPLACEMENT_TIMEOUT,
            noop_out_interval: Self::DEFAULT_NOOP_OUT_INTERVAL,
            noop_out_timeout: Self::DEFAULT_NOOP_OUT_TIMEOUT,
        }
    }

    /// Checks the session timers: whole seconds that open-iscsi's record holds (a signed
    /// 32-bit number). [`crate::connector_for`] checks them, as [`Error::InvalidArgument`]
    /// naming the option.
    pub fn validate(&self) -> Result<()> {
        self.session_timers().map(|_| ())
    }

    /// The node-record settings of the session timers, in seconds, checked.
    pub(crate) fn session_timers(&self) -> Result<[(&'static str, i32); 3]> {
        Ok([
            (
                "node.session.timeo.replacement_timeout",
                whole_seconds("replacement_timeout", self.replacement_timeout)?,
            ),
            (
                "node.conn[0].timeo.noop_out_interval",
                whole_seconds("noop_out_interval", self.noop_out_interval)?,
            ),
            (
                "node.conn[0].timeo.noop_out_timeout",
                whole_seconds("noop_out_timeout", self.noop_out_timeout)?,
            ),
        ])
    }

    /// Sets how long I/O is held while a lost session is re-established.
    pub fn replacement_timeout(mut self, t: Duration) -> Self {
        self.replacement_timeout = t;
        self
    }

    /// Sets how often an idle connection is pinged (zero: never).
    pub fn noop_out_interval(mut self, t: Duration) -> Self {
        self.noop_out_interval = t;
        self
    }

    /// Sets how long a ping may go unanswered.
    pub fn noop_out_timeout(mut self, t: Duration) -> Self {
        self.noop_out_timeout = t;
        self
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

    /// Sets how long a multipath connect waits for logged-in paths once the map is usable
    /// (see [`IscsiOptions::extra_path_grace`]).
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

/// How long the kernel keeps trying to reconnect an NVMe-oF controller whose connection is
/// lost before it gives the controller up, and its namespaces with it (the connect's
/// `ctrl_loss_tmo`, `nvme connect --ctrl-loss-tmo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ControllerLoss {
    /// Never give up: the kernel reconnects until the target answers again or the volume is
    /// disconnected (`ctrl_loss_tmo=-1`; the controller's `ctrl_loss_tmo` attribute reads
    /// `off`). The default, as in os-brick since its bug 1964385, where volumes were lost
    /// (with the data written to them) after a ten-minute network outage.
    #[default]
    Never,
    /// Give up after this long, in whole seconds (the kernel's own default is 600 s). The
    /// kernel counts it in reconnect attempts: it gives up after
    /// ⌈timeout / [`NvmeOptions::reconnect_delay`]⌉ failed ones, and gives up at the first loss
    /// for zero.
    After(Duration),
}

/// What only the NVMe-oF connector reads: how the kernel rides out a lost connection to a
/// controller hostbrick makes. These go into the connect; a controller that already existed
/// keeps its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmeOptions {
    /// When the kernel gives a lost controller up; default [`ControllerLoss::Never`].
    pub ctrl_loss_timeout: ControllerLoss,
    /// How long the kernel waits between two reconnect attempts (`reconnect_delay`, `nvme
    /// connect --reconnect-delay`): whole seconds, at least 1; default 10 s, the kernel's.
    pub reconnect_delay: Duration,
    /// How long I/O waits for a reconnecting controller before it fails back to the caller,
    /// while the kernel keeps reconnecting (`fast_io_fail_tmo`, `nvme connect
    /// --fast_io_fail_tmo`): whole seconds, at most the controller-loss timeout. `None` (the
    /// default, the kernel's) holds I/O until the controller is back or given up.
    pub fast_io_fail_timeout: Option<Duration>,
}

impl NvmeOptions {
    /// The default for [`NvmeOptions::reconnect_delay`]: the kernel's, 10 s.
    pub const DEFAULT_RECONNECT_DELAY: Duration = Duration::from_secs(10);

    /// The defaults: a lost controller is never given up, reconnected every 10 s, and I/O
    /// waits for it.
    pub const fn new() -> Self {
        NvmeOptions {
            ctrl_loss_timeout: ControllerLoss::Never,
            reconnect_delay: Self::DEFAULT_RECONNECT_DELAY,
            fast_io_fail_timeout: None,
        }
    }

    /// Sets when a lost controller is given up.
    pub fn ctrl_loss_timeout(mut self, loss: ControllerLoss) -> Self {
        self.ctrl_loss_timeout = loss;
        self
    }

    /// Sets the delay between reconnect attempts.
    pub fn reconnect_delay(mut self, t: Duration) -> Self {
        self.reconnect_delay = t;
        self
    }

    /// Sets how long I/O waits for a reconnecting controller before it fails.
    pub fn fast_io_fail_timeout(mut self, t: Duration) -> Self {
        self.fast_io_fail_timeout = Some(t);
        self
    }

    /// Checks the values as the kernel would take them ([`Error::InvalidArgument`] naming
    /// the connect option): whole seconds in a signed 32-bit number, a reconnect delay of at
    /// least 1 s, and no fast I/O fail timeout longer than a controller-loss timeout (it could
    /// never fire). [`crate::connector_for`] checks them.
    pub fn validate(&self) -> Result<()> {
        self.kernel_values().map(|_| ())
    }

    /// The connect's `reconnect_delay`, `ctrl_loss_tmo` (-1: never) and `fast_io_fail_tmo`
    /// (`None`: not given, the kernel's off), checked as [`NvmeOptions::validate`] says.
    pub(crate) fn kernel_values(&self) -> Result<(i32, i32, Option<i32>)> {
        let delay = whole_seconds("reconnect_delay", self.reconnect_delay)?;
        if delay < 1 {
            return Err(Error::InvalidArgument {
                name: "reconnect_delay".into(),
                reason: "the kernel takes at least 1 s".into(),
            });
        }
        let loss = match self.ctrl_loss_timeout {
            ControllerLoss::Never => -1,
            ControllerLoss::After(t) => whole_seconds("ctrl_loss_tmo", t)?,
        };
        let fast = self
            .fast_io_fail_timeout
            .map(|t| whole_seconds("fast_io_fail_tmo", t))
            .transpose()?;
        if let Some(f) = fast.filter(|&f| loss >= 0 && f > loss) {
            return Err(Error::InvalidArgument {
                name: "fast_io_fail_tmo".into(),
                reason: format!(
                    "{f} s is longer than the controller-loss timeout ({loss} s): it would never fire"
                ),
            });
        }
        Ok((delay, loss, fast))
    }
}

impl Default for NvmeOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// `t` as the whole seconds of a kernel or open-iscsi `int`: [`Error::InvalidArgument`]
/// naming `name` when it has a fraction of a second or does not fit.
pub(crate) fn whole_seconds(name: &str, t: Duration) -> Result<i32> {
    let bad = |reason: String| Error::InvalidArgument {
        name: name.to_string(),
        reason,
    };
    if t.subsec_nanos() != 0 {
        return Err(bad(format!("{t:?} is not a whole number of seconds")));
    }
    i32::try_from(t.as_secs()).map_err(|_| bad(format!("{t:?} is longer than can be set")))
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

    #[test]
    fn recovery_defaults_are_documented_ones() {
        let n = NvmeOptions::default();
        assert_eq!(n.ctrl_loss_timeout, ControllerLoss::Never);
        assert_eq!(n.reconnect_delay, Duration::from_secs(10));
        assert_eq!(n.fast_io_fail_timeout, None);
        assert_eq!(n.kernel_values().unwrap(), (10, -1, None));
        let i = IscsiOptions::default();
        assert_eq!(
            i.session_timers().unwrap(),
            [
                ("node.session.timeo.replacement_timeout", 120),
                ("node.conn[0].timeo.noop_out_interval", 5),
                ("node.conn[0].timeo.noop_out_timeout", 5),
            ]
        );
        assert_eq!(whole_seconds("x", Duration::from_secs(7)).unwrap(), 7);
        for bad in [
            Duration::from_millis(1),
            Duration::from_secs(i32::MAX as u64 + 1),
        ] {
            assert!(matches!(
                whole_seconds("x", bad),
                Err(Error::InvalidArgument { name, .. }) if name == "x"
            ));
        }
    }
}
