//! open-iscsi's node records written and removed by hostbrick itself (no `iscsiadm --op
//! new/update/delete`), on the simulated host: what the record holds, the database lock,
//! records that were there before, planted files and links, rollback, and the fall-back to
//! iscsiadm where the database is not the known one.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hostbrick::internals::iscsi::record_value;
use hostbrick::testing::sim::iscsi::*;
use hostbrick::testing::sim::MIB;
use hostbrick::{connector_for, Connector, DisconnectOptions, Protocol};

const PORTAL: &str = "127.0.0.1:3260";

fn connector(sim: &IscsiSim) -> Box<dyn Connector> {
    connector_for(Protocol::Iscsi, sim.options()).unwrap()
}

fn sim_with_target() -> IscsiSim {
    let sim = IscsiSim::new();
    sim.add_target(PORTAL, &[(0, WWID_1, MIB)]);
    sim
}

fn flat_record(sim: &IscsiSim) -> PathBuf {
    sim.fake
        .root()
        .join(format!("etc/iscsi/nodes/{IQN}/127.0.0.1,3260"))
}

fn lock_write(sim: &IscsiSim) -> PathBuf {
    sim.fake.root().join("run/lock/iscsi/lock.write")
}

fn setting(file: &Path, name: &str) -> Option<String> {
    let text = fs::read_to_string(file).unwrap();
    record_value(&text, name).map(str::to_string)
}

/// The operator's iscsid.conf settings hold in the record; hostbrick's are on top of them
/// (the session timers among them: the options' values, open-iscsi's defaults unless set).
#[test]
fn iscsid_conf_settings_hold_and_ours_are_on_top() {
    let sim = sim_with_target();
    let conf = sim.fake.root().join("etc/iscsi/iscsid.conf");
    let text = fs::read_to_string(&conf).unwrap()
        + "node.session.cmds_max = 64\nnode.session.err_timeo.abort_timeout = 20\n\
           node.session.timeo.replacement_timeout = 20\n\
           node.conn[0].timeo.noop_out_interval = 0\n\
           node.session.scan = auto\nnode.startup = manual\n";
    fs::write(&conf, text).unwrap();
    let c = connector(&sim);
    let ci = single(PORTAL, 0, "vol-1");
    let rec = c.connect_volume(&ci).unwrap();
    let file = flat_record(&sim);
    assert_eq!(
        setting(&file, "node.session.cmds_max").as_deref(),
        Some("64")
    );
    assert_eq!(
        setting(&file, "node.session.err_timeo.abort_timeout").as_deref(),
        Some("20")
    );
    assert_eq!(
        setting(&file, "node.session.timeo.replacement_timeout").as_deref(),
        Some("120")
    );
    assert_eq!(
        setting(&file, "node.conn[0].timeo.noop_out_interval").as_deref(),
        Some("5")
    );
    assert_eq!(
        setting(&file, "node.session.scan").as_deref(),
        Some("manual")
    );
    assert_eq!(setting(&file, "node.startup").as_deref(), Some("automatic"));
    // The login read the record: manual scan, so only the volume's LUN was scanned.
    assert_eq!(sim.fake.devices().len(), 1);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

/// The session timers of the options (replacement timeout, NOP-Out interval and timeout)
/// are in the record the connect writes, and in a record that was there before.
#[test]
fn the_session_timers_of_the_options_are_in_the_record() {
    let sim = sim_with_target();
    let mut o = sim.options();
    o.iscsi = o
        .iscsi
        .replacement_timeout(Duration::from_secs(600))
        .noop_out_interval(Duration::from_secs(10))
        .noop_out_timeout(Duration::from_secs(15));
    let c = connector_for(Protocol::Iscsi, o).unwrap();
    let ci = single(PORTAL, 0, "vol-1");
    let file = flat_record(&sim);
    let timers = |file: &Path| {
        [
            "node.session.timeo.replacement_timeout",
            "node.conn[0].timeo.noop_out_interval",
            "node.conn[0].timeo.noop_out_timeout",
        ]
        .map(|k| setting(file, k).unwrap_or_default())
    };
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(timers(&file), ["600", "10", "15"]);
    assert_eq!(sim.iscsiadm_calls().len(), 1, "{:?}", sim.iscsiadm_calls());
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();

    // A record that was there gets them in place of its own.
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    let old = "# BEGIN RECORD 2.1.8\nnode.name = IQN\nnode.tpgt = -1\n\
               iface.iscsi_ifacename = default\n\
               node.session.timeo.replacement_timeout = 5\n\
               node.conn[0].address = 127.0.0.1\nnode.conn[0].port = 3260\n\
               node.conn[0].timeo.noop_out_interval = 0\n\
               node.conn[0].timeo.noop_out_timeout = 1\n# END RECORD\n"
        .replace("IQN", IQN);
    fs::write(&file, &old).unwrap();
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(timers(&file), ["600", "10", "15"]);
    let text = fs::read_to_string(&file).unwrap();
    assert_eq!(text.matches("replacement_timeout").count(), 1, "{text}");
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

/// Session timers open-iscsi's record cannot hold are refused when the connector is made.
#[test]
fn session_timers_a_record_cannot_hold_are_refused_up_front() {
    let sim = sim_with_target();
    for (iscsi, option) in [
        (
            sim.options()
                .iscsi
                .replacement_timeout(Duration::from_millis(1500)),
            "replacement_timeout",
        ),
        (
            sim.options()
                .iscsi
                .noop_out_interval(Duration::from_secs(1 << 31)),
            "noop_out_interval",
        ),
        (
            sim.options()
                .iscsi
                .noop_out_timeout(Duration::from_nanos(1)),
            "noop_out_timeout",
        ),
    ] {
        match connector_for(Protocol::Iscsi, sim.options().iscsi(iscsi.clone())) {
            Err(hostbrick::Error::InvalidArgument { name, .. }) => {
                assert_eq!(name, option, "{iscsi:?}")
            }
            Err(e) => panic!("{iscsi:?}: {e:?}"),
            Ok(_) => panic!("{iscsi:?} accepted"),
        }
    }
    assert!(sim.iscsiadm_calls().is_empty());
}

/// CHAP goes into the record the connect writes; the login reads it from there.
#[test]
fn chap_is_in_the_written_record() {
    let sim = sim_with_target();
    sim.require_chap("alice", "s3cret-pw");
    let c = connector(&sim);
    let ci = info(serde_json::json!({
        "target_portal": PORTAL, "target_iqn": IQN, "target_lun": 0, "volume_id": "vol-1",
        "auth_method": "CHAP", "auth_username": "alice", "auth_password": "s3cret-pw"
    }));
    let rec = c.connect_volume(&ci).unwrap();
    let file = flat_record(&sim);
    assert_eq!(
        setting(&file, "node.session.auth.authmethod").as_deref(),
        Some("CHAP")
    );
    assert_eq!(
        setting(&file, "node.session.auth.password").as_deref(),
        Some("s3cret-pw")
    );
    assert!(sim.iscsiadm_calls().iter().all(|c| !c.contains("s3cret")));
    assert_eq!(sim.iscsiadm_calls().len(), 1, "{:?}", sim.iscsiadm_calls());
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

/// A record that was there (os-brick's, an earlier attach's) is kept and given hostbrick's
/// settings in place; the disconnect removes it as `--op delete` would.
#[test]
fn a_record_that_was_there_is_updated_in_place() {
    let sim = sim_with_target();
    let file = flat_record(&sim);
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    let old = "# BEGIN RECORD 2.1.8\nnode.name = IQN\nnode.tpgt = -1\nnode.startup = manual\n\
               iface.iscsi_ifacename = default\nnode.session.scan = auto\n\
               node.session.queue_depth = 7\nnode.conn[0].address = 127.0.0.1\n\
               node.conn[0].port = 3260\n# END RECORD\n"
        .replace("IQN", IQN);
    fs::write(&file, &old).unwrap();
    let c = connector(&sim);
    let ci = single(PORTAL, 0, "vol-1");
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(sim.iscsiadm_calls().len(), 1, "{:?}", sim.iscsiadm_calls());
    assert_eq!(
        setting(&file, "node.session.scan").as_deref(),
        Some("manual")
    );
    assert_eq!(
        setting(&file, "node.session.queue_depth").as_deref(),
        Some("7")
    );
    assert_eq!(sim.fake.devices().len(), 1);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

/// A file where the target's record goes that names another target is not written into,
/// logged in with or removed.
#[test]
fn a_planted_record_of_another_target_is_left_alone() {
    let sim = sim_with_target();
    let file = flat_record(&sim);
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    let planted = "# BEGIN RECORD 2.1.8\nnode.name = iqn.2003-01.org.example:other\n\
                   node.conn[0].address = 127.0.0.1\n# END RECORD\n";
    fs::write(&file, planted).unwrap();
    let c = connector(&sim);
    let ci = single(PORTAL, 0, "vol-1");
    let e = c.connect_volume(&ci).unwrap_err();
    assert!(e.chain().contains("names another target"), "{}", e.chain());
    assert_eq!(fs::read_to_string(&file).unwrap(), planted);
    assert_eq!(sim.session_count(), 0);
    assert!(sim.iscsiadm_calls().is_empty());
    // Nor does a disconnect remove it.
    c.disconnect_volume(&ci, None, DisconnectOptions::default())
        .unwrap();
    assert_eq!(fs::read_to_string(&file).unwrap(), planted);
}

/// A symbolic link where open-iscsi keeps the target's directory, or the record itself,
/// is refused: nothing is written through it.
#[test]
fn a_symlinked_record_dir_or_file_is_refused() {
    for what in ["dir", "file"] {
        let sim = sim_with_target();
        let elsewhere = sim.fake.root().join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        let target_dir = sim.fake.root().join(format!("etc/iscsi/nodes/{IQN}"));
        match what {
            "dir" => {
                fs::create_dir_all(target_dir.parent().unwrap()).unwrap();
                std::os::unix::fs::symlink(&elsewhere, &target_dir).unwrap();
            }
            _ => {
                fs::create_dir_all(&target_dir).unwrap();
                std::os::unix::fs::symlink(elsewhere.join("victim"), flat_record(&sim)).unwrap();
            }
        }
        let c = connector(&sim);
        let ci = single(PORTAL, 0, "vol-1");
        let e = c.connect_volume(&ci).unwrap_err();
        assert!(e.chain().contains("symbolic link"), "{what}: {}", e.chain());
        assert!(
            fs::read_dir(&elsewhere).unwrap().next().is_none(),
            "{what}: written through the link"
        );
        assert_eq!(sim.session_count(), 0, "{what}");
        assert!(!lock_write(&sim).exists(), "{what}: lock left held");
    }
}

/// open-iscsi's database lock held by someone else until the deadline: a typed error,
/// nothing made, the other holder's lock untouched.
#[test]
fn the_database_lock_held_elsewhere_until_the_deadline() {
    let sim = sim_with_target();
    let lock = lock_write(&sim);
    fs::create_dir_all(lock.parent().unwrap()).unwrap();
    fs::write(&lock, "").unwrap();
    let o = sim.options().operation_timeout(Duration::from_millis(300));
    let c = connector_for(Protocol::Iscsi, o).unwrap();
    let ci = single(PORTAL, 0, "vol-1");
    let started = Instant::now();
    let e = c.connect_volume(&ci).unwrap_err();
    assert_eq!(e.kind(), "lock_timeout", "{}", e.chain());
    assert!(
        e.chain().contains("open-iscsi record database"),
        "{}",
        e.chain()
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(lock.exists(), "someone else's lock was removed");
    assert_eq!(sim.session_count(), 0);
    assert_eq!(sim.node_count(), 0);
    assert!(sim.iscsiadm_calls().is_empty());
    // Released: the connect works.
    fs::remove_file(&lock).unwrap();
    let rec = c.connect_volume(&ci).unwrap();
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

/// The lock is taken for the write: while a writer holds it, a connect waits for it and
/// goes on as soon as it is released.
#[test]
fn a_connect_waits_for_the_database_lock() {
    let sim = sim_with_target();
    let lock = lock_write(&sim);
    fs::create_dir_all(lock.parent().unwrap()).unwrap();
    fs::write(&lock, "").unwrap();
    let c = connector(&sim);
    let ci = single(PORTAL, 0, "vol-1");
    let rec = std::thread::scope(|s| {
        let h = s.spawn(|| c.connect_volume(&ci));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(sim.node_count(), 0, "written without the lock");
        fs::remove_file(&lock).unwrap();
        h.join().unwrap().unwrap()
    });
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

/// A failed login (unreachable portal, wrong CHAP password) removes the record the connect
/// wrote.
#[test]
fn a_failed_login_removes_the_record_it_wrote() {
    let sim = sim_with_target();
    sim.set_reachable(PORTAL, false);
    let c = connector(&sim);
    let ci = single(PORTAL, 0, "vol-1");
    c.connect_volume(&ci).unwrap_err();
    sim.assert_clean();

    let sim = sim_with_target();
    sim.require_chap("alice", "right");
    let c = connector(&sim);
    let ci = info(serde_json::json!({
        "target_portal": PORTAL, "target_iqn": IQN, "target_lun": 0, "volume_id": "vol-1",
        "auth_method": "CHAP", "auth_username": "alice", "auth_password": "wrong"
    }));
    let e = c.connect_volume(&ci).unwrap_err();
    assert!(e.chain().contains("auth"), "{}", e.chain());
    sim.assert_clean();
}

/// Without open-iscsi's files where hostbrick knows them (no /etc/iscsi/iscsid.conf), the
/// records are iscsiadm's as before: `--op new`, one `--op update`, and `--op delete`.
#[test]
fn without_the_known_database_iscsiadm_makes_the_records() {
    let sim = sim_with_target();
    fs::remove_file(sim.fake.root().join("etc/iscsi/iscsid.conf")).unwrap();
    let c = connector(&sim);
    let ci = single(PORTAL, 0, "vol-1");
    let rec = c.connect_volume(&ci).unwrap();
    let calls = sim.iscsiadm_calls();
    let ops: Vec<&str> = calls
        .iter()
        .map(|c| c.split_once(PORTAL).map_or("", |(_, rest)| rest.trim()))
        .collect();
    assert_eq!(ops.len(), 4, "{calls:#?}");
    assert_eq!(ops[0], "");
    assert_eq!(ops[1], "--interface default --op new");
    assert_eq!(
        ops[2],
        "--op update -n node.session.scan -v manual \
         -n node.conn[0].timeo.login_timeout -v 5 \
         -n node.session.initial_login_retry_max -v 1 -n node.startup -v automatic \
         -n node.session.timeo.replacement_timeout -v 120 \
         -n node.conn[0].timeo.noop_out_interval -v 5 \
         -n node.conn[0].timeo.noop_out_timeout -v 5"
    );
    assert_eq!(ops[3], "--interface default --login");
    sim.runner.clear_calls();
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert_eq!(sim.runner.count("--op delete"), 1);
    sim.assert_clean();
}

/// Through iscsiadm too, the session timers of the options are set in the one `--op update`.
#[test]
fn iscsiadm_sets_the_session_timers_of_the_options() {
    let sim = sim_with_target();
    fs::remove_file(sim.fake.root().join("etc/iscsi/iscsid.conf")).unwrap();
    let mut o = sim.options();
    o.iscsi = o
        .iscsi
        .replacement_timeout(Duration::ZERO)
        .noop_out_interval(Duration::from_secs(10))
        .noop_out_timeout(Duration::from_secs(15));
    let c = connector_for(Protocol::Iscsi, o).unwrap();
    let ci = single(PORTAL, 0, "vol-1");
    let rec = c.connect_volume(&ci).unwrap();
    let updates: Vec<String> = sim
        .iscsiadm_calls()
        .into_iter()
        .filter(|c| c.contains("--op update"))
        .collect();
    assert_eq!(updates.len(), 1, "{updates:#?}");
    assert!(
        updates[0].ends_with(
            " -n node.session.timeo.replacement_timeout -v 0 \
             -n node.conn[0].timeo.noop_out_interval -v 10 \
             -n node.conn[0].timeo.noop_out_timeout -v 15"
        ),
        "{}",
        updates[0]
    );
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}

/// Another iface than the built-in ones: its settings are in /etc/iscsi/ifaces, which
/// iscsiadm reads, so iscsiadm makes the record.
#[test]
fn a_configured_iface_leaves_the_record_to_iscsiadm() {
    let sim = sim_with_target();
    let mut o = sim.options();
    o.iscsi.iface = Some("eth1-iface".into());
    let c = connector_for(Protocol::Iscsi, o).unwrap();
    let ci = single(PORTAL, 0, "vol-1");
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(
        sim.runner.count("--interface eth1-iface --op new"),
        1,
        "{:#?}",
        sim.iscsiadm_calls()
    );
    assert_eq!(sim.runner.count("--interface eth1-iface --login"), 1);
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    // A flat record goes as `--op delete` removes it, whatever its iface.
    assert_eq!(sim.runner.count("--op delete"), 0);
    sim.assert_clean();
}

/// iscsiadm keeps its records elsewhere (another `ISCSI_DB_ROOT`) though
/// /etc/iscsi/iscsid.conf is there: the login finds no record (exit 21), the written file
/// goes, iscsiadm makes the record and logs in, and the connector leaves records to iscsiadm
/// from then on.
#[test]
fn a_record_database_elsewhere_falls_back_to_iscsiadm() {
    let sim = IscsiSim::new();
    sim.add_target(PORTAL, &[(0, WWID_1, MIB), (1, WWID_2, MIB)]);
    sim.records_elsewhere();
    let c = connector(&sim);
    let ci = single(PORTAL, 0, "vol-1");
    let rec = c.connect_volume(&ci).unwrap();
    let calls = sim.iscsiadm_calls();
    assert_eq!(sim.runner.count("--login"), 2, "{calls:#?}");
    assert_eq!(sim.runner.count("--op new"), 1, "{calls:#?}");
    assert!(!flat_record(&sim).exists(), "the unread record file stays");
    assert!(sim.has_node(PORTAL));
    assert!(
        !sim.fake
            .root()
            .join(format!("etc/iscsi/nodes/{IQN}"))
            .exists(),
        "the target's directory stays"
    );
    sim.runner.clear_calls();
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert_eq!(sim.runner.count("--op delete"), 1);
    sim.assert_clean();
    // The next connect goes to iscsiadm at once.
    sim.runner.clear_calls();
    let ci = single(PORTAL, 1, "vol-2");
    let rec = c.connect_volume(&ci).unwrap();
    assert_eq!(sim.runner.count("--login"), 1);
    assert_eq!(sim.runner.count("--op new"), 1);
    assert!(!sim.fake.root().join("etc/iscsi/nodes").join(IQN).exists());
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    sim.assert_clean();
}
