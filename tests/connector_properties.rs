//! `get_connector_properties` on a fake host.

use hostbrick::testing::sim::iscsi::IscsiSim;
use hostbrick::{get_connector_properties, Error};

#[test]
fn cinder_keys_and_multipath_state() {
    let sim = IscsiSim::new();
    let p =
        get_connector_properties(&sim.context(), "192.0.2.5", true, false, "compute-1").unwrap();
    let v = serde_json::to_value(&p).unwrap();
    for key in [
        "platform",
        "os_type",
        "ip",
        "host",
        "multipath",
        "enforce_multipath",
        "initiator",
    ] {
        assert!(v.get(key).is_some(), "{key} missing from {v}");
    }
    assert_eq!(v["os_type"], "linux");
    assert_eq!(v["ip"], "192.0.2.5");
    assert_eq!(v["host"], "compute-1");
    assert_eq!(v["multipath"], true);
    assert_eq!(v["initiator"], "iqn.1993-08.org.debian:01:testhost");

    sim.set_multipathd(false);
    let p =
        get_connector_properties(&sim.context(), "192.0.2.5", true, false, "compute-1").unwrap();
    assert!(!p.multipath);
    let e =
        get_connector_properties(&sim.context(), "192.0.2.5", true, true, "compute-1").unwrap_err();
    assert!(matches!(e, Error::MultipathdNotRunning));
    // Not asked for: not checked, not reported.
    let p = get_connector_properties(&sim.context(), "192.0.2.5", false, false, "h").unwrap();
    assert!(!p.multipath);
}

#[test]
fn no_initiator_file_means_no_initiator_key() {
    let sim = IscsiSim::new();
    std::fs::remove_file(sim.fake.root().join("etc/iscsi/initiatorname.iscsi")).unwrap();
    let p = get_connector_properties(&sim.context(), "192.0.2.5", false, false, "h").unwrap();
    let v = serde_json::to_value(&p).unwrap();
    assert!(v.get("initiator").is_none());
}
