//! The libvirt disk builder: golden XML for the seed examples, Nova's mapping from a
//! connection_info, escaping, read-back, and libvirt's own schema for every XML written.

use std::sync::Arc;

use hostbrick::libvirt::{
    BlockIo, CacheMode, DetectZeroes, DiscardMode, DiskAddress, DiskAuth, DiskSource, IoMode,
    IoTune, NetworkDisk, NetworkHost, NetworkProtocol, SecretType,
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
                name: name.into(),
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
            name: "pool/img</source><source file=\"/etc/shadow\"/>".into(),
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
