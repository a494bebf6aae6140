//! The external commands each operation runs on a cold host, held exactly: a command added
//! to a path (each costs a process start, tens of milliseconds under emulation) fails here
//! first. README "Commands per operation" lists the same; `cargo bench --bench operations`
//! prints them beside each operation's cost. Connector properties, which run none on a host
//! that has everything in files and sysfs, are held to that in `connector_properties.rs`.

use hostbrick::testing::sim::{iscsi, nvme, rbd, MIB};
use hostbrick::testing::FakeRunner;
use hostbrick::{
    connector_for, ConnectionInfo, Connector, DisconnectOptions, MultipathMode, Protocol,
};

/// The calls since the last check, each cut to its program and the words that tell the
/// operation (`iscsiadm --login`, `multipathd add path`, `rbd map`).
fn take(runner: &FakeRunner) -> Vec<String> {
    let calls = runner.calls();
    runner.clear_calls();
    calls
        .iter()
        .map(|c| {
            let words: Vec<&str> = c.split_whitespace().collect();
            let keep: Vec<&str> = words
                .iter()
                .enumerate()
                .filter(|(i, w)| {
                    *i == 0
                        || w.starts_with("--login")
                        || w.starts_with("--logout")
                        || [
                            "add", "del", "show", "paths", "path", "map", "unmap", "-a", "-f",
                        ]
                        .contains(w)
                })
                .map(|(_, w)| *w)
                .collect();
            keep.join(" ")
        })
        .collect()
}

/// Connects and disconnects `info` once; the commands of each.
fn budget(
    c: &dyn Connector,
    info: &ConnectionInfo,
    runner: &FakeRunner,
) -> (Vec<String>, Vec<String>) {
    runner.clear_calls();
    let record = c.connect_volume(info).unwrap();
    let connect = take(runner);
    c.disconnect_volume(info, Some(&record), DisconnectOptions::default())
        .unwrap();
    (connect, take(runner))
}

#[test]
fn iscsi_single_path_logs_in_and_out_and_nothing_else() {
    let sim = iscsi::IscsiSim::new();
    sim.add_target("192.0.2.10:3260", &[(1, iscsi::WWID_1, 64 * MIB)]);
    let c = connector_for(Protocol::Iscsi, sim.options()).unwrap();
    let info = iscsi::single("192.0.2.10:3260", 1, "vol-1");
    let (connect, disconnect) = budget(&*c, &info, &sim.runner);
    assert_eq!(connect, ["iscsiadm --login"]);
    assert_eq!(disconnect, ["iscsiadm --logout"]);
    sim.assert_clean();
}

#[test]
fn iscsi_multipath_adds_the_map_and_its_paths() {
    let sim = iscsi::IscsiSim::new();
    let portals = ["192.0.2.10:3260", "192.0.2.11:3260"];
    for p in portals {
        sim.add_target(p, &[(1, iscsi::WWID_1, 64 * MIB)]);
    }
    let o = sim.options().multipath(MultipathMode::Optional);
    let c = connector_for(Protocol::Iscsi, o).unwrap();
    let info = iscsi::multi(&portals, 1, "vol-1");
    let (mut connect, mut disconnect) = budget(&*c, &info, &sim.runner);
    // The logins run in parallel: their order is not fixed.
    connect.sort();
    disconnect.sort();
    assert_eq!(
        connect,
        [
            "iscsiadm --login",
            "iscsiadm --login",
            "multipath -a",
            // The simulated multipathd never takes a path by itself, so both are added; a
            // real one that already put a path in the map is not asked for it.
            "multipathd add path",
            "multipathd add path",
        ]
    );
    assert_eq!(
        disconnect,
        [
            "iscsiadm --logout",
            "iscsiadm --logout",
            "multipath -f",
            // multipathd no longer lists the removed paths (a following attach must not
            // meet them there).
            "multipathd show paths",
        ]
    );
    sim.assert_clean();
}

#[test]
fn nvme_connects_and_disconnects_through_the_kernel_alone() {
    let sim = nvme::NvmeSim::new(true);
    sim.add_subsystem(
        nvme::NQN,
        &["192.0.2.20:4420"],
        &[(1, nvme::UUID_1, 64 * MIB)],
    );
    let c = connector_for(Protocol::NvmeOf, sim.options()).unwrap();
    let info = nvme::volume(nvme::UUID_1, &["192.0.2.20:4420"], "vol-1");
    let (connect, disconnect) = budget(&*c, &info, &sim.runner);
    assert_eq!(connect, Vec::<String>::new());
    assert_eq!(disconnect, Vec::<String>::new());
    assert_eq!(sim.fabrics_requests().len(), 1);
    sim.assert_clean();
}

#[test]
fn krbd_maps_and_unmaps_and_nothing_else() {
    let sim = rbd::RbdSim::new();
    sim.add_image("volumes/volume-1", 64 * MIB);
    let c = connector_for(Protocol::Rbd, sim.options()).unwrap();
    let info = rbd::rbd_info("volumes/volume-1", rbd::KEY);
    let (connect, disconnect) = budget(&*c, &info, &sim.runner);
    assert_eq!(connect, ["rbd map"]);
    assert_eq!(disconnect, ["rbd unmap"]);
    assert!(sim.mapped().is_empty());
}
