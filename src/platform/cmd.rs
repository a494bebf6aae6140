//! External commands: one injectable runner trait, the system implementation, and the
//! command description every wrapper builds.
//!
//! No shell is ever used: a command is a program name and an argument vector. Secret
//! arguments are masked wherever a command is shown.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, ExitStatus, Result};
use crate::model::secret::Secret;

/// One argument: plain, or a secret that is masked when the command is shown.
///
/// hostbrick itself puts no secret on a command line (any local user can read a running
/// program's arguments in `/proc/PID/cmdline`): it writes secrets to files the program
/// reads. The variant stays for callers' own commands.
#[derive(PartialEq, Eq)]
pub enum Arg {
    /// Shown as is.
    Plain(String),
    /// Passed to the program, shown as `***`.
    Secret(Secret),
}

impl Clone for Arg {
    fn clone(&self) -> Self {
        match self {
            Arg::Plain(s) => Arg::Plain(s.clone()),
            Arg::Secret(s) => Arg::Secret(s.duplicate()),
        }
    }
}

impl Arg {
    fn value(&self) -> &str {
        match self {
            Arg::Plain(s) => s,
            Arg::Secret(s) => s.expose(),
        }
    }
}

impl fmt::Debug for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Plain(s) => write!(f, "{s:?}"),
            Arg::Secret(_) => f.write_str("***"),
        }
    }
}

/// A command to run: program, arguments, time limit and optional cancellation.
#[derive(Debug, Clone)]
pub struct Command {
    program: String,
    args: Vec<Arg>,
    timeout: Option<Duration>,
    cancel: Option<Cancel>,
}

impl Command {
    /// A command running `program` (a bare name, resolved by the runner).
    pub fn new(program: impl Into<String>) -> Self {
        Command {
            program: program.into(),
            args: Vec::new(),
            timeout: None,
            cancel: None,
        }
    }

    /// Adds a plain argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(Arg::Plain(a.into()));
        self
    }

    /// Adds plain arguments.
    pub fn args<I, S>(mut self, it: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args
            .extend(it.into_iter().map(|a| Arg::Plain(a.into())));
        self
    }

    /// Adds an argument as given (plain or secret).
    pub fn push_arg(mut self, a: Arg) -> Self {
        self.args.push(a);
        self
    }

    /// Adds a secret argument, masked wherever the command is shown.
    pub fn secret_arg(mut self, s: &Secret) -> Self {
        self.args.push(Arg::Secret(s.duplicate()));
        self
    }

    /// Sets the time limit; the runner kills the program when it is reached.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Limits the command to what is left until `deadline` (at least a millisecond).
    pub fn deadline(self, deadline: Instant) -> Self {
        let left = deadline.saturating_duration_since(Instant::now());
        let left = left.max(Duration::from_millis(1));
        match self.timeout {
            Some(t) if t < left => self,
            _ => self.timeout(left),
        }
    }

    /// Lets `cancel` stop the command early.
    pub fn cancel_with(mut self, cancel: &Cancel) -> Self {
        self.cancel = Some(cancel.clone());
        self
    }

    /// The program name.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The arguments.
    pub fn arg_list(&self) -> &[Arg] {
        &self.args
    }

    /// The time limit, if any.
    pub fn time_limit(&self) -> Option<Duration> {
        self.timeout
    }

    /// The cancellation handle, if any.
    pub fn cancellation(&self) -> Option<&Cancel> {
        self.cancel.as_ref()
    }

    /// The arguments as shown in logs and errors (secrets masked).
    pub fn shown_args(&self) -> String {
        self.args
            .iter()
            .map(|a| match a {
                Arg::Plain(s) => s.as_str(),
                Arg::Secret(_) => "***",
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// True when the arguments start with `prefix` (plain arguments compared).
    pub fn args_start_with(&self, prefix: &[&str]) -> bool {
        self.args.len() >= prefix.len()
            && self
                .args
                .iter()
                .zip(prefix)
                .all(|(a, p)| matches!(a, Arg::Plain(s) if s == p))
    }

    /// True when some plain argument equals `word`.
    pub fn has_arg(&self, word: &str) -> bool {
        self.args
            .iter()
            .any(|a| matches!(a, Arg::Plain(s) if s == word))
    }

    /// The plain argument after `flag`, e.g. `value_of("-T")`.
    pub fn value_of(&self, flag: &str) -> Option<&str> {
        let pos = self
            .args
            .iter()
            .position(|a| matches!(a, Arg::Plain(s) if s == flag))?;
        self.args.get(pos + 1).map(Arg::value)
    }

    /// The error for this command ending with `out`.
    pub fn failure(&self, out: &CommandOutput) -> Error {
        Error::CommandFailed {
            program: self.program.clone(),
            args: self.shown_args(),
            status: out.status,
            stdout: out.stdout.clone(),
            stderr: out.stderr.clone(),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.program, self.shown_args())
    }
}

/// What a finished command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// How it ended.
    pub status: ExitStatus,
    /// Standard output (invalid UTF-8 replaced).
    pub stdout: String,
    /// Standard error (invalid UTF-8 replaced).
    pub stderr: String,
}

impl CommandOutput {
    /// Exit code 0 with this stdout.
    pub fn ok(stdout: impl Into<String>) -> Self {
        CommandOutput {
            status: ExitStatus::Code(0),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    /// This exit code with this stderr.
    pub fn exit(code: i32, stderr: impl Into<String>) -> Self {
        CommandOutput {
            status: ExitStatus::Code(code),
            stdout: String::new(),
            stderr: stderr.into(),
        }
    }
}

/// Runs external commands. The one seam between hostbrick and the programs it drives.
///
/// `run` returns the output however the program ended; callers decide which exit codes are
/// acceptable. It fails only when the program could not be run, timed out or was cancelled.
pub trait CommandRunner: Send + Sync + fmt::Debug {
    /// Runs `cmd` to completion (or its time limit / cancellation).
    fn run(&self, cmd: &Command) -> Result<CommandOutput>;

    /// Runs `cmd` and fails unless it exits with one of `ok_codes`.
    fn run_ok(&self, cmd: &Command, ok_codes: &[i32]) -> Result<CommandOutput> {
        let out = self.run(cmd)?;
        match out.status.code() {
            Some(c) if c == 0 || ok_codes.contains(&c) => Ok(out),
            _ => Err(cmd.failure(&out)),
        }
    }
}

/// A handle that stops commands started with it. Cloning shares the handle.
#[derive(Clone, Default)]
pub struct Cancel {
    inner: Arc<Mutex<CancelState>>,
}

#[derive(Default)]
struct CancelState {
    cancelled: bool,
    waiters: Vec<mpsc::Sender<Event>>,
}

impl fmt::Debug for Cancel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cancel({})", self.is_cancelled())
    }
}

impl Cancel {
    /// A fresh handle.
    pub fn new() -> Self {
        Cancel::default()
    }

    /// Stops every command started with this handle, now and later.
    pub fn cancel(&self) {
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        st.cancelled = true;
        for w in st.waiters.drain(..) {
            // A waiter that already finished dropped its receiver: nothing to tell it.
            let _ = w.send(Event::Cancelled);
        }
    }

    /// True once [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cancelled
    }

    fn register(&self, tx: mpsc::Sender<Event>) -> bool {
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if st.cancelled {
            return false;
        }
        st.waiters.push(tx);
        true
    }
}

enum Event {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Cancelled,
}

/// Directories searched after `PATH` for the programs hostbrick runs.
pub const EXTRA_BIN_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The real runner: resolves each program once (`PATH`, then `/usr/sbin`, `/sbin`, `/usr/bin`,
/// `/bin`), runs it directly (never through a shell), optionally behind a root helper such
/// as `sudo`, and kills it at its time limit.
#[derive(Debug)]
pub struct SystemRunner {
    root_helper: Vec<String>,
    default_timeout: Duration,
    resolved: Mutex<HashMap<String, PathBuf>>,
}

impl Default for SystemRunner {
    fn default() -> Self {
        SystemRunner::new()
    }
}

impl SystemRunner {
    /// The time limit of a command that sets none.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

    /// A runner with no root helper.
    pub fn new() -> Self {
        SystemRunner {
            root_helper: Vec::new(),
            default_timeout: Self::DEFAULT_TIMEOUT,
            resolved: Mutex::new(HashMap::new()),
        }
    }

    /// Runs every command behind this prefix, e.g. `["sudo", "-n"]`.
    pub fn with_root_helper<I, S>(mut self, helper: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.root_helper = helper.into_iter().map(Into::into).collect();
        self
    }

    /// The time limit for commands that set none.
    pub fn with_default_timeout(mut self, t: Duration) -> Self {
        self.default_timeout = t;
        self
    }

    /// Finds `program`, caching the answer.
    pub fn resolve(&self, program: &str) -> Result<PathBuf> {
        if program.contains('/') {
            return Ok(PathBuf::from(program));
        }
        let mut cache = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(program) {
            return Ok(p.clone());
        }
        let found = which::which(program).ok().or_else(|| {
            EXTRA_BIN_DIRS
                .iter()
                .map(|d| Path::new(d).join(program))
                .find(|p| is_executable(p))
        });
        match found {
            Some(p) => {
                cache.insert(program.to_string(), p.clone());
                Ok(p)
            }
            None => Err(Error::CommandNotFound {
                program: program.to_string(),
                searched: EXTRA_BIN_DIRS.iter().map(PathBuf::from).collect(),
            }),
        }
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

impl CommandRunner for SystemRunner {
    fn run(&self, cmd: &Command) -> Result<CommandOutput> {
        let path = self.resolve(&cmd.program)?;
        let mut pc = match self.root_helper.split_first() {
            Some((helper, rest)) => {
                let helper = self.resolve(helper)?;
                let mut c = std::process::Command::new(helper);
                c.args(rest).arg(&path);
                c
            }
            None => std::process::Command::new(&path),
        };
        pc.args(cmd.args.iter().map(Arg::value))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("LC_ALL", "C");
        let started = Instant::now();
        let timeout = cmd.timeout.unwrap_or(self.default_timeout);
        let deadline = started + timeout;
        tracing::debug!(command = %cmd, "running");

        let (tx, rx) = mpsc::channel();
        if let Some(c) = &cmd.cancel {
            if !c.register(tx.clone()) {
                return Err(cancelled(cmd));
            }
        }
        let mut child = pc.spawn().map_err(|source| Error::CommandSpawn {
            program: cmd.program.clone(),
            source,
        })?;
        // Readers send what they read when the pipe closes; waiting on the channel (rather
        // than polling the child) lets a timeout or a cancellation interrupt the wait.
        spawn_reader(child.stdout.take(), tx.clone(), Event::Stdout);
        spawn_reader(child.stderr.take(), tx, Event::Stderr);
        let (mut out, mut err) = (None, None);
        while out.is_none() || err.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let stop = match rx.recv_timeout(left) {
                Ok(Event::Stdout(b)) => {
                    out = Some(b);
                    None
                }
                Ok(Event::Stderr(b)) => {
                    err = Some(b);
                    None
                }
                Ok(Event::Cancelled) => Some(cancelled(cmd)),
                Err(_) => Some(Error::CommandTimedOut {
                    program: cmd.program.clone(),
                    args: cmd.shown_args(),
                    timeout,
                }),
            };
            if let Some(e) = stop {
                // The child is not yet reaped, so its pid is still ours to kill.
                let _ = child.kill();
                let _ = child.wait();
                tracing::warn!(command = %cmd, error = %e, "command stopped");
                return Err(e);
            }
        }
        let status = child.wait().map_err(|source| Error::CommandSpawn {
            program: cmd.program.clone(),
            source,
        })?;
        let status = match status.code() {
            Some(c) => ExitStatus::Code(c),
            None => {
                use std::os::unix::process::ExitStatusExt;
                ExitStatus::Signal(status.signal().unwrap_or(0))
            }
        };
        let output = CommandOutput {
            status,
            stdout: String::from_utf8_lossy(&out.unwrap_or_default()).into_owned(),
            stderr: String::from_utf8_lossy(&err.unwrap_or_default()).into_owned(),
        };
        tracing::debug!(command = %cmd, %status, elapsed_ms = started.elapsed().as_millis() as u64, "finished");
        Ok(output)
    }
}

fn cancelled(cmd: &Command) -> Error {
    Error::CommandCancelled {
        program: cmd.program.clone(),
        args: cmd.shown_args(),
    }
}

fn spawn_reader<R: Read + Send + 'static>(
    pipe: Option<R>,
    tx: mpsc::Sender<Event>,
    wrap: fn(Vec<u8>) -> Event,
) {
    let Some(mut pipe) = pipe else {
        let _ = tx.send(wrap(Vec::new()));
        return;
    };
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error ends the output early; what was read is still reported.
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(wrap(buf));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked() {
        let c = Command::new("iscsiadm")
            .args(["-m", "node", "-n", "node.session.auth.password", "-v"])
            .secret_arg(&Secret::new("s3cret"));
        assert_eq!(
            c.to_string(),
            "iscsiadm -m node -n node.session.auth.password -v ***"
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        let e = c.failure(&CommandOutput::exit(7, "bad"));
        assert!(!e.to_string().contains("s3cret"));
        assert_eq!(c.value_of("-n"), Some("node.session.auth.password"));
        assert!(c.args_start_with(&["-m", "node"]));
    }

    #[test]
    fn system_runner_runs_without_shell() {
        let r = SystemRunner::new();
        let out = r.run(&Command::new("echo").arg("$HOME; true")).unwrap();
        assert_eq!(out.stdout, "$HOME; true\n");
        assert!(out.status.success());
        let out = r
            .run(&Command::new("sh").args(["-c", "echo oops >&2; exit 3"]))
            .unwrap();
        assert_eq!(out.status, ExitStatus::Code(3));
        assert_eq!(out.stderr, "oops\n");
        let e = r.run_ok(&Command::new("false"), &[]).unwrap_err();
        assert_eq!(e.exit_code(), Some(1));
    }

    #[test]
    fn system_runner_reports_signal_and_non_utf8() {
        let r = SystemRunner::new();
        let out = r
            .run(&Command::new("sh").args(["-c", "printf '\\377\\n' >&2; kill -9 $$"]))
            .unwrap();
        assert_eq!(out.status, ExitStatus::Signal(9));
        assert_eq!(out.stderr, "\u{fffd}\n");
    }

    #[test]
    fn system_runner_times_out_and_kills() {
        let r = SystemRunner::new();
        let t0 = Instant::now();
        let e = r
            .run(
                &Command::new("sleep")
                    .arg("30")
                    .timeout(Duration::from_millis(100)),
            )
            .unwrap_err();
        assert!(matches!(e, Error::CommandTimedOut { .. }), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn cancel_stops_a_running_command() {
        let r = SystemRunner::new();
        let cancel = Cancel::new();
        let c2 = cancel.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            c2.cancel();
        });
        let t0 = Instant::now();
        let e = r
            .run(&Command::new("sleep").arg("30").cancel_with(&cancel))
            .unwrap_err();
        t.join().unwrap();
        assert!(matches!(e, Error::CommandCancelled { .. }), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        // Already cancelled: nothing starts.
        let e = r
            .run(&Command::new("true").cancel_with(&cancel))
            .unwrap_err();
        assert!(matches!(e, Error::CommandCancelled { .. }));
    }

    #[test]
    fn missing_program_names_where_it_looked() {
        let e = SystemRunner::new()
            .run(&Command::new("hostbrick-no-such-program"))
            .unwrap_err();
        assert!(matches!(e, Error::CommandNotFound { .. }));
        assert!(e.to_string().contains("/usr/sbin"));
    }

    #[test]
    fn root_helper_prefixes() {
        let r = SystemRunner::new().with_root_helper(["env"]);
        let out = r.run(&Command::new("echo").arg("hi")).unwrap();
        assert_eq!(out.stdout, "hi\n");
    }
}
