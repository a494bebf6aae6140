//! `SIGINT` and `SIGTERM` for the commands that change the host (`connect`, `disconnect`,
//! `extend`, `batch`): the first signal cancels the running operations through the
//! connectors' [`Cancel`] (a connect undoes what it made and the command fails with
//! `error[cancelled]`, exit 1); a second one exits at once (128 + the signal's number), leaving
//! whatever is half made to `attach audit`, as after a `SIGKILL`.
//!
//! The signals are blocked in every thread (the mask is set before any other thread starts
//! and threads inherit it) and taken by one thread of their own with `sigwait`: no handler
//! runs in the middle of anything, and no `unsafe`. Programs the runner starts get the
//! default mask back (the standard library resets it before `exec`).

use nix::sys::signal::{SigSet, Signal};

use hostbrick::Cancel;

/// Blocks `SIGINT` and `SIGTERM` and starts the thread that takes them; the returned cancel
/// fires on the first. `then` runs on a thread of its own after that cancel (for `batch`:
/// exit once the answers under way are written); a second signal exits at once, even
/// while `then` runs. Call it before starting any other thread.
pub fn on_first_signal(then: impl FnOnce() + Send + 'static) -> std::io::Result<Cancel> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().map_err(std::io::Error::from)?;
    let cancel = Cancel::new();
    let fire = cancel.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut then = Some(then);
            loop {
                let signal = match set.wait() {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("warning: waiting for signals failed: {e}; signals are ignored from now on");
                        return;
                    }
                };
                match then.take() {
                    Some(then) => {
                        eprintln!("attach: {signal} received: cancelling (a second signal exits at once)");
                        fire.cancel();
                        std::thread::spawn(then);
                    }
                    None => {
                        eprintln!(
                            "attach: {signal} again: exiting now; what was half made is left to `attach audit`"
                        );
                        std::process::exit(128 + signal as i32);
                    }
                }
            }
        })?;
    Ok(cancel)
}
