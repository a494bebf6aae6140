//! Connect: every copy of the volume (one, or one per replica) through its portals, the
//! namespace's head device awaited through udev, an MD RAID1 over replicas, and the undo of
//! what a failed connect made.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::controllers::{all_controllers, native_multipath, ControllerFinder};
use super::fabrics::{self, ConnectOutcome};
use super::namespaces::{resolve_namespace, AbsenceCheck, Namespace, Resolved};
use super::teardown::Release;
use super::{
    controller_lock_key, identity, Attachment, Nqn, NvmeDriver, NvmePortal, NvmeProperties,
    NvmeTarget,
};
use crate::connector::{ms, Operation};
use crate::devices::{block, md};
use crate::error::{AttemptFailure, Error, Result};
use crate::model::connection::Protocol;
use crate::model::record::{DeviceRecord, NvmePathRecord};
use crate::platform::cancel;
use crate::platform::lock::{LockGuard, LockMode};
use crate::platform::registry::Registry;
use crate::platform::wait::DeviceWatch;

/// How long a connect the kernel answered with `EALREADY` waits for that controller to
/// show before it is written again.
pub(crate) const CONNECT_RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// One portal that came up.
struct PortalUp {
    record: NvmePathRecord,
    _shared: LockGuard,
}

/// What every portal attempt of one connect shares: the operation, the host identity to
/// connect with, the controllers read so far, and what the connect made (to undo on
/// failure).
struct ConnectRun<'a> {
    op: &'a Operation<'a>,
    hostnqn: &'a str,
    hostid: &'a str,
    /// The kernel's native NVMe multipath is on: every portal is connected.
    native: bool,
    /// Controllers this connect created.
    made: Vec<(Nqn, NvmePortal)>,
    ctrls: ControllerFinder<'a>,
    registry: &'a Registry,
}

impl NvmeDriver {
    pub(super) fn connect(
        &self,
        op: &Operation<'_>,
        props: &NvmeProperties,
    ) -> Result<DeviceRecord> {
        let host = op.host();
        let (hostnqn, hostid) = self.identity(host, props)?;
        let mut run = ConnectRun {
            op,
            hostnqn: &hostnqn,
            hostid: &hostid,
            native: native_multipath(host)?,
            made: Vec::new(),
            ctrls: ControllerFinder::new(host),
            registry: &self.registry,
        };
        let mut ups: Vec<PortalUp> = Vec::new();
        let mut heads: Vec<String> = Vec::new();
        // The device to hand out, and whether it is the MD array.
        let mut attempt = || -> Result<(PathBuf, bool)> {
            for copy in props.copies() {
                let (head, copy_ups) = run.copy(props, copy)?;
                heads.push(head);
                ups.extend(copy_ups);
            }
            let members: Vec<PathBuf> = heads
                .iter()
                .map(|h| PathBuf::from("/dev").join(h))
                .collect();
            match (&props.alias, heads.len()) {
                (Some(alias), n) if n > 1 => {
                    md::assemble_or_create(op.runner(), host, alias, &members, op.deadline)
                        .map(|p| (p, true))
                }
                // One replica (`volume_replicas` with one entry): os-brick's
                // `_handle_single_replica` assembles the array it already carries (a
                // replicated volume that lost its other legs), else hands out the namespace.
                (Some(alias), 1)
                    if !props.replicas.is_empty()
                        && md::has_superblock(op.runner(), &members[0], op.deadline)? =>
                {
                    md::assemble(op.runner(), host, alias, &members, op.deadline).map(|p| (p, true))
                }
                _ => Ok((members[0].clone(), false)),
            }
        };
        let result = attempt().and_then(|path| {
            let attachment = Attachment {
                copies: props.copies().into_iter().cloned().collect(),
            };
            self.registry.put(&props.volume_key(), &attachment)?;
            Ok(path)
        });
        let (path, is_md) = match result {
            Ok(p) => p,
            Err(e) => {
                drop(ups);
                self.undo(op, &run.made, &hostnqn);
                return Err(e);
            }
        };
        let record = DeviceRecord {
            nvme_paths: ups.iter().map(|u| u.record.clone()).collect(),
            md_alias: props.alias.clone().filter(|_| is_md),
            ..DeviceRecord::block(Protocol::NvmeOf, path, props.volume_id.clone())
        };
        drop(ups);
        Ok(record)
    }

    /// Drops the controllers a failed connect made.
    fn undo(&self, op: &Operation<'_>, made: &[(Nqn, NvmePortal)], hostnqn: &str) {
        let _undo = cancel::shield();
        let mut release = Release {
            op,
            registry: &self.registry,
            hostnqn,
            ctrls: ControllerFinder::new(op.host()),
            deadline: op.cleanup_deadline(),
        };
        for (nqn, portal) in made {
            if let Err(e) = release.controller(nqn, portal, None) {
                tracing::warn!(error = %e.chain(), "undo: dropping the controller failed");
            }
        }
    }
}

impl ConnectRun<'_> {
    /// Makes the controller for `copy` at `portal`, or finds the one the kernel says exists
    /// (`EALREADY`: a connect beside this one made it after this one looked). The
    /// controller the kernel matched can be gone by the time it is looked for (its connect
    /// undone, or given up after a loss, with nothing left to find): then the connect is
    /// written again, at most every [`CONNECT_RETRY_INTERVAL`], until the deadline.
    fn create_controller(
        &mut self,
        copy: &NvmeTarget,
        portal: &NvmePortal,
        watch: &mut DeviceWatch,
    ) -> Result<String> {
        let op = self.op;
        let (host, deadline) = (op.host(), op.deadline);
        let args = fabrics::ConnectArgs {
            nqn: &copy.nqn,
            portal,
            hostnqn: self.hostnqn,
            hostid: self.hostid,
            recovery: &op.opts.nvme,
        };
        let (ctrls, made) = (&mut self.ctrls, &mut self.made);
        let mut made_one = |name: String| {
            made.push((copy.nqn.clone(), portal.clone()));
            name
        };
        // The kernel answers once the controller is live, its sysfs entry made.
        if let ConnectOutcome::Connected(name) =
            fabrics::connect(op.runner(), host, &args, deadline)?
        {
            ctrls.hint(&name);
            return Ok(made_one(name));
        }
        let what = format!("controller for {} at {portal}", copy.nqn);
        let mut last_try = Instant::now();
        let found = watch.wait_for(&what, deadline, || {
            if let Some(c) = ctrls.find(copy.nqn.as_str(), portal, args.hostnqn)? {
                return Ok(Some(c.name));
            }
            if last_try.elapsed() < CONNECT_RETRY_INTERVAL {
                return Ok(None);
            }
            tracing::info!(nqn = %copy.nqn, %portal, "the controller the kernel matched is not on the host; connecting again");
            last_try = Instant::now();
            Ok(match fabrics::connect(op.runner(), host, &args, deadline)? {
                ConnectOutcome::Connected(name) => {
                    ctrls.hint(&name);
                    Some(made_one(name))
                }
                ConnectOutcome::AlreadyConnected => None,
            })
        });
        if found.is_err() {
            // What the host showed instead, for the report.
            for c in all_controllers(host).unwrap_or_default() {
                tracing::warn!(controller = %c.name, subsysnqn = %c.subsysnqn, transport = %c.transport, address = ?c.address, hostnqn = ?c.hostnqn, state = %c.state, "controller on the host");
            }
        }
        found
    }

    /// Before a new controller for `copy` at `portal`: registry entries of volumes using
    /// it that no controller serves any more were detached by another tool (os-brick);
    /// left, they would keep the new controller from ever being dropped. Runs under the
    /// controller lock, where no connect through it is half done.
    fn drop_stale_entries(&self, copy: &NvmeTarget, portal: &NvmePortal) -> Result<()> {
        let host = self.op.host();
        let mut ctrls = None;
        let dropped = self.registry.remove_where(|a: &Attachment| {
            if !a.uses(copy.nqn.as_str(), portal) {
                return Ok(false);
            }
            let ctrls = match &ctrls {
                Some(c) => c,
                None => ctrls.insert(all_controllers(host)?),
            };
            Ok(!a.has_controller(ctrls))
        })?;
        for entry in dropped {
            tracing::info!(%entry, "dropped the registry entry of a volume another tool detached");
        }
        Ok(())
    }

    /// Connects one copy of the volume: every portal with native multipath (all must work
    /// when multipath is enforced), else the first portal that works. Returns the head
    /// device and the portals that came up.
    fn copy(
        &mut self,
        props: &NvmeProperties,
        copy: &NvmeTarget,
    ) -> Result<(String, Vec<PortalUp>)> {
        let mut ups: Vec<PortalUp> = Vec::new();
        let mut tried = Vec::new();
        // An attached namespace shows which controllers reach it: those are checked first.
        self.ctrls.hint_namespace(&copy.namespace)?;
        for portal in &copy.portals {
            if Instant::now() >= self.op.deadline {
                break;
            }
            let known = ups.first().map(|u| u.record.namespace.clone());
            match self.portal(copy, portal, known.as_deref()) {
                Ok(up) => {
                    ups.push(up);
                    if !self.native {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(%portal, nqn = %copy.nqn, error = %e.chain(), "portal failed");
                    tried.push(AttemptFailure {
                        target: format!("{portal} {}", copy.nqn),
                        reason: e.chain(),
                    });
                }
            }
        }
        if ups.is_empty() {
            return Err(Error::VolumeDeviceNotFound { tried });
        }
        if self.native && props.enforce_multipath && !tried.is_empty() {
            return Err(Error::VolumeDeviceNotFound { tried });
        }
        let head = ups[0].record.namespace.clone();
        if let Some(other) = ups.iter().find(|u| u.record.namespace != head) {
            tracing::warn!(first = %head, other = %other.record.namespace, "portals show the namespace under different devices");
        }
        Ok((head, ups))
    }

    /// Brings up one portal. `known_head` is the namespace's head device when an earlier
    /// portal of the same copy found it: a further path of a multipath namespace appears
    /// as a hidden path disk the kernel announces with no uevent, while the head is already
    /// usable.
    fn portal(
        &mut self,
        copy: &NvmeTarget,
        portal: &NvmePortal,
        known_head: Option<&str>,
    ) -> Result<PortalUp> {
        let op = self.op;
        let host = op.host();
        let deadline = op.deadline;
        let started = Instant::now();
        let shared = op.lock(
            &controller_lock_key(copy.nqn.as_str(), portal),
            LockMode::Shared,
        )?;
        let mut watch = DeviceWatch::open(host, &["nvme", "block"]);
        let existing = self.ctrls.find(copy.nqn.as_str(), portal, self.hostnqn)?;
        let reused = existing.is_some();
        let ctrl = match existing {
            Some(c) => {
                tracing::debug!(controller = %c.name, "reusing controller; rescanning namespaces");
                match host.write_attr(
                    &host.sys(format!("class/nvme/{}/rescan_controller", c.name)),
                    "1",
                ) {
                    Err(e) if !e.is_not_found() => return Err(e),
                    _ => {}
                }
                c.name
            }
            None => {
                self.drop_stale_entries(copy, portal)?;
                if let Some((other, other_nqn)) =
                    identity::conflicting_controller(host, self.hostnqn, self.hostid)?
                {
                    return Err(Error::InvalidArgument {
                        name: "host_nqn".into(),
                        reason: format!("controller {other} already uses host id {} with host NQN {other_nqn}; the kernel refuses {} with the same host id", self.hostid, self.hostnqn),
                    });
                }
                self.create_controller(copy, portal, &mut watch)?
            }
        };
        tracing::info!(phase = "connect", elapsed_ms = ms(started.elapsed()), controller = %ctrl, "controller ready");
        let what = format!("namespace ({}) of {} on {ctrl}", copy.namespace, copy.nqn);
        // A namespace the subsystem does not have fails the portal at once, once that is
        // proven (the kernel's scan done with every namespace the target lists): see
        // `AbsenceCheck`.
        let mut absence = AbsenceCheck::new(reused);
        let ns = watch.wait_for(&what, deadline, || {
            let found = match resolve_namespace(host, &ctrl, &copy.namespace)? {
                Resolved::Found(ns) => Some(ns),
                Resolved::Missing => None,
                Resolved::Ambiguous(n) => {
                    return Err(Error::InvalidConnectionInfo {
                        field: "data.vol_uuid".into(),
                        reason: format!(
                            "{} has {n} namespaces and the volume names none of them",
                            copy.nqn
                        ),
                    });
                }
            };
            let shown = found.is_some();
            if let Some(ns) = found {
                if block::is_ready(host, &ns.head)? {
                    return Ok(Some(ns));
                }
            }
            match known_head {
                Some(h) if block::is_ready(host, h)? => Ok(Some(Namespace {
                    head: h.to_string(),
                    entry: h.to_string(),
                    nsid: None,
                    uuid: copy.namespace.uuid.clone(),
                    nguid: copy.namespace.nguid.clone(),
                })),
                // Shown but not ready yet, or a further path whose head is not ready.
                _ if shown || known_head.is_some() => Ok(None),
                _ => match absence.missing(op.runner(), host, &ctrl, &copy.namespace, deadline)? {
                    // A connect asked to stop meanwhile reports that, as the wait would.
                    Some(_) if cancel::is_cancelled() => {
                        Err(Error::WaitCancelled { what: what.clone() })
                    }
                    Some(seen) => Err(Error::NotOnTarget {
                        target: format!("{portal} {} (controller {ctrl})", copy.nqn),
                        wanted: format!("namespace {}", copy.namespace),
                        seen,
                    }),
                    None => Ok(None),
                },
            }
        });
        let ns = ns.inspect_err(|e| {
            if let Error::NotOnTarget { .. } = e {
                tracing::info!(phase = "not_on_target", elapsed_ms = ms(started.elapsed()), controller = %ctrl, "the subsystem has no such namespace");
            }
        })?;
        tracing::info!(phase = "device_found", elapsed_ms = ms(started.elapsed()), device = %ns.head, "namespace ready");
        Ok(PortalUp {
            record: NvmePathRecord {
                controller: ctrl,
                nqn: copy.nqn.to_string(),
                portal: portal.clone(),
                namespace: ns.head,
                uuid: ns.uuid,
            },
            _shared: shared,
        })
    }
}
