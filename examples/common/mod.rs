//! What the example command lines share: logging set-up, the run-and-report frame
//! (`error[KIND]: message`, exit 1; `error[usage]`, exit 2), option values and the host
//! context.

#![allow(dead_code)] // each example uses the part it needs

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use hostbrick::{ConnectorOptions, HostContext, MultipathMode, SystemRunner};

/// A command-line mistake (empty: `--help` was asked for).
pub struct Usage(pub String);

/// Tracing to stderr, filtered by `RUST_LOG` (default: warnings).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Parses the command line, runs, prints the result on stdout (when not empty) or the error
/// on stderr, and gives the exit status.
pub fn cli_main<A>(
    usage: &str,
    parse: impl FnOnce(Vec<String>) -> Result<A, Usage>,
    run: impl FnOnce(&A) -> hostbrick::Result<String>,
) -> ExitCode {
    init_tracing();
    let args = match parse(std::env::args().skip(1).collect()) {
        Ok(a) => a,
        Err(Usage(msg)) => {
            if msg.is_empty() {
                println!("{usage}");
                return ExitCode::SUCCESS;
            }
            eprintln!("error[usage]: {msg}\n{usage}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error[{}]: {}", e.kind(), e.chain());
            ExitCode::FAILURE
        }
    }
}

/// The value after `flag`.
pub fn value(flag: &str, it: &mut impl Iterator<Item = String>) -> Result<String, Usage> {
    it.next()
        .ok_or_else(|| Usage(format!("{flag} needs a value")))
}

/// `--timeout SECS`: a positive number of seconds.
pub fn timeout(it: &mut impl Iterator<Item = String>) -> Result<Duration, Usage> {
    let v = value("--timeout", it)?;
    v.parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            Usage(format!(
                "--timeout {v:?} is not a positive number of seconds"
            ))
        })
}

/// The running system, commands prefixed by `root_helper` (e.g. `sudo`) when given.
pub fn system_context(root_helper: Option<&str>) -> HostContext {
    let mut runner = SystemRunner::new();
    if let Some(helper) = root_helper {
        runner = runner.with_root_helper(helper.split_whitespace());
    }
    HostContext::new(hostbrick::Host::system(), Arc::new(runner))
}

/// The options every connecting command line shares: root helper, multipath, the operation
/// deadline and the lock directory.
pub fn connector_options(
    root_helper: Option<&str>,
    multipath: MultipathMode,
    timeout: Option<Duration>,
    lock_dir: Option<&str>,
) -> ConnectorOptions {
    let mut o = ConnectorOptions::with_context(system_context(root_helper)).multipath(multipath);
    if let Some(t) = timeout {
        o = o.operation_timeout(t);
    }
    if let Some(d) = lock_dir {
        o = o.lock_dir(d);
    }
    o
}

/// This host's name (`localhost` when it cannot be read).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".to_string())
}
