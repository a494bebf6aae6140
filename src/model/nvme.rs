//! NVMe-oF connection properties: Cinder's `data` for `driver_volume_type: nvmeof`, in the
//! current shape (`target_nqn`, `portals` triples, `vol_uuid`, ...) and the older one
//! (`nqn`, `transport_type`, `target_portal`, `target_port`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::connection::{as_u64, AccessMode, Fields};
use crate::model::ids::ParseIdError;

/// An NVMe qualified name, at most 223 bytes: `nqn.YYYY-MM.reverse.domain[:...]` (which
/// covers the discovery NQN `nqn.2014-08.org.nvmexpress.discovery`), or
/// `nqn.2014-08.org.nvmexpress:uuid:` followed by a UUID.
///
/// libnvme splices the name into the fabrics option string (`nqn=...,hostnqn=...`) it
/// writes to `/dev/nvme-fabrics`, so it never holds a `,`, `=`, `/`, whitespace or a
/// control character; it begins with `nqn.`, so it is never taken for an option.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nqn(String);

static NQN_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^nqn\.[0-9]{4}-[0-9]{2}(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+(:[^\s]+)?$")
        .expect("static regex")
});

/// The prefix of the UUID-based NQN form (NVMe Base Specification §4.7).
const UUID_NQN_PREFIX: &str = "nqn.2014-08.org.nvmexpress:uuid:";

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

impl Nqn {
    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Nqn {
    type Err = ParseIdError;
    fn from_str(s: &str) -> std::result::Result<Self, ParseIdError> {
        if s.len() > 223 {
            return Err(ParseIdError(format!(
                "NQN is {} bytes long, the limit is 223",
                s.len()
            )));
        }
        if let Some(c) = s
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | '=' | '/'))
        {
            return Err(ParseIdError(format!(
                "{s:?} is not an NVMe qualified name: {c:?} is not allowed"
            )));
        }
        if let Some(uuid) = s.strip_prefix(UUID_NQN_PREFIX) {
            if !is_uuid(uuid) {
                return Err(ParseIdError(format!(
                    "{s:?} is not an NVMe qualified name: {uuid:?} after {UUID_NQN_PREFIX:?} is not a UUID"
                )));
            }
        }
        if NQN_RE.is_match(s) {
            Ok(Nqn(s.to_string()))
        } else {
            Err(ParseIdError(format!(
                "{s:?} is not an NVMe qualified name (nqn.YYYY-MM.domain[:id])"
            )))
        }
    }
}

impl fmt::Display for Nqn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Nqn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Nqn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// An NVMe-oF transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NvmeTransport {
    /// NVMe/TCP.
    Tcp,
    /// NVMe/RDMA (also RoCEv2).
    Rdma,
}

impl NvmeTransport {
    /// The kernel's name (`tcp`, `rdma`).
    pub fn as_str(self) -> &'static str {
        match self {
            NvmeTransport::Tcp => "tcp",
            NvmeTransport::Rdma => "rdma",
        }
    }

    /// The transport a connection_info names, read as os-brick reads it: `rdma` and
    /// `RoCEv2` (also `roce`; any letter case) are RDMA, `tcp` is TCP, and anything else
    /// (a typo, `fc`, a number) is TCP too, with a warning naming `field`: os-brick's
    /// `Portal` connects over TCP then, and a drop-in must not refuse a volume it attaches.
    ///
    /// This is for connection_info only: what the kernel reports (sysfs `transport`) is
    /// read with the strict [`FromStr`].
    pub(crate) fn from_connection_info(field: &str, value: Option<&Value>) -> NvmeTransport {
        match value {
            None => NvmeTransport::Tcp,
            Some(Value::String(s)) => match s.parse::<NvmeTransport>() {
                Ok(t) => t,
                Err(_) => {
                    tracing::warn!(field, value = ?s, "unknown NVMe-oF transport; using tcp as os-brick does");
                    NvmeTransport::Tcp
                }
            },
            Some(other) => {
                tracing::warn!(field, value = ?other, "NVMe-oF transport is not a string; using tcp as os-brick does");
                NvmeTransport::Tcp
            }
        }
    }
}

impl FromStr for NvmeTransport {
    type Err = ParseIdError;
    fn from_str(s: &str) -> std::result::Result<Self, ParseIdError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(NvmeTransport::Tcp),
            "rdma" | "roce" | "rocev2" => Ok(NvmeTransport::Rdma),
            _ => Err(ParseIdError(format!(
                "{s:?} is not an NVMe-oF transport (tcp, rdma, RoCEv2)"
            ))),
        }
    }
}

impl fmt::Display for NvmeTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One NVMe-oF portal: address, service id (port) and transport.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NvmePortal {
    /// The transport address (IP).
    pub address: String,
    /// The transport service id (TCP port).
    pub port: u16,
    /// The transport.
    pub transport: NvmeTransport,
}

impl fmt::Display for NvmePortal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.transport, self.address, self.port)
    }
}

/// How the namespace of the volume is identified, most specific first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NamespaceId {
    /// `vol_uuid`: the namespace UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// `volume_nguid`: the namespace globally unique id (32 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nguid: Option<String>,
    /// `ns_id`: the namespace id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsid: Option<u32>,
}

impl NamespaceId {
    /// True when nothing identifies the namespace (then the subsystem must have one).
    pub fn is_empty(&self) -> bool {
        self.uuid.is_none() && self.nguid.is_none() && self.nsid.is_none()
    }
}

impl fmt::Display for NamespaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.uuid, &self.nguid, self.nsid) {
            (Some(u), _, _) => write!(f, "uuid {u}"),
            (None, Some(g), _) => write!(f, "nguid {g}"),
            (None, None, Some(n)) => write!(f, "nsid {n}"),
            (None, None, None) => f.write_str("the only namespace"),
        }
    }
}

/// One copy of the volume: a subsystem, its portals and the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmeTarget {
    /// The subsystem NQN.
    pub nqn: Nqn,
    /// Its portals.
    pub portals: Vec<NvmePortal>,
    /// The namespace.
    pub namespace: NamespaceId,
}

/// The validated properties of an NVMe-oF volume.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NvmeProperties {
    /// The volume (or, for a replicated volume, its first replica).
    pub target: NvmeTarget,
    /// `volume_replicas`: every replica, when the volume is replicated (RAID1 over them).
    pub replicas: Vec<NvmeTarget>,
    /// `alias`: the MD array name for a replicated volume (`/dev/md/<alias>`).
    pub alias: Option<String>,
    /// `host_nqn`: the host NQN the storage exported to, when given (the connect's
    /// `hostnqn` option then is it instead of the host's own). For a replicated volume, the replicas'
    /// `host_nqn` (they must agree), else the one beside them.
    pub host_nqn: Option<Nqn>,
    /// `volume_id`.
    pub volume_id: Option<String>,
    /// `access_mode`.
    pub access_mode: AccessMode,
    /// `discard`.
    pub discard: bool,
    /// `enforce_multipath`: fail unless every portal connects.
    pub enforce_multipath: bool,
    /// `qos_specs`, kept as sent.
    pub qos_specs: Option<Value>,
    /// `device_path`: the path Nova adds to the data after a connect. Like a device
    /// record's `path`, a hint a disconnect checks against what the host shows, never
    /// acted on by itself. (`cacheable`, which os-brick reads but never uses for NVMe-oF,
    /// is accepted and ignored.)
    pub device_path: Option<PathBuf>,
}

impl NvmeProperties {
    pub(crate) fn from_fields(f: &Fields<'_>) -> Result<Self> {
        // os-brick hands each replica's own `host_nqn` to its `nvme connect`; hostbrick
        // connects a volume with one host NQN, so the replicas that name one must agree.
        let mut replica_host_nqn: Option<Nqn> = None;
        let replicas = match f.list_opt("volume_replicas")? {
            None => Vec::new(),
            Some(list) => {
                let mut out = Vec::with_capacity(list.len());
                for (i, r) in list.iter().enumerate() {
                    let name = format!("{}[{i}]", f.name("volume_replicas"));
                    let map = r
                        .as_object()
                        .ok_or_else(|| Error::invalid(&name, "expected an object"))?;
                    let rf = Fields::new(&name, map);
                    out.push(target(&rf)?);
                    if let Some(n) = host_nqn(&rf)? {
                        match &replica_host_nqn {
                            Some(first) if *first != n => {
                                return Err(Error::invalid(
                                    rf.name("host_nqn"),
                                    format!("is {n} but an earlier replica's is {first} (one host NQN per volume)"),
                                ))
                            }
                            _ => replica_host_nqn = Some(n),
                        }
                    }
                }
                out
            }
        };
        if let Some(n) = f.u64_opt("replica_count")? {
            if !replicas.is_empty() && n as usize != replicas.len() {
                return Err(Error::invalid(
                    f.name("replica_count"),
                    format!(
                        "is {n} but {} has {} entries",
                        f.name("volume_replicas"),
                        replicas.len()
                    ),
                ));
            }
        }
        let alias = f.str_opt("alias")?.map(str::to_string);
        if let Some(a) = &alias {
            check_md_alias(a).map_err(|e| Error::invalid(f.name("alias"), e.to_string()))?;
        }
        let target = match replicas.first() {
            Some(first) if !has_target(f) => first.clone(),
            _ => target(f)?,
        };
        if replicas.len() > 1 && alias.is_none() {
            return Err(Error::invalid(
                f.name("alias"),
                "missing (needed to name the RAID1 of the replicas)",
            ));
        }
        let host_nqn = match (replica_host_nqn, host_nqn(f)?) {
            (Some(r), Some(top)) if r != top => {
                tracing::warn!(replicas = %r, data = %top, "the replicas' host_nqn differs from data.host_nqn; using the replicas' as os-brick does");
                Some(r)
            }
            (r, top) => r.or(top),
        };
        // Nova adds the path it was given as `device_path`; it is only a hint (checked
        // against the host before a disconnect), so a value of another type is ignored.
        let device_path = f
            .get("device_path")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        Ok(NvmeProperties {
            target,
            replicas,
            alias,
            host_nqn,
            volume_id: f.volume_id()?,
            access_mode: f.access_mode()?.unwrap_or_default(),
            discard: f.bool_opt("discard")?.unwrap_or(false),
            enforce_multipath: f.bool_opt("enforce_multipath")?.unwrap_or(false),
            qos_specs: f.get("qos_specs").cloned(),
            device_path,
        })
    }

    /// Every copy to connect: the replicas of a replicated volume, else the one target.
    pub fn copies(&self) -> Vec<&NvmeTarget> {
        if self.replicas.len() > 1 {
            self.replicas.iter().collect()
        } else {
            vec![&self.target]
        }
    }

    /// The key of this volume's connect/disconnect lock and registry entry.
    pub fn volume_key(&self) -> String {
        match &self.volume_id {
            Some(id) => format!("volume-{id}"),
            None => format!("volume-{}-{}", self.target.nqn, self.target.namespace),
        }
    }
}

/// The longest MD array name mdadm keeps in a version-1 superblock.
pub const MD_ALIAS_MAX: usize = 32;

/// Checks the MD array name of a replicated volume (`alias`, the array is
/// `/dev/md/<alias>`): 1 to `MD_ALIAS_MAX` (32) of `A-Z a-z 0-9 _ . -`, not beginning with `-`
/// or `.` (so never an option, `.` or `..`).
pub fn check_md_alias(a: &str) -> std::result::Result<(), ParseIdError> {
    let bad = |why: &str| {
        Err(ParseIdError(format!(
            "{a:?} is not an MD array name: {why}"
        )))
    };
    if a.is_empty() {
        return bad("empty");
    }
    if a.len() > MD_ALIAS_MAX {
        return bad(&format!("longer than {MD_ALIAS_MAX} bytes"));
    }
    if let Some(c) = a
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return bad(&format!(
            "{c:?} is not allowed (letters, digits, '_', '.', '-')"
        ));
    }
    if a.starts_with(['-', '.']) {
        return bad("begins with '-' or '.'");
    }
    Ok(())
}

/// `host_nqn`, validated.
fn host_nqn(f: &Fields<'_>) -> Result<Option<Nqn>> {
    match f.str_opt("host_nqn")? {
        Some(s) => s
            .parse::<Nqn>()
            .map(Some)
            .map_err(|e| Error::invalid(f.name("host_nqn"), e.to_string())),
        None => Ok(None),
    }
}

fn has_target(f: &Fields<'_>) -> bool {
    f.get("target_nqn").is_some() || f.get("nqn").is_some()
}

/// A target in either shape.
fn target(f: &Fields<'_>) -> Result<NvmeTarget> {
    let (nqn_key, portals) = if f.get("target_nqn").is_some() || f.get("portals").is_some() {
        ("target_nqn", current_portals(f)?)
    } else {
        ("nqn", vec![legacy_portal(f)?])
    };
    let nqn = f.parse_req::<Nqn>(nqn_key)?;
    let uuid =
        match f.str_opt("vol_uuid")? {
            Some(u) => Some(normalize_uuid(u).ok_or_else(|| {
                Error::invalid(f.name("vol_uuid"), format!("{u:?} is not a UUID"))
            })?),
            None => None,
        };
    let nguid = match f.str_opt("volume_nguid")? {
        Some(g) => Some(normalize_nguid(g).ok_or_else(|| {
            Error::invalid(
                f.name("volume_nguid"),
                format!("{g:?} is not a 32-hex-digit NGUID"),
            )
        })?),
        None => None,
    };
    let nsid = match f.u64_opt("ns_id")? {
        Some(n) if n >= 1 && n < u64::from(u32::MAX) => Some(n as u32),
        Some(n) => {
            return Err(Error::invalid(
                f.name("ns_id"),
                format!("{n} is not a namespace id"),
            ))
        }
        None => None,
    };
    Ok(NvmeTarget {
        nqn,
        portals,
        namespace: NamespaceId { uuid, nguid, nsid },
    })
}

fn current_portals(f: &Fields<'_>) -> Result<Vec<NvmePortal>> {
    let list = f
        .list_opt("portals")?
        .ok_or_else(|| Error::invalid(f.name("portals"), "missing"))?;
    if list.is_empty() {
        return Err(Error::invalid(f.name("portals"), "empty list"));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let name = format!("{}[{i}]", f.name("portals"));
        let triple = p
            .as_array()
            .filter(|a| a.len() == 3)
            .ok_or_else(|| Error::invalid(&name, "expected [address, port, transport]"))?;
        let address = triple[0]
            .as_str()
            .ok_or_else(|| Error::invalid(&name, "address is not a string"))?;
        let port = as_u64(&triple[1]).map_err(|r| Error::invalid(&name, format!("port: {r}")))?;
        let transport =
            NvmeTransport::from_connection_info(&name, Some(&triple[2]).filter(|v| !v.is_null()));
        out.push(portal(&name, address, port, transport)?);
    }
    Ok(out)
}

fn legacy_portal(f: &Fields<'_>) -> Result<NvmePortal> {
    let address = f.str_req("target_portal")?;
    let port = f
        .u64_opt("target_port")?
        .ok_or_else(|| Error::invalid(f.name("target_port"), "missing"))?;
    let transport =
        NvmeTransport::from_connection_info(&f.name("transport_type"), f.get("transport_type"));
    portal(&f.name("target_portal"), address, port, transport)
}

fn portal(field: &str, address: &str, port: u64, transport: NvmeTransport) -> Result<NvmePortal> {
    let address = address.trim().trim_start_matches('[').trim_end_matches(']');
    let valid = address.parse::<std::net::IpAddr>().is_ok()
        || crate::model::ids::Portal::new(address, 1).is_ok();
    if !valid {
        return Err(Error::invalid(
            field,
            format!("{address:?} is not an address"),
        ));
    }
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| Error::invalid(field, format!("port {port} is not 1-65535")))?;
    Ok(NvmePortal {
        address: address.to_string(),
        port,
        transport,
    })
}

/// Lower-case 8-4-4-4-12 form, or `None` when `s` is no UUID.
pub(crate) fn normalize_uuid(s: &str) -> Option<String> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(crate::model::ids::uuid_from_hex(&hex))
}

/// 32 lower-case hex digits, or `None`.
pub(crate) fn normalize_nguid(s: &str) -> Option<String> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    (hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use crate::error::Error;
    use crate::model::connection::ConnectionInfo;
    use serde_json::json;

    const NQN: &str = "nqn.2014-08.org.hostbrick:vm1";

    fn parse(data: serde_json::Value) -> crate::Result<ConnectionInfo> {
        ConnectionInfo::from_value(&json!({"driver_volume_type": "NVMEOF", "data": data}))
    }

    fn field_of(e: Error) -> String {
        match e {
            Error::InvalidConnectionInfo { field, .. } => field,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn current_shape() {
        let ci = parse(json!({
            "target_nqn": NQN,
            "portals": [["127.0.0.1", "4420", "tcp"], ["10.0.0.2", 4420, "RoCEv2"]],
            "vol_uuid": "3FA85F64-5717-4562-B3FC-2C963F66AFA6",
            "volume_nguid": "3fa85f6457174562b3fc2c963f66afa6",
            "ns_id": 2, "host_nqn": "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "volume_id": "v1", "discard": true, "access_mode": "ro", "unknown": 1
        }))
        .unwrap();
        let p = ci.nvme().unwrap();
        assert_eq!(p.target.portals.len(), 2);
        assert_eq!(p.target.portals[1].transport, super::NvmeTransport::Rdma);
        assert_eq!(
            p.target.namespace.uuid.as_deref(),
            Some("3fa85f64-5717-4562-b3fc-2c963f66afa6")
        );
        assert_eq!(p.target.namespace.nsid, Some(2));
        assert!(p.discard);
        assert_eq!(p.volume_key(), "volume-v1");
    }

    #[test]
    fn nvme_is_an_alias_of_nvmeof() {
        // os-brick's connector factory maps driver_volume_type NVME to its NVMe-oF connector.
        for name in ["NVME", "nvme", "NVMeOF"] {
            let ci = ConnectionInfo::from_value(&json!({"driver_volume_type": name, "data": {
                "target_nqn": NQN, "portals": [["127.0.0.1", 4420, "tcp"]]}}))
            .unwrap();
            assert_eq!(ci.protocol(), crate::Protocol::NvmeOf, "{name}");
            assert!(ci.nvme().is_some(), "{name}");
        }
    }

    #[test]
    fn transports_map_as_os_brick_does() {
        use super::NvmeTransport::{Rdma, Tcp};
        // os-brick's Portal: 'rdma' and 'RoCEv2' are RDMA, anything else TCP (no refusal).
        let cases = [
            (json!("rdma"), Rdma),
            (json!("RoCEv2"), Rdma),
            (json!("RDMA"), Rdma),
            (json!("roce"), Rdma),
            (json!("tcp"), Tcp),
            (json!("TCP"), Tcp),
            (json!("fc"), Tcp),
            (json!("iwarp"), Tcp),
            (json!(""), Tcp),
            (json!(7), Tcp),
            (json!(null), Tcp),
        ];
        for (t, want) in cases {
            let current = parse(json!({"target_nqn": NQN, "portals": [["127.0.0.1", 4420, t]]}))
                .unwrap_or_else(|e| panic!("portals {t}: {e}"));
            assert_eq!(
                current.nvme().unwrap().target.portals[0].transport,
                want,
                "portals {t}"
            );
            let legacy = parse(json!({"nqn": NQN, "transport_type": t, "target_portal": "127.0.0.1", "target_port": 4420}))
                .unwrap_or_else(|e| panic!("transport_type {t}: {e}"));
            assert_eq!(
                legacy.nvme().unwrap().target.portals[0].transport,
                want,
                "transport_type {t}"
            );
        }
        // The legacy shape without transport_type is TCP.
        let ci =
            parse(json!({"nqn": NQN, "target_portal": "127.0.0.1", "target_port": 4420})).unwrap();
        assert_eq!(ci.nvme().unwrap().target.portals[0].transport, Tcp);
        // What the kernel reports stays strict (the audit skips fc, loop and pcie controllers).
        for k in ["fc", "loop", "pcie"] {
            assert!(k.parse::<super::NvmeTransport>().is_err(), "{k}");
        }
    }

    #[test]
    fn host_nqn_in_either_shape_and_in_replicas() {
        const H: &str = "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427";
        const H2: &str = "nqn.2014-08.org.storage:initiator-2";
        let host = |data| {
            parse(data)
                .unwrap()
                .nvme()
                .unwrap()
                .host_nqn
                .clone()
                .map(|n| n.to_string())
        };
        assert_eq!(
            host(
                json!({"target_nqn": NQN, "portals": [["127.0.0.1", 4420, "tcp"]], "host_nqn": H})
            )
            .as_deref(),
            Some(H)
        );
        assert_eq!(host(json!({"nqn": NQN, "target_portal": "127.0.0.1", "target_port": 4420, "host_nqn": H})).as_deref(), Some(H));
        assert_eq!(
            host(json!({"target_nqn": NQN, "portals": [["127.0.0.1", 4420, "tcp"]]})),
            None
        );
        let r = |h: Option<&str>| {
            let mut v = json!({"target_nqn": NQN, "portals": [["127.0.0.1", 4420, "tcp"]]});
            if let Some(h) = h {
                v["host_nqn"] = json!(h);
            }
            v
        };
        // The replicas' own host_nqn, as os-brick passes each replica's to its connect.
        assert_eq!(
            host(json!({"volume_replicas": [r(Some(H2)), r(Some(H2))], "alias": "a"})).as_deref(),
            Some(H2)
        );
        assert_eq!(
            host(json!({"volume_replicas": [r(None), r(Some(H2))], "alias": "a"})).as_deref(),
            Some(H2)
        );
        assert_eq!(
            host(json!({"volume_replicas": [r(Some(H2))], "host_nqn": H, "alias": "a"})).as_deref(),
            Some(H2)
        );
        // None on the replicas: the one beside them.
        assert_eq!(
            host(json!({"volume_replicas": [r(None), r(None)], "host_nqn": H, "alias": "a"}))
                .as_deref(),
            Some(H)
        );
    }

    #[test]
    fn cacheable_and_device_path_are_tolerated() {
        let base = || json!({"target_nqn": NQN, "portals": [["127.0.0.1", 4420, "tcp"]]});
        for (cacheable, device_path, want) in [
            (json!(true), json!("/dev/nvme0n1"), Some("/dev/nvme0n1")),
            (json!(false), json!(null), None),
            (json!("yes"), json!(""), None),
            (json!(null), json!(3), None),
        ] {
            let mut data = base();
            data["cacheable"] = cacheable.clone();
            data["device_path"] = device_path.clone();
            let ci = parse(data).unwrap_or_else(|e| panic!("{cacheable} {device_path}: {e}"));
            let p = ci.nvme().unwrap();
            assert_eq!(
                p.device_path.as_deref(),
                want.map(std::path::Path::new),
                "{device_path}"
            );
        }
    }

    /// Runs `f` and returns what it logged at WARN and above.
    fn warnings(f: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || buf.clone())
            .finish();
        tracing::subscriber::with_default(sub, f);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn an_unknown_transport_is_a_warning() {
        let logged = warnings(|| {
            parse(json!({"target_nqn": NQN, "portals": [["127.0.0.1", 4420, "fc\nforged"]]}))
                .unwrap();
        });
        assert!(logged.contains("unknown NVMe-oF transport"), "{logged}");
        assert!(logged.contains("data.portals[0]"), "{logged}");
        // The value is quoted, so a newline in it cannot forge a log line.
        assert!(logged.contains(r#""fc\nforged""#), "{logged}");
        for known in ["tcp", "rdma", "RoCEv2"] {
            let logged = warnings(|| {
                parse(json!({"nqn": NQN, "transport_type": known, "target_portal": "127.0.0.1", "target_port": 4420})).unwrap();
            });
            assert_eq!(logged, "", "{known}");
        }
    }

    #[test]
    fn legacy_shape() {
        let ci = parse(json!({"nqn": NQN, "transport_type": "tcp", "target_portal": "127.0.0.1", "target_port": 4420})).unwrap();
        let p = ci.nvme().unwrap();
        assert_eq!(p.target.nqn.as_str(), NQN);
        assert_eq!(p.target.portals[0].port, 4420);
        assert!(p.target.namespace.is_empty());
    }

    #[test]
    fn replicas() {
        let r = |u: &str| json!({"target_nqn": NQN, "portals": [["127.0.0.1", 4420, "tcp"]], "vol_uuid": u});
        let ci = parse(json!({
            "volume_replicas": [r("11111111-1111-1111-1111-111111111111"), r("22222222-2222-2222-2222-222222222222")],
            "replica_count": 2, "alias": "raid-v1"
        }))
        .unwrap();
        let p = ci.nvme().unwrap();
        assert_eq!(p.copies().len(), 2);
        assert_eq!(p.alias.as_deref(), Some("raid-v1"));
    }

    #[test]
    fn nqns_cannot_splice_fabrics_options() {
        use super::Nqn;
        for ok in [
            NQN,
            "nqn.2014-08.org.nvmexpress.discovery",
            "nqn.2014-08.org.nvmexpress:uuid:f850ea3c-15e3-45a0-95e9-779efe7dbc3b",
            "nqn.2016-06.io.spdk:cnode1",
            "nqn.1992-08.com.netapp:sn.0123456789abcdef:subsystem.vol_1",
            "nqn.2014-08.org.hostbrick:vm1:x.y-z_\u{e9}",
        ] {
            assert!(ok.parse::<Nqn>().is_ok(), "{ok}");
        }
        for bad in [
            // libnvme writes "nqn=<nqn>,transport=...,hostnqn=..." to /dev/nvme-fabrics.
            "nqn.2014-08.org.hostbrick:vm1,hostnqn=nqn.2014-08.org.evil:h",
            "nqn.2014-08.org.hostbrick:vm1,ctrl_loss_tmo=-1",
            "nqn.2014-08.org.hostbrick:a=b",
            "nqn.2014-08.org.hostbrick:a\u{0}",
            "nqn.2014-08.org.hostbrick:a\n",
            "nqn.2014-08.org.hostbrick:a\u{85}",
            "nqn.2014-08.org.hostbrick:a\u{3000}b",
            "nqn.2014-08.org.hostbrick:../../x",
            "nqn.2014-08.org..hostbrick:vm1",
            "nqn.2014-08.org.-x:vm1",
            "nqn.2014-08.org.nvmexpress:uuid:",
            "nqn.2014-08.org.nvmexpress:uuid:h",
            "nqn.2014-08.org.nvmexpress:uuid:f850ea3c-15e3-45a0-95e9-779efe7dbc3b:x",
        ] {
            assert!(bad.parse::<Nqn>().is_err(), "{bad:?}");
        }
        let e = parse(json!({"target_nqn": "nqn.2014-08.org.hostbrick:v,hostnqn=x", "portals": [["127.0.0.1", 4420, "tcp"]]}))
            .unwrap_err();
        assert_eq!(field_of(e), "data.target_nqn");
    }

    #[test]
    fn md_aliases_stay_under_dev_md() {
        let r = |u: &str| json!({"target_nqn": NQN, "portals": [["127.0.0.1", 4420, "tcp"]], "vol_uuid": u});
        let with = |alias: &str| {
            parse(json!({
                "volume_replicas": [r("11111111-1111-1111-1111-111111111111"), r("22222222-2222-2222-2222-222222222222")],
                "alias": alias
            }))
        };
        for ok in [
            "raid-v1",
            "vol_1.r",
            "a",
            "0123456789abcdef0123456789abcdef",
        ] {
            assert!(with(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-x",
            "--stop",
            "a/b",
            "../sda",
            "a b",
            "a\u{0}",
            "r\u{e9}plica",
            "0123456789abcdef0123456789abcdef0",
        ] {
            assert_eq!(field_of(with(bad).unwrap_err()), "data.alias", "{bad:?}");
        }
    }

    #[test]
    fn bad_properties_name_the_field() {
        let ok_portals = json!([["127.0.0.1", 4420, "tcp"]]);
        let cases = [
            (json!({"portals": ok_portals}), "data.target_nqn"),
            (
                json!({"target_nqn": "iqn.2010-10.x:y", "portals": ok_portals}),
                "data.target_nqn",
            ),
            (json!({"target_nqn": NQN}), "data.portals"),
            (json!({"target_nqn": NQN, "portals": []}), "data.portals"),
            (
                json!({"target_nqn": NQN, "portals": [["127.0.0.1", 4420]]}),
                "data.portals[0]",
            ),
            (
                json!({"target_nqn": NQN, "portals": [["127.0.0.1", 0, "tcp"]]}),
                "data.portals[0]",
            ),
            (
                json!({"target_nqn": NQN, "portals": [["not an address!", 1, "tcp"]]}),
                "data.portals[0]",
            ),
            (
                json!({"target_nqn": NQN, "portals": ok_portals, "vol_uuid": "xyz"}),
                "data.vol_uuid",
            ),
            (
                json!({"target_nqn": NQN, "portals": ok_portals, "volume_nguid": "12"}),
                "data.volume_nguid",
            ),
            (
                json!({"target_nqn": NQN, "portals": ok_portals, "ns_id": 0}),
                "data.ns_id",
            ),
            (
                json!({"nqn": NQN, "target_portal": "127.0.0.1"}),
                "data.target_port",
            ),
            (
                json!({"volume_replicas": [{"target_nqn": NQN, "portals": ok_portals}, {"target_nqn": NQN, "portals": ok_portals}]}),
                "data.alias",
            ),
            (
                json!({"volume_replicas": [{"target_nqn": NQN}], "alias": "a"}),
                "data.volume_replicas[0].portals",
            ),
            (
                json!({"volume_replicas": [{"target_nqn": NQN, "portals": ok_portals}], "replica_count": 3}),
                "data.replica_count",
            ),
            (
                json!({"target_nqn": NQN, "portals": ok_portals, "host_nqn": "iqn.1994-05.com.redhat:h"}),
                "data.host_nqn",
            ),
            (
                json!({"target_nqn": NQN, "portals": ok_portals, "host_nqn": "nqn.2014-08.org.h:a,hostid=x"}),
                "data.host_nqn",
            ),
            (
                json!({"target_nqn": NQN, "portals": ok_portals, "host_nqn": 5}),
                "data.host_nqn",
            ),
            (
                json!({"volume_replicas": [{"target_nqn": NQN, "portals": ok_portals, "host_nqn": "nqn.x"}], "alias": "a"}),
                "data.volume_replicas[0].host_nqn",
            ),
            (
                json!({"volume_replicas": [
                    {"target_nqn": NQN, "portals": ok_portals, "host_nqn": "nqn.2014-08.org.h:a"},
                    {"target_nqn": NQN, "portals": ok_portals, "host_nqn": "nqn.2014-08.org.h:b"}], "alias": "a"}),
                "data.volume_replicas[1].host_nqn",
            ),
        ];
        for (data, want) in cases {
            let text = data.to_string();
            assert_eq!(field_of(parse(data).unwrap_err()), want, "{text}");
        }
    }
}
