//! The NVMe-oF connector end to end on a fake host tree whose kernel answers
//! `/dev/nvme-fabrics` and `delete_controller`, with simulated `nvme id-ns` and mdadm.

use std::time::Duration;

use hostbrick::nvme::{ControllerLoss, NvmeOptions};
use hostbrick::testing::sim::nvme::*;
use hostbrick::testing::sim::MIB;
use hostbrick::{
    connector_for, get_connector_properties, ConnectionInfo, Connector, DeviceRecord,
    DisconnectOptions, Error, Protocol,
};
use serde_json::json;

fn connector(sim: &NvmeSim) -> Box<dyn Connector> {
    connector_for(Protocol::NvmeOf, sim.options()).unwrap()
}

#[test]
fn attach_and_detach_one_namespace() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, 64 * MIB)]);
    let c = connector(&sim);
    let ci = volume(UUID_1, &["127.0.0.1:4420"], "vol-1");
    let rec = c.connect_volume(&ci).unwrap();
    let v: serde_json::Value = serde_json::from_str(&rec.to_json().unwrap()).unwrap();
    assert_eq!(v["type"], "block");
    assert_eq!(v["path"], "/dev/nvme0n1");
    assert_eq!(v["nvme_paths"][0]["controller"], "nvme0");
    assert_eq!(v["nvme_paths"][0]["uuid"], UUID_1);
    // The kernel's interface, as nvme-cli uses it: one option string, no process.
    assert_eq!(
        sim.fabrics_requests(),
        [format!("nqn={NQN},transport=tcp,traddr=127.0.0.1,trsvcid=4420,hostnqn={HOSTNQN},hostid={HOSTID},reconnect_delay=10,ctrl_loss_tmo=-1")]
    );
    assert!(sim.runner.calls().is_empty(), "{:?}", sim.runner.calls());
    assert_eq!(sim.registry_entries(), 1);
    assert_eq!(c.get_volume_paths(&ci).unwrap(), vec![rec.path.clone()]);
    c.check_valid_device(&rec.path).unwrap();

    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
    // The head was flushed in process and the controller went through sysfs
    // (`delete_controller`): no process ran.
    assert!(sim.runner.calls().is_empty(), "{:?}", sim.runner.calls());
    assert_eq!(sim.fake.flushes(), ["/dev/nvme0n1"]);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    c.disconnect_volume(&ci, None, DisconnectOptions::default())
        .unwrap();
    let programs: Vec<String> = sim
        .runner
        .commands()
        .iter()
        .map(|c| c.program().to_string())
        .collect();
    assert!(programs.iter().all(|p| p == "blockdev"), "{programs:?}");
    // Attached again after the delete: the kernel's list no longer has the controller.
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(sim.fabrics_requests().len(), 2);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

/// What the controller's recovery attributes read in sysfs.
fn recovery_attrs(sim: &NvmeSim, ctrl: &str) -> [String; 3] {
    ["ctrl_loss_tmo", "reconnect_delay", "fast_io_fail_tmo"].map(|a| {
        std::fs::read_to_string(sim.fake.root().join(format!("sys/class/nvme/{ctrl}/{a}")))
            .unwrap()
            .trim()
            .to_string()
    })
}

/// By default a lost controller is never given up (as os-brick since its bug 1964385): the
/// kernel shows `ctrl_loss_tmo` as `off`, reconnects every 10 s and holds I/O.
#[test]
fn a_lost_controller_is_never_given_up_by_default() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    let c = connector(&sim);
    let ci = volume(UUID_1, &["127.0.0.1:4420"], "vol-1");
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(recovery_attrs(&sim, "nvme0"), ["off", "10", "off"]);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

/// The recovery options reach the kernel as its connect options.
#[test]
fn recovery_options_reach_the_kernel() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    let o = sim.options().nvme(
        NvmeOptions::new()
            .ctrl_loss_timeout(ControllerLoss::After(Duration::from_secs(60)))
            .reconnect_delay(Duration::from_secs(4))
            .fast_io_fail_timeout(Duration::from_secs(30)),
    );
    let c = connector_for(Protocol::NvmeOf, o).unwrap();
    let ci = volume(UUID_1, &["127.0.0.1:4420"], "vol-1");
    let rec = c.connect_volume(&ci).unwrap();
    let request = &sim.fabrics_requests()[0];
    assert!(
        request.ends_with(&format!(
            ",hostid={HOSTID},reconnect_delay=4,ctrl_loss_tmo=60,fast_io_fail_tmo=30"
        )),
        "{request}"
    );
    // 60 s in reconnects 4 s apart: 15 attempts, 60 s.
    assert_eq!(recovery_attrs(&sim, "nvme0"), ["60", "4", "30"]);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

/// Values the kernel would refuse, or that could never act, are refused when the connector
/// is made, naming the option; nothing reaches the kernel.
#[test]
fn recovery_options_the_kernel_would_refuse_are_refused_up_front() {
    let sim = NvmeSim::new(true);
    for (nvme, option) in [
        (
            NvmeOptions::new().reconnect_delay(Duration::ZERO),
            "reconnect_delay",
        ),
        (
            NvmeOptions::new().reconnect_delay(Duration::from_millis(2500)),
            "reconnect_delay",
        ),
        (
            NvmeOptions::new()
                .ctrl_loss_timeout(ControllerLoss::After(Duration::from_secs(u64::MAX))),
            "ctrl_loss_tmo",
        ),
        (
            NvmeOptions::new()
                .ctrl_loss_timeout(ControllerLoss::After(Duration::from_secs(10)))
                .fast_io_fail_timeout(Duration::from_secs(20)),
            "fast_io_fail_tmo",
        ),
    ] {
        match connector_for(Protocol::NvmeOf, sim.options().nvme(nvme.clone())) {
            Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, option, "{nvme:?}"),
            Err(e) => panic!("{nvme:?}: {e:?}"),
            Ok(_) => panic!("{nvme:?} accepted"),
        }
    }
    assert!(sim.fabrics_requests().is_empty());
}

/// The simulated kernel takes and refuses the recovery options as nvmf_parse_options does.
#[test]
fn the_simulated_kernel_parses_recovery_options_as_the_kernel() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    let host = sim.fake.host();
    let base = format!(
        "nqn={NQN},transport=tcp,traddr=127.0.0.1,trsvcid=4420,hostnqn={HOSTNQN},hostid={HOSTID}"
    );
    let connect = |extra: &str| host.exchange(&host.dev("nvme-fabrics"), &format!("{base}{extra}"));
    for bad in [
        ",reconnect_delay=0",
        ",reconnect_delay=-1",
        ",reconnect_delay=x",
        ",ctrl_loss_tmo=",
        ",fast_io_fail_tmo=1.5",
        ",ctrl_loss_tmo=-1,ctrl_loss_tmo=5",
        ",keep_alive=5",
    ] {
        let e = connect(bad).unwrap().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::EINVAL), "{bad}");
    }
    assert!(sim.controllers().is_empty());
    // The kernel's defaults: 600 s in reconnects 10 s apart, no fast I/O fail.
    connect("").unwrap().unwrap();
    assert_eq!(recovery_attrs(&sim, "nvme0"), ["600", "10", "off"]);
    // A loss timeout counted in whole reconnect delays; a negative fast I/O fail is off.
    sim.add_subsystem(
        "nqn.2014-08.org.hostbrick:vm2",
        &["127.0.0.1:4420"],
        &[(1, UUID_2, MIB)],
    );
    let other = base.replace(NQN, "nqn.2014-08.org.hostbrick:vm2");
    host.exchange(
        &host.dev("nvme-fabrics"),
        &format!("{other},reconnect_delay=4,ctrl_loss_tmo=10,fast_io_fail_tmo=-7"),
    )
    .unwrap()
    .unwrap();
    assert_eq!(recovery_attrs(&sim, "nvme1"), ["12", "4", "off"]);
}

#[test]
fn the_fabrics_module_is_loaded_when_its_device_is_missing() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    sim.unload_fabrics_module();
    let c = connector(&sim);
    let ci = volume(UUID_1, &["127.0.0.1:4420"], "m");
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(sim.runner.calls(), ["modprobe nvme-fabrics"]);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    c.connect_volume(&ci).unwrap();
    assert_eq!(sim.runner.count("modprobe"), 1, "loaded once");
    assert_eq!(sim.fabrics_requests().len(), 2);
}

#[test]
fn a_controller_the_kernel_matched_but_that_went_away_is_connected_again() {
    // EALREADY names a controller that is gone before it is looked for (another connect's
    // controller, undone): the connect is written again and makes its own.
    let sim = NvmeSim::new(false);
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    sim.answer_already_then_vanish(1);
    let c = connector(&sim);
    let ci = volume(UUID_1, &["127.0.0.1:4420"], "v");
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(rec.path.to_str(), Some("/dev/nvme0n1"));
    assert_eq!(sim.fabrics_requests().len(), 2);
    // The controller it made is its own to drop.
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn a_portal_address_cannot_carry_connect_options() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    for addr in [
        "127.0.0.1,hostnqn=nqn.2014-08.org.evil:h",
        "127.0.0.1,duplicate_connect",
        "127.0.0.1=",
        "127.0.0.1\nnqn=x",
    ] {
        let ci = ConnectionInfo::from_value(&json!({"driver_volume_type": "nvmeof", "data": {
            "target_nqn": NQN, "portals": [[addr, 4420, "tcp"]], "vol_uuid": UUID_1}}));
        match ci.unwrap_err() {
            Error::InvalidConnectionInfo { field, .. } => {
                assert_eq!(field, "data.portals[0]", "{addr:?}")
            }
            other => panic!("{addr:?}: {other:?}"),
        }
    }
    assert!(sim.fabrics_requests().is_empty());
}

#[test]
fn two_namespaces_share_a_controller_and_detach_independently() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(
        NQN,
        &["127.0.0.1:4420"],
        &[(1, UUID_1, 64 * MIB), (2, UUID_2, 32 * MIB)],
    );
    let c = connector(&sim);
    let (a, b) = (
        volume(UUID_1, &["127.0.0.1:4420"], "a"),
        volume(UUID_2, &["127.0.0.1:4420"], "b"),
    );
    let ra = c.connect_volume(&a).unwrap();
    let rb = c.connect_volume(&b).unwrap();
    assert_eq!(
        (ra.path.to_str(), rb.path.to_str()),
        (Some("/dev/nvme0n1"), Some("/dev/nvme0n2"))
    );
    assert_eq!(
        sim.fabrics_requests().len(),
        1,
        "the second volume reuses the controller"
    );
    c.disconnect_volume(&a, Some(&ra), DisconnectOptions::default())
        .unwrap();
    assert_eq!(
        sim.controllers(),
        vec!["nvme0"],
        "b still needs the controller"
    );
    c.check_valid_device(&rb.path).unwrap();
    c.disconnect_volume(&b, Some(&rb), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn legacy_shape_uses_the_only_namespace() {
    let sim = NvmeSim::new(false);
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    let c = connector(&sim);
    let ci = nvme_info(
        json!({"nqn": NQN, "transport_type": "tcp", "target_portal": "127.0.0.1", "target_port": 4420}),
    );
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(rec.path.to_str(), Some("/dev/nvme0n1"));
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn an_ambiguous_namespace_is_an_error_and_nothing_is_left() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(
        NQN,
        &["127.0.0.1:4420"],
        &[(1, UUID_1, MIB), (2, UUID_2, MIB)],
    );
    let c = connector(&sim);
    let ci = nvme_info(
        json!({"nqn": NQN, "transport_type": "tcp", "target_portal": "127.0.0.1", "target_port": 4420}),
    );
    match c.connect_volume(&ci).unwrap_err() {
        Error::VolumeDeviceNotFound { tried } => {
            assert!(tried[0].reason.contains("2 namespaces"), "{tried:?}")
        }
        other => panic!("{other:?}"),
    }
    sim.assert_clean();
}

#[test]
fn namespace_by_nsid_and_nguid() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(
        NQN,
        &["127.0.0.1:4420"],
        &[(1, UUID_1, MIB), (2, UUID_2, 2 * MIB)],
    );
    let c = connector(&sim);
    let by_nsid =
        nvme_info(json!({"target_nqn": NQN, "portals": [["127.0.0.1", 4420, "tcp"]], "ns_id": 2}));
    assert_eq!(
        c.connect_volume(&by_nsid).unwrap().path.to_str(),
        Some("/dev/nvme0n2")
    );
    let by_nguid = nvme_info(
        json!({"target_nqn": NQN, "portals": [["127.0.0.1", 4420, "tcp"]], "volume_nguid": UUID_1.replace('-', "")}),
    );
    assert_eq!(
        c.connect_volume(&by_nguid).unwrap().path.to_str(),
        Some("/dev/nvme0n1")
    );
    c.disconnect_volume(&by_nsid, None, DisconnectOptions::default())
        .unwrap();
    assert_eq!(sim.controllers().len(), 1);
    c.disconnect_volume(&by_nguid, None, DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn native_multipath_connects_every_portal() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(
        NQN,
        &["127.0.0.1:4420", "127.0.0.2:4420"],
        &[(1, UUID_1, MIB)],
    );
    let c = connector(&sim);
    let ci = volume(UUID_1, &["127.0.0.1:4420", "127.0.0.2:4420"], "mp");
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(rec.nvme_paths.len(), 2);
    assert_eq!(rec.path.to_str(), Some("/dev/nvme0n1"));
    assert_eq!(sim.controllers().len(), 2);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();

    sim.set_reachable("127.0.0.1", false);
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(rec.nvme_paths.len(), 1, "a dead portal is skipped");
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();

    let enforced = nvme_info(
        json!({"target_nqn": NQN, "portals": [["127.0.0.1", 4420, "tcp"], ["127.0.0.2", 4420, "tcp"]], "vol_uuid": UUID_1, "enforce_multipath": true}),
    );
    assert!(matches!(
        c.connect_volume(&enforced),
        Err(Error::VolumeDeviceNotFound { .. })
    ));
    sim.assert_clean();
}

#[test]
fn without_native_multipath_the_first_working_portal_is_enough() {
    let sim = NvmeSim::new(false);
    sim.add_subsystem(
        NQN,
        &["127.0.0.1:4420", "127.0.0.2:4420"],
        &[(1, UUID_1, MIB)],
    );
    sim.set_reachable("127.0.0.1", false);
    let c = connector(&sim);
    let ci = volume(UUID_1, &["127.0.0.1:4420", "127.0.0.2:4420"], "sp");
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(rec.nvme_paths.len(), 1);
    assert_eq!(rec.nvme_paths[0].portal.address, "127.0.0.2");
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn replicas_make_an_md_raid1() {
    let sim = NvmeSim::new(true);
    let nqn2 = "nqn.2014-08.org.hostbrick:vm2";
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    sim.add_subsystem(nqn2, &["127.0.0.1:4420"], &[(1, UUID_2, MIB)]);
    let c = connector(&sim);
    let r = |nqn: &str, u: &str| json!({"target_nqn": nqn, "portals": [["127.0.0.1", 4420, "tcp"]], "vol_uuid": u});
    let ci = nvme_info(
        json!({"volume_replicas": [r(NQN, UUID_1), r(nqn2, UUID_2)], "replica_count": 2, "alias": "vol-r", "volume_id": "r"}),
    );
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(rec.path.to_str(), Some("/dev/md/vol-r"));
    assert_eq!(rec.md_alias.as_deref(), Some("vol-r"));
    let create = sim
        .runner
        .calls()
        .into_iter()
        .find(|c| c.starts_with("mdadm --create"))
        .unwrap();
    assert!(
        create.contains("--level=1")
            && create.contains("/dev/nvme0n1")
            && create.contains("/dev/nvme1n1"),
        "{create}"
    );
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert_eq!(sim.runner.count("mdadm --stop /dev/md/vol-r"), 1);
    sim.assert_clean();
}

#[test]
fn extend_reports_the_new_size() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    let c = connector(&sim);
    let ci = volume(UUID_1, &["127.0.0.1:4420"], "x");
    let rec = c.connect_volume(&ci).unwrap();
    sim.resize(UUID_1, "nvme0n1", 4 * MIB);
    assert_eq!(c.extend_volume(&ci).unwrap(), 4 * MIB);
    // Nothing changed: the current size after the scan budget.
    assert_eq!(c.extend_volume(&ci).unwrap(), 4 * MIB);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
}

#[test]
fn unreachable_target_is_a_typed_error() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    sim.set_reachable("127.0.0.1", false);
    let c = connector(&sim);
    let e = c
        .connect_volume(&volume(UUID_1, &["127.0.0.1:4420"], "x"))
        .unwrap_err();
    assert_eq!(e.kind(), "volume_device_not_found");
    assert!(e.chain().contains("Connection refused"), "{}", e.chain());
    assert!(
        e.chain().contains("NVMe-oF connect to tcp:127.0.0.1:4420"),
        "{}",
        e.chain()
    );
    sim.assert_clean();
}

#[test]
fn connector_properties_carry_the_nvme_identity() {
    let sim = NvmeSim::new(true);
    let ctx = hostbrick::HostContext::new(sim.fake.host(), sim.runner.clone());
    let p = get_connector_properties(&ctx, "192.0.2.1", false, false, "h").unwrap();
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["nqn"], HOSTNQN);
    assert_eq!(v["nvme_hostid"], HOSTID);
    assert_eq!(v["system uuid"], HOSTID, "the DMI UUID: {v}");
    assert_eq!(v["nvme_native_multipath"], true);
}

#[test]
fn a_host_nqn_that_clashes_with_the_host_id_is_refused_before_connecting() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    sim.add_subsystem(
        "nqn.2014-08.org.hostbrick:other",
        &["127.0.0.1:4420"],
        &[(1, UUID_2, MIB)],
    );
    let c = connector(&sim);
    let mine = volume(UUID_1, &["127.0.0.1:4420"], "mine");
    let rec = c.connect_volume(&mine).unwrap();
    let clash = nvme_info(
        json!({"target_nqn": "nqn.2014-08.org.hostbrick:other", "portals": [["127.0.0.1", 4420, "tcp"]],
        "vol_uuid": UUID_2, "host_nqn": "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-000000000000"}),
    );
    match c.connect_volume(&clash).unwrap_err() {
        Error::VolumeDeviceNotFound { tried } => {
            assert!(tried[0].reason.contains("host id"), "{tried:?}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.fabrics_requests().len(), 1);
    c.disconnect_volume(&mine, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn namespaces_are_found_without_udev_links_among_unrelated_controllers() {
    let sim = NvmeSim::new(true);
    // Other subsystems the host is connected to, before and after ours in every listing.
    for i in 0..3 {
        let nqn = format!("nqn.2014-08.org.hostbrick:other{i}");
        let uuid = format!("33333333-3333-4333-8333-{i:012}");
        sim.add_subsystem(&nqn, &["127.0.0.1:4420"], &[(1, uuid.as_str(), MIB)]);
    }
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, 64 * MIB)]);
    let c = connector(&sim);
    for i in 0..3 {
        let ci = nvme_info(json!({
            "target_nqn": format!("nqn.2014-08.org.hostbrick:other{i}"),
            "portals": [["127.0.0.1", "4420", "tcp"]],
            "vol_uuid": format!("33333333-3333-4333-8333-{i:012}"),
            "volume_id": format!("other-{i}")
        }));
        c.connect_volume(&ci).unwrap();
    }
    let ci = volume(UUID_1, &["127.0.0.1:4420"], "vol-1");
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(rec.path.to_str(), Some("/dev/nvme3n1"));
    assert_eq!(c.get_volume_paths(&ci).unwrap(), vec![rec.path.clone()]);
    // A host without udev's by-id links: the controllers are read instead.
    let by_id = sim.fake.root().join("dev/disk/by-id");
    std::fs::remove_dir_all(&by_id).unwrap();
    std::fs::create_dir(&by_id).unwrap();
    assert_eq!(c.get_volume_paths(&ci).unwrap(), vec![rec.path.clone()]);
    c.disconnect_volume(&ci, None, DisconnectOptions::default())
        .unwrap();
    assert_eq!(
        c.get_volume_paths(&ci).unwrap(),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(sim.controllers(), vec!["nvme0", "nvme1", "nvme2"]);
}

/// A replica of a replicated volume: namespace `uuid` of subsystem `nqn` at 127.0.0.1.
fn replica(nqn: &str, uuid: &str) -> serde_json::Value {
    json!({"target_nqn": nqn, "portals": [["127.0.0.1", 4420, "tcp"]], "vol_uuid": uuid})
}

#[test]
fn nvme_alias_and_unknown_transports_connect_over_tcp() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    let c = connector(&sim);
    // os-brick's factory takes NVME for NVMe-oF; its Portal reads any transport but
    // rdma/RoCEv2 as tcp.
    let ci = ConnectionInfo::from_value(&json!({"driver_volume_type": "NVME", "data": {
        "target_nqn": NQN, "portals": [["127.0.0.1", 4420, "nvme-tcp"]], "vol_uuid": UUID_1}}))
    .unwrap();
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(rec.path.to_str(), Some("/dev/nvme0n1"));
    let connects = sim.fabrics_requests();
    assert_eq!(connects.len(), 1);
    assert!(
        connects[0].contains(",transport=tcp,traddr=127.0.0.1,trsvcid=4420,"),
        "{connects:?}"
    );
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn host_nqn_in_the_data_is_the_connect_host_nqn() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    let c = connector(&sim);
    let theirs = "nqn.2014-08.org.storage:initiator-7";
    let ci = nvme_info(
        json!({"target_nqn": NQN, "portals": [["127.0.0.1", 4420, "tcp"]],
        "vol_uuid": UUID_1, "host_nqn": theirs, "volume_id": "h"}),
    );
    let rec = c.connect_volume(&ci).unwrap();
    let connect = sim.fabrics_requests().pop().unwrap();
    assert!(
        connect.contains(&format!(",hostnqn={theirs},hostid={HOSTID},")),
        "{connect}"
    );
    assert_eq!(c.get_volume_paths(&ci).unwrap(), vec![rec.path.clone()]);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();

    // A host_nqn that is no NQN is refused before anything runs.
    sim.runner.clear_calls();
    let bad = ConnectionInfo::from_value(&json!({"driver_volume_type": "nvmeof", "data": {
        "target_nqn": NQN, "portals": [["127.0.0.1", 4420, "tcp"]], "host_nqn": "host-7"}}));
    match bad.unwrap_err() {
        Error::InvalidConnectionInfo { field, .. } => assert_eq!(field, "data.host_nqn"),
        other => panic!("{other:?}"),
    }
    assert!(sim.runner.calls().is_empty());
}

#[test]
fn a_single_replica_with_an_md_superblock_is_assembled() {
    for incremental in [false, true] {
        let sim = NvmeSim::new(true);
        sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
        sim.put_md_superblock(UUID_1, "vol-r");
        // udev may have assembled it as /dev/md127 already: os-brick stops that and
        // assembles the array under its name.
        sim.set_incremental_assembly(incremental);
        let c = connector(&sim);
        let ci = nvme_info(
            json!({"volume_replicas": [replica(NQN, UUID_1)], "replica_count": 1,
            "alias": "vol-r", "volume_id": "r1"}),
        );
        let rec = c.connect_volume(&ci).unwrap();
        assert_eq!(rec.path.to_str(), Some("/dev/md/vol-r"), "{incremental}");
        assert_eq!(rec.md_alias.as_deref(), Some("vol-r"));
        assert_eq!(sim.runner.count("mdadm --create"), 0);
        assert_eq!(
            sim.runner
                .count("mdadm --assemble --run /dev/md/vol-r /dev/nvme0n1"),
            1
        );
        assert_eq!(
            sim.runner.count("mdadm --stop /dev/md127"),
            usize::from(incremental)
        );
        assert_eq!(
            sim.md_arrays(),
            [("md127".to_string(), Some("vol-r".to_string()))]
        );
        c.check_valid_device(&rec.path).unwrap();
        c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
            .unwrap();
        assert_eq!(sim.runner.count("mdadm --stop /dev/md/vol-r"), 1);
        sim.assert_clean();
    }
}

#[test]
fn a_single_replica_without_a_superblock_is_the_namespace() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    let c = connector(&sim);
    let ci = nvme_info(
        json!({"volume_replicas": [replica(NQN, UUID_1)], "replica_count": 1,
        "alias": "vol-r", "volume_id": "r1"}),
    );
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(rec.path.to_str(), Some("/dev/nvme0n1"));
    assert_eq!(rec.md_alias, None);
    assert_eq!(sim.runner.count("mdadm --examine /dev/nvme0n1"), 1);
    assert_eq!(sim.runner.count("mdadm --assemble"), 0);
    assert_eq!(sim.runner.count("mdadm --create"), 0);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn replicas_that_carry_the_array_are_assembled_not_created() {
    let sim = NvmeSim::new(true);
    let nqn2 = "nqn.2014-08.org.hostbrick:vm2";
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    sim.add_subsystem(nqn2, &["127.0.0.1:4420"], &[(1, UUID_2, MIB)]);
    let c = connector(&sim);
    let ci = nvme_info(
        json!({"volume_replicas": [replica(NQN, UUID_1), replica(nqn2, UUID_2)],
        "replica_count": 2, "alias": "vol-r", "volume_id": "r"}),
    );
    let rec = c.connect_volume(&ci).unwrap();
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
    // The second attach finds the superblocks the first made.
    sim.runner.clear_calls();
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(rec.path.to_str(), Some("/dev/md/vol-r"));
    assert_eq!(sim.runner.count("mdadm --create"), 0);
    assert_eq!(sim.runner.count("mdadm --assemble --run /dev/md/vol-r"), 1);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn extend_of_a_replicated_volume_grows_the_array() {
    let sim = NvmeSim::new(true);
    let nqn2 = "nqn.2014-08.org.hostbrick:vm2";
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    sim.add_subsystem(nqn2, &["127.0.0.1:4420"], &[(1, UUID_2, MIB)]);
    let c = connector(&sim);
    let ci = nvme_info(
        json!({"volume_replicas": [replica(NQN, UUID_1), replica(nqn2, UUID_2)],
        "replica_count": 2, "alias": "vol-r", "volume_id": "r"}),
    );
    let rec = c.connect_volume(&ci).unwrap();
    sim.resize(UUID_1, "nvme0n1", 4 * MIB);
    sim.resize(UUID_2, "nvme1n1", 4 * MIB);
    assert_eq!(c.extend_volume(&ci).unwrap(), 4 * MIB);
    let calls = sim.runner.calls();
    let grow = calls
        .iter()
        .position(|c| c == "mdadm --grow --size max /dev/md/vol-r")
        .unwrap_or_else(|| panic!("{calls:?}"));
    // Both replicas were read at their new size before the array grew.
    let id_ns: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.starts_with("nvme id-ns"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(id_ns.len(), 2, "{calls:?}");
    assert!(id_ns.iter().all(|i| *i < grow), "{calls:?}");
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn os_brick_device_info_detaches_from_the_host() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(
        NQN,
        &["127.0.0.1:4420"],
        &[(1, UUID_1, MIB), (2, UUID_2, MIB)],
    );
    let c = connector(&sim);
    let (a, b) = (
        volume(UUID_1, &["127.0.0.1:4420"], "a"),
        volume(UUID_2, &["127.0.0.1:4420"], "b"),
    );
    c.connect_volume(&a).unwrap();
    c.connect_volume(&b).unwrap();
    // os-brick's device_info for NVMe-oF: type and path, nothing else.
    let os_brick = |path: &str| DeviceRecord::block(Protocol::NvmeOf, path, None);
    assert!(os_brick("/dev/nvme0n2").nvme_paths.is_empty());

    // b's info with a's device: refused, nothing flushed or dropped.
    sim.runner.clear_calls();
    match c
        .disconnect_volume(
            &b,
            Some(&os_brick("/dev/nvme0n1")),
            DisconnectOptions::default(),
        )
        .unwrap_err()
    {
        Error::RecordMismatch { what, reason } => {
            assert!(what.contains("/dev/nvme0n1"), "{what}");
            assert!(reason.contains("nvme0n2"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(sim.runner.calls().is_empty(), "{:?}", sim.runner.calls());
    // Nova's device_path is checked the same way when there is no record.
    let b_path = nvme_info(
        json!({"target_nqn": NQN, "portals": [["127.0.0.1", 4420, "tcp"]],
        "vol_uuid": UUID_2, "volume_id": "b", "device_path": "/dev/nvme0n1"}),
    );
    assert!(matches!(
        c.disconnect_volume(&b_path, None, DisconnectOptions::default()),
        Err(Error::RecordMismatch { .. })
    ));
    assert!(sim.runner.calls().is_empty(), "{:?}", sim.runner.calls());
    let with_path = nvme_info(
        json!({"target_nqn": NQN, "portals": [["127.0.0.1", 4420, "tcp"]],
        "vol_uuid": UUID_2, "volume_id": "b", "device_path": "/dev/nvme0n2"}),
    );

    // The right path: b detaches; the controller stays for a.
    c.disconnect_volume(
        &with_path,
        Some(&os_brick("/dev/nvme0n2")),
        DisconnectOptions::default(),
    )
    .unwrap();
    assert_eq!(sim.fake.flushes(), ["/dev/nvme0n2"]);
    assert_eq!(sim.controllers(), ["nvme0"]);
    // A path the host no longer has is no claim: a goes by its connection_info.
    c.disconnect_volume(
        &a,
        Some(&os_brick("/dev/nvme9n9")),
        DisconnectOptions::default(),
    )
    .unwrap();
    sim.assert_clean();
}

#[test]
fn os_brick_device_info_of_a_replicated_volume_names_the_array() {
    let sim = NvmeSim::new(true);
    let nqn2 = "nqn.2014-08.org.hostbrick:vm2";
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    sim.add_subsystem(nqn2, &["127.0.0.1:4420"], &[(1, UUID_2, MIB)]);
    let c = connector(&sim);
    let ci = nvme_info(
        json!({"volume_replicas": [replica(NQN, UUID_1), replica(nqn2, UUID_2)],
        "replica_count": 2, "alias": "vol-r", "volume_id": "r"}),
    );
    c.connect_volume(&ci).unwrap();
    assert_eq!(
        c.get_volume_paths(&ci).unwrap(),
        [std::path::PathBuf::from("/dev/md/vol-r")]
    );
    let rec = DeviceRecord::block(Protocol::NvmeOf, "/dev/md/vol-r", None);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert_eq!(sim.runner.count("mdadm --stop /dev/md/vol-r"), 1);
    sim.assert_clean();
}

/// A volume another tool (os-brick) detached leaves hostbrick's registry entry behind. The
/// next connect that has to make the controller anew drops it, so the controller goes when
/// its last real user disconnects.
#[test]
fn a_stale_entry_does_not_keep_a_new_controller() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(
        NQN,
        &["127.0.0.1:4420"],
        &[(1, UUID_1, MIB), (2, UUID_2, MIB)],
    );
    let c = connector(&sim);
    let a = volume(UUID_1, &["127.0.0.1:4420"], "vol-a");
    let rec = c.connect_volume(&a).unwrap();
    let reg = hostbrick::internals::platform::Registry::new(&sim.fake.host(), "nvme");
    let kept: Vec<(String, serde_json::Value)> = reg.entries().unwrap();
    assert_eq!(kept.len(), 1);
    // Detached behind hostbrick's back: the controller is gone, the entry stays.
    c.disconnect_volume(&a, Some(&rec), DisconnectOptions::default())
        .unwrap();
    reg.put(&kept[0].0, &kept[0].1).unwrap();
    assert!(sim.controllers().is_empty());
    assert_eq!(sim.registry_entries(), 1);

    let b = volume(UUID_2, &["127.0.0.1:4420"], "vol-b");
    let rec = c.connect_volume(&b).unwrap();
    assert_eq!(
        sim.registry_entries(),
        1,
        "the stale entry of vol-a was dropped"
    );
    c.disconnect_volume(&b, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

/// Connector options with a deadline far longer than any wait these tests allow.
fn long_deadline(sim: &NvmeSim) -> Box<dyn Connector> {
    let o = sim
        .options()
        .operation_timeout(std::time::Duration::from_secs(30));
    connector_for(Protocol::NvmeOf, o).unwrap()
}

/// A namespace the subsystem does not have fails the connect as soon as the live
/// controller shows every namespace the subsystem lists, not at the deadline; the
/// controller the connect made is gone again.
#[test]
fn a_missing_namespace_fails_at_once_and_leaves_nothing() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    let c = long_deadline(&sim);
    let started = std::time::Instant::now();
    let e = c
        .connect_volume(&volume(UUID_2, &["127.0.0.1:4420"], "vol-x"))
        .unwrap_err();
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    assert_eq!(e.kind(), "volume_device_not_found");
    match &e {
        Error::VolumeDeviceNotFound { tried } => {
            assert_eq!(tried.len(), 1, "{tried:?}");
            let r = &tried[0].reason;
            assert!(
                r.contains(&format!("has no namespace uuid {UUID_2}")),
                "{r}"
            );
            assert!(r.contains("controller nvme0 is live"), "{r}");
            assert!(r.contains("(nsids 1)"), "{r}");
        }
        other => panic!("{other:?}"),
    }
    // The subsystem's namespace list was asked once.
    let listed: Vec<String> = sim
        .runner
        .calls()
        .into_iter()
        .filter(|c| c.contains("list-ns"))
        .collect();
    assert_eq!(listed, ["nvme list-ns /dev/nvme0"]);
    sim.assert_clean();
    // By nsid: the subsystem's list lacks it.
    let by_nsid = nvme_info(
        json!({"target_nqn": NQN, "portals": [["127.0.0.1", "4420", "tcp"]],
        "ns_id": 4, "volume_id": "vol-4"}),
    );
    let e = c.connect_volume(&by_nsid).unwrap_err();
    assert!(
        e.chain()
            .contains("has no namespace nsid 4: the subsystem lists nsids 1"),
        "{}",
        e.chain()
    );
    sim.assert_clean();
}

/// A namespace the kernel's scan adds a while after the controller is live (the list of
/// the subsystem names it before the controller shows it) is waited for and found.
#[test]
fn a_namespace_the_scan_adds_late_is_found() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(
        NQN,
        &["127.0.0.1:4420"],
        &[(1, UUID_1, MIB), (2, UUID_2, MIB)],
    );
    sim.set_scan_delay(Some(std::time::Duration::from_millis(600)));
    let c = long_deadline(&sim);
    let ci = volume(UUID_2, &["127.0.0.1:4420"], "vol-2");
    let started = std::time::Instant::now();
    let rec = c.connect_volume(&ci).unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(600));
    assert_eq!(rec.path.to_str(), Some("/dev/nvme0n2"));
    // The list was read while the scan was under way: it did not end the wait.
    assert!(
        sim.runner.calls().iter().any(|c| c.contains("list-ns")),
        "{:?}",
        sim.runner.calls()
    );
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
    // And a namespace missing from a slow scan fails once the scan has shown the rest.
    let started = std::time::Instant::now();
    let e = c
        .connect_volume(&volume(
            "33333333-3333-4333-8333-333333333333",
            &["127.0.0.1:4420"],
            "vol-3",
        ))
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.kind(), "volume_device_not_found");
    assert!(
        took >= std::time::Duration::from_millis(600) && took < std::time::Duration::from_secs(5),
        "took {took:?}"
    );
    sim.assert_clean();
}

/// On a controller another volume uses, a namespace the subsystem lacks fails after the
/// rescan settled, and the controller stays for the volume on it.
#[test]
fn a_missing_namespace_on_a_reused_controller_fails_and_keeps_the_controller() {
    let sim = NvmeSim::new(true);
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    let c = long_deadline(&sim);
    let first = volume(UUID_1, &["127.0.0.1:4420"], "vol-1");
    let rec = c.connect_volume(&first).unwrap();
    let started = std::time::Instant::now();
    let e = c
        .connect_volume(&volume(UUID_2, &["127.0.0.1:4420"], "vol-2"))
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.kind(), "volume_device_not_found");
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    assert_eq!(sim.controllers(), ["nvme0"]);
    assert_eq!(sim.registry_entries(), 1);
    c.disconnect_volume(&first, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}
