//! libvirt disk XML: a typed `<disk>` config, built from a connection_info and a device
//! record the way Nova builds it, written and read back through quick-xml (which does all
//! the escaping).
//!
//! The config is checked before it is written and after it is read: a target name, serial
//! or WWN libvirt would refuse is an error here, not at `attachDeviceFlags` time.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::connection::{as_u64, AccessMode, ConnectionInfo};
use crate::model::record::{DeviceKind, DeviceRecord, NetworkSource};

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

    /// The disk for an attached volume, with Nova's mapping: a block record (iSCSI,
    /// NVMe-oF, mapped RBD, local) becomes a block source at the record's path with
    /// `cache='none' io='native'`; an RBD network record becomes a network source with its
    /// monitors and auth. `access_mode: ro` → `<readonly/>`, `discard` → `discard='unmap'`,
    /// `multiattach` → `<shareable/>`, the serial (else the volume id) → `<serial>`,
    /// `qos_specs` → `<iotune>`, block sizes → `<blockio>`.
    pub fn for_volume(
        info: &ConnectionInfo,
        device: &DeviceRecord,
        target: DiskTarget,
    ) -> Result<DiskConfig> {
        let mut disk = match device.kind {
            DeviceKind::Block => Self::block(&device.path, target),
            DeviceKind::Network => {
                let net = device
                    .network
                    .as_ref()
                    .ok_or_else(|| Error::InvalidDeviceRecord {
                        reason: "a network record without its network source".into(),
                    })?;
                let mut disk = Self::new(DiskSource::Network(network_disk(net)?), target);
                disk.driver.cache = Some(CacheMode::None);
                disk
            }
        };
        let props = info.disk();
        if props.discard {
            disk.driver.discard = Some(DiscardMode::Unmap);
        }
        disk.readonly = props.access_mode == AccessMode::Ro;
        disk.shareable = props.multiattach;
        disk.serial = props.serial.clone().or_else(|| device.volume_id.clone());
        disk.iotune = match &props.qos_specs {
            Some(specs) => IoTune::from_qos_specs(specs)?,
            None => None,
        };
        if props.logical_block_size.is_some() || props.physical_block_size.is_some() {
            disk.blockio = Some(BlockIo {
                logical_block_size: props.logical_block_size,
                physical_block_size: props.physical_block_size,
            });
        }
        disk.check()?;
        Ok(disk)
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

    /// The `<disk>` element, indented by two spaces.
    pub fn to_xml(&self) -> Result<String> {
        self.check()?;
        let wire = WireDisk::from(self);
        let mut out = String::new();
        let mut ser = quick_xml::se::Serializer::new(&mut out);
        ser.indent(' ', 2);
        wire.serialize(ser).map_err(|e| Error::InvalidDiskConfig {
            field: "disk",
            reason: format!("cannot be written as XML: {e}"),
        })?;
        Ok(out)
    }

    /// Reads a `<disk device='disk'>` element (as written by [`DiskConfig::to_xml`] or by
    /// `virsh dumpxml`; elements this config does not model are ignored).
    pub fn from_xml(xml: &str) -> Result<DiskConfig> {
        let wire: WireDisk =
            quick_xml::de::from_str(xml).map_err(|e| Error::InvalidDiskConfig {
                field: "xml",
                reason: e.to_string(),
            })?;
        let disk = DiskConfig::try_from(wire)?;
        disk.check()?;
        Ok(disk)
    }
}

/// The RBD network source of a network record.
fn network_disk(net: &NetworkSource) -> Result<NetworkDisk> {
    let protocol: NetworkProtocol = net.protocol.parse()?;
    if !net.ports.is_empty() && net.ports.len() != net.hosts.len() {
        return Err(Error::InvalidDeviceRecord {
            reason: format!(
                "network source has {} hosts but {} ports",
                net.hosts.len(),
                net.ports.len()
            ),
        });
    }
    let hosts = net
        .hosts
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let port = match net.ports.get(i) {
                Some(p) => Some(p.parse::<u16>().map_err(|_| Error::InvalidDeviceRecord {
                    reason: format!("network source port {p:?} is not a port number"),
                })?),
                None => None,
            };
            Ok(NetworkHost {
                name: name.clone(),
                port,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let auth = match (&net.auth_username, &net.secret_uuid) {
        (Some(user), Some(uuid)) => Some(DiskAuth {
            username: user.clone(),
            secret_type: net.secret_type.as_deref().unwrap_or("ceph").parse()?,
            secret_uuid: uuid.clone(),
        }),
        (Some(user), None) => {
            return Err(Error::InvalidDiskConfig {
                field: "auth",
                reason: format!(
                    "user {user:?} needs a libvirt secret (secret_uuid) holding its key"
                ),
            })
        }
        (None, _) => None,
    };
    Ok(NetworkDisk {
        protocol,
        name: net.name.clone(),
        hosts,
        auth,
    })
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

// ---- the XML shape, as quick-xml's serde sees it ----

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename = "disk")]
struct WireDisk {
    #[serde(rename = "@type")]
    kind: String,
    #[serde(rename = "@device", default = "disk_device")]
    device: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    driver: Option<WireDriver>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    auth: Option<WireAuth>,
    #[serde(default)]
    source: Option<WireSource>,
    target: WireTarget,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    serial: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    wwn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    readonly: Option<Empty>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    shareable: Option<Empty>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    iotune: Option<IoTune>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    blockio: Option<BlockIo>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    address: Option<WireAddress>,
}

fn parse_opt<T: FromStr<Err = Error>>(v: Option<String>) -> Result<Option<T>> {
    v.map(|s| s.parse()).transpose()
}

fn disk_device() -> String {
    "disk".into()
}

/// An element with no content (`<readonly/>`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Empty {}

#[derive(Debug, Serialize, Deserialize)]
struct WireDriver {
    #[serde(rename = "@name")]
    name: String,
    #[serde(rename = "@type", default = "raw_format")]
    format: String,
    #[serde(rename = "@cache", skip_serializing_if = "Option::is_none", default)]
    cache: Option<String>,
    #[serde(rename = "@io", skip_serializing_if = "Option::is_none", default)]
    io: Option<String>,
    #[serde(rename = "@discard", skip_serializing_if = "Option::is_none", default)]
    discard: Option<String>,
    #[serde(
        rename = "@detect_zeroes",
        skip_serializing_if = "Option::is_none",
        default
    )]
    detect_zeroes: Option<String>,
}

fn raw_format() -> String {
    "raw".into()
}

#[derive(Debug, Serialize, Deserialize)]
struct WireAuth {
    #[serde(rename = "@username")]
    username: String,
    secret: WireSecret,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireSecret {
    #[serde(rename = "@type")]
    kind: String,
    #[serde(rename = "@uuid")]
    uuid: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct WireSource {
    #[serde(rename = "@file", skip_serializing_if = "Option::is_none", default)]
    file: Option<String>,
    #[serde(rename = "@dev", skip_serializing_if = "Option::is_none", default)]
    dev: Option<String>,
    #[serde(rename = "@protocol", skip_serializing_if = "Option::is_none", default)]
    protocol: Option<String>,
    #[serde(rename = "@name", skip_serializing_if = "Option::is_none", default)]
    name: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    host: Vec<WireHost>,
    /// libvirt also accepts `<auth>` inside `<source>`; read it, write it at disk level.
    #[serde(skip_serializing, default)]
    auth: Option<WireAuth>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireHost {
    #[serde(rename = "@name")]
    name: String,
    #[serde(rename = "@port", skip_serializing_if = "Option::is_none", default)]
    port: Option<u16>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireTarget {
    #[serde(rename = "@dev")]
    dev: String,
    #[serde(rename = "@bus")]
    bus: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct WireAddress {
    #[serde(rename = "@type")]
    kind: String,
    #[serde(rename = "@domain", skip_serializing_if = "Option::is_none", default)]
    domain: Option<String>,
    #[serde(
        rename = "@controller",
        skip_serializing_if = "Option::is_none",
        default
    )]
    controller: Option<String>,
    #[serde(rename = "@bus", skip_serializing_if = "Option::is_none", default)]
    bus: Option<String>,
    #[serde(rename = "@target", skip_serializing_if = "Option::is_none", default)]
    target: Option<String>,
    #[serde(rename = "@unit", skip_serializing_if = "Option::is_none", default)]
    unit: Option<String>,
    #[serde(rename = "@slot", skip_serializing_if = "Option::is_none", default)]
    slot: Option<String>,
    #[serde(rename = "@function", skip_serializing_if = "Option::is_none", default)]
    function: Option<String>,
}

impl From<&DiskConfig> for WireDisk {
    fn from(d: &DiskConfig) -> Self {
        let path = |p: &PathBuf| Some(p.to_string_lossy().into_owned());
        let mut auth = None;
        let source = match &d.source {
            DiskSource::File(p) => WireSource {
                file: path(p),
                ..WireSource::default()
            },
            DiskSource::Block(p) => WireSource {
                dev: path(p),
                ..WireSource::default()
            },
            DiskSource::Network(net) => {
                auth = net.auth.as_ref().map(|a| WireAuth {
                    username: a.username.clone(),
                    secret: WireSecret {
                        kind: a.secret_type.to_string(),
                        uuid: a.secret_uuid.clone(),
                    },
                });
                WireSource {
                    protocol: Some(net.protocol.to_string()),
                    name: Some(net.name.clone()),
                    host: net
                        .hosts
                        .iter()
                        .map(|h| WireHost {
                            name: h.name.clone(),
                            port: h.port,
                        })
                        .collect(),
                    ..WireSource::default()
                }
            }
        };
        let opt = |v: Option<&dyn fmt::Display>| v.map(|v| v.to_string());
        WireDisk {
            kind: d.source.disk_type().into(),
            device: disk_device(),
            driver: Some(WireDriver {
                name: d.driver.name.clone(),
                format: d.driver.format.clone(),
                cache: opt(d.driver.cache.as_ref().map(|v| v as _)),
                io: opt(d.driver.io.as_ref().map(|v| v as _)),
                discard: opt(d.driver.discard.as_ref().map(|v| v as _)),
                detect_zeroes: opt(d.driver.detect_zeroes.as_ref().map(|v| v as _)),
            }),
            auth,
            source: Some(source),
            target: WireTarget {
                dev: d.target.dev.clone(),
                bus: d.target.bus.to_string(),
            },
            serial: d.serial.clone(),
            wwn: d.wwn.clone(),
            readonly: d.readonly.then(Empty::default),
            shareable: d.shareable.then(Empty::default),
            iotune: d.iotune,
            blockio: d.blockio,
            address: d.address.map(WireAddress::from),
        }
    }
}

impl From<DiskAddress> for WireAddress {
    fn from(a: DiskAddress) -> Self {
        match a {
            DiskAddress::Drive {
                controller,
                bus,
                target,
                unit,
            } => WireAddress {
                kind: "drive".into(),
                controller: Some(controller.to_string()),
                bus: Some(bus.to_string()),
                target: Some(target.to_string()),
                unit: Some(unit.to_string()),
                ..WireAddress::default()
            },
            DiskAddress::Pci {
                domain,
                bus,
                slot,
                function,
            } => WireAddress {
                kind: "pci".into(),
                domain: Some(format!("0x{domain:04x}")),
                bus: Some(format!("0x{bus:02x}")),
                slot: Some(format!("0x{slot:02x}")),
                function: Some(format!("0x{function:x}")),
                ..WireAddress::default()
            },
        }
    }
}

/// A number libvirt writes in decimal or `0x` hex.
fn address_number<T: TryFrom<u64>>(field: &'static str, value: &Option<String>) -> Result<T> {
    let bad = |reason: String| Error::InvalidDiskConfig { field, reason };
    let s = value.as_deref().ok_or_else(|| bad("missing".into()))?;
    let n = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .map_err(|_| bad(format!("{s:?} is not a number")))?;
    T::try_from(n).map_err(|_| bad(format!("{s:?} is out of range")))
}

impl TryFrom<&WireAddress> for DiskAddress {
    type Error = Error;
    fn try_from(a: &WireAddress) -> Result<Self> {
        match a.kind.as_str() {
            "drive" => Ok(DiskAddress::Drive {
                controller: address_number("address.controller", &a.controller)?,
                bus: address_number("address.bus", &a.bus)?,
                target: address_number("address.target", &a.target)?,
                unit: address_number("address.unit", &a.unit)?,
            }),
            "pci" => Ok(DiskAddress::Pci {
                domain: address_number("address.domain", &a.domain)?,
                bus: address_number("address.bus", &a.bus)?,
                slot: address_number("address.slot", &a.slot)?,
                function: address_number("address.function", &a.function)?,
            }),
            other => Err(Error::InvalidDiskConfig {
                field: "address.type",
                reason: format!("{other:?} is neither \"drive\" nor \"pci\""),
            }),
        }
    }
}

impl TryFrom<WireDisk> for DiskConfig {
    type Error = Error;
    fn try_from(w: WireDisk) -> Result<Self> {
        let bad = |field: &'static str, reason: String| Error::InvalidDiskConfig { field, reason };
        if w.device != "disk" {
            return Err(bad(
                "device",
                format!(
                    "{:?} is not a disk (only device='disk' is modelled)",
                    w.device
                ),
            ));
        }
        let src = w.source.unwrap_or_default();
        let need = |v: Option<String>, field: &'static str| {
            v.ok_or_else(|| bad(field, format!("missing for a {} disk", w.kind)))
        };
        let source = match w.kind.as_str() {
            "file" => DiskSource::File(need(src.file, "source.file")?.into()),
            "block" => DiskSource::Block(need(src.dev, "source.dev")?.into()),
            "network" => {
                let auth = w.auth.or(src.auth).map(|a| -> Result<DiskAuth> {
                    Ok(DiskAuth {
                        username: a.username,
                        secret_type: a.secret.kind.parse()?,
                        secret_uuid: a.secret.uuid,
                    })
                });
                DiskSource::Network(NetworkDisk {
                    protocol: need(src.protocol, "source.protocol")?.parse()?,
                    name: need(src.name, "source.name")?,
                    hosts: src
                        .host
                        .into_iter()
                        .map(|h| NetworkHost {
                            name: h.name,
                            port: h.port,
                        })
                        .collect(),
                    auth: auth.transpose()?,
                })
            }
            other => {
                return Err(bad(
                    "type",
                    format!("{other:?} is not one of: file, block, network"),
                ))
            }
        };
        let driver = match w.driver {
            Some(d) => DiskDriver {
                name: d.name,
                format: d.format,
                cache: parse_opt(d.cache)?,
                io: parse_opt(d.io)?,
                discard: parse_opt(d.discard)?,
                detect_zeroes: parse_opt(d.detect_zeroes)?,
            },
            None => DiskDriver::default(),
        };
        Ok(DiskConfig {
            source,
            driver,
            target: DiskTarget {
                dev: w.target.dev,
                bus: w.target.bus.parse()?,
            },
            serial: w.serial,
            wwn: w.wwn,
            readonly: w.readonly.is_some(),
            shareable: w.shareable.is_some(),
            iotune: w.iotune,
            blockio: w.blockio,
            address: w.address.as_ref().map(DiskAddress::try_from).transpose()?,
        })
    }
}
