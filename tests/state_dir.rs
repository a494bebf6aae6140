//! hostbrick's private state directory on a fake host tree: what it refuses, the files it
//! makes in it (locks, registry entries, Ceph keyrings) and the lock waits bounded by the
//! operation deadline.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use hostbrick::internals::platform::Registry;
use hostbrick::testing::sim::rbd::*;
use hostbrick::testing::sim::MIB;
use hostbrick::{connector_for, ConnectorOptions, DisconnectOptions, Error, LockMode, Protocol};

const VOLUME_LOCK: &str = "volume-volumes-vol1";

/// A simulated Ceph host with one image, and connector options using the default lock
/// directory (in the state directory).
fn sim() -> (RbdSim, ConnectorOptions) {
    let sim = RbdSim::new();
    sim.add_image("volumes/vol1", 64 * MIB);
    let mut o = sim.options();
    o.lock_dir = None;
    (sim, o)
}

fn state_dir(sim: &RbdSim) -> PathBuf {
    sim.fake.host().state_dir()
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn assert_unsafe(e: &Error, dir: &Path, why: &str) {
    match e {
        Error::UnsafeStateDir { path, reason } => {
            assert_eq!(path, dir, "{e}");
            assert!(reason.contains(why), "{reason}");
        }
        other => panic!("expected unsafe_state_dir for {}: {other:?}", dir.display()),
    }
    assert_eq!(e.kind(), "unsafe_state_dir");
}

#[test]
fn the_state_dir_is_made_private_and_holds_locks_registry_and_keyrings() {
    let (sim, o) = sim();
    let c = connector_for(Protocol::Rbd, o.clone()).unwrap();
    let ci = rbd_info("volumes/vol1", KEY);
    let rec = c.connect_volume(&ci).unwrap();
    let state = state_dir(&sim);
    assert_eq!(state, sim.fake.root().join("run/hostbrick"));
    assert_eq!(o.locks().path(), state.join("locks"));
    for d in ["", "locks", "attachments", "attachments/rbd", "keyrings"] {
        let p = state.join(d);
        assert_eq!(mode(&p), 0o700, "{}", p.display());
        assert_eq!(
            fs::metadata(&p).unwrap().uid(),
            nix::unistd::geteuid().as_raw()
        );
    }
    for dir in ["locks", "attachments/rbd"] {
        for n in names(&state.join(dir)) {
            assert_eq!(mode(&state.join(dir).join(&n)), 0o600, "{dir}/{n}");
        }
    }
    assert_eq!(names(&state.join("attachments/rbd")).len(), 1);
    assert!(
        names(&state.join("keyrings")).is_empty(),
        "keyrings removed"
    );
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
}

#[test]
fn a_state_dir_of_another_user_is_refused_and_left_alone() {
    let (sim, o) = sim();
    let state = state_dir(&sim);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&state)
        .unwrap();
    std::os::unix::fs::chown(&state, Some(12345), Some(12345)).unwrap();
    let c = connector_for(Protocol::Rbd, o.clone()).unwrap();
    let e = c
        .connect_volume(&rbd_info("volumes/vol1", KEY))
        .unwrap_err();
    assert_unsafe(&e, &state, "owned by uid 12345");
    assert!(names(&state).is_empty(), "nothing created in it");
    assert!(sim.mapped().is_empty());
    // The registry and an audit refuse it too.
    let e = Registry::new(&sim.fake.host(), "rbd")
        .entries::<serde_json::Value>()
        .unwrap_err();
    assert_unsafe(&e, &state, "owned by");
    let e = hostbrick::audit(&sim.context()).unwrap_err();
    assert_unsafe(&e, &state, "owned by");
}

#[test]
fn a_state_dir_others_can_write_to_is_refused() {
    for bad in [0o777, 0o770, 0o1733] {
        let (sim, o) = sim();
        let state = state_dir(&sim);
        fs::create_dir_all(&state).unwrap();
        fs::set_permissions(&state, fs::Permissions::from_mode(bad)).unwrap();
        let c = connector_for(Protocol::Rbd, o).unwrap();
        let e = c
            .connect_volume(&rbd_info("volumes/vol1", KEY))
            .unwrap_err();
        assert_unsafe(&e, &state, "write");
        assert!(names(&state).is_empty(), "{bad:o}: nothing created in it");
        assert_eq!(mode(&state), bad, "left as it was");
    }
}

#[test]
fn a_state_dir_that_is_a_symlink_is_refused() {
    let (sim, o) = sim();
    let state = state_dir(&sim);
    let elsewhere = sim.fake.root().join("elsewhere");
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&elsewhere)
        .unwrap();
    fs::create_dir_all(state.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &state).unwrap();
    let c = connector_for(Protocol::Rbd, o).unwrap();
    let e = c
        .connect_volume(&rbd_info("volumes/vol1", KEY))
        .unwrap_err();
    assert_unsafe(&e, &state, "symbolic link");
    assert!(names(&elsewhere).is_empty());
}

#[test]
fn an_earlier_versions_readable_state_dir_is_tightened_and_its_records_kept() {
    let (sim, o) = sim();
    let state = state_dir(&sim);
    let reg = state.join("attachments/rbd");
    fs::create_dir_all(&reg).unwrap();
    for d in [&state, &state.join("attachments"), &reg] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::write(reg.join("volume-old.json"), "{\"n\": 1}").unwrap();
    let entries = Registry::new(&sim.fake.host(), "rbd")
        .entries::<serde_json::Value>()
        .unwrap();
    assert_eq!(entries.len(), 1, "an earlier entry is still listed");
    assert_eq!(entries[0].0, "volume-old");
    let c = connector_for(Protocol::Rbd, o).unwrap();
    c.connect_volume(&rbd_info("volumes/vol1", KEY)).unwrap();
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&reg), 0o700);
}

#[test]
fn an_explicit_lock_dir_gets_the_same_checks() {
    let (sim, o) = sim();
    let dir = sim.fake.root().join("locks-elsewhere");
    fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(12345), None).unwrap();
    let o = o.lock_dir(&dir);
    let c = connector_for(Protocol::Rbd, o.clone()).unwrap();
    let e = c
        .connect_volume(&rbd_info("volumes/vol1", KEY))
        .unwrap_err();
    assert_unsafe(&e, &dir, "owned by uid 12345");
    let e = o.locks().is_held(VOLUME_LOCK).unwrap_err();
    assert_unsafe(&e, &dir, "owned by");

    std::os::unix::fs::chown(&dir, Some(nix::unistd::geteuid().as_raw()), None).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
    let e = c
        .connect_volume(&rbd_info("volumes/vol1", KEY))
        .unwrap_err();
    assert_unsafe(&e, &dir, "write");
    assert!(names(&dir).is_empty());

    // A fresh one is made 0700, its missing parents too.
    let fresh = sim.fake.root().join("a/b/locks");
    let c = connector_for(Protocol::Rbd, o.lock_dir(&fresh)).unwrap();
    c.connect_volume(&rbd_info("volumes/vol1", KEY)).unwrap();
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&sim.fake.root().join("a")), 0o700);
}

#[test]
fn a_symlink_planted_as_a_lock_file_is_not_followed() {
    let (sim, o) = sim();
    let c = connector_for(Protocol::Rbd, o.clone()).unwrap();
    let ci = rbd_info("volumes/vol1", KEY);
    let rec = c.connect_volume(&ci).unwrap();
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    let locks = o.locks().path().to_path_buf();
    let name = names(&locks)
        .into_iter()
        .find(|n| n.starts_with(VOLUME_LOCK))
        .unwrap();
    fs::remove_file(locks.join(&name)).unwrap();
    let victim = sim.fake.root().join("etc/victim");
    std::os::unix::fs::symlink(&victim, locks.join(&name)).unwrap();
    let e = c.connect_volume(&ci).unwrap_err();
    assert_unsafe(&e, &locks.join(&name), "symbolic link");
    assert!(
        fs::symlink_metadata(&victim).is_err(),
        "root created nothing through the link"
    );
    assert!(sim.mapped().is_empty());
}

#[test]
fn a_symlink_planted_as_a_registry_entry_is_replaced_not_written_through() {
    let (sim, o) = sim();
    let c = connector_for(Protocol::Rbd, o).unwrap();
    let ci = rbd_info("volumes/vol1", KEY);
    let rec = c.connect_volume(&ci).unwrap();
    let reg = state_dir(&sim).join("attachments/rbd");
    let name = names(&reg).pop().unwrap();
    c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert!(names(&reg).is_empty());

    let victim = sim.fake.root().join("etc/victim");
    fs::create_dir_all(victim.parent().unwrap()).unwrap();
    // Valid JSON, so following the link would list it.
    fs::write(&victim, "{\"precious\": true}\n").unwrap();
    std::os::unix::fs::symlink(&victim, reg.join(&name)).unwrap();
    // Listing and reading do not follow it.
    assert!(Registry::new(&sim.fake.host(), "rbd")
        .entries::<serde_json::Value>()
        .unwrap()
        .is_empty());
    c.connect_volume(&ci).unwrap();
    assert_eq!(
        fs::read_to_string(&victim).unwrap(),
        "{\"precious\": true}\n"
    );
    let meta = fs::symlink_metadata(reg.join(&name)).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(
        Registry::new(&sim.fake.host(), "rbd")
            .entries::<serde_json::Value>()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn registry_keys_differing_only_in_unsafe_characters_do_not_collide() {
    let (sim, _) = sim();
    let reg = Registry::new(&sim.fake.host(), "rbd");
    reg.put("a/b", &serde_json::json!({"volume": "a/b"}))
        .unwrap();
    reg.put("a_b", &serde_json::json!({"volume": "a_b"}))
        .unwrap();
    assert_eq!(
        reg.get::<serde_json::Value>("a/b").unwrap().unwrap()["volume"],
        "a/b"
    );
    assert_eq!(reg.entries::<serde_json::Value>().unwrap().len(), 2);
    reg.remove("a_b").unwrap();
    assert_eq!(
        reg.get::<serde_json::Value>("a/b").unwrap().unwrap()["volume"],
        "a/b",
        "removing one keeps the other"
    );
}

#[test]
fn keyrings_are_private_from_creation_and_removed_after_a_failed_map() {
    let (sim, o) = sim();
    let keyrings = state_dir(&sim).join("keyrings");
    let c = connector_for(Protocol::Rbd, o).unwrap();
    let e = c
        .connect_volume(&rbd_info(
            "volumes/vol1",
            "AQBwrongwrongwrongwrongwrongwrongwrong==",
        ))
        .unwrap_err();
    assert!(matches!(e, Error::AuthenticationFailed { .. }), "{e:?}");
    let seen = sim.keyrings();
    assert!(!seen.is_empty());
    for (path, mode_seen, ok) in seen {
        assert!(!ok);
        assert_eq!(
            Path::new(&path).parent(),
            Some(keyrings.as_path()),
            "in the state directory, not a shared temp dir"
        );
        assert_eq!(mode_seen, 0o600, "{path} while rbd map ran");
        assert!(
            !Path::new(&path).exists(),
            "{path} removed after the failure"
        );
    }
    assert_eq!(mode(&keyrings), 0o700);
    assert!(names(&keyrings).is_empty());
}

#[test]
fn keyrings_a_killed_process_left_are_swept() {
    let (sim, o) = sim();
    let keyrings = state_dir(&sim).join("keyrings");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&keyrings)
        .unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let plant = |name: &str, age: Duration| {
        let p = keyrings.join(name);
        fs::write(&p, "[client.cinder]\n").unwrap();
        let f = fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    };
    plant(&format!("{dead}-1a2b-0.keyring"), Duration::ZERO);
    plant(&format!("{dead}-1a2b-0.conf"), Duration::ZERO);
    // Pid 1 lives: its file goes only once old.
    plant("1-1a2b-7.keyring", Duration::from_secs(3600));
    plant("1-1a2b-8.keyring", Duration::ZERO);
    // This process's pid from an earlier instance (a restart that got the same pid).
    plant(
        &format!("{}-0-3.keyring", std::process::id()),
        Duration::ZERO,
    );
    plant("unrelated", Duration::from_secs(3600));

    let c = connector_for(Protocol::Rbd, o).unwrap();
    c.connect_volume(&rbd_info("volumes/vol1", KEY)).unwrap();
    assert_eq!(
        names(&keyrings),
        vec!["1-1a2b-8.keyring".to_string(), "unrelated".to_string()]
    );
}

/// Connects in a thread and returns its result, failing (rather than hanging the suite)
/// when it has not returned within `limit`.
fn connect_within(o: ConnectorOptions, limit: Duration) -> (hostbrick::Result<()>, Duration) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let started = Instant::now();
        let c = connector_for(Protocol::Rbd, o).unwrap();
        let r = c.connect_volume(&rbd_info("volumes/vol1", KEY)).map(drop);
        let _ = tx.send((r, started.elapsed()));
    });
    rx.recv_timeout(limit)
        .expect("the connect waited for the lock past its deadline")
}

#[test]
fn a_held_volume_lock_fails_the_operation_at_its_deadline() {
    let (sim, o) = sim();
    let o = o.operation_timeout(Duration::from_millis(300));
    let _held = o.locks().lock(VOLUME_LOCK, LockMode::Exclusive).unwrap();
    let (r, took) = connect_within(o, Duration::from_secs(5));
    match r {
        Err(Error::LockTimeout { key, .. }) => assert_eq!(key, VOLUME_LOCK),
        other => panic!("{other:?}"),
    }
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(sim.mapped().is_empty());
}

#[test]
fn a_held_protocol_lock_fails_the_operation_at_its_deadline() {
    let (sim, o) = sim();
    let o = o.operation_timeout(Duration::from_millis(300));
    let held = o
        .locks()
        .lock("rbd-image-volumes/vol1", LockMode::Shared)
        .unwrap();
    let (r, took) = connect_within(o.clone(), Duration::from_secs(5));
    let e = r.unwrap_err();
    assert!(
        matches!(&e, Error::LockTimeout { key, .. } if key == "rbd-image-volumes/vol1"),
        "{e:?}"
    );
    assert!(e.to_string().contains("rbd-image-volumes/vol1"), "{e}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(sim.mapped().is_empty());
    drop(held);
    let (r, _) = connect_within(o, Duration::from_secs(5));
    r.unwrap();
}
