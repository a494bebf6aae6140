//! Multipath connects with a path whose login hangs (a silent portal), on the iSCSI
//! simulator: the connect returns as soon as its map is usable, without waiting out that
//! login; the late path joins the map when its login ends, or is undone when it fails or
//! shows another volume; a disconnect (or the connector's cancel) while the login is still
//! under way stops it and leaves nothing.
//!
//! The background work is listed per process by target, so every test uses portals of its
//! own.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hostbrick::testing::sim::iscsi::{self, IscsiSim, WWID_1, WWID_2};
use hostbrick::testing::sim::MIB;
use hostbrick::{
    connector_for, Cancel, Command, CommandRunner, ConnectorOptions, DeviceRecord,
    DisconnectOptions, MultipathMode, Protocol,
};

/// Long budgets, multipath on; the grace of the simulator's options (300 ms).
fn options(sim: &IscsiSim) -> ConnectorOptions {
    sim.options()
        .operation_timeout(Duration::from_secs(60))
        .scan_timeout(Duration::from_secs(5))
        .multipath(MultipathMode::Optional)
}

/// The login at `portal`.
fn login_at(portal: &'static str) -> impl Fn(&Command) -> bool + Send + Sync + 'static {
    move |c: &Command| c.program() == "iscsiadm" && c.has_arg("--login") && c.has_arg(portal)
}

/// A sim with LUN 1 of `wwid_b` at `b` and of [`WWID_1`] at `a`.
fn two_portals(a: &str, b: &str, wwid_b: &str) -> IscsiSim {
    let sim = IscsiSim::new();
    sim.add_target(a, &[(1, WWID_1, 64 * MIB)]);
    sim.add_target(b, &[(1, wwid_b, 64 * MIB)]);
    sim
}

/// The paths under the record's map, as the host shows them.
fn map_paths(sim: &IscsiSim, record: &DeviceRecord) -> Vec<String> {
    let name = record.multipath_id.as_deref().expect("a multipath record");
    let Ok(dm) = std::fs::canonicalize(sim.fake.root().join(format!("dev/mapper/{name}"))) else {
        return Vec::new();
    };
    let dm = dm.file_name().unwrap().to_string_lossy().into_owned();
    let slaves: PathBuf = sim.fake.root().join(format!("sys/block/{dm}/slaves"));
    let mut names: Vec<String> = std::fs::read_dir(slaves)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Waits up to `limit` for `cond`.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// A connect of `portals` (LUN 1) whose login at `slow` takes `delay`; returns the record
/// and how long the connect took.
fn connect_with_slow_login(
    sim: &IscsiSim,
    o: ConnectorOptions,
    portals: &[&str],
    slow: &'static str,
    delay: Duration,
    volume: &str,
) -> (Box<dyn hostbrick::Connector>, DeviceRecord, Duration) {
    sim.runner.delay_next(login_at(slow), delay);
    let c = connector_for(Protocol::Iscsi, o).unwrap();
    let t0 = Instant::now();
    let record = c.connect_volume(&iscsi::multi(portals, 1, volume)).unwrap();
    (c, record, t0.elapsed())
}

#[test]
fn a_hanging_login_does_not_hold_the_connect_and_its_path_joins_the_map_later() {
    let (a, b) = ("127.0.20.1:3260", "127.0.20.2:3260");
    let sim = two_portals(a, b, WWID_1);
    let (c, record, took) = connect_with_slow_login(
        &sim,
        options(&sim),
        &[a, b],
        b,
        Duration::from_millis(1500),
        "vol-late-1",
    );
    // Returned on the first path and its map, long before the login at b ended.
    assert!(took < Duration::from_millis(1200), "connect took {took:?}");
    assert_eq!(record.paths.len(), 1, "{record:?}");
    assert_eq!(record.paths[0].portal.to_string(), a);
    assert_eq!(map_paths(&sim, &record).len(), 1);
    assert!(hostbrick::iscsi::late_paths_pending() >= 1);
    // The late login ends: its path is scanned and added to the map.
    assert!(
        eventually(Duration::from_secs(5), || map_paths(&sim, &record).len()
            == 2),
        "the late path never joined: {:?}",
        map_paths(&sim, &record)
    );
    assert!(sim.runner.count("multipathd add path") >= 2);
    assert_eq!(sim.session_count(), 2);
    // The record of the connect is enough to take both paths down.
    c.disconnect_volume(
        &iscsi::multi(&[a, b], 1, "vol-late-1"),
        Some(&record),
        DisconnectOptions::default(),
    )
    .unwrap();
    sim.assert_clean();
}

#[test]
fn a_late_login_that_fails_is_undone() {
    let (a, b) = ("127.0.21.1:3260", "127.0.21.2:3260");
    let sim = two_portals(a, b, WWID_1);
    // The portal stays dead: after its long attempt the login fails.
    sim.set_reachable(b, false);
    let (c, record, took) = connect_with_slow_login(
        &sim,
        options(&sim),
        &[a, b],
        b,
        Duration::from_millis(800),
        "vol-late-2",
    );
    assert!(took < Duration::from_millis(700), "connect took {took:?}");
    assert_eq!(record.paths.len(), 1);
    // The failed path undid itself: no node record, one session.
    assert!(eventually(Duration::from_secs(5), || {
        sim.runner
            .calls()
            .iter()
            .any(|c| c.contains("--login") && c.contains(b))
            && !sim.has_node(b)
    }));
    assert_eq!(sim.session_count(), 1);
    assert_eq!(map_paths(&sim, &record).len(), 1);
    c.disconnect_volume(
        &iscsi::multi(&[a, b], 1, "vol-late-2"),
        Some(&record),
        DisconnectOptions::default(),
    )
    .unwrap();
    sim.assert_clean();
}

#[test]
fn a_late_path_that_shows_another_volume_is_undone() {
    let (a, b) = ("127.0.22.1:3260", "127.0.22.2:3260");
    let sim = two_portals(a, b, WWID_2);
    let (c, record, _) = connect_with_slow_login(
        &sim,
        options(&sim),
        &[a, b],
        b,
        Duration::from_millis(800),
        "vol-late-3",
    );
    assert_eq!(record.paths.len(), 1);
    // It logs in, shows WWID_2 and is taken down again: logged out, record deleted.
    assert!(
        eventually(Duration::from_secs(5), || sim.runner.count("--logout") == 1
            && !sim.has_node(b)),
        "the late path of another volume was not undone: {:?}",
        sim.runner.calls()
    );
    assert_eq!(sim.session_count(), 1);
    assert_eq!(map_paths(&sim, &record).len(), 1);
    c.disconnect_volume(
        &iscsi::multi(&[a, b], 1, "vol-late-3"),
        Some(&record),
        DisconnectOptions::default(),
    )
    .unwrap();
    sim.assert_clean();
}

#[test]
fn a_disconnect_while_a_login_hangs_stops_it_and_leaves_nothing() {
    let (a, b) = ("127.0.23.1:3260", "127.0.23.2:3260");
    let sim = two_portals(a, b, WWID_1);
    let (c, record, took) = connect_with_slow_login(
        &sim,
        options(&sim),
        &[a, b],
        b,
        Duration::from_secs(30),
        "vol-late-4",
    );
    assert!(took < Duration::from_secs(2), "connect took {took:?}");
    let t0 = Instant::now();
    c.disconnect_volume(
        &iscsi::multi(&[a, b], 1, "vol-late-4"),
        Some(&record),
        DisconnectOptions::default(),
    )
    .unwrap();
    // The hanging login was cut short, not waited out.
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    sim.assert_clean();
    assert!(!sim.has_node(b));
    // Nothing comes back afterwards.
    std::thread::sleep(Duration::from_millis(300));
    sim.assert_clean();
}

#[test]
fn the_connectors_cancel_stops_the_background_paths() {
    let (a, b) = ("127.0.24.1:3260", "127.0.24.2:3260");
    let sim = two_portals(a, b, WWID_1);
    let cancel = Cancel::new();
    let (c, record, _) = connect_with_slow_login(
        &sim,
        options(&sim).cancel(cancel.clone()),
        &[a, b],
        b,
        Duration::from_secs(30),
        "vol-late-5",
    );
    cancel.cancel();
    // The pending path is undone (its node record goes); the connected path stays.
    assert!(
        eventually(Duration::from_secs(5), || !sim.has_node(b)),
        "the hanging login's node record stayed"
    );
    assert_eq!(sim.session_count(), 1);
    assert_eq!(map_paths(&sim, &record).len(), 1);
    // A fresh connector (the cancelled one stops every operation) takes the volume down.
    let c2 = connector_for(Protocol::Iscsi, options(&sim)).unwrap();
    drop(c);
    c2.disconnect_volume(
        &iscsi::multi(&[a, b], 1, "vol-late-5"),
        Some(&record),
        DisconnectOptions::default(),
    )
    .unwrap();
    sim.assert_clean();
}

#[test]
fn concurrent_volumes_keep_their_own_background_paths() {
    let (a1, b1) = ("127.0.25.1:3260", "127.0.25.2:3260");
    let (a2, b2) = ("127.0.26.1:3260", "127.0.26.2:3260");
    let sim = IscsiSim::new();
    sim.add_target(a1, &[(1, WWID_1, 64 * MIB)]);
    sim.add_target(b1, &[(1, WWID_1, 64 * MIB)]);
    sim.add_target(a2, &[(2, WWID_2, 64 * MIB)]);
    sim.add_target(b2, &[(2, WWID_2, 64 * MIB)]);
    sim.runner.delay_next(login_at(b1), Duration::from_secs(30));
    sim.runner
        .delay_next(login_at(b2), Duration::from_millis(1200));
    let c = connector_for(Protocol::Iscsi, options(&sim)).unwrap();
    let (r1, r2) = std::thread::scope(|s| {
        let one = s.spawn(|| c.connect_volume(&iscsi::multi(&[a1, b1], 1, "vol-late-6")));
        let two = s.spawn(|| c.connect_volume(&iscsi::multi(&[a2, b2], 2, "vol-late-7")));
        (one.join().unwrap().unwrap(), two.join().unwrap().unwrap())
    });
    // Disconnecting the first volume stops its own hanging login only.
    c.disconnect_volume(
        &iscsi::multi(&[a1, b1], 1, "vol-late-6"),
        Some(&r1),
        DisconnectOptions::default(),
    )
    .unwrap();
    assert!(!sim.has_node(a1) && !sim.has_node(b1));
    assert!(
        eventually(Duration::from_secs(5), || map_paths(&sim, &r2).len() == 2),
        "the second volume's late path never joined"
    );
    c.disconnect_volume(
        &iscsi::multi(&[a2, b2], 2, "vol-late-7"),
        Some(&r2),
        DisconnectOptions::default(),
    )
    .unwrap();
    sim.assert_clean();
}

#[test]
fn a_disconnect_from_another_process_logs_out_a_late_session_without_luns() {
    let (a, b) = ("127.0.27.1:3260", "127.0.27.2:3260");
    let sim = two_portals(a, b, WWID_1);
    sim.set_reachable(b, false);
    let c = connector_for(Protocol::Iscsi, options(&sim)).unwrap();
    let info = iscsi::multi(&[a, b], 1, "vol-late-8");
    let record = c.connect_volume(&info).unwrap();
    assert_eq!(record.paths.len(), 1);
    // The process that connected died with its login at b under way; iscsid finished that
    // login afterwards (node record and a session without any scanned LUN are left).
    sim.set_reachable(b, true);
    let adm = |args: &[&str]| {
        let cmd = Command::new("iscsiadm").args(["-m", "node", "-T", iscsi::IQN, "-p", b]);
        let out = sim.runner.run(&cmd.args(args.iter().copied())).unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    adm(&["--interface", "default", "--op", "new"]);
    adm(&["--interface", "default", "--login"]);
    assert_eq!(sim.session_count(), 2);
    // Another connector (another process) with the connect's record takes everything down.
    let other = connector_for(Protocol::Iscsi, options(&sim)).unwrap();
    other
        .disconnect_volume(&info, Some(&record), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}
