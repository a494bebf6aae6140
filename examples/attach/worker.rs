//! The multipath iSCSI `connect` through a detached worker process.
//!
//! A multipath connect returns as soon as its map is usable; the paths still logging in (a
//! dead portal's) finish in the background, on threads of the process that connected
//! (`hostbrick::iscsi::late_paths_pending`). `attach` is one process per call, and a process
//! that exits ends those threads. So `attach connect` of a multipath iSCSI volume runs the
//! connect in a child of its own, `attach __connect-worker` (in a new process group, the
//! connection_info on a pipe, never on its command line): the child connects and writes the
//! record on its stdout; `connect` prints it and exits at once, with the child's exit
//! status when the child ended without a record. The child, when paths are still coming
//! up, stays until they joined the map or were undone, under a pid file in the private
//! state directory (`attach-workers/<volume>.pid`, mode 0600); its log (stderr) is
//! `attach-workers/<volume>.log`, which `connect` copies to its own stderr up to the record
//! (the rest tells what became of the late paths; the volume's disconnect removes it, and
//! `connect` itself when the worker ended with it).
//!
//! `disconnect` stops the worker of its volume first: `SIGTERM` (only once `/proc` shows the
//! pid is this program running `__connect-worker`), which stops the pending logins and undoes
//! what came up, then waits for it to end before taking the volume down.
//!
//! Signals to `connect` are forwarded to the worker while it connects (the first cancels the
//! connect, as without a worker); a worker killed by a signal makes `connect` exit with
//! 128 + that signal. Where the state directory cannot hold the worker's files, the connect
//! runs in this process and, before it exits, stops the paths still coming up (they are
//! undone, never left half made).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use hostbrick::{ConnectionInfo, Host};

/// The hidden subcommand of the worker.
pub const WORKER_COMMAND: &str = "__connect-worker";

/// How long `disconnect` waits for a stopped worker to end.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// How often `disconnect` looks whether the worker has ended.
const STOP_POLL: Duration = Duration::from_millis(20);

/// The worker files' directory in the state directory.
fn dir(host: &Host) -> PathBuf {
    host.state_dir().join("attach-workers")
}

/// The directory, created (0700) when missing; `None` when it cannot be used.
fn ensure_dir(host: &Host) -> Option<PathBuf> {
    let d = dir(host);
    match fs::DirBuilder::new().recursive(true).mode(0o700).create(&d) {
        Ok(()) => Some(d),
        Err(e) => {
            tracing::warn!(dir = %d.display(), error = %e, "cannot make the worker directory; connecting in this process");
            None
        }
    }
}

/// The file name stem of a volume's worker files: its lock key, hex-encoded.
fn stem(info: &ConnectionInfo) -> Option<String> {
    let key = info.iscsi()?.volume_key();
    Some(key.bytes().map(|b| format!("{b:02x}")).collect())
}

/// Whether `info`'s connect goes through a worker: a multipath iSCSI (or iSER) connect.
pub fn wanted(info: &ConnectionInfo, multipath: bool) -> bool {
    multipath && info.iscsi().is_some()
}

/// `connect` through a worker: returns the record's JSON, or exits with the worker's status.
/// `None` when no worker could be started (the caller connects in this process).
pub fn connect(
    host: &Host,
    info: &ConnectionInfo,
    text: &str,
    worker_args: Vec<String>,
    child_pid: &Arc<AtomicI32>,
) -> Option<hostbrick::Result<String>> {
    let d = ensure_dir(host)?;
    let stem = stem(info)?;
    let log_path = d.join(format!("{stem}.log"));
    let log = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&log_path)
        .ok()?;
    let exe = std::env::current_exe().ok()?;
    let mut child = match Command::new(exe)
        .arg(WORKER_COMMAND)
        .args(worker_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the connect worker; connecting in this process");
            return None;
        }
    };
    child_pid.store(child.id() as i32, Ordering::SeqCst);
    if let Some(mut stdin) = child.stdin.take() {
        // A worker that died first reports itself below.
        let _ = stdin.write_all(text.as_bytes());
    }
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    copy_log(&log_path);
    if line.ends_with('\n') {
        // With paths still coming up the worker noted its pid before the record and goes on
        // alone (its log stays until the volume's disconnect); else it is ending now, and
        // its log, copied above, goes.
        if !d.join(format!("{stem}.pid")).exists() {
            let _ = child.wait();
            let _ = fs::remove_file(&log_path);
        }
        return Some(Ok(line.trim_end().to_string()));
    }
    let code = match child.wait() {
        Ok(s) => s
            .code()
            .or_else(|| s.signal().map(|n| 128 + n))
            .unwrap_or(1),
        Err(_) => 1,
    };
    // The worker wrote its error (error[KIND]: ...) into the log copied above; nothing was
    // connected, so nothing will disconnect and remove it.
    let _ = fs::remove_file(&log_path);
    std::process::exit(code);
}

/// Copies the worker's log so far to stderr.
fn copy_log(path: &Path) {
    let mut text = Vec::new();
    if fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut text))
        .is_ok()
    {
        let _ = std::io::stderr().write_all(&text);
    }
}

/// The worker, after its connect: when paths are still coming up, notes its pid, writes the
/// record, and stays until they are done (or stopped by a signal); else writes the record.
pub fn serve(host: &Host, info: &ConnectionInfo, record_json: &str) {
    let pending = hostbrick::iscsi::late_paths_pending() > 0;
    let pid_file = match (pending, dir(host), stem(info)) {
        (true, d, Some(stem)) => {
            let p = d.join(format!("{stem}.pid"));
            let written = fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&p)
                .and_then(|mut f| writeln!(f, "{}", std::process::id()));
            match written {
                Ok(()) => Some(p),
                Err(e) => {
                    // No one could stop the worker: the paths are stopped now instead.
                    tracing::warn!(error = %e, "cannot write the worker's pid file; stopping the paths still coming up");
                    hostbrick::iscsi::cancel_late_paths();
                    None
                }
            }
        }
        _ => None,
    };
    println!("{record_json}");
    let _ = std::io::stdout().flush();
    let started = Instant::now();
    hostbrick::iscsi::wait_for_late_paths();
    if let Some(p) = pid_file {
        eprintln!(
            "attach: background paths done after {} ms",
            started.elapsed().as_millis()
        );
        let _ = fs::remove_file(p);
    }
}

/// Connect in this process without a worker: the paths still coming up when the record is
/// out are stopped (undone) before the process exits.
pub fn stop_in_process() {
    if hostbrick::iscsi::late_paths_pending() > 0 {
        hostbrick::iscsi::cancel_late_paths();
        hostbrick::iscsi::wait_for_late_paths();
    }
}

/// Stops the connect worker of `info`'s volume, if one runs, and waits for it to end.
pub fn stop(host: &Host, info: &ConnectionInfo) {
    let Some(stem) = stem(info) else { return };
    let p = dir(host).join(format!("{stem}.pid"));
    let Ok(text) = fs::read_to_string(&p) else {
        return;
    };
    let pid = match text.trim().parse::<i32>() {
        Ok(n) if n > 1 => n,
        _ => {
            let _ = fs::remove_file(&p);
            return;
        }
    };
    if !is_worker(pid) {
        tracing::debug!(pid, "stale worker pid file");
        let _ = fs::remove_file(&p);
        return;
    }
    eprintln!("attach: stopping the connect worker {pid} (paths still coming up)");
    if kill(Pid::from_raw(pid), Signal::SIGTERM).is_err() {
        let _ = fs::remove_file(&p);
        return;
    }
    let end = Instant::now() + STOP_WAIT;
    while is_worker(pid) && Instant::now() < end {
        std::thread::sleep(STOP_POLL);
    }
    if is_worker(pid) {
        eprintln!("warning: the connect worker {pid} did not end within {STOP_WAIT:?}");
    }
    let _ = fs::remove_file(&p);
}

/// Removes the worker's log of `info`'s volume (after its disconnect).
pub fn forget(host: &Host, info: &ConnectionInfo) {
    if let Some(stem) = stem(info) {
        let _ = fs::remove_file(dir(host).join(format!("{stem}.log")));
    }
}

/// Whether `pid` is a live (not zombie) process of this program running the worker.
fn is_worker(pid: i32) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = fs::read_to_string(proc.join("stat")) else {
        return false;
    };
    // `pid (comm) S ...`: the state follows the last ')'.
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']));
    if zombie {
        return false;
    }
    let Ok(cmdline) = fs::read(proc.join("cmdline")) else {
        return false;
    };
    let mut args = cmdline.split(|b| *b == 0);
    let _argv0 = args.next();
    if args.next() != Some(WORKER_COMMAND.as_bytes()) {
        return false;
    }
    match (
        fs::read_link(proc.join("exe")),
        std::env::current_exe().and_then(fs::canonicalize),
    ) {
        (Ok(theirs), Ok(ours)) => theirs == ours,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_live_worker_of_this_program_counts() {
        // This test process is this program, not running the worker subcommand.
        assert!(!is_worker(std::process::id() as i32));
        assert!(!is_worker(i32::MAX));
    }

    #[test]
    fn stems_are_the_hex_of_the_volume_key() {
        let info = ConnectionInfo::from_json(
            r#"{"driver_volume_type": "iscsi", "data": {"target_portal": "127.0.0.1:3260",
                "target_iqn": "iqn.2003-01.x:t", "target_lun": 0, "volume_id": "v-1"}}"#,
        )
        .unwrap();
        let s = stem(&info).unwrap();
        assert_eq!(
            s,
            "volume-v-1"
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        assert!(s.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(wanted(&info, true) && !wanted(&info, false));
    }

    #[test]
    fn a_pid_file_of_a_dead_or_foreign_process_is_removed_and_nothing_is_signalled() {
        let tmp = std::env::temp_dir().join(format!("hb-worker-test-{}", std::process::id()));
        let host = Host::with_root(&tmp);
        let info = ConnectionInfo::from_json(
            r#"{"driver_volume_type": "iscsi", "data": {"target_portal": "127.0.0.1:3260",
                "target_iqn": "iqn.2003-01.x:t", "target_lun": 0, "volume_id": "w"}}"#,
        )
        .unwrap();
        let d = ensure_dir(&host).unwrap();
        let pid_file = d.join(format!("{}.pid", stem(&info).unwrap()));
        // Our own pid: alive, but not a worker.
        fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        stop(&host, &info);
        assert!(!pid_file.exists());
        let _ = fs::remove_dir_all(&tmp);
    }
}
