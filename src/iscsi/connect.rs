//! Connect: the targets to use (with sendtargets discovery), single path and multipath
//! connects, the gathering of paths into a dm-multipath map, and the device record.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::late;
use super::session::{self, SessionFinder};
use super::{
    by_path_name, discovery_lock_key, ms, AttachedPath, IscsiDriver, IscsiProperties, IscsiTarget,
    VolumeDevice,
};
use crate::connector::MultipathMode;
use crate::connector::Operation;
use crate::devices::block;
use crate::devices::multipath::{self, MultipathMap};
use crate::error::{AttemptFailure, Error, Result};
use crate::iscsi::iscsiadm::NodeEntry;
use crate::model::ids::Portal;
use crate::model::record::{DeviceRecord, PathRecord};
use crate::platform::cancel;
use crate::platform::cmd::{Cancel, Command};
use crate::platform::lock::LockMode;
use crate::platform::wait::DeviceWatch;

/// How long a multipath connect whose map is usable waits for the logins still under way
/// (within [`super::IscsiOptions::extra_path_grace`]) before it hands them off: a healthy
/// portal's login, started with the others, is done by then; a dead one's is not.
pub(super) const LATE_LOGIN_WAIT: Duration = Duration::from_millis(500);

/// What a path's thread tells the connect gathering the paths.
pub(super) enum PathEvent {
    /// The target's session is up (logged in, or reused): the scan and device wait follow.
    LoggedIn(IscsiTarget),
    /// The path is up, or failed (and undid what it made).
    Done(IscsiTarget, Result<AttachedPath>),
}

/// What [`IscsiDriver::gather_paths`] ends with.
enum Gathered {
    /// Every path is done.
    Complete {
        paths: Vec<AttachedPath>,
        errors: Vec<(IscsiTarget, Error)>,
        map: std::result::Result<MultipathMap, String>,
    },
    /// The map is usable; `pending` paths are still coming up and finish in the
    /// background.
    HandOff {
        paths: Vec<AttachedPath>,
        errors: Vec<(IscsiTarget, Error)>,
        map: MultipathMap,
        pending: usize,
    },
}

/// How long the multipathd liveness check of an enforced multipath connect may take.
const MULTIPATHD_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

impl IscsiDriver {
    pub(super) fn connect(
        &self,
        op: &Operation<'_>,
        props: &IscsiProperties,
    ) -> Result<DeviceRecord> {
        let deadline = op.deadline;
        let mode = self.multipath_mode(props);
        // As os-brick's `check_multipath`: enforced multipath on a host without multipathd
        // fails before anything is logged in.
        if mode.is_enforced() && !self.multipathd_running(deadline) {
            // multipathd did not answer because the connect was asked to stop.
            cancel::check(|| "multipathd's status".into())?;
            return Err(Error::MultipathdNotRunning);
        }
        let mut discovered = Vec::new();
        let result = self
            .targets_for_connect(props, mode, deadline, &mut discovered)
            .and_then(|targets| {
                if mode.is_on() {
                    self.connect_multipath(props, mode, &targets, deadline)
                } else {
                    self.connect_single(props, &targets, deadline)
                }
            });
        self.forget_unused_nodes(&discovered);
        let record = result?;
        if let Err(e) = self.registry.put(&props.volume_key(), &record) {
            tracing::warn!(error = %e.chain(), "cannot note the attachment in the registry; an audit will list its session as unused");
        }
        Ok(record)
    }

    /// True when multipathd answers `multipathd show status` (exit 0) within
    /// [`MULTIPATHD_CHECK_TIMEOUT`] (os-brick's `is_multipath_running`).
    fn multipathd_running(&self, deadline: Instant) -> bool {
        let cmd = Command::new("multipathd")
            .args(["show", "status"])
            .deadline(deadline.min(Instant::now() + MULTIPATHD_CHECK_TIMEOUT));
        matches!(self.opts.context.runner.run(&cmd), Ok(out) if out.status.success())
    }

    /// The multipath mode of this connect: the connector's, raised to
    /// [`MultipathMode::Enforced`] by the connection_info's `enforce_multipath` when
    /// multipath is on (as in os-brick, `enforce_multipath` alone does not turn it on).
    pub(super) fn multipath_mode(&self, props: &IscsiProperties) -> MultipathMode {
        match self.opts.multipath {
            MultipathMode::Optional if props.enforce_multipath => MultipathMode::Enforced,
            m => m,
        }
    }

    /// The targets to log in to: the given ones, plus (for multipath without target
    /// lists) the portals sendtargets discovery reports for the same IQN. The node records
    /// discovery created (not there before it) are added to `discovered`.
    fn targets_for_connect(
        &self,
        props: &IscsiProperties,
        mode: MultipathMode,
        deadline: Instant,
        discovered: &mut Vec<IscsiTarget>,
    ) -> Result<Vec<IscsiTarget>> {
        let limit = self.opts.iscsi.max_targets;
        if props.targets.len() > limit {
            return Err(Error::TooManyTargets {
                origin: "connection_info".into(),
                count: props.targets.len(),
                limit,
            });
        }
        // As os-brick (`_get_ips_iqns_luns`): a multipath connect without target lists asks
        // sendtargets discovery for the volume's paths.
        let discover_for_paths = mode.is_on() && !props.listed_targets;
        if !props.wants_discovery() && !discover_for_paths {
            return Ok(props.targets.clone());
        }
        let adm = self.adm(deadline);
        let before = adm.nodes()?;
        let mut last_err = None;
        let mut portals: Vec<&Portal> = props.targets.iter().map(|t| &t.portal).collect();
        portals.dedup();
        for portal in portals {
            // With CHAP the discovery record is made, given its credentials and used in
            // separate steps: one connect at a time per portal.
            let _discovery = match &props.discovery_auth {
                Some(_) => Some(
                    self.locks
                        .lock(&discovery_lock_key(portal), LockMode::Exclusive)?,
                ),
                None => None,
            };
            match adm.discover(portal, props.discovery_auth.as_ref()) {
                Ok(found) => {
                    discovered.extend(
                        found
                            .iter()
                            .filter(|n| {
                                !before
                                    .iter()
                                    .any(|b| b.portal == n.portal && b.iqn == n.iqn)
                            })
                            .map(|n| IscsiTarget {
                                portal: n.portal.clone(),
                                iqn: n.iqn.clone(),
                                lun: 0,
                            }),
                    );
                    let mut targets = props.targets.clone();
                    if discover_for_paths {
                        for t in discovered_paths(&found, props.primary()) {
                            if !targets.contains(&t) {
                                targets.push(t);
                            }
                        }
                    }
                    if targets.len() > limit {
                        return Err(Error::TooManyTargets {
                            origin: format!("sendtargets discovery at {portal}"),
                            count: targets.len(),
                            limit,
                        });
                    }
                    tracing::debug!(paths = targets.len(), "discovery done");
                    return Ok(targets);
                }
                Err(e @ Error::AuthenticationFailed { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(%portal, error = %e.chain(), "sendtargets discovery failed");
                    last_err = Some(e);
                }
            }
        }
        if let Some(e) = last_err {
            tracing::warn!(error = %e.chain(), "discovery failed everywhere; using the given targets");
        }
        Ok(props.targets.clone())
    }

    fn connect_single(
        &self,
        props: &IscsiProperties,
        targets: &[IscsiTarget],
        deadline: Instant,
    ) -> Result<DeviceRecord> {
        let mut errors = Vec::new();
        for t in targets {
            if Instant::now() >= deadline || cancel::is_cancelled() {
                break;
            }
            match self.attach_path(props, t, deadline, None, &|| {}) {
                Ok(p) => return self.record(props, &[p], None),
                Err(e) => {
                    tracing::warn!(target = %t, error = %e.chain(), "path failed; trying the next");
                    errors.push((t.clone(), e));
                }
            }
        }
        Err(all_failed(errors))
    }

    fn connect_multipath(
        &self,
        props: &IscsiProperties,
        mode: MultipathMode,
        targets: &[IscsiTarget],
        deadline: Instant,
    ) -> Result<DeviceRecord> {
        // The paths' threads may outlive the call (paths still logging in when the map is
        // usable finish in the background): they own what they use.
        let driver = Arc::new(self.detached());
        let shared_props = Arc::new(props.duplicate());
        let shared_targets: Arc<Vec<IscsiTarget>> = Arc::new(targets.to_vec());
        // Stops the paths' iscsiadm commands (after the grace, or the background's stop).
        let cancel = Cancel::new();
        // The current cancel of the paths' threads: the operation's fires it while the
        // connect runs (as if it were current there), the background's stop afterwards.
        let waits = Cancel::new();
        let op_cancel = cancel::current();
        if let Some(op) = &op_cancel {
            op.link(&waits);
        }
        let span = tracing::Span::current();
        let (tx, rx) = mpsc::channel::<PathEvent>();
        // At most `max_parallel_logins` paths at once: each worker takes the next target
        // not yet taken until none is left.
        let next = Arc::new(AtomicUsize::new(0));
        let workers = self
            .opts
            .iscsi
            .max_parallel_logins
            .clamp(1, targets.len().max(1));
        for _ in 0..workers {
            let (tx, cancel, waits, span, next) = (
                tx.clone(),
                cancel.clone(),
                waits.clone(),
                span.clone(),
                next.clone(),
            );
            let (driver, props, targets) =
                (driver.clone(), shared_props.clone(), shared_targets.clone());
            let spawned = std::thread::Builder::new()
                .name("iscsi-path".into())
                .spawn(move || {
                    let _e = span.entered();
                    let _c = cancel::enter(Some(waits));
                    while let Some(t) = targets.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let up = tx.clone();
                        let logged_in = move || {
                            let _ = up.send(PathEvent::LoggedIn(t.clone()));
                        };
                        let r = driver.attach_path(&props, t, deadline, Some(&cancel), &logged_in);
                        // The receiver may be gone (the background gave up on the paths):
                        // the path undid itself on failure, and a success is undone below.
                        if let Err(std::sync::mpsc::SendError(PathEvent::Done(_, Ok(p)))) =
                            tx.send(PathEvent::Done(t.clone(), r))
                        {
                            driver.undo_paths(std::slice::from_ref(&p));
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a path's thread; fewer paths log in at once");
            }
        }
        drop(tx);
        let gathered = self.gather_paths(&rx, &props.targets, targets, &cancel, deadline);
        let (paths, errors, map) = match gathered {
            Gathered::Complete { paths, errors, map } => {
                // The paths' threads are done: nothing is linked to the operation's cancel
                // any more.
                waits.cancel();
                (paths, errors, map)
            }
            Gathered::HandOff {
                paths,
                errors,
                map,
                pending,
            } => {
                let wwid = paths[0].wwid.clone();
                let record = self.record(props, &paths, Some(&map));
                if record.is_ok() {
                    for e in &errors {
                        tracing::warn!(target = %e.0, error = %e.1.chain(), "path failed");
                    }
                    late::hand_off(late::Late {
                        driver,
                        rx,
                        cancel,
                        waits,
                        op_cancel,
                        map,
                        wwid,
                        volume_key: props.volume_key(),
                        targets: shared_targets.to_vec(),
                        pending,
                        deadline,
                    });
                } else {
                    // No record to hand out: the paths still logging in go with the rest.
                    cancel.cancel();
                    waits.cancel();
                    self.undo_multipath(&paths, Some(&map));
                }
                return record;
            }
        };
        if paths.is_empty() {
            return Err(all_failed(errors));
        }
        if cancel::is_cancelled() {
            // No single-path fallback for a connect asked to stop: what came up goes.
            tracing::info!(
                paths = paths.len(),
                "cancelled; detaching the paths that came up"
            );
            self.undo_multipath(&paths, map.as_ref().ok());
            return Err(match map {
                Err(reason) => Error::MultipathAssembly {
                    wwid: paths[0]
                        .wwid
                        .as_ref()
                        .map_or_else(String::new, |w| w.to_string()),
                    reason,
                },
                Ok(_) => Error::WaitCancelled {
                    what: "the paths still logging in".into(),
                },
            });
        }
        match map {
            Ok(m) => self.record(props, &paths, Some(&m)),
            Err(reason) if mode.is_enforced() => {
                let wwid = paths[0]
                    .wwid
                    .as_ref()
                    .map_or_else(String::new, |w| w.to_string());
                self.undo_paths(&paths);
                Err(Error::MultipathAssembly { wwid, reason })
            }
            Err(reason) => {
                tracing::warn!(%reason, "multipath map not made; using a single path");
                self.record(props, &paths, None)
            }
        }
    }

    /// Collects path results as they arrive and builds the map from the first path up.
    ///
    /// Once the map is usable, the connect waits `extra_path_grace` at most for the paths
    /// that have logged in to show their device and join, and [`LATE_LOGIN_WAIT`] (within
    /// that grace) for the logins still under way. Then, when every path still pending is
    /// a target of the connection_info, they are handed off ([`Gathered::HandOff`]): they
    /// finish in the background and join the map later, or are undone. A path only
    /// discovery offered cannot be handed off (a later disconnect would not know it): such
    /// paths are stopped at the end of the grace, as are all the pending ones of a connect
    /// whose operation was cancelled.
    ///
    /// The volume is what the connection_info's own targets (`given`) show: a path only
    /// discovery offered (another target name, on an array with one per portal) waits
    /// until a given target's path is up, and joins only with that path's WWID. When no
    /// given target comes up, such paths are undone: nothing shows they are the volume.
    fn gather_paths(
        &self,
        rx: &mpsc::Receiver<PathEvent>,
        given: &[IscsiTarget],
        targets: &[IscsiTarget],
        cancel: &Cancel,
        deadline: Instant,
    ) -> Gathered {
        let mut paths: Vec<AttachedPath> = Vec::new();
        let mut errors = Vec::new();
        let mut map: Option<std::result::Result<MultipathMap, String>> = None;
        let mut grace_end: Option<Instant> = None;
        // When the logins still under way are handed off, once the map is usable.
        let mut login_wait_end: Option<Instant> = None;
        let mut pending = targets.len();
        // The targets not logged in yet (nor failed; those waiting for a free login slot
        // too), and those logged in whose path is not done.
        let mut logging_in: Vec<IscsiTarget> = targets.to_vec();
        let mut scanning: Vec<IscsiTarget> = Vec::new();
        // Discovered-only paths up before any given target's path.
        let mut held: Vec<AttachedPath> = Vec::new();
        while pending > 0 {
            let usable = matches!(map, Some(Ok(_)));
            let hand_off_ok = usable
                && !cancel::is_cancelled()
                && !cancel.is_cancelled()
                && logging_in
                    .iter()
                    .chain(&scanning)
                    .all(|t| given.contains(t));
            if hand_off_ok
                && scanning.is_empty()
                && login_wait_end.is_some_and(|end| Instant::now() >= end)
            {
                return self.hand_off(paths, errors, map, pending);
            }
            let wake = [
                grace_end,
                login_wait_end.filter(|_| hand_off_ok && scanning.is_empty()),
            ]
            .into_iter()
            .flatten()
            .min();
            let msg = match wake {
                Some(end) => match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
                    Ok(m) => m,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if grace_end.is_some_and(|g| Instant::now() >= g) {
                            grace_end = None;
                            if hand_off_ok {
                                tracing::info!(pending, "device usable; finishing the paths still coming up in the background");
                                return self.hand_off(paths, errors, map, pending);
                            }
                            tracing::info!(
                                pending,
                                "device usable; stopping paths still logging in"
                            );
                            cancel.cancel();
                        }
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            let (t, result) = match msg {
                PathEvent::LoggedIn(t) => {
                    if let Some(i) = logging_in.iter().position(|x| *x == t) {
                        logging_in.remove(i);
                    }
                    scanning.push(t);
                    continue;
                }
                PathEvent::Done(t, r) => (t, r),
            };
            pending -= 1;
            if let Some(i) = scanning.iter().position(|x| *x == t) {
                scanning.remove(i);
            } else if let Some(i) = logging_in.iter().position(|x| *x == t) {
                logging_in.remove(i);
            }
            let p = match result {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(target = %t, error = %e.chain(), "path failed");
                    errors.push((t, e));
                    continue;
                }
            };
            let mut ready = vec![p];
            if paths.is_empty() {
                if !given.contains(&ready[0].target) {
                    tracing::debug!(target = %t, "discovered path up; waiting for a path of the connection_info's targets");
                    held.append(&mut ready);
                    continue;
                }
                ready.append(&mut held);
            }
            for p in ready {
                let t = p.target.clone();
                if let Some(first) = paths.first() {
                    if first.wwid != p.wwid {
                        tracing::warn!(target = %t, first = ?first.wwid, this = ?p.wwid, "path shows another volume; detaching it");
                        self.undo_paths(std::slice::from_ref(&p));
                        errors.push((
                            t,
                            Error::MultipathAssembly {
                                wwid: first
                                    .wwid
                                    .as_ref()
                                    .map_or_else(String::new, |w| w.to_string()),
                                reason: format!("path {} has WWID {:?}", p.name, p.wwid),
                            },
                        ));
                        continue;
                    }
                }
                match &map {
                    None => {
                        let r = self.assemble_map(&p, deadline);
                        if r.is_ok() && pending > 0 {
                            let grace = self.opts.iscsi.extra_path_grace;
                            grace_end = Some((Instant::now() + grace).min(deadline));
                            login_wait_end =
                                Some((Instant::now() + grace.min(LATE_LOGIN_WAIT)).min(deadline));
                        }
                        map = Some(r);
                    }
                    // A path multipathd already put into the map (it adds every path of
                    // a WWID it knows on the path's own uevent) needs no `add path`.
                    Some(Ok(_))
                        if multipath::holder_map(self.host(), &p.name)
                            .ok()
                            .flatten()
                            .is_some() =>
                    {
                        tracing::debug!(device = %p.name, "multipathd took the path itself");
                    }
                    Some(Ok(_)) => {
                        let dev = self.host().public_dev_path(&self.host().dev(&p.name));
                        if let Err(e) =
                            multipath::add_path(&*self.opts.context.runner, &dev, deadline)
                        {
                            tracing::warn!(device = %p.name, error = %e.chain(), "multipathd did not take the path");
                        }
                    }
                    Some(Err(_)) => {}
                }
                paths.push(p);
            }
        }
        if !held.is_empty() {
            tracing::warn!(
                paths = held.len(),
                "no path of the connection_info's targets came up; detaching the discovered ones"
            );
            self.undo_paths(&held);
            for p in held {
                errors.push((
                    p.target.clone(),
                    Error::MultipathAssembly {
                        wwid: p.wwid.as_ref().map_or_else(String::new, |w| w.to_string()),
                        reason: format!(
                            "path {} came only from discovery and no target of the connection_info confirmed its volume",
                            p.name
                        ),
                    },
                ));
            }
        }
        let map = map.unwrap_or_else(|| Err("no path came up".to_string()));
        Gathered::Complete { paths, errors, map }
    }

    /// The connect's result with the paths still pending handed off (the map is usable).
    fn hand_off(
        &self,
        paths: Vec<AttachedPath>,
        errors: Vec<(IscsiTarget, Error)>,
        map: Option<std::result::Result<MultipathMap, String>>,
        pending: usize,
    ) -> Gathered {
        match map {
            Some(Ok(map)) => Gathered::HandOff {
                paths,
                errors,
                map,
                pending,
            },
            // Never called without a usable map.
            other => Gathered::Complete {
                paths,
                errors,
                map: other.unwrap_or_else(|| Err("no path came up".to_string())),
            },
        }
    }

    /// Makes sure a dm-multipath map exists over `p` and is usable.
    fn assemble_map(
        &self,
        p: &AttachedPath,
        deadline: Instant,
    ) -> std::result::Result<MultipathMap, String> {
        let started = Instant::now();
        let host = self.host();
        let runner = &*self.opts.context.runner;
        let wwid = p.wwid.as_ref().ok_or("the path has no WWID")?;
        let deadline = deadline.min(started + self.opts.iscsi.multipath_timeout);
        let mut watch = DeviceWatch::open(host, &["block"]);
        // multipathd may be making the map on its own (find_multipaths off), and then
        // answers `add path` with "fail": that is only an error if no map appears.
        let mut asked = None;
        if multipath::holder_map(host, &p.name)
            .map_err(|e| e.chain())?
            .is_none()
        {
            multipath::add_wwid(runner, wwid, deadline).map_err(|e| e.chain())?;
            let dev = host.public_dev_path(&host.dev(&p.name));
            match multipath::add_path(runner, &dev, deadline) {
                Ok(()) => {}
                Err(e @ Error::CommandFailed { status, .. }) if status.success() => asked = Some(e),
                Err(e) => return Err(e.chain()),
            }
        }
        let what = format!("dm-multipath map over {}", p.name);
        let map = watch
            .wait_for(&what, deadline, || {
                let Some(m) = multipath::holder_map(host, &p.name)? else {
                    return Ok(None);
                };
                // A map made from its first path can be read-only for a moment (device
                // mapper takes the table's mode from the first load): handed out then, the
                // guest would see a read-only disk. Ready means as writable as its path.
                let ready = block::is_ready(host, &m.dm)?
                    && block::size_bytes(host, &m.dm)? > 0
                    && block::read_only(host, &m.dm)? == block::read_only(host, &p.name)?;
                Ok(ready.then_some(m))
            })
            .map_err(|e| match &asked {
                Some(refused) => format!("{}; {}", refused.chain(), e.chain()),
                None => e.chain(),
            })?;
        tracing::info!(phase = "multipath_ready", elapsed_ms = ms(started.elapsed()), map = %map.name, dm = %map.dm, "multipath map ready");
        Ok(map)
    }

    fn record(
        &self,
        props: &IscsiProperties,
        paths: &[AttachedPath],
        map: Option<&MultipathMap>,
    ) -> Result<DeviceRecord> {
        let host = self.host();
        let first = &paths[0];
        let path = match map {
            Some(m) => host.public_dev_path(&host.dev(&m.dm)),
            None => {
                let link = host.dev("disk/by-path").join(by_path_name(
                    &first.target.portal,
                    first.target.iqn.as_str(),
                    first.target.lun,
                ));
                // The link names this LUN, but a stale link left by a device of the same
                // name would lead elsewhere: record it only when it leads to this path.
                if block::is_link_to(host, &link, &first.name)? {
                    host.public_dev_path(&link)
                } else {
                    host.public_dev_path(&host.dev(&first.name))
                }
            }
        };
        Ok(DeviceRecord {
            scsi_wwn: first.wwid.as_ref().map(|w| w.to_string()),
            multipath_id: map.map(|m| m.name.clone()),
            paths: paths
                .iter()
                .map(|p| {
                    Ok(PathRecord {
                        device: host.public_dev_path(&host.dev(&p.name)),
                        hctl: p.hctl,
                        portal: p.target.portal.clone(),
                        iqn: p.target.iqn.clone(),
                        lun: p.target.lun,
                        session: session::session_of_hctl(host, p.hctl)?,
                    })
                })
                .collect::<Result<_>>()?,
            ..DeviceRecord::block(self.protocol, path, props.volume_id.clone())
        })
    }

    /// Undoes a multipath connect stopped half way: the map over its paths (`map`, and any
    /// multipathd made over them meanwhile), then the paths.
    pub(super) fn undo_multipath(&self, paths: &[AttachedPath], map: Option<&MultipathMap>) {
        let _undo = cancel::shield();
        let deadline = self.cleanup_deadline();
        let mut maps: Vec<MultipathMap> = map.into_iter().cloned().collect();
        for p in paths {
            match multipath::holder_map(self.host(), &p.name) {
                Ok(Some(m)) if !maps.contains(&m) => maps.push(m),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(device = %p.name, error = %e.chain(), "undo: cannot read the device's holders")
                }
            }
        }
        for m in &maps {
            if let Err(e) = self.remove_map(m, true, deadline) {
                tracing::warn!(map = %m.name, error = %e.chain(), "undo: removing the multipath map failed");
            }
        }
        self.undo_paths(paths);
    }

    /// Undoes paths that came up (a multipath connect that must not keep them).
    pub(super) fn undo_paths(&self, paths: &[AttachedPath]) {
        let _undo = cancel::shield();
        let deadline = self.cleanup_deadline();
        let mut sessions = SessionFinder::new(self.host());
        for p in paths {
            let dev = VolumeDevice {
                hctl: p.hctl,
                name: p.name.clone(),
            };
            // Never handed out: nothing was written through it to flush.
            if let Err(e) = self.remove_scsi_device(&dev, false, true, deadline) {
                tracing::warn!(error = %e.chain(), "undo: removing the device failed");
            }
            if let Err(e) = self.release_target(&p.target, true, &mut sessions, deadline) {
                tracing::warn!(error = %e.chain(), "undo: releasing the target failed");
            }
        }
    }
}

/// The paths sendtargets discovery reports for the volume whose connection_info names one
/// target (`base`), as os-brick's `_get_ips_iqns_luns` selects them: when every portal in
/// the reply offers `base`'s IQN, `base`'s IQN at each of those portals (an array whose
/// portals share one target name); otherwise every portal and IQN pair of the reply (an
/// array with a different target name per portal). Each with `base`'s LUN, in the order of
/// the reply, without repeats.
pub(super) fn discovered_paths(found: &[NodeEntry], base: &IscsiTarget) -> Vec<IscsiTarget> {
    let shared_name = found.iter().all(|n| {
        found
            .iter()
            .any(|m| m.portal == n.portal && m.iqn == base.iqn)
    });
    let mut out: Vec<IscsiTarget> = Vec::new();
    for n in found {
        if shared_name && n.iqn != base.iqn {
            continue;
        }
        let t = IscsiTarget {
            portal: n.portal.clone(),
            iqn: n.iqn.clone(),
            lun: base.lun,
        };
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// The error for a connect whose every path failed: the authentication failure when that
/// is what stopped every path, else "volume device not found" with each attempt.
fn all_failed(errors: Vec<(IscsiTarget, Error)>) -> Error {
    // Every path refused for the same reason the caller can act on (credentials, a lock
    // someone else holds): that error itself.
    let all_auth = !errors.is_empty()
        && errors
            .iter()
            .all(|(_, e)| matches!(e, Error::AuthenticationFailed { .. }));
    let all_locked = !errors.is_empty()
        && errors
            .iter()
            .all(|(_, e)| matches!(e, Error::LockTimeout { .. }));
    let mut it = errors.into_iter();
    if all_auth || all_locked {
        if let Some((_, e)) = it.next() {
            return e;
        }
    }
    Error::VolumeDeviceNotFound {
        tried: it
            .map(|(t, e)| AttemptFailure {
                target: t.to_string(),
                reason: e.chain(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(portal: &str, iqn: &str) -> NodeEntry {
        NodeEntry {
            portal: portal.parse().unwrap(),
            tpgt: 1,
            iqn: iqn.parse().unwrap(),
        }
    }

    /// os-brick's `_get_ips_iqns_luns` cases (`test_get_ips_iqns_luns_*`): one IQN shared
    /// by every portal, or a different IQN per portal.
    #[test]
    fn discovered_paths_select_as_os_brick() {
        let (a, b, c) = ("iqn.2003-01.x:a", "iqn.2003-01.x:b", "iqn.2003-01.x:c");
        let base = IscsiTarget {
            portal: "10.0.0.1:3260".parse().unwrap(),
            iqn: a.parse().unwrap(),
            lun: 7,
        };
        let pairs = |found: &[NodeEntry]| -> Vec<(String, String, u64)> {
            discovered_paths(found, &base)
                .into_iter()
                .map(|t| (t.portal.to_string(), t.iqn.to_string(), t.lun))
                .collect()
        };
        let p = |portal: &str, iqn: &str| (portal.to_string(), iqn.to_string(), 7);
        // Every portal offers the volume's IQN (and others): the volume's IQN at each.
        assert_eq!(
            pairs(&[
                node("10.0.0.1:3260", a),
                node("10.0.0.1:3260", b),
                node("10.0.0.2:3260", a),
                node("10.0.0.2:3260", b),
                node("10.0.0.2:3260", a),
            ]),
            vec![p("10.0.0.1:3260", a), p("10.0.0.2:3260", a)]
        );
        // A different IQN per portal: every pair is kept.
        assert_eq!(
            pairs(&[
                node("10.0.0.1:3260", a),
                node("10.0.0.2:3260", b),
                node("10.0.0.3:3260", c),
            ]),
            vec![
                p("10.0.0.1:3260", a),
                p("10.0.0.2:3260", b),
                p("10.0.0.3:3260", c)
            ]
        );
        // None offers it: every pair too (os-brick's match set is empty).
        assert_eq!(
            pairs(&[node("10.0.0.2:3260", b)]),
            vec![p("10.0.0.2:3260", b)]
        );
        assert!(pairs(&[]).is_empty());
    }

    #[test]
    fn all_failed_prefers_authentication() {
        let t: IscsiTarget = IscsiTarget {
            portal: "127.0.0.1".parse().unwrap(),
            iqn: "iqn.2003-01.x:t".parse().unwrap(),
            lun: 0,
        };
        let auth = || Error::AuthenticationFailed {
            target: "x".into(),
            source: Box::new(Error::MultipathdNotRunning),
        };
        assert!(matches!(
            all_failed(vec![(t.clone(), auth())]),
            Error::AuthenticationFailed { .. }
        ));
        let e = all_failed(vec![
            (t.clone(), auth()),
            (t.clone(), Error::MultipathdNotRunning),
        ]);
        match e {
            Error::VolumeDeviceNotFound { tried } => assert_eq!(tried.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            all_failed(vec![]),
            Error::VolumeDeviceNotFound { .. }
        ));
    }
}
