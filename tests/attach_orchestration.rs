//! Attach orchestration with a fake storage service, fake domain and fake connector: every
//! step fails in turn and the rollback is checked (nothing connected, attachment deleted,
//! no disk left in the guest); detach mirrors it; one guest's attaches never share a name.
//! And the virsh-backed domain against a scripted runner.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hostbrick::attach::{Attachment, ConnectorFactory, VirshDomain};
use hostbrick::testing::{validate_disk_xml, FakeHost, FakeRunner};
use hostbrick::{
    AttachRequest, AttachmentRecord, CommandOutput, ConnectionInfo, Connector, ConnectorProperties,
    DeviceRecord, DisconnectOptions, Disconnected, DiskBus, DiskConfig, Domain, DomainFlags, Error,
    HostContext, LockDir, Orchestrator, Protocol, Result, StorageService,
};
use serde_json::json;

/// Which fake operation fails next (by name), and how often it was called.
#[derive(Default)]
struct Faults {
    failing: Mutex<BTreeSet<&'static str>>,
}

impl Faults {
    fn set(&self, op: &'static str) {
        self.failing.lock().unwrap().insert(op);
    }
    fn clear(&self) {
        self.failing.lock().unwrap().clear();
    }
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
}

#[derive(Default)]
struct World {
    faults: Faults,
    /// attachment id → state
    attachments: Mutex<BTreeMap<String, &'static str>>,
    /// volume → device path
    connected: Mutex<BTreeMap<String, PathBuf>>,
    /// target → disk xml
    guest_disks: Mutex<BTreeMap<String, String>>,
    /// Slows the domain's disk listing, to widen any race between two attaches.
    list_delay: Mutex<Duration>,
}

struct FakeStorage(Arc<World>);

impl StorageService for FakeStorage {
    fn create_attachment(
        &self,
        volume_id: &str,
        instance: &str,
        connector: &ConnectorProperties,
    ) -> Result<Attachment> {
        self.0.faults.check("create_attachment")?;
        assert_eq!(connector.host, "compute-1");
        let id = format!("att-{volume_id}-{instance}");
        self.0
            .attachments
            .lock()
            .unwrap()
            .insert(id.clone(), "attaching");
        let serial_ok = !volume_id.contains('!');
        Ok(Attachment {
            id,
            connection_info: json!({
                "driver_volume_type": "local",
                "data": {"device_path": format!("/dev/fake/{volume_id}"), "volume_id": volume_id,
                         "qos_specs": {"total_iops_sec": 100}},
                // A serial libvirt refuses makes the XML step fail.
                "serial": if serial_ok { volume_id.to_string() } else { "bad<serial>".into() },
            }),
        })
    }
    fn complete_attachment(&self, attachment_id: &str) -> Result<()> {
        self.0.faults.check("complete_attachment")?;
        self.0
            .attachments
            .lock()
            .unwrap()
            .insert(attachment_id.into(), "attached");
        Ok(())
    }
    fn delete_attachment(&self, attachment_id: &str) -> Result<()> {
        self.0.faults.check("delete_attachment")?;
        self.0.attachments.lock().unwrap().remove(attachment_id);
        Ok(())
    }
}

struct FakeDomain(Arc<World>);

impl Domain for FakeDomain {
    fn name(&self) -> &str {
        "guest-1"
    }
    fn attach_device(&self, xml: &str, _flags: DomainFlags) -> Result<()> {
        self.0.faults.check("attach_device")?;
        validate_disk_xml(xml).unwrap();
        let target = DiskConfig::from_xml(xml)?.target.dev;
        let mut disks = self.0.guest_disks.lock().unwrap();
        assert!(!disks.contains_key(&target), "{target} attached twice");
        disks.insert(target, xml.to_string());
        Ok(())
    }
    fn detach_device(&self, xml: &str, _flags: DomainFlags) -> Result<()> {
        self.0.faults.check("detach_device")?;
        let target = DiskConfig::from_xml(xml)?.target.dev;
        self.0.guest_disks.lock().unwrap().remove(&target);
        Ok(())
    }
    fn disk_targets(&self) -> Result<Vec<String>> {
        self.0.faults.check("disk_targets")?;
        let delay = *self.0.list_delay.lock().unwrap();
        let mut names: Vec<String> = self.0.guest_disks.lock().unwrap().keys().cloned().collect();
        names.push("vda".into()); // the root disk
        std::thread::sleep(delay);
        Ok(names)
    }
}

#[derive(Debug)]
struct FakeConnector(Arc<WorldRef>);

/// `World` is not Debug; the connector only needs a handle.
struct WorldRef(Arc<World>);

impl std::fmt::Debug for WorldRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("World")
    }
}

impl Connector for FakeConnector {
    fn protocol(&self) -> Protocol {
        Protocol::Local
    }
    fn connect_volume(&self, info: &ConnectionInfo) -> Result<DeviceRecord> {
        let w = &self.0 .0;
        w.faults.check("connect_volume")?;
        let path = info.local().unwrap().device_path.clone();
        let vol = info.volume_id().unwrap().to_string();
        w.connected
            .lock()
            .unwrap()
            .insert(vol.clone(), path.clone());
        Ok(DeviceRecord::block(Protocol::Local, path, Some(vol)))
    }
    fn disconnect_volume(
        &self,
        info: &ConnectionInfo,
        device: Option<&DeviceRecord>,
        _options: DisconnectOptions,
    ) -> Result<Disconnected> {
        let w = &self.0 .0;
        w.faults.check("disconnect_volume")?;
        assert!(device.is_some(), "the orchestrator passes the record");
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

struct FakeFactory(Arc<World>);

impl ConnectorFactory for FakeFactory {
    fn connector(&self, protocol: Protocol) -> Result<Box<dyn Connector>> {
        assert_eq!(protocol, Protocol::Local);
        Ok(Box::new(FakeConnector(Arc::new(WorldRef(self.0.clone())))))
    }
}

fn setup() -> (Arc<World>, Orchestrator, tempfile::TempDir) {
    let world = Arc::new(World::default());
    let locks = tempfile::tempdir().unwrap();
    let props: ConnectorProperties = serde_json::from_value(json!({
        "platform": "x86_64", "os_type": "linux", "ip": "192.0.2.1", "host": "compute-1",
        "multipath": false, "enforce_multipath": false
    }))
    .unwrap();
    let orch = Orchestrator::new(
        Arc::new(FakeStorage(world.clone())),
        Arc::new(FakeDomain(world.clone())),
        Arc::new(FakeFactory(world.clone())),
        props,
        LockDir::new(locks.path()),
    );
    (world, orch, locks)
}

fn assert_clean(world: &World, context: &str) {
    assert!(
        world.attachments.lock().unwrap().is_empty(),
        "{context}: attachments left: {:?}",
        world.attachments.lock().unwrap()
    );
    assert!(
        world.connected.lock().unwrap().is_empty(),
        "{context}: still connected: {:?}",
        world.connected.lock().unwrap()
    );
    assert!(
        world.guest_disks.lock().unwrap().is_empty(),
        "{context}: disks left in the guest"
    );
}

#[test]
fn attach_and_detach_happy_path_with_a_persisted_record() {
    let (world, orch, _locks) = setup();
    let rec = orch.attach(&AttachRequest::new("vol1")).unwrap();
    assert_eq!(rec.target_dev, "vdb");
    assert_eq!(rec.domain, "guest-1");
    assert_eq!(rec.attachment_id, "att-vol1-guest-1");
    assert_eq!(
        world.attachments.lock().unwrap().get("att-vol1-guest-1"),
        Some(&"attached")
    );
    let disk = DiskConfig::from_xml(&rec.disk_xml).unwrap();
    assert_eq!(disk.serial.as_deref(), Some("vol1"));
    assert_eq!(disk.iotune.unwrap().total_iops_sec, Some(100));

    let mut scsi = AttachRequest::new("vol2");
    scsi.bus = DiskBus::Scsi;
    let rec2 = orch.attach(&scsi).unwrap();
    assert_eq!(rec2.target_dev, "sda");
    let mut named = AttachRequest::new("vol3");
    named.device_name = Some("vdb".into());
    assert!(matches!(
        orch.attach(&named),
        Err(Error::Orchestration {
            step: "reserve_device_name",
            ..
        })
    ));

    // A restart: the record comes back from JSON.
    let saved = rec.to_json().unwrap();
    let back = AttachmentRecord::from_json(&saved).unwrap();
    assert_eq!(back, rec);
    orch.detach(&back).unwrap();
    orch.detach(&rec2).unwrap();
    assert_clean(&world, "after detach");
    // Detaching again is harmless: the guest no longer has it, the host side is idempotent.
    orch.detach(&back).unwrap();
}

#[test]
fn a_failure_at_every_attach_step_rolls_back_everything() {
    for (op, step) in [
        ("disk_targets", "reserve_device_name"),
        ("create_attachment", "create_attachment"),
        ("connect_volume", "connect_volume"),
        ("attach_device", "attach_device"),
        ("complete_attachment", "complete_attachment"),
    ] {
        let (world, orch, _locks) = setup();
        world.faults.set(op);
        match orch.attach(&AttachRequest::new("vol1")) {
            Err(Error::Orchestration {
                operation,
                step: s,
                rollback,
                cause,
                ..
            }) => {
                assert_eq!(operation, "attach");
                assert_eq!(s, step, "failing {op}");
                assert!(rollback.is_empty(), "{op}: {rollback:?}");
                assert!(cause.to_string().contains("injected"), "{cause}");
            }
            other => panic!("failing {op}: {other:?}"),
        }
        assert_clean(&world, op);
        // The same attach works once the fault is gone: nothing stale blocks it.
        world.faults.clear();
        let rec = orch.attach(&AttachRequest::new("vol1")).unwrap();
        assert_eq!(rec.target_dev, "vdb");
    }

    // The disk XML cannot be built (a serial libvirt refuses).
    let (world, orch, _locks) = setup();
    let err = orch.attach(&AttachRequest::new("vol!1")).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Orchestration {
                step: "build_disk_xml",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), "orchestration");
    assert!(err.to_string().contains("rolled back"), "{err}");
    assert_clean(&world, "build_disk_xml");
}

#[test]
fn a_failing_undo_is_reported_with_the_cause() {
    let (world, orch, _locks) = setup();
    world.faults.set("complete_attachment");
    world.faults.set("disconnect_volume");
    world.faults.set("delete_attachment");
    let err = orch.attach(&AttachRequest::new("vol1")).unwrap_err();
    let Error::Orchestration { step, rollback, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*step, "complete_attachment");
    let undone: Vec<&str> = rollback.iter().map(|r| r.step).collect();
    // detach_device succeeded; the other two undos failed, in reverse order.
    assert_eq!(undone, ["connect_volume", "create_attachment"]);
    let text = err.chain();
    assert!(text.contains("rollback incomplete"), "{text}");
    assert!(text.contains("undo connect_volume"), "{text}");
    assert!(world.guest_disks.lock().unwrap().is_empty());
}

#[test]
fn detach_rolls_back_the_guest_side_when_the_host_side_fails() {
    let (world, orch, _locks) = setup();
    let rec = orch.attach(&AttachRequest::new("vol1")).unwrap();

    world.faults.set("detach_device");
    assert!(matches!(
        orch.detach(&rec),
        Err(Error::Orchestration {
            step: "detach_device",
            ..
        })
    ));
    assert!(world.guest_disks.lock().unwrap().contains_key("vdb"));
    world.faults.clear();

    world.faults.set("disconnect_volume");
    let err = orch.detach(&rec).unwrap_err();
    assert!(
        matches!(&err, Error::Orchestration { operation: "detach", step: "disconnect_volume", rollback, .. } if rollback.is_empty()),
        "{err:?}"
    );
    // The disk went back to the guest, the volume is still connected and attached.
    assert!(world.guest_disks.lock().unwrap().contains_key("vdb"));
    assert!(world.connected.lock().unwrap().contains_key("vol1"));
    world.faults.clear();

    // A failed attachment delete leaves the host side detached; a retry finishes.
    world.faults.set("delete_attachment");
    assert!(matches!(
        orch.detach(&rec),
        Err(Error::Orchestration {
            step: "delete_attachment",
            ..
        })
    ));
    assert!(world.guest_disks.lock().unwrap().is_empty());
    assert!(world.connected.lock().unwrap().is_empty());
    world.faults.clear();
    orch.detach(&rec).unwrap();
    assert_clean(&world, "after retried detach");

    // A record for another guest is refused before anything is touched.
    let rec = orch.attach(&AttachRequest::new("vol1")).unwrap();
    let mut other = rec.clone();
    other.domain = "guest-2".into();
    assert!(matches!(
        orch.detach(&other),
        Err(Error::Orchestration {
            step: "check_record",
            ..
        })
    ));
    assert!(world.guest_disks.lock().unwrap().contains_key("vdb"));
}

#[test]
fn concurrent_attaches_to_one_guest_get_distinct_names() {
    let (world, orch, _locks) = setup();
    *world.list_delay.lock().unwrap() = Duration::from_millis(20);
    let names: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let orch = &orch;
                s.spawn(move || orch.attach(&AttachRequest::new(format!("v{i}"))).unwrap())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().target_dev)
            .collect()
    });
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), 6, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("vd") && n != "vda"));
}

fn virsh_domain(runner: Arc<FakeRunner>) -> VirshDomain {
    let fake = FakeHost::new();
    VirshDomain::new("guest-1", HostContext::new(fake.host(), runner))
        .with_uri("qemu:///system")
        .with_detach_timeout(Duration::from_millis(400))
}

const LIST_HEADER: &str = " Type   Device   Target   Source\n---------------------------------\n file   disk     vda      /var/lib/libvirt/images/root.qcow2\n";

#[test]
fn virsh_domain_commands_and_detach_wait() {
    let runner = Arc::new(FakeRunner::new());
    let listed = Arc::new(Mutex::new(2)); // vdb is listed twice after the detach request
    let l = listed.clone();
    runner.on(
        "virsh",
        &["-c", "qemu:///system", "domblklist", "guest-1", "--details"],
        move |_| {
            let mut left = l.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                CommandOutput::ok(format!(
                    "{LIST_HEADER} block  disk     vdb      /dev/loop0\n"
                ))
            } else {
                CommandOutput::ok(LIST_HEADER)
            }
        },
    );
    let seen_xml = Arc::new(Mutex::new(String::new()));
    let s = seen_xml.clone();
    runner.on(
        "virsh",
        &["-c", "qemu:///system", "attach-device", "guest-1"],
        move |c| {
            let file = match &c.arg_list()[4] {
                hostbrick::Arg::Plain(f) => f.clone(),
                other => panic!("{other:?}"),
            };
            *s.lock().unwrap() = std::fs::read_to_string(file).unwrap_or_default();
            CommandOutput::ok("Device attached successfully\n")
        },
    );
    runner.on(
        "virsh",
        &["-c", "qemu:///system", "detach-device", "guest-1"],
        |_| CommandOutput::ok("Device detach request sent successfully\n"),
    );
    let dom = virsh_domain(runner.clone());
    let xml = DiskConfig::block(
        "/dev/loop0",
        hostbrick::DiskTarget::new("vdb", DiskBus::Virtio),
    )
    .to_xml()
    .unwrap();
    dom.attach_device(&xml, DomainFlags::LIVE_AND_CONFIG)
        .unwrap();
    assert!(
        runner
            .calls()
            .iter()
            .any(|c| c.contains("attach-device guest-1") && c.ends_with("--live --config")),
        "{:?}",
        runner.calls()
    );
    assert_eq!(
        *seen_xml.lock().unwrap(),
        xml,
        "virsh is given the XML in a file"
    );

    assert_eq!(dom.disk_targets().unwrap(), ["vda", "vdb"]);
    dom.detach_device(&xml, DomainFlags::LIVE).unwrap();
    assert_eq!(runner.count("detach-device"), 1);
    assert!(!dom.disk_targets().unwrap().contains(&"vdb".to_string()));

    // Neither flag: libvirt's current state.
    dom.attach_device(&xml, DomainFlags::default()).unwrap();
    assert!(runner.calls().last().unwrap().ends_with("--current"));
}

#[test]
fn virsh_detach_times_out_when_the_guest_keeps_the_disk() {
    let runner = Arc::new(FakeRunner::new());
    runner.on("virsh", &["-c", "qemu:///system", "domblklist"], |_| {
        CommandOutput::ok(format!(
            "{LIST_HEADER} block  disk     vdb      /dev/loop0\n"
        ))
    });
    runner.on("virsh", &["-c", "qemu:///system", "detach-device"], |_| {
        CommandOutput::ok("Device detach request sent successfully\n")
    });
    runner.on("virsh", &["-c", "qemu:///system", "attach-device"], |_| {
        CommandOutput::exit(1, "error: Failed to attach device\nerror: internal error: unable to execute QEMU command\n")
    });
    let dom = virsh_domain(runner);
    let xml = DiskConfig::block(
        "/dev/loop0",
        hostbrick::DiskTarget::new("vdb", DiskBus::Virtio),
    )
    .to_xml()
    .unwrap();
    match dom.detach_device(&xml, DomainFlags::LIVE) {
        Err(Error::Timeout { what, .. }) => assert!(what.contains("vdb"), "{what}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        dom.attach_device(&xml, DomainFlags::LIVE),
        Err(Error::CommandFailed { .. })
    ));
}

/// A storage service whose every attachment has the same connection_info.
struct FixedStorage(serde_json::Value);

impl StorageService for FixedStorage {
    fn create_attachment(
        &self,
        volume_id: &str,
        _instance: &str,
        _connector: &ConnectorProperties,
    ) -> Result<Attachment> {
        Ok(Attachment {
            id: format!("att-{volume_id}"),
            connection_info: self.0.clone(),
        })
    }
    fn complete_attachment(&self, _attachment_id: &str) -> Result<()> {
        Ok(())
    }
    fn delete_attachment(&self, _attachment_id: &str) -> Result<()> {
        Ok(())
    }
}

#[test]
fn a_record_keeps_no_secret_and_still_detaches() {
    use hostbrick::testing::sim::iscsi::{IscsiSim, IQN, WWID_1};
    let sim = IscsiSim::new();
    sim.add_target("127.0.0.1:3260", &[(0, WWID_1, 1 << 20)]);
    sim.require_chap("alice", "chap-S3cret");
    sim.require_discovery_chap("127.0.0.1:3260", "disc", "disc-S3cret");
    let ci = json!({"driver_volume_type": "iscsi", "data": {
        "target_portal": "127.0.0.1:3260", "target_iqn": IQN, "target_lun": 0,
        "volume_id": "vol-s", "target_discovered": true,
        "auth_method": "CHAP", "auth_username": "alice", "auth_password": "chap-S3cret",
        "discovery_auth_method": "CHAP", "discovery_auth_username": "disc",
        "discovery_auth_password": "disc-S3cret"}});
    let world = Arc::new(World::default());
    let locks = tempfile::tempdir().unwrap();
    let props: ConnectorProperties = serde_json::from_value(json!({
        "platform": "x86_64", "os_type": "linux", "ip": "192.0.2.1", "host": "compute-1",
        "multipath": false, "enforce_multipath": false
    }))
    .unwrap();
    let orch = Orchestrator::new(
        Arc::new(FixedStorage(ci.clone())),
        Arc::new(FakeDomain(world.clone())),
        Arc::new(sim.options()),
        props,
        LockDir::new(locks.path()),
    );
    let rec = orch.attach(&AttachRequest::new("vol-s")).unwrap();
    let saved = rec.to_json().unwrap();
    for s in [saved.clone(), serde_json::to_string(&rec).unwrap()] {
        for secret in ["chap-S3cret", "disc-S3cret", "auth_password", "CHAP"] {
            assert!(!s.contains(secret), "{secret} kept in {s}");
        }
        assert!(s.contains(IQN) && s.contains("vol-s"), "{s}");
    }
    // After a restart: the record detaches the volume, with no secret.
    let back = AttachmentRecord::from_json(&saved).unwrap();
    assert_eq!(back, rec);
    orch.detach(&back).unwrap();
    sim.assert_clean();
    assert!(world.guest_disks.lock().unwrap().is_empty());

    // A record whose connection_info still holds secrets (made by hand) serialises without
    // them as well; a keyring goes too, the libvirt secret's uuid stays.
    let mut by_hand = rec.clone();
    by_hand.connection_info = hostbrick::attach::StoredConnectionInfo(ci);
    let text = by_hand.to_json().unwrap();
    assert!(
        !text.contains("chap-S3cret") && !text.contains("disc-S3cret"),
        "{text}"
    );
    let rbd = json!({"driver_volume_type": "rbd", "data": {"name": "volumes/v1",
        "hosts": ["10.0.0.1"], "ports": ["6789"], "auth_enabled": true,
        "auth_username": "cinder", "secret_type": "ceph", "secret_uuid": "5c3a6e2e-4a53-4c36-a1fc-2f4f3c2a5d11",
        "keyring": "[client.cinder]\n\tkey = AQB-KEY==\n"}});
    by_hand.connection_info = hostbrick::attach::StoredConnectionInfo(rbd);
    let text = by_hand.to_json().unwrap();
    assert!(
        !text.contains("AQB-KEY") && !text.contains("keyring"),
        "{text}"
    );
    assert!(text.contains("5c3a6e2e-4a53-4c36-a1fc-2f4f3c2a5d11") && text.contains("cinder"));
    let back = AttachmentRecord::from_json(&text).unwrap();
    assert!(back
        .connection_info
        .parse()
        .unwrap()
        .rbd()
        .unwrap()
        .keyring
        .is_none());
}
