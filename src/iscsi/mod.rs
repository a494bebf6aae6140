//! The iSCSI (and iSER) connector.
//!
//! Connect, per path: node record → manual-scan setting → CHAP → login (or reuse) →
//! `node.startup=automatic` → targeted scan of the one LUN → block device (udev-driven wait)
//! → WWID. Single path tries the targets in order; multipath logs in to all of them at once
//! and assembles a dm-multipath map as soon as one path is up. Every failed attempt undoes
//! what it created.

pub(crate) mod audit;
mod iscsiadm;
mod session;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use crate::model::iscsi::{ChapCredentials, IscsiProperties, IscsiTarget};
pub use iscsiadm::{
    parse_nodes, parse_sessions, Iscsiadm, IscsiadmStatus, LoginOutcome, NodeEntry, NodeParam,
    SessionEntry,
};
pub use session::{find as find_session, luns as session_luns, Session, SessionFinder};

use crate::connector::{Connector, ConnectorOptions, DisconnectOptions};
use crate::devices::block;
use crate::devices::multipath::{self, MultipathMap};
use crate::devices::scsi;
use crate::error::{AttemptFailure, Error, Failures, Result};
use crate::model::connection::{ConnectionInfo, Protocol};
use crate::model::ids::{Hctl, Portal, Wwid};
use crate::model::record::{DeviceRecord, PathRecord};
use crate::platform::cmd::Cancel;
use crate::platform::host::Host;
use crate::platform::lock::{LockDir, LockMode};
use crate::platform::registry::Registry;
use crate::platform::wait::DeviceWatch;

/// The attachment registry's name for iSCSI (and iSER) volumes: one [`DeviceRecord`] per
/// attached volume, so an audit can tell sessions in use from orphans.
const REGISTRY: &str = "iscsi";

/// The iSCSI/iSER connector. Build it with [`crate::connector_for`].
#[derive(Debug)]
pub struct IscsiConnector {
    protocol: Protocol,
    opts: ConnectorOptions,
    iface: String,
    locks: LockDir,
    registry: Registry,
}

/// One path that came up during a connect.
#[derive(Debug, Clone)]
struct AttachedPath {
    target: IscsiTarget,
    hctl: Hctl,
    name: String,
    wwid: Option<Wwid>,
}

/// What one path attempt created, so a failure can undo exactly that.
#[derive(Debug, Default)]
struct Made {
    node: bool,
    session: bool,
    device: Option<(Hctl, String)>,
}

/// One device of a volume found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VolumeDevice {
    hctl: Hctl,
    name: String,
}

/// The lock connects of a target share while they attach through it, and the logout check
/// takes exclusively.
fn target_lock_key(t: &IscsiTarget) -> String {
    target_lock_key_for(&t.portal, t.iqn.as_str())
}

/// [`target_lock_key`] of a target known by its portal and name (a session's, in an audit).
fn target_lock_key_for(portal: &Portal, iqn: &str) -> String {
    format!("iscsi-target-{portal}-{iqn}")
}

/// The lock under which one connect at a time sets a target's node record up and logs in.
fn target_setup_key(t: &IscsiTarget) -> String {
    format!("iscsi-login-{}-{}", t.portal, t.iqn)
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// udev's `by-path` name for an iSCSI LUN (as `path_id` builds it).
pub fn by_path_name(portal: &Portal, iqn: &str, lun: u64) -> String {
    let lun = if lun < 256 {
        format!("lun-{lun}")
    } else {
        format!(
            "lun-0x{:04x}{:04x}00000000",
            lun & 0xffff,
            (lun >> 16) & 0xffff
        )
    };
    format!(
        "ip-{}:{}-iscsi-{}-{}",
        portal.host(),
        portal.port(),
        iqn,
        lun
    )
}

impl IscsiConnector {
    /// A connector for `protocol` (`Iscsi` or `Iser`).
    pub fn new(protocol: Protocol, opts: ConnectorOptions) -> Result<Self> {
        let iface = match (&opts.iscsi_iface, protocol) {
            (Some(i), _) => i.clone(),
            (None, Protocol::Iser) => "iser".to_string(),
            (None, _) => "default".to_string(),
        };
        if iface.is_empty() || iface.contains('/') || iface.chars().any(char::is_whitespace) {
            return Err(Error::InvalidArgument {
                name: "iscsi_iface".into(),
                reason: format!("{iface:?} is not an iface name"),
            });
        }
        if !matches!(protocol, Protocol::Iscsi | Protocol::Iser) {
            return Err(Error::ProtocolMismatch {
                expected: "iscsi".into(),
                found: protocol.to_string(),
            });
        }
        let locks = opts.locks();
        let registry = Registry::new(&opts.context.host, REGISTRY);
        Ok(IscsiConnector {
            protocol,
            opts,
            iface,
            locks,
            registry,
        })
    }

    fn host(&self) -> &Host {
        &self.opts.context.host
    }

    fn adm(&self, deadline: Instant) -> Iscsiadm<'_> {
        Iscsiadm::new(&*self.opts.context.runner, &self.iface, deadline)
    }

    fn cleanup_deadline(&self) -> Instant {
        Instant::now() + self.opts.cleanup_timeout
    }

    fn props<'a>(&self, info: &'a ConnectionInfo) -> Result<&'a IscsiProperties> {
        info.iscsi().ok_or_else(|| info.mismatch(self.protocol))
    }

    // ---------------------------------------------------------------- connect

    fn connect(&self, props: &IscsiProperties) -> Result<DeviceRecord> {
        let started = Instant::now();
        let deadline = started + self.opts.operation_timeout;
        let _volume = self.locks.lock(&props.volume_key(), LockMode::Exclusive)?;
        let mut discovered = Vec::new();
        let result = self
            .targets_for_connect(props, deadline, &mut discovered)
            .and_then(|targets| {
                if self.opts.use_multipath {
                    self.connect_multipath(props, &targets, deadline)
                } else {
                    self.connect_single(props, &targets, deadline)
                }
            });
        self.forget_unused_nodes(&discovered);
        let record = result?;
        if let Err(e) = self.registry.put(&props.volume_key(), &record) {
            tracing::warn!(error = %e.chain(), "cannot note the attachment in the registry; an audit will list its session as unused");
        }
        tracing::info!(phase = "connected", elapsed_ms = ms(started.elapsed()), path = %record.path.display(), "volume connected");
        Ok(record)
    }

    /// The targets to log in to: the given ones, plus (for multipath without target
    /// lists) the portals sendtargets discovery reports for the same IQN. The node records
    /// discovery created (not there before it) are added to `discovered`.
    fn targets_for_connect(
        &self,
        props: &IscsiProperties,
        deadline: Instant,
        discovered: &mut Vec<IscsiTarget>,
    ) -> Result<Vec<IscsiTarget>> {
        let discover_for_paths = self.opts.use_multipath && props.targets.len() == 1;
        if !props.wants_discovery() && !discover_for_paths {
            return Ok(props.targets.clone());
        }
        let adm = self.adm(deadline);
        let before = adm.nodes()?;
        let mut last_err = None;
        let mut portals: Vec<&Portal> = props.targets.iter().map(|t| &t.portal).collect();
        portals.dedup();
        for portal in portals {
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
                        let base = props.primary();
                        for n in found.into_iter().filter(|n| n.iqn == base.iqn) {
                            let t = IscsiTarget {
                                portal: n.portal,
                                iqn: n.iqn,
                                lun: base.lun,
                            };
                            if !targets.contains(&t) {
                                targets.push(t);
                            }
                        }
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
            if Instant::now() >= deadline {
                break;
            }
            match self.attach_path(props, t, deadline, None) {
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
        targets: &[IscsiTarget],
        deadline: Instant,
    ) -> Result<DeviceRecord> {
        let cancel = Cancel::new();
        let span = tracing::Span::current();
        let (tx, rx) = mpsc::channel::<(IscsiTarget, Result<AttachedPath>)>();
        let (paths, errors, map) = std::thread::scope(|s| {
            for t in targets {
                let (tx, cancel, span) = (tx.clone(), &cancel, span.clone());
                s.spawn(move || {
                    let _e = span.entered();
                    let r = self.attach_path(props, t, deadline, Some(cancel));
                    // The receiver lives until every sender is gone.
                    let _ = tx.send((t.clone(), r));
                });
            }
            drop(tx);
            self.gather_paths(&rx, targets.len(), &cancel, deadline)
        });
        if paths.is_empty() {
            return Err(all_failed(errors));
        }
        match map {
            Ok(m) => self.record(props, &paths, Some(&m)),
            Err(reason) if self.opts.enforce_multipath => {
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

    /// Collects path results as they arrive; builds the map from the first path up; gives
    /// the paths still logging in `extra_path_grace` once the map is usable, then stops them.
    #[allow(clippy::type_complexity)]
    fn gather_paths(
        &self,
        rx: &mpsc::Receiver<(IscsiTarget, Result<AttachedPath>)>,
        total: usize,
        cancel: &Cancel,
        deadline: Instant,
    ) -> (
        Vec<AttachedPath>,
        Vec<(IscsiTarget, Error)>,
        std::result::Result<MultipathMap, String>,
    ) {
        let mut paths: Vec<AttachedPath> = Vec::new();
        let mut errors = Vec::new();
        let mut map: Option<std::result::Result<MultipathMap, String>> = None;
        let mut grace_end: Option<Instant> = None;
        let mut pending = total;
        while pending > 0 {
            let msg = match grace_end {
                Some(end) => match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
                    Ok(m) => m,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        tracing::info!(pending, "device usable; stopping paths still logging in");
                        cancel.cancel();
                        grace_end = None;
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            pending -= 1;
            let (t, result) = msg;
            let p = match result {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(target = %t, error = %e.chain(), "path failed");
                    errors.push((t, e));
                    continue;
                }
            };
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
                        grace_end =
                            Some((Instant::now() + self.opts.extra_path_grace).min(deadline));
                    }
                    map = Some(r);
                }
                Some(Ok(_)) => {
                    let dev = self.host().public_dev_path(&self.host().dev(&p.name));
                    if let Err(e) = multipath::add_path(&*self.opts.context.runner, &dev, deadline)
                    {
                        tracing::warn!(device = %p.name, error = %e.chain(), "multipathd did not take the path");
                    }
                }
                Some(Err(_)) => {}
            }
            paths.push(p);
        }
        let map = map.unwrap_or_else(|| Err("no path came up".to_string()));
        (paths, errors, map)
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
        let deadline = deadline.min(started + self.opts.multipath_timeout);
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
                let ready = block::is_ready(host, &m.dm)? && block::size_bytes(host, &m.dm)? > 0;
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
                .map(|p| PathRecord {
                    device: host.public_dev_path(&host.dev(&p.name)),
                    hctl: p.hctl,
                    portal: p.target.portal.clone(),
                    iqn: p.target.iqn.clone(),
                    lun: p.target.lun,
                })
                .collect(),
            ..DeviceRecord::block(self.protocol, path, props.volume_id.clone())
        })
    }

    /// Brings up one path; on failure undoes what this attempt created.
    fn attach_path(
        &self,
        props: &IscsiProperties,
        t: &IscsiTarget,
        deadline: Instant,
        cancel: Option<&Cancel>,
    ) -> Result<AttachedPath> {
        let span = tracing::info_span!("path", target = %t);
        let _e = span.enter();
        let shared = self.locks.lock(&target_lock_key(t), LockMode::Shared)?;
        let mut made = Made::default();
        let adm = match cancel {
            Some(c) => self.adm(deadline).with_cancel(c),
            None => self.adm(deadline),
        };
        let mut sessions = SessionFinder::new(self.host());
        let result = self.attach_path_steps(props, t, &adm, &mut made, &mut sessions, deadline);
        drop(shared);
        if result.is_err() {
            self.undo(t, &made, &mut sessions);
        }
        result
    }

    fn attach_path_steps(
        &self,
        props: &IscsiProperties,
        t: &IscsiTarget,
        adm: &Iscsiadm<'_>,
        made: &mut Made,
        sessions: &mut SessionFinder<'_>,
        deadline: Instant,
    ) -> Result<AttachedPath> {
        let host = self.host();
        // One connect of a target at a time sets its node record up and logs in: open-iscsi's
        // record database does not take concurrent `--op new` / `--op update` of one record
        // (a record being rewritten is briefly missing), and only the first connect has a
        // login to do; the ones after it find the session and use it as it is.
        let (session, reused) = {
            let _setup = self.locks.lock(&target_setup_key(t), LockMode::Exclusive)?;
            // The one read of the host's sessions this path needs: after the login only the
            // sessions that appeared since are read.
            match sessions.find(t)? {
                Some(s) => (s, true),
                None => (self.log_in(props, t, adm, made, sessions)?, false),
            }
        };
        if reused {
            tracing::debug!(sid = session.sid, "reusing session");
            // A logout needs the record: give a session that lost it one back (checked
            // outside the lock, so concurrent connects of the target do not queue on it).
            if !adm.node_exists(t)? {
                let _setup = self.locks.lock(&target_setup_key(t), LockMode::Exclusive)?;
                if !adm.node_exists(t)? {
                    adm.node_new(t)?;
                    made.node = true;
                    self.configure_node(props, t, adm)?;
                }
            }
        }

        let started = Instant::now();
        let mut watch = DeviceWatch::open(host, &["scsi", "block"]);
        let present = session
            .hctl(t.lun)
            .filter(|h| scsi::device_exists(host, *h));
        if present.is_none() {
            scsi::scan_lun(
                host,
                session.host_no,
                Some(session.channel),
                session.target_id,
                t.lun,
            )?;
        }
        let sid = session.sid;
        let lun_deadline = deadline.min(Instant::now() + self.opts.scan_timeout);
        let hctl = watch.wait_for(
            &format!("LUN {} on session {sid} after scan", t.lun),
            lun_deadline,
            || {
                let s = session::describe(host, sid)?.ok_or_else(|| Error::UnexpectedContent {
                    path: host.sys(format!("class/iscsi_session/session{sid}")),
                    reason: "the session ended".into(),
                })?;
                Ok(s.hctl(t.lun).filter(|h| scsi::device_exists(host, *h)))
            },
        )?;
        tracing::info!(phase = "scan", elapsed_ms = ms(started.elapsed()), %hctl, "LUN present");
        let name = watch.wait_for(&format!("block device of {hctl}"), deadline, || {
            let Some(name) = scsi::block_name(host, hctl)? else {
                return Ok(None);
            };
            Ok(block::is_ready(host, &name)?.then_some(name))
        })?;
        if present.is_none() {
            made.device = Some((hctl, name.clone()));
        }
        let wwid = scsi::wwid(host, hctl)?;
        tracing::info!(phase = "device_found", elapsed_ms = ms(started.elapsed()), device = %name, wwid = ?wwid, "block device ready");
        Ok(AttachedPath {
            target: t.clone(),
            hctl,
            name,
            wwid,
        })
    }

    /// Makes the node record (if missing), configures it and logs in; returns the session.
    fn log_in(
        &self,
        props: &IscsiProperties,
        t: &IscsiTarget,
        adm: &Iscsiadm<'_>,
        made: &mut Made,
        sessions: &mut SessionFinder<'_>,
    ) -> Result<Session> {
        let host = self.host();
        if !adm.node_exists(t)? {
            adm.node_new(t)?;
            made.node = true;
        }
        self.configure_node(props, t, adm)?;
        let started = Instant::now();
        if adm.login(t, self.login_limit())? == LoginOutcome::LoggedIn {
            made.session = true;
        }
        tracing::info!(
            phase = "login",
            elapsed_ms = ms(started.elapsed()),
            "logged in"
        );
        sessions.find(t)?.ok_or_else(|| Error::UnexpectedContent {
            path: host.sys("class/iscsi_session"),
            reason: format!("no session for {t} after a successful login"),
        })
    }

    /// Writes the node settings in one iscsiadm call: manual scan, login timeout and
    /// retries, start-up at boot, CHAP. An iscsiadm without the manual-scan setting gets the
    /// rest without it (the kernel then scans every LUN at login).
    fn configure_node(
        &self,
        props: &IscsiProperties,
        t: &IscsiTarget,
        adm: &Iscsiadm<'_>,
    ) -> Result<()> {
        let mut params = vec![
            NodeParam::new(
                "node.conn[0].timeo.login_timeout",
                self.opts.login_timeout.as_secs().max(1).to_string(),
            ),
            NodeParam::new(
                "node.session.initial_login_retry_max",
                self.opts.login_retries.to_string(),
            ),
            NodeParam::new("node.startup", "automatic"),
        ];
        if let Some(chap) = &props.auth {
            params.extend(NodeParam::chap(chap));
        }
        let mut with_scan = vec![NodeParam::new("node.session.scan", "manual")];
        with_scan.extend(params.iter().cloned());
        match adm.node_update(t, &with_scan) {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::debug!(error = %e.chain(), "iscsiadm refused the settings with manual scan; retrying without it");
                adm.node_update(t, &params)
            }
        }
    }

    /// How long one login may take: iscsid's own attempts and timeouts, plus slack.
    fn login_limit(&self) -> Duration {
        self.opts.login_timeout * (self.opts.login_retries + 1) + Duration::from_secs(5)
    }

    /// Undoes one path attempt: its scanned device, its session, its node record.
    fn undo(&self, t: &IscsiTarget, made: &Made, sessions: &mut SessionFinder<'_>) {
        let deadline = self.cleanup_deadline();
        if let Some((hctl, name)) = &made.device {
            if let Err(e) = self.remove_scsi_device(
                &VolumeDevice {
                    hctl: *hctl,
                    name: name.clone(),
                },
                true,
                deadline,
            ) {
                tracing::warn!(error = %e.chain(), "undo: removing the device failed");
            }
        }
        if made.session || made.node {
            if let Err(e) = self.release_target(t, made.node, sessions, deadline) {
                tracing::warn!(error = %e.chain(), "undo: releasing the target failed");
            }
        }
    }

    /// Deletes the node records discovery created for this connect that no session uses
    /// now (targets that failed, or that discovery reported but the volume does not use).
    /// A target's lock is taken exclusively first, so no connect of that target is
    /// between its node record and its device.
    fn forget_unused_nodes(&self, discovered: &[IscsiTarget]) {
        if discovered.is_empty() {
            return;
        }
        let deadline = self.cleanup_deadline();
        let adm = self.adm(deadline);
        for t in discovered {
            let r = self
                .locks
                .lock(&target_lock_key(t), LockMode::Exclusive)
                .and_then(|_x| match session::find(self.host(), t)? {
                    Some(_) => Ok(()),
                    None => {
                        tracing::debug!(target = %t, "deleting the node record discovery made");
                        adm.node_delete(t)
                    }
                });
            if let Err(e) = r {
                tracing::warn!(target = %t, error = %e.chain(), "cannot delete a node record discovery made");
            }
        }
    }

    /// Undoes paths that came up (a multipath connect that must not keep them).
    fn undo_paths(&self, paths: &[AttachedPath]) {
        let deadline = self.cleanup_deadline();
        let mut sessions = SessionFinder::new(self.host());
        for p in paths {
            let dev = VolumeDevice {
                hctl: p.hctl,
                name: p.name.clone(),
            };
            if let Err(e) = self.remove_scsi_device(&dev, true, deadline) {
                tracing::warn!(error = %e.chain(), "undo: removing the device failed");
            }
            if let Err(e) = self.release_target(&p.target, true, &mut sessions, deadline) {
                tracing::warn!(error = %e.chain(), "undo: releasing the target failed");
            }
        }
    }

    // ---------------------------------------------------------------- disconnect

    /// Logs out of `t` when its session carries no LUNs, then (when asked) deletes the node
    /// record if no session remains. Holds the target lock exclusively, so no connect of
    /// the same target is between login and device.
    fn release_target(
        &self,
        t: &IscsiTarget,
        delete_node: bool,
        sessions: &mut SessionFinder<'_>,
        deadline: Instant,
    ) -> Result<()> {
        let _x = self.locks.lock(&target_lock_key(t), LockMode::Exclusive)?;
        let adm = self.adm(deadline);
        if let Some(s) = sessions.find(t)? {
            let luns = session::luns(self.host(), s.sid)?;
            if !luns.is_empty() {
                tracing::debug!(target = %t, sid = s.sid, luns = luns.len(), "session still carries LUNs; keeping it");
                return Ok(());
            }
            let started = Instant::now();
            adm.logout(t)?;
            tracing::info!(phase = "logout", elapsed_ms = ms(started.elapsed()), target = %t, "logged out");
        }
        if delete_node {
            adm.node_delete(t)?;
        }
        Ok(())
    }

    /// The volume's SCSI devices on the host: each target's LUN on its session, plus the
    /// recorded paths that still show the recorded WWID. The recorded paths also tell
    /// `sessions` where to look first.
    fn volume_devices(
        &self,
        targets: &[IscsiTarget],
        record: Option<&DeviceRecord>,
        sessions: &mut SessionFinder<'_>,
    ) -> Result<Vec<VolumeDevice>> {
        let host = self.host();
        let expected = record.and_then(|r| r.scsi_wwn.as_deref());
        let mut out: Vec<VolumeDevice> = Vec::new();
        let consider = |hctl: Hctl, out: &mut Vec<VolumeDevice>| -> Result<()> {
            if out.iter().any(|d| d.hctl == hctl) {
                return Ok(());
            }
            let Some(name) = scsi::block_name(host, hctl)? else {
                return Ok(());
            };
            if let (Some(want), Some(have)) = (expected, scsi::wwid(host, hctl)?) {
                if want != have.as_str() {
                    tracing::warn!(%hctl, device = %name, want, have = %have, "device shows another volume; leaving it");
                    return Ok(());
                }
            }
            out.push(VolumeDevice { hctl, name });
            Ok(())
        };
        for p in record.map_or(&[][..], |r| &r.paths[..]) {
            sessions.hint(p.hctl)?;
        }
        for t in targets {
            if let Some(h) = sessions.find(t)?.and_then(|s| s.hctl(t.lun)) {
                consider(h, &mut out)?;
            }
        }
        if let Some(r) = record {
            for p in &r.paths {
                consider(p.hctl, &mut out)?;
            }
        }
        Ok(out)
    }

    fn disconnect(
        &self,
        props: &IscsiProperties,
        record: Option<&DeviceRecord>,
        opts: DisconnectOptions,
    ) -> Result<()> {
        let started = Instant::now();
        let deadline = started + self.opts.operation_timeout;
        let host = self.host();
        let _volume = self.locks.lock(&props.volume_key(), LockMode::Exclusive)?;
        let mut targets = props.targets.clone();
        if let Some(r) = record {
            if r.protocol != self.protocol
                && !(matches!(r.protocol, Protocol::Iscsi | Protocol::Iser))
            {
                return Err(Error::InvalidDeviceRecord {
                    reason: format!("the record is of a {} volume", r.protocol),
                });
            }
            for p in &r.paths {
                let t = IscsiTarget {
                    portal: p.portal.clone(),
                    iqn: p.iqn.clone(),
                    lun: p.lun,
                };
                if !targets.contains(&t) {
                    targets.push(t);
                }
            }
        }
        let mut failures = Failures::new(opts.ignore_errors);
        let mut sessions = SessionFinder::new(host);
        let devices = self.volume_devices(&targets, record, &mut sessions)?;

        let mut maps: Vec<MultipathMap> = Vec::new();
        for d in &devices {
            if let Some(m) = multipath::holder_map(host, &d.name)? {
                if !maps.contains(&m) {
                    maps.push(m);
                }
            }
        }
        if let Some(id) = record.and_then(|r| r.multipath_id.as_deref()) {
            if let Some(m) = multipath::map_by_name(host, id)? {
                let matches = record
                    .and_then(|r| r.scsi_wwn.as_deref())
                    .is_none_or(|w| w == m.wwid);
                if matches && !maps.contains(&m) {
                    maps.push(m);
                }
            }
        }
        for m in &maps {
            failures.step(self.remove_map(m, opts.force, deadline))?;
        }
        for d in &devices {
            failures.step(self.remove_scsi_device(d, opts.force, deadline))?;
        }
        for t in &targets {
            failures.step(self.release_target(t, true, &mut sessions, deadline))?;
        }
        failures.step(self.registry.remove(&props.volume_key()))?;
        tracing::info!(
            phase = "disconnected",
            elapsed_ms = ms(started.elapsed()),
            devices = devices.len(),
            maps = maps.len(),
            "volume disconnected"
        );
        failures.finish()
    }

    fn remove_map(&self, m: &MultipathMap, force: bool, deadline: Instant) -> Result<()> {
        let host = self.host();
        let runner = &*self.opts.context.runner;
        let dev = host.public_dev_path(&host.dev(&m.dm));
        block::flush_before_removal(runner, &dev, force, deadline)?;
        let mut watch = DeviceWatch::open(host, &["block"]);
        if let Err(e) = multipath::flush_map(runner, &m.name, deadline) {
            if !force {
                return Err(e);
            }
            tracing::warn!(map = %m.name, error = %e.chain(), "multipath -f failed; forcing removal");
            multipath::force_remove_map(runner, &m.name, deadline)?;
        }
        watch.wait_for(
            &format!("removal of multipath map {} ({})", m.name, m.dm),
            deadline,
            || Ok((!block::exists(host, &m.dm)).then_some(())),
        )
    }

    fn remove_scsi_device(&self, d: &VolumeDevice, force: bool, deadline: Instant) -> Result<()> {
        let host = self.host();
        if !scsi::device_exists(host, d.hctl) {
            return Ok(());
        }
        let dev = host.public_dev_path(&host.dev(&d.name));
        block::flush_before_removal(&*self.opts.context.runner, &dev, force, deadline)?;
        let mut watch = DeviceWatch::open(host, &["scsi", "block"]);
        scsi::delete(host, d.hctl)?;
        watch.wait_for(
            &format!("removal of {} ({})", d.name, d.hctl),
            deadline,
            || {
                Ok(
                    (!scsi::device_exists(host, d.hctl) && !block::exists(host, &d.name))
                        .then_some(()),
                )
            },
        )
    }

    // ---------------------------------------------------------------- extend

    fn extend(&self, props: &IscsiProperties) -> Result<u64> {
        let deadline = Instant::now() + self.opts.operation_timeout;
        let host = self.host();
        let _volume = self.locks.lock(&props.volume_key(), LockMode::Exclusive)?;
        let devices = self.volume_devices(&props.targets, None, &mut SessionFinder::new(host))?;
        if devices.is_empty() {
            return Err(Error::VolumeDeviceNotFound {
                tried: props
                    .targets
                    .iter()
                    .map(|t| AttemptFailure {
                        target: t.to_string(),
                        reason: "no attached device".into(),
                    })
                    .collect(),
            });
        }
        let mut size = 0;
        for d in &devices {
            scsi::rescan(host, d.hctl)?;
            size = size.max(block::size_bytes(host, &d.name)?);
        }
        let Some(map) = multipath::holder_map(host, &devices[0].name)? else {
            tracing::info!(size, "volume extended");
            return Ok(size);
        };
        let mut watch = DeviceWatch::open(host, &["block"]);
        multipath::resize_map(&*self.opts.context.runner, &map.name, deadline)?;
        let size = watch.wait_for(
            &format!("multipath map {} to grow to {size} bytes", map.name),
            deadline,
            || {
                let now = block::size_bytes(host, &map.dm)?;
                Ok((now >= size).then_some(now))
            },
        )?;
        tracing::info!(size, map = %map.name, "volume extended");
        Ok(size)
    }
}

/// The error for a connect whose every path failed: the authentication failure when that
/// is what stopped every path, else "volume device not found" with each attempt.
fn all_failed(errors: Vec<(IscsiTarget, Error)>) -> Error {
    let all_auth = !errors.is_empty()
        && errors
            .iter()
            .all(|(_, e)| matches!(e, Error::AuthenticationFailed { .. }));
    let mut it = errors.into_iter();
    if all_auth {
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

impl Connector for IscsiConnector {
    fn protocol(&self) -> Protocol {
        self.protocol
    }

    fn connect_volume(&self, info: &ConnectionInfo) -> Result<DeviceRecord> {
        let props = self.props(info)?;
        let span = tracing::info_span!("connect_volume", protocol = %self.protocol, volume = ?props.volume_id, target = %props.primary(), multipath = self.opts.use_multipath);
        let _e = span.enter();
        self.connect(props)
    }

    fn disconnect_volume(
        &self,
        info: &ConnectionInfo,
        device: Option<&DeviceRecord>,
        options: DisconnectOptions,
    ) -> Result<()> {
        let props = self.props(info)?;
        let span = tracing::info_span!("disconnect_volume", protocol = %self.protocol, volume = ?props.volume_id, target = %props.primary(), force = options.force, ignore_errors = options.ignore_errors);
        let _e = span.enter();
        self.disconnect(props, device, options)
    }

    fn extend_volume(&self, info: &ConnectionInfo) -> Result<u64> {
        let props = self.props(info)?;
        let span = tracing::info_span!("extend_volume", volume = ?props.volume_id, target = %props.primary());
        let _e = span.enter();
        self.extend(props)
    }

    fn get_volume_paths(&self, info: &ConnectionInfo) -> Result<Vec<PathBuf>> {
        let props = self.props(info)?;
        let host = self.host();
        Ok(props
            .targets
            .iter()
            .map(|t| {
                host.dev("disk/by-path")
                    .join(by_path_name(&t.portal, t.iqn.as_str(), t.lun))
            })
            .filter(|p| p.exists())
            .map(|p| host.public_dev_path(&p))
            .collect())
    }

    fn get_search_path(&self) -> Option<PathBuf> {
        Some(
            self.host()
                .public_dev_path(&self.host().dev("disk/by-path")),
        )
    }

    fn get_all_available_volumes(&self) -> Result<Vec<PathBuf>> {
        let host = self.host();
        let dir = host.dev("disk/by-path");
        Ok(host
            .list_dir(&dir)?
            .into_iter()
            .filter(|n| n.starts_with("ip-") && n.contains("-iscsi-") && !n.contains("-part"))
            .map(|n| host.public_dev_path(&dir.join(n)))
            .collect())
    }

    fn check_valid_device(&self, path: &Path) -> Result<()> {
        block::check_readable(&self.host().map_dev_path(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_path_names_follow_udev() {
        let p: Portal = "127.0.0.1:3260".parse().unwrap();
        assert_eq!(
            by_path_name(&p, "iqn.2003-01.x:t", 0),
            "ip-127.0.0.1:3260-iscsi-iqn.2003-01.x:t-lun-0"
        );
        let p6: Portal = "[fe80::1]:3260".parse().unwrap();
        assert_eq!(
            by_path_name(&p6, "iqn.2003-01.x:t", 256),
            "ip-fe80::1:3260-iscsi-iqn.2003-01.x:t-lun-0x0100000000000000"
        );
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
