//! A stale or forged device record, or a device something else uses, never makes a
//! disconnect touch what the volume does not own on the live host.

use std::fs;

use hostbrick::testing::sim::iscsi::*;
use hostbrick::testing::sim::MIB;
use hostbrick::testing::LunSpec;
use hostbrick::{connector_for, Connector, DisconnectOptions, Hctl, MultipathMode, Protocol};

fn connector(sim: &IscsiSim, multipath: bool) -> Box<dyn Connector> {
    let mut o = sim.options();
    if multipath {
        o = o.multipath(MultipathMode::Optional);
    }
    connector_for(Protocol::Iscsi, o).unwrap()
}

/// No device-changing command ran and nothing was flushed: no flush, no map removal, no
/// logout.
fn assert_nothing_destructive(sim: &IscsiSim) {
    assert_eq!(
        sim.fake.flushes(),
        Vec::<String>::new(),
        "a device was flushed"
    );
    let calls = sim.runner.calls();
    for c in &calls {
        let line = c.to_string();
        assert!(
            !line.contains("--logout")
                && !line.starts_with("multipath -f")
                && !line.contains("dmsetup remove")
                && !line.contains("--op delete"),
            "a destructive command ran: {line}"
        );
    }
}

#[test]
fn a_forged_record_naming_the_root_disk_is_refused() {
    let sim = IscsiSim::new();
    // The host's own disk on SCSI host 0, no iSCSI session behind it.
    let root_disk = sim.fake.add_scsi_disk(
        0,
        &LunSpec::new(0, 0, 0, "naa.600000000000000000000000000000aa", 8 * MIB),
    );
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    let c = connector(&sim, false);
    let ci = single("127.0.0.1:3260", 1, "vol-1");
    let mut rec = c.connect_volume(&ci).unwrap();
    // The record now names 0:0:0:0 and no WWID, as a forged or corrupt one might.
    rec.scsi_wwn = None;
    rec.paths[0].hctl = Hctl {
        host: 0,
        channel: 0,
        target: 0,
        lun: 0,
    };
    let e = c
        .disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), "record_mismatch", "{e}");
    assert!(sim.fake.devices().iter().any(|(_, n)| *n == root_disk));
    assert_eq!(
        sim.session_count(),
        1,
        "nothing of the volume was touched either"
    );
    assert_eq!(
        sim.fake.flushes(),
        Vec::<String>::new(),
        "a device was flushed"
    );
    // Without the record (or with the true one) the volume detaches.
    c.disconnect_volume(&ci, None, DisconnectOptions::default())
        .unwrap();
    assert_eq!(sim.session_count(), 0);
    assert_eq!(sim.node_count(), 0);
    assert_eq!(sim.fake.devices().len(), 1, "only the root disk is left");
    assert!(sim.fake.devices().iter().any(|(_, n)| *n == root_disk));
}

#[test]
fn a_stale_record_whose_address_is_now_another_lun_is_refused() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB), (2, WWID_2, MIB)]);
    let c = connector(&sim, false);
    let vol1 = single("127.0.0.1:3260", 1, "vol-1");
    let vol2 = single("127.0.0.1:3260", 2, "vol-2");
    let rec1 = c.connect_volume(&vol1).unwrap();
    let rec2 = c.connect_volume(&vol2).unwrap();
    // After a "reboot" the addresses moved: vol-1's record now names vol-2's LUN.
    let mut stale = rec1.clone();
    stale.paths[0].hctl = rec2.paths[0].hctl;
    stale.scsi_wwn = None;
    let e = c
        .disconnect_volume(&vol1, Some(&stale), DisconnectOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), "record_mismatch", "{e}");
    assert_eq!(sim.fake.devices().len(), 2, "both LUNs stay");
    assert_nothing_destructive(&sim);
    // The same stale record with ignore_errors and force still touches nothing.
    let e = c
        .disconnect_volume(
            &vol1,
            Some(&stale),
            DisconnectOptions {
                force: true,
                ignore_errors: true,
            },
        )
        .unwrap_err();
    assert_eq!(e.kind(), "record_mismatch", "{e}");
    assert_eq!(sim.fake.devices().len(), 2);
    c.disconnect_volume(&vol1, Some(&rec1), DisconnectOptions::default())
        .unwrap();
    c.disconnect_volume(&vol2, Some(&rec2), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn a_record_naming_another_volumes_multipath_map_is_refused() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    // Another volume's map, over a local disk.
    let other = sim.fake.add_scsi_disk(
        0,
        &LunSpec::new(0, 0, 0, "naa.600000000000000000000000000000bb", MIB),
    );
    let other_dm =
        sim.fake
            .add_multipath_map("othermap", "3600000000000000000000000000000bb", &[&other]);
    let c = connector(&sim, false);
    let ci = single("127.0.0.1:3260", 1, "vol-1");
    let mut rec = c.connect_volume(&ci).unwrap();
    rec.multipath_id = Some("othermap".into());
    let e = c
        .disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), "record_mismatch", "{e}");
    assert!(
        sim.maps().iter().any(|m| m == "othermap")
            || fs::metadata(sim.fake.root().join(format!("sys/block/{other_dm}"))).is_ok()
    );
    assert_nothing_destructive(&sim);
    // A pathless map of another WWID is refused too.
    sim.fake.remove_multipath_map(&other_dm);
    let lonely = sim
        .fake
        .add_multipath_map("lonely", "3600000000000000000000000000000cc", &[]);
    rec.multipath_id = Some("lonely".into());
    let e = c
        .disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), "record_mismatch", "{e}");
    assert!(sim.fake.root().join(format!("sys/block/{lonely}")).exists());
}

#[test]
fn a_mounted_or_held_device_is_neither_flushed_nor_removed() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    let c = connector(&sim, false);
    let ci = single("127.0.0.1:3260", 1, "vol-1");
    let rec = c.connect_volume(&ci).unwrap();
    let name = rec.paths[0]
        .device
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let devnum = fs::read_to_string(sim.fake.root().join(format!("sys/block/{name}/dev"))).unwrap();
    // A filesystem on it is mounted.
    fs::create_dir_all(sim.fake.root().join("proc/self")).unwrap();
    fs::write(
        sim.fake.root().join("proc/self/mountinfo"),
        format!("30 1 {} / /mnt rw - ext4 /dev/{name} rw\n", devnum.trim()),
    )
    .unwrap();
    let e = c
        .disconnect_volume(
            &ci,
            Some(&rec),
            DisconnectOptions {
                force: true,
                ignore_errors: true,
            },
        )
        .unwrap_err();
    assert_eq!(e.kind(), "device_in_use", "{e}");
    assert_eq!(sim.fake.devices().len(), 1);
    assert_nothing_destructive(&sim);
    // Unmounted, but LVM (a dm device that is not this volume's map) holds it.
    fs::write(sim.fake.root().join("proc/self/mountinfo"), "").unwrap();
    fs::create_dir_all(
        sim.fake
            .root()
            .join(format!("sys/block/{name}/holders/dm-7")),
    )
    .unwrap();
    let e = c
        .disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), "device_in_use", "{e}");
    assert!(e.to_string().contains("dm-7"), "{e}");
    assert_nothing_destructive(&sim);
    // Free again: it detaches.
    fs::remove_dir_all(
        sim.fake
            .root()
            .join(format!("sys/block/{name}/holders/dm-7")),
    )
    .unwrap();
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn the_volumes_own_multipath_map_is_not_a_foreign_holder() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, MIB)]);
    sim.add_target("127.0.0.2:3260", &[(1, WWID_1, MIB)]);
    let c = connector(&sim, true);
    let ci = multi(&["127.0.0.1:3260", "127.0.0.2:3260"], 1, "vol-1");
    let rec = c.connect_volume(&ci).unwrap();
    assert!(rec.multipath_id.is_some());
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn an_rbd_connect_reuses_only_what_the_kernel_lists_as_mapped() {
    use hostbrick::testing::sim::rbd::{rbd_info, RbdSim, KEY};
    let sim = RbdSim::new();
    sim.add_image("volumes/vol1", 64 * MIB);
    // The host's disk, and a /dev/rbd link planted to point at it (anyone who can write
    // /dev, or an image named `../sda`, could make one).
    let root = sim.fake.add_scsi_disk(
        0,
        &LunSpec::new(0, 0, 0, "naa.600000000000000000000000000000aa", MIB),
    );
    let link = sim.fake.root().join("dev/rbd/volumes/vol1");
    fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(format!("../../{root}"), &link).unwrap();
    let c = connector_for(Protocol::Rbd, sim.options()).unwrap();
    let ci = rbd_info("volumes/vol1", KEY);
    let rec = c.connect_volume(&ci).unwrap();
    assert_ne!(rec.path, std::path::PathBuf::from(format!("/dev/{root}")));
    assert!(
        rec.path.to_string_lossy().starts_with("/dev/rbd"),
        "{}",
        rec.path.display()
    );
    assert_eq!(
        sim.mapped().len(),
        1,
        "the image was mapped, not the planted link taken"
    );
    // A second connect finds the kernel's own mapping and reuses it.
    let again = c.connect_volume(&ci).unwrap();
    assert_eq!(again.path, rec.path);
    assert_eq!(sim.mapped().len(), 1);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert!(sim.mapped().is_empty());
    assert!(sim.fake.devices().iter().any(|(_, n)| *n == root));
}

#[test]
fn a_record_naming_another_md_array_is_refused() {
    use hostbrick::testing::sim::nvme::{nvme_info, NvmeSim, NQN, UUID_1};
    let sim = NvmeSim::new(true);
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    let c = connector_for(Protocol::NvmeOf, sim.options()).unwrap();
    let ci = nvme_info(
        serde_json::json!({"target_nqn": NQN, "portals": [["127.0.0.1", 4420, "tcp"]], "vol_uuid": UUID_1, "volume_id": "v1"}),
    );
    let mut rec = c.connect_volume(&ci).unwrap();
    // Another array on the host, over a disk of its own.
    let root = sim.fake.root();
    fs::create_dir_all(root.join("sys/block/md9/slaves/sdz")).unwrap();
    fs::write(root.join("sys/block/md9/dev"), "9:9\n").unwrap();
    fs::write(root.join("sys/block/md9/size"), "2048\n").unwrap();
    fs::write(root.join("dev/md9"), "").unwrap();
    fs::create_dir_all(root.join("dev/md")).unwrap();
    std::os::unix::fs::symlink("../md9", root.join("dev/md/home")).unwrap();
    rec.md_alias = Some("home".into());
    let e = c
        .disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), "record_mismatch", "{e}");
    assert_eq!(sim.runner.count("mdadm --stop"), 0);
    assert_eq!(
        sim.controllers().len(),
        1,
        "nothing of the volume was touched either"
    );
    rec.md_alias = None;
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert!(sim.controllers().is_empty());
    assert!(root.join("dev/md/home").exists() && root.join("sys/block/md9").exists());
}
