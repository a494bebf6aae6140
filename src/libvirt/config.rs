//! The typed `<disk>` config: sources, driver, target, I/O limits, block sizes and bus
//! address, and its checks against libvirt's own schema patterns, so that what libvirt
//! would refuse is refused here first.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::connection::as_u64;

/// A closed set of string values, written as libvirt spells them.
macro_rules! xml_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $var),+ }

        impl $name {
            /// The value as libvirt writes it.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),+ }
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($s => Ok($name::$var),)+
                    _ => Err(Error::InvalidDiskConfig {
                        field: stringify!($name),
                        reason: format!(
                            "{s:?} is not one of: {}",
                            [$($s),+].join(", ")
                        ),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

xml_enum!(
    /// The guest bus a disk sits on.
    DiskBus { /// virtio-blk.
    Virtio = "virtio", /// A SCSI controller (virtio-scsi).
    Scsi = "scsi", /// SATA (AHCI).
    Sata = "sata" }
);

impl DiskBus {
    /// The device-name prefix the guest sees on this bus (`vd`, `sd`).
    pub fn dev_prefix(self) -> &'static str {
        match self {
            DiskBus::Virtio => "vd",
            DiskBus::Scsi | DiskBus::Sata => "sd",
        }
    }
}

xml_enum!(
    /// `<disk device=...>`: what the guest sees.
    DiskDevice { /// A hard disk.
    Disk = "disk", /// A CD-ROM (read-only removable media).
    Cdrom = "cdrom", /// SCSI passthrough of a host LUN (`scsi-block`): SCSI commands reach the
    /// device itself; no serial, WWN or block sizes of its own.
    Lun = "lun" }
);

xml_enum!(
    /// `<disk sgio=...>` of a `device='lun'` disk: which SCSI commands the host passes on.
    Sgio { /// Only commands the kernel allows for unprivileged use (libvirt's default).
    Filtered = "filtered", /// Every command: written by older libvirt, refused by current
    /// libvirt ("unfiltered sgio is no longer supported") and so refused here.
    Unfiltered = "unfiltered" }
);

xml_enum!(
    /// A network disk's protocol.
    NetworkProtocol { /// Ceph RBD.
    Rbd = "rbd", /// iSCSI opened by QEMU itself.
    Iscsi = "iscsi", /// NBD.
    Nbd = "nbd" }
);

xml_enum!(
    /// `<driver cache=...>`.
    CacheMode { /// Host page cache bypassed (O_DIRECT).
    None = "none", /// Write-through host cache.
    Writethrough = "writethrough", /// Write-back host cache.
    Writeback = "writeback", /// O_DIRECT and O_DSYNC.
    Directsync = "directsync", /// Flushes ignored.
    Unsafe = "unsafe", /// The hypervisor default.
    Default = "default" }
);

xml_enum!(
    /// `<driver io=...>`.
    IoMode { /// Linux native AIO.
    Native = "native", /// A thread pool.
    Threads = "threads", /// io_uring.
    IoUring = "io_uring", /// The hypervisor default.
    Default = "default" }
);

xml_enum!(
    /// `<driver discard=...>`.
    DiscardMode { /// Pass discard requests to the device.
    Unmap = "unmap", /// Drop them.
    Ignore = "ignore" }
);

xml_enum!(
    /// `<driver detect_zeroes=...>`.
    DetectZeroes { /// Off.
    Off = "off", /// Detect zero writes.
    On = "on", /// Turn zero writes into discards.
    Unmap = "unmap" }
);

xml_enum!(
    /// `<encryption format=...>` of a disk QEMU decrypts itself.
    EncryptionFormat { /// A LUKS1 header, read by QEMU's `luks` block driver.
    Luks = "luks" }
);

/// `<encryption>` of a disk QEMU decrypts itself (libvirt's native LUKS, as Nova's
/// `LibvirtConfigGuestDiskEncryption` writes it):
/// `<encryption format='luks'><secret type='passphrase' uuid='UUID'/></encryption>`. The
/// libvirt secret (usage type `volume`) holds the passphrase; the XML only names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskEncryption {
    /// The header format.
    pub format: EncryptionFormat,
    /// The UUID of the libvirt secret holding the passphrase.
    pub secret_uuid: String,
}

impl DiskEncryption {
    /// LUKS with the passphrase in the libvirt secret `secret_uuid`.
    pub fn luks(secret_uuid: impl Into<String>) -> Self {
        DiskEncryption {
            format: EncryptionFormat::Luks,
            secret_uuid: secret_uuid.into(),
        }
    }
}

xml_enum!(
    /// The kind of secret holding a network disk's key.
    SecretType { /// A Ceph key.
    Ceph = "ceph", /// An iSCSI CHAP password.
    Iscsi = "iscsi" }
);

/// Where a disk's data comes from; `<disk type=...>` follows from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    /// An image file (`type='file'`, `<source file=...>`).
    File(PathBuf),
    /// A host block device (`type='block'`, `<source dev=...>`).
    Block(PathBuf),
    /// A network export QEMU opens itself (`type='network'`).
    Network(NetworkDisk),
}

impl DiskSource {
    /// The `<disk type=...>` value.
    pub fn disk_type(&self) -> &'static str {
        match self {
            DiskSource::File(_) => "file",
            DiskSource::Block(_) => "block",
            DiskSource::Network(_) => "network",
        }
    }
}

/// A network disk source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDisk {
    /// The protocol.
    pub protocol: NetworkProtocol,
    /// The export: `pool/image` for RBD, `iqn/lun` for iSCSI; `None` only for NBD, whose
    /// server then serves its default export.
    pub name: Option<String>,
    /// The servers: exactly one for iSCSI and NBD; RBD monitors, none when libvirt (QEMU's
    /// librbd) should take them from the host's ceph.conf.
    pub hosts: Vec<NetworkHost>,
    /// Credentials, as a libvirt secret.
    pub auth: Option<DiskAuth>,
}

/// One server of a network disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkHost {
    /// Host name or address.
    pub name: String,
    /// TCP port; `None` writes no `port` attribute and the protocol's default applies (for
    /// RBD, librbd's: 3300/6789).
    pub port: Option<u16>,
}

/// A network disk's credentials: a user name and the libvirt secret with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskAuth {
    /// The user (`cinder` for a Ceph client `client.cinder`).
    pub username: String,
    /// The secret's kind.
    pub secret_type: SecretType,
    /// The libvirt secret's UUID.
    pub secret_uuid: String,
}

/// `<driver>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskDriver {
    /// The driver name, `qemu`.
    pub name: String,
    /// The image format (`raw`, `qcow2`).
    pub format: String,
    /// Host cache mode.
    pub cache: Option<CacheMode>,
    /// I/O mode.
    pub io: Option<IoMode>,
    /// Discard handling.
    pub discard: Option<DiscardMode>,
    /// Zero-write detection.
    pub detect_zeroes: Option<DetectZeroes>,
}

impl Default for DiskDriver {
    /// `name='qemu' type='raw'`, hypervisor defaults for the rest.
    fn default() -> Self {
        DiskDriver {
            name: "qemu".into(),
            format: "raw".into(),
            cache: None,
            io: None,
            discard: None,
            detect_zeroes: None,
        }
    }
}

/// `<target>`: the name and bus the guest sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskTarget {
    /// `vdb`, `sdc`, ...
    pub dev: String,
    /// The bus.
    pub bus: DiskBus,
}

impl DiskTarget {
    /// A target on a bus.
    pub fn new(dev: impl Into<String>, bus: DiskBus) -> Self {
        DiskTarget {
            dev: dev.into(),
            bus,
        }
    }
}

/// `<blockio>`: the block sizes the guest sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BlockIo {
    /// Logical block size in bytes.
    #[serde(
        rename = "@logical_block_size",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub logical_block_size: Option<u32>,
    /// Physical block size in bytes.
    #[serde(
        rename = "@physical_block_size",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub physical_block_size: Option<u32>,
}

/// `<address>`: where the disk sits on its bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskAddress {
    /// A drive on a SCSI/SATA controller.
    Drive {
        /// Controller index.
        controller: u32,
        /// Bus.
        bus: u32,
        /// Target.
        target: u32,
        /// Unit.
        unit: u32,
    },
    /// A PCI slot (virtio-blk).
    Pci {
        /// PCI domain.
        domain: u16,
        /// Bus.
        bus: u8,
        /// Slot.
        slot: u8,
        /// Function.
        function: u8,
    },
}

/// Declares [`IoTune`] from one list of libvirt's element names (also Cinder's qos keys).
macro_rules! iotune {
    ($($field:ident),+ $(,)?) => {
        /// `<iotune>`: I/O limits, from Cinder front-end `qos_specs`. A non-zero total limit
        /// and a non-zero read/write limit of the same kind exclude each other. Zero is
        /// libvirt's "no limit": it is not written, and reads back as `None`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
        pub struct IoTune {
            $(
                #[doc = concat!("`", stringify!($field), "`")]
                #[serde(skip_serializing_if = "no_limit", default)]
                pub $field: Option<u64>,
            )+
        }

        impl IoTune {
            /// The limit named `key`, for the names libvirt and Cinder share.
            fn slot(&mut self, key: &str) -> Option<&mut Option<u64>> {
                match key {
                    $(stringify!($field) => Some(&mut self.$field),)+
                    _ => None,
                }
            }

            /// Every limit, `Some(0)` as `None`, as libvirt reads and writes them.
            pub fn normalized(mut self) -> IoTune {
                $(self.$field = self.$field.filter(|n| *n != 0);)+
                self
            }

            /// No limit is set (every one `None` or zero).
            pub fn is_unlimited(&self) -> bool {
                true $(&& no_limit(&self.$field))+
            }
        }
    };
}

/// `None` or zero: libvirt's "no limit", which it neither checks nor writes.
fn no_limit(v: &Option<u64>) -> bool {
    matches!(v, None | Some(0))
}

iotune!(
    total_bytes_sec,
    read_bytes_sec,
    write_bytes_sec,
    total_iops_sec,
    read_iops_sec,
    write_iops_sec,
    total_bytes_sec_max,
    read_bytes_sec_max,
    write_bytes_sec_max,
    total_iops_sec_max,
    read_iops_sec_max,
    write_iops_sec_max,
    size_iops_sec,
    total_bytes_sec_max_length,
    read_bytes_sec_max_length,
    write_bytes_sec_max_length,
    total_iops_sec_max_length,
    read_iops_sec_max_length,
    write_iops_sec_max_length,
);

impl IoTune {
    /// Limits from Cinder `qos_specs` as Nova reads them (a `data.qos_specs` that is not a
    /// JSON object is ignored with a warning when the connection_info is parsed); keys
    /// libvirt has no limit for
    /// (back-end specs, `consumer`) are skipped, and so is a `null` value (Nova leaves such a
    /// limit unset); a limit is a non-negative integer, as a number or a decimal string. A
    /// limit libvirt would refuse (`"lots"`, `1.5`, `-1`, `true`) is an error, as it fails
    /// Nova's attach at libvirt. Zero means no limit. `None` when no limit is left.
    pub fn from_qos_specs(specs: &serde_json::Map<String, Value>) -> Result<Option<IoTune>> {
        let mut tune = IoTune::default();
        for (key, value) in specs {
            match tune.slot(key) {
                Some(_) if value.is_null() => {
                    tracing::debug!(key = %key, "qos_specs limit is null; left unset")
                }
                Some(slot) => {
                    let n = as_u64(value).map_err(|reason| {
                        Error::invalid(format!("data.qos_specs.{key}"), reason)
                    })?;
                    *slot = Some(n);
                }
                None => tracing::debug!(key = %key, "qos_specs key has no libvirt limit; skipped"),
            }
        }
        let tune = tune.normalized();
        if tune.is_unlimited() {
            return Ok(None);
        }
        tune.check()?;
        Ok(Some(tune))
    }

    /// libvirt's own rule: a total and a read or write limit of the same kind are not both
    /// non-zero.
    fn check(&self) -> Result<()> {
        let pairs = [
            (
                "bytes_sec",
                self.total_bytes_sec,
                [self.read_bytes_sec, self.write_bytes_sec],
            ),
            (
                "iops_sec",
                self.total_iops_sec,
                [self.read_iops_sec, self.write_iops_sec],
            ),
            (
                "bytes_sec_max",
                self.total_bytes_sec_max,
                [self.read_bytes_sec_max, self.write_bytes_sec_max],
            ),
            (
                "iops_sec_max",
                self.total_iops_sec_max,
                [self.read_iops_sec_max, self.write_iops_sec_max],
            ),
        ];
        for (what, total, rw) in pairs {
            if !no_limit(&total) && rw.iter().any(|v| !no_limit(v)) {
                return Err(Error::InvalidDiskConfig {
                    field: "iotune",
                    reason: format!(
                        "a non-zero total_{what} cannot be combined with a non-zero \
                         read_{what} or write_{what}"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// One `<disk>` of a libvirt domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// `<disk device=...>`: disk, CD-ROM or SCSI passthrough LUN.
    pub device: DiskDevice,
    /// Where the data comes from (decides `<disk type=...>`).
    pub source: DiskSource,
    /// `<driver>`.
    pub driver: DiskDriver,
    /// `<target>`.
    pub target: DiskTarget,
    /// `<serial>`: what the guest reads as the disk's serial (the volume id). Not for a LUN.
    pub serial: Option<String>,
    /// `<wwn>`: 16 hex digits. Not for a LUN.
    pub wwn: Option<String>,
    /// `<alias name=...>`: a user alias, `ua-` and then letters, digits, `_` and `-` (Nova
    /// writes `ua-<volume id>`). libvirt's own aliases (`virtio-disk1`) are not kept.
    pub alias: Option<String>,
    /// `<disk sgio=...>`, for a LUN only.
    pub sgio: Option<Sgio>,
    /// `<readonly/>`.
    pub readonly: bool,
    /// `<shareable/>`: attached to several guests.
    pub shareable: bool,
    /// `<iotune>`.
    pub iotune: Option<IoTune>,
    /// `<blockio>`. Not for a LUN.
    pub blockio: Option<BlockIo>,
    /// `<address>`.
    pub address: Option<DiskAddress>,
    /// `<encryption>`: QEMU decrypts the source with a libvirt secret's passphrase.
    pub encryption: Option<DiskEncryption>,
}

impl DiskConfig {
    /// A disk with this source and target, a raw qemu driver and nothing else.
    pub fn new(source: DiskSource, target: DiskTarget) -> Self {
        DiskConfig {
            device: DiskDevice::Disk,
            source,
            driver: DiskDriver::default(),
            target,
            serial: None,
            wwn: None,
            alias: None,
            sgio: None,
            readonly: false,
            shareable: false,
            iotune: None,
            blockio: None,
            address: None,
            encryption: None,
        }
    }

    /// A raw image file.
    pub fn file(path: impl Into<PathBuf>, target: DiskTarget) -> Self {
        Self::new(DiskSource::File(path.into()), target)
    }

    /// A host block device, opened the way Nova opens volumes: `cache='none' io='native'`.
    pub fn block(dev: impl Into<PathBuf>, target: DiskTarget) -> Self {
        let mut disk = Self::new(DiskSource::Block(dev.into()), target);
        disk.driver.cache = Some(CacheMode::None);
        disk.driver.io = Some(IoMode::Native);
        disk
    }

    /// Checks what libvirt would refuse: the target name, serial, WWN, alias, network
    /// source, auth, driver, I/O limits, and what a LUN cannot have.
    pub fn check(&self) -> Result<()> {
        let bad =
            |field: &'static str, reason: String| Err(Error::InvalidDiskConfig { field, reason });
        if !patterns().target_dev.is_match(&self.target.dev) {
            return bad(
                "target.dev",
                format!(
                    "{:?} is not a disk name such as vdb or sdc",
                    self.target.dev
                ),
            );
        }
        if let Some(serial) = &self.serial {
            if !patterns().serial.is_match(serial) {
                return bad(
                    "serial",
                    format!(
                        "{serial:?} has characters other than letters, digits, space and _ . + -"
                    ),
                );
            }
        }
        if let Some(wwn) = &self.wwn {
            if !patterns().wwn.is_match(wwn) {
                return bad("wwn", format!("{wwn:?} is not 16 hex digits"));
            }
        }
        if let Some(alias) = &self.alias {
            if !patterns().user_alias.is_match(alias) {
                return bad(
                    "alias",
                    format!(
                        "{alias:?} is not a user alias: \"ua-\" and then letters, digits, _ and -"
                    ),
                );
            }
        }
        self.check_device()?;
        for (field, value) in [
            ("driver.name", &self.driver.name),
            ("driver.type", &self.driver.format),
        ] {
            if !patterns().word.is_match(value) {
                return bad(field, format!("{value:?} is not a driver name"));
            }
        }
        match &self.source {
            DiskSource::File(p) | DiskSource::Block(p) => {
                if !p.is_absolute() {
                    return bad("source", format!("{} is not an absolute path", p.display()));
                }
                if p.to_string_lossy().chars().any(char::is_control) {
                    return bad("source", format!("{p:?} has control characters"));
                }
            }
            DiskSource::Network(net) => net.check()?,
        }
        if let Some(t) = &self.iotune {
            t.check()?;
        }
        if let Some(enc) = &self.encryption {
            if !patterns().uuid.is_match(&enc.secret_uuid) {
                return bad(
                    "encryption.secret.uuid",
                    format!("{:?} is not a UUID", enc.secret_uuid),
                );
            }
            if self.device == DiskDevice::Lun {
                // scsi-block passes SCSI commands to the device: nothing to decrypt them.
                return bad(
                    "encryption",
                    "a device='lun' disk cannot be decrypted by QEMU".into(),
                );
            }
        }
        Ok(())
    }

    /// What libvirt allows for each `device`: a CD-ROM is not on virtio; a LUN passes SCSI
    /// commands to a raw host block device or an iSCSI LUN on a SCSI (or virtio) bus and has no serial, WWN or block
    /// sizes of its own (libvirt refuses the first two, QEMU's scsi-block the last); `sgio`
    /// is for a LUN only.
    fn check_device(&self) -> Result<()> {
        let bad =
            |field: &'static str, reason: String| Err(Error::InvalidDiskConfig { field, reason });
        if self.device == DiskDevice::Cdrom && self.target.bus == DiskBus::Virtio {
            // libvirt 5.1 and later: virtio-blk has no removable media.
            return bad(
                "device",
                "device='cdrom' needs bus='sata' or bus='scsi', not virtio".into(),
            );
        }
        if self.device != DiskDevice::Lun {
            if self.sgio.is_some() {
                return bad(
                    "sgio",
                    format!("only for device='lun', not {}", self.device),
                );
            }
            return Ok(());
        }
        if self.sgio == Some(Sgio::Unfiltered) {
            return bad(
                "sgio",
                "unfiltered sgio is no longer supported by libvirt".into(),
            );
        }
        if self.driver.format != "raw" {
            return bad(
                "device",
                format!(
                    "device='lun' needs type='raw', not {:?}",
                    self.driver.format
                ),
            );
        }
        let passthrough = match &self.source {
            DiskSource::Block(_) => true,
            DiskSource::Network(net) => net.protocol == NetworkProtocol::Iscsi,
            DiskSource::File(_) => false,
        };
        if !passthrough {
            return bad(
                "device",
                "device='lun' needs a block device or an iSCSI network source".into(),
            );
        }
        if self.target.bus == DiskBus::Sata {
            return bad(
                "device",
                "device='lun' needs bus='scsi' or bus='virtio', not sata".into(),
            );
        }
        for (field, set) in [
            ("serial", self.serial.is_some()),
            ("wwn", self.wwn.is_some()),
            ("blockio", self.blockio.is_some()),
        ] {
            if set {
                return bad(field, "not supported for device='lun'".into());
            }
        }
        Ok(())
    }
}

impl NetworkDisk {
    /// The protocol's rules in libvirt: a name except for NBD; one host for iSCSI and NBD,
    /// any number (none: from ceph.conf) for RBD; host names and auth as the schema has them.
    fn check(&self) -> Result<()> {
        let bad =
            |field: &'static str, reason: String| Err(Error::InvalidDiskConfig { field, reason });
        match &self.name {
            None if self.protocol != NetworkProtocol::Nbd => {
                return bad(
                    "source.name",
                    format!(
                        "missing (only an nbd source may have none), for {}",
                        self.protocol
                    ),
                )
            }
            None => {}
            Some(name) if name.is_empty() => return bad("source.name", "empty".into()),
            Some(name) if name.chars().any(char::is_control) => {
                return bad("source.name", format!("{name:?} has control characters"))
            }
            Some(_) => {}
        }
        match self.protocol {
            NetworkProtocol::Rbd => {}
            NetworkProtocol::Iscsi | NetworkProtocol::Nbd => {
                if self.hosts.len() != 1 {
                    return bad(
                        "source.host",
                        format!(
                            "a {} disk needs exactly one host, not {}",
                            self.protocol,
                            self.hosts.len()
                        ),
                    );
                }
            }
        }
        if let Some(h) = self
            .hosts
            .iter()
            .find(|h| !patterns().host.is_match(&h.name))
        {
            return bad(
                "source.host",
                format!("{:?} is not a host name or address", h.name),
            );
        }
        if let Some(auth) = &self.auth {
            if !patterns().generic_name.is_match(&auth.username) {
                return bad(
                    "auth.username",
                    format!(
                        "{:?} has characters other than letters, digits and _ + -",
                        auth.username
                    ),
                );
            }
            if !patterns().uuid.is_match(&auth.secret_uuid) {
                return bad(
                    "auth.secret.uuid",
                    format!("{:?} is not a UUID", auth.secret_uuid),
                );
            }
        }
        Ok(())
    }
}

/// Whether `uuid` has the shape of a UUID (libvirt's `UUID` type: 32 hex digits, the
/// dashes optional).
pub(crate) fn is_uuid(uuid: &str) -> bool {
    patterns().uuid.is_match(uuid)
}

/// Whether `alias` is a user alias libvirt keeps (`ua-` and then `[A-Za-z0-9_-]`).
pub(crate) fn is_user_alias(alias: &str) -> bool {
    patterns().user_alias.is_match(alias)
}

struct Patterns {
    target_dev: Regex,
    serial: Regex,
    wwn: Regex,
    word: Regex,
    host: Regex,
    generic_name: Regex,
    uuid: Regex,
    user_alias: Regex,
}

/// libvirt's own schema patterns (domaincommon.rng, basictypes.rng) for what it checks.
fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| {
        let re = |s: &str| Regex::new(s).expect("static pattern");
        Patterns {
            target_dev: re(r"^(fd|hd|sd|vd|xvd|ubd)[a-zA-Z0-9_]+$"),
            serial: re(r"^[A-Za-z0-9_.+\- ]+$"),
            wwn: re(r"^(0x)?[0-9a-fA-F]{16}$"),
            word: re(r"^[a-zA-Z0-9_\-]+$"),
            host: re(r"^[a-zA-Z0-9_.:\-\[\]]+$"),
            generic_name: re(r"^[a-zA-Z0-9_+\-]+$"),
            // libvirt's USER_ALIAS_PREFIX and USER_ALIAS_CHARS (domain_conf.c): an alias it
            // keeps on an inactive or hot-plugged device.
            user_alias: re(r"^ua-[A-Za-z0-9_\-]+$"),
            uuid: re(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"),
        }
    })
}
