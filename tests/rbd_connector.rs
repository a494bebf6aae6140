//! The RBD connector end to end on a fake host tree with a simulated rbd and rbd-nbd.

use hostbrick::rbd::RbdMapper;
use hostbrick::testing::sim::rbd::*;
use hostbrick::testing::sim::MIB;
use hostbrick::{connector_for, Connector, DeviceKind, DisconnectOptions, Error, Protocol};

fn connector(sim: &RbdSim, mapper: RbdMapper, local: bool) -> Box<dyn Connector> {
    let mut o = sim.options();
    o.rbd.mapper = mapper;
    o.rbd.attach = if local {
        hostbrick::rbd::RbdAttach::Local
    } else {
        hostbrick::rbd::RbdAttach::Network
    };
    connector_for(Protocol::Rbd, o).unwrap()
}

#[test]
fn krbd_map_is_idempotent_and_keyrings_stay_private() {
    let sim = RbdSim::new();
    sim.add_image("volumes/vol1", 64 * MIB);
    let c = connector(&sim, RbdMapper::Krbd, true);
    let ci = rbd_info("volumes/vol1", KEY);
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(rec.kind, DeviceKind::Block);
    assert_eq!(rec.path.to_str(), Some("/dev/rbd0"));
    assert_eq!(rec.rbd.as_ref().unwrap().mapper, RbdMapper::Krbd);
    let again = c.connect_volume(&ci).unwrap();
    assert_eq!(again.path, rec.path);
    assert_eq!(sim.mapped().len(), 1, "mapped once");
    for (path, mode, ok) in sim.keyrings() {
        assert!(ok, "the keyring held the key");
        assert_eq!(mode, 0o600, "{path}");
        assert!(
            !std::path::Path::new(&path).exists(),
            "{path} removed after use"
        );
    }
    assert!(
        sim.runner.calls().iter().all(|c| !c.contains(KEY)),
        "the key never reaches a command line"
    );
    assert!(!format!("{ci:?}").contains(KEY));
    assert_eq!(c.get_volume_paths(&ci).unwrap(), vec![rec.path.clone()]);
    c.check_valid_device(&rec.path).unwrap();

    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert!(sim.mapped().is_empty());
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    c.disconnect_volume(&ci, None, DisconnectOptions::default())
        .unwrap();
}

#[test]
fn rbd_nbd_and_namespaces() {
    let sim = RbdSim::new();
    sim.add_image("volumes/ns1/vol2", 32 * MIB);
    let c = connector(&sim, RbdMapper::Nbd, true);
    let ci = rbd_info("volumes/ns1/vol2", KEY);
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(rec.path.to_str(), Some("/dev/nbd0"));
    assert_eq!(sim.runner.count("rbd-nbd map volumes/ns1/vol2"), 1);
    // A disconnect without the record (after a restart, another configuration) still finds it.
    connector(&sim, RbdMapper::Krbd, true)
        .disconnect_volume(
            &ci,
            None,
            DisconnectOptions {
                force: true,
                ignore_errors: false,
            },
        )
        .unwrap();
    assert!(sim.mapped().is_empty());
}

#[test]
fn wrong_key_is_an_authentication_error_and_maps_nothing() {
    let sim = RbdSim::new();
    sim.add_image("volumes/vol1", MIB);
    for mapper in [RbdMapper::Krbd, RbdMapper::Nbd] {
        let c = connector(&sim, mapper, true);
        let e = c
            .connect_volume(&rbd_info(
                "volumes/vol1",
                "AQBwrongwrongwrongwrongwrongwrongwrong==",
            ))
            .unwrap_err();
        assert!(
            matches!(e, Error::AuthenticationFailed { .. }),
            "{mapper:?}: {e:?}"
        );
        assert!(!e.chain().contains("AQBwrong"));
        assert!(sim.mapped().is_empty());
    }
}

#[test]
fn non_local_attach_maps_nothing_and_describes_the_network_disk() {
    let sim = RbdSim::new();
    sim.add_image("volumes/vol1", MIB);
    let c = connector(&sim, RbdMapper::Krbd, false);
    let ci = rbd_info("volumes/vol1", KEY);
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(rec.kind, DeviceKind::Network);
    let v: serde_json::Value = serde_json::from_str(&rec.to_json().unwrap()).unwrap();
    assert_eq!(v["type"], "network");
    assert_eq!(v["network"]["protocol"], "rbd");
    assert_eq!(v["network"]["name"], "volumes/vol1");
    assert_eq!(v["network"]["hosts"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(v["network"]["auth_username"], "cinder");
    assert_eq!(
        v["network"]["secret_uuid"],
        "457eb676-33da-42ec-9a8c-9293d545c337"
    );
    assert!(!rec.to_json().unwrap().contains(KEY));
    assert!(
        sim.runner.calls().is_empty(),
        "nothing ran: {:?}",
        sim.runner.calls()
    );
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert_eq!(c.extend_volume(&ci).unwrap(), MIB);
}

#[test]
fn extend_waits_for_the_device_to_follow_the_image() {
    let sim = RbdSim::new();
    sim.add_image("volumes/vol1", MIB);
    let c = connector(&sim, RbdMapper::Krbd, true);
    let ci = rbd_info("volumes/vol1", KEY);
    let rec = c.connect_volume(&ci).unwrap();
    sim.resize("volumes/vol1", 8 * MIB);
    assert_eq!(c.extend_volume(&ci).unwrap(), 8 * MIB);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert!(matches!(
        c.extend_volume(&ci),
        Err(Error::VolumeDeviceNotFound { .. })
    ));
}

#[test]
fn an_image_name_that_leaves_dev_rbd_is_refused_and_nothing_runs() {
    // `/dev/rbd/<pool>/<image>` of `../sda` is the host's own disk: a connect that took the
    // name would find that "mapping" and hand it out.
    let sim = RbdSim::new();
    sim.add_image("volumes/vol1", MIB);
    let root = sim.fake.root().to_path_buf();
    std::fs::create_dir_all(root.join("dev/rbd/volumes")).unwrap();
    std::fs::write(root.join("dev/sda"), vec![0u8; 4096]).unwrap();
    for mapper in [RbdMapper::Krbd, RbdMapper::Nbd] {
        let c = connector(&sim, mapper, true);
        for name in ["../sda", "volumes/../sda", "volumes/--read-only", "-m/vol1"] {
            let doc = serde_json::json!({"driver_volume_type": "rbd", "data": {
                "name": name, "hosts": ["127.0.0.1"], "ports": ["6789"],
                "auth_enabled": true, "auth_username": "cinder",
                "keyring": format!("[client.cinder]\n\tkey = {KEY}\n"), "volume_id": "v1"
            }});
            let outcome =
                hostbrick::ConnectionInfo::from_value(&doc).and_then(|ci| c.connect_volume(&ci));
            match outcome {
                Err(Error::InvalidConnectionInfo { field, .. }) => {
                    assert_eq!(field, "data.name", "{name}")
                }
                other => panic!("{mapper:?} {name}: {other:?}"),
            }
        }
    }
    assert!(
        sim.runner.calls().is_empty(),
        "nothing ran: {:?}",
        sim.runner.calls()
    );
    assert!(sim.mapped().is_empty());
}

/// os-brick reads `do_local_attach` per call from the connection_info, and Cinder sends
/// `null` for a monitor without a port.
#[test]
fn per_call_do_local_attach_and_monitors_without_a_port() {
    let sim = RbdSim::new();
    sim.add_image("volumes/vol1", 64 * MIB);
    let info = |local: Option<bool>| {
        let mut data = serde_json::json!({
            "name": "volumes/vol1", "hosts": ["127.0.0.1", "::1"], "ports": [null, "3300"],
            "auth_enabled": true, "auth_username": "cinder",
            "keyring": format!("[client.cinder]\n\tkey = {KEY}\n"), "volume_id": "vol1",
        });
        if let Some(l) = local {
            data["do_local_attach"] = serde_json::json!(l);
        }
        hostbrick::ConnectionInfo::from_value(
            &serde_json::json!({"driver_volume_type": "rbd", "data": data}),
        )
        .unwrap()
    };
    // A network-attach connector, asked to map this once.
    let c = connector(&sim, RbdMapper::Krbd, false);
    let rec = c.connect_volume(&info(Some(true))).unwrap();
    assert_eq!(rec.kind, DeviceKind::Block);
    assert_eq!(sim.mapped().len(), 1);
    let map = sim
        .runner
        .calls()
        .into_iter()
        .find(|c| c.starts_with("rbd map"))
        .expect("rbd map ran");
    assert!(map.contains("127.0.0.1,[::1]:3300"), "{map}");
    c.disconnect_volume(&info(Some(true)), Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert!(sim.mapped().is_empty());

    // A mapping connector, told not to map: a network record, its port-less host kept.
    let c = connector(&sim, RbdMapper::Krbd, true);
    let rec = c.connect_volume(&info(Some(false))).unwrap();
    assert_eq!(rec.kind, DeviceKind::Network);
    assert!(sim.mapped().is_empty());
    let net = rec.network.as_ref().unwrap();
    assert_eq!(net.hosts, ["127.0.0.1", "::1"]);
    assert_eq!(net.ports, [None, Some("3300".to_string())]);
    let v: serde_json::Value = serde_json::from_str(&rec.to_json().unwrap()).unwrap();
    assert_eq!(v["network"]["ports"], serde_json::json!([null, "3300"]));
    // Without the key, the connector's default applies.
    let rec = c.connect_volume(&info(None)).unwrap();
    assert_eq!(rec.kind, DeviceKind::Block);
    c.disconnect_volume(&info(None), Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert!(sim.mapped().is_empty());
}
