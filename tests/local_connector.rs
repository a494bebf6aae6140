//! The `local` protocol on a fake host: a device already there is validated and handed
//! through; disconnect leaves it in place.

use std::path::PathBuf;
use std::sync::Arc;

use hostbrick::testing::{FakeHost, FakeRunner, LunSpec};
use hostbrick::{
    connector_for, ConnectionInfo, ConnectorOptions, DisconnectOptions, Error, HostContext,
    Protocol,
};

fn local(path: &str) -> ConnectionInfo {
    ConnectionInfo::from_json(&format!(
        r#"{{"driver_volume_type": "local", "data": {{"device_path": "{path}", "volume_id": "v1"}}}}"#
    ))
    .unwrap()
}

#[test]
fn hands_an_existing_block_device_through() {
    let fake = FakeHost::new();
    fake.add_scsi_host(3);
    let name = fake.add_scsi_disk(
        3,
        &LunSpec::new(0, 0, 1, "naa.600140511", 8 << 20).by_path("pci-0000:00:1f.2-ata-1"),
    );
    let runner = Arc::new(FakeRunner::new());
    let c = connector_for(
        Protocol::Local,
        ConnectorOptions::with_context(HostContext::new(fake.host(), runner.clone())),
    )
    .unwrap();

    // By its name or through a udev link.
    for path in [
        format!("/dev/{name}"),
        "/dev/disk/by-path/pci-0000:00:1f.2-ata-1".into(),
    ] {
        let info = local(&path);
        let rec = c.connect_volume(&info).unwrap();
        assert_eq!(rec.path, PathBuf::from(&path));
        assert_eq!(rec.protocol, Some(Protocol::Local));
        assert_eq!(rec.volume_id.as_deref(), Some("v1"));
        assert_eq!(c.get_volume_paths(&info).unwrap(), [PathBuf::from(&path)]);
        assert_eq!(c.extend_volume(&info).unwrap(), 8 << 20);
        c.check_valid_device(&rec.path).unwrap();
        c.disconnect_volume(&info, Some(&rec), DisconnectOptions::default())
            .unwrap();
        assert!(
            fake.host().dev(&name).exists(),
            "disconnect left the device alone"
        );
    }
    assert!(runner.calls().is_empty(), "{:?}", runner.calls());

    // Not there: a typed error, and no paths.
    let gone = local("/dev/sdzz");
    assert!(matches!(
        c.connect_volume(&gone),
        Err(Error::VolumeDeviceNotFound { .. })
    ));
    assert!(c.get_volume_paths(&gone).unwrap().is_empty());

    // Another protocol's connection_info is refused.
    let rbd =
        ConnectionInfo::from_json(r#"{"driver_volume_type": "rbd", "data": {"name": "p/i"}}"#)
            .unwrap();
    assert!(matches!(
        c.connect_volume(&rbd),
        Err(Error::ProtocolMismatch { .. })
    ));
}

#[test]
fn device_path_must_be_under_dev() {
    for path in ["relative/sdb", "/etc/passwd", ""] {
        let r = ConnectionInfo::from_json(&format!(
            r#"{{"driver_volume_type": "local", "data": {{"device_path": "{path}"}}}}"#
        ));
        match r {
            Err(Error::InvalidConnectionInfo { field, .. }) => {
                assert_eq!(field, "data.device_path")
            }
            other => panic!("{path}: {other:?}"),
        }
    }
}
