//! Cancelled operations on fake host trees with the simulators: a connect cancelled in a
//! device wait, a lock wait or a slow command stops promptly (far inside its deadline) with
//! `Error::Cancelled` and leaves nothing behind; the steps that must not be cut short (an
//! iSCSI login, an RBD map) finish and are undone; a disconnect stops between steps.

use std::time::{Duration, Instant};

use hostbrick::rbd::RbdMapper;
use hostbrick::testing::sim::iscsi::{self, IscsiSim, WWID_1};
use hostbrick::testing::sim::nvme::{self, NvmeSim, NQN, UUID_1};
use hostbrick::testing::sim::rbd::{rbd_info, RbdSim, KEY};
use hostbrick::testing::sim::MIB;
use hostbrick::{
    connector_for, Cancel, Command, ConnectorOptions, DisconnectOptions, Error, LockMode,
    MultipathMode, Protocol,
};

/// Long budgets: a cancelled operation must end far inside them.
fn patient(o: ConnectorOptions) -> ConnectorOptions {
    o.operation_timeout(Duration::from_secs(60))
        .scan_timeout(Duration::from_secs(30))
}

/// How soon a cancel must take effect here (the waits look every 25 ms; CI is slow).
const PROMPT: Duration = Duration::from_secs(2);

/// Waits for the thread that fired the cancel; the operation must have ended within
/// [`PROMPT`] of the cancel.
fn assert_prompt(fire: std::thread::JoinHandle<Instant>) {
    let fired = fire.join().unwrap();
    assert!(
        fired.elapsed() < PROMPT,
        "{:?} after the cancel",
        fired.elapsed()
    );
}

/// A cancel fired `after` from now, from another thread.
fn cancel_after(after: Duration) -> (Cancel, std::thread::JoinHandle<Instant>) {
    let c = Cancel::new();
    let c2 = c.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(after);
        c2.cancel();
        Instant::now()
    });
    (c, t)
}

/// `e` is an operation's cancellation whose cause chain mentions `step`.
#[track_caller]
fn assert_cancelled(e: &Error, operation: &str, step: &str) {
    match e {
        Error::Cancelled {
            operation: op,
            cause,
            ..
        } => {
            assert_eq!(*op, operation, "{}", e.chain());
            assert!(cause.is_some(), "{}", e.chain());
        }
        other => panic!("not cancelled: {}", other.chain()),
    }
    assert_eq!(e.kind(), "cancelled");
    assert!(e.chain().contains(step), "{}", e.chain());
}

fn is_login(c: &Command) -> bool {
    c.program() == "iscsiadm" && c.has_arg("--login")
}

#[test]
fn an_iscsi_connect_cancelled_in_its_device_wait_stops_at_once_and_logs_out() {
    let sim = IscsiSim::new();
    // The session is in recovery right after the login: the kernel would skip a scan, so
    // the connect waits for it to come back until its scan timeout (30 s here).
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, 64 * MIB)]);
    sim.fail_sessions_after_login(true);
    let (cancel, fire) = cancel_after(Duration::from_millis(150));
    let c = connector_for(Protocol::Iscsi, patient(sim.options()).cancel(cancel)).unwrap();
    let t0 = Instant::now();
    let e = c
        .connect_volume(&iscsi::single("127.0.0.1:3260", 2, "vol-1"))
        .unwrap_err();
    assert_prompt(fire);
    assert!(t0.elapsed() >= Duration::from_millis(150));
    assert_cancelled(&e, "connect_volume", "cancelled while waiting for LUN 2");
    // The session it logged in to and the node record it wrote are gone.
    assert_eq!(sim.runner.count("--logout"), 1, "{:?}", sim.runner.calls());
    sim.assert_clean();
}

#[test]
fn a_multipath_connect_cancelled_while_its_paths_wait_undoes_every_path() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, 64 * MIB)]);
    sim.add_target("127.0.0.2:3260", &[(1, WWID_1, 64 * MIB)]);
    // Both sessions stay in recovery: each path waits to scan its LUN.
    sim.fail_sessions_after_login(true);
    let (cancel, fire) = cancel_after(Duration::from_millis(150));
    let o = patient(sim.options())
        .multipath(MultipathMode::Optional)
        .cancel(cancel);
    let c = connector_for(Protocol::Iscsi, o).unwrap();
    let e = c
        .connect_volume(&iscsi::multi(
            &["127.0.0.1:3260", "127.0.0.2:3260"],
            2,
            "vol-1",
        ))
        .unwrap_err();
    // Each path waits in a thread of its own: the cancel reaches them all.
    assert_prompt(fire);
    assert_cancelled(&e, "connect_volume", "cancelled while waiting for LUN 2");
    assert_eq!(sim.runner.count("--logout"), 2, "{:?}", sim.runner.calls());
    sim.assert_clean();
}

#[test]
fn a_multipath_connect_cancelled_after_its_map_came_up_falls_back_to_nothing() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, 64 * MIB)]);
    sim.add_target("127.0.0.2:3260", &[(1, WWID_1, 64 * MIB)]);
    // The second path's login is slow: the map is made over the first, then the cancel
    // comes while the connect waits for the second path.
    sim.runner.delay_next(
        |c| is_login(c) && c.has_arg("127.0.0.2:3260"),
        Duration::from_millis(400),
    );
    let (cancel, fire) = cancel_after(Duration::from_millis(200));
    let mut o = patient(sim.options())
        .multipath(MultipathMode::Optional)
        .cancel(cancel);
    o.iscsi.extra_path_grace = Duration::from_secs(20);
    let c = connector_for(Protocol::Iscsi, o).unwrap();
    let e = c
        .connect_volume(&iscsi::multi(
            &["127.0.0.1:3260", "127.0.0.2:3260"],
            1,
            "vol-1",
        ))
        .unwrap_err();
    assert_prompt(fire);
    // Not a single-path success: the map and both paths are undone.
    assert_cancelled(&e, "connect_volume", "cancelled");
    sim.assert_clean();
}

#[test]
fn a_login_is_not_cut_short_and_is_undone_after_it() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, 64 * MIB)]);
    sim.runner.delay_next(is_login, Duration::from_millis(300));
    let (cancel, fire) = cancel_after(Duration::from_millis(50));
    let c = connector_for(Protocol::Iscsi, patient(sim.options()).cancel(cancel)).unwrap();
    let t0 = Instant::now();
    let e = c
        .connect_volume(&iscsi::single("127.0.0.1:3260", 1, "vol-1"))
        .unwrap_err();
    fire.join().unwrap();
    // The login ran its whole 300 ms: iscsid would have gone on with a killed one.
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    assert_cancelled(
        &e,
        "connect_volume",
        "cancelled while waiting for the scan of LUN 1",
    );
    assert_eq!(sim.runner.count("--login"), 1);
    assert_eq!(sim.runner.count("--logout"), 1);
    sim.assert_clean();
}

#[test]
fn a_connect_cancelled_in_a_slow_command_kills_it() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, 64 * MIB)]);
    // Enforced multipath asks multipathd first; it takes 30 s to answer.
    sim.runner.delay_next(
        |c| c.program() == "multipathd" && c.has_arg("status"),
        Duration::from_secs(30),
    );
    let (cancel, fire) = cancel_after(Duration::from_millis(100));
    let o = patient(sim.options())
        .multipath(MultipathMode::Enforced)
        .cancel(cancel);
    let c = connector_for(Protocol::Iscsi, o).unwrap();
    let e = c
        .connect_volume(&iscsi::single("127.0.0.1:3260", 1, "vol-1"))
        .unwrap_err();
    assert_prompt(fire);
    // Not "multipathd is not running": the connect was stopped.
    assert_cancelled(&e, "connect_volume", "multipathd's status");
    assert_eq!(sim.runner.count("--login"), 0);
    sim.assert_clean();
}

#[test]
fn a_cancel_that_fired_already_runs_nothing() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, 64 * MIB)]);
    let cancel = Cancel::new();
    cancel.cancel();
    let c = connector_for(Protocol::Iscsi, sim.options().cancel(cancel)).unwrap();
    let e = c
        .connect_volume(&iscsi::single("127.0.0.1:3260", 1, "vol-1"))
        .unwrap_err();
    assert!(
        matches!(e, Error::Cancelled { cause: None, .. }),
        "{}",
        e.chain()
    );
    assert_eq!(e.kind(), "cancelled");
    assert!(sim.runner.calls().is_empty(), "{:?}", sim.runner.calls());
    sim.assert_clean();
}

#[test]
fn a_connect_waiting_for_the_volume_lock_is_cancelled() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, 64 * MIB)]);
    let info = iscsi::single("127.0.0.1:3260", 1, "vol-1");
    let o = patient(sim.options());
    // Someone else holds the volume's lock for the whole test.
    let key = info.iscsi().unwrap().volume_key();
    let _held = o.locks().lock(&key, LockMode::Exclusive).unwrap();
    let (cancel, fire) = cancel_after(Duration::from_millis(100));
    // Another lock directory handle on the same directory: flock locks are per open file.
    let c = connector_for(Protocol::Iscsi, o.cancel(cancel)).unwrap();
    let e = c.connect_volume(&info).unwrap_err();
    assert_prompt(fire);
    assert_cancelled(&e, "connect_volume", "cancelled while waiting for lock");
    assert!(sim.runner.calls().is_empty(), "{:?}", sim.runner.calls());
}

#[test]
fn a_disconnect_cancelled_in_a_slow_command_stops_and_a_second_one_finishes() {
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(1, WWID_1, 64 * MIB)]);
    let info = iscsi::single("127.0.0.1:3260", 1, "vol-1");
    let plain = connector_for(Protocol::Iscsi, patient(sim.options())).unwrap();
    let rec = plain.connect_volume(&info).unwrap();
    sim.runner.delay_next(
        |c| c.program() == "iscsiadm" && c.has_arg("--logout"),
        Duration::from_secs(30),
    );
    let (cancel, fire) = cancel_after(Duration::from_millis(100));
    let c = connector_for(Protocol::Iscsi, patient(sim.options()).cancel(cancel)).unwrap();
    // force and ignore_errors carry on past failures, not past a cancel.
    let opts = DisconnectOptions {
        force: true,
        ignore_errors: true,
    };
    let e = c.disconnect_volume(&info, Some(&rec), opts).unwrap_err();
    assert_prompt(fire);
    assert_cancelled(&e, "disconnect_volume", "--logout` was cancelled");
    assert_eq!(sim.session_count(), 1, "the logout was stopped");
    // The disk went before the logout; a disconnect run again finishes the rest.
    plain
        .disconnect_volume(&info, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

#[test]
fn an_nvme_connect_cancelled_in_its_namespace_wait_drops_its_controller() {
    let sim = NvmeSim::new(true);
    // The kernel's namespace scan is slow: the connect makes the controller, then waits
    // for the namespace the subsystem lists (UUID_1's nsid 1) to show.
    sim.add_subsystem(NQN, &["127.0.0.1:4420"], &[(1, UUID_1, MIB)]);
    sim.set_scan_delay(Some(Duration::from_secs(3)));
    let (cancel, fire) = cancel_after(Duration::from_millis(150));
    let c = connector_for(Protocol::NvmeOf, patient(sim.options()).cancel(cancel)).unwrap();
    let e = c
        .connect_volume(&nvme::volume(UUID_1, &["127.0.0.1:4420"], "vol-1"))
        .unwrap_err();
    assert_prompt(fire);
    assert_cancelled(
        &e,
        "connect_volume",
        "cancelled while waiting for namespace",
    );
    assert_eq!(sim.fabrics_requests().len(), 1);
    sim.assert_clean();
}

#[test]
fn an_rbd_map_is_not_cut_short_and_is_unmapped_after_it() {
    let sim = RbdSim::new();
    sim.add_image("volumes/vol-1", 64 * MIB);
    sim.runner.delay_next(
        |c| c.program() == "rbd" && c.has_arg("map"),
        Duration::from_millis(300),
    );
    let (cancel, fire) = cancel_after(Duration::from_millis(50));
    let c = connector_for(Protocol::Rbd, patient(sim.options()).cancel(cancel)).unwrap();
    let t0 = Instant::now();
    let e = c
        .connect_volume(&rbd_info("volumes/vol-1", KEY))
        .unwrap_err();
    fire.join().unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    assert_cancelled(&e, "connect_volume", "cancelled while waiting for /dev/rbd");
    assert!(sim.mapped().is_empty(), "{:?}", sim.mapped());
    assert_eq!(sim.runner.count("unmap"), 1, "{:?}", sim.runner.calls());
}

#[test]
fn an_rbd_connect_cancelled_in_a_slow_query_maps_nothing() {
    let sim = RbdSim::new();
    sim.add_image("volumes/vol-1", 64 * MIB);
    // rbd-nbd's mappings are what rbd-nbd lists (krbd's are read in sysfs).
    sim.runner.delay_next(
        |c| c.program() == "rbd-nbd" && c.has_arg("list-mapped"),
        Duration::from_secs(30),
    );
    let (cancel, fire) = cancel_after(Duration::from_millis(100));
    let mut o = patient(sim.options()).cancel(cancel);
    o.rbd.mapper = RbdMapper::Nbd;
    let c = connector_for(Protocol::Rbd, o).unwrap();
    let e = c
        .connect_volume(&rbd_info("volumes/vol-1", KEY))
        .unwrap_err();
    assert_prompt(fire);
    assert_cancelled(
        &e,
        "connect_volume",
        "list-mapped --format json` was cancelled",
    );
    assert!(sim.mapped().is_empty());
    assert_eq!(sim.runner.count(" map "), 0, "{:?}", sim.runner.calls());
}
