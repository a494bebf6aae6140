//! Disconnect: the volume's devices on the host, removal of its multipath maps and SCSI
//! devices, and the logout of targets no LUN uses any more.

use std::time::Instant;

use super::connect::discovered_paths;
use super::records::{self, NodeDelete};
use super::session::{self, SessionFinder};
use super::{
    ms, target_lock_key, IscsiDriver, IscsiProperties, IscsiTarget, Iscsiadm, VolumeDevice,
};
use crate::connector::{DisconnectOptions, Operation};
use crate::devices::multipath::{self, MultipathMap};
use crate::devices::{block, scsi};
use crate::error::{Error, Failures, Result};
use crate::model::record::DeviceRecord;
use crate::platform::lock::LockMode;
use crate::platform::wait::DeviceWatch;

/// What a disconnect proved the volume owns on the live host.
struct Owned {
    devices: Vec<VolumeDevice>,
    maps: Vec<MultipathMap>,
    targets: Vec<IscsiTarget>,
}

impl IscsiDriver {
    /// Detaches the volume. What belongs to it is derived from the connection_info and the
    /// live host (each target's session and LUN); the record only adds what the host shows
    /// to be the same volume, and a record the host contradicts stops the disconnect before
    /// anything is touched ([`Error::RecordMismatch`]). So does a device in use by anything
    /// but this volume's own multipath map ([`Error::DeviceInUse`]).
    pub(super) fn disconnect(
        &self,
        op: &Operation<'_>,
        props: &IscsiProperties,
        record: Option<&DeviceRecord>,
        opts: DisconnectOptions,
    ) -> Result<()> {
        let deadline = op.deadline;
        let host = self.host();
        // Paths of an earlier connect still coming up in the background (in this process)
        // are stopped and undone first: nothing joins the volume while it is taken apart.
        super::late::stop_for(&props.targets);
        let mut sessions = SessionFinder::new(host);
        let mut owned = self.owned(props, record, &mut sessions, deadline)?;
        // Nothing is flushed or removed unless all of it is free to go.
        self.check_unused(&mut owned)?;
        let mut failures = Failures::new(opts.force);
        // The paths under the volume's maps: their writes went through the map, which is
        // flushed; a path is not flushed itself (a dead one would hold the detach until
        // the session's replacement timeout for nothing).
        let mut map_paths: Vec<String> = Vec::new();
        for m in &owned.maps {
            map_paths.extend(block::slaves(host, &m.dm)?);
        }
        for m in &owned.maps {
            failures.step(self.remove_map(m, opts.force, deadline))?;
        }
        for d in &owned.devices {
            let flush = !map_paths.contains(&d.name);
            failures.step(self.remove_scsi_device(d, flush, opts.force, deadline))?;
        }
        if !map_paths.is_empty() {
            let runner = &*self.opts.context.runner;
            failures.step(multipath::await_paths_dropped(
                runner, host, &map_paths, deadline,
            ))?;
        }
        for t in &owned.targets {
            failures.step(self.release_target(t, true, &mut sessions, deadline))?;
        }
        failures.step(self.registry.remove(&props.volume_key()))?;
        tracing::debug!(
            devices = owned.devices.len(),
            maps = owned.maps.len(),
            "devices and maps removed"
        );
        failures.finish()
    }

    /// What the volume owns on the live host: its SCSI devices, the multipath maps over
    /// them, and the targets to release. Each target's LUN on its session comes from the
    /// connection_info; a recorded path counts only when the host shows that address as
    /// the LUN of a session of the volume's IQN, a recorded map only when its paths are the
    /// volume's devices and its WWID theirs. Recorded things the host no longer has are
    /// skipped; recorded things the host shows as something else are a
    /// [`Error::RecordMismatch`].
    ///
    /// A record without paths (os-brick's `{"type", "path", "scsi_wwn", "multipath_id"}`,
    /// or none at all) for a connection_info without target lists, where the connect may
    /// have found its paths by sendtargets discovery, adds the paths the discovery
    /// database holds for the volume's portal ([`IscsiDriver::discovered_devices`]).
    fn owned(
        &self,
        props: &IscsiProperties,
        record: Option<&DeviceRecord>,
        sessions: &mut SessionFinder<'_>,
        deadline: Instant,
    ) -> Result<Owned> {
        let host = self.host();
        let mut targets = props.targets.clone();
        // The recorded addresses tell `sessions` where to look first.
        for p in record.map_or(&[][..], |r| &r.paths[..]) {
            sessions.hint(p.hctl)?;
        }
        let mut devices = self.volume_devices(&props.targets, sessions)?;
        // The target's LUN showing another WWID than the recorded one serves another volume
        // now: it is left alone, and this volume counts as gone from there.
        if let Some(want) = record.and_then(|r| r.scsi_wwn.as_deref()) {
            let mut kept = Vec::new();
            for d in devices {
                match scsi::wwid(host, d.hctl)? {
                    Some(have) if have.as_str() != want => {
                        tracing::warn!(hctl = %d.hctl, device = %d.name, want, have = %have, "device shows another volume; leaving it");
                    }
                    _ => kept.push(d),
                }
            }
            devices = kept;
        }
        // What the connection_info's own targets show is the proof a path of another
        // target name (one discovery found) is the volume's; the record's WWID is not.
        let host_wwid = self.common_wwid(&devices, None)?;
        let mut wwid = self.common_wwid(&devices, record)?;
        let recorded_paths = record.is_some_and(|r| !r.paths.is_empty());
        let mode = self.multipath_mode(props);
        if !recorded_paths && !props.listed_targets && (mode.is_on() || props.wants_discovery()) {
            for (t, d) in
                self.discovered_devices(props, host_wwid.as_deref(), sessions, deadline)?
            {
                if !devices.iter().any(|x| x.hctl == d.hctl) {
                    devices.push(d);
                }
                if !targets.contains(&t) {
                    targets.push(t);
                }
            }
        }
        if let Some(r) = record {
            for p in &r.paths {
                let t = IscsiTarget {
                    portal: p.portal.clone(),
                    iqn: p.iqn.clone(),
                    lun: p.lun,
                };
                let ours = props
                    .targets
                    .iter()
                    .any(|c| c.iqn == t.iqn && c.lun == t.lun);
                // A target of another name at the volume's LUN, for a connection_info
                // without target lists: one sendtargets discovery may have found (an array
                // with a target name per portal), the volume's only when the host shows it.
                let discovered = !ours && !props.listed_targets && t.lun == props.primary().lun;
                // A recorded portal of the volume's target (one discovery found) is released
                // like the others: only a session left without LUNs is logged out.
                if ours && !targets.contains(&t) {
                    targets.push(t.clone());
                }
                let Some(name) = scsi::block_name(host, p.hctl)? else {
                    continue; // gone already: nothing to act on
                };
                let mismatch = |reason: String| Error::RecordMismatch {
                    what: format!("path {} ({name})", p.hctl),
                    reason,
                };
                if !ours && !discovered {
                    return Err(mismatch(format!(
                        "{t} is not a target of this volume's connection_info"
                    )));
                }
                let on_session = sessions.find(&t)?.and_then(|s| s.hctl(t.lun));
                if on_session != Some(p.hctl) {
                    return Err(mismatch(format!(
                        "the host shows {} as another LUN than {t}",
                        p.hctl
                    )));
                }
                let have = scsi::wwid(host, p.hctl)?;
                if discovered {
                    match (host_wwid.as_deref(), &have) {
                        (Some(want), Some(have)) if want == have.as_str() => {}
                        (Some(want), Some(have)) => {
                            return Err(mismatch(format!(
                                "{t} came from discovery and shows WWID {have}, the connection_info's targets {want}"
                            )));
                        }
                        _ => {
                            tracing::warn!(target = %t, device = %name, "a recorded path of a discovered target, unproven (no target of the connection_info shows the volume's WWID); leaving it");
                            continue;
                        }
                    }
                }
                let recorded = r.scsi_wwn.as_deref();
                match (&wwid, &have) {
                    // The volume's LUN serves another volume now (see above).
                    (_, Some(have)) if recorded.is_some_and(|w| w != have.as_str()) => continue,
                    (Some(want), Some(have)) if want != have.as_str() => {
                        return Err(mismatch(format!(
                            "it shows WWID {have}, the volume's other paths {want}"
                        )));
                    }
                    (None, Some(have)) => wwid = Some(have.to_string()),
                    _ => {}
                }
                if !devices.iter().any(|d| d.hctl == p.hctl) {
                    devices.push(VolumeDevice { hctl: p.hctl, name });
                }
                if !targets.contains(&t) {
                    targets.push(t);
                }
            }
        }
        let mut maps: Vec<MultipathMap> = Vec::new();
        if let Some(id) = record.and_then(|r| r.multipath_id.as_deref()) {
            if let Some(m) = multipath::map_by_name(host, id)? {
                if !maps.contains(&m) {
                    self.check_recorded_map(&m, &devices, wwid.as_deref())?;
                    maps.push(m);
                }
            }
        }
        Ok(Owned {
            devices,
            maps,
            targets,
        })
    }

    /// The volume's devices on targets the discovery database holds for its portal (what
    /// a connect's sendtargets discovery found, selected as the connect selects them:
    /// [`super::connect::discovered_paths`]), each with its target. A device counts only
    /// when the host shows it as the volume's LUN on a session of that target and it
    /// carries the volume's WWID (`wwid`, as the connection_info's own targets show it;
    /// a record's is no proof): with no WWID known nothing discovered counts, and a target whose LUN shows
    /// another WWID, or that has no session or no such LUN, is left alone. A discovery
    /// database that cannot be read adds nothing (logged).
    fn discovered_devices(
        &self,
        props: &IscsiProperties,
        wwid: Option<&str>,
        sessions: &mut SessionFinder<'_>,
        deadline: Instant,
    ) -> Result<Vec<(IscsiTarget, VolumeDevice)>> {
        let host = self.host();
        let base = props.primary();
        let found = match self.adm(deadline).discoverydb_targets(&base.portal) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(portal = %base.portal, error = %e.chain(), "cannot read the discovery database; using the connection_info's targets only");
                return Ok(Vec::new());
            }
        };
        let candidates: Vec<IscsiTarget> = discovered_paths(&found, base)
            .into_iter()
            .filter(|t| !props.targets.contains(t))
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let Some(want) = wwid else {
            tracing::warn!(
                targets = candidates.len(),
                "the volume's WWID is unknown: leaving the targets discovery found alone"
            );
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for t in candidates {
            let Some(hctl) = sessions.find(&t)?.and_then(|s| s.hctl(t.lun)) else {
                continue;
            };
            let Some(name) = scsi::block_name(host, hctl)? else {
                continue;
            };
            match scsi::wwid(host, hctl)? {
                Some(have) if have.as_str() == want => {
                    tracing::debug!(target = %t, device = %name, "a path discovery found");
                    out.push((t, VolumeDevice { hctl, name }));
                }
                have => {
                    tracing::debug!(target = %t, device = %name, ?have, want, "a discovered target's LUN is another volume; leaving it");
                }
            }
        }
        Ok(out)
    }

    /// Fails with [`Error::DeviceInUse`] unless every device and map of the volume is free
    /// to go. A device may be held only by multipath maps: those are the volume's own (built
    /// over its path, possibly by multipathd just now, as it watches new paths) and join
    /// `owned.maps`, in the same look at the holders that checks them, so a map that appears
    /// while a disconnect starts is never taken for a foreign holder. Anything else holding
    /// a device (LVM, dm-crypt, MD), a mounted filesystem or active swap stops the disconnect.
    fn check_unused(&self, owned: &mut Owned) -> Result<()> {
        let host = self.host();
        for d in &owned.devices {
            for h in block::holders(host, &d.name)? {
                if owned.maps.iter().any(|m| m.dm == h) {
                    continue;
                }
                match multipath::map_info(host, &h)? {
                    Some(m) => owned.maps.push(m),
                    None => {
                        return Err(Error::DeviceInUse {
                            device: d.name.clone(),
                            reason: format!("held by {h}"),
                        })
                    }
                }
            }
            if let Some(reason) = block::mounted_or_swap(host, &d.name)? {
                return Err(Error::DeviceInUse {
                    device: d.name.clone(),
                    reason,
                });
            }
        }
        for m in &owned.maps {
            block::ensure_unused(host, &m.dm, &[])?;
        }
        Ok(())
    }

    /// The WWID the volume's devices share (the record's when no device shows one). Paths of
    /// one volume showing different WWIDs mean the target changed under the volume: nothing
    /// is removed.
    fn common_wwid(
        &self,
        devices: &[VolumeDevice],
        record: Option<&DeviceRecord>,
    ) -> Result<Option<String>> {
        let host = self.host();
        let recorded = record.and_then(|r| r.scsi_wwn.as_deref());
        let mut wwid: Option<String> = None;
        for d in devices {
            if let Some(w) = scsi::wwid(host, d.hctl)? {
                match &wwid {
                    Some(prev) if prev != w.as_str() => {
                        return Err(Error::RecordMismatch {
                            what: format!("device {} ({})", d.hctl, d.name),
                            reason: format!("it shows WWID {w}, another path of the volume {prev}"),
                        });
                    }
                    _ => wwid = Some(w.to_string()),
                }
            }
        }
        Ok(wwid.or_else(|| recorded.map(str::to_string)))
    }

    /// A map the record names is the volume's only when every path under it is one of the
    /// volume's devices and it carries the volume's WWID (or, pathless, the record's).
    fn check_recorded_map(
        &self,
        m: &MultipathMap,
        devices: &[VolumeDevice],
        wwid: Option<&str>,
    ) -> Result<()> {
        let host = self.host();
        let mismatch = |reason: String| Error::RecordMismatch {
            what: format!("multipath map {} ({})", m.name, m.dm),
            reason,
        };
        for slave in block::slaves(host, &m.dm)? {
            if !devices.iter().any(|d| d.name == slave) {
                return Err(mismatch(format!(
                    "its path {slave} is not a device of this volume"
                )));
            }
        }
        match wwid {
            Some(w) if w == m.wwid => Ok(()),
            Some(w) => Err(mismatch(format!(
                "it carries WWID {}, the volume {w}",
                m.wwid
            ))),
            None => Err(mismatch(
                "the volume's WWID is unknown (no device shows it, the record has none)".into(),
            )),
        }
    }

    /// The volume's SCSI devices on the host: each target's LUN on its session.
    pub(super) fn volume_devices(
        &self,
        targets: &[IscsiTarget],
        sessions: &mut SessionFinder<'_>,
    ) -> Result<Vec<VolumeDevice>> {
        let host = self.host();
        let mut out: Vec<VolumeDevice> = Vec::new();
        for t in targets {
            let Some(hctl) = sessions.find(t)?.and_then(|s| s.hctl(t.lun)) else {
                continue;
            };
            if out.iter().any(|d| d.hctl == hctl) {
                continue;
            }
            if let Some(name) = scsi::block_name(host, hctl)? {
                out.push(VolumeDevice { hctl, name });
            }
        }
        Ok(out)
    }

    pub(super) fn remove_map(
        &self,
        m: &MultipathMap,
        force: bool,
        deadline: Instant,
    ) -> Result<()> {
        let host = self.host();
        let runner = &*self.opts.context.runner;
        // A forced detach of a map none of whose paths is up: the map would queue the
        // flush for as long as its `no_path_retry` says (a minute and more) and fail it
        // then; the caller accepted losing what is not written, so the queue is failed now.
        if force && !any_path_up(host, m)? {
            tracing::warn!(map = %m.name, "no path of the map is up; failing its queued I/O (force)");
            if let Err(e) = multipath::fail_if_no_path(runner, &m.name, deadline) {
                tracing::warn!(map = %m.name, error = %e.chain(), "cannot turn the map's queueing off");
            }
        }
        let mut carried = block::flush_before_removal(host, &host.dev(&m.dm), force, deadline)?;
        let mut watch = DeviceWatch::open(host, &["block"]);
        if let Err(e) = multipath::flush_map(runner, &mut watch, &m.name, deadline) {
            if !force {
                return Err(e);
            }
            tracing::warn!(map = %m.name, error = %e.chain(), "multipath -f failed; forcing removal");
            multipath::force_remove_map(runner, &m.name, deadline)?;
            carried = carried.or(Some(e));
        }
        let removed = watch.wait_for(
            &format!("removal of multipath map {} ({})", m.name, m.dm),
            deadline,
            || Ok((!block::exists(host, &m.dm)).then_some(())),
        );
        block::then_report(removed, carried)
    }

    /// Deletes SCSI device `d`, flushed first when `flush` (not a path under a flushed map).
    pub(super) fn remove_scsi_device(
        &self,
        d: &VolumeDevice,
        flush: bool,
        force: bool,
        deadline: Instant,
    ) -> Result<()> {
        let host = self.host();
        if !scsi::device_exists(host, d.hctl) {
            return Ok(());
        }
        // A device without a block device yet (an undo right after its scan) has no
        // buffers to flush.
        let carried = match flush && !d.name.is_empty() {
            true => block::flush_before_removal(host, &host.dev(&d.name), force, deadline)?,
            false => None,
        };
        let mut watch = DeviceWatch::open(host, &["scsi", "block"]);
        scsi::delete(host, d.hctl)?;
        let removed = watch.wait_for(
            &format!("removal of {} ({})", d.name, d.hctl),
            deadline,
            || {
                Ok((!scsi::device_exists(host, d.hctl)
                    && (d.name.is_empty() || !block::exists(host, &d.name)))
                .then_some(()))
            },
        );
        block::then_report(removed, carried)
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
            // iscsiadm logs out the sessions of the iface it is given: the session's own
            // (an iSER session made with `iser` is gone only by `--interface iser`, whatever
            // iface this connector was built with).
            match session::iface(self.host(), s.sid)? {
                Some(i) if i != self.iface && super::is_iface_name(&i) => {
                    tracing::debug!(target = %t, sid = s.sid, session_iface = %i, iface = %self.iface, "logging out through the session's iface");
                    Iscsiadm::new(self.host(), &*self.opts.context.runner, &i, deadline)
                        .logout(t)?;
                }
                _ => adm.logout(t)?,
            }
            tracing::info!(phase = "logout", elapsed_ms = ms(started.elapsed()), target = %t, "logged out");
        }
        if delete_node {
            self.delete_node(t, &adm, deadline)?;
        }
        Ok(())
    }

    /// Deletes the target's node records at its portal: the files themselves where open-iscsi's
    /// database is the known one and the records are flat ones (`--op new`'s: hostbrick's,
    /// os-brick's), under open-iscsi's database lock; else, and for records discovery made,
    /// `iscsiadm --op delete`.
    fn delete_node(&self, t: &IscsiTarget, adm: &Iscsiadm<'_>, deadline: Instant) -> Result<()> {
        let host = self.host();
        if self.direct_records()
            && records::known_database(host)?.is_some()
            && records::delete_node(host, t, deadline)? == NodeDelete::Done
        {
            return Ok(());
        }
        adm.node_delete(t)
    }
}

/// True when a path under map `m` is a SCSI disk in the `running` state (not blocked in its
/// session's recovery, not offline).
fn any_path_up(host: &crate::platform::host::Host, m: &MultipathMap) -> Result<bool> {
    for slave in block::slaves(host, &m.dm)? {
        let state = host.read_attr_opt(&host.sys(format!("block/{slave}/device/state")))?;
        if state.as_deref().is_none_or(|s| s == "running") {
            return Ok(true);
        }
    }
    Ok(false)
}
