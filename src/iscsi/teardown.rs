//! Disconnect: the volume's devices on the host, removal of its multipath maps and SCSI
//! devices, and the logout of targets no LUN uses any more.

use std::time::Instant;

use super::session::{self, SessionFinder};
use super::{ms, target_lock_key, IscsiDriver, IscsiProperties, IscsiTarget, VolumeDevice};
use crate::connector::{DisconnectOptions, Operation};
use crate::devices::multipath::{self, MultipathMap};
use crate::devices::{block, scsi};
use crate::error::{Failures, Result};
use crate::model::ids::Hctl;
use crate::model::record::DeviceRecord;
use crate::platform::lock::LockMode;
use crate::platform::wait::DeviceWatch;

impl IscsiDriver {
    pub(super) fn disconnect(
        &self,
        op: &Operation<'_>,
        props: &IscsiProperties,
        record: Option<&DeviceRecord>,
        opts: DisconnectOptions,
    ) -> Result<()> {
        let deadline = op.deadline;
        let host = self.host();
        let mut targets = props.targets.clone();
        if let Some(r) = record {
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
        tracing::debug!(
            devices = devices.len(),
            maps = maps.len(),
            "devices and maps removed"
        );
        failures.finish()
    }

    /// The volume's SCSI devices on the host: each target's LUN on its session, plus the
    /// recorded paths that still show the recorded WWID. The recorded paths also tell
    /// `sessions` where to look first.
    pub(super) fn volume_devices(
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

    pub(super) fn remove_scsi_device(
        &self,
        d: &VolumeDevice,
        force: bool,
        deadline: Instant,
    ) -> Result<()> {
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

    /// Logs out of `t` when its session carries no LUNs, then (when asked) deletes the node
    /// record if no session remains. Holds the target lock exclusively, so no connect of
    /// the same target is between login and device.
    pub(super) fn release_target(
        &self,
        t: &IscsiTarget,
        delete_node: bool,
        sessions: &mut SessionFinder<'_>,
        deadline: Instant,
    ) -> Result<()> {
        let _x = self
            .locks
            .lock_until(&target_lock_key(t), LockMode::Exclusive, deadline)?;
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
}
