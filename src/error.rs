//! The crate's one error type.
//!
//! Every variant is structured: callers match on it rather than on text. Messages never
//! repeat their `#[source]`; print the chain to see the cause.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The result type of every fallible hostbrick operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a finished external command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// The program exited with this code.
    Code(i32),
    /// The program was killed by this signal number.
    Signal(i32),
}

impl ExitStatus {
    /// True for exit code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }

    /// The exit code, if the program exited normally.
    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Code(c) => Some(c),
            ExitStatus::Signal(_) => None,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// One path that a connect tried and why it did not give a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFailure {
    /// The target tried, e.g. `127.0.0.1:3260 iqn.2003-01.org.example:t1 lun 0`.
    pub target: String,
    /// Why it failed (the error's full message chain).
    pub reason: String,
}

/// Everything that can go wrong in hostbrick.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `driver_volume_type` named no protocol hostbrick knows.
    #[error("invalid connector protocol {value:?}: accepted names are {accepted}")]
    InvalidConnectorProtocol {
        /// The value given.
        value: String,
        /// The accepted names, comma separated.
        accepted: &'static str,
    },

    /// A connection_info (or one of its fields) is malformed.
    #[error("invalid connection_info field `{field}`: {reason}")]
    InvalidConnectionInfo {
        /// The field, e.g. `data.target_portal` or `data.target_luns`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A connector was handed properties of another protocol.
    #[error("the {expected} connector was given {found} connection properties")]
    ProtocolMismatch {
        /// The connector's protocol.
        expected: String,
        /// The protocol of the properties given.
        found: String,
    },

    /// A saved device record cannot be used.
    #[error("invalid device record: {reason}")]
    InvalidDeviceRecord {
        /// What is wrong with it.
        reason: String,
    },

    /// A caller-supplied argument is invalid.
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument {
        /// The argument.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An executable could not be found.
    #[error("program `{program}` not found (searched PATH and {searched:?})")]
    CommandNotFound {
        /// The program name.
        program: String,
        /// The extra directories searched besides `PATH`.
        searched: Vec<PathBuf>,
    },

    /// An executable could not be started.
    #[error("cannot run `{program}`")]
    CommandSpawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// An external command ended unsuccessfully.
    #[error(
        "`{program} {args}` failed with {status}: {}",
        summarize(stderr, stdout)
    )]
    CommandFailed {
        /// The program.
        program: String,
        /// Its arguments, secrets masked.
        args: String,
        /// How it ended.
        status: ExitStatus,
        /// What it printed on stdout.
        stdout: String,
        /// What it printed on stderr.
        stderr: String,
    },

    /// An external command ran past its time limit and was killed.
    #[error("`{program} {args}` did not finish within {timeout:?} and was killed")]
    CommandTimedOut {
        /// The program.
        program: String,
        /// Its arguments, secrets masked.
        args: String,
        /// The limit.
        timeout: Duration,
    },

    /// An external command was stopped because its operation no longer needed it.
    #[error("`{program} {args}` was cancelled")]
    CommandCancelled {
        /// The program.
        program: String,
        /// Its arguments, secrets masked.
        args: String,
    },

    /// A wait of an operation (for a device, a lock, a retry) ended because the operation's
    /// [`Cancel`](crate::Cancel) fired.
    #[error("cancelled while waiting for {what}")]
    WaitCancelled {
        /// What was awaited.
        what: String,
    },

    /// The operation's [`Cancel`](crate::Cancel) ([`crate::ConnectorOptions::cancel`])
    /// fired before it finished. A connect undid what it had made (as after any failed
    /// connect, within the cleanup budget); a disconnect stopped between steps and may have
    /// removed part of the volume (a disconnect run again finishes it). `cause` is the
    /// step the cancel stopped (none when the operation was cancelled before it started).
    #[error("{operation} cancelled after {elapsed:?}")]
    Cancelled {
        /// The operation: `connect_volume`, `disconnect_volume`, `extend_volume` or `query`.
        operation: &'static str,
        /// How long it had run.
        elapsed: Duration,
        /// What the cancel stopped.
        #[source]
        cause: Option<Box<Error>>,
    },

    /// An external command printed more than the runner keeps on one stream (see
    /// [`crate::SystemRunner::with_output_limit`]); it was killed.
    #[error("`{program} {args}` printed more than {limit} bytes on {stream} and was killed")]
    OutputTooLarge {
        /// The program.
        program: String,
        /// Its arguments, secrets masked.
        args: String,
        /// `stdout` or `stderr`.
        stream: &'static str,
        /// The limit, in bytes.
        limit: usize,
    },

    /// A volume has more paths than a connect logs in to
    /// ([`crate::iscsi::IscsiOptions::max_targets`]):
    /// the connection_info's target lists, or the portals a sendtargets discovery reply
    /// offers for the volume's target. Nothing was logged in to.
    #[error("{origin} gives {count} targets, more than the limit of {limit}")]
    TooManyTargets {
        /// Where the targets came from: `connection_info` or `sendtargets discovery at
        /// <portal>`.
        origin: String,
        /// How many targets it gives.
        count: usize,
        /// The limit.
        limit: usize,
    },

    /// The target refused our credentials (iscsiadm exit code 24).
    #[error("authentication failed logging in to {target}")]
    AuthenticationFailed {
        /// The target, e.g. `127.0.0.1:3260 iqn...`.
        target: String,
        /// The command failure behind it.
        #[source]
        source: Box<Error>,
    },

    /// The kernel did not make the NVMe-oF controller a connect asked for: the write of the
    /// connect's options to `/dev/nvme-fabrics` failed with `source`, whose errno says why
    /// (`ECONNREFUSED`: nothing listens at the portal; `EINVAL`: options the kernel does
    /// not take, or no driver for the transport; `EIO`: the target refused the subsystem or
    /// host; `ETIMEDOUT`, `EHOSTUNREACH`, ...).
    #[error("NVMe-oF connect to {target} failed")]
    NvmeConnect {
        /// The portal and subsystem, e.g. `tcp:192.0.2.10:4420 nqn.2014-08.org.example:vol`.
        target: String,
        /// The write's error.
        #[source]
        source: std::io::Error,
    },

    /// Reading or writing a host file failed.
    #[error("cannot access {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// A host file holds something that cannot be parsed.
    #[error("unexpected content in {}: {reason}", path.display())]
    UnexpectedContent {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },

    /// Output of an external command cannot be parsed.
    #[error("cannot parse output of `{program}`: {reason}")]
    Parse {
        /// The program.
        program: String,
        /// What was wrong.
        reason: String,
    },

    /// A wait ran out of time.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
    },

    /// udev could not be used.
    #[error("udev {action} failed")]
    Udev {
        /// What was being done.
        action: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// A cross-process lock could not be taken.
    #[error("cannot lock {}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },

    /// A device record disagrees with what the host shows: what it names is not this
    /// volume's (another LUN after a reboot renumbered SCSI addresses, a map or array of
    /// another volume). Nothing was changed.
    #[error("the device record does not match the host: {what}: {reason}")]
    RecordMismatch {
        /// What in the record (an H:C:T:L, a multipath map, an MD array, a device).
        what: String,
        /// How the host disagrees.
        reason: String,
    },

    /// A device is in use by something hostbrick did not set up for this volume (a mounted
    /// filesystem, swap, LVM, dm-crypt, another array or map), so it is neither flushed nor
    /// removed.
    #[error("{device} is in use: {reason}")]
    DeviceInUse {
        /// The block device (e.g. `sdb`, `dm-3`).
        device: String,
        /// What uses it.
        reason: String,
    },

    /// No path of the volume produced a usable block device.
    #[error("volume device not found; tried: {}", list_attempts(tried))]
    VolumeDeviceNotFound {
        /// Each target tried and why it failed.
        tried: Vec<AttemptFailure>,
    },

    /// The target answered, and what it has is not the volume: the SCSI scan of the LUN on
    /// a logged-in iSCSI session made no device, or a live NVMe controller shows every
    /// namespace its subsystem lists and none is the volume's. Waiting would not change it,
    /// so the path fails at once (and the connect with [`Error::VolumeDeviceNotFound`]
    /// listing it).
    #[error("{target} has no {wanted}: {seen}")]
    NotOnTarget {
        /// Where it was looked for: portal and target or subsystem, with the session or
        /// controller.
        target: String,
        /// What was looked for, e.g. `LUN 5` or `namespace uuid 1111...`.
        wanted: String,
        /// What the target showed instead.
        seen: String,
    },

    /// Multipath was required but multipathd is not running.
    #[error("multipath is enforced but multipathd is not running")]
    MultipathdNotRunning,

    /// A dm-multipath map could not be assembled and multipath is enforced.
    #[error("multipath map for {wwid} could not be assembled: {reason}")]
    MultipathAssembly {
        /// The volume's WWID.
        wwid: String,
        /// Why.
        reason: String,
    },

    /// A block device cannot be read.
    #[error("device {} is not valid", path.display())]
    InvalidDevice {
        /// The device.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// A disconnect with `force` carried on past failed steps to the end.
    #[error("disconnect finished with {} failure(s): {}", failures.len(), list_errors(failures))]
    DisconnectIncomplete {
        /// Every failure, in order.
        failures: Vec<Error>,
    },

    /// A libvirt disk config libvirt would refuse, or disk XML that does not describe one.
    #[error("invalid disk config: {field}: {reason}")]
    InvalidDiskConfig {
        /// The element or attribute (`target.dev`, `serial`, `xml`, ...).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A step of attaching a volume to a guest (or detaching it) failed. The steps done
    /// before it were undone in reverse order; `rollback` lists the undo steps that failed
    /// in turn (empty when everything was undone).
    #[error("{operation} of volume {volume} {preposition} domain {domain} failed at step {step}{}", list_rollback(rollback), preposition = if *operation == "attach" { "to" } else { "from" })]
    Orchestration {
        /// `attach` or `detach`.
        operation: &'static str,
        /// The step that failed.
        step: &'static str,
        /// The volume id.
        volume: String,
        /// The guest.
        domain: String,
        /// Why the step failed.
        #[source]
        cause: Box<Error>,
        /// Undo steps that failed, in the order they ran.
        rollback: Vec<RollbackFailure>,
    },

    /// A directory for hostbrick's state (the state directory, a lock directory, or one
    /// below them), or a file in one, is not safe to use: a symlink, not a directory,
    /// owned by another user, or writable by the group or others. Nothing was created
    /// or written through it.
    #[error("refusing to use {}: {reason}", path.display())]
    UnsafeStateDir {
        /// The directory (or file).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A volume's encryption metadata (or a key's content) is not usable.
    #[error("invalid encryption metadata `{field}`: {reason}")]
    InvalidEncryption {
        /// The field (`provider`, `cipher`, `key_size`, `control_location`,
        /// `encryption_key_id`, `key`).
        field: String,
        /// What is wrong with it (never the key).
        reason: String,
    },

    /// The key manager has no key under the id.
    #[error("the key manager has no key {key_id}")]
    KeyNotFound {
        /// The `encryption_key_id`.
        key_id: String,
    },

    /// The volume's key does not open the encrypted device. Nothing was left open.
    #[error("the key does not open {}", device.display())]
    WrongKey {
        /// The raw (encrypted) device.
        device: PathBuf,
    },

    /// A device to be formatted for encryption already carries data: formatting it would
    /// destroy it, so it was refused.
    #[error("refusing to format {} for encryption: it carries {signature}", device.display())]
    DeviceHasSignature {
        /// The device.
        device: PathBuf,
        /// What `blkid` found (`TYPE="ext4"`, a partition table, another LUKS header).
        signature: String,
    },

    /// The volume cannot be decrypted on this host (os-brick's
    /// `VolumeEncryptionNotSupported`): e.g. a network volume the hypervisor opens itself.
    #[error("volume {volume} cannot be decrypted on this host: {reason}")]
    EncryptionNotSupported {
        /// The volume id (else its path).
        volume: String,
        /// Why.
        reason: String,
    },

    /// Opening an attached volume's encryption failed, and detaching the volume again
    /// failed too ([`crate::encryption::EncryptedConnector`]); the volume may still be
    /// attached.
    #[error("opening the encrypted volume failed{}", list_rollback(rollback))]
    EncryptedAttach {
        /// Why the open failed.
        #[source]
        cause: Box<Error>,
        /// The undo steps that failed.
        rollback: Vec<RollbackFailure>,
    },

    /// A cross-process lock stayed held by someone else until the operation's deadline.
    #[error("timed out after {waited:?} waiting for lock {key} ({})", path.display())]
    LockTimeout {
        /// The lock's key, e.g. `volume-…` or `target …`.
        key: String,
        /// The lock file.
        path: PathBuf,
        /// How long it was waited for.
        waited: Duration,
    },
}

/// An undo step that failed while rolling back a failed attach or detach.
#[derive(Debug)]
pub struct RollbackFailure {
    /// The step being undone.
    pub step: &'static str,
    /// Why undoing it failed.
    pub error: Error,
}

fn list_rollback(rollback: &[RollbackFailure]) -> String {
    if rollback.is_empty() {
        return "; rolled back".to_string();
    }
    let steps = rollback
        .iter()
        .map(|r| format!("[undo {}: {}]", r.step, r.error.chain()))
        .collect::<Vec<_>>()
        .join(", ");
    format!("; rollback incomplete: {steps}")
}

impl Error {
    /// A stable snake_case name for the variant, for logs and command-line output.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidConnectorProtocol { .. } => "invalid_connector_protocol",
            Error::InvalidConnectionInfo { .. } => "invalid_connection_info",
            Error::ProtocolMismatch { .. } => "protocol_mismatch",
            Error::InvalidDeviceRecord { .. } => "invalid_device_record",
            Error::InvalidArgument { .. } => "invalid_argument",
            Error::CommandNotFound { .. } => "command_not_found",
            Error::CommandSpawn { .. } => "command_spawn",
            Error::CommandFailed { .. } => "command_failed",
            Error::CommandTimedOut { .. } => "command_timed_out",
            Error::CommandCancelled { .. } => "command_cancelled",
            Error::WaitCancelled { .. } => "wait_cancelled",
            Error::Cancelled { .. } => "cancelled",
            Error::OutputTooLarge { .. } => "output_too_large",
            Error::TooManyTargets { .. } => "too_many_targets",
            Error::AuthenticationFailed { .. } => "authentication_failed",
            Error::NvmeConnect { .. } => "nvme_connect",
            Error::Io { .. } => "io",
            Error::UnexpectedContent { .. } => "unexpected_content",
            Error::Parse { .. } => "parse",
            Error::Timeout { .. } => "timeout",
            Error::Udev { .. } => "udev",
            Error::Lock { .. } => "lock",
            Error::VolumeDeviceNotFound { .. } => "volume_device_not_found",
            Error::NotOnTarget { .. } => "not_on_target",
            Error::RecordMismatch { .. } => "record_mismatch",
            Error::DeviceInUse { .. } => "device_in_use",
            Error::MultipathdNotRunning => "multipathd_not_running",
            Error::MultipathAssembly { .. } => "multipath_assembly",
            Error::InvalidDevice { .. } => "invalid_device",
            Error::DisconnectIncomplete { .. } => "disconnect_incomplete",
            Error::InvalidDiskConfig { .. } => "invalid_disk_config",
            Error::Orchestration { .. } => "orchestration",
            Error::UnsafeStateDir { .. } => "unsafe_state_dir",
            Error::LockTimeout { .. } => "lock_timeout",
            Error::InvalidEncryption { .. } => "invalid_encryption",
            Error::KeyNotFound { .. } => "key_not_found",
            Error::WrongKey { .. } => "wrong_key",
            Error::DeviceHasSignature { .. } => "device_has_signature",
            Error::EncryptionNotSupported { .. } => "encryption_not_supported",
            Error::EncryptedAttach { .. } => "encrypted_attach",
        }
    }

    /// The error and all its sources, joined with `": "`.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cur = e.source();
        }
        out
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidConnectionInfo {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The exit code of a failed command, if this is one.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Error::CommandFailed { status, .. } => status.code(),
            Error::AuthenticationFailed { source, .. } => source.exit_code(),
            _ => None,
        }
    }

    /// True when the error says a file or device does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Failures of a multi-step teardown: stop at the first, or (with `force`) collect them
/// all and report them together at the end.
pub(crate) struct Failures {
    collect: bool,
    list: Vec<Error>,
}

impl Failures {
    pub(crate) fn new(collect: bool) -> Self {
        Failures {
            collect,
            list: Vec::new(),
        }
    }

    /// Passes success through; a failure ends the teardown or is kept for the end. Once the
    /// operation is cancelled a failure always ends it: `force` carries on past what fails,
    /// not past a caller who asked to stop.
    pub(crate) fn step(&mut self, r: Result<()>) -> Result<()> {
        match r {
            Ok(()) => Ok(()),
            Err(e) if self.collect && !crate::platform::cancel::is_cancelled() => {
                tracing::warn!(error = %e.chain(), "teardown step failed; continuing");
                self.list.push(e);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) fn finish(self) -> Result<()> {
        crate::connector::Disconnected {
            failures: self.list,
        }
        .into_result()
    }
}

fn summarize(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let text = text.trim();
    if text.is_empty() {
        return "(no output)".to_string();
    }
    // Keep messages one screen long: the full output stays in the fields.
    const MAX: usize = 400;
    if text.len() <= MAX {
        return text.replace('\n', " | ");
    }
    let mut cut = MAX;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", text[..cut].replace('\n', " | "))
}

fn list_attempts(tried: &[AttemptFailure]) -> String {
    if tried.is_empty() {
        return "no targets".to_string();
    }
    tried
        .iter()
        .map(|a| format!("[{}: {}]", a.target, a.reason))
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_errors(errors: &[Error]) -> String {
    errors
        .iter()
        .map(|e| format!("[{}]", e.chain()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_failed_message_summarizes_stderr() {
        let e = Error::CommandFailed {
            program: "iscsiadm".into(),
            args: "-m node".into(),
            status: ExitStatus::Code(21),
            stdout: String::new(),
            stderr: "iscsiadm: No records found\n".into(),
        };
        assert_eq!(
            e.to_string(),
            "`iscsiadm -m node` failed with exit code 21: iscsiadm: No records found"
        );
        assert_eq!(e.exit_code(), Some(21));
        assert_eq!(e.kind(), "command_failed");
    }

    #[test]
    fn chain_includes_sources_once() {
        let e = Error::io(
            "/sys/x",
            std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        );
        assert_eq!(e.chain(), "cannot access /sys/x: gone");
        assert!(e.is_not_found());
    }

    #[test]
    fn long_output_is_cut_on_a_char_boundary() {
        let s = "é".repeat(300);
        let out = summarize(&s, "");
        assert!(out.ends_with('…'));
        assert!(out.len() <= 404);
    }
}
