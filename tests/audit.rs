//! `audit` on fake host trees: what it lists as orphaned, what it leaves out, and that it
//! changes nothing. The simulated stacks of the connector tests make the attachments.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostbrick::audit::{ControllerReason, MapReason, MappingReason, SessionReason};
use hostbrick::internals::platform::Registry;
use hostbrick::rbd::RbdMapper;
use hostbrick::testing::sim::iscsi::*;
use hostbrick::testing::sim::{nvme, rbd, MIB};
use hostbrick::testing::{FakeHost, FakeRunner, LunSpec};
use hostbrick::{
    audit, connector_for, AuditReport, Command, CommandOutput, CommandRunner, ConnectionInfo,
    Connector, DeviceRecord, DisconnectOptions, HostContext, Portal, Protocol, RbdRecord,
};

/// Every file and link under `root`, with file contents: a snapshot to compare.
fn tree(root: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if ft.is_symlink() {
                out.push((
                    rel,
                    format!("-> {}", std::fs::read_link(&p).unwrap().display()),
                ));
            } else if ft.is_dir() {
                out.push((rel, "dir".into()));
                stack.push(p);
            } else {
                out.push((rel, std::fs::read_to_string(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

fn run(runner: &FakeRunner, program: &str, args: &[&str]) -> CommandOutput {
    runner
        .run(&Command::new(program).args(args.iter().copied()))
        .unwrap()
}

#[test]
fn an_empty_host_has_nothing_orphaned() {
    let fake = FakeHost::new();
    // No rule for rbd or rbd-nbd: the programs are "not installed", so nothing is mapped.
    let ctx = HostContext::new(fake.host(), Arc::new(FakeRunner::new()));
    let report = audit(&ctx).unwrap();
    assert!(report.is_empty(), "{report:?}");
    assert_eq!(
        serde_json::to_value(&report).unwrap(),
        serde_json::json!({"iscsi_sessions": [], "multipath_maps": [], "nvme_controllers": [],
                           "rbd_mappings": [], "stale_records": []})
    );
}

#[test]
fn iscsi_attachments_are_not_orphans_and_sessions_without_used_luns_are() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    let c = connector_for(Protocol::Iscsi, sim.options()).unwrap();
    let ci = single("127.0.0.1:3260", 1, "vol-1");
    let rec = c.connect_volume(&ci).unwrap();
    let reg = Registry::new(&sim.fake.host(), "iscsi");
    let entries: Vec<(String, DeviceRecord)> = reg.entries().unwrap();
    assert_eq!(entries.len(), 1, "connect notes the attachment");
    assert_eq!(entries[0].1, rec);
    let ctx = sim.context();
    assert!(audit(&ctx).unwrap().is_empty());

    // Another session, logged in by someone and never scanned.
    let portal: Portal = "127.0.0.9:3260".parse().unwrap();
    sim.fake
        .add_iscsi_session(9, 20, 0, "iqn.2003-01.org.example:other", &portal);
    let r = audit(&ctx).unwrap();
    assert_eq!(r.iscsi_sessions.len(), 1, "{r:?}");
    let s = &r.iscsi_sessions[0];
    assert_eq!(
        (s.sid, s.target.as_str(), s.portal.as_ref(), s.host_no),
        (9, "iqn.2003-01.org.example:other", Some(&portal), 20)
    );
    assert_eq!(s.reason, SessionReason::NoLuns);
    assert!(s.luns.is_empty());

    // ... then scanned: its disk is unrecorded and unheld.
    let sd = sim.fake.add_scsi_disk(
        20,
        &LunSpec::new(0, 0, 3, "naa.6001405cccccccccccccccccccccccc3", MIB),
    );
    let r = audit(&ctx).unwrap();
    let s = &r.iscsi_sessions[0];
    assert_eq!(s.reason, SessionReason::LunsUnused);
    assert_eq!(s.luns.len(), 1);
    assert_eq!(s.luns[0].device.as_deref(), Some(sd.as_str()));
    assert_eq!(s.luns[0].hctl.to_string(), "20:0:0:3");
    assert_eq!(
        s.luns[0].wwid.as_deref(),
        Some("36001405cccccccccccccccccccccccc3")
    );

    // An idle multipath map over it (multipathd with find_multipaths off makes one for
    // every disk) does not make it used...
    let dm = sim.fake.add_multipath_map(
        "36001405cccccccccccccccccccccccc3",
        "36001405cccccccccccccccccccccccc3",
        &[&sd],
    );
    let r = audit(&ctx).unwrap();
    assert_eq!(r.iscsi_sessions.len(), 1);
    assert_eq!(r.iscsi_sessions[0].luns[0].holders, vec![dm.clone()]);
    assert!(r.multipath_maps.is_empty(), "the map has a path");
    // ... a map that something holds (LVM on top) does.
    let lv = sim
        .fake
        .root()
        .join(format!("sys/block/{dm}/holders/dm-77"));
    std::fs::create_dir_all(&lv).unwrap();
    assert!(audit(&ctx).unwrap().is_empty());
    std::fs::remove_dir(&lv).unwrap();

    // A non-multipath holder of a partition counts as use too.
    sim.fake.remove_multipath_map(&dm);
    let part = sim.fake.root().join(format!("sys/block/{sd}/{sd}1"));
    std::fs::create_dir_all(part.join("holders/md0")).unwrap();
    std::fs::write(part.join("partition"), "1\n").unwrap();
    assert!(audit(&ctx).unwrap().is_empty());
    std::fs::remove_dir_all(&part).unwrap();
    assert_eq!(audit(&ctx).unwrap().iscsi_sessions.len(), 1);

    // Disconnect takes the registry entry with it.
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert!(reg.entries::<DeviceRecord>().unwrap().is_empty());
    let r = audit(&ctx).unwrap();
    assert_eq!(r.iscsi_sessions.len(), 1);
    assert_eq!(r.iscsi_sessions[0].sid, 9);
}

#[test]
fn an_interrupted_iscsi_connect_is_listed_and_a_disconnect_without_record_cleans_it() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    let ci = single("127.0.0.1:3260", 1, "vol-1");
    // What a connect killed after its login leaves: a node record and a session (the
    // simulated kernel scans every LUN at login without the manual-scan setting).
    for args in [
        &[
            "-m",
            "node",
            "-T",
            IQN,
            "-p",
            "127.0.0.1:3260",
            "--interface",
            "default",
            "--op",
            "new",
        ][..],
        &[
            "-m",
            "node",
            "-T",
            IQN,
            "-p",
            "127.0.0.1:3260",
            "--interface",
            "default",
            "--login",
        ][..],
    ] {
        assert!(run(&sim.runner, "iscsiadm", args).status.success());
    }
    let ctx = sim.context();
    let r = audit(&ctx).unwrap();
    assert_eq!(r.iscsi_sessions.len(), 1, "{r:?}");
    assert_eq!(r.iscsi_sessions[0].target, IQN);
    assert_eq!(r.iscsi_sessions[0].reason, SessionReason::LunsUnused);
    assert_eq!(
        r.iscsi_sessions[0].luns[0].wwid.as_deref(),
        Some(&*format!("3{}", &WWID_1[4..]))
    );

    let c = connector_for(Protocol::Iscsi, sim.options()).unwrap();
    c.disconnect_volume(&ci, None, DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
    assert!(audit(&ctx).unwrap().is_empty());
}

#[test]
fn multipath_maps_without_paths_are_listed() {
    let fake = FakeHost::new();
    let ctx = HostContext::new(fake.host(), Arc::new(FakeRunner::new()));
    fake.add_scsi_host(3);
    let sd = fake.add_scsi_disk(3, &LunSpec::new(0, 0, 0, "naa.6001405dddd", MIB));
    fake.add_multipath_map("3600a0", "3600a0", &[&sd]);
    let empty = fake.add_multipath_map("mpathb", "3600b0", &[]);
    // A device-mapper device that is not a multipath map (LVM) with no slaves is not listed.
    std::fs::create_dir_all(fake.root().join("sys/block/dm-9/dm")).unwrap();
    std::fs::write(fake.root().join("sys/block/dm-9/dm/uuid"), "LVM-abc\n").unwrap();
    let r = audit(&ctx).unwrap();
    assert_eq!(r.multipath_maps.len(), 1, "{r:?}");
    let m = &r.multipath_maps[0];
    assert_eq!(
        (m.name.as_str(), m.dm.as_str(), m.wwid.as_str(), m.reason),
        ("mpathb", empty.as_str(), "3600b0", MapReason::NoPaths)
    );
    assert_eq!(
        serde_json::to_value(m).unwrap()["reason"],
        serde_json::json!("no_paths")
    );
}

#[test]
fn nvme_controllers_without_namespaces_in_use_are_listed() {
    let sim = nvme::NvmeSim::new(true);
    sim.add_subsystem(
        nvme::NQN,
        &["127.0.0.1:4420"],
        &[(1, nvme::UUID_1, 64 * MIB)],
    );
    let ctx = HostContext::new(sim.fake.host(), sim.runner.clone());
    let c = connector_for(Protocol::NvmeOf, sim.options()).unwrap();
    let ci = nvme::volume(nvme::UUID_1, &["127.0.0.1:4420"], "vol-1");
    let rec = c.connect_volume(&ci).unwrap();
    assert!(
        audit(&ctx).unwrap().is_empty(),
        "an attachment is not an orphan"
    );

    // A controller with no namespace (connected by hand, or its namespaces gone) ...
    sim.fake.add_nvme_controller(
        7,
        "nqn.2014-08.org.example:empty",
        "tcp",
        "127.0.0.2",
        4420,
        nvme::HOSTNQN,
    );
    // ... a local PCIe disk and a discovery controller are none of hostbrick's business.
    sim.fake.add_nvme_controller(
        8,
        "nqn.2014.08.org.nvmexpress:pci",
        "pcie",
        "0000:00:04.0",
        0,
        "",
    );
    sim.fake.add_nvme_controller(
        9,
        "nqn.2014-08.org.nvmexpress.discovery",
        "tcp",
        "127.0.0.1",
        8009,
        nvme::HOSTNQN,
    );
    let r = audit(&ctx).unwrap();
    assert_eq!(r.nvme_controllers.len(), 1, "{r:?}");
    let o = &r.nvme_controllers[0];
    assert_eq!(o.name, "nvme7");
    assert_eq!(o.subsysnqn, "nqn.2014-08.org.example:empty");
    assert_eq!(o.reason, ControllerReason::NoNamespaces);
    let p = o.portal.as_ref().unwrap();
    assert_eq!((p.address.as_str(), p.port), ("127.0.0.2", 4420));
    assert_eq!(o.state, "live");
    for n in ["nvme7", "nvme8", "nvme9"] {
        sim.fake.remove_nvme_controller(n);
    }

    // Detached: the controller is gone with the attachment.
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert!(audit(&ctx).unwrap().is_empty());

    // A connect killed once the kernel made the controller (its write to /dev/nvme-fabrics
    // returned): a controller with the namespace, no record.
    let host = sim.fake.host();
    let answer = host
        .exchange(
            &host.dev("nvme-fabrics"),
            &format!(
                "nqn={},transport=tcp,traddr=127.0.0.1,trsvcid=4420,hostnqn={},hostid={},reconnect_delay=10,ctrl_loss_tmo=-1",
                nvme::NQN,
                nvme::HOSTNQN,
                nvme::HOSTID
            ),
        )
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("instance="), "{answer:?}");
    let r = audit(&ctx).unwrap();
    assert_eq!(r.nvme_controllers.len(), 1, "{r:?}");
    let o = &r.nvme_controllers[0];
    assert_eq!(o.reason, ControllerReason::NamespacesUnused);
    assert_eq!(o.namespaces.len(), 1);
    // Something holding the namespace (an MD array) makes it used.
    let head = &o.namespaces[0];
    let holder = sim
        .fake
        .root()
        .join(format!("sys/block/{head}/holders/md127"));
    std::fs::create_dir_all(&holder).unwrap();
    assert!(audit(&ctx).unwrap().is_empty());
    std::fs::remove_dir(&holder).unwrap();
    // A disconnect with the connection_info alone cleans it up.
    c.disconnect_volume(&ci, None, DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
    assert!(audit(&ctx).unwrap().is_empty());
}

#[test]
fn rbd_mappings_without_a_record_are_listed() {
    let sim = rbd::RbdSim::new();
    sim.add_image("volumes/vol1", 64 * MIB);
    sim.add_image("volumes/vol2", 64 * MIB);
    let ctx = HostContext::new(sim.fake.host(), sim.runner.clone());
    let c = connector_for(Protocol::Rbd, sim.options()).unwrap();
    let ci = rbd::rbd_info("volumes/vol1", rbd::KEY);
    let rec = c.connect_volume(&ci).unwrap();
    assert!(audit(&ctx).unwrap().is_empty(), "{:?}", audit(&ctx));

    // vol2 mapped by hand (or by a connect that was killed before it returned).
    let ci2 = rbd::rbd_info("volumes/vol2", rbd::KEY);
    let mut o = sim.options();
    o.rbd.mapper = RbdMapper::Nbd;
    let c2 = connector_for(Protocol::Rbd, o).unwrap();
    let rec2 = c2.connect_volume(&ci2).unwrap();
    let reg = Registry::new(&sim.fake.host(), "rbd");
    assert_eq!(reg.entries::<DeviceRecord>().unwrap().len(), 2);
    reg.remove("volume-volumes-vol2").unwrap();
    let r = audit(&ctx).unwrap();
    assert_eq!(r.rbd_mappings.len(), 1, "{r:?}");
    let m = &r.rbd_mappings[0];
    assert_eq!(m.mapper, RbdMapper::Nbd);
    assert_eq!(
        (
            m.pool.as_str(),
            m.image.as_str(),
            m.namespace.as_deref(),
            m.snap.as_deref()
        ),
        ("volumes", "vol2", None, None)
    );
    assert_eq!(Path::new(&m.device), rec2.path.as_path());
    assert_eq!(m.reason, MappingReason::Unrecorded);

    // A record naming another device does not cover the mapping.
    let mut wrong = rec.clone();
    wrong.rbd = Some(RbdRecord {
        mapper: RbdMapper::Nbd,
        image: "volumes/vol2".into(),
        device: "/dev/nbd9".into(),
    });
    Registry::new(&sim.fake.host(), "rbd")
        .put("stale", &wrong)
        .unwrap();
    assert_eq!(audit(&ctx).unwrap().rbd_mappings.len(), 1);

    c2.disconnect_volume(&ci2, None, DisconnectOptions::default())
        .unwrap();
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert!(sim.mapped().is_empty());
    // Only the planted entry is left, and the audit calls it stale: nbd9 maps nothing.
    let r = audit(&ctx).unwrap();
    assert!(r.rbd_mappings.is_empty(), "{r:?}");
    assert_eq!(
        r.stale_records
            .iter()
            .map(|s| s.entry.as_str())
            .collect::<Vec<_>>(),
        ["stale"]
    );
    let left: Vec<String> = reg
        .entries::<DeviceRecord>()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        left,
        vec!["stale".to_string()],
        "disconnect drops its record"
    );
}

#[test]
fn audit_changes_nothing_and_runs_only_listings() {
    let fake = FakeHost::new();
    let runner = Arc::new(FakeRunner::new());
    runner.on("rbd", &["showmapped"], |_| {
        CommandOutput::ok(r#"[{"id":"0","pool":"volumes","namespace":"","name":"vol9","snap":"snap1","device":"/dev/rbd0"}]"#)
    });
    runner.on("rbd-nbd", &["list-mapped"], |_| CommandOutput::ok("[]"));
    let portal: Portal = "127.0.0.1:3260".parse().unwrap();
    fake.add_iscsi_session(1, 2, 0, IQN, &portal);
    fake.add_scsi_disk(2, &LunSpec::new(0, 0, 1, WWID_1, MIB));
    fake.add_multipath_map("3600c0", "3600c0", &[]);
    fake.add_nvme_controller(0, "nqn.2014-08.org.example:x", "tcp", "127.0.0.1", 4420, "");
    // What sysfs shows of a krbd mapping; no nbd device is connected (no pid).
    std::fs::create_dir_all(fake.root().join("sys/bus/rbd/devices/0")).unwrap();
    std::fs::create_dir_all(fake.root().join("sys/block/nbd0")).unwrap();
    let ctx = HostContext::new(fake.host(), runner.clone());
    let before = tree(fake.root());
    let r: AuditReport = audit(&ctx).unwrap();
    assert_eq!(tree(fake.root()), before, "audit changed the host tree");
    assert_eq!(
        (
            r.iscsi_sessions.len(),
            r.multipath_maps.len(),
            r.nvme_controllers.len(),
            r.rbd_mappings.len()
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(r.rbd_mappings[0].snap.as_deref(), Some("snap1"));
    assert_eq!(r.rbd_mappings[0].mapper, RbdMapper::Krbd);
    assert_eq!(
        runner.calls(),
        vec!["rbd showmapped --format json".to_string()]
    );
    // A connected nbd device makes it ask rbd-nbd too.
    std::fs::write(fake.root().join("sys/block/nbd0/pid"), "3322\n").unwrap();
    runner.clear_calls();
    assert_eq!(audit(&ctx).unwrap(), r);
    assert_eq!(
        runner.calls(),
        vec![
            "rbd showmapped --format json".to_string(),
            "rbd-nbd list-mapped --format json".to_string()
        ]
    );
    // The report round-trips through JSON with snake_case reasons.
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["iscsi_sessions"][0]["reason"], "luns_unused");
    assert_eq!(v["iscsi_sessions"][0]["portal"], "127.0.0.1:3260");
    assert_eq!(v["nvme_controllers"][0]["reason"], "no_namespaces");
    assert_eq!(v["rbd_mappings"][0]["reason"], "unrecorded");
    let back: AuditReport = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
}

#[test]
fn a_failing_listing_is_an_error() {
    let fake = FakeHost::new();
    std::fs::create_dir_all(fake.root().join("sys/bus/rbd/devices/0")).unwrap();
    let runner = Arc::new(FakeRunner::new());
    runner.on("rbd", &["showmapped"], |_| {
        CommandOutput::exit(1, "rbd: failed to enumerate\n")
    });
    let ctx = HostContext::new(fake.host(), runner);
    let e = audit(&ctx).unwrap_err();
    assert_eq!(e.kind(), "command_failed");
}

/// Connects `ci` in another thread and audits until the audit sees the connect's session,
/// controller or mapping (at most 5 s): nothing of it may be listed as an orphan then. The
/// audit that saw it, and what the connect returned.
fn audit_during(
    ctx: &HostContext,
    c: &dyn Connector,
    ci: &ConnectionInfo,
) -> (AuditReport, hostbrick::Result<DeviceRecord>) {
    std::thread::scope(|s| {
        let connect = s.spawn(|| c.connect_volume(ci));
        let t0 = Instant::now();
        let r = loop {
            let r = audit(ctx).unwrap();
            if !r.is_empty() || !r.in_progress.is_empty() {
                break r;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "never seen: {r:?}");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(
            r.is_empty(),
            "an attach in progress is not an orphan: {r:?}"
        );
        (r, connect.join().unwrap())
    })
}

#[test]
fn a_connect_in_progress_is_not_an_orphan() {
    // iSCSI: LUN 5 is never offered, so the connect logs in and waits for it until its
    // deadline, holding the target's lock; the session has no LUN meanwhile.
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    let ctx = sim.context();
    let opts = sim
        .options()
        .operation_timeout(Duration::from_millis(1500))
        .scan_timeout(Duration::from_millis(1500));
    let c = connector_for(Protocol::Iscsi, opts).unwrap();
    let ci = single("127.0.0.1:3260", 5, "vol-5");
    let (r, connected) = audit_during(&ctx, &*c, &ci);
    assert_eq!(r.in_progress.iscsi_sessions.len(), 1, "{r:?}");
    let busy = &r.in_progress.iscsi_sessions[0];
    assert_eq!(busy.reason, SessionReason::NoLuns);
    assert_eq!(
        busy.portal.as_ref().map(|p| p.to_string()).as_deref(),
        Some("127.0.0.1:3260")
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["in_progress"]["iscsi_sessions"][0]["sid"], busy.sid);
    assert!(connected.is_err(), "LUN 5 never appears");
    // The failed connect logged out again; had it been killed instead, its session would
    // now be an orphan, as below for a session nobody holds.
    let r = audit(&ctx).unwrap();
    assert!(r.is_empty() && r.in_progress.is_empty(), "{r:?}");
    sim.assert_clean();

    // NVMe: a namespace the subsystem does not have; the connect waits for it on a live
    // controller, holding the controller's lock.
    let sim = nvme::NvmeSim::new(true);
    sim.add_subsystem(nvme::NQN, &["127.0.0.1:4420"], &[(1, nvme::UUID_1, MIB)]);
    let ctx = HostContext::new(sim.fake.host(), sim.runner.clone());
    let opts = sim.options().operation_timeout(Duration::from_millis(1500));
    let c = connector_for(Protocol::NvmeOf, opts).unwrap();
    let ci = nvme::volume(nvme::UUID_2, &["127.0.0.1:4420"], "vol-2");
    let (r, connected) = audit_during(&ctx, &*c, &ci);
    assert_eq!(r.in_progress.nvme_controllers.len(), 1, "{r:?}");
    assert_eq!(r.in_progress.nvme_controllers[0].subsysnqn, nvme::NQN);
    assert!(connected.is_err(), "namespace 2 never appears");
    let r = audit(&ctx).unwrap();
    assert!(r.is_empty() && r.in_progress.is_empty(), "{r:?}");
    sim.assert_clean();

    // RBD: `rbd map` has mapped the image but not returned yet; the connect holds the
    // image's lock, and the mapping has no record yet.
    let sim = rbd::RbdSim::new();
    sim.add_image("volumes/vol1", 64 * MIB);
    let ctx = HostContext::new(sim.fake.host(), sim.runner.clone());
    let mut opts = sim.options();
    opts.context = HostContext::new(sim.fake.host(), Arc::new(SlowMap(sim.runner.clone())));
    let c = connector_for(Protocol::Rbd, opts).unwrap();
    let ci = rbd::rbd_info("volumes/vol1", rbd::KEY);
    let (r, connected) = audit_during(&ctx, &*c, &ci);
    assert_eq!(r.in_progress.rbd_mappings.len(), 1, "{r:?}");
    assert_eq!(r.in_progress.rbd_mappings[0].image, "vol1");
    let rec = connected.unwrap();
    let r = audit(&ctx).unwrap();
    assert!(
        r.is_empty() && r.in_progress.is_empty(),
        "recorded now: {r:?}"
    );
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert!(sim.mapped().is_empty());
}

/// A runner whose `rbd map` returns 1 s after the image is mapped.
#[derive(Debug)]
struct SlowMap(Arc<FakeRunner>);

impl CommandRunner for SlowMap {
    fn run(&self, cmd: &Command) -> hostbrick::Result<CommandOutput> {
        let out = self.0.run(cmd);
        if cmd.program() == "rbd" && cmd.args_start_with(&["map"]) {
            std::thread::sleep(Duration::from_secs(1));
        }
        out
    }
}

/// Another tool (os-brick) detaching a volume hostbrick attached leaves hostbrick's registry
/// entry behind: the audit lists it as stale, for every protocol, and nothing else.
#[test]
fn entries_of_volumes_another_tool_detached_are_stale() {
    fn detach_behind_the_registrys_back(
        host: &hostbrick::Host,
        registry: &str,
        detach: impl FnOnce(),
    ) -> usize {
        let reg = Registry::new(host, registry);
        let kept: Vec<(String, serde_json::Value)> = reg.entries().unwrap();
        assert!(
            !kept.is_empty(),
            "{registry}: the connect recorded the volume"
        );
        detach();
        for (key, value) in &kept {
            reg.put(key, value).unwrap();
        }
        kept.len()
    }

    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    let c = connector_for(Protocol::Iscsi, sim.options()).unwrap();
    let ci = single("127.0.0.1:3260", 1, "vol-1");
    let rec = c.connect_volume(&ci).unwrap();
    assert!(audit(&sim.context()).unwrap().stale_records.is_empty());
    detach_behind_the_registrys_back(&sim.fake.host(), "iscsi", || {
        c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
            .unwrap();
    });
    let report = audit(&sim.context()).unwrap();
    assert_eq!(report.stale_records.len(), 1, "{report:?}");
    assert_eq!(report.stale_records[0].registry, "iscsi");
    assert_eq!(report.stale_records[0].volume_id.as_deref(), Some("vol-1"));
    assert!(!report.is_empty());
    // The same LUN logged in again by hand (here: attached, then its entry dropped): the
    // stale entry's WWID must not hide the unused session.
    let stale: Vec<(String, serde_json::Value)> =
        Registry::new(&sim.fake.host(), "iscsi").entries().unwrap();
    let again = c.connect_volume(&ci).unwrap();
    assert_ne!(again.paths[0].session, rec.paths[0].session);
    assert!(again.paths[0].session.is_some());
    let reg = Registry::new(&sim.fake.host(), "iscsi");
    reg.remove("volume-vol-1").unwrap();
    // The kernel reuses SCSI host numbers: the new session's LUN may have the very address
    // the stale entry names. Only the session id tells them apart.
    let mut old = stale[0].1.clone();
    old["paths"][0]["hctl"] = serde_json::json!(again.paths[0].hctl.to_string());
    old["paths"][0]["device"] = serde_json::json!(again.paths[0].device);
    reg.put(&stale[0].0, &old).unwrap();
    let report = audit(&sim.context()).unwrap();
    assert_eq!(report.iscsi_sessions.len(), 1, "{report:?}");
    assert_eq!(report.stale_records.len(), 1, "{report:?}");

    let sim = nvme::NvmeSim::new(true);
    sim.add_subsystem(nvme::NQN, &["127.0.0.1:4420"], &[(1, nvme::UUID_1, MIB)]);
    let c = connector_for(Protocol::NvmeOf, sim.options()).unwrap();
    let ci = nvme::volume(nvme::UUID_1, &["127.0.0.1:4420"], "vol-n");
    let rec = c.connect_volume(&ci).unwrap();
    assert!(audit(&sim.context()).unwrap().stale_records.is_empty());
    detach_behind_the_registrys_back(&sim.fake.host(), "nvme", || {
        c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
            .unwrap();
    });
    let report = audit(&sim.context()).unwrap();
    assert_eq!(report.stale_records.len(), 1, "{report:?}");
    assert_eq!(report.stale_records[0].registry, "nvme");

    let sim = rbd::RbdSim::new();
    sim.add_image("volumes/vol1", 64 * MIB);
    let c = connector_for(Protocol::Rbd, sim.options()).unwrap();
    let ci = rbd::rbd_info("volumes/vol1", rbd::KEY);
    let rec = c.connect_volume(&ci).unwrap();
    assert!(audit(&sim.context()).unwrap().stale_records.is_empty());
    detach_behind_the_registrys_back(&sim.fake.host(), "rbd", || {
        c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
            .unwrap();
    });
    let report = audit(&sim.context()).unwrap();
    assert_eq!(report.stale_records.len(), 1, "{report:?}");
    assert_eq!(report.stale_records[0].registry, "rbd");
    assert!(report.rbd_mappings.is_empty(), "{report:?}");
}
