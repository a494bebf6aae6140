//! Disconnect: the volume's head devices as the host shows them, the MD array and heads
//! flushed, and each controller dropped unless another attachment still needs it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::cli;
use super::controllers::ControllerFinder;
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
        cli::disconnect(op.runner(), &ctrl.name, self.deadline)?;
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
            .filter(|_| props.replicas.len() > 1)
            .or_else(|| record.and_then(|r| r.md_alias.as_deref()));
        // Nothing is flushed or stopped unless the array is built over this volume's heads
        // only and neither it nor a head is used by anything else.
        let array = match alias {
            Some(alias) => owned_array(host, alias, &heads)?,
            None => None,
        };
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
            let r = flush(op, &md::array_path(alias), opts.force)
                .and_then(|()| md::stop(op.runner(), host, alias, deadline));
            failures.step(r)?;
        }
        for h in &heads {
            failures.step(flush(op, &PathBuf::from("/dev").join(h), opts.force))?;
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

/// The kernel name (`mdN`) of the array at `/dev/md/<alias>`, when it exists; a
/// [`Error::RecordMismatch`] when a member is not one of the volume's `heads`.
fn owned_array(host: &Host, alias: &str, heads: &[String]) -> Result<Option<String>> {
    let Some(target) = host.canonical(&host.map_dev_path(&md::array_path(alias)))? else {
        return Ok(None);
    };
    let Some(md) = target
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
    else {
        return Ok(None);
    };
    for member in block::slaves(host, &md)? {
        if !heads.contains(&member) {
            return Err(Error::RecordMismatch {
                what: format!("MD array {alias} ({md})"),
                reason: format!("its member {member} is not a namespace of this volume"),
            });
        }
    }
    Ok(Some(md))
}

fn flush(op: &Operation<'_>, dev: &Path, force: bool) -> Result<()> {
    if !op.host().map_dev_path(dev).exists() {
        return Ok(());
    }
    block::flush_before_removal(op.runner(), dev, force, op.deadline)
}
