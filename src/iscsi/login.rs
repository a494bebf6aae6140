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
use crate::platform::cmd::Cancel;
use crate::platform::lock::LockMode;
use crate::platform::wait::DeviceWatch;

/// What one path attempt created, so a failure can undo exactly that.
#[derive(Debug, Default)]
struct Made {
    node: bool,
    session: bool,
    device: Option<(Hctl, String)>,
}

impl IscsiDriver {
    /// Brings up one path; on failure undoes what this attempt created.
    pub(super) fn attach_path(
        &self,
        props: &IscsiProperties,
        t: &IscsiTarget,
        deadline: Instant,
        cancel: Option<&Cancel>,
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
        deadline: Instant,
    ) -> Result<Session> {
        let host = self.host();
        let direct = self.set_up_node(props, t, adm, made, deadline)?;
        let started = Instant::now();
        let outcome = match adm.login(t, self.login_limit()) {
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
                adm.login(t, self.login_limit())?
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

    /// Whether the target has a node record at its portal (any iface's): a look at the
    /// record files where the database is the known one, else `iscsiadm -m node -T -p`.
    fn node_exists(&self, t: &IscsiTarget, adm: &Iscsiadm<'_>) -> Result<bool> {
        if self.direct_records.load(Ordering::Relaxed)
            && records::known_database(self.host())?.is_some()
        {
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
        if self.direct_records.load(Ordering::Relaxed) {
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
    pub(super) fn forget_unused_nodes(&self, discovered: &[IscsiTarget]) {
        if discovered.is_empty() {
            return;
        }
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
