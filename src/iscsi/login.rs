//! One path's attach: node record and its settings, login (or reuse of the session), the
//! targeted scan of the LUN and the wait for its block device; the undo of a failed attempt.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::records::{self, NodeWrite};
use super::session::{self, Session, SessionFinder};
use super::{
    ms, target_lock_key, target_setup_key, AttachedPath, IscsiDriver, IscsiProperties, IscsiTarget,
    Iscsiadm, LoginOutcome, NodeParam, VolumeDevice,
};
use crate::devices::{block, scsi};
use crate::error::{Error, Result};
use crate::model::ids::Hctl;
use crate::platform::cancel;
use crate::platform::cmd::Cancel;
use crate::platform::host::Host;
use crate::platform::lock::LockMode;
use crate::platform::wait::DeviceWatch;

/// What one path attempt created, so a failure can undo exactly that.
#[derive(Debug, Default)]
struct Made {
    node: bool,
    session: bool,
    device: Option<(Hctl, String)>,
    /// The LUN this attempt scanned on a session (`sid`, LUN), before its device was known:
    /// a wait cut short after the scan leaves a device the undo must still remove.
    scanned: Option<(u32, u64)>,
}

/// How many scans of a LUN on a logged-in session must make no device before the LUN counts
/// as missing. The second scan covers a first one whose INQUIRY a connection loss cut
/// short while the session was back in `LOGGED_IN` by the time its state was read again.
const EMPTY_SCANS_FOR_MISSING: u32 = 2;

/// The targeted scan of one LUN, and what it shows about the LUN's existence.
///
/// A write of `C T L` to a SCSI host's `scan` attribute scans in the writer's context:
/// `store_scan()` (drivers/scsi/scsi_sysfs.c) calls `scsi_scan()`, which for iSCSI calls
/// the transport's `user_scan`, `iscsi_user_scan()` (drivers/scsi/scsi_transport_iscsi.c):
/// for each session on the host `iscsi_user_scan_session()` runs `scsi_scan_target()`
/// (drivers/scsi/scsi_scan.c), which takes the host's `scan_mutex` (so a scan iscsid or
/// the kernel started is finished first) and probes the one LUN
/// (`scsi_probe_and_add_lun()`: INQUIRY, then `scsi_sysfs_add_sdev()` for a manual scan,
/// which is not async). So when the write returns, the SCSI device `H:C:T:L` exists if the
/// target has the LUN.
///
/// Except when nothing was scanned: `iscsi_user_scan_session()` skips a session whose
/// state is not `LOGGED_IN` (still logging in, or in recovery) and the write still
/// succeeds. And a scan that straddles a connection loss can end with no device although
/// the LUN exists (its INQUIRY failed). Hence the LUN counts as missing only after
/// [`EMPTY_SCANS_FOR_MISSING`] scans that each began and ended with the session
/// `LOGGED_IN` and made no device; while the session is in another state the scan waits
/// for it (and is written again once it is back). A kernel that shows no session `state`
/// gets one scan and the wait, as before.
#[derive(Debug, Default)]
struct LunScan {
    /// Scans written.
    written: u32,
    /// Scans on a logged-in session that made no device.
    empty: u32,
}

impl LunScan {
    /// One look after the device was not found on `s`: scans when the session can be
    /// scanned; `NotOnTarget` once the scans prove the LUN missing.
    fn step(&mut self, host: &Host, s: &Session, t: &IscsiTarget) -> Result<Option<Hctl>> {
        let write = |this: &mut Self| {
            this.written += 1;
            scsi::scan_lun(host, s.host_no, Some(s.channel), s.target_id, t.lun)
        };
        match session::state(host, s.sid)?.as_deref() {
            None => {
                if self.written == 0 {
                    write(self)?;
                }
                return Ok(None);
            }
            Some(session::LOGGED_IN) => {}
            Some(other) => {
                tracing::debug!(
                    sid = s.sid,
                    state = other,
                    "session not logged in; scanning once it is"
                );
                return Ok(None);
            }
        }
        write(self)?;
        let after = session::describe(host, s.sid)?;
        if let Some(h) = after
            .as_ref()
            .and_then(|a| a.hctl(t.lun))
            .filter(|h| scsi::device_exists(host, *h))
        {
            return Ok(Some(h));
        }
        if session::state(host, s.sid)?.as_deref() == Some(session::LOGGED_IN) {
            self.empty += 1;
        }
        if self.empty < EMPTY_SCANS_FOR_MISSING {
            return Ok(None);
        }
        let at = after.and_then(|a| a.hctl(t.lun)).map_or_else(
            || format!("host{} LUN {}", s.host_no, t.lun),
            |h| h.to_string(),
        );
        // A connect asked to stop meanwhile reports that, as the wait would.
        cancel::check(|| format!("LUN {} on session {} after scan", t.lun, s.sid))?;
        Err(Error::NotOnTarget {
            target: format!("{} {} (session {})", t.portal, t.iqn, s.sid),
            wanted: format!("LUN {}", t.lun),
            seen: format!(
                "{} scans of {at} on the logged-in session made no SCSI device",
                self.empty
            ),
        })
    }
}

impl IscsiDriver {
    /// Brings up one path; on failure undoes what this attempt created.
    pub(super) fn attach_path(
        &self,
        props: &IscsiProperties,
        t: &IscsiTarget,
        deadline: Instant,
        cancel: Option<&Cancel>,
        logged_in: &dyn Fn(),
    ) -> Result<AttachedPath> {
        let span = tracing::info_span!("path", target = %t);
        let _e = span.enter();
        let shared = self
            .locks
            .lock_until(&target_lock_key(t), LockMode::Shared, deadline)?;
        let mut made = Made::default();
        let adm = match cancel {
            Some(c) => self.adm(deadline).with_cancel(c),
            None => self.adm(deadline),
        };
        let mut sessions = SessionFinder::new(self.host());
        let result = self.attach_path_steps(
            props,
            t,
            &adm,
            &mut made,
            &mut sessions,
            deadline,
            logged_in,
        );
        drop(shared);
        if result.is_err() {
            self.undo(t, &made, &mut sessions);
        }
        result
    }

    // `logged_in` tells a multipath connect which paths are past their login.
    #[allow(clippy::too_many_arguments)]
    fn attach_path_steps(
        &self,
        props: &IscsiProperties,
        t: &IscsiTarget,
        adm: &Iscsiadm<'_>,
        made: &mut Made,
        sessions: &mut SessionFinder<'_>,
        deadline: Instant,
        logged_in: &dyn Fn(),
    ) -> Result<AttachedPath> {
        let host = self.host();
        // One connect of a target at a time sets its node record up and logs in: open-iscsi's
        // record database does not take concurrent `--op new` / `--op update` of one record
        // (a record being rewritten is briefly missing), and only the first connect has a
        // login to do; the ones after it find the session and use it as it is.
        let (session, reused) = {
            let _setup =
                self.locks
                    .lock_until(&target_setup_key(t), LockMode::Exclusive, deadline)?;
            // The one read of the host's sessions this path needs: after the login only the
            // sessions that appeared since are read.
            match sessions.find(t)? {
                Some(s) => (s, true),
                None => (self.log_in(props, t, adm, made, sessions, deadline)?, false),
            }
        };
        logged_in();
        if reused {
            tracing::debug!(sid = session.sid, "reusing session");
            // A logout needs the record: give a session that lost it one back (checked
            // outside the lock, so concurrent connects of the target do not queue on it).
            if !self.node_exists(t, adm)? {
                let _setup =
                    self.locks
                        .lock_until(&target_setup_key(t), LockMode::Exclusive, deadline)?;
                if !self.node_exists(t, adm)? {
                    self.set_up_node(props, t, adm, made, deadline)?;
                }
            }
        }

        let started = Instant::now();
        let mut watch = DeviceWatch::open(host, &["scsi", "block"]);
        let present = session
            .hctl(t.lun)
            .filter(|h| scsi::device_exists(host, *h));
        if present.is_none() {
            // No scan for a connect asked to stop (during its login, say): nothing to undo.
            cancel::check(|| format!("the scan of LUN {} on session {}", t.lun, session.sid))?;
            // The scans themselves are written by the wait below (`LunScan`).
            made.scanned = Some((session.sid, t.lun));
        }
        let sid = session.sid;
        let lun_deadline = deadline.min(Instant::now() + self.opts.scan_timeout);
        let mut scan = LunScan::default();
        let hctl = watch.wait_for(
            &format!("LUN {} on session {sid} after scan", t.lun),
            lun_deadline,
            || {
                let s = session::describe(host, sid)?.ok_or_else(|| Error::UnexpectedContent {
                    path: host.sys(format!("class/iscsi_session/session{sid}")),
                    reason: "the session ended".into(),
                })?;
                if let Some(h) = s.hctl(t.lun).filter(|h| scsi::device_exists(host, *h)) {
                    return Ok(Some(h));
                }
                scan.step(host, &s, t)
            },
        );
        let hctl = hctl.inspect_err(|e| {
            if let Error::NotOnTarget { .. } = e {
                tracing::info!(
                    phase = "not_on_target",
                    elapsed_ms = ms(started.elapsed()),
                    lun = t.lun,
                    "the target has no such LUN"
                );
            }
        })?;
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
        deadline: Instant,
    ) -> Result<Session> {
        let host = self.host();
        let direct = self.set_up_node(props, t, adm, made, deadline)?;
        let started = Instant::now();
        let outcome = match self.login(adm, t) {
            // iscsiadm finds no record where this one was written: its database is
            // elsewhere. The record goes, and iscsiadm makes it from now on.
            Err(Error::CommandFailed { status, .. }) if direct && status.code() == Some(21) => {
                tracing::warn!(target = %t, "iscsiadm does not read the node record written into /etc/iscsi (its record database is elsewhere); using iscsiadm for node records from now on");
                self.direct_records.store(false, Ordering::Relaxed);
                if made.node {
                    records::delete_node(host, t, deadline)?;
                    made.node = false;
                }
                self.set_up_node(props, t, adm, made, deadline)?;
                self.login(adm, t)?
            }
            r => r?,
        };
        if outcome == LoginOutcome::LoggedIn {
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

    /// `iscsiadm --login`, not cut short by the operation's cancel: iscsid carries on with a
    /// login whose iscsiadm was killed, and the session it makes after the connect gave up
    /// would be left to nobody. The login's own limit bounds it; the cancel is seen at the
    /// next wait, and the undo logs the session out. (The cancel of a multipath connect's
    /// paths still logging in when the map is usable does stop it.)
    fn login(&self, adm: &Iscsiadm<'_>, t: &IscsiTarget) -> Result<LoginOutcome> {
        let _whole = cancel::shield();
        adm.login(t, self.login_limit())
    }

    /// Whether the target has a node record at its portal (any iface's): a look at the
    /// record files where the database is the known one, else `iscsiadm -m node -T -p`.
    fn node_exists(&self, t: &IscsiTarget, adm: &Iscsiadm<'_>) -> Result<bool> {
        if self.direct_records() && records::known_database(self.host())?.is_some() {
            return Ok(!records::node_record_files(self.host(), t)?.is_empty());
        }
        adm.node_exists(t)
    }

    /// The node record with hostbrick's settings ([`IscsiDriver::node_settings`], CHAP):
    /// written into open-iscsi's files directly where the database is the known one
    /// ([`records::ensure_node`], as `--op new` and `--op update` would leave it, under
    /// open-iscsi's database lock), else with iscsiadm ([`IscsiDriver::configure_node`]).
    /// Notes in `made` a record it created; returns whether it wrote the files itself. The
    /// caller holds the target's setup lock.
    fn set_up_node(
        &self,
        props: &IscsiProperties,
        t: &IscsiTarget,
        adm: &Iscsiadm<'_>,
        made: &mut Made,
        deadline: Instant,
    ) -> Result<bool> {
        let host = self.host();
        if self.direct_records() {
            if let Some(conf) = records::known_database(host)? {
                let settings = self.node_settings()?;
                match records::ensure_node(
                    host,
                    t,
                    &self.iface,
                    &conf,
                    &settings,
                    props.auth.as_ref(),
                    deadline,
                )? {
                    NodeWrite::Made(path) => {
                        tracing::debug!(path = %path.display(), "node record written");
                        made.node = true;
                        return Ok(true);
                    }
                    NodeWrite::Updated => return Ok(true),
                    NodeWrite::Unsupported => {
                        tracing::debug!(iface = %self.iface, "node record left to iscsiadm (iface or iscsid.conf not one hostbrick writes records for)");
                    }
                }
            }
        }
        if !adm.node_exists(t)? {
            adm.node_new(t)?;
            made.node = true;
        }
        self.configure_node(props, t, adm)?;
        Ok(false)
    }

    /// hostbrick's node settings: manual scan (first: an iscsiadm without it gets the rest),
    /// login timeout and retries, start-up at boot, and the session timers (replacement
    /// timeout, NOP-Out interval and timeout, from the iSCSI options).
    fn node_settings(&self) -> Result<Vec<(&'static str, String)>> {
        let mut settings = vec![
            ("node.session.scan", "manual".to_string()),
            (
                "node.conn[0].timeo.login_timeout",
                self.opts.iscsi.login_timeout.as_secs().max(1).to_string(),
            ),
            (
                "node.session.initial_login_retry_max",
                self.opts.iscsi.login_retries.to_string(),
            ),
            ("node.startup", "automatic".to_string()),
        ];
        settings.extend(
            self.opts
                .iscsi
                .session_timers()?
                .into_iter()
                .map(|(k, v)| (k, v.to_string())),
        );
        Ok(settings)
    }

    /// Writes the node settings ([`IscsiDriver::node_settings`]) with iscsiadm in one call. An
    /// iscsiadm without the manual-scan setting gets the rest without it (the kernel then
    /// scans every LUN at login). CHAP goes into the record file afterwards, never on
    /// iscsiadm's command line. The caller holds the target's setup lock.
    fn configure_node(
        &self,
        props: &IscsiProperties,
        t: &IscsiTarget,
        adm: &Iscsiadm<'_>,
    ) -> Result<()> {
        let all: Vec<NodeParam> = self
            .node_settings()?
            .iter()
            .map(|(k, v)| NodeParam::new(k, v.clone()))
            .collect();
        if let Err(e) = adm.node_update(t, &all) {
            tracing::debug!(error = %e.chain(), "iscsiadm refused the settings with manual scan; retrying without it");
            adm.node_update(t, &all[1..])?;
        }
        match &props.auth {
            Some(chap) => adm.node_chap(t, chap),
            None => Ok(()),
        }
    }

    /// How long one login may take: iscsid's own attempts and timeouts, plus slack.
    /// Those retries run inside one login; [`Iscsiadm::run`] re-runs a command on exit 6/255.
    fn login_limit(&self) -> Duration {
        self.opts.iscsi.login_timeout * (self.opts.iscsi.login_retries + 1) + Duration::from_secs(5)
    }

    /// Undoes one path attempt: its scanned device, its session, its node record.
    fn undo(&self, t: &IscsiTarget, made: &Made, sessions: &mut SessionFinder<'_>) {
        let _undo = cancel::shield();
        let deadline = self.cleanup_deadline();
        let scanned = match (&made.device, made.scanned) {
            (None, Some((sid, lun))) => self.scanned_device(sid, lun),
            _ => None,
        };
        if let Some((hctl, name)) = made.device.as_ref().or(scanned.as_ref()) {
            if let Err(e) = self.remove_scsi_device(
                &VolumeDevice {
                    hctl: *hctl,
                    name: name.clone(),
                },
                // Never handed out: nothing was written through it to flush.
                false,
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

    /// The device of the LUN `lun` a scan made on session `sid`, if there is one: its
    /// address and block device (empty when it has none yet).
    fn scanned_device(&self, sid: u32, lun: u64) -> Option<(Hctl, String)> {
        let host = self.host();
        let hctl = session::describe(host, sid)
            .ok()
            .flatten()?
            .hctl(lun)
            .filter(|h| scsi::device_exists(host, *h))?;
        let name = scsi::block_name(host, hctl)
            .ok()
            .flatten()
            .unwrap_or_default();
        Some((hctl, name))
    }

    /// Deletes the node records discovery created for this connect that no session uses
    /// now (targets that failed, or that discovery reported but the volume does not use).
    /// A target's lock is taken exclusively first, so no connect of that target is
    /// between its node record and its device.
    pub(super) fn forget_unused_nodes(&self, discovered: &[IscsiTarget]) {
        if discovered.is_empty() {
            return;
        }
        let _cleanup = cancel::shield();
        let deadline = self.cleanup_deadline();
        let adm = self.adm(deadline);
        for t in discovered {
            let r = self
                .locks
                .lock_until(&target_lock_key(t), LockMode::Exclusive, deadline)
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
}
