//! The libvirt disk builder: golden XML for the seed examples, Nova's mapping from a
//! connection_info, escaping, read-back, and libvirt's own schema for every XML written.

use std::sync::Arc;

use hostbrick::libvirt::{
    BlockIo, CacheMode, DetectZeroes, DiscardMode, DiskAddress, DiskAuth, DiskDevice, DiskSource,
    IoMode, IoTune, NetworkDisk, NetworkHost, NetworkProtocol, SecretType, Sgio,
};
use hostbrick::testing::{validate_disk_xml, FakeHost, FakeRunner};
use hostbrick::{
    connector_for, ConnectionInfo, ConnectorOptions, DeviceRecord, DiskBus, DiskConfig, DiskTarget,
    Error, HostContext, Protocol,
};

/// Writes the disk, checks it against libvirt's schema, reads it back to the same config.
fn emit(disk: &DiskConfig) -> String {
    let xml = disk.to_xml().expect("to_xml");
    validate_disk_xml(&xml).unwrap();
    let back = DiskConfig::from_xml(&xml).expect("from_xml");
    assert_eq!(&back, disk, "read back differs:\n{xml}");
    xml
}

const BY_PATH: &str =
    "/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2010-10.org.openstack:volume-0001-lun-1";

#[test]
fn golden_iscsi_block_disk() {
    let info = ConnectionInfo::from_json(
        r#"{"driver_volume_type": "iscsi", "serial": "f1e2d3c4-0001",
            "data": {"target_portal": "192.0.2.10:3260",
                     "target_iqn": "iqn.2010-10.org.openstack:volume-0001",
                     "target_lun": 1, "volume_id": "f1e2d3c4-0001"}}"#,
    )
    .unwrap();
    let device = DeviceRecord::block(Protocol::Iscsi, BY_PATH, Some("f1e2d3c4-0001".into()));
    let disk =
        DiskConfig::for_volume(&info, &device, DiskTarget::new("vdb", DiskBus::Virtio)).unwrap();
    assert_eq!(
        emit(&disk),
        format!(
            r#"<disk type="block" device="disk">
  <driver name="qemu" type="raw" cache="none" io="native"/>
  <source dev="{BY_PATH}"/>
  <target dev="vdb" bus="virtio"/>
  <serial>f1e2d3c4-0001</serial>
  <alias name="ua-f1e2d3c4-0001"/>
</disk>"#
        )
    );
}

fn rbd_info(extra: &str) -> ConnectionInfo {
    ConnectionInfo::from_json(&format!(
        r#"{{"driver_volume_type": "rbd",
            "data": {{"name": "volumes/volume-8c5e", "cluster_name": "ceph",
                     "hosts": ["192.0.2.21", "192.0.2.22", "192.0.2.23"],
                     "ports": ["6789", "6789", "3300"],
                     "auth_enabled": true, "auth_username": "cinder",
                     "secret_type": "ceph",
                     "secret_uuid": "457eb676-33da-42ec-9a8c-9293d545c337",
                     "volume_id": "8c5e"{extra}}}}}"#
    ))
    .unwrap()
}

/// The network record the RBD connector returns when the hypervisor opens the image.
fn rbd_network_record(info: &ConnectionInfo) -> DeviceRecord {
    let fake = FakeHost::new();
    let mut opts =
        ConnectorOptions::with_context(HostContext::new(fake.host(), Arc::new(FakeRunner::new())));
    opts.rbd.attach = hostbrick::rbd::RbdAttach::Network;
    connector_for(Protocol::Rbd, opts)
        .unwrap()
        .connect_volume(info)
        .unwrap()
}

#[test]
fn golden_rbd_network_disk() {
    let info = rbd_info(r#", "discard": true"#);
    let device = rbd_network_record(&info);
    let disk =
        DiskConfig::for_volume(&info, &device, DiskTarget::new("vdc", DiskBus::Virtio)).unwrap();
    assert_eq!(
        emit(&disk),
        r#"<disk type="network" device="disk">
  <driver name="qemu" type="raw" cache="none" discard="unmap"/>
  <auth username="cinder">
    <secret type="ceph" uuid="457eb676-33da-42ec-9a8c-9293d545c337"/>
  </auth>
  <source protocol="rbd" name="volumes/volume-8c5e">
    <host name="192.0.2.21" port="6789"/>
    <host name="192.0.2.22" port="6789"/>
    <host name="192.0.2.23" port="3300"/>
  </source>
  <target dev="vdc" bus="virtio"/>
  <serial>8c5e</serial>
  <alias name="ua-8c5e"/>
</disk>"#
    );
}

#[test]
fn nova_mapping_readonly_multiattach_qos_blockio() {
    let info = ConnectionInfo::from_json(
        r#"{"driver_volume_type": "nvmeof", "multiattach": true,
            "data": {"target_nqn": "nqn.2014-08.org.example:vol1",
                     "portals": [["192.0.2.30", 4420, "tcp"]],
                     "volume_nguid": "4dc4c4d3d3f64ef0a1f1fd5a2e3f1a10",
                     "volume_id": "vol-1", "access_mode": "ro", "discard": "true",
                     "logical_block_size": 512, "physical_block_size": "4096",
                     "qos_specs": {"read_bytes_sec": "1048576", "write_bytes_sec": 524288,
                                   "total_iops_sec": 300, "total_iops_sec_max": "600",
                                   "total_iops_sec_max_length": 10, "consumer": "front-end"}}}"#,
    )
    .unwrap();
    let device = DeviceRecord::block(Protocol::NvmeOf, "/dev/nvme1n1", Some("vol-1".into()));
    let disk =
        DiskConfig::for_volume(&info, &device, DiskTarget::new("sdb", DiskBus::Scsi)).unwrap();
    assert!(disk.readonly);
    assert!(disk.shareable);
    assert_eq!(disk.driver.discard, Some(DiscardMode::Unmap));
    assert_eq!(disk.serial.as_deref(), Some("vol-1"));
    assert_eq!(
        disk.blockio,
        Some(BlockIo {
            logical_block_size: Some(512),
            physical_block_size: Some(4096)
        })
    );
    let tune = disk.iotune.unwrap();
    assert_eq!(tune.read_bytes_sec, Some(1_048_576));
    assert_eq!(tune.write_bytes_sec, Some(524_288));
    assert_eq!(tune.total_iops_sec, Some(300));
    assert_eq!(tune.total_iops_sec_max, Some(600));
    assert_eq!(tune.total_iops_sec_max_length, Some(10));
    assert_eq!(tune.total_bytes_sec, None);
    assert_eq!(
        emit(&disk),
        r#"<disk type="block" device="disk">
  <driver name="qemu" type="raw" cache="none" io="native" discard="unmap"/>
  <source dev="/dev/nvme1n1"/>
  <target dev="sdb" bus="scsi"/>
  <serial>vol-1</serial>
  <alias name="ua-vol-1"/>
  <readonly/>
  <shareable/>
  <iotune>
    <read_bytes_sec>1048576</read_bytes_sec>
    <write_bytes_sec>524288</write_bytes_sec>
    <total_iops_sec>300</total_iops_sec>
    <total_iops_sec_max>600</total_iops_sec_max>
    <total_iops_sec_max_length>10</total_iops_sec_max_length>
  </iotune>
  <blockio logical_block_size="512" physical_block_size="4096"/>
</disk>"#
    );
}

#[test]
fn every_field_round_trips_through_the_schema() {
    let mut disk = DiskConfig::file(
        "/var/lib/images/disk.raw",
        DiskTarget::new("sda", DiskBus::Sata),
    );
    disk.driver.cache = Some(CacheMode::Writeback);
    disk.driver.io = Some(IoMode::Threads);
    disk.driver.discard = Some(DiscardMode::Ignore);
    disk.driver.detect_zeroes = Some(DetectZeroes::Unmap);
    disk.serial = Some("serial 1.0_a+b-c".into());
    disk.wwn = Some("5000c50015ea71ac".into());
    disk.iotune = Some(IoTune {
        total_bytes_sec: Some(10_000_000),
        read_iops_sec: Some(100),
        write_iops_sec: Some(50),
        size_iops_sec: Some(4096),
        ..IoTune::default()
    });
    disk.address = Some(DiskAddress::Drive {
        controller: 0,
        bus: 0,
        target: 0,
        unit: 1,
    });
    emit(&disk);

    let mut pci = DiskConfig::block("/dev/sdc", DiskTarget::new("vdd", DiskBus::Virtio));
    pci.address = Some(DiskAddress::Pci {
        domain: 0,
        bus: 0,
        slot: 7,
        function: 0,
    });
    let xml = emit(&pci);
    assert!(
        xml.contains(
            r#"<address type="pci" domain="0x0000" bus="0x00" slot="0x07" function="0x0"/>"#
        ),
        "{xml}"
    );

    for (protocol, name, hosts) in [
        (
            NetworkProtocol::Nbd,
            "export1",
            vec![NetworkHost {
                name: "nbd.example.org".into(),
                port: Some(10809),
            }],
        ),
        (
            NetworkProtocol::Iscsi,
            "iqn.2010-10.org.example:t1/1",
            vec![NetworkHost {
                name: "192.0.2.5".into(),
                port: Some(3260),
            }],
        ),
    ] {
        let net = DiskConfig::new(
            DiskSource::Network(NetworkDisk {
                protocol,
                name: Some(name.into()),
                hosts,
                auth: (protocol == NetworkProtocol::Iscsi).then(|| DiskAuth {
                    username: "chap-user".into(),
                    secret_type: SecretType::Iscsi,
                    secret_uuid: "d6ac8c8e-7c3b-4a57-9c7b-4b9c6e0e3a11".into(),
                }),
            }),
            DiskTarget::new("vde", DiskBus::Virtio),
        );
        emit(&net);
    }
}

#[test]
fn attribute_and_text_values_are_escaped() {
    // Quotes, ampersands and angle brackets in a path and an image name.
    let path = r#"/srv/a&b/<vm> "x" 'y'.img"#;
    let disk = DiskConfig::file(path, DiskTarget::new("vdb", DiskBus::Virtio));
    let xml = emit(&disk);
    assert!(!xml.contains("a&b"), "raw ampersand in {xml}");
    assert!(!xml.contains("<vm>"), "raw element in {xml}");
    match &DiskConfig::from_xml(&xml).unwrap().source {
        DiskSource::File(p) => assert_eq!(p.to_str(), Some(path)),
        other => panic!("{other:?}"),
    }

    let net = DiskConfig::new(
        DiskSource::Network(NetworkDisk {
            protocol: NetworkProtocol::Rbd,
            name: Some("pool/img</source><source file=\"/etc/shadow\"/>".into()),
            hosts: vec![NetworkHost {
                name: "mon1".into(),
                port: None,
            }],
            auth: None,
        }),
        DiskTarget::new("vdb", DiskBus::Virtio),
    );
    let xml = emit(&net);
    assert_eq!(xml.matches("<source").count(), 1, "{xml}");
}

#[test]
fn reads_libvirt_dumpxml_with_elements_it_does_not_model() {
    let dumped = r#"<disk type='block' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source dev='/dev/sdb' index='2'/>
      <backingStore/>
      <target dev='vdb' bus='virtio'/>
      <serial>abc</serial>
      <alias name='virtio-disk1'/>
      <address type='pci' domain='0x0000' bus='0x07' slot='0x00' function='0x0'/>
    </disk>"#;
    let disk = DiskConfig::from_xml(dumped).unwrap();
    assert_eq!(disk.source, DiskSource::Block("/dev/sdb".into()));
    assert_eq!(disk.target.dev, "vdb");
    assert_eq!(
        disk.address,
        Some(DiskAddress::Pci {
            domain: 0,
            bus: 7,
            slot: 0,
            function: 0
        })
    );
    // auth inside <source>, as newer libvirt writes it
    let nested = r#"<disk type='network' device='disk'>
      <source protocol='rbd' name='p/i'>
        <host name='m1' port='6789'/>
        <auth username='cinder'><secret type='ceph' uuid='457eb676-33da-42ec-9a8c-9293d545c337'/></auth>
      </source>
      <target dev='vdb' bus='virtio'/>
    </disk>"#;
    match DiskConfig::from_xml(nested).unwrap().source {
        DiskSource::Network(n) => assert_eq!(n.auth.unwrap().username, "cinder"),
        other => panic!("{other:?}"),
    }
}

fn invalid_field(r: hostbrick::Result<impl std::fmt::Debug>) -> &'static str {
    match r {
        Err(Error::InvalidDiskConfig { field, .. }) => field,
        other => panic!("expected InvalidDiskConfig, got {other:?}"),
    }
}

#[test]
fn refuses_what_libvirt_would_refuse() {
    let target = || DiskTarget::new("vdb", DiskBus::Virtio);
    let mut d = DiskConfig::block("/dev/sdb", DiskTarget::new("xyz", DiskBus::Virtio));
    assert_eq!(invalid_field(d.to_xml()), "target.dev");
    d = DiskConfig::block("/dev/sdb", target());
    d.serial = Some("bad<serial>".into());
    assert_eq!(invalid_field(d.to_xml()), "serial");
    d.serial = None;
    d.wwn = Some("1234".into());
    assert_eq!(invalid_field(d.to_xml()), "wwn");
    d.wwn = None;
    d.iotune = Some(IoTune {
        total_bytes_sec: Some(1),
        read_bytes_sec: Some(1),
        ..IoTune::default()
    });
    assert_eq!(invalid_field(d.to_xml()), "iotune");
    assert_eq!(
        invalid_field(DiskConfig::block("dev/sdb", target()).to_xml()),
        "source"
    );
    // XML would turn a tab or newline in an attribute into a space, and cannot carry most
    // other control characters at all.
    for path in ["/a\tb", "/a\nb", "/a\u{1}b"] {
        assert_eq!(
            invalid_field(DiskConfig::file(path, target()).to_xml()),
            "source"
        );
    }
    assert_eq!(
        invalid_field(DiskConfig::from_xml(
            "<disk type='file' device='disk'><source file='/a&#10;b'/><target dev='vdb' bus='virtio'/></disk>"
        )),
        "source"
    );

    // Malformed XML and shapes that are not a disk: typed errors.
    for (xml, field) in [
        ("<disk type='block'", "xml"),
        ("not xml at all", "xml"),
        (
            "<disk type='volume' device='disk'><target dev='vdb' bus='virtio'/></disk>",
            "type",
        ),
        (
            "<disk type='block' device='cdrom'><source dev='/dev/sr0'/><target dev='hdc' bus='virtio'/></disk>",
            "device",
        ),
        (
            "<disk type='block' device='disk'><target dev='vdb' bus='virtio'/></disk>",
            "source.dev",
        ),
        (
            "<disk type='block' device='disk'><source dev='/dev/sdb'/><target dev='vdb' bus='ide'/></disk>",
            "DiskBus",
        ),
        (
            "<disk type='block' device='disk'><driver name='qemu' cache='fast'/><source dev='/dev/sdb'/><target dev='vdb' bus='virtio'/></disk>",
            "CacheMode",
        ),
        (
            "<disk type='block' device='disk'><source dev='/dev/sdb'/><target dev='vdb' bus='virtio'/><address type='pci' slot='0x1ff' bus='0' domain='0' function='0'/></disk>",
            "address.slot",
        ),
    ] {
        assert_eq!(invalid_field(DiskConfig::from_xml(xml)), field, "{xml}");
    }
}

#[test]
fn bad_connection_info_for_the_disk_is_a_typed_error() {
    let device = DeviceRecord::block(Protocol::Iscsi, "/dev/sdb", None);
    let qos = |specs: &str| {
        ConnectionInfo::from_json(&format!(
            r#"{{"driver_volume_type": "local",
                "data": {{"device_path": "/dev/sdb", "qos_specs": {specs}}}}}"#
        ))
        .unwrap()
    };
    let target = || DiskTarget::new("vdb", DiskBus::Virtio);
    match DiskConfig::for_volume(&qos(r#"{"total_bytes_sec": "lots"}"#), &device, target()) {
        Err(Error::InvalidConnectionInfo { field, .. }) => {
            assert_eq!(field, "data.qos_specs.total_bytes_sec")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        invalid_field(DiskConfig::for_volume(
            &qos(r#"{"total_iops_sec": 1, "read_iops_sec": 2}"#),
            &device,
            target()
        )),
        "iotune"
    );
    // Only back-end keys: no iotune at all.
    let disk =
        DiskConfig::for_volume(&qos(r#"{"consumer": "back-end"}"#), &device, target()).unwrap();
    assert_eq!(disk.iotune, None);
    assert!(ConnectionInfo::from_json(
        r#"{"driver_volume_type": "local", "data": {"device_path": "/dev/sdb", "logical_block_size": 1000}}"#
    )
    .is_err());

    // A user without the libvirt secret holding its key cannot make a usable disk.
    let mut info = rbd_info("");
    let mut device = rbd_network_record(&info);
    device.network.as_mut().unwrap().secret_uuid = None;
    assert_eq!(
        invalid_field(DiskConfig::for_volume(&info, &device, target())),
        "auth"
    );
    info = rbd_info("");
    let mut device = rbd_network_record(&info);
    device.network = None;
    assert!(matches!(
        DiskConfig::for_volume(&info, &device, target()),
        Err(Error::InvalidDeviceRecord { .. })
    ));
}

/// The log lines (WARN and above, with fields) written while `f` runs.
fn warnings_during<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

/// An RBD connection_info with these `hosts`/`ports` members (JSON, without the key
/// names), through the RBD connector's network record.
fn rbd_disk_with_monitors(members: &str) -> DiskConfig {
    let info = ConnectionInfo::from_json(&format!(
        r#"{{"driver_volume_type": "rbd",
            "data": {{"name": "volumes/volume-8c5e", "volume_id": "8c5e"{members}}}}}"#
    ))
    .unwrap();
    let device = rbd_network_record(&info);
    DiskConfig::for_volume(&info, &device, DiskTarget::new("vdc", DiskBus::Virtio)).unwrap()
}

#[test]
fn rbd_without_monitors_leaves_them_to_ceph_conf() {
    // Nova writes `<host>` for each of `hosts` (default []); none at all, and librbd reads
    // the monitors from the host's ceph.conf. libvirt's schema has zeroOrMore hosts for rbd.
    let golden = r#"<disk type="network" device="disk">
  <driver name="qemu" type="raw" cache="none"/>
  <source protocol="rbd" name="volumes/volume-8c5e"/>
  <target dev="vdc" bus="virtio"/>
  <serial>8c5e</serial>
  <alias name="ua-8c5e"/>
</disk>"#;
    for members in ["", r#", "hosts": [], "ports": []"#] {
        assert_eq!(emit(&rbd_disk_with_monitors(members)), golden, "{members}");
    }
    let read = DiskConfig::from_xml(
        "<disk type='network' device='disk'><source protocol='rbd' name='p/i'/>\
         <target dev='vdb' bus='virtio'/></disk>",
    )
    .unwrap();
    match read.source {
        DiskSource::Network(n) => {
            assert_eq!((n.protocol, n.hosts.len()), (NetworkProtocol::Rbd, 0))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn monitor_without_a_port_has_no_port_attribute() {
    // nova/tests/unit/virt/libvirt/volume/test_net.py test_libvirt_rbd_driver_hosts: hosts
    // ['example.com', '1.2.3.4', '::1'] with ports [None, '6790', '6791'].
    let disk = rbd_disk_with_monitors(
        r#", "hosts": ["example.com", "1.2.3.4", "::1"], "ports": [null, "6790", 6791]"#,
    );
    assert_eq!(
        emit(&disk),
        r#"<disk type="network" device="disk">
  <driver name="qemu" type="raw" cache="none"/>
  <source protocol="rbd" name="volumes/volume-8c5e">
    <host name="example.com"/>
    <host name="1.2.3.4" port="6790"/>
    <host name="::1" port="6791"/>
  </source>
  <target dev="vdc" bus="virtio"/>
  <serial>8c5e</serial>
  <alias name="ua-8c5e"/>
</disk>"#
    );
    // A stored record from before (ports as strings) still reads, and a null reads back.
    let info = ConnectionInfo::from_json(
        r#"{"driver_volume_type": "rbd", "data": {"name": "p/i", "hosts": ["m1", "m2"],
            "ports": [null, "3300"]}}"#,
    )
    .unwrap();
    let record = rbd_network_record(&info);
    let json = serde_json::to_value(&record).unwrap();
    assert_eq!(json["network"]["ports"], serde_json::json!([null, "3300"]));
    let back: DeviceRecord = serde_json::from_value(json).unwrap();
    assert_eq!(back, record);
    // Still refused: a port that is not one, or a host without its port entry.
    for ports in [r#"[null, "0"]"#, r#"[null]"#, r#"[null, true]"#] {
        let text = format!(
            r#"{{"driver_volume_type": "rbd", "data": {{"name": "p/i",
                "hosts": ["m1", "m2"], "ports": {ports}}}}}"#
        );
        match ConnectionInfo::from_json(&text) {
            Err(Error::InvalidConnectionInfo { field, .. }) => {
                assert!(field.starts_with("data.ports"), "{ports}: {field}")
            }
            other => panic!("{ports}: {other:?}"),
        }
    }
}

fn nbd(name: Option<&str>, hosts: usize) -> DiskConfig {
    DiskConfig::new(
        DiskSource::Network(NetworkDisk {
            protocol: NetworkProtocol::Nbd,
            name: name.map(str::to_string),
            hosts: (0..hosts)
                .map(|i| NetworkHost {
                    name: format!("nbd{i}.example.org"),
                    port: Some(10809),
                })
                .collect(),
            auth: None,
        }),
        DiskTarget::new("vdb", DiskBus::Virtio),
    )
}

#[test]
fn nbd_without_an_export_name() {
    // The server's default export: libvirt's schema has `name` optional for nbd.
    assert_eq!(
        emit(&nbd(None, 1)),
        r#"<disk type="network" device="disk">
  <driver name="qemu" type="raw"/>
  <source protocol="nbd">
    <host name="nbd0.example.org" port="10809"/>
  </source>
  <target dev="vdb" bus="virtio"/>
</disk>"#
    );
    emit(&nbd(Some("export1"), 1));
    // Every other protocol needs its name (libvirt: "missing name for disk source"); nbd
    // and iscsi take exactly one host.
    assert_eq!(invalid_field(nbd(None, 0).to_xml()), "source.host");
    assert_eq!(invalid_field(nbd(None, 2).to_xml()), "source.host");
    assert_eq!(invalid_field(nbd(Some(""), 1).to_xml()), "source.name");
    for (xml, field) in [
        (
            "<disk type='network' device='disk'><source protocol='rbd'><host name='m1'/></source><target dev='vdb' bus='virtio'/></disk>",
            "source.name",
        ),
        (
            "<disk type='network' device='disk'><source protocol='iscsi'><host name='h1'/></source><target dev='vdb' bus='virtio'/></disk>",
            "source.name",
        ),
        (
            "<disk type='network' device='disk'><source protocol='iscsi' name='iqn.2010-10.org.example:t1/1'/><target dev='vdb' bus='virtio'/></disk>",
            "source.host",
        ),
    ] {
        assert_eq!(invalid_field(DiskConfig::from_xml(xml)), field, "{xml}");
    }
}

#[test]
fn lun_passthrough_as_nova_writes_it() {
    // Nova's config.py: no <serial> (libvirt refuses it for device='lun') and no <blockio>
    // (QEMU's scsi-block has no block size properties) for a LUN; the alias stays.
    let info = ConnectionInfo::from_json(
        r#"{"driver_volume_type": "iscsi", "serial": "f1e2d3c4-0001",
            "data": {"target_portal": "192.0.2.10:3260",
                     "target_iqn": "iqn.2010-10.org.openstack:volume-0001",
                     "target_lun": 1, "volume_id": "f1e2d3c4-0001",
                     "logical_block_size": 4096, "physical_block_size": 4096}}"#,
    )
    .unwrap();
    let device = DeviceRecord::block(Protocol::Iscsi, BY_PATH, Some("f1e2d3c4-0001".into()));
    let lun = DiskConfig::for_volume_as(
        &info,
        &device,
        DiskTarget::new("sdb", DiskBus::Scsi),
        DiskDevice::Lun,
    )
    .unwrap();
    assert_eq!(
        emit(&lun),
        format!(
            r#"<disk type="block" device="lun">
  <driver name="qemu" type="raw" cache="none" io="native"/>
  <source dev="{BY_PATH}"/>
  <target dev="sdb" bus="scsi"/>
  <alias name="ua-f1e2d3c4-0001"/>
</disk>"#
        )
    );
    // The same volume as a disk keeps both.
    let disk =
        DiskConfig::for_volume(&info, &device, DiskTarget::new("sdb", DiskBus::Scsi)).unwrap();
    assert!(disk.serial.is_some() && disk.blockio.is_some());

    // sgio (never set by Nova) read from libvirt and written back.
    let dumped = "<disk type='block' device='lun' sgio='filtered'>\
        <driver name='qemu' type='raw' cache='none' io='native'/>\
        <source dev='/dev/sdb'/><target dev='sda' bus='scsi'/>\
        <alias name='scsi0-0-0-1'/>\
        <address type='drive' controller='0' bus='0' target='0' unit='1'/></disk>";
    let read = DiskConfig::from_xml(dumped).unwrap();
    assert_eq!(
        (read.device, read.sgio, read.alias.as_deref()),
        (DiskDevice::Lun, Some(Sgio::Filtered), None)
    );
    assert!(emit(&read).starts_with(r#"<disk type="block" device="lun" sgio="filtered">"#));
    // Current libvirt: "unfiltered sgio is no longer supported".
    assert_eq!(
        invalid_field(DiskConfig::from_xml(
            &dumped.replace("'filtered'", "'unfiltered'")
        )),
        "sgio"
    );

    // What libvirt refuses for a LUN, and sgio on anything else.
    let lun = || {
        let mut d = DiskConfig::block("/dev/sdb", DiskTarget::new("sda", DiskBus::Scsi));
        d.device = DiskDevice::Lun;
        d
    };
    let mut d = lun();
    d.serial = Some("abc".into());
    assert_eq!(invalid_field(d.to_xml()), "serial");
    let mut d = lun();
    d.wwn = Some("5000c50015ea71ac".into());
    assert_eq!(invalid_field(d.to_xml()), "wwn");
    let mut d = lun();
    d.blockio = Some(BlockIo::default());
    assert_eq!(invalid_field(d.to_xml()), "blockio");
    let mut d = lun();
    d.target.bus = DiskBus::Sata;
    assert_eq!(invalid_field(d.to_xml()), "device");
    let mut d = lun();
    d.source = DiskSource::File("/img.raw".into());
    assert_eq!(invalid_field(d.to_xml()), "device");
    let mut d = lun();
    d.driver.format = "qcow2".into();
    assert_eq!(invalid_field(d.to_xml()), "device");
    let mut d = lun();
    d.source = DiskSource::Network(NetworkDisk {
        protocol: NetworkProtocol::Iscsi,
        name: Some("iqn.2010-10.org.example:t1/1".into()),
        hosts: vec![NetworkHost {
            name: "192.0.2.5".into(),
            port: None,
        }],
        auth: None,
    });
    emit(&d);
    d.source = DiskSource::Network(NetworkDisk {
        protocol: NetworkProtocol::Rbd,
        name: Some("p/i".into()),
        hosts: vec![],
        auth: None,
    });
    assert_eq!(invalid_field(d.to_xml()), "device");
    let mut d = DiskConfig::block("/dev/sdb", DiskTarget::new("sda", DiskBus::Scsi));
    d.sgio = Some(Sgio::Filtered);
    assert_eq!(invalid_field(d.to_xml()), "sgio");
    assert_eq!(
        invalid_field(DiskConfig::from_xml(
            "<disk type='file' device='lun'><source file='/a.img'/><target dev='sda' bus='scsi'/></disk>"
        )),
        "device"
    );
}

#[test]
fn cdrom() {
    let mut cd = DiskConfig::file(
        "/srv/iso/install.iso",
        DiskTarget::new("sda", DiskBus::Sata),
    );
    cd.device = DiskDevice::Cdrom;
    cd.readonly = true;
    cd.alias = Some("ua-install-media".into());
    assert_eq!(
        emit(&cd),
        r#"<disk type="file" device="cdrom">
  <driver name="qemu" type="raw"/>
  <source file="/srv/iso/install.iso"/>
  <target dev="sda" bus="sata"/>
  <alias name="ua-install-media"/>
  <readonly/>
</disk>"#
    );
    // libvirt 5.1 and later refuse a CD-ROM on virtio; floppy is not modelled.
    cd.target.bus = DiskBus::Virtio;
    cd.target.dev = "vdb".into();
    assert_eq!(invalid_field(cd.to_xml()), "device");
    assert_eq!(
        invalid_field(DiskConfig::from_xml(
            "<disk type='file' device='floppy'><source file='/f.img'/><target dev='fda' bus='sata'/></disk>"
        )),
        "device"
    );
}

#[test]
fn user_alias() {
    let mut d = DiskConfig::block("/dev/sdb", DiskTarget::new("vdb", DiskBus::Virtio));
    d.alias = Some("ua-0c7f1b2e-9d7a-4c11-8f3e-2b1a5d6c7e80".into());
    let xml = emit(&d);
    assert!(
        xml.contains(r#"<alias name="ua-0c7f1b2e-9d7a-4c11-8f3e-2b1a5d6c7e80"/>"#),
        "{xml}"
    );
    // libvirt keeps a user alias only with the `ua-` prefix and [A-Za-z0-9_-] after it.
    for bad in [
        "ua-",
        "virtio-disk1",
        "ua-a.b",
        "ua-a b",
        "ua-a\"/><x",
        "UA-abc",
    ] {
        d.alias = Some(bad.into());
        match d.to_xml() {
            Err(e @ Error::InvalidDiskConfig { field: "alias", .. }) => {
                assert_eq!(e.kind(), "invalid_disk_config")
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    assert_eq!(
        invalid_field(DiskConfig::from_xml(
            "<disk type='block' device='disk'><source dev='/dev/sdb'/><target dev='vdb' bus='virtio'/><alias name='ua-a.b'/></disk>"
        )),
        "alias"
    );
    // libvirt's own alias is read and dropped (it is not the caller's to set).
    let read = DiskConfig::from_xml(
        "<disk type='block' device='disk'><source dev='/dev/sdb'/><target dev='vdb' bus='virtio'/><alias name='virtio-disk1'/></disk>",
    )
    .unwrap();
    assert_eq!(read.alias, None);

    // Nova's alias is `ua-` + the volume id; an id libvirt would not keep gives none.
    let info = ConnectionInfo::from_json(
        r#"{"driver_volume_type": "local", "serial": "vol.1",
            "data": {"device_path": "/dev/sdb"}}"#,
    )
    .unwrap();
    let device = DeviceRecord::block(Protocol::Local, "/dev/sdb", None);
    let (disk, logs) = warnings_during(|| {
        DiskConfig::for_volume(&info, &device, DiskTarget::new("vdb", DiskBus::Virtio)).unwrap()
    });
    assert_eq!((disk.serial.as_deref(), disk.alias), (Some("vol.1"), None));
    assert!(logs.contains("WARN") && logs.contains("ua-vol.1"), "{logs}");
}

fn local_with_qos(specs: &str) -> ConnectionInfo {
    ConnectionInfo::from_json(&format!(
        r#"{{"driver_volume_type": "local",
            "data": {{"device_path": "/dev/sdb", "qos_specs": {specs}}}}}"#
    ))
    .unwrap()
}

fn local_disk(info: &ConnectionInfo) -> hostbrick::Result<DiskConfig> {
    let device = DeviceRecord::block(Protocol::Local, "/dev/sdb", None);
    DiskConfig::for_volume(info, &device, DiskTarget::new("vdb", DiskBus::Virtio))
}

#[test]
fn zero_total_beside_read_write_limits() {
    // libvirt refuses a total with a read/write limit only when both are non-zero (zero is
    // "no limit"); its schema has total_* and read_*/write_* as a choice, so the zero is
    // not written (libvirt's own dumpxml leaves zeros out too).
    let disk = local_disk(&local_with_qos(
        r#"{"total_bytes_sec": 0, "read_bytes_sec": "1000", "write_bytes_sec": 2000,
            "total_iops_sec": "0", "read_iops_sec_max": 0, "total_iops_sec_max": 50}"#,
    ))
    .unwrap();
    assert_eq!(
        emit(&disk),
        r#"<disk type="block" device="disk">
  <driver name="qemu" type="raw" cache="none" io="native"/>
  <source dev="/dev/sdb"/>
  <target dev="vdb" bus="virtio"/>
  <iotune>
    <read_bytes_sec>1000</read_bytes_sec>
    <write_bytes_sec>2000</write_bytes_sec>
    <total_iops_sec_max>50</total_iops_sec_max>
  </iotune>
</disk>"#
    );
    // Only zeros: no iotune at all.
    assert_eq!(
        local_disk(&local_with_qos(
            r#"{"total_bytes_sec": 0, "read_iops_sec": "0"}"#
        ))
        .unwrap()
        .iotune,
        None
    );
    // Built by hand: the zero total is accepted and left out.
    let mut d = DiskConfig::block("/dev/sdb", DiskTarget::new("vdb", DiskBus::Virtio));
    d.iotune = Some(IoTune {
        total_iops_sec: Some(0),
        read_iops_sec: Some(10),
        ..IoTune::default()
    });
    let xml = d.to_xml().unwrap();
    validate_disk_xml(&xml).unwrap();
    assert!(!xml.contains("total_iops_sec"), "{xml}");
    // Read back from libvirt-style XML that carries the zero.
    let read = DiskConfig::from_xml(
        "<disk type='block' device='disk'><source dev='/dev/sdb'/><target dev='vdb' bus='virtio'/>\
         <iotune><total_bytes_sec>0</total_bytes_sec><read_bytes_sec>5</read_bytes_sec></iotune></disk>",
    )
    .unwrap();
    assert_eq!(
        read.iotune,
        Some(IoTune {
            read_bytes_sec: Some(5),
            ..IoTune::default()
        })
    );
    // Both non-zero: still refused.
    assert_eq!(
        invalid_field(local_disk(&local_with_qos(
            r#"{"total_bytes_sec": 1, "write_bytes_sec": 1}"#
        ))),
        "iotune"
    );
}

#[test]
fn reads_disks_with_address_types_it_does_not_model() {
    for address in [
        "<address type='ccw' cssid='0xfe' ssid='0x0' devno='0x0001'/>",
        "<address type='virtio-mmio'/>",
        "<address type='usb' bus='0' port='1'/>",
        "<address type='virtio-s390'/>",
        "<address type='spapr-vio' reg='0x2000'/>",
    ] {
        let xml = format!(
            "<disk type='block' device='disk'><driver name='qemu' type='raw'/>\
             <source dev='/dev/sdb'/><target dev='vdb' bus='virtio'/>{address}</disk>"
        );
        let disk = DiskConfig::from_xml(&xml).unwrap_or_else(|e| panic!("{address}: {e}"));
        assert_eq!(disk.address, None, "{address}");
        assert_eq!(disk.source, DiskSource::Block("/dev/sdb".into()));
    }
}

#[test]
fn qos_specs_of_the_wrong_type_are_ignored_with_a_warning() {
    // Nova's volume.py: qos_specs that is not a dict logs "Unknown content in
    // connection_info/qos_specs" and sets no limits; the attach goes on.
    for specs in [
        r#""total_bytes_sec=100""#,
        r#"[["total_bytes_sec", 100]]"#,
        "100",
        "true",
    ] {
        let (disk, logs) = warnings_during(|| local_disk(&local_with_qos(specs)).unwrap());
        assert_eq!(disk.iotune, None, "{specs}");
        assert!(
            logs.contains("WARN") && logs.contains("data.qos_specs"),
            "{specs}: {logs}"
        );
    }
    // null (Nova: `if data['qos_specs']` is false) and {}: nothing, no warning.
    for specs in ["null", "{}"] {
        let (disk, logs) = warnings_during(|| local_disk(&local_with_qos(specs)).unwrap());
        assert_eq!((disk.iotune, logs.as_str()), (None, ""), "{specs}");
    }
    // Per key, as Nova: unknown keys skipped, a null limit left unset; a limit libvirt
    // would refuse (Nova passes it on and libvirt fails the attach) is a typed error.
    let disk = local_disk(&local_with_qos(
        r#"{"total_bytes_sec": null, "read_iops_sec": 7, "iops": "fast", "consumer": "front-end"}"#,
    ))
    .unwrap();
    assert_eq!(
        disk.iotune,
        Some(IoTune {
            read_iops_sec: Some(7),
            ..IoTune::default()
        })
    );
    for value in [r#""lots""#, "1.5", "-1", "true", "[1]"] {
        match local_disk(&local_with_qos(&format!(
            r#"{{"write_iops_sec": {value}}}"#
        ))) {
            Err(Error::InvalidConnectionInfo { field, .. }) => {
                assert_eq!(field, "data.qos_specs.write_iops_sec", "{value}")
            }
            other => panic!("{value}: {other:?}"),
        }
    }
}

#[test]
fn golden_native_luks_encryption_and_its_checks() {
    use hostbrick::libvirt::{DiskEncryption, EncryptionFormat};
    let mut disk = DiskConfig::block("/dev/loop7", DiskTarget::new("vdb", DiskBus::Virtio));
    disk.serial = Some("vol-luks-1".into());
    disk.encryption = Some(DiskEncryption::luks("0f4c1a2e-8d3b-4f7a-9e6c-5b2d1c0a9e8f"));
    // As Nova's LibvirtConfigGuestDiskEncryption writes it, inside <disk>.
    assert_eq!(
        emit(&disk),
        r#"<disk type="block" device="disk">
  <driver name="qemu" type="raw" cache="none" io="native"/>
  <source dev="/dev/loop7"/>
  <encryption format="luks">
    <secret type="passphrase" uuid="0f4c1a2e-8d3b-4f7a-9e6c-5b2d1c0a9e8f"/>
  </encryption>
  <target dev="vdb" bus="virtio"/>
  <serial>vol-luks-1</serial>
</disk>"#
    );
    // A network source (QEMU's librbd) carries it too.
    let mut net = DiskConfig::new(
        DiskSource::Network(NetworkDisk {
            protocol: NetworkProtocol::Rbd,
            name: Some("volumes/volume-1".into()),
            hosts: Vec::new(),
            auth: None,
        }),
        DiskTarget::new("vdc", DiskBus::Virtio),
    );
    net.encryption = disk.encryption.clone();
    emit(&net);

    // libvirt's dumpxml may write it inside <source>: read from there too.
    let dumped = r#"<disk type='block' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source dev='/dev/loop7' index='3'>
        <encryption format='luks'>
          <secret type='passphrase' uuid='0f4c1a2e-8d3b-4f7a-9e6c-5b2d1c0a9e8f'/>
        </encryption>
      </source>
      <target dev='vdb' bus='virtio'/>
      <alias name='virtio-disk1'/>
    </disk>"#;
    let back = DiskConfig::from_xml(dumped).unwrap();
    let enc = back.encryption.unwrap();
    assert_eq!(enc.format, EncryptionFormat::Luks);
    assert_eq!(enc.secret_uuid, "0f4c1a2e-8d3b-4f7a-9e6c-5b2d1c0a9e8f");

    // The checks: a UUID, a passphrase secret, a known format, not on a LUN.
    let mut bad = disk.clone();
    bad.encryption = Some(DiskEncryption::luks("not-a-uuid"));
    assert_eq!(invalid_field(bad.to_xml()), "encryption.secret.uuid");
    bad.encryption = Some(DiskEncryption::luks("0f4c1a2e-8d3b-4f7a-9e6c-5b2d1c0a9e8f"));
    bad.device = DiskDevice::Lun;
    bad.serial = None;
    assert_eq!(invalid_field(bad.to_xml()), "encryption");
    let reread = |inner: &str| {
        DiskConfig::from_xml(&format!(
            "<disk type='block' device='disk'><source dev='/dev/sdb'/>{inner}\
             <target dev='vdb' bus='virtio'/></disk>"
        ))
    };
    assert_eq!(
        invalid_field(reread(
            "<encryption format='qcow'><secret type='passphrase' \
             uuid='0f4c1a2e-8d3b-4f7a-9e6c-5b2d1c0a9e8f'/></encryption>"
        )),
        "EncryptionFormat"
    );
    assert_eq!(
        invalid_field(reread(
            "<encryption format='luks'><secret type='ceph' \
             uuid='0f4c1a2e-8d3b-4f7a-9e6c-5b2d1c0a9e8f'/></encryption>"
        )),
        "encryption.secret.type"
    );
    assert_eq!(
        invalid_field(reread("<encryption format='luks'/>")),
        "encryption.secret"
    );
    assert_eq!(
        invalid_field(reread(
            "<encryption format='luks'><secret type='passphrase' uuid='x'/></encryption>"
        )),
        "encryption.secret.uuid"
    );
}
