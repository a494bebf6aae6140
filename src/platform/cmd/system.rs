//! The system runner: real programs, resolved once, each in a process group of its own,
//! with bounded kills, reaping and output.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Arg, Command, CommandOutput, CommandRunner};
use crate::error::{Error, ExitStatus, Result};
use crate::model::secret::Secret;

pub(super) enum Event {
    /// A chunk of a stream's output.
    Data(Stream, Vec<u8>),
    /// The stream reached its end (or a read error ended it early).
    Eof,
    /// The stream went past the output limit; its reader stopped.
    Overflow(Stream),
    Cancelled,
    /// The child exited (it is not reaped yet).
    Exited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Directories searched after `PATH` for the programs hostbrick runs.
pub const EXTRA_BIN_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The real runner: resolves each program once (`PATH`, then `/usr/sbin`, `/sbin`, `/usr/bin`,
/// `/bin`), runs it directly (never through a shell), optionally behind a root helper such
/// as `sudo`, and kills it at its time limit.
///
/// # Bounds
///
/// Every call returns in bounded time and memory, whatever the program (or what it starts)
/// does:
///
/// - Each command runs in a process group of its own (its pid is the group id). At its time
///   limit, on cancellation or when its output is too large, the whole group is killed
///   (`SIGKILL` to the group) while the program is not yet reaped, so the group id cannot
///   have been reused; then the program is reaped, within [`SystemRunner::REAP_GRACE`]
///   (a program stuck in the kernel is left to a background reaper after that).
/// - After a kill, and after a program exits, the readers of its stdout and stderr get
///   [`SystemRunner::PIPE_GRACE`] to see the pipes close. A descendant that left the group
///   (a daemon that called `setsid`) may still hold them: the readers are then abandoned
///   (left detached, each holding one small buffer, ending when the pipe closes) and the
///   call returns with what was read.
/// - A program that closes its pipes but keeps running is still bound by its time limit.
/// - stdout and stderr are each kept up to an output limit
///   ([`SystemRunner::DEFAULT_OUTPUT_LIMIT`], see [`SystemRunner::with_output_limit`]);
///   past it the group is killed and the call fails with [`Error::OutputTooLarge`].
///
/// Only a time limit, a cancellation or too much output kills: a program that exits (with
/// any code) is never killed after it, nor is anything it leaves behind. `rbd-nbd map`
/// relies on that: it forks a daemon that serves the device after the command exited 0.
/// That daemon may stay in the group; it is not touched, and if it kept the pipes the call
/// still returns after [`SystemRunner::PIPE_GRACE`].
///
/// What a group kill does not reach: processes that left the group (`setsid`,
/// `setpgid`), i.e. daemons, and, with a root helper, the real command when the helper
/// puts it in a session of its own. `sudo` without `use_pty` runs the command in its own
/// process group, which is ours, so the command is killed with it; with `use_pty` (the
/// default of recent sudo releases) the command runs in a new session on a pseudo-terminal
/// and only sudo is killed (sudo cannot relay a `SIGKILL`; the command usually gets a
/// `SIGHUP` when the terminal's other side closes). Such survivors do not hold the call up
/// (see above), but they keep running. Also, since a command is not in the caller's
/// process group, a terminal's Ctrl-C reaches only the caller, not the command.
#[derive(Debug)]
pub struct SystemRunner {
    root_helper: Vec<String>,
    default_timeout: Duration,
    output_limit: usize,
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

    /// How many bytes of stdout, and as many of stderr, a command may print by default
    /// (16 MiB; the largest real output, a `multipathd show maps json` of a big host, is a
    /// few MiB).
    pub const DEFAULT_OUTPUT_LIMIT: usize = 16 * 1024 * 1024;

    /// How long the readers of a command's pipes may take to see them close once the
    /// command exited or was killed; after it they are abandoned.
    pub const PIPE_GRACE: Duration = Duration::from_secs(2);

    /// How long a killed command may take to be reaped; after it a background thread waits
    /// for it and the call returns.
    pub const REAP_GRACE: Duration = Duration::from_secs(2);

    /// A runner with no root helper.
    pub fn new() -> Self {
        SystemRunner {
            root_helper: Vec::new(),
            default_timeout: Self::DEFAULT_TIMEOUT,
            output_limit: Self::DEFAULT_OUTPUT_LIMIT,
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

    /// The most bytes a command may print on stdout, and on stderr (each); past it the
    /// command is killed and the call fails with [`Error::OutputTooLarge`]. Default
    /// [`SystemRunner::DEFAULT_OUTPUT_LIMIT`].
    pub fn with_output_limit(mut self, bytes: usize) -> Self {
        self.output_limit = bytes;
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
        let stdin = match cmd.stdin {
            Some(_) => Stdio::piped(),
            None => Stdio::null(),
        };
        pc.args(cmd.args.iter().map(Arg::value))
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("LC_ALL", "C")
            // A group of its own, so that a kill reaches what the program started.
            .process_group(0);
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
        if let (Some(secret), Some(pipe)) = (&cmd.stdin, child.stdin.take()) {
            feed_stdin(pipe, secret, cmd);
        }
        spawn_exit_watch(child.id(), tx.clone());
        spawn_reader(
            child.stdout.take(),
            Stream::Stdout,
            self.output_limit,
            tx.clone(),
        );
        spawn_reader(
            child.stderr.take(),
            Stream::Stderr,
            self.output_limit,
            tx.clone(),
        );
        // Kept so that the channel never disconnects: waits below always time out rather
        // than return at once.
        let _tx = tx;
        let mut run = Running {
            rx,
            out: Vec::new(),
            err: Vec::new(),
            open: 2,
        };
        let (status, exited_at) = match run.until_exit(&mut child, deadline) {
            Ok(exit) => exit,
            Err(stop) => {
                let e = match stop {
                    Stop::TimedOut => Error::CommandTimedOut {
                        program: cmd.program.clone(),
                        args: cmd.shown_args(),
                        timeout,
                    },
                    Stop::Cancelled => cancelled(cmd),
                    Stop::Overflow(s) => self.too_large(cmd, s),
                    Stop::Wait(source) => Error::CommandSpawn {
                        program: cmd.program.clone(),
                        source,
                    },
                };
                kill_and_reap(child, cmd);
                run.drain(Instant::now() + Self::PIPE_GRACE);
                tracing::warn!(command = %cmd, error = %e, "command stopped");
                return Err(e);
            }
        };
        // Exited: whatever it left behind is not killed; its pipes get a bounded grace.
        if let Some(s) = run.collect(exited_at + Self::PIPE_GRACE) {
            tracing::warn!(command = %cmd, stream = s.name(), "output past the limit after the command exited");
            return Err(self.too_large(cmd, s));
        }
        if run.open > 0 {
            tracing::warn!(command = %cmd, grace_ms = Self::PIPE_GRACE.as_millis() as u64, "output pipes still open after the command exited (a process it started holds them); output may be incomplete");
        }
        let status = match status.code() {
            Some(c) => ExitStatus::Code(c),
            None => {
                use std::os::unix::process::ExitStatusExt;
                ExitStatus::Signal(status.signal().unwrap_or(0))
            }
        };
        let output = CommandOutput {
            status,
            stdout: String::from_utf8_lossy(&run.out).into_owned(),
            stderr: String::from_utf8_lossy(&run.err).into_owned(),
        };
        tracing::debug!(command = %cmd, %status, elapsed_ms = started.elapsed().as_millis() as u64, "finished");
        Ok(output)
    }
}

impl SystemRunner {
    fn too_large(&self, cmd: &Command, s: Stream) -> Error {
        Error::OutputTooLarge {
            program: cmd.program.clone(),
            args: cmd.shown_args(),
            stream: s.name(),
            limit: self.output_limit,
        }
    }
}

/// How often a running command is checked for having exited when nothing woke the wait:
/// the exit watch ([`spawn_exit_watch`]) announces it at once, this is the fall-back.
const EXIT_POLL: Duration = Duration::from_millis(100);

/// The most a pipe reader reads at once.
const READ_CHUNK: usize = 64 * 1024;

/// Why a running command is stopped.
enum Stop {
    TimedOut,
    Cancelled,
    Overflow(Stream),
    Wait(std::io::Error),
}

/// The output of a running command, as its readers deliver it.
struct Running {
    rx: mpsc::Receiver<Event>,
    out: Vec<u8>,
    err: Vec<u8>,
    /// Streams not yet at their end.
    open: usize,
}

impl Running {
    /// Collects output until the child exits (not reaping it after a stop, so that its
    /// group can still be killed safely) or must be stopped.
    fn until_exit(
        &mut self,
        child: &mut std::process::Child,
        deadline: Instant,
    ) -> std::result::Result<(std::process::ExitStatus, Instant), Stop> {
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok((status, Instant::now())),
                Ok(None) => {}
                Err(e) => return Err(Stop::Wait(e)),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Stop::TimedOut);
            }
            // Woken by output, a pipe closing, the exit or a cancellation; else checks for
            // the exit anyway now and then.
            match self.rx.recv_timeout((deadline - now).min(EXIT_POLL)) {
                Ok(Event::Cancelled) => return Err(Stop::Cancelled),
                Ok(Event::Exited) => {}
                Ok(ev) => {
                    if let Some(s) = self.take(ev) {
                        return Err(Stop::Overflow(s));
                    }
                }
                Err(_) => {}
            }
        }
    }

    /// Collects output until both pipes closed or `until`; `Some` when a stream went past
    /// the limit.
    fn collect(&mut self, until: Instant) -> Option<Stream> {
        while self.open > 0 {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.rx.recv_timeout(left) {
                Ok(ev) => {
                    if let Some(s) = self.take(ev) {
                        return Some(s);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// After a stop: lets the readers finish until `until`, dropping what they read.
    fn drain(&mut self, until: Instant) {
        while self.open > 0 {
            let left = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Event::Eof | Event::Overflow(_)) => self.open -= 1,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }

    /// Takes one event in; `Some` when a stream went past the limit.
    fn take(&mut self, ev: Event) -> Option<Stream> {
        match ev {
            Event::Data(Stream::Stdout, b) => self.out.extend_from_slice(&b),
            Event::Data(Stream::Stderr, b) => self.err.extend_from_slice(&b),
            Event::Eof => self.open -= 1,
            Event::Overflow(s) => {
                self.open -= 1;
                return Some(s);
            }
            // Past the exit a cancellation has nothing left to stop.
            Event::Cancelled | Event::Exited => {}
        }
        None
    }
}

/// Kills the child's process group (the child is not reaped yet, so its pid, the group
/// id, is still ours) and reaps the child, waiting at most [`SystemRunner::REAP_GRACE`].
fn kill_and_reap(mut child: std::process::Child, cmd: &Command) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    match i32::try_from(child.id()) {
        Ok(pid) => {
            if let Err(e) = killpg(Pid::from_raw(pid), Signal::SIGKILL) {
                tracing::debug!(command = %cmd, error = %e, "killing the process group failed; killing the program");
                let _ = child.kill();
            }
        }
        Err(_) => {
            let _ = child.kill();
        }
    }
    let until = Instant::now() + SystemRunner::REAP_GRACE;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) if Instant::now() >= until => break,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    tracing::warn!(command = %cmd, "killed program not reaped yet (stuck in the kernel?); leaving it to a background reaper");
    std::thread::spawn(move || {
        let _ = child.wait();
    });
}

/// The most bytes written to a program's stdin in the calling thread: a write of at most
/// `PIPE_BUF` (4096 on Linux) to a fresh pipe never blocks, whatever the pipe's capacity.
const STDIN_INLINE: usize = 4096;

/// Writes `secret` to the program's stdin pipe and closes it. A small value (a key or
/// passphrase) is written at once; a larger one by a thread, so that a program that reads
/// its input only while it writes output cannot stall the call. A program that exits
/// without reading all of it makes the write fail (`EPIPE`): that is its exit to report,
/// not an error here.
fn feed_stdin(mut pipe: std::process::ChildStdin, secret: &Secret, cmd: &Command) {
    use std::io::Write;
    if secret.expose().len() <= STDIN_INLINE {
        if let Err(e) = pipe.write_all(secret.expose().as_bytes()) {
            tracing::debug!(command = %cmd, error = %e, "the program did not read its stdin");
        }
        return;
    }
    let secret = secret.duplicate();
    std::thread::spawn(move || {
        let _ = pipe.write_all(secret.expose().as_bytes());
    });
}

/// Announces the exit of child `pid` on `tx` without reaping it (`waitid` with `WNOWAIT`),
/// so that a call returns as soon as its program ends, not at the next poll, and the pid
/// stays the child's (and its group's) until the call reaps it. The thread ends with the
/// child; one whose child never ends (stuck in the kernel) stays blocked, as the child does.
fn spawn_exit_watch(pid: u32, tx: mpsc::Sender<Event>) {
    use nix::errno::Errno;
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    use nix::unistd::Pid;
    let Ok(pid) = i32::try_from(pid) else { return };
    std::thread::spawn(move || {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
        while let Err(Errno::EINTR) = waitid(Id::Pid(Pid::from_raw(pid)), flags) {}
        let _ = tx.send(Event::Exited);
    });
}

fn cancelled(cmd: &Command) -> Error {
    Error::CommandCancelled {
        program: cmd.program.clone(),
        args: cmd.shown_args(),
    }
}

/// Reads `pipe` in chunks and sends them; stops past `limit` bytes, or when nobody listens
/// any more (the call returned and abandoned it).
fn spawn_reader<R: Read + Send + 'static>(
    pipe: Option<R>,
    stream: Stream,
    limit: usize,
    tx: mpsc::Sender<Event>,
) {
    let Some(mut pipe) = pipe else {
        let _ = tx.send(Event::Eof);
        return;
    };
    std::thread::spawn(move || {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut total = 0usize;
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    total = total.saturating_add(n);
                    if total > limit {
                        let _ = tx.send(Event::Overflow(stream));
                        return;
                    }
                    if tx.send(Event::Data(stream, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // A read error ends the output early; what was read is still reported.
                Err(_) => break,
            }
        }
        let _ = tx.send(Event::Eof);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::secret::Secret;
    use crate::platform::cmd::Cancel;

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
    fn a_stdin_secret_reaches_the_program_and_nothing_shows_it() {
        let r = SystemRunner::new();
        // Exactly the bytes, a trailing newline kept, then end of file.
        let c = Command::new("cat").stdin_secret(&Secret::new("pass phrase\n"));
        assert_eq!(r.run(&c).unwrap().stdout, "pass phrase\n");
        assert_eq!(c.to_string(), "cat  <stdin ***>");
        assert!(!format!("{c:?}").contains("phrase"));
        assert!(!c.shown_args().contains("phrase"));
        let e = c.failure(&CommandOutput::exit(2, "No key available"));
        assert!(!e.chain().contains("phrase"), "{}", e.chain());
        // Without a secret stdin is /dev/null: a reader sees end of file at once.
        let out = r.run(&Command::new("wc").arg("-c")).unwrap();
        assert_eq!(out.stdout.trim(), "0");
        // Larger than a pipe buffer: written by a thread while the program reads.
        let big = "k".repeat(200_000);
        let out = r
            .run(
                &Command::new("wc")
                    .arg("-c")
                    .stdin_secret(&Secret::new(big.as_str())),
            )
            .unwrap();
        assert_eq!(out.stdout.trim(), "200000");
        // A program that does not read it: its exit is what counts, the call returns.
        let t0 = Instant::now();
        let out = r
            .run(&Command::new("true").stdin_secret(&Secret::new(big.as_str())))
            .unwrap();
        assert!(out.status.success());
        assert!(t0.elapsed() < Duration::from_secs(5));
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

    /// Writes a script's `$!` to a file: `sh -c SCRIPT FILE` sees the file as `$0`.
    fn sh_with_pidfile(script: &str) -> (tempfile::TempDir, PathBuf, Command) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pid");
        let cmd = Command::new("/bin/sh")
            .args(["-c", script])
            .arg(file.display().to_string());
        (dir, file, cmd)
    }

    fn read_pid(file: &Path) -> i32 {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(s) = std::fs::read_to_string(file) {
                if let Ok(p) = s.trim().parse() {
                    return p;
                }
            }
            assert!(Instant::now() < until, "no pid in {}", file.display());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// True while `pid` runs (a zombie waiting for its reaper counts as gone).
    fn alive(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the parenthesised name.
            Ok(stat) => stat
                .rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
                .unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Waits up to 2 s for `pid` to be gone.
    fn gone(pid: i32) -> bool {
        let until = Instant::now() + Duration::from_secs(2);
        while alive(pid) {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    fn kill_pid(pid: i32) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }

    #[test]
    fn a_timeout_kills_the_grandchildren_too() {
        let (_dir, file, cmd) = sh_with_pidfile(r#"sleep 100 & echo $! >"$0"; wait"#);
        let t0 = Instant::now();
        let e = SystemRunner::new()
            .run(&cmd.timeout(Duration::from_millis(300)))
            .unwrap_err();
        assert!(matches!(e, Error::CommandTimedOut { .. }), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        let pid = read_pid(&file);
        let killed = gone(pid);
        kill_pid(pid);
        assert!(killed, "grandchild {pid} survived the timeout");
    }

    #[test]
    fn a_cancel_kills_the_grandchildren_too() {
        let (_dir, file, cmd) = sh_with_pidfile(r#"sleep 100 & echo $! >"$0"; wait"#);
        let cancel = Cancel::new();
        let c2 = cancel.clone();
        let f2 = file.clone();
        let t = std::thread::spawn(move || {
            read_pid(&f2);
            c2.cancel();
        });
        let t0 = Instant::now();
        let e = SystemRunner::new()
            .run(&cmd.cancel_with(&cancel))
            .unwrap_err();
        t.join().unwrap();
        assert!(matches!(e, Error::CommandCancelled { .. }), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        let pid = read_pid(&file);
        let killed = gone(pid);
        kill_pid(pid);
        assert!(killed, "grandchild {pid} survived the cancel");
    }

    #[test]
    fn a_timeout_returns_although_an_escaped_grandchild_holds_the_pipes() {
        // `setsid` puts the grandchild out of the group: the kill misses it and it keeps
        // the pipes open.
        let (_dir, file, cmd) = sh_with_pidfile(r#"setsid sleep 100 & echo $! >"$0"; sleep 100"#);
        let t0 = Instant::now();
        let e = SystemRunner::new()
            .run(&cmd.timeout(Duration::from_millis(300)))
            .unwrap_err();
        let took = t0.elapsed();
        kill_pid(read_pid(&file));
        assert!(matches!(e, Error::CommandTimedOut { .. }), "{e}");
        let bound = Duration::from_millis(300) + SystemRunner::PIPE_GRACE + Duration::from_secs(2);
        assert!(took < bound, "{took:?}");
    }

    #[test]
    fn a_program_that_closed_its_pipes_is_still_bound_by_its_timeout() {
        let t0 = Instant::now();
        let e = SystemRunner::new()
            .run(
                &Command::new("/bin/sh")
                    .args(["-c", "exec >/dev/null 2>&1; sleep 30"])
                    .timeout(Duration::from_millis(300)),
            )
            .unwrap_err();
        assert!(matches!(e, Error::CommandTimedOut { .. }), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    }

    #[test]
    fn a_success_returns_and_leaves_what_it_started_running() {
        // As `rbd-nbd map` does: the command exits 0 and a daemon it started serves on.
        // Here the daemon holds the pipes and left the group: the call still returns, after
        // the pipe grace, with the output and the status, and the daemon is not killed.
        let (_dir, file, cmd) =
            sh_with_pidfile(r#"setsid sleep 100 & echo $! >"$0"; echo /dev/nbd0; exit 0"#);
        let t0 = Instant::now();
        let r = SystemRunner::new().run(&cmd.timeout(Duration::from_secs(30)));
        let took = t0.elapsed();
        let pid = read_pid(&file);
        let survived = alive(pid);
        kill_pid(pid);
        let out = r.unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, "/dev/nbd0\n");
        assert!(
            took < SystemRunner::PIPE_GRACE + Duration::from_secs(2),
            "{took:?}"
        );
        assert!(survived, "a successful command's daemon was killed");

        // A daemon that stays in the group and closed the pipes: returns at once, untouched.
        let (_dir, file, cmd) =
            sh_with_pidfile(r#"sleep 100 >/dev/null 2>&1 & echo $! >"$0"; echo mapped"#);
        let t0 = Instant::now();
        let out = SystemRunner::new().run(&cmd).unwrap();
        let took = t0.elapsed();
        let pid = read_pid(&file);
        let survived = alive(pid);
        kill_pid(pid);
        assert_eq!(out.stdout, "mapped\n");
        assert!(took < Duration::from_secs(1), "{took:?}");
        assert!(survived, "a successful command's daemon was killed");
    }

    #[test]
    fn output_past_the_limit_is_a_typed_error() {
        let r = SystemRunner::new().with_output_limit(4096);
        let out = r
            .run(&Command::new("head").args(["-c", "4096", "/dev/zero"]))
            .unwrap();
        assert_eq!(out.stdout.len(), 4096);
        let e = r
            .run(&Command::new("head").args(["-c", "1048576", "/dev/zero"]))
            .unwrap_err();
        match &e {
            Error::OutputTooLarge { stream, limit, .. } => {
                assert_eq!((*stream, *limit), ("stdout", 4096));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.kind(), "output_too_large");
        let e = r
            .run(&Command::new("/bin/sh").args(["-c", "head -c 100000 /dev/zero >&2"]))
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::OutputTooLarge {
                    stream: "stderr",
                    ..
                }
            ),
            "{e}"
        );
        // Endless output ends at the limit, not at the time limit.
        let t0 = Instant::now();
        let e = r
            .run(&Command::new("yes").timeout(Duration::from_secs(30)))
            .unwrap_err();
        assert!(matches!(e, Error::OutputTooLarge { .. }), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }

    #[test]
    fn root_helper_prefixes() {
        let r = SystemRunner::new().with_root_helper(["env"]);
        let out = r.run(&Command::new("echo").arg("hi")).unwrap();
        assert_eq!(out.stdout, "hi\n");
    }
}
