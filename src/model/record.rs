//! The device record a connect returns: serde-able, enough to detach later.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::encryption::EncryptionProvider;
use crate::error::{Error, Result};
use crate::model::connection::Protocol;
use crate::model::ids::{Hctl, Iqn, Portal};
use crate::model::nvme::NvmePortal;

/// What kind of device a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// A block device on this host.
    Block,
    /// Nothing on this host: the hypervisor opens the volume over the network (see
    /// [`DeviceRecord::network`]).
    Network,
}

/// One path of an attached volume: a SCSI device and the target it came through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRecord {
    /// The block device, e.g. `/dev/sdb`.
    pub device: PathBuf,
    /// Its SCSI address.
    pub hctl: Hctl,
    /// The portal it came through.
    pub portal: Portal,
    /// The target.
    pub iqn: Iqn,
    /// The LUN.
    pub lun: u64,
    /// The iSCSI session (`sessionN` in sysfs) that carried it. Session ids are never
    /// reused within a boot, where SCSI host numbers and so H:C:T:L are: a new session to
    /// the same LUN gets the same address, never the same session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u32>,
}

/// One NVMe-oF path of an attached volume: a controller and the namespace it shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmePathRecord {
    /// The controller, `nvmeN`.
    pub controller: String,
    /// The subsystem NQN.
    pub nqn: String,
    /// The portal.
    pub portal: NvmePortal,
    /// The namespace's block device (the multipath head), e.g. `nvme0n1`.
    pub namespace: String,
    /// The namespace UUID, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// A volume the hypervisor opens over the network (libvirt `<disk type='network'>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSource {
    /// The protocol, e.g. `rbd`.
    pub protocol: String,
    /// The source name, e.g. `pool/image`.
    pub name: String,
    /// Monitor (server) hosts.
    pub hosts: Vec<String>,
    /// Their ports, one per host; `None` (`null`) for a host without a port.
    pub ports: Vec<Option<String>>,
    /// The user to authenticate as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_username: Option<String>,
    /// The libvirt secret type (e.g. `ceph`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_type: Option<String>,
    /// The libvirt secret UUID holding the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_uuid: Option<String>,
    /// The Ceph cluster name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
}

/// How an RBD image is mapped on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RbdRecord {
    /// Kernel rbd or rbd-nbd.
    pub mapper: crate::model::rbd::RbdMapper,
    /// The image spec.
    pub image: String,
    /// The mapped device, e.g. `/dev/rbd0`.
    pub device: String,
}

/// The block device a `local` volume's path resolved to at connect, and its identity, so
/// a later operation can tell whether the path still names the same device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRecord {
    /// The block device the path resolved to, e.g. `/dev/loop3`.
    pub device: PathBuf,
    /// Its `major:minor`.
    pub devnum: String,
    /// The kernel's disk sequence number (`diskseq`), unique per device until a reboot,
    /// where the kernel has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diskseq: Option<u64>,
}

/// The dm-crypt mapping an encrypted volume was opened to on this host
/// ([`crate::encryption::open_volume`]). It holds no key: closing needs none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionRecord {
    /// The format it was opened with.
    pub provider: EncryptionProvider,
    /// The dm name of the mapping (`crypt-sdb`, or the name os-brick gave a mapping it
    /// opened).
    pub name: String,
    /// The decrypted device, `/dev/mapper/<name>`: what a guest gets.
    pub device: PathBuf,
    /// The encrypted device that was opened (the record's `path` resolved to its kernel
    /// device, e.g. `/dev/sdb`, `/dev/dm-3`).
    pub raw: PathBuf,
}

/// The result of a connect, with os-brick's keys (`type`, `path`, `scsi_wwn`,
/// `multipath_id`) and what a later disconnect needs. Persist it as JSON; unknown keys
/// are ignored when it is read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// `"block"`.
    #[serde(rename = "type")]
    pub kind: DeviceKind,
    /// The device to hand to a guest: the dm-multipath device, else the by-path link (or
    /// the block device when udev made no link); for a network record, `rbd:pool/image`.
    pub path: PathBuf,
    /// The volume's WWID in udev's form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scsi_wwn: Option<String>,
    /// The dm-multipath map name, when a map was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipath_id: Option<String>,
    /// The protocol that attached it. os-brick's `device_info` has none: a disconnect
    /// then takes the protocol of its connection_info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// The volume id from the connection_info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_id: Option<String>,
    /// Every SCSI path attached (iSCSI).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathRecord>,
    /// Every NVMe-oF path attached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nvme_paths: Vec<NvmePathRecord>,
    /// The MD RAID1 array (`/dev/md/<alias>`) over the replicas of a replicated volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md_alias: Option<String>,
    /// For a network record: what the hypervisor opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSource>,
    /// For a mapped RBD image: how it is mapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbd: Option<RbdRecord>,
    /// For a `local` volume: the device its path resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalRecord>,
    /// For an encrypted volume opened on this host: its dm-crypt mapping. `path` stays the
    /// encrypted device (the connector detaches it); [`DeviceRecord::guest_path`] is the
    /// decrypted one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionRecord>,
}

impl DeviceRecord {
    /// A block-device record with no protocol details yet.
    pub fn block(protocol: Protocol, path: impl Into<PathBuf>, volume_id: Option<String>) -> Self {
        DeviceRecord {
            kind: DeviceKind::Block,
            path: path.into(),
            scsi_wwn: None,
            multipath_id: None,
            protocol: Some(protocol),
            volume_id,
            paths: Vec::new(),
            nvme_paths: Vec::new(),
            md_alias: None,
            network: None,
            rbd: None,
            local: None,
            encryption: None,
        }
    }

    /// The device to hand to a guest: the decrypted device when the volume was opened on
    /// this host ([`EncryptionRecord::device`]), else [`DeviceRecord::path`].
    ///
    /// os-brick expresses the same by rewriting the volume's device link to point at the
    /// decrypted device (`ln -sf /dev/mapper/crypt-X PATH`); hostbrick leaves udev's links
    /// alone and keeps both devices in the record.
    pub fn guest_path(&self) -> &Path {
        match &self.encryption {
            Some(e) => &e.device,
            None => &self.path,
        }
    }

    /// Parses a record saved as JSON.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::InvalidDeviceRecord {
            reason: e.to_string(),
        })
    }

    /// The record as JSON (fails only for a path that is not UTF-8).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::InvalidDeviceRecord {
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_brick_keys_and_round_trip() {
        let rec = DeviceRecord {
            kind: DeviceKind::Block,
            path: "/dev/dm-0".into(),
            scsi_wwn: Some("36001405abc".into()),
            multipath_id: Some("36001405abc".into()),
            protocol: Some(Protocol::Iscsi),
            volume_id: None,
            paths: vec![PathRecord {
                device: "/dev/sdb".into(),
                hctl: "2:0:0:1".parse().unwrap(),
                portal: "127.0.0.1:3260".parse().unwrap(),
                iqn: "iqn.2003-01.org.linux-iscsi.vm:t1".parse().unwrap(),
                lun: 1,
                session: Some(3),
            }],
            nvme_paths: Vec::new(),
            md_alias: None,
            network: None,
            rbd: None,
            local: None,
            encryption: None,
        };
        let v: serde_json::Value = serde_json::from_str(&rec.to_json().unwrap()).unwrap();
        assert_eq!(v["type"], "block");
        assert_eq!(v["path"], "/dev/dm-0");
        assert_eq!(v["scsi_wwn"], "36001405abc");
        assert_eq!(v["multipath_id"], "36001405abc");
        assert_eq!(v["paths"][0]["hctl"], "2:0:0:1");
        assert_eq!(
            DeviceRecord::from_json(&rec.to_json().unwrap()).unwrap(),
            rec
        );
        // Extra keys (another tool's additions) are tolerated.
        let mut v2 = v.clone();
        v2["extra"] = serde_json::json!(1);
        assert_eq!(DeviceRecord::from_json(&v2.to_string()).unwrap(), rec);
        assert!(matches!(
            DeviceRecord::from_json("{}"),
            Err(Error::InvalidDeviceRecord { .. })
        ));
    }

    #[test]
    fn encryption_is_optional_and_guest_path_follows_it() {
        // A record written before encryption existed reads back without it.
        let old = r#"{"type":"block","path":"/dev/sdb","protocol":"iscsi"}"#;
        let mut rec = DeviceRecord::from_json(old).unwrap();
        assert_eq!(rec.encryption, None);
        assert_eq!(rec.guest_path(), Path::new("/dev/sdb"));
        assert!(!rec.to_json().unwrap().contains("encryption"));
        rec.encryption = Some(EncryptionRecord {
            provider: EncryptionProvider::Luks2,
            name: "crypt-sdb".into(),
            device: "/dev/mapper/crypt-sdb".into(),
            raw: "/dev/sdb".into(),
        });
        assert_eq!(rec.guest_path(), Path::new("/dev/mapper/crypt-sdb"));
        assert_eq!(rec.path, Path::new("/dev/sdb"));
        let v: serde_json::Value = serde_json::from_str(&rec.to_json().unwrap()).unwrap();
        assert_eq!(
            v["encryption"],
            serde_json::json!({"provider": "luks2", "name": "crypt-sdb",
                               "device": "/dev/mapper/crypt-sdb", "raw": "/dev/sdb"})
        );
        assert_eq!(DeviceRecord::from_json(&v.to_string()).unwrap(), rec);
    }
}
