//! `get_connector_properties` on a fake host.

use std::fs;

use hostbrick::testing::sim::iscsi::IscsiSim;
use hostbrick::{get_connector_properties, CommandOutput};

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

    // os-brick reports what was asked for: whether multipathd runs is a connect's concern.
    sim.set_multipathd(false);
    let p = get_connector_properties(&sim.context(), "192.0.2.5", true, true, "compute-1").unwrap();
    assert!(p.multipath && p.enforce_multipath);
    let p = get_connector_properties(&sim.context(), "192.0.2.5", false, false, "h").unwrap();
    assert!(!p.multipath && !p.enforce_multipath);
    assert!(
        !sim.runner
            .calls()
            .iter()
            .any(|c| c.starts_with("multipathd")),
        "multipathd is not asked: {:?}",
        sim.runner.calls()
    );
}

/// The keys os-brick 7.1.1 returns on a Linux host with open-iscsi and nvme-cli, beside
/// the ones above: each with os-brick's meaning.
#[test]
fn os_brick_keys_and_meanings() {
    let sim = IscsiSim::new();
    let root = sim.fake.root();
    fs::create_dir_all(root.join("proc/self")).unwrap();
    fs::write(
        root.join("proc/self/mountinfo"),
        "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
         23 22 0:21 / /proc rw,nosuid - proc proc rw\n",
    )
    .unwrap();
    fs::create_dir_all(root.join("run/udev/data")).unwrap();
    fs::write(
        root.join("run/udev/data/b254:1"),
        "E:ID_FS_TYPE=ext4\nE:ID_FS_UUID=2f6b1c4e-8d0a-4c61-9d3e-5b7a9e0c1f22\n",
    )
    .unwrap();
    fs::create_dir_all(root.join("sys/class/dmi/id")).unwrap();
    fs::write(
        root.join("sys/class/dmi/id/product_uuid"),
        "4c4c4544-0042-3510-8052-b4c04f384d32\n",
    )
    .unwrap();
    let p = get_connector_properties(&sim.context(), "192.0.2.5", false, false, "h").unwrap();
    let v = serde_json::to_value(&p).unwrap();
    // `uuid` is the root filesystem's, `system uuid` the firmware's.
    assert_eq!(v["uuid"], "2f6b1c4e-8d0a-4c61-9d3e-5b7a9e0c1f22", "{v}");
    assert_eq!(
        v["system uuid"], "4c4c4544-0042-3510-8052-b4c04f384d32",
        "{v}"
    );
    assert_eq!(v["do_local_attach"], false);
    assert_eq!(v["found_dsc"], "");
    assert!(v["host_ips"].is_array(), "{v}");
    assert!(
        !v["host_ips"]
            .as_array()
            .unwrap()
            .iter()
            .any(|ip| ip == "127.0.0.1"),
        "loopback is left out: {v}"
    );
    for key in ["nqn", "nvme_hostid", "nvme_native_multipath"] {
        assert!(v.get(key).is_some(), "{key} missing from {v}");
    }
    // Everything was in files and sysfs: no process ran.
    assert!(sim.runner.calls().is_empty(), "{:?}", sim.runner.calls());

    // No system UUID in sysfs (the kernel leaves a placeholder out): dmidecode's answer,
    // read from the SMBIOS tables the kernel exports, as dmidecode reads them (QEMU's
    // all-zero UUID) ...
    fs::remove_file(root.join("sys/class/dmi/id/product_uuid")).unwrap();
    let tables = root.join("sys/firmware/dmi/tables");
    fs::create_dir_all(&tables).unwrap();
    fs::write(
        tables.join("smbios_entry_point"),
        b"_SM3_\x00\x18\x03\x00\x00",
    )
    .unwrap();
    let mut table = vec![1u8, 0x1b, 0x00, 0x01];
    table.resize(0x1b, 0);
    table.extend(b"QEMU\0\0\x7f\x04\x01\x01\0\0");
    fs::write(tables.join("DMI"), &table).unwrap();
    let p = get_connector_properties(&sim.context(), "192.0.2.5", false, false, "h").unwrap();
    assert_eq!(p.system_uuid.as_deref(), Some("Not Settable"));
    assert!(sim.runner.calls().is_empty(), "{:?}", sim.runner.calls());
    // ... and from dmidecode itself where the tables cannot be read.
    fs::remove_dir_all(&tables).unwrap();
    sim.runner.on("dmidecode", &["-s", "system-uuid"], |_| {
        CommandOutput::ok("Not Settable\n")
    });
    let p = get_connector_properties(&sim.context(), "192.0.2.5", false, false, "h").unwrap();
    assert_eq!(p.system_uuid.as_deref(), Some("Not Settable"));
    assert_eq!(sim.runner.count("dmidecode"), 1);

    // Without udev's record of the root device, blkid is asked.
    fs::remove_file(root.join("run/udev/data/b254:1")).unwrap();
    sim.runner.on("blkid", &["/dev/vda1"], |_| {
        CommandOutput::ok("0d9f3a52-1111-4222-8333-944455556666\n")
    });
    let p = get_connector_properties(&sim.context(), "192.0.2.5", false, false, "h").unwrap();
    assert_eq!(
        p.uuid.as_deref(),
        Some("0d9f3a52-1111-4222-8333-944455556666")
    );
    // A root without a device (a container's overlay) has no uuid.
    fs::write(
        root.join("proc/self/mountinfo"),
        "90 1 0:50 / / rw - overlay overlay rw,lowerdir=/l\n",
    )
    .unwrap();
    let p = get_connector_properties(&sim.context(), "192.0.2.5", false, false, "h").unwrap();
    assert_eq!(p.uuid, None);
}

#[test]
fn no_initiator_file_means_no_initiator_key() {
    let sim = IscsiSim::new();
    std::fs::remove_file(sim.fake.root().join("etc/iscsi/initiatorname.iscsi")).unwrap();
    let p = get_connector_properties(&sim.context(), "192.0.2.5", false, false, "h").unwrap();
    let v = serde_json::to_value(&p).unwrap();
    assert!(v.get("initiator").is_none());
}
