//! Disconnect: the volume's head devices as the host shows them, the MD array and heads
//! flushed, and each controller dropped unless another attachment still needs it.
//!
//! The volume is always found from the connection_info and the live host; a record (even
//! os-brick's, only `type` and `path`, with no `nvme_paths`) or Nova's `device_path` only
//! names a device that must be one of those found, else nothing is touched.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::controllers::ControllerFinder;
use super::fabrics;
use super::namespaces::{self, resolve_namespace, Resolved};
use super::{controller_lock_key, Attachment, Nqn, NvmeDriver, NvmePortal, NvmeProperties};
use crate::connector::{ms, DisconnectOptions, Operation};
use crate::devices::{block, md};
use crate::error::{Error, Failures, Result};
use crate::model::record::DeviceRecord;
use crate::platform::host::Host;
use crate::platform::lock::LockMode;
use crate::platform::registry::Registry;
use crate::platform::wait::DeviceWatch;

/// Drops controllers a volume no longer needs: what each release shares.
pub(super) struct Release<'a> {
    pub op: &'a Operation<'a>,
    pub registry: &'a Registry,
    pub hostnqn: &'a str,
    pub ctrls: ControllerFinder<'a>,
    pub deadline: Instant,
}

impl Release<'_> {
    /// Drops the controller serving `nqn` at `portal` unless another attachment uses it
    /// (or another of its namespaces than `ours` is held open by a device mapper or MD
    /// array).
    pub fn controller(&mut self, nqn: &Nqn, portal: &NvmePortal, ours: Option<&str>) -> Result<()> {
        let op = self.op;
        let host = op.host();
        let _x = op.locks.lock_until(
            &controller_lock_key(nqn.as_str(), portal),
            LockMode::Exclusive,
            self.deadline,
        )?;
        let Some(ctrl) = self.ctrls.find(nqn.as_str(), portal, self.hostnqn)? else {
            return Ok(());
        };
        let users: Vec<String> = self
            .registry
            .entries::<Attachment>()?
            .into_iter()
            .filter(|(_, a)| a.uses(nqn.as_str(), portal))
            .map(|(k, _)| k)
            .collect();
        if !users.is_empty() {
            tracing::debug!(controller = %ctrl.name, ?users, "controller still used by other attachments; keeping it");
            return Ok(());
        }
        for ns in namespaces::namespaces(host, &ctrl.name)? {
            if Some(ns.head.as_str()) != ours && !block::holders(host, &ns.head)?.is_empty() {
                tracing::debug!(controller = %ctrl.name, namespace = %ns.head, "another namespace is held; keeping the controller");
                return Ok(());
            }
        }
        let started = Instant::now();
        let mut watch = DeviceWatch::open(host, &["nvme", "block"]);
        // The kernel removes the controller inside the write; the wait only confirms it.
        fabrics::delete_controller(host, &ctrl.name)?;
        watch.wait_for(
            &format!("removal of controller {}", ctrl.name),
            self.deadline,
            || Ok((!host.sys(format!("class/nvme/{}", ctrl.name)).exists()).then_some(())),
        )?;
        tracing::info!(phase = "disconnect", elapsed_ms = ms(started.elapsed()), controller = %ctrl.name, "controller removed");
        Ok(())
    }
}

/// The volume's head devices now, from the host (the controllers `ctrls` was hinted at
/// are read first).
pub(super) fn heads(
    host: &Host,
    props: &NvmeProperties,
    hostnqn: &str,
    ctrls: &mut ControllerFinder<'_>,
) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for copy in props.copies() {
        ctrls.hint_namespace(&copy.namespace)?;
        for portal in &copy.portals {
            let Some(c) = ctrls.find(copy.nqn.as_str(), portal, hostnqn)? else {
                continue;
            };
            // Not found, or an empty id among several namespaces: the next portal.
            if let Resolved::Found(ns) = resolve_namespace(host, &c.name, &copy.namespace)? {
                if !out.contains(&ns.head) {
                    out.push(ns.head);
                }
                break;
            }
        }
    }
    Ok(out)
}

impl NvmeDriver {
    pub(super) fn disconnect(
        &self,
        op: &Operation<'_>,
        props: &NvmeProperties,
        record: Option<&DeviceRecord>,
        opts: DisconnectOptions,
    ) -> Result<()> {
        let host = op.host();
        let deadline = op.deadline;
        let (hostnqn, _) = self.identity(host, props)?;
        let mut failures = Failures::new(opts.force);
        let mut ctrls = ControllerFinder::new(host);
        for p in record.map_or(&[][..], |r| &r.nvme_paths[..]) {
            ctrls.hint(&p.controller);
        }
        let heads = heads(host, props, &hostnqn, &mut ctrls)?;
        let alias = props
            .alias
            .as_deref()
            .filter(|_| !props.replicas.is_empty())
            .or_else(|| record.and_then(|r| r.md_alias.as_deref()));
        // Nothing is flushed or stopped unless the array is built over this volume's heads
        // only and neither it nor a head is used by anything else.
        let array = match alias {
            Some(alias) => md::owned_array(host, alias, &heads)?,
            None => None,
        };
        // A record without nvme_paths (os-brick's own: only `type` and `path`) or Nova's
        // `device_path` names the device; the volume was found from connection_info and
        // the host above, and the path must be one of its devices.
        let claimed = record
            .map(|r| r.path.as_path())
            .or(props.device_path.as_deref());
        if let Some(path) = claimed {
            check_claimed_path(host, path, &heads, array.as_deref())?;
        }
        if let Some(md) = &array {
            block::ensure_unused(host, md, &[])?;
        }
        for h in &heads {
            block::ensure_unused(
                host,
                h,
                &array.iter().map(String::as_str).collect::<Vec<_>>(),
            )?;
        }
        if let Some(alias) = alias.filter(|_| array.is_some()) {
            let r = flush(op, &md::array_path(alias), opts.force).and_then(|carried| {
                block::then_report(md::stop(op.runner(), host, alias, deadline), carried)
            });
            failures.step(r)?;
        }
        for h in &heads {
            let r = flush(op, &PathBuf::from("/dev").join(h), opts.force);
            failures.step(r.and_then(|carried| block::then_report(Ok(()), carried)))?;
        }
        failures.step(self.registry.remove(&props.volume_key()))?;
        let mut release = Release {
            op,
            registry: &self.registry,
            hostnqn: &hostnqn,
            ctrls,
            deadline,
        };
        let ours = heads.first().map(String::as_str);
        for copy in props.copies() {
            for portal in &copy.portals {
                failures.step(release.controller(&copy.nqn, portal, ours))?;
            }
        }
        failures.finish()
    }
}

/// Checks that `path`, the device a record or Nova's `device_path` names, is one of the
/// volume's namespace heads or its MD array as the host shows them now (compared after
/// resolving links, so `/dev/md/<alias>` and by-id links match): a
/// [`Error::RecordMismatch`] otherwise. A path the host does not have is no claim on
/// anything (the device is gone): a warning.
fn check_claimed_path(
    host: &Host,
    path: &Path,
    heads: &[String],
    array: Option<&str>,
) -> Result<()> {
    let Some(target) = host.canonical(&host.map_dev_path(path))? else {
        tracing::warn!(path = ?path, "the recorded device is not on the host; going by the connection_info");
        return Ok(());
    };
    for name in heads.iter().map(String::as_str).chain(array) {
        let own = host.canonical(&host.map_dev_path(&Path::new("/dev").join(name)))?;
        if own.as_deref() == Some(target.as_path()) {
            return Ok(());
        }
    }
    let mut ours: Vec<&str> = heads.iter().map(String::as_str).collect();
    ours.extend(array);
    Err(Error::RecordMismatch {
        what: format!("device {path:?}"),
        reason: if ours.is_empty() {
            "the volume has no device on this host".to_string()
        } else {
            format!("it is none of the volume's devices ({})", ours.join(", "))
        },
    })
}

fn flush(op: &Operation<'_>, dev: &Path, force: bool) -> Result<Option<Error>> {
    let dev = op.host().map_dev_path(dev);
    if !dev.exists() {
        return Ok(None);
    }
    block::flush_before_removal(op.host(), &dev, force, op.deadline)
}
