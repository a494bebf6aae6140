//! `connection_info`: what a storage service (Cinder) returns for an attachment, parsed
//! verbatim into typed, validated per-protocol properties.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model::ids::ParseIdError;
use crate::model::iscsi::IscsiProperties;
use crate::model::local::LocalProperties;
use crate::model::nvme::NvmeProperties;
use crate::model::rbd::RbdProperties;

/// A volume transport, as named in `driver_volume_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// iSCSI over TCP.
    Iscsi,
    /// iSCSI with the iSER (RDMA) transport.
    Iser,
    /// NVMe over fabrics (TCP, RDMA).
    NvmeOf,
    /// Ceph RADOS block device.
    Rbd,
    /// A block device already on this host (`device_path`).
    Local,
}

impl Protocol {
    /// The names accepted by [`Protocol::from_str`] (case-insensitive).
    pub const ACCEPTED: &'static str = "iscsi, iser, nvmeof (nvme), rbd, local";

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Iscsi => "iscsi",
            Protocol::Iser => "iser",
            Protocol::NvmeOf => "nvmeof",
            Protocol::Rbd => "rbd",
            Protocol::Local => "local",
        }
    }
}

impl FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "iscsi" => Ok(Protocol::Iscsi),
            "iser" => Ok(Protocol::Iser),
            "nvmeof" | "nvme" => Ok(Protocol::NvmeOf),
            "rbd" => Ok(Protocol::Rbd),
            "local" => Ok(Protocol::Local),
            _ => Err(Error::InvalidConnectorProtocol {
                value: s.to_string(),
                accepted: Protocol::ACCEPTED,
            }),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Read or read-write access, from `access_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccessMode {
    /// Read-write (`rw`), the default.
    #[default]
    Rw,
    /// Read-only (`ro`).
    Ro,
}

/// The typed properties of one volume, per protocol. Not `Clone`: they may hold secrets.
#[derive(Debug, PartialEq)]
#[non_exhaustive]
pub enum VolumeProperties {
    /// iSCSI or iSER.
    Iscsi(IscsiProperties),
    /// NVMe over fabrics.
    Nvme(NvmeProperties),
    /// Ceph RBD.
    Rbd(RbdProperties),
    /// A local block device.
    Local(LocalProperties),
}

/// A parsed `connection_info`: `{"driver_volume_type": ..., "data": {...}}`.
///
/// Unknown keys are tolerated; known keys are validated here, so a connector never meets a
/// malformed portal or IQN. Secrets are held in [`crate::Secret`] and never printed; for
/// that reason it is not `Clone` (parse the JSON again, or share it behind an `Arc`).
#[derive(Debug, PartialEq)]
pub struct ConnectionInfo {
    protocol: Protocol,
    properties: VolumeProperties,
    disk: DiskProperties,
}

/// What a `connection_info` says about the disk a guest should see, whatever the protocol:
/// the keys Nova reads when it builds the libvirt disk.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DiskProperties {
    /// `data.access_mode`: `ro` makes a read-only disk.
    pub access_mode: AccessMode,
    /// `data.discard`: pass discard (unmap) requests through.
    pub discard: bool,
    /// `data.qos_specs`: front-end limits, as sent (keys such as `total_bytes_sec`); `None`
    /// when absent or not an object (ignored with a warning, as Nova does).
    pub qos_specs: Option<Map<String, Value>>,
    /// `data.logical_block_size` in bytes.
    pub logical_block_size: Option<u32>,
    /// `data.physical_block_size` in bytes.
    pub physical_block_size: Option<u32>,
    /// Top-level `serial` (Nova stores the volume id there); else `data.volume_id`.
    pub serial: Option<String>,
    /// Top-level `multiattach`: the volume may be attached to several guests at once.
    pub multiattach: bool,
    /// `data.encrypted`: the volume holds an encrypted (e.g. LUKS) payload that the host or
    /// the hypervisor must open; carried through for every protocol.
    pub encrypted: bool,
}

impl DiskProperties {
    fn from_fields(top: &Fields<'_>, data: &Fields<'_>) -> Result<Self> {
        let qos_specs = match data.get("qos_specs") {
            None => None,
            Some(Value::Object(m)) => Some(m.clone()),
            // Nova logs "Unknown content in connection_info/qos_specs" and sets no limits.
            Some(other) => {
                tracing::warn!(
                    field = %data.name("qos_specs"),
                    got = kind(other),
                    "not an object; ignored (no I/O limits)"
                );
                None
            }
        };
        let block_size = |key: &str| -> Result<Option<u32>> {
            match data.u64_opt(key)? {
                None => Ok(None),
                Some(n) if (512..=65536).contains(&n) && n.is_power_of_two() => Ok(Some(n as u32)),
                Some(n) => Err(Error::invalid(
                    data.name(key),
                    format!("{n} is not a power of two between 512 and 65536"),
                )),
            }
        };
        let serial = match top.scalar_opt("serial")? {
            Some(s) => Some(s),
            None => data.scalar_opt("volume_id")?,
        };
        Ok(DiskProperties {
            access_mode: data.access_mode()?.unwrap_or_default(),
            discard: data.bool_opt("discard")?.unwrap_or(false),
            qos_specs,
            logical_block_size: block_size("logical_block_size")?,
            physical_block_size: block_size("physical_block_size")?,
            serial,
            multiattach: top.bool_opt("multiattach")?.unwrap_or(false),
            encrypted: data.bool_opt("encrypted")?.unwrap_or(false),
        })
    }
}

impl ConnectionInfo {
    /// Parses JSON text.
    pub fn from_json(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid("connection_info", format!("not valid JSON: {e}")))?;
        Self::from_value(&v)
    }

    /// Parses a JSON value.
    pub fn from_value(v: &Value) -> Result<Self> {
        let obj = v
            .as_object()
            .ok_or_else(|| Error::invalid("connection_info", "expected a JSON object"))?;
        let dvt = obj
            .get("driver_volume_type")
            .ok_or_else(|| Error::invalid("driver_volume_type", "missing"))?
            .as_str()
            .ok_or_else(|| Error::invalid("driver_volume_type", "expected a string"))?;
        let protocol: Protocol = dvt.parse()?;
        let data = obj
            .get("data")
            .ok_or_else(|| Error::invalid("data", "missing"))?
            .as_object()
            .ok_or_else(|| Error::invalid("data", "expected a JSON object"))?;
        let fields = Fields::new("data", data);
        let properties = match protocol {
            Protocol::Iscsi | Protocol::Iser => {
                VolumeProperties::Iscsi(IscsiProperties::from_fields(&fields)?)
            }
            Protocol::NvmeOf => VolumeProperties::Nvme(NvmeProperties::from_fields(&fields)?),
            Protocol::Rbd => VolumeProperties::Rbd(RbdProperties::from_fields(&fields)?),
            Protocol::Local => VolumeProperties::Local(LocalProperties::from_fields(&fields)?),
        };
        let disk = DiskProperties::from_fields(&Fields::new("connection_info", obj), &fields)?;
        Ok(ConnectionInfo {
            protocol,
            properties,
            disk,
        })
    }

    /// The protocol named by `driver_volume_type`.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// What the connection_info says about the guest's disk.
    pub fn disk(&self) -> &DiskProperties {
        &self.disk
    }

    /// Whether the volume is encrypted (`data.encrypted`).
    pub fn encrypted(&self) -> bool {
        self.disk.encrypted
    }

    /// The typed properties.
    pub fn properties(&self) -> &VolumeProperties {
        &self.properties
    }

    /// The iSCSI properties, when this is an iSCSI or iSER volume.
    pub fn iscsi(&self) -> Option<&IscsiProperties> {
        match &self.properties {
            VolumeProperties::Iscsi(p) => Some(p),
            _ => None,
        }
    }

    /// The NVMe-oF properties, when this is an NVMe-oF volume.
    pub fn nvme(&self) -> Option<&NvmeProperties> {
        match &self.properties {
            VolumeProperties::Nvme(p) => Some(p),
            _ => None,
        }
    }

    /// The RBD properties, when this is an RBD volume.
    pub fn rbd(&self) -> Option<&RbdProperties> {
        match &self.properties {
            VolumeProperties::Rbd(p) => Some(p),
            _ => None,
        }
    }

    /// The local-device properties, when this is a `local` volume.
    pub fn local(&self) -> Option<&LocalProperties> {
        match &self.properties {
            VolumeProperties::Local(p) => Some(p),
            _ => None,
        }
    }

    /// The error for a connector of `expected` handed this connection_info.
    pub(crate) fn mismatch(&self, expected: Protocol) -> Error {
        Error::ProtocolMismatch {
            expected: expected.to_string(),
            found: self.protocol.to_string(),
        }
    }

    /// The volume id, when the storage service sent one.
    pub fn volume_id(&self) -> Option<&str> {
        match &self.properties {
            VolumeProperties::Iscsi(p) => p.volume_id.as_deref(),
            VolumeProperties::Nvme(p) => p.volume_id.as_deref(),
            VolumeProperties::Rbd(p) => p.volume_id.as_deref(),
            VolumeProperties::Local(p) => p.volume_id.as_deref(),
        }
    }
}

impl<'de> Deserialize<'de> for ConnectionInfo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        ConnectionInfo::from_value(&v).map_err(serde::de::Error::custom)
    }
}

/// Typed access to one JSON object's fields; errors name the field with its path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    prefix: &'a str,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(prefix: &'a str, map: &'a Map<String, Value>) -> Self {
        Fields { prefix, map }
    }

    pub(crate) fn name(&self, key: &str) -> String {
        format!("{}.{}", self.prefix, key)
    }

    /// The value, treating JSON `null` as absent.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn str_opt(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(Error::invalid(
                self.name(key),
                format!("expected a string, got {}", kind(other)),
            )),
        }
    }

    pub(crate) fn str_req(&self, key: &str) -> Result<&'a str> {
        self.str_opt(key)?
            .ok_or_else(|| Error::invalid(self.name(key), "missing"))
    }

    /// A required string field parsed as `T`.
    pub(crate) fn parse_req<T>(&self, key: &str) -> Result<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.str_req(key)?
            .parse()
            .map_err(|e: T::Err| Error::invalid(self.name(key), e.to_string()))
    }

    /// A field that may be any JSON scalar, as text (Python's `str()` of it: os-brick's
    /// callers pass numbers where others pass strings).
    pub(crate) fn scalar_opt(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(if *b { "True" } else { "False" }.to_string())),
            Some(other) => Err(Error::invalid(
                self.name(key),
                format!("expected a string or a number, got {}", kind(other)),
            )),
        }
    }

    /// `volume_id`, any JSON scalar, checked with `check_volume_id`.
    pub(crate) fn volume_id(&self) -> Result<Option<String>> {
        match self.scalar_opt("volume_id")? {
            None => Ok(None),
            Some(id) => {
                check_volume_id(&id)
                    .map_err(|e| Error::invalid(self.name("volume_id"), e.to_string()))?;
                Ok(Some(id))
            }
        }
    }

    /// A non-negative integer given as a JSON number or a decimal string.
    pub(crate) fn u64_opt(&self, key: &str) -> Result<Option<u64>> {
        self.get(key)
            .map(|v| as_u64(v).map_err(|r| Error::invalid(self.name(key), r)))
            .transpose()
    }

    /// A boolean given as JSON `true`/`false` or the strings Python services send.
    pub(crate) fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Ok(Some(true)),
                "false" | "no" | "0" | "" => Ok(Some(false)),
                _ => Err(Error::invalid(
                    self.name(key),
                    format!("{s:?} is not a boolean"),
                )),
            },
            Some(other) => Err(Error::invalid(
                self.name(key),
                format!("expected a boolean, got {}", kind(other)),
            )),
        }
    }

    pub(crate) fn list_opt(&self, key: &str) -> Result<Option<&'a Vec<Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(Error::invalid(
                self.name(key),
                format!("expected a list, got {}", kind(other)),
            )),
        }
    }

    pub(crate) fn access_mode(&self) -> Result<Option<AccessMode>> {
        match self.str_opt("access_mode")? {
            None => Ok(None),
            Some(s) => match s.to_ascii_lowercase().as_str() {
                "rw" => Ok(Some(AccessMode::Rw)),
                "ro" => Ok(Some(AccessMode::Ro)),
                _ => Err(Error::invalid(
                    self.name("access_mode"),
                    format!("{s:?} is neither \"rw\" nor \"ro\""),
                )),
            },
        }
    }
}

/// The longest volume id accepted, in bytes.
pub const VOLUME_ID_MAX: usize = 255;

/// Checks a volume id (`data.volume_id`): the storage service's name for the volume (a
/// UUID, a number), which hostbrick puts in lock and registry names. Refused: empty, longer
/// than `VOLUME_ID_MAX` (255) bytes, a `/`, a NUL or any other control character.
pub fn check_volume_id(id: &str) -> std::result::Result<(), ParseIdError> {
    let bad = |why: &str| Err(ParseIdError(format!("{id:?} is not a volume id: {why}")));
    if id.is_empty() {
        return bad("empty");
    }
    if id.len() > VOLUME_ID_MAX {
        return bad(&format!("longer than {VOLUME_ID_MAX} bytes"));
    }
    if let Some(c) = id.chars().find(|c| *c == '/' || c.is_control()) {
        return bad(&format!("{c:?} is not allowed"));
    }
    Ok(())
}

pub(crate) fn as_u64(v: &Value) -> std::result::Result<u64, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("{n} is not a non-negative integer")),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a non-negative integer")),
        other => Err(format!("expected an integer, got {}", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names() {
        for (s, p) in [
            ("iscsi", Protocol::Iscsi),
            ("ISCSI", Protocol::Iscsi),
            ("iSER", Protocol::Iser),
            ("NVMEOF", Protocol::NvmeOf),
            ("rbd", Protocol::Rbd),
        ] {
            assert_eq!(s.parse::<Protocol>().unwrap(), p);
        }
        let e = "fibre_channel".parse::<Protocol>().unwrap_err();
        assert!(matches!(e, Error::InvalidConnectorProtocol { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("fibre_channel") && msg.contains("iscsi, iser, nvmeof (nvme), rbd, local"),
            "{msg}"
        );
    }

    #[test]
    fn envelope_errors_name_the_field() {
        let cases = [
            ("[]", "connection_info"),
            ("{}", "driver_volume_type"),
            (
                r#"{"driver_volume_type": 3, "data": {}}"#,
                "driver_volume_type",
            ),
            (r#"{"driver_volume_type": "iscsi"}"#, "data"),
            (r#"{"driver_volume_type": "iscsi", "data": []}"#, "data"),
            ("not json", "connection_info"),
        ];
        for (text, field) in cases {
            match ConnectionInfo::from_json(text) {
                Err(Error::InvalidConnectionInfo { field: f, .. }) => {
                    assert_eq!(f, field, "{text}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn qos_specs_that_are_not_an_object_are_ignored() {
        // Nova (volume.py): "Unknown content in connection_info/qos_specs", no limits.
        for specs in [r#""100""#, "[1, 2]", "7", "false", "null"] {
            let text = format!(
                r#"{{"driver_volume_type": "local",
                    "data": {{"device_path": "/dev/sdb", "qos_specs": {specs}}}}}"#
            );
            let ci = ConnectionInfo::from_json(&text).unwrap();
            assert_eq!(ci.disk().qos_specs, None, "{specs}");
        }
    }

    #[test]
    fn every_protocol_parses_its_own_shape() {
        let e =
            ConnectionInfo::from_json(r#"{"driver_volume_type": "rbd", "data": {}}"#).unwrap_err();
        assert!(matches!(e, Error::InvalidConnectionInfo { .. }), "{e}");
        let ci =
            ConnectionInfo::from_json(r#"{"driver_volume_type": "RBD", "data": {"name": "p/i"}}"#)
                .unwrap();
        assert_eq!(ci.protocol(), Protocol::Rbd);
        assert!(ci.rbd().is_some() && ci.iscsi().is_none() && ci.nvme().is_none());
    }

    #[test]
    fn volume_ids_that_could_name_another_file_are_refused() {
        let doc = |id: Value| {
            serde_json::json!({"driver_volume_type": "local",
                "data": {"device_path": "/dev/vdb", "volume_id": id}})
        };
        for ok in [
            "1",
            "42",
            "3fa85f64-5717-4562-b3fc-2c963f66afa6",
            "volume 1",
        ] {
            let ci = ConnectionInfo::from_value(&doc(ok.into())).unwrap();
            assert_eq!(ci.volume_id(), Some(ok));
        }
        let long = "a".repeat(VOLUME_ID_MAX + 1);
        for bad in [
            "",
            "../../etc/passwd",
            "a/b",
            "a\0b",
            "a\nb",
            "\u{7f}",
            long.as_str(),
        ] {
            match ConnectionInfo::from_value(&doc(bad.into())) {
                Err(Error::InvalidConnectionInfo { field, .. }) => {
                    assert_eq!(field, "data.volume_id", "{bad:?}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn field_helpers_accept_python_shapes() {
        let v: Value = serde_json::json!({"a": "3", "b": 4, "c": "True", "d": null, "e": -1});
        let m = v.as_object().unwrap();
        let f = Fields::new("data", m);
        assert_eq!(f.u64_opt("a").unwrap(), Some(3));
        assert_eq!(f.u64_opt("b").unwrap(), Some(4));
        assert_eq!(f.bool_opt("c").unwrap(), Some(true));
        assert_eq!(f.str_opt("d").unwrap(), None);
        assert!(f.u64_opt("e").is_err());
        assert!(f.str_opt("b").unwrap_err().to_string().contains("data.b"));
    }
}
