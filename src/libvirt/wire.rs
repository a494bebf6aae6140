//! The `<disk>` XML shape, as quick-xml's serde sees it, and its conversion to and from
//! the typed [`DiskConfig`]: `to_xml` and `from_xml`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::config::{
    BlockIo, DiskAddress, DiskAuth, DiskConfig, DiskDevice, DiskDriver, DiskEncryption, DiskSource,
    DiskTarget, EncryptionFormat, IoTune, NetworkDisk, NetworkHost,
};

impl DiskConfig {
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

    /// Reads a `<disk>` element with `device` disk, cdrom or lun (as written by
    /// [`DiskConfig::to_xml`] or by `virsh dumpxml`). Elements this config does not model
    /// are ignored, and so are an `<address>` of a type it does not model (`ccw`, `usb`,
    /// `virtio-mmio`, ...) and an alias libvirt generated (one without the `ua-` prefix);
    /// zero I/O limits read as unset.
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

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename = "disk")]
struct WireDisk {
    #[serde(rename = "@type")]
    kind: String,
    #[serde(rename = "@device", default = "disk_device")]
    device: String,
    #[serde(rename = "@sgio", skip_serializing_if = "Option::is_none", default)]
    sgio: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    driver: Option<WireDriver>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    auth: Option<WireAuth>,
    #[serde(default)]
    source: Option<WireSource>,
    /// Nova writes `<encryption>` in `<disk>`; libvirt also reads (and some versions write)
    /// it inside `<source>`: read from either, written here.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    encryption: Option<WireEncryption>,
    target: WireTarget,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    serial: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    wwn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    alias: Option<WireAlias>,
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

#[derive(Debug, Serialize, Deserialize)]
struct WireAlias {
    #[serde(rename = "@name")]
    name: String,
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
    /// The same for `<encryption>`.
    #[serde(skip_serializing, default)]
    encryption: Option<WireEncryption>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireEncryption {
    #[serde(rename = "@format")]
    format: String,
    #[serde(default)]
    secret: Option<WireSecret>,
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
                    name: net.name.clone(),
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
            device: d.device.to_string(),
            sgio: d.sgio.map(|s| s.to_string()),
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
            encryption: d.encryption.as_ref().map(|e| WireEncryption {
                format: e.format.to_string(),
                secret: Some(WireSecret {
                    kind: "passphrase".into(),
                    uuid: e.secret_uuid.clone(),
                }),
            }),
            target: WireTarget {
                dev: d.target.dev.clone(),
                bus: d.target.bus.to_string(),
            },
            serial: d.serial.clone(),
            wwn: d.wwn.clone(),
            alias: d.alias.clone().map(|name| WireAlias { name }),
            readonly: d.readonly.then(Empty::default),
            shareable: d.shareable.then(Empty::default),
            iotune: d.iotune.filter(|t| !t.is_unlimited()),
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

impl WireAddress {
    /// The address, for the types [`DiskAddress`] models; `None` for the others (`ccw`,
    /// `usb`, `virtio-mmio`, `virtio-s390`, `spapr-vio`, ...), which are left out.
    fn modelled(&self) -> Result<Option<DiskAddress>> {
        match self.kind.as_str() {
            "drive" => Ok(Some(DiskAddress::Drive {
                controller: address_number("address.controller", &self.controller)?,
                bus: address_number("address.bus", &self.bus)?,
                target: address_number("address.target", &self.target)?,
                unit: address_number("address.unit", &self.unit)?,
            })),
            "pci" => Ok(Some(DiskAddress::Pci {
                domain: address_number("address.domain", &self.domain)?,
                bus: address_number("address.bus", &self.bus)?,
                slot: address_number("address.slot", &self.slot)?,
                function: address_number("address.function", &self.function)?,
            })),
            other => {
                tracing::debug!(
                    address_type = other,
                    "disk address type not modelled; ignored"
                );
                Ok(None)
            }
        }
    }
}

impl TryFrom<WireDisk> for DiskConfig {
    type Error = Error;
    fn try_from(w: WireDisk) -> Result<Self> {
        let bad = |field: &'static str, reason: String| Error::InvalidDiskConfig { field, reason };
        let device = match w.device.as_str() {
            "disk" => DiskDevice::Disk,
            "cdrom" => DiskDevice::Cdrom,
            "lun" => DiskDevice::Lun,
            other => {
                return Err(bad(
                    "device",
                    format!("{other:?} is not one of: disk, cdrom, lun (floppy is not modelled)"),
                ))
            }
        };
        let mut src = w.source.unwrap_or_default();
        let encryption = match w.encryption.or(src.encryption.take()) {
            None => None,
            Some(e) => {
                let format: EncryptionFormat = e.format.parse()?;
                let secret = e.secret.ok_or_else(|| {
                    bad(
                        "encryption.secret",
                        "missing: QEMU needs the passphrase secret".into(),
                    )
                })?;
                if secret.kind != "passphrase" {
                    return Err(bad(
                        "encryption.secret.type",
                        format!("{:?} is not passphrase", secret.kind),
                    ));
                }
                Some(DiskEncryption {
                    format,
                    secret_uuid: secret.uuid,
                })
            }
        };
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
                    name: src.name,
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
        let alias = match w.alias {
            // A user alias is kept (and checked); libvirt generates the others.
            Some(a) if a.name.starts_with("ua-") => Some(a.name),
            Some(a) => {
                tracing::debug!(alias = %a.name, "libvirt's own device alias; not kept");
                None
            }
            None => None,
        };
        Ok(DiskConfig {
            device,
            source,
            driver,
            target: DiskTarget {
                dev: w.target.dev,
                bus: w.target.bus.parse()?,
            },
            serial: w.serial,
            wwn: w.wwn,
            alias,
            sgio: parse_opt(w.sgio)?,
            readonly: w.readonly.is_some(),
            shareable: w.shareable.is_some(),
            iotune: w
                .iotune
                .map(IoTune::normalized)
                .filter(|t| !t.is_unlimited()),
            blockio: w.blockio,
            address: match &w.address {
                Some(a) => a.modelled()?,
                None => None,
            },
            encryption,
        })
    }
}
