//! Attaching encrypted volumes to a guest: native (QEMU) decryption with a libvirt secret,
//! its every step's rollback, leftovers of a crash, the refusals before anything is
//! connected; and the virsh-backed secret store against a scripted runner (the value only
//! ever in a 0600 file that is gone when virsh returns).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hostbrick::attach::{Attachment, ConnectorFactory, Decryption, Secrets, VirshSecrets};
use hostbrick::encryption::{EncryptionKey, EncryptionMetadata, KeyManager};
use hostbrick::libvirt::EncryptionFormat;
use hostbrick::testing::sim::crypt::CryptSim;
use hostbrick::testing::sim::MIB;
use hostbrick::testing::{validate_disk_xml, FakeHost, FakeRunner};
use hostbrick::{
    AttachRequest, AttachmentRecord, CommandOutput, ConnectionInfo, Connector, ConnectorProperties,
    DeviceRecord, DisconnectOptions, Disconnected, DiskConfig, Domain, DomainFlags, Error,
    HostContext, LockDir, Orchestrator, Protocol, Result, Secret, StorageService,
};
use serde_json::json;

/// The volume's key and the passphrase QEMU gets (its hex form, as os-brick derives it).
const KEY: [u8; 4] = [0x5e, 0xc7, 0xe7, 0x01];
const PASSPHRASE: &str = "5ec7e701";

#[derive(Default)]
struct World {
    failing: Mutex<BTreeSet<&'static str>>,
    attachments: Mutex<BTreeSet<String>>,
    connected: Mutex<BTreeSet<String>>,
    guest_disks: Mutex<BTreeMap<String, String>>,
    /// uuid → (volume, value)
    secrets: Mutex<BTreeMap<String, (String, Option<String>)>>,
    next_uuid: Mutex<u32>,
}

impl World {
    fn check(&self, op: &'static str) -> Result<()> {
        if self.failing.lock().unwrap().contains(op) {
            Err(Error::InvalidArgument {
                name: op.into(),
                reason: "injected failure".into(),
            })
        } else {
            Ok(())
        }
    }
    fn fail(&self, op: &'static str) {
        self.failing.lock().unwrap().insert(op);
    }
    fn heal(&self) {
        self.failing.lock().unwrap().clear();
    }
    fn assert_clean(&self, context: &str) {
        assert!(
            self.attachments.lock().unwrap().is_empty(),
            "{context}: attachments left"
        );
        assert!(
            self.connected.lock().unwrap().is_empty(),
            "{context}: still connected"
        );
        assert!(
            self.guest_disks.lock().unwrap().is_empty(),
            "{context}: disks left in the guest"
        );
        assert!(
            self.secrets.lock().unwrap().is_empty(),
            "{context}: libvirt secrets left: {:?}",
            self.secrets.lock().unwrap().keys()
        );
    }
}

struct Storage(Arc<World>);

impl StorageService for Storage {
    fn create_attachment(
        &self,
        volume_id: &str,
        instance: &str,
        _connector: &ConnectorProperties,
    ) -> Result<Attachment> {
        let id = format!("att-{volume_id}-{instance}");
        self.0.attachments.lock().unwrap().insert(id.clone());
        // `NAME-on-sdX` is on the (simulated) disk sdX.
        let path = match volume_id.rsplit_once("-on-") {
            Some((_, dev)) => format!("/dev/{dev}"),
            None => format!("/dev/fake/{volume_id}"),
        };
        Ok(Attachment {
            id,
            connection_info: json!({"driver_volume_type": "local",
                "data": {"device_path": path, "volume_id": volume_id,
                         "encrypted": volume_id != "plain"}}),
        })
    }
    fn complete_attachment(&self, _id: &str) -> Result<()> {
        self.0.check("complete_attachment")
    }
    fn delete_attachment(&self, id: &str) -> Result<()> {
        self.0.attachments.lock().unwrap().remove(id);
        Ok(())
    }
    fn encryption(&self, volume_id: &str) -> Result<Option<EncryptionMetadata>> {
        let provider = match volume_id {
            "plain" | "lost-metadata" => return Ok(None),
            v if v.starts_with("luks2") => "luks2",
            v if v.starts_with("nokey") => {
                return EncryptionMetadata::from_value(&json!({"provider": "luks",
                    "encryption_key_id": "no-such-key"}))
            }
            _ => "luks",
        };
        EncryptionMetadata::from_value(&json!({"provider": provider, "cipher": "aes-xts-plain64",
            "key_size": 256, "control_location": "front-end", "encryption_key_id": "key-1"}))
    }
}

struct Guest(Arc<World>);

impl Domain for Guest {
    fn name(&self) -> &str {
        "guest-1"
    }
    fn attach_device(&self, xml: &str, _flags: DomainFlags) -> Result<()> {
        self.0.check("attach_device")?;
        if self.0.failing.lock().unwrap().contains("qemu_wrong_key") {
            // What virsh reports when QEMU's luks driver rejects the passphrase.
            return Err(Error::CommandFailed {
                program: "virsh".into(),
                args: "attach-device guest-1 /tmp/x.xml --live".into(),
                status: hostbrick::ExitStatus::Code(1),
                stdout: String::new(),
                stderr: "error: Failed to attach device from /tmp/x.xml\nerror: internal \
                         error: unable to execute QEMU command 'blockdev-add': Invalid \
                         password, cannot unlock any keyslot\n"
                    .into(),
            });
        }
        validate_disk_xml(xml).unwrap();
        let disk = DiskConfig::from_xml(xml)?;
        // libvirt refuses a disk whose secret it does not have.
        if let Some(enc) = &disk.encryption {
            let secrets = self.0.secrets.lock().unwrap();
            let value = secrets.get(&enc.secret_uuid).and_then(|(_, v)| v.clone());
            assert_eq!(
                value.as_deref(),
                Some(PASSPHRASE),
                "secret {}",
                enc.secret_uuid
            );
        }
        self.0
            .guest_disks
            .lock()
            .unwrap()
            .insert(disk.target.dev, xml.to_string());
        Ok(())
    }
    fn detach_device(&self, xml: &str, _flags: DomainFlags) -> Result<()> {
        self.0.check("detach_device")?;
        let target = DiskConfig::from_xml(xml)?.target.dev;
        self.0.guest_disks.lock().unwrap().remove(&target);
        Ok(())
    }
    fn disk_targets(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self.0.guest_disks.lock().unwrap().keys().cloned().collect();
        names.push("vda".into());
        Ok(names)
    }
}

struct FakeSecrets(Arc<World>);

impl Secrets for FakeSecrets {
    fn find_volume_secret(&self, volume_id: &str) -> Result<Option<String>> {
        Ok(self
            .0
            .secrets
            .lock()
            .unwrap()
            .iter()
            .find(|(_, (v, _))| v == volume_id)
            .map(|(u, _)| u.clone()))
    }
    fn define_volume_secret(&self, volume_id: &str) -> Result<String> {
        self.0.check("define_secret")?;
        let mut n = self.0.next_uuid.lock().unwrap();
        *n += 1;
        let uuid = format!("00000000-0000-4000-8000-{:012x}", *n);
        let mut secrets = self.0.secrets.lock().unwrap();
        assert!(
            !secrets.values().any(|(v, _)| v == volume_id),
            "libvirt refuses a second secret with usage volume {volume_id}"
        );
        secrets.insert(uuid.clone(), (volume_id.to_string(), None));
        Ok(uuid)
    }
    fn set_value(&self, uuid: &str, value: &Secret) -> Result<()> {
        self.0.check("set_secret_value")?;
        let mut secrets = self.0.secrets.lock().unwrap();
        let s = secrets
            .get_mut(uuid)
            .expect("set_value of a defined secret");
        s.1 = Some(value.expose().to_string());
        Ok(())
    }
    fn undefine(&self, uuid: &str) -> Result<()> {
        self.0.check("undefine_secret")?;
        self.0.secrets.lock().unwrap().remove(uuid);
        Ok(())
    }
}

#[derive(Debug)]
struct Keys;

impl KeyManager for Keys {
    fn key(&self, key_id: &str) -> Result<EncryptionKey> {
        match key_id {
            "key-1" => Ok(EncryptionKey::symmetric(KEY.to_vec())),
            other => Err(Error::KeyNotFound {
                key_id: other.into(),
            }),
        }
    }
}

#[derive(Debug)]
struct Local(Arc<Shared>);

struct Shared(Arc<World>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("World")
    }
}

impl Connector for Local {
    fn protocol(&self) -> Protocol {
        Protocol::Local
    }
    fn connect_volume(&self, info: &ConnectionInfo) -> Result<DeviceRecord> {
        let w = &self.0 .0;
        let vol = info.volume_id().unwrap().to_string();
        w.connected.lock().unwrap().insert(vol.clone());
        Ok(DeviceRecord::block(
            Protocol::Local,
            info.local().unwrap().device_path.clone(),
            Some(vol),
        ))
    }
    fn disconnect_volume(
        &self,
        info: &ConnectionInfo,
        _device: Option<&DeviceRecord>,
        _options: DisconnectOptions,
    ) -> Result<Disconnected> {
        let w = &self.0 .0;
        w.check("disconnect_volume")?;
        w.connected
            .lock()
            .unwrap()
            .remove(info.volume_id().unwrap());
        Ok(Disconnected::default())
    }
    fn extend_volume(&self, _info: &ConnectionInfo) -> Result<u64> {
        Ok(0)
    }
    fn get_volume_paths(&self, _info: &ConnectionInfo) -> Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }
    fn get_search_path(&self) -> Option<PathBuf> {
        None
    }
    fn get_all_available_volumes(&self) -> Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }
    fn check_valid_device(&self, _path: &Path) -> Result<()> {
        Ok(())
    }
}

struct Factory(Arc<World>);

impl ConnectorFactory for Factory {
    fn connector(&self, _protocol: Protocol) -> Result<Box<dyn Connector>> {
        Ok(Box::new(Local(Arc::new(Shared(self.0.clone())))))
    }
}

struct Setup {
    world: Arc<World>,
    orch: Orchestrator,
    runner: Arc<FakeRunner>,
    sim: CryptSim,
    _locks: tempfile::TempDir,
}

/// The orchestrator with keys and secrets, on a host with simulated cryptsetup and blkid
/// and blank disks sdb..sde of 64 MiB.
fn sim_setup() -> Setup {
    let host = FakeHost::new();
    let runner = Arc::new(FakeRunner::new());
    let sim = CryptSim::on(&host, &runner);
    for d in ["sdb", "sdc", "sdd", "sde"] {
        sim.add_disk(d, 64 * MIB);
    }
    orchestrator(host, runner, sim)
}

/// The orchestrator with keys and secrets; `cryptsetup isLuks` says the fake devices are
/// LUKS1, except `/dev/fake/hdrtwo*` (LUKS2).
fn setup() -> Setup {
    let host = FakeHost::new();
    let runner = Arc::new(FakeRunner::new());
    let sim = CryptSim::on(&host, &runner);
    runner.on("cryptsetup", &["isLuks"], |c| {
        let luks2 = c.shown_args().contains("hdrtwo");
        let asks_luks1 = c.has_arg("luks1");
        if luks2 && asks_luks1 {
            CommandOutput::exit(1, "")
        } else {
            CommandOutput::ok("")
        }
    });
    orchestrator(host, runner, sim)
}

fn orchestrator(host: FakeHost, runner: Arc<FakeRunner>, sim: CryptSim) -> Setup {
    let world = Arc::new(World::default());
    let locks = tempfile::tempdir().unwrap();
    let props: ConnectorProperties = serde_json::from_value(json!({
        "platform": "x86_64", "os_type": "linux", "ip": "192.0.2.1", "host": "compute-1",
        "multipath": false, "enforce_multipath": false
    }))
    .unwrap();
    let orch = Orchestrator::new(
        Arc::new(Storage(world.clone())),
        Arc::new(Guest(world.clone())),
        Arc::new(Factory(world.clone())),
        props,
        LockDir::new(locks.path()),
    )
    .with_host(HostContext::new(host.host(), runner.clone()))
    .with_key_manager(Arc::new(Keys))
    .with_secrets(Arc::new(FakeSecrets(world.clone())));
    Setup {
        world,
        orch,
        runner,
        sim,
        _locks: locks,
    }
}

fn native(volume: &str) -> AttachRequest {
    let mut r = AttachRequest::new(volume);
    r.decryption = Decryption::Native;
    r
}

fn step_of(e: &Error) -> &'static str {
    match e {
        Error::Orchestration { step, .. } => step,
        other => panic!("not an orchestration error: {other:?}"),
    }
}

#[test]
fn native_luks_attach_defines_the_secret_and_detach_removes_it() {
    let s = setup();
    let rec = s.orch.attach(&native("vol-1")).unwrap();
    assert_eq!(rec.decryption, Some(Decryption::Native));
    let uuid = rec
        .secret_uuid
        .clone()
        .expect("the secret's uuid is recorded");
    // The secret: usage volume vol-1, the passphrase os-brick would derive.
    assert_eq!(
        s.world.secrets.lock().unwrap().get(&uuid),
        Some(&("vol-1".to_string(), Some(PASSPHRASE.to_string())))
    );
    // The guest's disk is the encrypted device, with QEMU's luks decryption.
    let disk = DiskConfig::from_xml(&rec.disk_xml).unwrap();
    assert_eq!(
        disk.source,
        hostbrick::libvirt::DiskSource::Block("/dev/fake/vol-1".into())
    );
    let enc = disk.encryption.unwrap();
    assert_eq!(
        (enc.format, enc.secret_uuid.as_str()),
        (EncryptionFormat::Luks, uuid.as_str())
    );
    assert_eq!(rec.device.encryption, None, "nothing opened on the host");
    assert_eq!(rec.encryption.as_ref().unwrap().key_id().unwrap(), "key-1");
    // The LUKS1 header was checked on the raw device; nothing was formatted or opened.
    assert_eq!(
        s.runner.calls(),
        ["cryptsetup isLuks /dev/fake/vol-1 --type luks1"]
    );
    // The passphrase is nowhere but in the secret.
    let saved = rec.to_json().unwrap();
    for text in [
        saved.clone(),
        format!("{rec:?}"),
        s.runner.calls().join("\n"),
    ] {
        assert!(!text.contains(PASSPHRASE), "{text}");
    }

    // After a restart the record detaches it and the secret goes.
    let back = AttachmentRecord::from_json(&saved).unwrap();
    assert_eq!(back, rec);
    s.orch.detach(&back).unwrap();
    s.world.assert_clean("after detach");
    // Again: harmless.
    s.orch.detach(&back).unwrap();
}

#[test]
fn a_failure_at_every_native_step_rolls_back_the_secret_too() {
    for (op, step) in [
        ("define_secret", "define_secret"),
        ("set_secret_value", "set_secret_value"),
        ("attach_device", "attach_device"),
        ("complete_attachment", "complete_attachment"),
    ] {
        let s = setup();
        s.world.fail(op);
        let err = s.orch.attach(&native("vol-1")).unwrap_err();
        assert_eq!(step_of(&err), step, "failing {op}");
        let Error::Orchestration { rollback, .. } = &err else {
            unreachable!()
        };
        assert!(rollback.is_empty(), "{op}: {rollback:?}");
        s.world.assert_clean(op);
        s.world.heal();
        s.orch.attach(&native("vol-1")).unwrap();
    }
}

#[test]
fn a_key_qemu_rejects_is_a_wrong_key_error_and_is_rolled_back() {
    let s = setup();
    s.world.fail("qemu_wrong_key");
    let e = s.orch.attach(&native("vol-1")).unwrap_err();
    assert_eq!(step_of(&e), "attach_device");
    match &e {
        Error::Orchestration {
            cause, rollback, ..
        } => {
            assert!(rollback.is_empty(), "{rollback:?}");
            match cause.as_ref() {
                Error::WrongKey { device } => assert_eq!(device, Path::new("/dev/fake/vol-1")),
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
    s.world.assert_clean("after the wrong key");
    // Another attach_device failure keeps its own error.
    s.world.heal();
    s.world.fail("attach_device");
    let e = s.orch.attach(&native("vol-1")).unwrap_err();
    assert!(
        matches!(&e, Error::Orchestration { cause, .. } if cause.kind() == "invalid_argument"),
        "{e:?}"
    );
}

#[test]
fn a_leftover_secret_of_a_crashed_attach_is_reused_and_removed() {
    let s = setup();
    // A crash after define: libvirt still has the volume's secret (without its value).
    let left = FakeSecrets(s.world.clone())
        .define_volume_secret("vol-1")
        .unwrap();
    let rec = s.orch.attach(&native("vol-1")).unwrap();
    assert_eq!(rec.secret_uuid.as_deref(), Some(left.as_str()));
    assert_eq!(s.world.secrets.lock().unwrap().len(), 1);
    // A failed attach leaves a secret it did not define in place...
    let s2 = setup();
    let left2 = FakeSecrets(s2.world.clone())
        .define_volume_secret("vol-1")
        .unwrap();
    s2.world.fail("attach_device");
    assert_eq!(
        step_of(&s2.orch.attach(&native("vol-1")).unwrap_err()),
        "attach_device"
    );
    assert!(s2.world.secrets.lock().unwrap().contains_key(&left2));
    // ...and a detach removes the volume's secret even when the record names another one.
    let mut other = rec.clone();
    other.secret_uuid = Some("00000000-0000-4000-8000-0000000000ff".into());
    s.orch.detach(&other).unwrap();
    s.world.assert_clean("after detach");
}

#[test]
fn a_failed_secret_undefine_is_finished_by_a_retried_detach() {
    let s = setup();
    let rec = s.orch.attach(&native("vol-1")).unwrap();
    s.world.fail("undefine_secret");
    let err = s.orch.detach(&rec).unwrap_err();
    assert_eq!(step_of(&err), "undefine_secret");
    // The host side is detached; only the secret (and the attachment) are left.
    assert!(s.world.guest_disks.lock().unwrap().is_empty());
    assert!(s.world.connected.lock().unwrap().is_empty());
    assert_eq!(s.world.secrets.lock().unwrap().len(), 1);
    s.world.heal();
    s.orch.detach(&rec).unwrap();
    s.world.assert_clean("after the retry");

    // A failed disconnect puts the disk back, with its secret still there.
    let rec = s.orch.attach(&native("vol-1")).unwrap();
    s.world.fail("disconnect_volume");
    assert_eq!(
        step_of(&s.orch.detach(&rec).unwrap_err()),
        "disconnect_volume"
    );
    assert!(s.world.guest_disks.lock().unwrap().contains_key("vdb"));
    assert_eq!(s.world.secrets.lock().unwrap().len(), 1);
}

#[test]
fn refusals_come_before_anything_is_connected() {
    let s = setup();
    // The connection_info says encrypted, the storage service has no metadata.
    let e = s.orch.attach(&native("lost-metadata")).unwrap_err();
    assert_eq!(step_of(&e), "get_encryption");
    assert!(
        e.chain().contains("no encryption metadata"),
        "{}",
        e.chain()
    );
    // No such key.
    let e = s.orch.attach(&native("nokey-1")).unwrap_err();
    assert_eq!(step_of(&e), "get_encryption");
    assert!(
        matches!(&e, Error::Orchestration { cause, .. } if cause.kind() == "key_not_found"),
        "{e:?}"
    );
    s.world.assert_clean("after the refusals");
    assert!(s.runner.calls().is_empty());

    // No key manager, or no secret store for native decryption.
    let bare = |with_keys: bool| {
        let w = Arc::new(World::default());
        let props: ConnectorProperties = serde_json::from_value(json!({
            "platform": "x86_64", "os_type": "linux", "ip": "192.0.2.1", "host": "h",
            "multipath": false, "enforce_multipath": false}))
        .unwrap();
        let locks = tempfile::tempdir().unwrap();
        let mut o = Orchestrator::new(
            Arc::new(Storage(w.clone())),
            Arc::new(Guest(w.clone())),
            Arc::new(Factory(w.clone())),
            props,
            LockDir::new(locks.path()),
        );
        if with_keys {
            o = o.with_key_manager(Arc::new(Keys));
        }
        (w, o, locks)
    };
    let (w, o, _l) = bare(false);
    let e = o.attach(&native("vol-1")).unwrap_err();
    assert_eq!(step_of(&e), "get_encryption");
    assert!(e.chain().contains("no key manager"), "{}", e.chain());
    w.assert_clean("no key manager");
    let (w, o, _l) = bare(true);
    let e = o.attach(&native("vol-1")).unwrap_err();
    assert_eq!(step_of(&e), "get_encryption");
    assert!(e.chain().contains("secret store"), "{}", e.chain());
    w.assert_clean("no secret store");
    // A volume that is not encrypted needs neither.
    let rec = o.attach(&native("plain")).unwrap();
    assert_eq!((rec.decryption, rec.secret_uuid), (None, None));
    assert!(DiskConfig::from_xml(&rec.disk_xml)
        .unwrap()
        .encryption
        .is_none());
}

#[test]
fn native_refuses_a_luks2_header_qemu_cannot_read() {
    let s = setup();
    let e = s.orch.attach(&native("hdrtwo-1")).unwrap_err();
    assert_eq!(step_of(&e), "format_encryption");
    assert!(e.chain().contains("LUKS2 header"), "{}", e.chain());
    s.world.assert_clean("after the refusal");
}

#[test]
fn older_attachment_records_still_parse() {
    let s = setup();
    let rec = s.orch.attach(&AttachRequest::new("plain")).unwrap();
    // A plain volume's record has none of the new keys: what an older hostbrick wrote.
    let v: serde_json::Value = serde_json::from_str(&rec.to_json().unwrap()).unwrap();
    for k in ["encryption", "decryption", "secret_uuid"] {
        assert!(v.get(k).is_none(), "{k} written for a plain volume");
    }
    let back: AttachmentRecord = serde_json::from_value(v).unwrap();
    assert_eq!(back, rec);
    s.orch.detach(&back).unwrap();
    s.world.assert_clean("plain");
}

fn host(volume: &str) -> AttachRequest {
    AttachRequest::new(volume)
}

fn assert_no_mapping(s: &Setup, context: &str) {
    assert!(
        s.sim.mappings().is_empty(),
        "{context}: dm-crypt mappings left: {:?}",
        s.sim.mappings()
    );
}

#[test]
fn host_decryption_gives_the_guest_the_decrypted_device_and_closes_it_on_detach() {
    let s = sim_setup();
    let rec = s.orch.attach(&host("vol-on-sdb")).unwrap();
    assert_eq!(rec.decryption, Some(Decryption::Host));
    assert_eq!(rec.secret_uuid, None);
    let mapping = rec
        .device
        .encryption
        .clone()
        .expect("the mapping is recorded");
    assert_eq!(mapping.name, "crypt-sdb");
    // Formatted on first use (LUKS1, the metadata's provider), opened with the passphrase.
    assert_eq!(s.sim.header("sdb").as_deref(), Some("luks1"));
    assert_eq!(s.sim.opened_with("crypt-sdb").as_deref(), Some(PASSPHRASE));
    let disk = DiskConfig::from_xml(&rec.disk_xml).unwrap();
    assert_eq!(
        disk.source,
        hostbrick::libvirt::DiskSource::Block("/dev/mapper/crypt-sdb".into())
    );
    assert!(disk.encryption.is_none());
    assert!(s.world.secrets.lock().unwrap().is_empty());
    for text in [rec.to_json().unwrap(), s.runner.calls().join("\n")] {
        assert!(!text.contains(PASSPHRASE), "{text}");
    }
    let back = AttachmentRecord::from_json(&rec.to_json().unwrap()).unwrap();
    s.orch.detach(&back).unwrap();
    s.world.assert_clean("after detach");
    assert_no_mapping(&s, "after detach");
    // The data stays: attached again, the header is opened, not formatted again.
    let again = s.orch.attach(&host("vol-on-sdb")).unwrap();
    assert_eq!(s.sim.formats().len(), 1, "{:?}", s.sim.formats());
    s.orch.detach(&again).unwrap();
}

#[test]
fn native_falls_back_to_the_host_for_luks2_and_formats_a_blank_luks1_volume() {
    let s = sim_setup();
    // LUKS2: QEMU cannot read it; decrypted on the host, as Nova does.
    let rec = s.orch.attach(&native("luks2-on-sdc")).unwrap();
    assert_eq!(rec.decryption, Some(Decryption::Host));
    assert_eq!(s.sim.header("sdc").as_deref(), Some("luks2"));
    assert!(rec.device.encryption.is_some());
    s.orch.detach(&rec).unwrap();

    // A blank volume for QEMU: formatted LUKS1 on the host, nothing left open.
    let rec = s.orch.attach(&native("vol-on-sdd")).unwrap();
    assert_eq!(rec.decryption, Some(Decryption::Native));
    assert_eq!(s.sim.header("sdd").as_deref(), Some("luks1"));
    assert_no_mapping(&s, "after the native attach");
    let disk = DiskConfig::from_xml(&rec.disk_xml).unwrap();
    assert_eq!(
        disk.source,
        hostbrick::libvirt::DiskSource::Block("/dev/sdd".into())
    );
    s.orch.detach(&rec).unwrap();
    s.world.assert_clean("after detach");

    // A device with a filesystem is never formatted, with either decryption.
    s.sim.set_signature("sde", "TYPE=ext4");
    for req in [native("vol-on-sde"), host("vol-on-sde")] {
        let e = s.orch.attach(&req).unwrap_err();
        assert!(
            matches!(&e, Error::Orchestration { cause, .. } if cause.kind() == "device_has_signature"),
            "{e:?}"
        );
        s.world.assert_clean("after the refusal");
    }
    assert_eq!(s.sim.header("sde"), None);
    assert_no_mapping(&s, "after the refusals");
}

#[test]
fn host_decryption_rolls_back_the_mapping_and_detach_reopens_it_on_failure() {
    let s = sim_setup();
    for op in ["attach_device", "complete_attachment"] {
        s.world.fail(op);
        let e = s.orch.attach(&host("vol-on-sdb")).unwrap_err();
        assert!(
            matches!(&e, Error::Orchestration { rollback, .. } if rollback.is_empty()),
            "{e:?}"
        );
        s.world.assert_clean(op);
        assert_no_mapping(&s, op);
        s.world.heal();
    }
    let rec = s.orch.attach(&host("vol-on-sdb")).unwrap();
    // A failed disconnect: the mapping is opened again and the disk goes back.
    s.world.fail("disconnect_volume");
    let e = s.orch.detach(&rec).unwrap_err();
    assert_eq!(step_of(&e), "disconnect_volume");
    let Error::Orchestration { rollback, .. } = &e else {
        unreachable!()
    };
    assert!(rollback.is_empty(), "{rollback:?}");
    assert_eq!(s.sim.mappings().len(), 1);
    assert!(s.world.guest_disks.lock().unwrap().contains_key("vdb"));
    s.world.heal();
    s.orch.detach(&rec).unwrap();
    s.world.assert_clean("after the retry");
    assert_no_mapping(&s, "after the retry");
}

fn virsh_secrets(runner: Arc<FakeRunner>, host: &FakeHost) -> VirshSecrets {
    VirshSecrets::new(HostContext::new(host.host(), runner)).with_uri("qemu:///system")
}

const SECRET_LIST: &str = " UUID                                   Usage\n\
-----------------------------------------------------------\n \
457eb676-33da-42ec-9a8c-9293d545c337   ceph client.cinder secret\n";

#[test]
fn virsh_secrets_commands_and_the_value_file() {
    let host = FakeHost::new();
    let runner = Arc::new(FakeRunner::new());
    let listed = Arc::new(Mutex::new(SECRET_LIST.to_string()));
    let l = listed.clone();
    runner.on(
        "virsh",
        &["-c", "qemu:///system", "secret-list"],
        move |_| CommandOutput::ok(l.lock().unwrap().clone()),
    );
    let defined = Arc::new(Mutex::new(String::new()));
    let d = defined.clone();
    runner.on(
        "virsh",
        &["-c", "qemu:///system", "secret-define"],
        move |c| {
            let file = c.shown_args().split(' ').next_back().unwrap().to_string();
            *d.lock().unwrap() = std::fs::read_to_string(file).unwrap();
            CommandOutput::ok("Secret created\n")
        },
    );
    // What virsh found in the value file when it ran: content, mode, where.
    let seen = Arc::new(Mutex::new(None::<(String, u32, PathBuf)>));
    let sn = seen.clone();
    runner.on(
        "virsh",
        &["-c", "qemu:///system", "secret-set-value", "--secret"],
        move |c| {
            let file = PathBuf::from(c.value_of("--file").unwrap());
            assert!(c.has_arg("--plain"), "raw bytes, not base64");
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            *sn.lock().unwrap() = Some((std::fs::read_to_string(&file).unwrap(), mode, file));
            CommandOutput::ok("Secret value set\n")
        },
    );
    runner.on(
        "virsh",
        &["-c", "qemu:///system", "secret-undefine"],
        |_| CommandOutput::exit(1, "error: Secret not found: no secret with matching uuid\n"),
    );
    let secrets = virsh_secrets(runner.clone(), &host);

    assert_eq!(secrets.find_volume_secret("vol-1").unwrap(), None);
    let uuid = secrets.define_volume_secret("vol-1").unwrap();
    let xml = defined.lock().unwrap().clone();
    assert!(xml.contains("ephemeral='no' private='yes'"), "{xml}");
    assert!(xml.contains(&format!("<uuid>{uuid}</uuid>")), "{xml}");
    assert!(xml.contains("<volume>vol-1</volume>"), "{xml}");
    listed
        .lock()
        .unwrap()
        .push_str(&format!(" {uuid}   volume vol-1\n"));
    assert_eq!(
        secrets.find_volume_secret("vol-1").unwrap().as_deref(),
        Some(uuid.as_str())
    );

    // A value file a killed process left (pid 0 is never alive) goes with the next set.
    let dir = host.host().state_dir().join("secrets");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(dir.join("0-deadbeef-0.secret"), "left over").unwrap();
    secrets
        .set_value(&uuid, &Secret::new("correct horse"))
        .unwrap();
    let (content, mode, file) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(content, "correct horse", "the value as it is, no newline");
    assert_eq!(mode, 0o600);
    assert_eq!(file.parent(), Some(dir.as_path()));
    assert!(
        !file.exists(),
        "the value file is removed once virsh returns"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    assert!(!runner.calls().join("\n").contains("correct horse"));

    // A failing set-value removes the file too.
    runner.on(
        "virsh",
        &["-c", "qemu:///system", "secret-set-value"],
        |_| CommandOutput::exit(1, "error: invalid secret\n"),
    );
    assert!(secrets.set_value(&uuid, &Secret::new("x")).is_err());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);

    // undefine: a failure while libvirt still lists it is an error; once gone, success.
    assert!(secrets.undefine(&uuid).is_err());
    *listed.lock().unwrap() = SECRET_LIST.to_string();
    secrets.undefine(&uuid).unwrap();
    assert!(runner
        .calls()
        .iter()
        .any(|c| c == &format!("virsh -c qemu:///system secret-undefine {uuid}")));
}
