//! Ceph RBD connection properties: Cinder's `data` for `driver_volume_type: rbd`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::connection::{as_u64, AccessMode, Fields};
use crate::model::ids::ParseIdError;
use crate::model::secret::Secret;

/// An image spec: `pool/image` or `pool/namespace/image`.
///
/// Each part is a Ceph name (`check_ceph_name`): the parts never hold a `/` and are never
/// `.` or `..`, so the udev link `/dev/rbd/<pool>[/<namespace>]/<image>` stays under
/// `/dev/rbd`; none begins with `-`, so the spec is never taken for an option. A snapshot
/// (`@snap`) is refused: hostbrick maps an image's head only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageSpec {
    /// The pool.
    pub pool: String,
    /// The RADOS namespace, when the image lives in one.
    pub namespace: Option<String>,
    /// The image.
    pub image: String,
}

/// The longest pool, namespace, image or cluster name accepted, in bytes.
pub const CEPH_NAME_MAX: usize = 255;

/// Checks one Ceph name (a pool, RADOS namespace, image or cluster name; `what` names it
/// in the error): 1 to `CEPH_NAME_MAX` (255) bytes, not `.` or `..`, not beginning with `-`,
/// without `/`, `@`, whitespace or control characters.
pub fn check_ceph_name(what: &str, s: &str) -> std::result::Result<(), ParseIdError> {
    let bad = |why: &str| Err(ParseIdError(format!("{what} {s:?}: {why}")));
    if s.is_empty() {
        return bad("empty");
    }
    if s.len() > CEPH_NAME_MAX {
        return bad(&format!("longer than {CEPH_NAME_MAX} bytes"));
    }
    if s == "." || s == ".." {
        return bad("a path component, not a name");
    }
    if s.starts_with('-') {
        return bad("begins with '-'");
    }
    if let Some(c) = s
        .chars()
        .find(|c| matches!(c, '/' | '@') || c.is_whitespace() || c.is_control())
    {
        return bad(&format!("{c:?} is not allowed"));
    }
    Ok(())
}

impl FromStr for ImageSpec {
    type Err = ParseIdError;
    fn from_str(s: &str) -> std::result::Result<Self, ParseIdError> {
        let parts: Vec<&str> = s.split('/').collect();
        let (pool, namespace, image) = match parts[..] {
            [pool, image] => (pool, None, image),
            [pool, ns, image] => (pool, Some(ns), image),
            _ => {
                return Err(ParseIdError(format!(
                    "{s:?} is not an image spec (pool/image or pool/namespace/image)"
                )))
            }
        };
        let in_spec = |e: ParseIdError| ParseIdError(format!("image spec {s:?}: {e}"));
        check_ceph_name("pool", pool).map_err(in_spec)?;
        if let Some(ns) = namespace {
            check_ceph_name("namespace", ns).map_err(in_spec)?;
        }
        check_ceph_name("image", image).map_err(in_spec)?;
        Ok(ImageSpec {
            pool: pool.into(),
            namespace: namespace.map(str::to_string),
            image: image.into(),
        })
    }
}

impl fmt::Display for ImageSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}/{}", self.pool, ns, self.image),
            None => write!(f, "{}/{}", self.pool, self.image),
        }
    }
}

impl Serialize for ImageSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A Ceph monitor address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Monitor {
    /// Host name or IP address.
    pub host: String,
    /// Port (as Cinder sends it: a string such as `6789`); `None` when Cinder sends `null`
    /// (Ceph's default ports apply).
    pub port: Option<String>,
}

impl Monitor {
    /// `host:port` (`host` alone without a port), IPv6 bracketed, as Ceph's `-m` takes it.
    pub fn address(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match &self.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }
}

/// The validated properties of an RBD volume. Not `Clone`: it may hold the keyring.
#[derive(Debug, PartialEq)]
#[non_exhaustive]
pub struct RbdProperties {
    /// `name`.
    pub image: ImageSpec,
    /// `hosts` zipped with `ports`.
    pub monitors: Vec<Monitor>,
    /// `auth_enabled`.
    pub auth_enabled: bool,
    /// `auth_username` (the cephx id, without `client.`).
    pub auth_username: Option<String>,
    /// `secret_type` (libvirt's, normally `ceph`).
    pub secret_type: Option<String>,
    /// `secret_uuid` (the libvirt secret holding the key).
    pub secret_uuid: Option<String>,
    /// `cluster_name` (default `ceph`).
    pub cluster_name: String,
    /// `keyring`: the keyring file content, when the service sends it.
    pub keyring: Option<Secret>,
    /// `volume_id`.
    pub volume_id: Option<String>,
    /// `discard`.
    pub discard: bool,
    /// `access_mode`.
    pub access_mode: AccessMode,
    /// `qos_specs`, kept as sent.
    pub qos_specs: Option<Value>,
    /// `do_local_attach`: this call maps the image on the host (true) or hands the
    /// hypervisor a network record (false), whatever the connector's default.
    pub do_local_attach: Option<bool>,
}

impl RbdProperties {
    pub(crate) fn from_fields(f: &Fields<'_>) -> Result<Self> {
        let image = f.parse_req::<ImageSpec>("name")?;
        let hosts = string_list(f, "hosts")?;
        let ports = optional_string_list(f, "ports")?;
        if hosts.len() != ports.len() {
            return Err(Error::invalid(
                f.name("ports"),
                format!(
                    "has {} entries but {} has {}",
                    ports.len(),
                    f.name("hosts"),
                    hosts.len()
                ),
            ));
        }
        let mut monitors = Vec::with_capacity(hosts.len());
        for (i, (h, p)) in hosts.into_iter().zip(ports).enumerate() {
            let host = monitor_host(&h)
                .map_err(|e| Error::invalid(format!("{}[{i}]", f.name("hosts")), e.to_string()))?
                .to_string();
            // Digits only: `u16::from_str` would take a `+` too. `null`: no port.
            let port = p
                .map(|p| {
                    Some(&p)
                        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|p| p.parse::<u16>().ok())
                        .filter(|p| *p != 0)
                        .map(|p| p.to_string())
                        .ok_or_else(|| {
                            Error::invalid(
                                format!("{}[{i}]", f.name("ports")),
                                format!("{p:?} is not a port (1-65535)"),
                            )
                        })
                })
                .transpose()?;
            monitors.push(Monitor { host, port });
        }
        let auth_enabled = f.bool_opt("auth_enabled")?.unwrap_or(false);
        let auth_username = f
            .str_opt("auth_username")?
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        if let Some(u) = &auth_username {
            if u.starts_with('-')
                || u.chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '/')
            {
                return Err(Error::invalid(
                    f.name("auth_username"),
                    format!("{u:?} is not a cephx id"),
                ));
            }
        }
        if auth_enabled && auth_username.is_none() {
            return Err(Error::invalid(
                f.name("auth_username"),
                "missing while auth_enabled is true",
            ));
        }
        let cluster_name = f.str_opt("cluster_name")?.unwrap_or("ceph").to_string();
        check_ceph_name("cluster", &cluster_name)
            .map_err(|e| Error::invalid(f.name("cluster_name"), e.to_string()))?;
        let keyring = match f.get("keyring") {
            None => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(Secret::new(s.clone())),
            Some(_) => return Err(Error::invalid(f.name("keyring"), "expected a string")),
        };
        Ok(RbdProperties {
            image,
            monitors,
            auth_enabled,
            auth_username,
            secret_type: f.str_opt("secret_type")?.map(str::to_string),
            secret_uuid: f.str_opt("secret_uuid")?.map(str::to_string),
            cluster_name,
            keyring,
            volume_id: f.volume_id()?,
            discard: f.bool_opt("discard")?.unwrap_or(false),
            access_mode: f.access_mode()?.unwrap_or_default(),
            qos_specs: f.get("qos_specs").cloned(),
            do_local_attach: f.bool_opt("do_local_attach")?,
        })
    }

    /// The key of this volume's connect/disconnect lock.
    pub fn volume_key(&self) -> String {
        match &self.volume_id {
            Some(id) => format!("volume-{id}"),
            None => format!("rbd-{}", self.image),
        }
    }

    /// The cephx id to use (`admin` when none is given).
    pub fn user(&self) -> &str {
        self.auth_username.as_deref().unwrap_or("admin")
    }
}

/// Checks a monitor host (an entry of `hosts`) and returns it without brackets: a host
/// name of RFC 1123 labels, an IPv4 address, or an IPv6 address, bracketed or not. Nothing
/// else passes (no whitespace, `,`, `;`, `/`, zone id or control character): the hosts are
/// joined with `,` into `mon_host` and `-m`.
pub fn monitor_host(h: &str) -> std::result::Result<&str, ParseIdError> {
    let bad = || {
        Err(ParseIdError(format!(
            "{h:?} is not a host name, an IPv4 address or an IPv6 address"
        )))
    };
    if let Some(inner) = h.strip_prefix('[') {
        return match inner.strip_suffix(']') {
            Some(a) if a.parse::<std::net::Ipv6Addr>().is_ok() => Ok(a),
            _ => bad(),
        };
    }
    if h.contains(':') {
        return if h.parse::<std::net::Ipv6Addr>().is_ok() {
            Ok(h)
        } else {
            bad()
        };
    }
    if h.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(h);
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    // All digits and dots yet no IPv4 address (`999.1.1.1`, `1.2.3`): refused.
    let numeric = h.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if h.len() <= 253 && !numeric && h.split('.').all(label_ok) {
        Ok(h)
    } else {
        bad()
    }
}

/// A list of strings and `null`s (os-brick and Cinder send `null` for a monitor without a
/// port).
fn optional_string_list(f: &Fields<'_>, key: &str) -> Result<Vec<Option<String>>> {
    let Some(list) = f.list_opt(key)? else {
        return Ok(Vec::new());
    };
    list.iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Null => Ok(None),
            v => one_string(f, key, i, v).map(Some),
        })
        .collect()
}

/// Entry `i` of the list `key`: a string, or a number (as Cinder sends ports either way).
fn one_string(f: &Fields<'_>, key: &str, i: usize, v: &Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.trim().to_string()),
        Value::Number(_) => as_u64(v)
            .map(|n| n.to_string())
            .map_err(|r| Error::invalid(format!("{}[{i}]", f.name(key)), r)),
        _ => Err(Error::invalid(
            format!("{}[{i}]", f.name(key)),
            "expected a string",
        )),
    }
}

/// A list of strings (numbers allowed, as Cinder sends ports either way).
fn string_list(f: &Fields<'_>, key: &str) -> Result<Vec<String>> {
    let Some(list) = f.list_opt(key)? else {
        return Ok(Vec::new());
    };
    list.iter()
        .enumerate()
        .map(|(i, v)| one_string(f, key, i, v))
        .collect()
}

/// Which kernel path maps the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RbdMapper {
    /// The kernel RBD client (`rbd map`, `/dev/rbdN`).
    #[default]
    Krbd,
    /// The userspace client behind an NBD device (`rbd-nbd map`, `/dev/nbdN`).
    Nbd,
}

impl RbdMapper {
    /// The program that maps and unmaps.
    pub fn program(self) -> &'static str {
        match self {
            RbdMapper::Krbd => "rbd",
            RbdMapper::Nbd => "rbd-nbd",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::connection::ConnectionInfo;
    use serde_json::json;

    fn parse(data: serde_json::Value) -> crate::Result<ConnectionInfo> {
        ConnectionInfo::from_value(&json!({"driver_volume_type": "rbd", "data": data}))
    }

    #[test]
    fn image_specs() {
        let s: ImageSpec = "volumes/ns1/vol-1".parse().unwrap();
        assert_eq!(
            (s.pool.as_str(), s.namespace.as_deref(), s.image.as_str()),
            ("volumes", Some("ns1"), "vol-1")
        );
        assert_eq!(s.to_string(), "volumes/ns1/vol-1");
        for bad in ["", "vol", "a/", "/b", "a/b/c/d", "a/b@snap", "a b/c"] {
            assert!(bad.parse::<ImageSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn image_spec_parts_never_leave_dev_rbd_nor_read_as_options() {
        // `/dev/rbd/<pool>/<image>` of `../sda` is the host's /dev/sda.
        let long = "i".repeat(CEPH_NAME_MAX + 1);
        let too_long = format!("volumes/{long}");
        for bad in [
            "../sda",
            "volumes/..",
            "volumes/.",
            "./vol",
            "volumes/../sda",
            "volumes/ns/..",
            "volumes/../..",
            "volumes/--read-only",
            "-o/vol",
            "volumes/-ns/vol",
            "volumes/vol@snap",
            "vol@umes/vol",
            "volumes/ns@x/vol",
            "volumes/vol\u{0}",
            "volumes/vol\n",
            "volumes/v\u{a0}ol",
            too_long.as_str(),
        ] {
            assert!(bad.parse::<ImageSpec>().is_err(), "{bad:?}");
        }
        for ok in [
            "volumes/volume-1",
            "volumes/ns1/vol.2",
            "a/b..c",
            "p/.hidden",
            "p/i-",
        ] {
            assert!(ok.parse::<ImageSpec>().is_ok(), "{ok:?}");
        }
        match parse(json!({"name": "../sda"})) {
            Err(Error::InvalidConnectionInfo { field, reason }) => {
                assert_eq!(field, "data.name");
                assert!(reason.contains("pool \"..\""), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        for bad in ["-x", "--keyring"] {
            match parse(json!({"name": "p/i", "auth_username": bad})) {
                Err(Error::InvalidConnectionInfo { field, .. }) => {
                    assert_eq!(field, "data.auth_username", "{bad:?}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        for bad in ["..", "-x", "."] {
            match parse(json!({"name": "p/i", "cluster_name": bad})) {
                Err(Error::InvalidConnectionInfo { field, .. }) => {
                    assert_eq!(field, "data.cluster_name", "{bad:?}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn monitor_hosts_are_names_or_addresses() {
        let mons = |hosts: serde_json::Value, ports: serde_json::Value| {
            parse(json!({"name": "p/i", "hosts": hosts, "ports": ports}))
        };
        let addresses = |ci: &ConnectionInfo| -> Vec<String> {
            ci.rbd()
                .unwrap()
                .monitors
                .iter()
                .map(|m| m.address())
                .collect()
        };
        let ci = mons(
            json!(["mon1.example.org", "10.0.0.1", "[2001:db8::1]", "::1"]),
            json!(["6789", 3300, "6789", "3300"]),
        )
        .unwrap();
        let addrs = addresses(&ci);
        assert_eq!(
            addrs,
            [
                "mon1.example.org:6789",
                "10.0.0.1:3300",
                "[2001:db8::1]:6789",
                "[::1]:3300"
            ]
        );
        for bad in [
            "",
            "a b",
            "a,b",
            "a;b",
            "a/b",
            "a\u{0}",
            "a\nb",
            "-m",
            "host-.x",
            "a..b",
            "999.1.1.1",
            "[10.0.0.1]",
            "[::1",
            "::1]",
            "fe80::1%eth0",
            "mon_1",
        ] {
            match mons(json!([bad]), json!(["6789"])) {
                Err(Error::InvalidConnectionInfo { field, .. }) => {
                    assert_eq!(field, "data.hosts[0]", "{bad:?}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        // os-brick and Cinder send `null` for a monitor without a port.
        let ci = mons(
            json!(["mon1", "::1", "10.0.0.1"]),
            json!([null, null, "3300"]),
        )
        .unwrap();
        let addrs = addresses(&ci);
        assert_eq!(addrs, ["mon1", "[::1]", "10.0.0.1:3300"]);
        for bad in ["0", "65536", "+6789", "-1", "", "67 89"] {
            match mons(json!(["10.0.0.1"]), json!([bad])) {
                Err(Error::InvalidConnectionInfo { field, .. }) => {
                    assert_eq!(field, "data.ports[0]", "{bad:?}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn cinder_shape_with_keyring_hidden() {
        let ci = parse(json!({
            "name": "volumes/volume-1", "hosts": ["10.0.0.1", "10.0.0.2", "::1"], "ports": ["6789", 6789, "3300"],
            "auth_enabled": true, "auth_username": "cinder", "secret_type": "ceph",
            "secret_uuid": "457eb676-33da-42ec-9a8c-9293d545c337", "cluster_name": "ceph",
            "keyring": "[client.cinder]\n\tkey = AQB-SECRET-KEY==\n", "volume_id": "1", "discard": true
        }))
        .unwrap();
        let p = ci.rbd().unwrap();
        assert_eq!(p.monitors.len(), 3);
        assert_eq!(p.monitors[2].address(), "[::1]:3300");
        assert_eq!(p.user(), "cinder");
        assert!(!format!("{ci:?}").contains("AQB-SECRET"));
    }

    #[test]
    fn bad_properties_name_the_field() {
        let cases = [
            (json!({}), "data.name"),
            (json!({"name": "novolume"}), "data.name"),
            (
                json!({"name": "p/i", "hosts": ["a"], "ports": []}),
                "data.ports",
            ),
            (
                json!({"name": "p/i", "hosts": ["a b"], "ports": ["1"]}),
                "data.hosts[0]",
            ),
            (
                json!({"name": "p/i", "hosts": ["a"], "ports": ["99999"]}),
                "data.ports[0]",
            ),
            (
                json!({"name": "p/i", "auth_enabled": true}),
                "data.auth_username",
            ),
            (json!({"name": "p/i", "keyring": 5}), "data.keyring"),
            (
                json!({"name": "p/i", "access_mode": "x"}),
                "data.access_mode",
            ),
        ];
        for (data, want) in cases {
            let text = data.to_string();
            match parse(data) {
                Err(Error::InvalidConnectionInfo { field, .. }) => {
                    assert_eq!(field, want, "{text}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
