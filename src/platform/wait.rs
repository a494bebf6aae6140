//! Waiting for devices: udev events first, sysfs polling only where udev is absent.
//!
//! The order is always: open the watch, act (login, scan, connect, map, delete), then
//! [`DeviceWatch::wait_for`] a condition with one deadline. The condition is checked at once
//! (the device may already be there), then again after every udev event on the watched
//! subsystems and at least every [`UDEV_RECHECK_INTERVAL`], so nothing that happens between
//! the action and the wait is missed, and a device udev has recorded is seen before its event.

use std::time::{Duration, Instant};

// Events of this module log under the target `hostbrick::wait` (operators filter on it, e.g.
// `RUST_LOG=hostbrick::wait=trace`), whatever folder the module sits in.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{Error, Result};
use crate::platform::cancel;
use crate::platform::host::Host;
use crate::platform::uevent::Uevent;

/// How often a condition is re-checked when udev cannot be used (fake trees, hosts
/// without udevd).
pub const SYSFS_POLL_INTERVAL: Duration = Duration::from_millis(25);

/// The longest a udev-driven wait goes without re-checking its condition. Events drive the
/// wait; between them the condition is checked this often too, for two reasons: udev writes
/// a device's database record and links before it runs the rules' `RUN` programs and only
/// then tells its listeners (a device is ready, and a by-path link there, from the record's
/// write on, tens of milliseconds before its event under emulation), and the kernel announces
/// some sysfs changes with no uevent at all (hidden NVMe path disks, for one).
pub const UDEV_RECHECK_INTERVAL: Duration = Duration::from_millis(25);

/// A subscription to device events, opened before the action it waits on.
pub struct DeviceWatch {
    monitor: Option<udev::MonitorSocket>,
    poll_interval: Duration,
}

impl std::fmt::Debug for DeviceWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceWatch")
            .field("udev", &self.monitor.is_some())
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

impl DeviceWatch {
    /// Subscribes to udev events of `subsystems` when `host` runs udevd; otherwise the
    /// watch polls. A udev monitor that cannot be opened degrades to polling with a warning.
    pub fn open(host: &Host, subsystems: &[&str]) -> Self {
        let monitor = if host.udev_active() {
            match open_monitor(subsystems) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(target: "hostbrick::wait", error = %e.chain(), "udev monitor unavailable; polling sysfs");
                    None
                }
            }
        } else {
            None
        };
        DeviceWatch {
            monitor,
            poll_interval: SYSFS_POLL_INTERVAL,
        }
    }

    /// A watch that only polls, every `interval`.
    pub fn polling(interval: Duration) -> Self {
        DeviceWatch {
            monitor: None,
            poll_interval: interval,
        }
    }

    /// True when driven by udev events.
    pub fn is_event_driven(&self) -> bool {
        self.monitor.is_some()
    }

    /// Blocks until a udev event on the watched subsystems arrives (draining what came) or
    /// `until` passes; a watch without udev sleeps until then. The number of events seen.
    pub fn next_event(&mut self, until: Instant) -> Result<u64> {
        let left = until.saturating_duration_since(Instant::now());
        match &self.monitor {
            Some(m) => wait_event(m, left),
            None => {
                std::thread::sleep(left);
                Ok(0)
            }
        }
    }

    /// Waits until `check` returns `Some`, or `deadline` passes (a [`Error::Timeout`] naming
    /// `what`). Errors from `check` end the wait. So does the operation's cancel
    /// ([`ConnectorOptions::cancel`](crate::ConnectorOptions::cancel)), seen before each
    /// check (a cancelled operation passes no wait, even one whose condition holds already)
    /// and so within [`UDEV_RECHECK_INTERVAL`] of firing, in a polling watch too whatever its
    /// interval: [`Error::WaitCancelled`] naming `what`.
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        deadline: Instant,
        mut check: impl FnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        let mut events = 0;
        loop {
            // Before the condition: a cancelled operation goes no further, even when what it
            // waits for is already there.
            cancel::check(|| what.to_string())?;
            if let Some(v) = check()? {
                return Ok(v);
            }
            let now = Instant::now();
            if now >= deadline {
                if self.monitor.is_some() {
                    // Nothing announced at all points at the kernel side (no scan result,
                    // no device), many events at a condition that never held.
                    tracing::warn!(target: "hostbrick::wait", what, udev_events = events, "wait timed out");
                }
                return Err(Error::Timeout {
                    what: what.to_string(),
                    waited: now - started,
                });
            }
            let left = deadline - now;
            match &self.monitor {
                Some(m) => events += wait_event(m, left.min(UDEV_RECHECK_INTERVAL))?,
                None if cancel::current().is_some() => {
                    std::thread::sleep(left.min(self.poll_interval).min(UDEV_RECHECK_INTERVAL))
                }
                None => std::thread::sleep(left.min(self.poll_interval)),
            }
        }
    }
}

fn open_monitor(subsystems: &[&str]) -> Result<udev::MonitorSocket> {
    let err = |source| Error::Udev {
        action: "monitor",
        source,
    };
    let mut b = udev::MonitorBuilder::new().map_err(err)?;
    for s in subsystems {
        b = b.match_subsystem(s).map_err(err)?;
    }
    b.listen().map_err(err)
}

/// Blocks until the monitor has events (draining them) or `left` passes; the number of
/// events drained.
fn wait_event(m: &udev::MonitorSocket, left: Duration) -> Result<u64> {
    let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(m), PollFlags::POLLIN)];
    match poll(&mut fds, timeout) {
        Ok(_) | Err(nix::Error::EINTR) => {}
        Err(e) => {
            return Err(Error::Udev {
                action: "poll",
                source: std::io::Error::from(e),
            })
        }
    }
    let mut seen = 0;
    for event in m.iter() {
        seen += 1;
        if !tracing::enabled!(target: "hostbrick::wait", tracing::Level::TRACE) {
            continue;
        }
        let props = event.properties().map(|p| {
            (
                p.name().to_string_lossy().into_owned(),
                p.value().to_string_lossy().into_owned(),
            )
        });
        match Uevent::from_pairs(props) {
            Ok(u) => tracing::trace!(
                target: "hostbrick::wait",
                action = u.action().map(|a| a.as_str()),
                subsystem = u.subsystem(),
                devname = u.devname(),
                seqnum = u.seqnum(),
                "udev event"
            ),
            Err(reason) => tracing::debug!(
                target: "hostbrick::wait",
                device = %event.sysname().to_string_lossy(),
                %reason,
                "udev event with malformed properties"
            ),
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn returns_at_once_when_already_true() {
        let mut w = DeviceWatch::polling(Duration::from_secs(10));
        let t0 = Instant::now();
        let v = w
            .wait_for("x", Instant::now() + Duration::from_secs(5), || Ok(Some(7)))
            .unwrap();
        assert_eq!(v, 7);
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn polls_until_true() {
        let mut w = DeviceWatch::polling(Duration::from_millis(1));
        let n = Cell::new(0);
        let v = w
            .wait_for(
                "third check",
                Instant::now() + Duration::from_secs(5),
                || {
                    n.set(n.get() + 1);
                    Ok((n.get() == 3).then_some("ok"))
                },
            )
            .unwrap();
        assert_eq!((v, n.get()), ("ok", 3));
    }

    #[test]
    fn timeout_names_what_was_awaited() {
        let mut w = DeviceWatch::polling(Duration::from_millis(1));
        let e = w
            .wait_for::<()>(
                "LUN 3 of session 1",
                Instant::now() + Duration::from_millis(20),
                || Ok(None),
            )
            .unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }));
        assert!(e.to_string().contains("LUN 3 of session 1"));
    }

    #[test]
    fn a_cancel_ends_the_wait_promptly() {
        let c = crate::Cancel::new();
        let _op = cancel::enter(Some(c.clone()));
        let fire = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            c.cancel();
        });
        // A polling interval far longer than the wait's reaction to a cancel.
        let mut w = DeviceWatch::polling(Duration::from_secs(10));
        let t0 = Instant::now();
        let e = w
            .wait_for::<()>("LUN 3", Instant::now() + Duration::from_secs(20), || {
                Ok(None)
            })
            .unwrap_err();
        fire.join().unwrap();
        assert!(
            matches!(&e, Error::WaitCancelled { what } if what == "LUN 3"),
            "{e}"
        );
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }

    #[test]
    fn fake_hosts_poll() {
        let d = tempfile::tempdir().unwrap();
        assert!(!DeviceWatch::open(&Host::with_root(d.path()), &["block"]).is_event_driven());
    }
}
