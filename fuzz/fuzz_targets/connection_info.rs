//! connection_info JSON for every protocol: parsing never panics; a parsed value answers
//! its protocol's typed accessor (and only that one) with properties that hold what the
//! connectors rely on; the disk a volume makes writes as libvirt XML that reads back the
//! same; neither a parsed value nor a parse error ever shows a secret.
//!
//! One target covers the protocols deliberately: the input is parsed as it is, and then its
//! `data` object (or the input itself, when it has no envelope) is parsed again under each
//! of `iscsi`, `iser`, `nvmeof`, `rbd` and `local`, with secrets planted, so every
//! protocol's parser sees every input whatever `driver_volume_type` it names.
#![no_main]

use hostbrick::nvme::Nqn;
use hostbrick::rbd::ImageSpec;
use hostbrick::{
    ConnectionInfo, DeviceRecord, DiskBus, DiskConfig, DiskTarget, Iqn, Portal, Protocol,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

const SENTINEL: &str = "pw-sentinel-7Kd9ZqX";
const SECRET_KEYS: [&str; 3] = ["auth_password", "discovery_auth_password", "keyring"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(info) = ConnectionInfo::from_json(text) {
        check(&info);
    }
    if text.contains(SENTINEL) {
        return;
    }
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let body = match v.get("data") {
        Some(d) if v.get("driver_volume_type").is_some() => d,
        _ => &v,
    };
    let Some(body) = body.as_object() else { return };
    let mut planted = body.clone();
    for key in SECRET_KEYS {
        planted.insert(key.into(), Value::String(SENTINEL.into()));
    }
    for name in ["iscsi", "iser", "nvmeof", "rbd", "local"] {
        let protocol: Protocol = name.parse().expect("a protocol name");
        for body in [body, &planted] {
            let doc = json!({"driver_volume_type": name, "data": body});
            let shown = match ConnectionInfo::from_value(&doc) {
                Ok(info) => {
                    assert_eq!(info.protocol(), protocol);
                    check(&info);
                    format!("{info:?}")
                }
                Err(e) => format!("{e:?} {} {}", e, e.chain()),
            };
            assert!(!shown.contains(SENTINEL), "a secret was shown: {shown}");
        }
    }
});

/// What a parsed connection_info promises, through its protocol's accessor.
fn check(info: &ConnectionInfo) {
    let (iscsi, nvme, rbd, local) = (info.iscsi(), info.nvme(), info.rbd(), info.local());
    let expected = match info.protocol() {
        Protocol::Iscsi | Protocol::Iser => (true, false, false, false),
        Protocol::NvmeOf => (false, true, false, false),
        Protocol::Rbd => (false, false, true, false),
        Protocol::Local => (false, false, false, true),
    };
    let found = (
        iscsi.is_some(),
        nvme.is_some(),
        rbd.is_some(),
        local.is_some(),
    );
    assert_eq!(found, expected);
    check_disk(info);
    if let Some(p) = local {
        assert!(p.device_path.is_absolute() && p.device_path.starts_with("/dev"));
        assert_eq!(info.volume_id(), p.volume_id.as_deref());
    }
    if let Some(p) = iscsi {
        assert!(!p.targets.is_empty());
        for t in &p.targets {
            assert_eq!(
                t.portal.to_string().parse::<Portal>().ok().as_ref(),
                Some(&t.portal)
            );
            assert_eq!(t.iqn.to_string().parse::<Iqn>().ok().as_ref(), Some(&t.iqn));
            let _ = hostbrick::iscsi::by_path_name(&t.portal, t.iqn.as_str(), t.lun);
        }
        assert_eq!(p.primary(), &p.targets[0]);
        let _ = (p.wants_discovery(), p.volume_key());
        for chap in [&p.auth, &p.discovery_auth].into_iter().flatten() {
            assert!(!chap.username.is_empty());
        }
        assert_eq!(info.volume_id(), p.volume_id.as_deref());
    }
    if let Some(p) = nvme {
        let copies = p.copies();
        assert!(!copies.is_empty());
        for c in copies {
            assert!(!c.portals.is_empty());
            assert_eq!(c.nqn.to_string().parse::<Nqn>().ok().as_ref(), Some(&c.nqn));
            for portal in &c.portals {
                assert_ne!(portal.port, 0);
                let _ = portal.to_string();
            }
            if let Some(n) = c.namespace.nsid {
                assert!(n >= 1);
            }
            let _ = c.namespace.to_string();
        }
        if p.replicas.len() > 1 {
            assert!(p
                .alias
                .as_deref()
                .is_some_and(|a| !a.is_empty() && !a.contains('/')));
        }
        let _ = p.volume_key();
        assert_eq!(info.volume_id(), p.volume_id.as_deref());
    }
    if let Some(p) = rbd {
        assert_eq!(
            p.image.to_string().parse::<ImageSpec>().ok().as_ref(),
            Some(&p.image)
        );
        for m in &p.monitors {
            assert!(!m.host.is_empty());
            // A port is 1-65535; `null` (no port) leaves Ceph's defaults.
            assert!(m
                .port
                .as_ref()
                .is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n != 0)));
            let _ = m.address();
        }
        assert!(!p.user().is_empty());
        if p.auth_enabled {
            assert!(p.auth_username.is_some());
        }
        let net = hostbrick::rbd::network_source(p);
        assert_eq!(net.hosts.len(), net.ports.len());
        assert_eq!(net.name, p.image.to_string());
        let _ = p.volume_key();
        assert_eq!(info.volume_id(), p.volume_id.as_deref());
    }
}

/// The disk Nova would make of the volume, attached at a block device: when it can be made,
/// its XML reads back as the same disk.
fn check_disk(info: &ConnectionInfo) {
    let record = DeviceRecord::block(
        info.protocol(),
        "/dev/sdb",
        info.volume_id().map(str::to_string),
    );
    let Ok(disk) = DiskConfig::for_volume(info, &record, DiskTarget::new("vdb", DiskBus::Virtio))
    else {
        return;
    };
    let xml = disk.to_xml().expect("a checked disk writes as XML");
    let back = DiskConfig::from_xml(&xml).expect("written XML reads back");
    assert_eq!(back, disk, "{xml}");
}
