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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageSpec {
    /// The pool.
    pub pool: String,
    /// The RADOS namespace, when the image lives in one.
    pub namespace: Option<String>,
    /// The image.
    pub image: String,
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && !s.contains(['/', '@'])
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl FromStr for ImageSpec {
    type Err = ParseIdError;
    fn from_str(s: &str) -> std::result::Result<Self, ParseIdError> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || {
            ParseIdError(format!(
                "{s:?} is not an image spec (pool/image or pool/namespace/image)"
            ))
        };
        if !parts.iter().all(|p| valid_part(p)) {
            return Err(bad());
        }
        match parts[..] {
            [pool, image] => Ok(ImageSpec {
                pool: pool.into(),
                namespace: None,
                image: image.into(),
            }),
            [pool, ns, image] => Ok(ImageSpec {
                pool: pool.into(),
                namespace: Some(ns.into()),
                image: image.into(),
            }),
            _ => Err(bad()),
        }
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
    /// Port (as Cinder sends it: a string such as `6789`).
    pub port: String,
}

impl Monitor {
    /// `host:port`, IPv6 bracketed, as Ceph's `-m` takes it.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
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
}

impl RbdProperties {
    pub(crate) fn from_fields(f: &Fields<'_>) -> Result<Self> {
        let image = f.parse_req::<ImageSpec>("name")?;
        let hosts = string_list(f, "hosts")?;
        let ports = string_list(f, "ports")?;
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
            let host = h.trim_start_matches('[').trim_end_matches(']').to_string();
            if host.is_empty()
                || host
                    .chars()
                    .any(|c| c.is_whitespace() || c == ',' || c == '/')
            {
                return Err(Error::invalid(
                    format!("{}[{i}]", f.name("hosts")),
                    format!("{h:?} is not a host"),
                ));
            }
            if p.parse::<u16>().ok().filter(|p| *p != 0).is_none() {
                return Err(Error::invalid(
                    format!("{}[{i}]", f.name("ports")),
                    format!("{p:?} is not a port"),
                ));
            }
            monitors.push(Monitor { host, port: p });
        }
        let auth_enabled = f.bool_opt("auth_enabled")?.unwrap_or(false);
        let auth_username = f
            .str_opt("auth_username")?
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        if let Some(u) = &auth_username {
            if u.chars()
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
        if !valid_part(&cluster_name) {
            return Err(Error::invalid(
                f.name("cluster_name"),
                format!("{cluster_name:?} is not a cluster name"),
            ));
        }
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
            volume_id: f.str_opt("volume_id")?.map(str::to_string),
            discard: f.bool_opt("discard")?.unwrap_or(false),
            access_mode: f.access_mode()?.unwrap_or_default(),
            qos_specs: f.get("qos_specs").cloned(),
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

/// A list of strings (numbers allowed, as Cinder sends ports either way).
fn string_list(f: &Fields<'_>, key: &str) -> Result<Vec<String>> {
    let Some(list) = f.list_opt(key)? else {
        return Ok(Vec::new());
    };
    list.iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s.trim().to_string()),
            Value::Number(_) => as_u64(v)
                .map(|n| n.to_string())
                .map_err(|r| Error::invalid(format!("{}[{i}]", f.name(key)), r)),
            _ => Err(Error::invalid(
                format!("{}[{i}]", f.name(key)),
                "expected a string",
            )),
        })
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
