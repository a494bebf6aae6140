//! Cancellation of a running operation: the operation's [`Cancel`] as the current one of the
//! threads working for it, read by every wait beneath the operation.
//!
//! The frame of an operation ([`crate::connector::Framed`]) makes the connector's cancel
//! ([`crate::ConnectorOptions::cancel`]) the current one of its thread for the operation's
//! duration ([`enter`]), as it enters the operation's tracing span; a thread the operation
//! starts enters it too. Beneath, without each signature carrying it:
//!
//! - commands: a connector with a cancel runs its commands through [`CancelRunner`], which
//!   lets the current cancel stop every command that has no cancellation of its own;
//! - device waits ([`crate::platform::wait::DeviceWatch::wait_for`]) and lock waits
//!   ([`crate::LockDir::lock_until`]) check it between their polls (every 25 ms and 10 ms),
//!   and so do the pauses before a retry;
//! - the steps that cannot be cut short check it before they start (the write of an NVMe-oF
//!   connect to `/dev/nvme-fabrics`, which blocks in the kernel).
//!
//! A wait that sees the cancel fails with [`Error::WaitCancelled`], a command with
//! [`Error::CommandCancelled`]; the frame reports the operation as [`Error::Cancelled`].
//!
//! What undoes a failed connect, and the few steps that must not be killed half way (an
//! iSCSI login, whose iscsid carries on logging in when iscsiadm is killed; an RBD map),
//! run [`shield`]ed: no cancel is current there, and only their own deadline bounds them.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::platform::cmd::{Cancel, Command, CommandOutput, CommandRunner};

thread_local! {
    static CURRENT: RefCell<Option<Cancel>> = const { RefCell::new(None) };
}

/// While alive, the cancel given to [`enter`] (or none, from [`shield`]) is the thread's
/// current one; dropping it restores the one before. Not `Send`: it belongs to its thread.
#[must_use = "the cancel is current only while the scope lives"]
pub(crate) struct Scope {
    previous: Option<Cancel>,
    _thread: PhantomData<*const ()>,
}

impl Drop for Scope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// Makes `cancel` the thread's current cancel (none for `None`) until the scope drops.
pub(crate) fn enter(cancel: Option<Cancel>) -> Scope {
    let previous = CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), cancel));
    Scope {
        previous,
        _thread: PhantomData,
    }
}

/// No cancel is current until the scope drops: what runs beneath goes to its own deadline
/// (rollback after a failure, steps that must not be cut short).
pub(crate) fn shield() -> Scope {
    enter(None)
}

/// The thread's current cancel, to enter in a thread started for the operation.
pub(crate) fn current() -> Option<Cancel> {
    CURRENT.with(|c| c.borrow().clone())
}

/// True when the thread's current cancel has fired.
pub(crate) fn is_cancelled() -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_some_and(Cancel::is_cancelled))
}

/// [`Error::WaitCancelled`] naming `what` when the current cancel has fired.
pub(crate) fn check(what: impl FnOnce() -> String) -> Result<()> {
    if is_cancelled() {
        return Err(Error::WaitCancelled { what: what() });
    }
    Ok(())
}

/// A runner that lets the thread's current cancel stop each command that carries no
/// cancellation of its own; the commands run on the runner it wraps.
pub(crate) struct CancelRunner {
    inner: Arc<dyn CommandRunner>,
}

impl CancelRunner {
    /// `inner`, with the current cancel added to its commands.
    pub(crate) fn new(inner: Arc<dyn CommandRunner>) -> Self {
        CancelRunner { inner }
    }
}

impl fmt::Debug for CancelRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The runner commands really go to; the wrapper adds nothing worth showing.
        self.inner.fmt(f)
    }
}

impl CommandRunner for CancelRunner {
    fn run(&self, cmd: &Command) -> Result<CommandOutput> {
        match current() {
            Some(c) if cmd.cancellation().is_none() => self.inner.run(&cmd.clone().cancel_with(&c)),
            _ => self.inner.run(cmd),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeRunner;

    #[test]
    fn scopes_nest_and_restore() {
        assert!(current().is_none());
        let c = Cancel::new();
        {
            let _a = enter(Some(c.clone()));
            assert!(current().is_some());
            {
                let _s = shield();
                assert!(current().is_none());
                c.cancel();
                assert!(!is_cancelled());
                assert!(check(|| "x".into()).is_ok());
            }
            assert!(is_cancelled());
            let e = check(|| "the LUN".into()).unwrap_err();
            assert!(matches!(e, Error::WaitCancelled { .. }));
            assert_eq!(e.kind(), "wait_cancelled");
        }
        assert!(current().is_none());
    }

    #[test]
    fn the_runner_adds_the_current_cancel_unless_the_command_has_one() {
        let fake = Arc::new(FakeRunner::new());
        fake.on("true", &[], |_| CommandOutput::ok(""));
        let runner = CancelRunner::new(fake.clone());
        let op = Cancel::new();
        op.cancel();
        // Outside any operation: runs.
        assert!(runner.run(&Command::new("true")).is_ok());
        let _in = enter(Some(op.clone()));
        let e = runner.run(&Command::new("true")).unwrap_err();
        assert!(matches!(e, Error::CommandCancelled { .. }), "{e}");
        // A command with a cancellation of its own keeps it.
        let own = Cancel::new();
        assert!(runner.run(&Command::new("true").cancel_with(&own)).is_ok());
        {
            let _s = shield();
            assert!(runner.run(&Command::new("true")).is_ok());
        }
        assert_eq!(fake.commands().len(), 4);
    }
}
