//! os-brick's shapes and meanings where callers rely on them: its device_info as a record,
//! its force / ignore_errors, and the connection_info keys every protocol shares.

use hostbrick::testing::sim::iscsi::*;
use hostbrick::testing::sim::MIB;
use hostbrick::{
    connector_for, CommandOutput, ConnectionInfo, Connector, DeviceRecord, DisconnectOptions,
    Error, Protocol,
};

fn connector(sim: &IscsiSim) -> Box<dyn Connector> {
    connector_for(Protocol::Iscsi, sim.options()).unwrap()
}

const FORCE: DisconnectOptions = DisconnectOptions {
    force: true,
    ignore_errors: false,
};
const FORCE_IGNORE: DisconnectOptions = DisconnectOptions {
    force: true,
    ignore_errors: true,
};

#[test]
fn os_brick_device_info_is_a_record_without_a_protocol() {
    let iscsi = DeviceRecord::from_json(
        r#"{"type": "block", "scsi_wwn": "36001405aa", "multipath_id": "36001405aa",
            "path": "/dev/dm-0"}"#,
    )
    .unwrap();
    assert_eq!(iscsi.protocol, None);
    assert_eq!(iscsi.path.to_str(), Some("/dev/dm-0"));
    assert_eq!(iscsi.multipath_id.as_deref(), Some("36001405aa"));
    assert!(iscsi.paths.is_empty());
    // Written back, it stays os-brick's shape: no protocol key appears.
    let v: serde_json::Value = serde_json::from_str(&iscsi.to_json().unwrap()).unwrap();
    assert!(v.get("protocol").is_none(), "{v}");
    let nvme = DeviceRecord::from_json(r#"{"type": "block", "path": "/dev/nvme0n1"}"#).unwrap();
    assert_eq!(nvme.protocol, None);
    assert!(nvme.nvme_paths.is_empty());
    // A path is still required: without one nothing says what was attached.
    assert!(DeviceRecord::from_json(r#"{"type": "block"}"#).is_err());
}

#[test]
fn an_os_brick_record_detaches_through_the_connection_infos_protocol() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    let c = connector(&sim);
    let ci = single("127.0.0.1:3260", 1, "vol-1");
    let ours = c.connect_volume(&ci).unwrap();
    let theirs = DeviceRecord::from_json(
        &serde_json::json!({
            "type": "block",
            "path": ours.path,
            "scsi_wwn": ours.scsi_wwn,
        })
        .to_string(),
    )
    .unwrap();
    let done = c
        .disconnect_volume(&ci, Some(&theirs), DisconnectOptions::default())
        .unwrap();
    assert!(done.is_clean());
    sim.assert_clean();

    // A record of another protocol is still refused.
    let mut rbd = theirs.clone();
    rbd.protocol = Some(Protocol::Rbd);
    let e = c
        .disconnect_volume(&ci, Some(&rbd), DisconnectOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), "invalid_device_record", "{e}");
}

/// A target that will not log out: the one step force carries on past.
fn failing_logout(sim: &IscsiSim) {
    sim.runner.on("iscsiadm", &["-m", "node"], |c| {
        if c.to_string().contains("--logout") {
            CommandOutput::exit(8, "iscsiadm: connection to the target timed out\n")
        } else {
            CommandOutput::ok("")
        }
    });
}

#[test]
fn force_carries_on_and_raises_ignore_errors_reports() {
    // force: the devices go, the logout failure is raised at the end.
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    let c = connector(&sim);
    let ci = single("127.0.0.1:3260", 1, "vol-1");
    let rec = c.connect_volume(&ci).unwrap();
    failing_logout(&sim);
    match c.disconnect_volume(&ci, Some(&rec), FORCE).unwrap_err() {
        Error::DisconnectIncomplete { failures } => {
            assert_eq!(failures.len(), 1, "{failures:?}");
            assert_eq!(failures[0].kind(), "command_failed");
        }
        other => panic!("{other:?}"),
    }
    assert!(sim.fake.devices().is_empty(), "force removed the device");

    // force + ignore_errors: the same, but the call succeeds and tells what failed.
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    let c = connector(&sim);
    let rec = c.connect_volume(&ci).unwrap();
    failing_logout(&sim);
    let done = c.disconnect_volume(&ci, Some(&rec), FORCE_IGNORE).unwrap();
    assert_eq!(done.failures.len(), 1, "{:?}", done.failures);
    assert!(!done.is_clean());
    assert!(sim.fake.devices().is_empty());
    assert_eq!(
        done.into_result().unwrap_err().kind(),
        "disconnect_incomplete"
    );
}

#[test]
fn volume_id_may_be_any_json_scalar() {
    for (id, want) in [
        (serde_json::json!(42), "42"),
        (serde_json::json!(4.5), "4.5"),
        (serde_json::json!(true), "True"),
        (serde_json::json!("vol-1"), "vol-1"),
    ] {
        let ci = ConnectionInfo::from_value(&serde_json::json!({
            "driver_volume_type": "iscsi",
            "data": {
                "target_portal": "127.0.0.1:3260",
                "target_iqn": IQN,
                "target_lun": 1,
                "volume_id": id,
                "some_key_os_brick_ignores": {"nested": [1, 2]},
            }
        }))
        .unwrap();
        assert_eq!(ci.volume_id(), Some(want), "{id}");
    }
    let ci = ConnectionInfo::from_value(&serde_json::json!({
        "driver_volume_type": "iscsi",
        "data": {"target_portal": "127.0.0.1:3260", "target_iqn": IQN, "target_lun": 1,
                 "volume_id": null}
    }))
    .unwrap();
    assert_eq!(ci.volume_id(), None);
    // Not a scalar: refused, as no volume id can be made of it.
    let e = ConnectionInfo::from_value(&serde_json::json!({
        "driver_volume_type": "iscsi",
        "data": {"target_portal": "127.0.0.1:3260", "target_iqn": IQN, "target_lun": 1,
                 "volume_id": {"a": 1}}
    }))
    .unwrap_err();
    assert_eq!(e.kind(), "invalid_connection_info", "{e}");
}

#[test]
fn the_encrypted_flag_is_carried_for_every_protocol() {
    for (kind, data) in [
        (
            "iscsi",
            serde_json::json!({"target_portal": "127.0.0.1:3260", "target_iqn": IQN,
                               "target_lun": 1}),
        ),
        (
            "nvmeof",
            serde_json::json!({"target_nqn": "nqn.2014-08.org.example:s1",
                               "portals": [["127.0.0.1", "4420", "tcp"]]}),
        ),
        (
            "rbd",
            serde_json::json!({"name": "volumes/v1", "hosts": ["127.0.0.1"],
                               "ports": ["6789"]}),
        ),
        ("local", serde_json::json!({"device_path": "/dev/loop0"})),
    ] {
        let mut d = data.clone();
        d["encrypted"] = serde_json::json!(true);
        let ci =
            ConnectionInfo::from_value(&serde_json::json!({"driver_volume_type": kind, "data": d}))
                .unwrap();
        assert!(ci.encrypted(), "{kind}");
        let ci = ConnectionInfo::from_value(
            &serde_json::json!({"driver_volume_type": kind, "data": data}),
        )
        .unwrap();
        assert!(!ci.encrypted(), "{kind}");
    }
}
