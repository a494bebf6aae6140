//! The iSCSI connector end to end on a fake host tree with a simulated iscsiadm,
//! multipath and kernel.

use std::time::Duration;

use hostbrick::testing::sim::iscsi::*;
use hostbrick::testing::sim::MIB;
use hostbrick::{connector_for, Connector, DisconnectOptions, Error, Protocol};
use serde_json::json;

fn udev_wwid(sysfs: &str) -> String {
    format!("3{}", &sysfs[4..])
}

fn connector(sim: &IscsiSim, multipath: bool) -> Box<dyn Connector> {
    let mut o = sim.options();
    if multipath {
        o = o.multipath(hostbrick::MultipathMode::Optional);
    }
    connector_for(Protocol::Iscsi, o).unwrap()
}

#[test]
fn single_path_attach_and_detach() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(0, WWID_2, MIB), (1, WWID_1, 64 * MIB)]);
    let c = connector(&sim, false);
    let ci = single("127.0.0.1:3260", 1, "vol-1");
    let rec = c.connect_volume(&ci).unwrap();
    let v: serde_json::Value = serde_json::from_str(&rec.to_json().unwrap()).unwrap();
    assert_eq!(v["type"], "block");
    assert_eq!(
        v["path"],
        format!("/dev/disk/by-path/ip-127.0.0.1:3260-iscsi-{IQN}-lun-1")
    );
    assert_eq!(v["scsi_wwn"], udev_wwid(WWID_1).as_str());
    assert!(v.get("multipath_id").is_none());
    assert_eq!(rec.paths.len(), 1);
    assert_eq!(rec.paths[0].device.to_str(), Some("/dev/sda"));
    // Manual scan: only LUN 1 was scanned, LUN 0 stays invisible.
    assert_eq!(sim.fake.devices().len(), 1);
    // The node record is written directly, as `--op new` and hostbrick's `--op update`
    // would leave it: the one iscsiadm of the connect is the login.
    assert_eq!(
        sim.iscsiadm_calls(),
        vec![format!(
            "iscsiadm -m node -T {IQN} -p 127.0.0.1:3260 --interface default --login"
        )]
    );
    let file = sim.node_record("127.0.0.1:3260").unwrap();
    assert_eq!(
        file,
        sim.fake
            .root()
            .join(format!("etc/iscsi/nodes/{IQN}/127.0.0.1,3260"))
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), expected_record());
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    assert!(
        !sim.fake.root().join("run/lock/iscsi/lock.write").exists(),
        "open-iscsi's database lock is left held"
    );
    assert_eq!(c.get_volume_paths(&ci).unwrap(), vec![rec.path.clone()]);
    assert_eq!(
        c.get_all_available_volumes().unwrap(),
        vec![rec.path.clone()]
    );
    c.check_valid_device(&rec.path).unwrap();

    sim.runner.clear_calls();
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    // The record file goes without iscsiadm: the one iscsiadm of the disconnect is the
    // logout.
    assert_eq!(
        sim.iscsiadm_calls(),
        vec![format!(
            "iscsiadm -m node -T {IQN} -p 127.0.0.1:3260 --interface default --logout"
        )]
    );
    sim.assert_clean();
    assert!(!sim
        .fake
        .root()
        .join(format!("etc/iscsi/nodes/{IQN}"))
        .exists());
    assert!(c.check_valid_device(&rec.path).is_err());
}

/// What the Debian guest's iscsiadm wrote for `--op new` and hostbrick's `--op update` of
/// today (tests/fixtures/iscsi/records/node-new-default-updated), for [`IQN`] at 127.0.0.1.
fn expected_record() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/iscsi/records/node-new-default-updated"
    ))
    .unwrap()
    .replace("iqn.2003-01.org.linux-iscsi.hostbrick:records", IQN)
}

#[test]
fn connect_reuses_an_existing_attachment() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    let c = connector(&sim, false);
    let ci = single("127.0.0.1:3260", 1, "vol-1");
    let a = c.connect_volume(&ci).unwrap();
    let b = c.connect_volume(&ci).unwrap();
    assert_eq!(a, b);
    assert_eq!(sim.session_count(), 1);
    assert_eq!(sim.runner.count("--login"), 1);
    c.disconnect_volume(&ci, Some(&b), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn portal_failover_uses_the_next_target_and_cleans_the_failed_one() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.3:3260", &[(1, WWID_1, MIB)]);
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    sim.set_reachable("127.0.0.3:3260", false);
    let c = connector(&sim, false);
    let ci = multi(&["127.0.0.3:3260", "127.0.0.1:3260"], 1, "vol-1");
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(rec.paths.len(), 1);
    assert_eq!(rec.paths[0].portal.to_string(), "127.0.0.1:3260");
    assert!(
        !sim.has_node("127.0.0.3:3260"),
        "the failed attempt's node record stays"
    );
    assert_eq!(sim.session_count(), 1);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn all_targets_failing_says_what_was_tried() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    let c = connector(&sim, false);
    // LUN 7 is not offered: the scan finds nothing and the attempt is undone.
    let ci = multi(&["127.0.0.2:3260", "127.0.0.1:3260"], 7, "vol-x");
    match c.connect_volume(&ci).unwrap_err() {
        Error::VolumeDeviceNotFound { tried } => {
            assert_eq!(tried.len(), 2);
            assert!(tried[0].target.starts_with("127.0.0.2:3260"), "{tried:?}");
            assert!(tried[0].reason.contains("exit code 8"), "{tried:?}");
            assert!(tried[1].reason.contains("LUN 7"), "{tried:?}");
        }
        other => panic!("{other:?}"),
    }
    sim.assert_clean();
}

#[test]
fn chap_login_and_masked_password() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(0, WWID_1, MIB)]);
    sim.require_chap("alice", "s3cret-pw");
    let c = connector(&sim, false);
    let mut data = json!({"target_portal": "127.0.0.1:3260", "target_iqn": IQN, "target_lun": 0,
        "auth_method": "CHAP", "auth_username": "alice", "auth_password": "s3cret-pw"});
    let rec = c.connect_volume(&info(data.clone())).unwrap();
    assert!(sim.runner.calls().iter().all(|c| !c.contains("s3cret-pw")));
    // The password is in the node record file, not on a command line (not even masked).
    assert!(sim
        .runner
        .calls()
        .iter()
        .all(|c| !c.contains("auth.password")));
    let node = sim.node_record("127.0.0.1:3260").unwrap();
    // `--op new` without a portal group tag: open-iscsi's flat record file.
    assert!(
        node.ends_with(format!("etc/iscsi/nodes/{IQN}/127.0.0.1,3260")),
        "{node:?}"
    );
    assert_eq!(mode(&node), 0o600);
    let record = std::fs::read_to_string(&node).unwrap();
    assert!(record.contains("\nnode.session.auth.password = s3cret-pw\n"));
    c.disconnect_volume(
        &info(data.clone()),
        Some(&rec),
        DisconnectOptions::default(),
    )
    .unwrap();
    sim.assert_clean();

    data["auth_password"] = json!("wrong-pw");
    let e = c.connect_volume(&info(data)).unwrap_err();
    assert!(matches!(e, Error::AuthenticationFailed { .. }), "{e:?}");
    assert_eq!(e.kind(), "authentication_failed");
    assert!(!e.chain().contains("wrong-pw") && !format!("{e:?}").contains("wrong-pw"));
    sim.assert_clean();
}

#[test]
fn discovery_with_chap_runs_before_login() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(0, WWID_1, MIB)]);
    let c = connector(&sim, false);
    let ci = info(
        json!({"target_portal": "127.0.0.1:3260", "target_iqn": IQN, "target_lun": 0,
        "target_discovered": true, "discovery_auth_method": "CHAP",
        "discovery_auth_username": "disc", "discovery_auth_password": "d-pass"}),
    );
    let rec = c.connect_volume(&ci).unwrap();
    let calls = sim.runner.calls();
    let disc = calls
        .iter()
        .position(|c| c.contains("--discover"))
        .expect("discovery ran");
    let login = calls.iter().position(|c| c.contains("--login")).unwrap();
    assert!(disc < login);
    // The password is in the discovery record file, not on a command line.
    assert!(calls.iter().all(|c| !c.contains("auth.password")));
    let record = std::fs::read_to_string(sim.discovery_record("127.0.0.1:3260")).unwrap();
    assert!(record.contains("\ndiscovery.sendtargets.auth.password = d-pass\n"));
    assert!(calls.iter().all(|c| !c.contains("d-pass")));
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

/// Every argument vector a connect ran, secrets in clear (as the program would get them:
/// what `/proc/PID/cmdline` would show).
fn argv_in_clear(sim: &IscsiSim) -> Vec<String> {
    sim.runner
        .commands()
        .iter()
        .map(|c| {
            let args: Vec<String> = c
                .arg_list()
                .iter()
                .map(|a| match a {
                    hostbrick::Arg::Plain(s) => s.clone(),
                    hostbrick::Arg::Secret(s) => s.expose().to_string(),
                })
                .collect();
            format!("{} {}", c.program(), args.join(" "))
        })
        .collect()
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn chap_passwords_never_reach_a_command_line_and_records_are_private() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(0, WWID_1, MIB)]);
    sim.require_chap("alice", "sess-Pw#1 x");
    sim.require_discovery_chap("127.0.0.1:3260", "disc", "disc=Pw2");
    let c = connector(&sim, false);
    let data = json!({"target_portal": "127.0.0.1:3260", "target_iqn": IQN, "target_lun": 0,
        "target_discovered": true, "volume_id": "v-chap",
        "auth_method": "CHAP", "auth_username": "alice", "auth_password": "sess-Pw#1 x",
        "discovery_auth_method": "CHAP", "discovery_auth_username": "disc",
        "discovery_auth_password": "disc=Pw2"});
    let rec = c.connect_volume(&info(data.clone())).unwrap();
    let argv = argv_in_clear(&sim);
    assert!(argv.iter().any(|a| a.contains("--discover")), "{argv:#?}");
    assert!(argv.iter().any(|a| a.contains("--login")), "{argv:#?}");
    for a in &argv {
        assert!(
            !a.contains("sess-Pw") && !a.contains("disc=Pw2") && !a.contains("auth.password"),
            "a password on a command line: {a}"
        );
    }
    // The node record (made by discovery, then updated by iscsiadm) holds session CHAP in
    // open-iscsi's format, readable by root only.
    let node = sim.node_record("127.0.0.1:3260").unwrap();
    assert!(
        node.ends_with(format!("etc/iscsi/nodes/{IQN}/127.0.0.1,3260,1/default")),
        "{node:?}"
    );
    assert_eq!(mode(&node), 0o600);
    let text = std::fs::read_to_string(&node).unwrap();
    assert!(text.starts_with("# BEGIN RECORD 2.1.8\n"), "{text}");
    assert!(
        text.ends_with(
            "node.session.auth.authmethod = CHAP\nnode.session.auth.username = alice\n\
        node.session.auth.password = sess-Pw#1 x\n# END RECORD\n"
        ),
        "{text}"
    );
    assert!(!text.contains("authmethod = None"), "{text}");
    assert!(text.contains("\nnode.session.scan = manual\n"), "{text}");
    let disc = sim.discovery_record("127.0.0.1:3260");
    assert_eq!(mode(&disc), 0o600);
    let text = std::fs::read_to_string(&disc).unwrap();
    assert!(text.ends_with("discovery.sendtargets.auth.authmethod = CHAP\n\
        discovery.sendtargets.auth.username = disc\ndiscovery.sendtargets.auth.password = disc=Pw2\n\
        # END RECORD\n"), "{text}");
    // No temporary file left beside the records.
    let st = disc.parent().unwrap().parent().unwrap();
    assert_eq!(std::fs::read_dir(st).unwrap().count(), 1);
    c.disconnect_volume(
        &info(data.clone()),
        Some(&rec),
        DisconnectOptions::default(),
    )
    .unwrap();
    sim.assert_clean();

    // A wrong discovery password fails as the target says, typed.
    let mut bad = data;
    bad["discovery_auth_password"] = json!("wrong-disc");
    let e = c.connect_volume(&info(bad)).unwrap_err();
    assert_eq!(e.kind(), "authentication_failed", "{e:?}");
    assert!(!e.chain().contains("wrong-disc"));
    sim.assert_clean();
}

#[test]
fn a_chap_value_the_record_cannot_hold_is_refused_before_anything_runs() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(0, WWID_1, MIB)]);
    let c = connector(&sim, false);
    for (key, value) in [
        ("auth_password", "pw\nnode.session.auth.authmethod = None"),
        ("auth_password", "pw\r"),
        ("auth_username", "alice\nx"),
        ("discovery_auth_password", "pw\n"),
        ("auth_password", "trailing "),
    ] {
        let mut data = json!({"target_portal": "127.0.0.1:3260", "target_iqn": IQN,
            "auth_method": "CHAP", "auth_username": "alice", "auth_password": "good-pw",
            "discovery_auth_method": "CHAP", "discovery_auth_username": "disc",
            "discovery_auth_password": "good-pw"});
        data[key] = json!(value);
        let ci = hostbrick::ConnectionInfo::from_value(
            &json!({"driver_volume_type": "iscsi", "data": data}),
        );
        let e = match ci {
            Ok(ci) => c.connect_volume(&ci).unwrap_err(),
            Err(e) => e,
        };
        match &e {
            Error::InvalidConnectionInfo { field, .. } => assert_eq!(field, &format!("data.{key}")),
            other => panic!("{key}={value:?}: {other:?}"),
        }
        assert!(!e.chain().contains("pw\n") && !format!("{e:?}").contains("good-pw"));
    }
    assert!(sim.runner.calls().is_empty(), "{:#?}", sim.runner.calls());
}

#[test]
fn multipath_two_paths_one_map() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, 8 * MIB)]);
    sim.add_target("127.0.0.2:3260", &[(1, WWID_1, 8 * MIB)]);
    let c = connector(&sim, true);
    let ci = multi(&["127.0.0.1:3260", "127.0.0.2:3260"], 1, "vol-mp");
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(rec.path.to_str(), Some("/dev/dm-0"));
    assert_eq!(
        rec.multipath_id.as_deref(),
        Some(udev_wwid(WWID_1).as_str())
    );
    assert_eq!(rec.paths.len(), 2);
    let slaves = std::fs::read_dir(sim.fake.root().join("sys/block/dm-0/slaves"))
        .unwrap()
        .count();
    assert_eq!(slaves, 2);
    assert_eq!(
        sim.runner
            .count(&format!("multipath -a {}", udev_wwid(WWID_1))),
        1
    );

    sim.resize(WWID_1, 16 * MIB);
    assert_eq!(c.extend_volume(&ci).unwrap(), 16 * MIB);

    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn multipath_detach_flushes_the_map_only_and_waits_for_multipathd_to_drop_the_paths() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    sim.add_target("127.0.0.2:3260", &[(1, WWID_1, MIB)]);
    let c = connector(&sim, true);
    let ci = multi(&["127.0.0.1:3260", "127.0.0.2:3260"], 1, "vol-mp");
    let rec = c.connect_volume(&ci).unwrap();
    let paths: Vec<String> = rec
        .paths
        .iter()
        .map(|p| p.device.display().to_string())
        .collect();
    assert_eq!(paths.len(), 2);
    // One path is dead: a flush of it would fail (or, on a real host, hang until the
    // session's replacement timeout). The detach is not forced and still succeeds.
    sim.fake.fail_flush(&paths[1], nix::libc::EIO);
    // multipathd has not handled the second path's removal when the detach looks.
    let lagging = paths[1].trim_start_matches("/dev/").to_string();
    sim.multipathd_lags(&[&lagging]);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
    // Only the map was flushed; writes to the volume went through it.
    assert_eq!(sim.fake.flushes(), ["/dev/dm-0"]);
    assert!(sim.runner.count("multipathd show paths raw format %d") >= 2);
    assert_eq!(
        sim.runner.count(&format!("multipathd del path {lagging}")),
        1
    );
}

#[test]
fn a_multipath_connect_returns_the_map_once_it_is_writable() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    sim.add_target("127.0.0.2:3260", &[(1, WWID_1, MIB)]);
    sim.maps_start_read_only(std::time::Duration::from_millis(300));
    let c = connector(&sim, true);
    let ci = multi(&["127.0.0.1:3260", "127.0.0.2:3260"], 1, "vol-mp");
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(rec.path.to_str(), Some("/dev/dm-0"));
    let ro = std::fs::read_to_string(sim.fake.root().join("sys/block/dm-0/ro")).unwrap();
    assert_eq!(ro.trim(), "0", "the map was handed out read-only");
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn a_forced_detach_of_a_map_with_every_path_dead_fails_its_queue_first() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    sim.add_target("127.0.0.2:3260", &[(1, WWID_1, MIB)]);
    let c = connector(&sim, true);
    let ci = multi(&["127.0.0.1:3260", "127.0.0.2:3260"], 1, "vol-mp");
    let rec = c.connect_volume(&ci).unwrap();
    let root = sim.fake.root().to_path_buf();
    let set_states = |state: &str| {
        for p in &rec.paths {
            let name = p.device.file_name().unwrap().to_string_lossy().into_owned();
            let dir = root.join(format!("sys/block/{name}/device"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("state"), format!("{state}\n")).unwrap();
        }
    };
    let force = DisconnectOptions {
        force: true,
        ..DisconnectOptions::default()
    };
    set_states("transport-offline");
    c.disconnect_volume(&ci, Some(&rec), force).unwrap();
    sim.assert_clean();
    assert_eq!(
        sim.runner.count(&format!(
            "dmsetup message {} 0 fail_if_no_path",
            udev_wwid(WWID_1)
        )),
        1
    );
    // With a path up (the new disks' state is `running`), it is not touched.
    let rec = c.connect_volume(&ci).unwrap();
    set_states("running");
    c.disconnect_volume(&ci, Some(&rec), force).unwrap();
    assert_eq!(sim.runner.count("dmsetup message"), 1);
}

#[test]
fn multipath_with_one_dead_path() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    sim.add_target("127.0.0.2:3260", &[(1, WWID_1, MIB)]);
    sim.set_reachable("127.0.0.2:3260", false);
    let c = connector(&sim, true);
    let ci = multi(&["127.0.0.1:3260", "127.0.0.2:3260"], 1, "vol-mp");
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(rec.path.to_str(), Some("/dev/dm-0"));
    assert_eq!(rec.paths.len(), 1);
    assert!(!sim.has_node("127.0.0.2:3260"));
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn multipath_falls_back_to_single_path_unless_enforced() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    sim.add_target("127.0.0.2:3260", &[(1, WWID_1, MIB)]);
    sim.set_multipathd(false);
    let ci = multi(&["127.0.0.1:3260", "127.0.0.2:3260"], 1, "vol-mp");

    let c = connector(&sim, true);
    let rec = c.connect_volume(&ci).unwrap();
    assert!(rec.multipath_id.is_none());
    assert!(
        rec.path.to_string_lossy().starts_with("/dev/disk/by-path/"),
        "{rec:?}"
    );
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();

    let enforced = connector_for(
        Protocol::Iscsi,
        sim.options().multipath(hostbrick::MultipathMode::Enforced),
    )
    .unwrap();
    // As os-brick's `check_multipath`: enforced multipath without multipathd fails
    // before any login.
    sim.runner.clear_calls();
    let e = enforced.connect_volume(&ci).unwrap_err();
    assert!(matches!(e, Error::MultipathdNotRunning), "{e:?}");
    assert_eq!(sim.runner.count("--login"), 0);
    sim.assert_clean();
}

#[test]
fn disconnect_keeps_a_session_with_another_lun_in_use() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB), (2, WWID_2, MIB)]);
    let c = connector(&sim, false);
    let (ci1, ci2) = (
        single("127.0.0.1:3260", 1, "vol-1"),
        single("127.0.0.1:3260", 2, "vol-2"),
    );
    let r1 = c.connect_volume(&ci1).unwrap();
    let r2 = c.connect_volume(&ci2).unwrap();
    assert_eq!(sim.session_count(), 1);
    assert_eq!(sim.fake.devices().len(), 2);

    c.disconnect_volume(&ci1, Some(&r1), DisconnectOptions::default())
        .unwrap();
    assert_eq!(sim.runner.count("--logout"), 0);
    assert_eq!(sim.session_count(), 1);
    assert_eq!(sim.fake.devices().len(), 1);
    c.check_valid_device(&r2.path).unwrap();

    c.disconnect_volume(&ci2, Some(&r2), DisconnectOptions::default())
        .unwrap();
    assert_eq!(sim.runner.count("--logout"), 1);
    sim.assert_clean();
}

#[test]
fn disconnect_is_idempotent_and_works_without_a_record() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    let c = connector(&sim, false);
    let ci = single("127.0.0.1:3260", 1, "vol-1");
    let _rec = c.connect_volume(&ci).unwrap();
    c.disconnect_volume(&ci, None, DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
    c.disconnect_volume(&ci, None, DisconnectOptions::default())
        .unwrap();
    c.disconnect_volume(
        &ci,
        Some(&_rec),
        DisconnectOptions {
            force: true,
            ignore_errors: true,
        },
    )
    .unwrap();
    sim.assert_clean();
}

#[test]
fn disconnect_leaves_a_device_that_shows_another_volume() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    let c = connector(&sim, false);
    let ci = single("127.0.0.1:3260", 1, "vol-1");
    let mut rec = c.connect_volume(&ci).unwrap();
    rec.scsi_wwn = Some("3600000000000000000000000000000ff".into());
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert_eq!(
        sim.fake.devices().len(),
        1,
        "a device with another WWID must stay"
    );
    assert_eq!(sim.session_count(), 1);
}

#[test]
fn ignore_errors_alone_stops_at_the_first_failure() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    let c = connector(&sim, false);
    let ci = single("127.0.0.1:3260", 1, "vol-1");
    let rec = c.connect_volume(&ci).unwrap();
    sim.fake.fail_flush("/dev/sda", nix::libc::EIO);
    let e = c
        .disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert_eq!(
        sim.fake.devices().len(),
        1,
        "a failed flush stops a plain disconnect"
    );

    // os-brick's ignore_errors alone does not carry on: the first failure still ends it.
    let e = c
        .disconnect_volume(
            &ci,
            Some(&rec),
            DisconnectOptions {
                force: false,
                ignore_errors: true,
            },
        )
        .unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert_eq!(sim.fake.devices().len(), 1);
    // The session is kept: its LUN is still there.
    assert_eq!(sim.session_count(), 1);
    // force: everything is removed, and the flush failure is raised at the end.
    let e = c
        .disconnect_volume(
            &ci,
            Some(&rec),
            DisconnectOptions {
                force: true,
                ignore_errors: false,
            },
        )
        .unwrap_err();
    match e {
        Error::DisconnectIncomplete { failures } => {
            assert_eq!(failures.len(), 1, "{failures:?}");
            assert!(
                failures[0].chain().contains("Input/output error"),
                "{failures:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    sim.assert_clean();
}

#[test]
fn extend_single_path() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    let c = connector(&sim, false);
    let ci = single("127.0.0.1:3260", 1, "vol-1");
    assert!(matches!(
        c.extend_volume(&ci),
        Err(Error::VolumeDeviceNotFound { .. })
    ));
    let rec = c.connect_volume(&ci).unwrap();
    sim.resize(WWID_1, 3 * MIB);
    assert_eq!(c.extend_volume(&ci).unwrap(), 3 * MIB);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
}

#[test]
fn concurrent_attaches_of_different_volumes() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB), (2, WWID_2, MIB)]);
    let c = connector(&sim, false);
    let cis = [
        single("127.0.0.1:3260", 1, "vol-1"),
        single("127.0.0.1:3260", 2, "vol-2"),
    ];
    let recs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = cis
            .iter()
            .map(|ci| {
                let c = &c;
                s.spawn(move || c.connect_volume(ci).unwrap())
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(sim.session_count(), 1);
    assert_ne!(recs[0].scsi_wwn, recs[1].scsi_wwn);
    std::thread::scope(|s| {
        for (ci, r) in cis.iter().zip(&recs) {
            let c = &c;
            s.spawn(move || {
                c.disconnect_volume(ci, Some(r), DisconnectOptions::default())
                    .unwrap()
            });
        }
    });
    sim.assert_clean();
}

#[test]
fn factory_gives_each_protocol_its_connector() {
    let sim = IscsiSim::new();
    let c = connector_for(Protocol::Iser, sim.options()).unwrap();
    assert_eq!(c.protocol(), Protocol::Iser);
    assert_eq!(
        c.get_search_path().unwrap().to_str(),
        Some("/dev/disk/by-path")
    );
    assert_eq!(
        connector_for(Protocol::Rbd, sim.options())
            .unwrap()
            .protocol(),
        Protocol::Rbd
    );
}

#[test]
fn iser_uses_the_iser_iface() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(0, WWID_1, MIB)]);
    let c = connector_for(Protocol::Iser, sim.options()).unwrap();
    let ci = single("127.0.0.1:3260", 0, "vol-1");
    let rec = c.connect_volume(&ci).unwrap();
    // The record is iscsiadm's for the built-in iSER iface (iface name and transport).
    assert_eq!(
        sim.iscsiadm_calls(),
        vec![format!(
            "iscsiadm -m node -T {IQN} -p 127.0.0.1:3260 --interface iser --login"
        )]
    );
    let text = std::fs::read_to_string(sim.node_record("127.0.0.1:3260").unwrap()).unwrap();
    let want = expected_record()
        .replace(
            "iface.iscsi_ifacename = default",
            "iface.iscsi_ifacename = iser",
        )
        .replace("iface.transport_name = tcp", "iface.transport_name = iser");
    assert_eq!(text, want);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

/// A LUN that cannot be scanned (its session stays in recovery, where the kernel skips
/// scans) is waited for until the operation deadline, not the longer scan limit.
#[test]
fn a_disconnect_logs_out_through_the_sessions_own_iface() {
    // Attached with `--iface iser`, detached by a connector built without it (iface
    // `default`): iscsiadm logs out only the sessions of the iface it is given, so the
    // logout must name the session's (sysfs `ifacename`), or the session stays.
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(0, WWID_1, MIB)]);
    let mut o = sim.options();
    o.iscsi.iface = Some("iser".into());
    let ci = single("127.0.0.1:3260", 0, "vol-1");
    let rec = connector_for(Protocol::Iscsi, o)
        .unwrap()
        .connect_volume(&ci)
        .unwrap();
    assert_eq!(sim.session_count(), 1);
    connector_for(Protocol::Iscsi, sim.options())
        .unwrap()
        .disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert!(
        sim.iscsiadm_calls().contains(&format!(
            "iscsiadm -m node -T {IQN} -p 127.0.0.1:3260 --interface iser --logout"
        )),
        "{:?}",
        sim.iscsiadm_calls()
    );
    sim.assert_clean();
}

#[test]
fn operation_deadline_bounds_a_missing_device() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    let first = single("127.0.0.1:3260", 1, "vol-1");
    let rec = connector(&sim, false).connect_volume(&first).unwrap();
    let sid = rec.paths[0].session.unwrap();
    sim.fake.set_iscsi_session_state(sid, "FAILED");
    let o = sim
        .options()
        .operation_timeout(Duration::from_millis(300))
        .scan_timeout(Duration::from_secs(30));
    let c = connector_for(Protocol::Iscsi, o).unwrap();
    let t0 = std::time::Instant::now();
    let e = c
        .connect_volume(&single("127.0.0.1:3260", 9, "v"))
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(e.chain().contains("timed out"), "{}", e.chain());
    sim.fake.set_iscsi_session_state(sid, "LOGGED_IN");
    connector(&sim, false)
        .disconnect_volume(&first, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn multipath_without_lists_discovers_the_other_portals() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    sim.add_target("127.0.0.2:3260", &[(1, WWID_1, MIB)]);
    let c = connector(&sim, true);
    let ci = single("127.0.0.1:3260", 1, "vol-mp");
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(
        sim.runner
            .count("-m discovery -t sendtargets -p 127.0.0.1:3260"),
        1
    );
    assert_eq!(rec.paths.len(), 2);
    assert!(rec.multipath_id.is_some());
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn a_failed_connect_deletes_the_node_records_its_discovery_made() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    sim.add_target("127.0.0.2:3260", &[(1, WWID_1, MIB)]);
    // A record someone made before the connect is not the connect's to delete.
    let pre = hostbrick::Command::new("iscsiadm").args([
        "-m",
        "node",
        "-T",
        IQN,
        "-p",
        "127.0.0.2:3260",
        "--interface",
        "default",
        "--op",
        "new",
    ]);
    assert!(hostbrick::CommandRunner::run(&*sim.runner, &pre)
        .unwrap()
        .status
        .success());
    let c = connector(&sim, false);
    // LUN 7 is not offered: login works, the LUN never appears.
    let ci = info(json!({
        "target_portal": "127.0.0.1:3260", "target_iqn": IQN, "target_lun": 7,
        "volume_id": "vol-d", "target_discovered": true
    }));
    let e = c.connect_volume(&ci).unwrap_err();
    assert!(matches!(e, Error::VolumeDeviceNotFound { .. }), "{e:?}");
    assert_eq!(sim.runner.count("-m discovery -t sendtargets"), 1);
    assert_eq!(sim.session_count(), 0);
    assert!(
        !sim.has_node("127.0.0.1:3260"),
        "the discovered record stayed"
    );
    assert!(
        sim.has_node("127.0.0.2:3260"),
        "a record made before was deleted"
    );
    assert_eq!(sim.node_count(), 1);
}

#[test]
fn a_discovered_record_the_volume_does_not_use_goes_after_connect() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    sim.add_target("127.0.0.2:3260", &[(1, WWID_1, MIB)]);
    let c = connector(&sim, false);
    let ci = info(json!({
        "target_portal": "127.0.0.1:3260", "target_iqn": IQN, "target_lun": 1,
        "volume_id": "vol-d", "target_discovered": true
    }));
    let rec = c.connect_volume(&ci).unwrap();
    assert!(sim.has_node("127.0.0.1:3260"));
    assert!(
        !sim.has_node("127.0.0.2:3260"),
        "an unused discovered record stayed"
    );
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn concurrent_connects_of_one_target_set_it_up_and_log_in_once() {
    let sim = IscsiSim::new();
    let luns: Vec<(u64, String)> = (0..8)
        .map(|l| (l, format!("naa.6001405{l:025x}")))
        .collect();
    let specs: Vec<(u64, &str, u64)> = luns.iter().map(|(l, w)| (*l, w.as_str(), MIB)).collect();
    sim.add_target("127.0.0.1:3260", &specs);
    let c = connector(&sim, false);
    let cis: Vec<_> = (0..8)
        .map(|l| single("127.0.0.1:3260", l, &format!("vol-{l}")))
        .collect();
    let start = std::sync::Barrier::new(cis.len());
    let recs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = cis
            .iter()
            .map(|ci| {
                let (c, start) = (&c, &start);
                s.spawn(move || {
                    start.wait();
                    c.connect_volume(ci).unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((l, w), r) in luns.iter().zip(&recs) {
        assert_eq!(r.scsi_wwn.as_deref(), Some(&*udev_wwid(w)), "LUN {l}");
    }
    // One connect sets the record up and logs in, the others use its session.
    assert_eq!(sim.runner.count("--op"), 0);
    assert_eq!(sim.runner.count("--login"), 1);
    assert_eq!(sim.node_count(), 1);
    assert_eq!(sim.session_count(), 1);
    std::thread::scope(|s| {
        for (ci, r) in cis.iter().zip(&recs) {
            let c = &c;
            s.spawn(move || {
                c.disconnect_volume(ci, Some(r), DisconnectOptions::default())
                    .unwrap()
            });
        }
    });
    sim.assert_clean();
}

#[test]
fn a_session_that_lost_its_node_record_gets_it_back() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB), (2, WWID_2, MIB)]);
    let c = connector(&sim, false);
    let a = single("127.0.0.1:3260", 1, "vol-1");
    let b = single("127.0.0.1:3260", 2, "vol-2");
    let ra = c.connect_volume(&a).unwrap();
    let del = hostbrick::Command::new("iscsiadm").args([
        "-m",
        "node",
        "-T",
        IQN,
        "-p",
        "127.0.0.1:3260",
        "--op",
        "delete",
    ]);
    assert!(hostbrick::CommandRunner::run(&*sim.runner, &del)
        .unwrap()
        .status
        .success());
    let rb = c.connect_volume(&b).unwrap();
    assert!(sim.has_node("127.0.0.1:3260"));
    for (ci, r) in [(&a, &ra), (&b, &rb)] {
        c.disconnect_volume(ci, Some(r), DisconnectOptions::default())
            .unwrap();
    }
    sim.assert_clean();
}

#[test]
fn a_map_briefly_in_use_is_flushed_again() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    sim.add_target("127.0.0.2:3260", &[(1, WWID_1, MIB)]);
    let c = connector(&sim, true);
    let ci = multi(&["127.0.0.1:3260", "127.0.0.2:3260"], 1, "vol-busy");
    let rec = c.connect_volume(&ci).unwrap();
    let name = rec.multipath_id.clone().unwrap();
    // udev holds the map open for the first two attempts.
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(2));
    let (s, b) = (sim.clone(), busy.clone());
    sim.runner.on("multipath", &["-f"], move |_| {
        if b.fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| n.checked_sub(1),
        )
        .is_ok()
        {
            let msg = format!("{} | {name}: map in use\n", "1234.5");
            return hostbrick::CommandOutput::exit(1, msg);
        }
        let root = s.fake.root().join(format!("dev/mapper/{name}"));
        let dm = std::fs::canonicalize(root).unwrap();
        s.fake
            .remove_multipath_map(&dm.file_name().unwrap().to_string_lossy());
        hostbrick::CommandOutput::ok("")
    });
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert_eq!(sim.runner.count("multipath -f"), 3);
    sim.assert_clean();
}

#[test]
fn bad_properties_are_typed_errors_naming_the_field() {
    let cases = [
        (json!({"target_iqn": IQN}), "data.target_portal"),
        (
            json!({"target_portal": "127.0.0.1:3260", "target_iqn": "not-an-iqn"}),
            "data.target_iqn",
        ),
        (
            json!({"target_portal": "127.0.0.1:3260:1", "target_iqn": IQN}),
            "data.target_portal",
        ),
        (
            json!({"target_portals": ["127.0.0.1:3260", "127.0.0.2:3260"], "target_iqns": [IQN, IQN], "target_luns": [1]}),
            "data.target_luns",
        ),
    ];
    for (data, field) in cases {
        let text = json!({"driver_volume_type": "iscsi", "data": data}).to_string();
        match hostbrick::ConnectionInfo::from_json(&text) {
            Err(Error::InvalidConnectionInfo { field: f, .. }) => assert_eq!(f, field, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    let e = hostbrick::ConnectionInfo::from_json(r#"{"driver_volume_type": "fc", "data": {}}"#)
        .unwrap_err();
    assert_eq!(e.kind(), "invalid_connector_protocol");
}

fn portals(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("127.0.0.{i}:3260")).collect()
}

#[test]
fn a_connection_info_with_too_many_targets_is_refused() {
    let sim = IscsiSim::new();
    let many = portals(65);
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    for p in &many {
        sim.add_target(p, &[(1, WWID_1, MIB)]);
    }
    let ci = multi(&many, 1, "vol-many");
    for multipath in [true, false] {
        let e = connector(&sim, multipath).connect_volume(&ci).unwrap_err();
        match &e {
            Error::TooManyTargets {
                origin,
                count,
                limit,
            } => assert_eq!(
                (origin.as_str(), *count, *limit),
                ("connection_info", 65, 64)
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(e.kind(), "too_many_targets");
    }
    assert_eq!(sim.runner.count("--login"), 0);
    sim.assert_clean();
    // 64 is within the default limit; a lower limit refuses it.
    let ci = multi(&many[..64], 1, "vol-many");
    let c = connector_for(
        Protocol::Iscsi,
        sim.options()
            .multipath(hostbrick::MultipathMode::Optional)
            .iscsi(sim.options().iscsi.max_targets(8)),
    )
    .unwrap();
    assert!(matches!(
        c.connect_volume(&ci),
        Err(Error::TooManyTargets {
            count: 64,
            limit: 8,
            ..
        })
    ));
    sim.assert_clean();
}

#[test]
fn a_discovery_reply_with_too_many_portals_is_refused() {
    let sim = IscsiSim::new();
    for p in portals(70) {
        sim.add_target(&p, &[(1, WWID_1, MIB)]);
    }
    let c = connector(&sim, true);
    let ci = single("127.0.0.1:3260", 1, "vol-many");
    let e = c.connect_volume(&ci).unwrap_err();
    match &e {
        Error::TooManyTargets {
            origin,
            count,
            limit,
        } => {
            assert_eq!(origin, "sendtargets discovery at 127.0.0.1:3260");
            assert_eq!((*count, *limit), (70, 64));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.runner.count("--login"), 0);
    // The node records the discovery made are gone again.
    sim.assert_clean();
}

#[test]
fn multipath_logs_in_to_a_bounded_number_of_paths_at_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    for (limit, expected_max) in [(None, 16), (Some(4), 4)] {
        let sim = IscsiSim::new();
        let many = portals(40);
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        for p in &many {
            sim.add_target(p, &[(1, WWID_1, MIB)]);
        }
        let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (n2, m2) = (now.clone(), max.clone());
        sim.runner.on_match(
            |c| c.program() == "iscsiadm" && c.has_arg("--login"),
            move |_| {
                let cur = n2.fetch_add(1, Ordering::SeqCst) + 1;
                m2.fetch_max(cur, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(30));
                n2.fetch_sub(1, Ordering::SeqCst);
                hostbrick::CommandOutput::exit(
                    8,
                    "iscsiadm: initiator reported error (8 - connection timed out)\n",
                )
            },
        );
        let mut o = sim.options().multipath(hostbrick::MultipathMode::Optional);
        if let Some(n) = limit {
            let iscsi = o.iscsi.clone().max_parallel_logins(n);
            o = o.iscsi(iscsi);
        }
        let c = connector_for(Protocol::Iscsi, o).unwrap();
        match c.connect_volume(&multi(&many, 1, "vol-40")).unwrap_err() {
            Error::VolumeDeviceNotFound { tried } => assert_eq!(tried.len(), 40),
            other => panic!("{other:?}"),
        }
        let max = max.load(Ordering::SeqCst);
        assert!(max <= expected_max, "{max} logins at once");
        assert!(max > 1, "logins no longer run in parallel");
        assert_eq!(sim.runner.count("--login"), 40);
        sim.assert_clean();
    }
}

/// A LUN the target does not have: the scans on the logged-in session make no device, so
/// the connect fails at once (not at the scan or operation deadline) and leaves nothing.
#[test]
fn a_missing_lun_fails_at_once_and_leaves_nothing() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    let o = sim
        .options()
        .operation_timeout(Duration::from_secs(30))
        .scan_timeout(Duration::from_secs(30));
    let c = connector_for(Protocol::Iscsi, o).unwrap();
    let started = std::time::Instant::now();
    let e = c
        .connect_volume(&single("127.0.0.1:3260", 7, "vol-x"))
        .unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(e.kind(), "volume_device_not_found");
    match e {
        Error::VolumeDeviceNotFound { tried } => {
            assert_eq!(tried.len(), 1, "{tried:?}");
            assert!(tried[0].target.contains("lun 7"), "{tried:?}");
            assert!(tried[0].reason.contains("has no LUN 7"), "{tried:?}");
            assert!(tried[0].reason.contains("made no SCSI device"), "{tried:?}");
        }
        other => panic!("{other:?}"),
    }
    sim.assert_clean();
}

/// A session in recovery when its LUN is to be scanned: the kernel would skip the scan
/// (and a LUN that exists would look missing), so the scan waits for the session to be
/// logged in again and finds the LUN then.
#[test]
fn a_lun_on_a_session_in_recovery_is_scanned_once_it_is_back() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(0, WWID_2, MIB), (1, WWID_1, MIB)]);
    let o = sim.options().scan_timeout(Duration::from_secs(5));
    let c = connector_for(Protocol::Iscsi, o).unwrap();
    let first = single("127.0.0.1:3260", 1, "vol-1");
    let rec1 = c.connect_volume(&first).unwrap();
    let sid = rec1.paths[0].session.unwrap();
    sim.fake.set_iscsi_session_state(sid, "FAILED");
    let fake = sim.fake.clone();
    let back = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        fake.set_iscsi_session_state(sid, "LOGGED_IN");
    });
    let started = std::time::Instant::now();
    let second = single("127.0.0.1:3260", 0, "vol-0");
    let rec0 = c.connect_volume(&second).unwrap();
    back.join().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(sim.session_count(), 1);
    c.disconnect_volume(&second, Some(&rec0), DisconnectOptions::default())
        .unwrap();
    c.disconnect_volume(&first, Some(&rec1), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}
