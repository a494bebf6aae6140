//! dm-crypt mappings as sysfs shows them (`/sys/block/dm-N/dm/{name,uuid}` and `slaves/`),
//! and the names os-brick and hostbrick give the mapping of a volume.
//!
//! sysfs is the truth: a mapping belongs to a volume only when its one slave is the
//! volume's device on the live host, never because of its name.

use std::path::Path;

use crate::devices::block;
use crate::error::Result;
use crate::model::connection::Protocol;
use crate::model::record::DeviceRecord;
use crate::platform::host::Host;

/// The dm uuid prefix cryptsetup gives its mappings (`CRYPT-<TYPE>-...`).
pub const CRYPT_UUID_PREFIX: &str = "CRYPT-";

/// The prefix of the dm name os-brick (and so hostbrick) gives a volume's mapping.
pub const NAME_PREFIX: &str = "crypt-";

/// The longest dm name the kernel takes (`DM_NAME_LEN` is 128 with the terminating NUL).
const DM_NAME_MAX: usize = 127;

/// The format of a dm-crypt mapping, from its dm uuid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CryptType {
    /// `CRYPT-LUKS1-<uuid>-<name>`.
    Luks1,
    /// `CRYPT-LUKS2-<uuid>-<name>`.
    Luks2,
    /// `CRYPT-PLAIN-<name>`.
    Plain,
    /// Another cryptsetup type (`TCRYPT`, `BITLK`, `LOOPAES`, `VERITY`, `TEMP`, ...).
    Other(String),
}

impl CryptType {
    /// True for a LUKS mapping (either version).
    pub fn is_luks(&self) -> bool {
        matches!(self, CryptType::Luks1 | CryptType::Luks2)
    }
}

/// A dm-crypt mapping on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptMapping {
    /// The kernel name, `dm-N`.
    pub dm: String,
    /// The dm name (`/dev/mapper/<name>`).
    pub name: String,
    /// The format.
    pub kind: CryptType,
    /// The devices beneath it (one for a dm-crypt mapping).
    pub slaves: Vec<String>,
}

impl CryptMapping {
    /// The mapping `dm` is, from its `dm/uuid` and `dm/name` values and its slaves; `None`
    /// unless the uuid is cryptsetup's (`CRYPT-...`) and the name is set.
    pub fn from_dm_attrs(
        dm: &str,
        uuid: &str,
        name: &str,
        slaves: Vec<String>,
    ) -> Option<CryptMapping> {
        let rest = uuid.trim().strip_prefix(CRYPT_UUID_PREFIX)?;
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        let ty = rest.split('-').next().unwrap_or_default();
        let kind = match ty {
            "LUKS1" => CryptType::Luks1,
            "LUKS2" => CryptType::Luks2,
            "PLAIN" => CryptType::Plain,
            other => CryptType::Other(other.to_string()),
        };
        Some(CryptMapping {
            dm: dm.to_string(),
            name: name.to_string(),
            kind,
            slaves,
        })
    }

    /// True when the mapping sits on block device `kernel` (`sdb`, `dm-3`) and on nothing
    /// else.
    pub fn sits_on(&self, kernel: &str) -> bool {
        self.slaves.len() == 1 && self.slaves[0] == kernel
    }
}

/// The dm-crypt mapping `dm` (`dm-N`), if it is one.
pub fn crypt_info(host: &Host, dm: &str) -> Result<Option<CryptMapping>> {
    if !dm.starts_with("dm-") {
        return Ok(None);
    }
    let Some(uuid) = host.read_attr_opt(&host.sys(format!("block/{dm}/dm/uuid")))? else {
        return Ok(None);
    };
    if !uuid.starts_with(CRYPT_UUID_PREFIX) {
        return Ok(None);
    }
    let name = host
        .read_attr_opt(&host.sys(format!("block/{dm}/dm/name")))?
        .unwrap_or_default();
    let slaves = block::slaves(host, dm)?;
    Ok(CryptMapping::from_dm_attrs(dm, &uuid, &name, slaves))
}

/// The dm-crypt mappings holding block device `kernel`.
pub fn crypt_holders(host: &Host, kernel: &str) -> Result<Vec<CryptMapping>> {
    let mut out = Vec::new();
    for h in block::holders(host, kernel)? {
        if let Some(m) = crypt_info(host, &h)? {
            out.push(m);
        }
    }
    Ok(out)
}

/// The device-mapper device named `name`, as sysfs shows it: its `dm-N` and, when it is a
/// dm-crypt mapping, the mapping. `None` when no dm device has that name.
pub fn dm_by_name(host: &Host, name: &str) -> Result<Option<(String, Option<CryptMapping>)>> {
    for dm in host.list_dir(&host.sys("block"))? {
        if !dm.starts_with("dm-") {
            continue;
        }
        let n = host.read_attr_opt(&host.sys(format!("block/{dm}/dm/name")))?;
        if n.as_deref() == Some(name) {
            let m = crypt_info(host, &dm)?;
            return Ok(Some((dm, m)));
        }
    }
    Ok(None)
}

/// True for a name hostbrick hands to cryptsetup or accepts from sysfs as a volume's
/// mapping: 1 to 127 bytes of printable ASCII without white space or `/`, not starting
/// with `-` (it would read as an option), not `.` or `..`.
pub fn valid_dm_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= DM_NAME_MAX
        && !name.starts_with('-')
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

fn file_name(p: &Path) -> Option<String> {
    p.file_name().and_then(|n| n.to_str()).map(str::to_string)
}

/// The basename of the device path os-brick's connector returns for the volume (Nova
/// hands it to the encryptor as `device_path`): `kernel` (the block device the record's
/// path resolves to, e.g. `sdb`, `dm-3`, `nvme0n1`) for iSCSI (os-brick's path is
/// `/dev/sdX` or `/dev/dm-N`, hostbrick's a by-path link) and NVMe-oF; the alias of a
/// replicated NVMe volume (`/dev/md/<alias>`); the image of a mapped RBD volume (os-brick's
/// `/dev/rbd/<pool>/<image>`); for a record without a protocol (os-brick's own
/// `device_info`) and a local volume, the basename of the path itself.
pub fn os_brick_base(record: &DeviceRecord, kernel: &str) -> String {
    let path_base = file_name(&record.path);
    let under_dev = |dir: &str| record.path.starts_with(Path::new("/dev").join(dir));
    let base = match record.protocol {
        Some(Protocol::Rbd) => record
            .rbd
            .as_ref()
            .and_then(|r| r.image.rsplit('/').next().map(str::to_string)),
        Some(Protocol::NvmeOf) if under_dev("md") => path_base,
        Some(Protocol::Iscsi | Protocol::Iser | Protocol::NvmeOf) => None,
        Some(Protocol::Local) | None => path_base.filter(|_| !under_dev("disk")),
    };
    base.filter(|b| valid_dm_name(b))
        .unwrap_or_else(|| kernel.to_string())
}

/// The dm name hostbrick opens a volume's mapping with: os-brick's,
/// `crypt-<basename of os-brick's device path>` ([`os_brick_base`]).
pub fn mapping_name(record: &DeviceRecord, kernel: &str) -> String {
    let name = format!("{NAME_PREFIX}{}", os_brick_base(record, kernel));
    if valid_dm_name(&name) {
        name
    } else {
        format!("{NAME_PREFIX}{kernel}")
    }
}

/// Every name the volume's mapping may have, the one hostbrick gives first: the name in
/// the record, `crypt-<base>`, and the names os-brick's encryptor recognises (its
/// `__init__`): the old name without the prefix (`<base>`, from Nova releases before the
/// prefix) and the multipath id (a Fibre Channel volume's `/dev/mapper/<WWN>`). `<base>` is
/// [`os_brick_base`] and, when it differs, the basename of the record's path (older Nova
/// handed os-brick the by-path link as the device path). Only names [`valid_dm_name`]
/// accepts.
pub fn candidate_names(record: &DeviceRecord, kernel: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |n: String| {
        if valid_dm_name(&n) && !out.contains(&n) {
            out.push(n);
        }
    };
    add(mapping_name(record, kernel));
    if let Some(e) = &record.encryption {
        add(e.name.clone());
    }
    let mut bases = vec![os_brick_base(record, kernel)];
    if let Some(b) = file_name(&record.path) {
        if !bases.contains(&b) {
            bases.push(b);
        }
    }
    for b in &bases {
        add(format!("{NAME_PREFIX}{b}"));
        add(b.clone());
    }
    if let Some(w) = &record.multipath_id {
        add(w.clone());
    }
    for path in os_brick_device_paths(record, kernel) {
        add(format!("{NAME_PREFIX}{}", os_brick_link_base(&path)));
    }
    out
}

/// The directory and prefix of the link os-brick (since 5.2) makes for a connection_info
/// with `encrypted: true` and hands its encryptor instead of the device path:
/// `/dev/disk/by-id/os-brick` followed by the device path with `/` as `+`
/// (`/dev/disk/by-id/os-brick+dev+dm-0`). The encryptor names its mapping after it
/// (`crypt-os-brick+dev+dm-0`) and repoints it at the mapping.
pub const OS_BRICK_LINK_DIR: &str = "/dev/disk/by-id";
const OS_BRICK_LINK_PREFIX: &str = "os-brick";

/// The basename of os-brick's link for the device path `path`: `os-brick+dev+dm-0`.
pub fn os_brick_link_base(path: &str) -> String {
    format!("{OS_BRICK_LINK_PREFIX}{}", path.replace('/', "+"))
}

/// The device paths os-brick's connector returns for the volume (what its link encodes):
/// `/dev/<kernel>` for iSCSI, NVMe-oF (`/dev/md/<alias>` for a replicated one) and a local
/// volume, `/dev/rbd/<pool>/<image>` for a mapped RBD image.
fn os_brick_device_paths(record: &DeviceRecord, kernel: &str) -> Vec<String> {
    let mut out = vec![format!("/dev/{kernel}")];
    match record.protocol {
        Some(Protocol::Rbd) => {
            if let Some(r) = &record.rbd {
                out.push(format!("/dev/rbd/{}", r.image));
            }
        }
        Some(Protocol::NvmeOf) if record.path.starts_with("/dev/md") => {
            out.push(record.path.display().to_string());
        }
        _ => {}
    }
    out
}

/// The link os-brick made for the mapping `name`, when `name` is one of its
/// `crypt-os-brick+...` names: `/dev/disk/by-id/os-brick+...`.
pub fn os_brick_link_of(name: &str) -> Option<std::path::PathBuf> {
    let base = name.strip_prefix(NAME_PREFIX)?;
    if !base.starts_with(&format!("{OS_BRICK_LINK_PREFIX}+")) {
        return None;
    }
    Some(Path::new(OS_BRICK_LINK_DIR).join(base))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::{EncryptionRecord, RbdRecord};

    #[test]
    fn crypt_uuids() {
        let m = CryptMapping::from_dm_attrs(
            "dm-4",
            "CRYPT-LUKS2-1f2e3d4c5b6a79880000111122223333-crypt-sdb\n",
            "crypt-sdb\n",
            vec!["sdb".into()],
        )
        .unwrap();
        assert_eq!(
            (m.kind.clone(), m.name.as_str()),
            (CryptType::Luks2, "crypt-sdb")
        );
        assert!(m.kind.is_luks() && m.sits_on("sdb") && !m.sits_on("sdc"));
        for (uuid, kind) in [
            ("CRYPT-LUKS1-ab-x", CryptType::Luks1),
            ("CRYPT-PLAIN-x", CryptType::Plain),
            ("CRYPT-TCRYPT-x", CryptType::Other("TCRYPT".into())),
        ] {
            assert_eq!(
                CryptMapping::from_dm_attrs("dm-1", uuid, "x", vec![])
                    .unwrap()
                    .kind,
                kind
            );
        }
        assert_eq!(
            CryptMapping::from_dm_attrs("dm-1", "mpath-3600", "3600", vec![]),
            None
        );
        assert_eq!(
            CryptMapping::from_dm_attrs("dm-1", "CRYPT-PLAIN-x", " ", vec![]),
            None
        );
        let two = CryptMapping::from_dm_attrs(
            "dm-1",
            "CRYPT-PLAIN-x",
            "x",
            vec!["sdb".into(), "sdc".into()],
        )
        .unwrap();
        assert!(!two.sits_on("sdb"));
    }

    fn record(protocol: Option<Protocol>, path: &str) -> DeviceRecord {
        let mut r = DeviceRecord::block(Protocol::Iscsi, path, None);
        r.protocol = protocol;
        r
    }

    #[test]
    fn names_are_os_bricks() {
        use Protocol::*;
        let by_path =
            "/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2010-10.org.openstack:volume-1-lun-1";
        // iSCSI single path: os-brick's path is /dev/sdb, hostbrick's the by-path link.
        let r = record(Some(Iscsi), by_path);
        assert_eq!(mapping_name(&r, "sdb"), "crypt-sdb");
        // iSCSI multipath: both give /dev/dm-3.
        let mut r = record(Some(Iscsi), "/dev/dm-3");
        r.multipath_id = Some("36001405aaaa".into());
        assert_eq!(mapping_name(&r, "dm-3"), "crypt-dm-3");
        assert_eq!(
            candidate_names(&r, "dm-3"),
            [
                "crypt-dm-3",
                "dm-3",
                "36001405aaaa",
                "crypt-os-brick+dev+dm-3"
            ]
        );
        // os-brick's link for an `encrypted: true` connection_info, and back.
        assert_eq!(
            os_brick_link_of("crypt-os-brick+dev+dm-3").unwrap(),
            Path::new("/dev/disk/by-id/os-brick+dev+dm-3")
        );
        assert_eq!(os_brick_link_of("crypt-dm-3"), None);
        assert_eq!(os_brick_link_of("os-brick+dev+dm-3"), None);
        // os-brick's own device_info with that link as its path: the link's name.
        let r = record(None, "/dev/disk/by-id/os-brick+dev+dm-3");
        assert!(candidate_names(&r, "dm-3").contains(&"crypt-os-brick+dev+dm-3".to_string()));
        // NVMe-oF: /dev/nvme0n1; a replicated volume's /dev/md/<alias>.
        assert_eq!(
            mapping_name(&record(Some(NvmeOf), "/dev/nvme0n1"), "nvme0n1"),
            "crypt-nvme0n1"
        );
        assert_eq!(
            mapping_name(&record(Some(NvmeOf), "/dev/md/vol-1"), "md127"),
            "crypt-vol-1"
        );
        // RBD: os-brick's /dev/rbd/<pool>/<image>.
        let mut r = record(Some(Rbd), "/dev/rbd0");
        r.rbd = Some(RbdRecord {
            mapper: crate::model::rbd::RbdMapper::Krbd,
            image: "volumes/volume-0001".into(),
            device: "/dev/rbd0".into(),
        });
        assert_eq!(mapping_name(&r, "rbd0"), "crypt-volume-0001");
        // os-brick's own device_info (no protocol): its path's basename.
        assert_eq!(mapping_name(&record(None, "/dev/sdc"), "sdc"), "crypt-sdc");
        assert_eq!(
            mapping_name(&record(None, "/dev/disk/by-id/x"), "sdd"),
            "crypt-sdd"
        );
        // Local: the path given.
        assert_eq!(
            mapping_name(&record(Some(Local), "/dev/vg/lv1"), "dm-7"),
            "crypt-lv1"
        );
        // The by-path name of older Nova releases, with and without the prefix, and the
        // recorded name are recognised too.
        let mut r = record(Some(Iscsi), by_path);
        r.encryption = Some(EncryptionRecord {
            provider: crate::encryption::EncryptionProvider::Luks,
            name: "crypt-sdq".into(),
            device: "/dev/mapper/crypt-sdq".into(),
            raw: "/dev/sdq".into(),
        });
        let old = by_path.rsplit('/').next().unwrap();
        assert_eq!(
            candidate_names(&r, "sdb"),
            [
                "crypt-sdb".to_string(),
                "crypt-sdq".into(),
                "sdb".into(),
                format!("crypt-{old}"),
                old.into(),
                "crypt-os-brick+dev+sdb".into(),
            ]
        );
    }

    #[test]
    fn dm_names_that_could_mislead_are_refused() {
        for ok in [
            "crypt-sdb",
            "36001405aaaa",
            "ip-1.2.3.4:3260-iscsi-iqn.x:y-lun-0",
        ] {
            assert!(valid_dm_name(ok), "{ok}");
        }
        for bad in ["", "-v", ".", "..", "a/b", "a b", "tab\t", &"x".repeat(128)] {
            assert!(!valid_dm_name(bad), "{bad:?}");
        }
        // A base that cannot be a name falls back to the kernel name.
        assert_eq!(
            mapping_name(&record(None, "/dev/-weird"), "sde"),
            "crypt-sde"
        );
    }
}
