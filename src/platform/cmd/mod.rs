//! External commands: one injectable runner trait, the command description every wrapper
//! builds, cancellation, and (in `system`) the implementation that runs real programs.
//!
//! No shell is ever used: a command is a program name and an argument vector. Secret
//! arguments are masked wherever a command is shown.

use std::fmt;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, ExitStatus, Result};
use crate::model::secret::Secret;

mod system;

use system::Event;
pub use system::SystemRunner;
#[cfg(feature = "internals")]
pub use system::EXTRA_BIN_DIRS;

/// One argument: plain, or a secret that is masked when the command is shown.
///
/// hostbrick itself puts no secret on a command line (any local user can read a running
/// program's arguments in `/proc/PID/cmdline`): it writes secrets to files the program
/// reads, or to its standard input ([`Command::stdin_secret`]). The variant stays for
/// callers' own commands.
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

/// A command to run: program, arguments, what it reads on stdin (a secret, or nothing),
/// time limit and optional cancellation.
#[derive(Debug)]
pub struct Command {
    program: String,
    args: Vec<Arg>,
    stdin: Option<Secret>,
    timeout: Option<Duration>,
    cancel: Option<Cancel>,
}

impl Clone for Command {
    fn clone(&self) -> Self {
        Command {
            program: self.program.clone(),
            args: self.args.clone(),
            stdin: self.stdin.as_ref().map(Secret::duplicate),
            timeout: self.timeout,
            cancel: self.cancel.clone(),
        }
    }
}

impl Command {
    /// A command running `program` (a bare name, resolved by the runner).
    pub fn new(program: impl Into<String>) -> Self {
        Command {
            program: program.into(),
            args: Vec::new(),
            stdin: None,
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

    /// Gives the program `s` on its standard input: the runner writes it to a pipe and
    /// closes the pipe (so the program reads exactly these bytes, then end of file). For
    /// keys and passphrases (`cryptsetup --key-file=-`): the value never reaches the
    /// argument vector, which any local user can read in `/proc/PID/cmdline`, and it is
    /// shown as `***` wherever the command is shown. Without it the program's stdin is
    /// `/dev/null`.
    pub fn stdin_secret(mut self, s: &Secret) -> Self {
        self.stdin = Some(s.duplicate());
        self
    }

    /// Sets the time limit; the runner kills the program (and its process group) when it
    /// is reached.
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

    /// What the program gets on its standard input ([`Command::stdin_secret`]), if anything.
    /// Call only where it is handed to the program (a runner) or checked (a test).
    pub fn stdin(&self) -> Option<&Secret> {
        self.stdin.as_ref()
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
        write!(f, "{} {}", self.program, self.shown_args())?;
        if self.stdin.is_some() {
            f.write_str(" <stdin ***>")?;
        }
        Ok(())
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
