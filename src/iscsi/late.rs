//! Paths of a multipath connect still coming up when it returns: finished in the background.
//!
//! A multipath connect returns once its map is usable and the paths that have logged in are
//! in it ([`super::connect`]); the logins still under way (a dead portal's, that would hold
//! the connect for its whole login timeout) go on, on their own threads, handed to one
//! background thread per connect that owns them from then on. Each such path, once up, is
//! checked against the map's WWID and joins the map (`multipathd add path` when multipathd
//! did not take it itself), under the volume's lock, and only while the map is still there.
//! A path that fails, shows another volume, or finds the map gone is undone as a failed path
//! of a connect is (its device, the session and node record it made); a path whose login
//! fails undid itself already. Nothing is left half done.
//!
//! The work is listed in a per-process registry, by the targets it serves. A disconnect of a
//! volume first stops the background work of any of its targets (the logins are cut short,
//! what came up is undone) and waits for it; so does the connector's cancel
//! ([`crate::ConnectorOptions::cancel`]) when it fires later. A process that ends ends its
//! background work with it (see `examples/attach.rs` for a command line that hands it to a
//! child process); a disconnect from another process after that finds what the host shows
//! (sessions of the volume's targets, by their LUN's WWID; sessions without any LUN) as for
//! any volume.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use super::connect::PathEvent;
use super::{ms, AttachedPath, IscsiDriver, IscsiTarget};
use crate::devices::multipath::{self, MultipathMap};
use crate::error::{Error, Result};
use crate::model::ids::Wwid;
use crate::platform::cancel;
use crate::platform::cmd::Cancel;
use crate::platform::lock::LockMode;
use crate::platform::wait::DeviceWatch;

/// What a connect hands to its background thread.
pub(super) struct Late {
    /// The driver's copy the paths' threads use.
    pub driver: Arc<IscsiDriver>,
    /// The paths' events.
    pub rx: mpsc::Receiver<PathEvent>,
    /// Stops the paths' iscsiadm commands.
    pub cancel: Cancel,
    /// The paths' threads' current cancel (their waits).
    pub waits: Cancel,
    /// The connector's cancel, which stops the background work too.
    pub op_cancel: Option<Cancel>,
    /// The map the paths join.
    pub map: MultipathMap,
    /// The map's paths' WWID.
    pub wwid: Option<Wwid>,
    /// The volume's lock.
    pub volume_key: String,
    /// Every target of the connect.
    pub targets: Vec<IscsiTarget>,
    /// How many paths are still coming up.
    pub pending: usize,
    /// The connect's deadline, which bounds the background work too.
    pub deadline: Instant,
}

/// One connect's background work.
struct Work {
    id: u64,
    targets: Vec<IscsiTarget>,
    stop: Cancel,
    handle: Option<JoinHandle<()>>,
}

/// The background work of this process.
struct Registry {
    work: Mutex<Vec<Work>>,
    /// Told each time work ends.
    ended: Condvar,
}

static REGISTRY: Registry = Registry {
    work: Mutex::new(Vec::new()),
    ended: Condvar::new(),
};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn work() -> MutexGuard<'static, Vec<Work>> {
    REGISTRY.work.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the background thread of a connect's pending paths and lists it.
pub(super) fn hand_off(late: Late) {
    let stop = Cancel::new();
    stop.link(&late.cancel);
    stop.link(&late.waits);
    if let Some(op) = &late.op_cancel {
        op.link(&stop);
    }
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let targets = late.targets.clone();
    let span = tracing::info_span!(
        parent: None,
        "late_paths",
        volume = %late.volume_key,
        map = %late.map.name,
        pending = late.pending
    );
    tracing::info!(
        pending = late.pending,
        map = %late.map.name,
        "map usable; the paths still coming up finish in the background"
    );
    // Listed before the thread can end (it unlists itself under this lock).
    let mut list = work();
    let thread_stop = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("iscsi-late-paths".into())
        .spawn(move || {
            let _e = span.entered();
            run(late, &thread_stop);
            finished(id);
        });
    match spawned {
        Ok(handle) => list.push(Work {
            id,
            targets,
            stop,
            handle: Some(handle),
        }),
        Err(e) => {
            // The receiver went with the closure: each path's thread undoes its path when
            // it cannot hand it over; the logins are stopped now.
            tracing::warn!(error = %e, "cannot start the background thread; stopping the paths still coming up");
            stop.cancel();
        }
    }
}

/// The background thread: each pending path, as it comes, joins the map or is undone.
fn run(late: Late, stop: &Cancel) {
    let _c = cancel::enter(Some(stop.clone()));
    let started = Instant::now();
    let Late {
        driver,
        rx,
        map,
        wwid,
        volume_key,
        mut pending,
        deadline,
        ..
    } = late;
    let (mut joined, mut failed) = (0usize, 0usize);
    while pending > 0 {
        let Ok(event) = rx.recv() else { break };
        match event {
            PathEvent::LoggedIn(t) => {
                tracing::debug!(target = %t, "late path logged in");
            }
            PathEvent::Done(t, Err(e)) => {
                pending -= 1;
                failed += 1;
                tracing::warn!(target = %t, error = %e.chain(), "late path failed (undone)");
            }
            PathEvent::Done(t, Ok(p)) => {
                pending -= 1;
                match driver.join_late(&p, &map, wwid.as_ref(), &volume_key, deadline) {
                    Ok(()) => {
                        joined += 1;
                        tracing::info!(phase = "late_path_joined", elapsed_ms = ms(started.elapsed()), target = %t, device = %p.name, map = %map.name, "late path joined the map");
                    }
                    Err(e) => {
                        failed += 1;
                        tracing::warn!(target = %t, device = %p.name, error = %e.chain(), "late path not joined; undoing it");
                        driver.undo_paths(std::slice::from_ref(&p));
                    }
                }
            }
        }
    }
    // Done: nothing more to stop (lets the connector's cancel forget this one).
    stop.cancel();
    tracing::info!(
        phase = "late_paths_done",
        elapsed_ms = ms(started.elapsed()),
        joined,
        failed,
        "background paths done"
    );
}

/// Unlists the work `id` (when a disconnect has not taken it already).
fn finished(id: u64) {
    let mut list = work();
    list.retain(|w| w.id != id);
    REGISTRY.ended.notify_all();
}

/// Stops the background work serving any of `targets` (a disconnect of the volume) and
/// waits for it: the logins are cut short and what came up is undone. Returns how many
/// connects' work there was.
pub(super) fn stop_for(targets: &[IscsiTarget]) -> usize {
    let taken: Vec<Work> = {
        let mut list = work();
        let (taken, kept): (Vec<Work>, Vec<Work>) = list
            .drain(..)
            .partition(|w| w.targets.iter().any(|t| targets.contains(t)));
        *list = kept;
        taken
    };
    let n = taken.len();
    for w in &taken {
        w.stop.cancel();
    }
    for mut w in taken {
        if let Some(h) = w.handle.take() {
            if h.join().is_err() {
                tracing::warn!("a background path thread panicked");
            }
        }
    }
    if n > 0 {
        tracing::info!(
            connects = n,
            "stopped the paths still coming up in the background"
        );
        REGISTRY.ended.notify_all();
    }
    n
}

/// How many multipath connects of this process have paths still coming up in the
/// background (see [`super::IscsiOptions::extra_path_grace`]).
pub fn late_paths_pending() -> usize {
    work().len()
}

/// Waits until no path of this process's multipath connects is coming up in the background
/// any more (each joined its map or was undone; a disconnect or [`cancel_late_paths`] ends
/// them sooner).
pub fn wait_for_late_paths() {
    let mut list = work();
    while !list.is_empty() {
        list = REGISTRY.ended.wait(list).unwrap_or_else(|p| p.into_inner());
    }
}

/// Stops every path of this process's multipath connects still coming up in the background
/// (their logins are cut short, what came up is undone); [`wait_for_late_paths`] waits for
/// that to be done.
pub fn cancel_late_paths() {
    for w in work().iter() {
        w.stop.cancel();
    }
}

impl IscsiDriver {
    /// Adds a late path to the connect's map: same WWID as the map's paths, under the
    /// volume's lock, only while the map is still there; done when multipathd shows the
    /// path under the map.
    fn join_late(
        &self,
        p: &AttachedPath,
        map: &MultipathMap,
        wwid: Option<&Wwid>,
        volume_key: &str,
        deadline: Instant,
    ) -> Result<()> {
        let host = self.host();
        let runner = &*self.opts.context.runner;
        let assembly = |reason: String| Error::MultipathAssembly {
            wwid: map.wwid.clone(),
            reason,
        };
        if p.wwid.as_ref() != wwid {
            return Err(assembly(format!(
                "path {} has WWID {:?}, the map's paths {:?}",
                p.name, p.wwid, wwid
            )));
        }
        // A disconnect of the volume (in another process) is not between its look at the
        // map and its removal.
        let _volume = self
            .locks
            .lock_until(volume_key, LockMode::Exclusive, deadline)?;
        cancel::check(|| format!("the join of {} to map {}", p.name, map.name))?;
        match multipath::map_by_name(host, &map.name)? {
            Some(m) if m.dm == map.dm => {}
            _ => {
                return Err(assembly(format!(
                    "map {} ({}) is gone (the volume was disconnected)",
                    map.name, map.dm
                )))
            }
        }
        let mut watch = DeviceWatch::open(host, &["block"]);
        if multipath::holder_map(host, &p.name)?.is_none() {
            let dev = host.public_dev_path(&host.dev(&p.name));
            if let Err(e) = multipath::add_path(runner, &dev, deadline) {
                tracing::debug!(device = %p.name, error = %e.chain(), "multipathd refused the path; waiting for it to take it itself");
            }
        }
        let until = deadline.min(Instant::now() + self.opts.iscsi.multipath_timeout);
        watch.wait_for(
            &format!("{} in multipath map {}", p.name, map.name),
            until,
            || {
                Ok(multipath::holder_map(host, &p.name)?
                    .filter(|m| m.dm == map.dm)
                    .map(|_| ()))
            },
        )
    }
}
