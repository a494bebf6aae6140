//! os-brick compatibility of the iSCSI connector on a fake host tree with a simulated
//! iscsiadm, multipath and kernel: the connection_info shapes os-brick accepts, sendtargets
//! discovery on arrays with a target name per portal, `addressing_mode`,
//! `enforce_multipath`, and detaching from os-brick's own device_info.

use hostbrick::testing::sim::iscsi::*;
use hostbrick::testing::sim::MIB;
use hostbrick::{
    connector_for, Connector, DeviceRecord, DisconnectOptions, Error, MultipathMode, Protocol,
};
use serde_json::json;

/// The target names of an array with one per portal.
const P1: &str = "iqn.2003-01.org.linux-iscsi.vm:p1";
const P2: &str = "iqn.2003-01.org.linux-iscsi.vm:p2";
const P3: &str = "iqn.2003-01.org.linux-iscsi.vm:p3";

fn udev_wwid(sysfs: &str) -> String {
    format!("3{}", &sysfs[4..])
}

fn connector(sim: &IscsiSim, mode: MultipathMode) -> Box<dyn Connector> {
    connector_for(Protocol::Iscsi, sim.options().multipath(mode)).unwrap()
}

fn path_iqns(rec: &DeviceRecord) -> Vec<String> {
    let mut v: Vec<String> = rec.paths.iter().map(|p| p.iqn.to_string()).collect();
    v.sort();
    v
}

/// os-brick's `_get_luns`: target lists with `target_lun` and no `target_luns`.
#[test]
fn target_lists_with_one_target_lun_attach_every_portal() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(2, WWID_1, MIB)]);
    sim.add_target("127.0.0.2:3260", &[(2, WWID_1, MIB)]);
    let c = connector(&sim, MultipathMode::Optional);
    let ci = info(json!({
        "target_portal": "127.0.0.1:3260", "target_iqn": IQN, "target_lun": 2,
        "target_portals": ["127.0.0.1:3260", "127.0.0.2:3260"], "target_iqns": [IQN, IQN],
        "volume_id": "vol-l"
    }));
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(rec.paths.len(), 2);
    assert!(rec.paths.iter().all(|p| p.lun == 2), "{rec:?}");
    assert!(rec.multipath_id.is_some());
    // The lists are the paths: no discovery.
    assert_eq!(sim.runner.count("sendtargets"), 0);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

/// os-brick's `_get_ips_iqns_luns`: an array answering sendtargets with a different
/// target name per portal gives a path on each.
#[test]
fn discovery_keeps_the_targets_of_an_array_with_a_name_per_portal() {
    let sim = IscsiSim::new();
    sim.add_target_named(P1, "127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    sim.add_target_named(P2, "127.0.0.2:3260", &[(1, WWID_1, MIB)]);
    // A third target of the array whose LUN 1 is another volume: its path is undone.
    sim.add_target_named(P3, "127.0.0.3:3260", &[(1, WWID_2, MIB)]);
    let c = connector(&sim, MultipathMode::Optional);
    let ci = info(json!({
        "target_portal": "127.0.0.1:3260", "target_iqn": P1, "target_lun": 1,
        "volume_id": "vol-n"
    }));
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(
        sim.runner
            .count("-m discovery -t sendtargets -p 127.0.0.1:3260"),
        1
    );
    assert_eq!(path_iqns(&rec), vec![P1.to_string(), P2.to_string()]);
    assert_eq!(rec.scsi_wwn.as_deref(), Some(udev_wwid(WWID_1).as_str()));
    assert_eq!(sim.maps().len(), 1);
    assert_eq!(
        sim.sessions(),
        vec![
            (P1.to_string(), "127.0.0.1:3260".to_string()),
            (P2.to_string(), "127.0.0.2:3260".to_string())
        ]
    );
    assert!(
        !sim.has_node_of(P3, "127.0.0.3:3260"),
        "an unused record stayed"
    );
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

/// A recorded path of another target name counts only when the host shows it with the
/// WWID of the connection_info's target: one showing another volume is a mismatch, and
/// nothing is touched.
#[test]
fn a_recorded_discovered_path_showing_another_volume_is_refused() {
    let sim = IscsiSim::new();
    sim.add_target_named(P1, "127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    sim.add_target_named(P2, "127.0.0.2:3260", &[(1, WWID_1, MIB)]);
    let c = connector(&sim, MultipathMode::Optional);
    let ci = info(json!({
        "target_portal": "127.0.0.1:3260", "target_iqn": P1, "target_lun": 1,
        "volume_id": "vol-n"
    }));
    let mut rec = c.connect_volume(&ci).unwrap();
    // Another volume's LUN 1 on a third target, attached on its own.
    sim.add_target_named(P3, "127.0.0.3:3260", &[(1, WWID_2, MIB)]);
    let other = info(json!({
        "target_portal": "127.0.0.3:3260", "target_iqn": P3, "target_lun": 1,
        "volume_id": "vol-3"
    }));
    let off = connector(&sim, MultipathMode::Off);
    let other_rec = off.connect_volume(&other).unwrap();
    let mut forged = other_rec.paths[0].clone();
    forged.lun = 1;
    rec.paths.push(forged);
    let before = sim.fake.devices().len();
    let e = c
        .disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap_err();
    assert!(
        matches!(&e, Error::RecordMismatch { reason, .. } if reason.contains("came from discovery")),
        "{e:?}"
    );
    assert_eq!(sim.fake.devices().len(), before);
    assert_eq!(sim.session_count(), 3);
    rec.paths.pop();
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    off.disconnect_volume(&other, Some(&other_rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

/// A path only discovery offered is not taken for the volume unless a target of the
/// connection_info shows the same WWID.
#[test]
fn discovered_paths_need_a_path_of_the_connection_info_target() {
    let sim = IscsiSim::new();
    // The connection_info's own target has no LUN 1 (it never appears after the scan).
    sim.add_target_named(P1, "127.0.0.1:3260", &[]);
    sim.add_target_named(P2, "127.0.0.2:3260", &[(1, WWID_1, MIB)]);
    let c = connector(&sim, MultipathMode::Optional);
    let ci = info(json!({
        "target_portal": "127.0.0.1:3260", "target_iqn": P1, "target_lun": 1,
        "volume_id": "vol-u"
    }));
    let e = c.connect_volume(&ci).unwrap_err();
    match &e {
        Error::VolumeDeviceNotFound { tried } => {
            assert_eq!(tried.len(), 2, "{e:?}");
            assert!(
                tried
                    .iter()
                    .any(|t| t.reason.contains("came only from discovery")),
                "{e:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    sim.assert_clean();
}

/// os-brick's `lun_for_addressing`: LUN 256 under SAM2 is the kernel's LUN 16640, which
/// the scan, the sysfs lookups and the by-path name use.
#[test]
fn addressing_mode_sam2_scans_the_kernel_lun() {
    let sim = IscsiSim::new();
    sim.add_target(
        "127.0.0.1:3260",
        &[(16640, WWID_1, MIB), (256, WWID_2, MIB)],
    );
    let c = connector(&sim, MultipathMode::Off);
    let ci = info(json!({
        "target_portal": "127.0.0.1:3260", "target_iqn": IQN, "target_lun": 256,
        "addressing_mode": "SAM2", "volume_id": "vol-a"
    }));
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(rec.paths[0].lun, 16640);
    assert_eq!(rec.scsi_wwn.as_deref(), Some(udev_wwid(WWID_1).as_str()));
    assert_eq!(
        rec.path.to_string_lossy(),
        format!("/dev/disk/by-path/ip-127.0.0.1:3260-iscsi-{IQN}-lun-0x4100000000000000")
    );
    assert_eq!(
        sim.fake.devices().len(),
        1,
        "only the kernel LUN was scanned"
    );
    c.disconnect_volume(&ci, None, DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();

    let bad = parse_info(json!({
        "target_portal": "127.0.0.1:3260", "target_iqn": IQN, "target_lun": 256,
        "addressing_mode": "SAM3"
    }));
    assert!(
        matches!(bad, Err(Error::InvalidConnectionInfo { ref field, .. }) if field == "data.addressing_mode"),
        "{bad:?}"
    );
}

fn parse_info(data: serde_json::Value) -> hostbrick::Result<hostbrick::ConnectionInfo> {
    hostbrick::ConnectionInfo::from_value(&json!({"driver_volume_type": "iscsi", "data": data}))
}

/// os-brick's `check_multipath`: `enforce_multipath` with multipath requested and no
/// multipathd fails before any login; without multipath it changes nothing.
#[test]
fn enforce_multipath_in_connection_info_needs_multipathd() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    sim.add_target("127.0.0.2:3260", &[(1, WWID_1, MIB)]);
    sim.set_multipathd(false);
    let data = |enforce: bool| {
        json!({
            "target_portal": "127.0.0.1:3260", "target_iqn": IQN, "target_lun": 1,
            "target_portals": ["127.0.0.1:3260", "127.0.0.2:3260"], "target_iqns": [IQN, IQN],
            "target_luns": [1, 1], "volume_id": "vol-e", "enforce_multipath": enforce
        })
    };
    let optional = connector(&sim, MultipathMode::Optional);
    let e = optional.connect_volume(&info(data(true))).unwrap_err();
    assert!(matches!(e, Error::MultipathdNotRunning), "{e:?}");
    assert_eq!(sim.runner.count("--login"), 0);
    sim.assert_clean();

    // Not enforced: the single-path fallback, as before.
    let ci = info(data(false));
    let rec = optional.connect_volume(&ci).unwrap();
    assert!(rec.multipath_id.is_none());
    optional
        .disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();

    // Multipath off: os-brick does not check, neither does hostbrick.
    let off = connector(&sim, MultipathMode::Off);
    let ci = info(data(true));
    let rec = off.connect_volume(&ci).unwrap();
    assert_eq!(rec.paths.len(), 1);
    off.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

/// os-brick's device_info: `type`, `path`, `scsi_wwn`, `multipath_id`, nothing else.
fn os_brick_record(path: &str, wwid: &str, multipath: bool) -> DeviceRecord {
    let mut r = DeviceRecord::block(Protocol::Iscsi, path, None);
    r.scsi_wwn = Some(udev_wwid(wwid));
    if multipath {
        r.multipath_id = Some(udev_wwid(wwid));
    }
    r
}

/// os-brick's `_get_connection_devices` with `discover=False`: a disconnect without the
/// paths finds the ones discovery made in the discovery database, and removes their
/// devices, sessions and node records.
#[test]
fn an_os_brick_record_detaches_a_multipath_volume_discovery_found() {
    let sim = IscsiSim::new();
    sim.add_target_named(P1, "127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    sim.add_target_named(P2, "127.0.0.2:3260", &[(1, WWID_1, MIB), (2, WWID_2, MIB)]);
    let c = connector(&sim, MultipathMode::Optional);
    let ci = info(json!({
        "target_portal": "127.0.0.1:3260", "target_iqn": P1, "target_lun": 1,
        "volume_id": "vol-o"
    }));
    let ours = c.connect_volume(&ci).unwrap();
    assert_eq!(ours.paths.len(), 2);
    let dm = ours.path.to_string_lossy().into_owned();
    assert!(dm.starts_with("/dev/dm-"), "{dm}");

    // Another volume on the discovered target: its LUN 2 stays, and so does the session.
    let other = info(json!({
        "target_portal": "127.0.0.2:3260", "target_iqn": P2, "target_lun": 2,
        "target_portals": ["127.0.0.2:3260"], "target_iqns": [P2], "volume_id": "vol-2"
    }));
    let other_rec = connector(&sim, MultipathMode::Off)
        .connect_volume(&other)
        .unwrap();

    // A record whose WWID the host contradicts is refused, nothing touched.
    let mut bad = os_brick_record(&dm, WWID_2, false);
    bad.multipath_id = Some(udev_wwid(WWID_1));
    let e = c
        .disconnect_volume(&ci, Some(&bad), DisconnectOptions::default())
        .unwrap_err();
    assert!(matches!(e, Error::RecordMismatch { .. }), "{e:?}");
    assert_eq!(sim.fake.devices().len(), 3);
    assert_eq!(sim.maps().len(), 1);

    let rec = os_brick_record(&dm, WWID_1, true);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert_eq!(sim.runner.count("-m discoverydb -o show -P 1"), 2);
    assert!(sim.maps().is_empty());
    assert_eq!(
        sim.fake.devices().len(),
        1,
        "the other volume's LUN must stay"
    );
    assert_eq!(
        sim.sessions(),
        vec![(P2.to_string(), "127.0.0.2:3260".to_string())]
    );
    assert!(!sim.has_node_of(P1, "127.0.0.1:3260"));
    connector(&sim, MultipathMode::Off)
        .check_valid_device(&other_rec.path)
        .unwrap();
    connector(&sim, MultipathMode::Off)
        .disconnect_volume(&other, Some(&other_rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

/// os-brick's single-path device_info (a by-path link) with no `multipath_id`.
#[test]
fn an_os_brick_record_detaches_a_single_path_volume() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(0, WWID_1, MIB)]);
    let c = connector(&sim, MultipathMode::Off);
    let ci = single("127.0.0.1:3260", 0, "vol-s");
    let attached = c.connect_volume(&ci).unwrap();
    let by_path = format!("/dev/disk/by-path/ip-127.0.0.1:3260-iscsi-{IQN}-lun-0");
    assert_eq!(attached.path.to_string_lossy(), by_path);
    let rec = DeviceRecord::from_json(&format!(
        r#"{{"type":"block","path":"{by_path}","scsi_wwn":"{}","protocol":"iscsi"}}"#,
        udev_wwid(WWID_1)
    ))
    .unwrap();
    assert!(rec.paths.is_empty());
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

/// Without a device record the discovery database is read too; a discovered target whose
/// LUN shows another WWID than the connection_info's target is left alone.
#[test]
fn a_disconnect_without_a_record_takes_only_discovered_paths_of_the_same_volume() {
    let sim = IscsiSim::new();
    sim.add_target_named(P1, "127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    sim.add_target_named(P2, "127.0.0.2:3260", &[(1, WWID_1, MIB)]);
    let c = connector(&sim, MultipathMode::Optional);
    let ci = info(json!({
        "target_portal": "127.0.0.1:3260", "target_iqn": P1, "target_lun": 1,
        "volume_id": "vol-r"
    }));
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(rec.paths.len(), 2);
    c.disconnect_volume(&ci, None, DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

/// A node record and session os-brick made (`iscsiadm --op new` of its own, then its
/// login): hostbrick's disconnect from os-brick's device_info logs out and removes the
/// record file itself; its only iscsiadm is the logout.
#[test]
fn an_os_brick_made_node_record_is_removed_without_iscsiadm() {
    use hostbrick::{Command, CommandRunner};
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(0, WWID_1, MIB)]);
    let iscsiadm = |args: &[&str]| {
        let out = sim
            .runner
            .run(&Command::new("iscsiadm").args(args.iter().copied()))
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    let node = ["-m", "node", "-T", IQN, "-p", "127.0.0.1:3260"];
    iscsiadm(&[&node[..], &["--interface", "default", "--op", "new"]].concat());
    iscsiadm(
        &[
            &node[..],
            &["--op", "update", "-n", "node.startup", "-v", "automatic"],
        ]
        .concat(),
    );
    // The simulated host's iscsid.conf says `node.session.scan = auto`: the LUN appears at
    // login, as after os-brick's connect.
    iscsiadm(&[&node[..], &["--interface", "default", "--login"]].concat());
    assert_eq!(sim.fake.devices().len(), 1);
    let by_path = format!("/dev/disk/by-path/ip-127.0.0.1:3260-iscsi-{IQN}-lun-0");
    let rec = DeviceRecord::from_json(&format!(
        r#"{{"type":"block","path":"{by_path}","scsi_wwn":"{}"}}"#,
        udev_wwid(WWID_1)
    ))
    .unwrap();
    sim.runner.clear_calls();
    let c = connector(&sim, MultipathMode::Off);
    c.disconnect_volume(
        &single("127.0.0.1:3260", 0, "vol-o"),
        Some(&rec),
        DisconnectOptions::default(),
    )
    .unwrap();
    let calls: Vec<String> = sim
        .runner
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("iscsiadm"))
        .collect();
    assert_eq!(
        calls,
        vec![format!(
            "iscsiadm -m node -T {IQN} -p 127.0.0.1:3260 --interface default --logout"
        )]
    );
    sim.assert_clean();
}
