//! The host encryptors (`encryption::{open_volume, close_volume, extend_volume}`) on fake
//! host trees with a simulated cryptsetup and blkid: every command line (the key only on
//! stdin), first-use formatting and its refusal on a device with a signature, a wrong key,
//! the rollback of a failed open, os-brick's mapping names, and closing only a mapping the
//! host proves to be the volume's.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostbrick::encryption::{
    close_volume, extend_volume, open_volume, EncryptedConnector, EncryptionKey,
    EncryptionMetadata, EncryptionProvider, KeyManager,
};
use hostbrick::testing::sim::crypt::{CryptSim, LUKS1_OFFSET, LUKS2_OFFSET};
use hostbrick::testing::sim::iscsi::{single, IscsiSim, WWID_1};
use hostbrick::testing::sim::MIB;
use hostbrick::{
    connector_for, Connector, DeviceKind, DeviceRecord, DisconnectOptions, EncryptionRecord, Error,
    Protocol,
};

/// The key bytes of `k1`; its passphrase is their hex form (os-brick's).
const KEY_BYTES: [u8; 8] = [0x00, 0x1f, 0xa0, 0xff, 0x12, 0x34, 0x56, 0x78];
const PASSPHRASE: &str = "001fa0ff12345678";

#[derive(Debug)]
struct Keys(HashMap<&'static str, Vec<u8>>);

impl KeyManager for Keys {
    fn key(&self, key_id: &str) -> hostbrick::Result<EncryptionKey> {
        self.0
            .get(key_id)
            .map(|b| EncryptionKey::symmetric(b.clone()))
            .ok_or_else(|| Error::KeyNotFound {
                key_id: key_id.into(),
            })
    }
}

fn keys() -> Keys {
    Keys(HashMap::from([("k1", KEY_BYTES.to_vec())]))
}

fn meta(json: &str) -> EncryptionMetadata {
    EncryptionMetadata::from_json(json).unwrap().unwrap()
}

fn luks() -> EncryptionMetadata {
    meta(
        r#"{"provider": "luks", "encryption_key_id": "k1", "cipher": "aes-xts-plain64", "key_size": 256, "control_location": "front-end"}"#,
    )
}

fn luks2() -> EncryptionMetadata {
    meta(r#"{"provider": "luks2", "encryption_key_id": "k1"}"#)
}

fn plain() -> EncryptionMetadata {
    meta(
        r#"{"provider": "plain", "encryption_key_id": "k1", "cipher": "aes-cbc-essiv:sha256", "key_size": 256}"#,
    )
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

fn disk(sim: &CryptSim, name: &str) -> DeviceRecord {
    sim.add_disk(name, 64 * MIB);
    DeviceRecord::block(
        Protocol::Iscsi,
        format!("/dev/{name}"),
        Some("vol-1".into()),
    )
}

/// The commands run, with the tree's root taken out of device paths.
fn calls(sim: &CryptSim) -> Vec<String> {
    let root = sim.fake.root().display().to_string();
    sim.runner
        .calls()
        .into_iter()
        .map(|c| c.replace(&root, ""))
        .collect()
}

fn assert_key_only_on_stdin(sim: &CryptSim) {
    for c in sim.runner.commands() {
        for a in c.arg_list() {
            assert!(!format!("{a:?}").contains(PASSPHRASE), "{c}");
        }
        assert!(!c.to_string().contains(PASSPHRASE), "{c}");
        assert!(!format!("{c:?}").contains(PASSPHRASE), "{c:?}");
        if let Some(s) = c.stdin() {
            assert_eq!(s.expose(), PASSPHRASE, "{c}");
        }
    }
}

#[test]
fn luks_first_attach_formats_then_opens_and_the_key_is_only_on_stdin() {
    let sim = CryptSim::new();
    let dev = disk(&sim, "sdb");
    let rec = open_volume(&sim.context(), &luks(), &keys(), &dev, deadline()).unwrap();
    assert_eq!(
        calls(&sim),
        [
            "cryptsetup luksOpen --key-file=- /dev/sdb crypt-sdb <stdin ***>",
            "cryptsetup isLuks --verbose /dev/sdb",
            "blkid -p -o export /dev/sdb",
            "cryptsetup --batch-mode luksFormat --type luks1 --key-file=- --cipher aes-xts-plain64 --key-size 256 /dev/sdb <stdin ***>",
            "cryptsetup luksOpen --key-file=- /dev/sdb crypt-sdb <stdin ***>",
        ]
    );
    assert_eq!(
        sim.runner.stdin_given("cryptsetup"),
        [
            Some(PASSPHRASE.to_string()),
            None,
            Some(PASSPHRASE.into()),
            Some(PASSPHRASE.into())
        ]
    );
    assert_key_only_on_stdin(&sim);
    assert_eq!(
        sim.header_params("sdb"),
        Some((
            PASSPHRASE.to_string(),
            Some("aes-xts-plain64".into()),
            Some("256".into())
        ))
    );
    assert_eq!(
        rec.encryption,
        Some(EncryptionRecord {
            provider: EncryptionProvider::Luks,
            name: "crypt-sdb".into(),
            device: "/dev/mapper/crypt-sdb".into(),
            raw: "/dev/sdb".into(),
        })
    );
    assert_eq!(rec.path, Path::new("/dev/sdb"), "path stays the raw device");
    assert_eq!(rec.guest_path(), Path::new("/dev/mapper/crypt-sdb"));
    // The decrypted device is the raw one less the LUKS1 header.
    let dm = &sim.mappings()[0].1;
    let size: u64 = std::fs::read_to_string(sim.fake.root().join(format!("sys/block/{dm}/size")))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(size * 512, 64 * MIB - LUKS1_OFFSET);
    // Nothing of the key in the record either.
    assert!(!rec.to_json().unwrap().contains(PASSPHRASE));

    // Opening it again reuses the mapping; closing twice is fine.
    sim.runner.clear_calls();
    let again = open_volume(&sim.context(), &luks(), &keys(), &rec, deadline()).unwrap();
    assert_eq!(again, rec);
    assert!(sim.runner.calls().is_empty(), "{:?}", sim.runner.calls());
    close_volume(&sim.context(), &rec, deadline()).unwrap();
    assert_eq!(calls(&sim), ["cryptsetup luksClose crypt-sdb"]);
    assert!(sim.mappings().is_empty());
    sim.runner.clear_calls();
    close_volume(&sim.context(), &rec, deadline()).unwrap();
    assert!(sim.runner.calls().is_empty());

    // The next attach opens the header written the first time: no format.
    let rec2 = open_volume(&sim.context(), &luks(), &keys(), &dev, deadline()).unwrap();
    assert_eq!(rec2.encryption, rec.encryption);
    assert_eq!(
        calls(&sim),
        ["cryptsetup luksOpen --key-file=- /dev/sdb crypt-sdb <stdin ***>"]
    );
    assert_eq!(sim.formats(), ["sdb"]);
}

#[test]
fn luks2_formats_luks2_and_extend_resizes_with_the_key_on_stdin() {
    let sim = CryptSim::new();
    let dev = disk(&sim, "sdc");
    let rec = open_volume(&sim.context(), &luks2(), &keys(), &dev, deadline()).unwrap();
    assert!(calls(&sim).contains(
        &"cryptsetup --batch-mode luksFormat --type luks2 --key-file=- /dev/sdc <stdin ***>"
            .to_string()
    ));
    assert_eq!(sim.header("sdc").as_deref(), Some("luks2"));
    sim.runner.clear_calls();
    sim.fake.set_block_size("sdc", 128 * MIB);
    let size = extend_volume(&sim.context(), &luks2(), &keys(), &rec, deadline()).unwrap();
    assert_eq!(size, 128 * MIB - LUKS2_OFFSET);
    assert_eq!(
        calls(&sim),
        ["cryptsetup resize --key-file=- crypt-sdc <stdin ***>"]
    );
    assert_key_only_on_stdin(&sim);
    close_volume(&sim.context(), &rec, deadline()).unwrap();
    // Extend with nothing open is a typed error.
    let e = extend_volume(&sim.context(), &luks2(), &keys(), &rec, deadline()).unwrap_err();
    assert_eq!(e.kind(), "record_mismatch", "{e}");
}

#[test]
fn plain_is_created_and_removed_as_os_brick_does() {
    let sim = CryptSim::new();
    let dev = disk(&sim, "sdd");
    let rec = open_volume(&sim.context(), &plain(), &keys(), &dev, deadline()).unwrap();
    assert_eq!(
        calls(&sim),
        ["cryptsetup create --key-file=- --cipher aes-cbc-essiv:sha256 --key-size 256 crypt-sdd /dev/sdd <stdin ***>"]
    );
    assert_eq!(sim.opened_with("crypt-sdd").as_deref(), Some(PASSPHRASE));
    assert_eq!(sim.formats(), Vec::<String>::new(), "plain has no header");
    assert_eq!(
        rec.encryption.as_ref().unwrap().provider,
        EncryptionProvider::Plain
    );
    sim.runner.clear_calls();
    sim.fake.set_block_size("sdd", 96 * MIB);
    let size = extend_volume(&sim.context(), &plain(), &keys(), &rec, deadline()).unwrap();
    assert_eq!(size, 96 * MIB);
    assert_eq!(calls(&sim), ["cryptsetup resize crypt-sdd"]);
    sim.runner.clear_calls();
    close_volume(&sim.context(), &rec, deadline()).unwrap();
    assert_eq!(calls(&sim), ["cryptsetup remove crypt-sdd"]);
    assert!(sim.mappings().is_empty());
}

#[test]
fn a_device_with_any_signature_is_never_formatted() {
    for sig in [
        "UUID=5b7c\nTYPE=ext4\nUSAGE=filesystem",
        "PTUUID=0c3a\nPTTYPE=gpt",
        "TYPE=xfs",
    ] {
        let sim = CryptSim::new();
        let dev = disk(&sim, "sdb");
        sim.set_signature("sdb", sig);
        let e = open_volume(&sim.context(), &luks2(), &keys(), &dev, deadline()).unwrap_err();
        match &e {
            Error::DeviceHasSignature { device, signature } => {
                assert_eq!(device, Path::new("/dev/sdb"));
                let want = sig
                    .lines()
                    .filter(|l| {
                        l.starts_with("TYPE=")
                            || l.starts_with("PTTYPE=")
                            || l.starts_with("USAGE=")
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                assert_eq!(signature, &want);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.kind(), "device_has_signature");
        assert_eq!(sim.runner.count("luksFormat"), 0, "nothing written");
        assert!(sim.formats().is_empty());
        assert!(sim.mappings().is_empty());
        assert!(!e.chain().contains(PASSPHRASE));
    }
}

#[test]
fn a_wrong_key_is_typed_and_leaves_nothing_open() {
    let sim = CryptSim::new();
    let dev = disk(&sim, "sdb");
    sim.put_header("sdb", "luks1", "another passphrase");
    let e = open_volume(&sim.context(), &luks(), &keys(), &dev, deadline()).unwrap_err();
    assert!(
        matches!(&e, Error::WrongKey { device } if device == Path::new("/dev/sdb")),
        "{e:?}"
    );
    assert_eq!(e.kind(), "wrong_key");
    assert!(sim.mappings().is_empty());
    assert_eq!(sim.runner.count("luksFormat"), 0);
    assert_eq!(sim.runner.count("isLuks"), 0);
    assert!(!e.chain().contains(PASSPHRASE) && !format!("{e:?}").contains(PASSPHRASE));
    // A key the key manager lacks: typed, and nothing run at all.
    sim.runner.clear_calls();
    let other = meta(r#"{"provider": "luks", "encryption_key_id": "k2"}"#);
    let e = open_volume(&sim.context(), &other, &keys(), &dev, deadline()).unwrap_err();
    assert_eq!(e.kind(), "key_not_found");
    assert!(sim.runner.calls().is_empty());
}

#[test]
fn a_failed_open_is_rolled_back() {
    let sim = CryptSim::new();
    let dev = disk(&sim, "sdb");
    sim.put_header("sdb", "luks2", PASSPHRASE);
    // The kernel made the mapping, then cryptsetup failed (killed, or an error after).
    sim.fail_after_mapping(3);
    let e = open_volume(&sim.context(), &luks2(), &keys(), &dev, deadline()).unwrap_err();
    assert_eq!(e.kind(), "command_failed", "{e}");
    assert!(sim.mappings().is_empty(), "{:?}", sim.mappings());
    assert_eq!(
        calls(&sim),
        [
            "cryptsetup luksOpen --key-file=- /dev/sdb crypt-sdb <stdin ***>",
            "cryptsetup luksClose crypt-sdb",
        ]
    );
    // Plain the same.
    let sim = CryptSim::new();
    let dev = disk(&sim, "sdb");
    sim.fail_after_mapping(1);
    open_volume(&sim.context(), &plain(), &keys(), &dev, deadline()).unwrap_err();
    assert!(sim.mappings().is_empty());
    assert_eq!(sim.runner.count("cryptsetup remove crypt-sdb"), 1);
}

#[test]
fn mappings_os_brick_opened_are_recognised_by_every_name_it_gives() {
    // os-brick's current name, its old name without the prefix, over /dev/sdb.
    for name in ["crypt-sdb", "sdb"] {
        let sim = CryptSim::new();
        let dev = disk(&sim, "sdb");
        sim.put_header("sdb", "luks1", PASSPHRASE);
        let dm = sim.open_mapping(name, "sdb", "LUKS1");
        let rec = open_volume(&sim.context(), &luks(), &keys(), &dev, deadline()).unwrap();
        assert!(sim.runner.calls().is_empty(), "reused, not reopened");
        let enc = rec.encryption.clone().unwrap();
        assert_eq!(enc.name, name);
        assert_eq!(enc.device, Path::new("/dev/mapper").join(name));
        assert_eq!(sim.mappings()[0].1, dm);
        // os-brick's own device_info (no protocol, no encryption) detaches it too.
        let os_brick = DeviceRecord::from_json(r#"{"type": "block", "path": "/dev/sdb"}"#).unwrap();
        close_volume(&sim.context(), &os_brick, deadline()).unwrap();
        assert_eq!(calls(&sim), [format!("cryptsetup luksClose {name}")]);
        assert!(sim.mappings().is_empty());
    }
    // A multipath volume: os-brick's path is /dev/dm-N, so crypt-dm-N, or the old dm-N.
    for old in [false, true] {
        let sim = CryptSim::new();
        sim.add_disk("sdb", 64 * MIB);
        sim.add_disk("sdc", 64 * MIB);
        let map = sim
            .fake
            .add_multipath_map("36001405aaaa", "36001405aaaa", &["sdb", "sdc"]);
        let dev = DeviceRecord::block(Protocol::Iscsi, format!("/dev/{map}"), None);
        let name = if old {
            map.clone()
        } else {
            format!("crypt-{map}")
        };
        sim.open_mapping(&name, &map, "LUKS2");
        let rec = open_volume(&sim.context(), &luks2(), &keys(), &dev, deadline()).unwrap();
        assert_eq!(rec.encryption.as_ref().unwrap().name, name);
        assert!(sim.runner.calls().is_empty());
        close_volume(&sim.context(), &rec, deadline()).unwrap();
        assert!(sim.mappings().is_empty());
    }
}

#[test]
fn a_mapping_os_brick_opened_under_its_own_link_is_reused_and_its_link_removed_on_close() {
    // A connection_info with `encrypted: true`: os-brick hands its encryptor the link
    // /dev/disk/by-id/os-brick+dev+dm-N, names the mapping after it and points it there.
    let sim = CryptSim::new();
    sim.add_disk("sdb", 64 * MIB);
    sim.add_disk("sdc", 64 * MIB);
    let map = sim
        .fake
        .add_multipath_map("36001405abab", "36001405abab", &["sdb", "sdc"]);
    let name = format!("crypt-os-brick+dev+{map}");
    sim.open_mapping(&name, &map, "LUKS1");
    let by_id = sim.fake.root().join("dev/disk/by-id");
    std::fs::create_dir_all(&by_id).unwrap();
    let link = by_id.join(format!("os-brick+dev+{map}"));
    std::os::unix::fs::symlink(format!("/dev/mapper/{name}"), &link).unwrap();
    // Another link of that shape that leads elsewhere is not os-brick's for this mapping.
    let other = by_id.join("os-brick+dev+sdz");
    std::os::unix::fs::symlink("/dev/sdz", &other).unwrap();

    let dev = DeviceRecord::block(Protocol::Iscsi, format!("/dev/{map}"), None);
    let rec = open_volume(&sim.context(), &luks(), &keys(), &dev, deadline()).unwrap();
    assert_eq!(rec.encryption.as_ref().unwrap().name, name);
    assert!(sim.runner.calls().is_empty(), "reused, not reopened");
    close_volume(&sim.context(), &rec, deadline()).unwrap();
    assert_eq!(calls(&sim), [format!("cryptsetup luksClose {name}")]);
    assert!(sim.mappings().is_empty());
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "os-brick's link is removed"
    );
    assert!(
        std::fs::symlink_metadata(&other).is_ok(),
        "a link to something else stays"
    );
}

#[test]
fn a_mapping_on_the_map_is_found_from_one_of_its_paths() {
    // What a connector reports of a multipath volume are its paths; the mapping sits on
    // the map.
    let sim = CryptSim::new();
    sim.add_disk("sdb", 64 * MIB);
    sim.add_disk("sdc", 64 * MIB);
    let map = sim
        .fake
        .add_multipath_map("36001405eeee", "36001405eeee", &["sdb", "sdc"]);
    let on_map = DeviceRecord::block(Protocol::Iscsi, format!("/dev/{map}"), None);
    let rec = open_volume(&sim.context(), &luks2(), &keys(), &on_map, deadline()).unwrap();
    assert_eq!(
        rec.encryption.as_ref().unwrap().name,
        format!("crypt-{map}")
    );
    let path = DeviceRecord::block(Protocol::Iscsi, "/dev/sdc", None);
    sim.fake.set_block_size("sdb", 80 * MIB);
    sim.fake.set_block_size(&map, 80 * MIB);
    assert_eq!(
        extend_volume(&sim.context(), &luks2(), &keys(), &path, deadline()).unwrap(),
        80 * MIB - LUKS2_OFFSET
    );
    close_volume(&sim.context(), &path, deadline()).unwrap();
    assert!(sim.mappings().is_empty());
}

#[test]
fn the_multipath_id_name_is_recognised() {
    let sim = CryptSim::new();
    sim.add_disk("sdb", 64 * MIB);
    let map = sim
        .fake
        .add_multipath_map("mpatha", "36001405cccc", &["sdb"]);
    let mut dev = DeviceRecord::block(Protocol::Iscsi, format!("/dev/{map}"), None);
    dev.multipath_id = Some("36001405cccc".into());
    sim.open_mapping("36001405cccc", &map, "LUKS1");
    let rec = open_volume(&sim.context(), &luks(), &keys(), &dev, deadline()).unwrap();
    assert_eq!(rec.encryption.as_ref().unwrap().name, "36001405cccc");
    assert!(sim.runner.calls().is_empty());
    close_volume(&sim.context(), &rec, deadline()).unwrap();
    assert_eq!(calls(&sim), ["cryptsetup luksClose 36001405cccc"]);
}

#[test]
fn close_refuses_a_mapping_not_over_the_volumes_device() {
    let sim = CryptSim::new();
    let dev = disk(&sim, "sdb");
    sim.add_disk("sdc", 64 * MIB);
    // The record says crypt-sdb, but the crypt-sdb on the host sits on sdc (sdb was
    // renamed after a reboot, say).
    sim.open_mapping("crypt-sdb", "sdc", "LUKS1");
    let rec = DeviceRecord {
        encryption: Some(EncryptionRecord {
            provider: EncryptionProvider::Luks,
            name: "crypt-sdb".into(),
            device: "/dev/mapper/crypt-sdb".into(),
            raw: "/dev/sdb".into(),
        }),
        ..dev.clone()
    };
    let e = close_volume(&sim.context(), &rec, deadline()).unwrap_err();
    assert_eq!(e.kind(), "record_mismatch", "{e}");
    assert!(e.to_string().contains("sdc"), "{e}");
    assert_eq!(sim.mappings().len(), 1, "left alone");
    assert_eq!(sim.runner.count("cryptsetup"), 0);
    // Opening the volume does not take it either: the name is taken elsewhere.
    let e = open_volume(&sim.context(), &luks(), &keys(), &dev, deadline()).unwrap_err();
    assert_eq!(e.kind(), "device_in_use", "{e}");
    assert_eq!(sim.runner.count("cryptsetup"), 0);
    // A record whose device is gone: the mapping of its name cannot be proven its own.
    let gone = DeviceRecord {
        path: "/dev/sdz".into(),
        ..rec.clone()
    };
    let e = close_volume(&sim.context(), &gone, deadline()).unwrap_err();
    assert_eq!(e.kind(), "record_mismatch", "{e}");
    assert_eq!(sim.mappings().len(), 1);
    // Without a recorded name and nothing of the volume open: nothing to do.
    let plain_rec = DeviceRecord {
        encryption: None,
        ..gone
    };
    close_volume(&sim.context(), &plain_rec, deadline()).unwrap();
    assert_eq!(sim.mappings().len(), 1);
}

#[test]
fn a_foreign_dm_crypt_holder_is_in_use_and_never_closed() {
    let sim = CryptSim::new();
    let dev = disk(&sim, "sdb");
    sim.open_mapping("someone-elses", "sdb", "LUKS2");
    let e = open_volume(&sim.context(), &luks2(), &keys(), &dev, deadline()).unwrap_err();
    assert_eq!(e.kind(), "device_in_use", "{e}");
    assert!(e.to_string().contains("someone-elses"), "{e}");
    close_volume(&sim.context(), &dev, deadline()).unwrap();
    assert_eq!(sim.mappings().len(), 1);
    assert_eq!(sim.runner.count("cryptsetup"), 0);
    // A path a dm-multipath map holds (multipathd took it): refused before anything is
    // written, naming the map.
    let sim = CryptSim::new();
    let dev = disk(&sim, "sdb");
    sim.fake
        .add_multipath_map("36001405dddd", "36001405dddd", &["sdb"]);
    let e = open_volume(&sim.context(), &luks2(), &keys(), &dev, deadline()).unwrap_err();
    assert_eq!(e.kind(), "device_in_use", "{e}");
    assert!(e.to_string().contains("36001405dddd"), "{e}");
    assert_eq!(sim.runner.count("cryptsetup"), 0);
    // A mapping of the volume's name but the wrong type for the metadata.
    let sim = CryptSim::new();
    let dev = disk(&sim, "sdb");
    sim.open_mapping("crypt-sdb", "sdb", "PLAIN");
    let e = open_volume(&sim.context(), &luks(), &keys(), &dev, deadline()).unwrap_err();
    assert_eq!(e.kind(), "device_in_use", "{e}");
}

#[test]
fn nothing_to_do_for_back_end_or_no_op_encryption_and_network_volumes_are_refused() {
    let sim = CryptSim::new();
    let dev = disk(&sim, "sdb");
    for m in [
        r#"{"provider": "luks", "control_location": "back-end"}"#,
        r#"{"provider": "NoOpEncryptor", "encryption_key_id": "k1"}"#,
    ] {
        let m = meta(m);
        assert_eq!(
            open_volume(&sim.context(), &m, &keys(), &dev, deadline()).unwrap(),
            dev
        );
        assert_eq!(
            extend_volume(&sim.context(), &m, &keys(), &dev, deadline()).unwrap(),
            64 * MIB
        );
    }
    assert!(sim.runner.calls().is_empty());
    let mut net = DeviceRecord::block(Protocol::Rbd, "rbd:volumes/vol-1", Some("vol-1".into()));
    net.kind = DeviceKind::Network;
    let e = open_volume(&sim.context(), &luks(), &keys(), &net, deadline()).unwrap_err();
    assert_eq!(e.kind(), "encryption_not_supported", "{e}");
    close_volume(&sim.context(), &net, deadline()).unwrap();
}

#[test]
fn an_encrypted_iscsi_volume_end_to_end() {
    let iscsi = IscsiSim::new();
    iscsi.add_target("192.0.2.10:3260", &[(1, WWID_1, 64 * MIB)]);
    let sim = CryptSim::on(&iscsi.fake, &iscsi.runner);
    let info = single("192.0.2.10:3260", 1, "vol-1");
    let c = connector_for(Protocol::Iscsi, iscsi.options()).unwrap();
    let attached = c.connect_volume(&info).unwrap();
    assert!(attached.path.starts_with("/dev/disk/by-path"));
    let rec = open_volume(&iscsi.context(), &luks2(), &keys(), &attached, deadline()).unwrap();
    let enc = rec.encryption.clone().unwrap();
    let sd = enc.raw.file_name().unwrap().to_str().unwrap().to_string();
    assert!(sd.starts_with("sd"), "{sd}");
    assert_eq!(
        enc.name,
        format!("crypt-{sd}"),
        "os-brick's name: crypt-<sdX>"
    );
    assert_eq!(rec.path, attached.path);
    // Persisted and read back, the record still closes the mapping.
    let saved = DeviceRecord::from_json(&rec.to_json().unwrap()).unwrap();
    // The connector will not remove a device dm-crypt holds...
    let e = c
        .disconnect_volume(&info, Some(&saved), DisconnectOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), "device_in_use", "{e}");
    // ... so the mapping goes first.
    close_volume(&iscsi.context(), &saved, deadline()).unwrap();
    c.disconnect_volume(&info, Some(&saved), DisconnectOptions::default())
        .unwrap();
    assert!(sim.mappings().is_empty());
    iscsi.assert_clean();
}

fn wrapped(iscsi: &IscsiSim, meta: EncryptionMetadata) -> EncryptedConnector {
    EncryptedConnector::for_protocol(Protocol::Iscsi, iscsi.options(), Arc::new(keys()), meta)
        .unwrap()
}

#[test]
fn the_encrypted_connector_attaches_detaches_and_extends_in_one_call() {
    let iscsi = IscsiSim::new();
    iscsi.add_target("192.0.2.10:3260", &[(1, WWID_1, 64 * MIB)]);
    let sim = CryptSim::on(&iscsi.fake, &iscsi.runner);
    let info = single("192.0.2.10:3260", 1, "vol-1");
    let c = wrapped(&iscsi, luks2());
    let rec = c.connect_volume(&info).unwrap();
    let enc = rec.encryption.clone().unwrap();
    assert_eq!(sim.mappings().len(), 1);
    assert_eq!(sim.formats().len(), 1);
    iscsi.resize(WWID_1, 128 * MIB);
    assert_eq!(c.extend_volume(&info).unwrap(), 128 * MIB - LUKS2_OFFSET);
    assert_eq!(
        iscsi
            .runner
            .count(&format!("cryptsetup resize --key-file=- {}", enc.name)),
        1
    );
    // Without the record: the mapping found on the volume's paths is closed first.
    c.disconnect_volume(&info, None, DisconnectOptions::default())
        .unwrap();
    assert!(sim.mappings().is_empty());
    iscsi.assert_clean();
    // The next attach opens what the first formatted.
    let rec2 = c.connect_volume(&info).unwrap();
    assert_eq!(sim.formats().len(), 1);
    c.disconnect_volume(&info, Some(&rec2), DisconnectOptions::default())
        .unwrap();
    iscsi.assert_clean();
}

#[test]
fn the_encrypted_connector_detaches_again_when_the_open_fails() {
    let iscsi = IscsiSim::new();
    iscsi.add_target("192.0.2.10:3260", &[(1, WWID_1, 64 * MIB)]);
    let sim = CryptSim::on(&iscsi.fake, &iscsi.runner);
    let info = single("192.0.2.10:3260", 1, "vol-1");
    // What is on the LUN is set up while it is attached (the simulator keys it by WWID).
    let c = wrapped(&iscsi, luks());
    let prepare = |f: &dyn Fn(&str)| {
        let probe = c.inner().connect_volume(&info).unwrap();
        let host = iscsi.fake.host();
        let sd = host
            .canonical(&host.map_dev_path(&probe.path))
            .unwrap()
            .unwrap();
        f(sd.file_name().unwrap().to_str().unwrap());
        c.inner()
            .disconnect_volume(&info, Some(&probe), DisconnectOptions::default())
            .unwrap();
    };
    // The volume already carries a filesystem: refused, and the LUN is detached again.
    prepare(&|sd| sim.set_signature(sd, "TYPE=ext4"));
    let e = c.connect_volume(&info).unwrap_err();
    assert_eq!(e.kind(), "device_has_signature", "{e}");
    assert!(sim.mappings().is_empty());
    assert_eq!(iscsi.runner.count("luksFormat"), 0);
    iscsi.assert_clean();
    // A wrong key the same, and the key never on a command line.
    prepare(&|sd| {
        sim.set_signature(sd, "");
        sim.put_header(sd, "luks1", "not this one");
    });
    let e = c.connect_volume(&info).unwrap_err();
    assert_eq!(e.kind(), "wrong_key", "{e}");
    assert!(sim.mappings().is_empty());
    iscsi.assert_clean();
    assert!(iscsi.runner.calls().iter().all(|c| !c.contains(PASSPHRASE)));
}

#[test]
fn nvme_and_rbd_volumes_get_os_bricks_names() {
    use hostbrick::testing::sim::nvme::{volume, NvmeSim, NQN, UUID_1};
    use hostbrick::testing::sim::rbd::{rbd_info, RbdSim, KEY};

    let nvme = NvmeSim::new(true);
    nvme.add_subsystem(NQN, &["192.0.2.20:4420"], &[(1, UUID_1, 64 * MIB)]);
    let crypt = CryptSim::on(&nvme.fake, &nvme.runner);
    let info = volume(UUID_1, &["192.0.2.20:4420"], "vol-n");
    let c = EncryptedConnector::for_protocol(
        Protocol::NvmeOf,
        nvme.options(),
        Arc::new(keys()),
        luks(),
    )
    .unwrap();
    let rec = c.connect_volume(&info).unwrap();
    let head = rec.path.file_name().unwrap().to_str().unwrap().to_string();
    assert!(head.starts_with("nvme"), "{head}");
    assert_eq!(
        rec.encryption.as_ref().unwrap().name,
        format!("crypt-{head}"),
        "os-brick's /dev/nvmeXnY"
    );
    c.disconnect_volume(&info, Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert!(crypt.mappings().is_empty());
    nvme.assert_clean();

    let rbd = RbdSim::new();
    rbd.add_image("volumes/volume-0001", 64 * MIB);
    let crypt = CryptSim::on(&rbd.fake, &rbd.runner);
    let info = rbd_info("volumes/volume-0001", KEY);
    let c =
        EncryptedConnector::for_protocol(Protocol::Rbd, rbd.options(), Arc::new(keys()), plain())
            .unwrap();
    let rec = c.connect_volume(&info).unwrap();
    assert_eq!(rec.path, Path::new("/dev/rbd0"));
    assert_eq!(
        rec.encryption.as_ref().unwrap().name,
        "crypt-volume-0001",
        "os-brick's /dev/rbd/<pool>/<image>"
    );
    c.disconnect_volume(&info, Some(&rec), DisconnectOptions::default())
        .unwrap();
    assert!(crypt.mappings().is_empty());
    assert!(rbd.mapped().is_empty());
}

/// A connector whose volume is a disk of a crypt simulator, and whose disconnect can fail.
#[derive(Debug)]
struct DiskConnector {
    record: DeviceRecord,
    fail_disconnect: bool,
    disconnects: std::sync::Mutex<usize>,
}

impl Connector for DiskConnector {
    fn protocol(&self) -> Protocol {
        Protocol::Local
    }
    fn connect_volume(&self, _: &hostbrick::ConnectionInfo) -> hostbrick::Result<DeviceRecord> {
        Ok(self.record.clone())
    }
    fn disconnect_volume(
        &self,
        _: &hostbrick::ConnectionInfo,
        _: Option<&DeviceRecord>,
        _: DisconnectOptions,
    ) -> hostbrick::Result<hostbrick::Disconnected> {
        *self.disconnects.lock().unwrap() += 1;
        if self.fail_disconnect {
            return Err(Error::DeviceInUse {
                device: "sdb".into(),
                reason: "simulated".into(),
            });
        }
        Ok(hostbrick::Disconnected::default())
    }
    fn extend_volume(&self, _: &hostbrick::ConnectionInfo) -> hostbrick::Result<u64> {
        Ok(0)
    }
    fn get_volume_paths(
        &self,
        _: &hostbrick::ConnectionInfo,
    ) -> hostbrick::Result<Vec<std::path::PathBuf>> {
        Ok(vec![self.record.path.clone()])
    }
    fn get_search_path(&self) -> Option<std::path::PathBuf> {
        None
    }
    fn get_all_available_volumes(&self) -> hostbrick::Result<Vec<std::path::PathBuf>> {
        Ok(vec![])
    }
    fn check_valid_device(&self, _: &Path) -> hostbrick::Result<()> {
        Ok(())
    }
}

fn local_info() -> hostbrick::ConnectionInfo {
    hostbrick::ConnectionInfo::from_json(
        r#"{"driver_volume_type": "local", "data": {"device_path": "/dev/sdb"}}"#,
    )
    .unwrap()
}

#[test]
fn a_failed_open_whose_detach_fails_too_reports_both() {
    let sim = CryptSim::new();
    let record = disk(&sim, "sdb");
    sim.set_signature("sdb", "TYPE=ext4");
    let inner = Arc::new(DiskConnector {
        record,
        fail_disconnect: true,
        disconnects: Default::default(),
    });
    let c = EncryptedConnector::new(
        inner.clone() as Arc<dyn Connector>,
        sim.context(),
        Duration::from_secs(5),
        Arc::new(keys()),
        luks(),
    );
    let e = c.connect_volume(&local_info()).unwrap_err();
    match &e {
        Error::EncryptedAttach { cause, rollback } => {
            assert_eq!(cause.kind(), "device_has_signature");
            assert_eq!(rollback.len(), 1);
            assert_eq!(rollback[0].error.kind(), "device_in_use");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.kind(), "encrypted_attach");
    assert!(e.chain().contains("rollback incomplete"), "{}", e.chain());
    assert_eq!(*inner.disconnects.lock().unwrap(), 1);
}

#[test]
fn a_forced_disconnect_carries_a_failed_close_past_and_reports_it() {
    let sim = CryptSim::new();
    let record = disk(&sim, "sdb");
    let inner = Arc::new(DiskConnector {
        record,
        fail_disconnect: false,
        disconnects: Default::default(),
    });
    let c = EncryptedConnector::new(
        inner.clone() as Arc<dyn Connector>,
        sim.context(),
        Duration::from_secs(5),
        Arc::new(keys()),
        luks2(),
    );
    let rec = c.connect_volume(&local_info()).unwrap();
    // Something holds the decrypted device (LVM on it, say): the close is refused.
    let dm = sim.mappings()[0].1.clone();
    sim.fake
        .add_dm_device("vg-lv", "LVM-xyz", &[dm.as_str()], MIB);
    let e = c
        .disconnect_volume(&local_info(), Some(&rec), DisconnectOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), "device_in_use", "{e}");
    assert_eq!(*inner.disconnects.lock().unwrap(), 0, "nothing detached");
    // force: detached anyway, the close's failure reported at the end.
    let force = DisconnectOptions {
        force: true,
        ignore_errors: false,
    };
    let e = c
        .disconnect_volume(&local_info(), Some(&rec), force)
        .unwrap_err();
    assert_eq!(e.kind(), "disconnect_incomplete", "{e}");
    assert_eq!(*inner.disconnects.lock().unwrap(), 1);
    // force + ignore_errors: success, the failure listed.
    let done = c
        .disconnect_volume(
            &local_info(),
            Some(&rec),
            DisconnectOptions {
                force: true,
                ignore_errors: true,
            },
        )
        .unwrap();
    assert_eq!(done.failures.len(), 1);
    assert_eq!(done.failures[0].kind(), "device_in_use");
}
