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
    /// The export: `pool/image` for RBD, `iqn/lun` for iSCSI.
    pub name: String,
    /// The servers (RBD monitors).
    pub hosts: Vec<NetworkHost>,
    /// Credentials, as a libvirt secret.
    pub auth: Option<DiskAuth>,
}

/// One server of a network disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkHost {
    /// Host name or address.
    pub name: String,
    /// TCP port, when not the protocol's default.
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
        /// `<iotune>`: I/O limits, from Cinder front-end `qos_specs`. A total limit and
        /// its read/write pair exclude each other.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
        pub struct IoTune {
            $(
                #[doc = concat!("`", stringify!($field), "`")]
                #[serde(skip_serializing_if = "Option::is_none", default)]
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
        }
    };
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
    /// Limits from Cinder `qos_specs` (values as numbers or decimal strings). Keys libvirt
    /// has no limit for (back-end specs, `consumer`) are skipped; `None` when nothing is left.
    pub fn from_qos_specs(specs: &serde_json::Map<String, Value>) -> Result<Option<IoTune>> {
        let mut tune = IoTune::default();
        let mut any = false;
        for (key, value) in specs {
            match tune.slot(key) {
                Some(slot) => {
                    let n = as_u64(value).map_err(|reason| {
                        Error::invalid(format!("data.qos_specs.{key}"), reason)
                    })?;
                    *slot = Some(n);
                    any = true;
                }
                None => tracing::debug!(key = %key, "qos_specs key has no libvirt limit; skipped"),
            }
        }
        if !any {
            return Ok(None);
        }
        tune.check()?;
        Ok(Some(tune))
    }

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
            if total.is_some() && rw.iter().any(Option::is_some) {
                return Err(Error::InvalidDiskConfig {
                    field: "iotune",
                    reason: format!(
                        "total_{what} cannot be combined with read_{what} or write_{what}"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// One `<disk device='disk'>` of a libvirt domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Where the data comes from (decides `<disk type=...>`).
    pub source: DiskSource,
    /// `<driver>`.
    pub driver: DiskDriver,
    /// `<target>`.
    pub target: DiskTarget,
    /// `<serial>`: what the guest reads as the disk's serial (the volume id).
    pub serial: Option<String>,
    /// `<wwn>`: 16 hex digits.
    pub wwn: Option<String>,
    /// `<readonly/>`.
    pub readonly: bool,
    /// `<shareable/>`: attached to several guests.
    pub shareable: bool,
    /// `<iotune>`.
    pub iotune: Option<IoTune>,
    /// `<blockio>`.
    pub blockio: Option<BlockIo>,
    /// `<address>`.
    pub address: Option<DiskAddress>,
}

impl DiskConfig {
    /// A disk with this source and target, a raw qemu driver and nothing else.
    pub fn new(source: DiskSource, target: DiskTarget) -> Self {
        DiskConfig {
            source,
            driver: DiskDriver::default(),
            target,
            serial: None,
            wwn: None,
            readonly: false,
            shareable: false,
            iotune: None,
            blockio: None,
            address: None,
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

    /// Checks what libvirt would refuse: the target name, serial, WWN, network hosts, auth,
    /// driver and I/O limits.
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
            DiskSource::Network(net) => {
                if net.name.is_empty() {
                    return bad("source.name", "empty".into());
                }
                if net.name.chars().any(char::is_control) {
                    return bad(
                        "source.name",
                        format!("{:?} has control characters", net.name),
                    );
                }
                if net.hosts.is_empty() {
                    return bad(
                        "source.host",
                        format!("a {} disk needs at least one host", net.protocol),
                    );
                }
                if let Some(h) = net
                    .hosts
                    .iter()
                    .find(|h| !patterns().host.is_match(&h.name))
                {
                    return bad(
                        "source.host",
                        format!("{:?} is not a host name or address", h.name),
                    );
                }
                if let Some(auth) = &net.auth {
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
            }
        }
        if let Some(t) = &self.iotune {
            t.check()?;
        }
        Ok(())
    }
}

struct Patterns {
    target_dev: Regex,
    serial: Regex,
    wwn: Regex,
    word: Regex,
    host: Regex,
    generic_name: Regex,
    uuid: Regex,
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
            uuid: re(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"),
        }
    })
}
