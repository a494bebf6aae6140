//! iSCSI connection properties: Cinder's `data` for `driver_volume_type: iscsi`.

use std::fmt;

use crate::error::{Error, Result};
use crate::model::connection::{as_u64, AccessMode, Fields};
use crate::model::ids::{Iqn, ParseIdError, Portal};
use crate::model::secret::Secret;

/// One path to the volume: a portal, a target and a LUN.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct IscsiTarget {
    /// The target portal.
    pub portal: Portal,
    /// The target name.
    pub iqn: Iqn,
    /// The logical unit.
    pub lun: u64,
}

impl fmt::Display for IscsiTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} lun {}", self.portal, self.iqn, self.lun)
    }
}

/// CHAP credentials (`auth_*` or `discovery_auth_*`). Not `Clone`: the password has one
/// owner (see [`Secret`]).
#[derive(Debug, PartialEq, Eq)]
pub struct ChapCredentials {
    /// The user name.
    pub username: String,
    /// The password, never printed.
    pub password: Secret,
}

/// The validated properties of an iSCSI volume. Not `Clone`: it holds the CHAP passwords.
#[derive(Debug, PartialEq)]
#[non_exhaustive]
pub struct IscsiProperties {
    /// Every path, in the order to try them: the zipped `target_portals`/`target_iqns`/
    /// `target_luns` lists when all three are present, else the single `target_portal`/
    /// `target_iqn`/`target_lun` (LUN 0 by default).
    pub targets: Vec<IscsiTarget>,
    /// `volume_id`.
    pub volume_id: Option<String>,
    /// Session CHAP (`auth_method: CHAP`, `auth_username`, `auth_password`).
    pub auth: Option<ChapCredentials>,
    /// Discovery CHAP (`discovery_auth_method`, `discovery_auth_username`,
    /// `discovery_auth_password`).
    pub discovery_auth: Option<ChapCredentials>,
    /// `target_discovered`: the service found the target by sendtargets discovery, so the
    /// host does the same before logging in.
    pub target_discovered: bool,
    /// `access_mode`.
    pub access_mode: AccessMode,
    /// `discard`.
    pub discard: bool,
    /// `encrypted`.
    pub encrypted: bool,
    /// `qos_specs`, kept as sent for the disk builder.
    pub qos_specs: Option<serde_json::Value>,
}

impl IscsiProperties {
    pub(crate) fn from_fields(f: &Fields<'_>) -> Result<Self> {
        let targets = targets(f)?;
        let auth = chap(f, "auth_method", "auth_username", "auth_password")?;
        let discovery_auth = chap(
            f,
            "discovery_auth_method",
            "discovery_auth_username",
            "discovery_auth_password",
        )?;
        Ok(IscsiProperties {
            targets,
            volume_id: f.volume_id()?,
            auth,
            discovery_auth,
            target_discovered: f.bool_opt("target_discovered")?.unwrap_or(false),
            access_mode: f.access_mode()?.unwrap_or_default(),
            discard: f.bool_opt("discard")?.unwrap_or(false),
            encrypted: f.bool_opt("encrypted")?.unwrap_or(false),
            qos_specs: f.get("qos_specs").cloned(),
        })
    }

    /// The first target: the one a single-path attach tries first.
    pub fn primary(&self) -> &IscsiTarget {
        &self.targets[0]
    }

    /// True when sendtargets discovery should run before login.
    pub fn wants_discovery(&self) -> bool {
        self.target_discovered || self.discovery_auth.is_some()
    }

    /// The key of this volume's connect/disconnect lock: the volume id, else the first
    /// target and LUN.
    pub fn volume_key(&self) -> String {
        match &self.volume_id {
            Some(id) => format!("volume-{id}"),
            None => format!(
                "volume-{}-{}-{}",
                self.primary().portal,
                self.primary().iqn,
                self.primary().lun
            ),
        }
    }
}

fn targets(f: &Fields<'_>) -> Result<Vec<IscsiTarget>> {
    let lists = (
        f.list_opt("target_portals")?,
        f.list_opt("target_iqns")?,
        f.list_opt("target_luns")?,
    );
    if let (Some(portals), Some(iqns), Some(luns)) = lists {
        if portals.is_empty() {
            return Err(Error::invalid(f.name("target_portals"), "empty list"));
        }
        for (key, len) in [("target_iqns", iqns.len()), ("target_luns", luns.len())] {
            if len != portals.len() {
                return Err(Error::invalid(
                    f.name(key),
                    format!(
                        "has {len} entries but {} has {}",
                        f.name("target_portals"),
                        portals.len()
                    ),
                ));
            }
        }
        let mut out = Vec::with_capacity(portals.len());
        for (i, ((p, q), l)) in portals.iter().zip(iqns).zip(luns).enumerate() {
            let item = |key: &str| format!("{}[{i}]", f.name(key));
            let portal = parse_str_item::<Portal>(p, item("target_portals"))?;
            let iqn = parse_str_item::<Iqn>(q, item("target_iqns"))?;
            let lun = as_u64(l).map_err(|r| Error::invalid(item("target_luns"), r))?;
            out.push(IscsiTarget { portal, iqn, lun });
        }
        return Ok(out);
    }
    let portal = f.parse_req::<Portal>("target_portal")?;
    let iqn = f.parse_req::<Iqn>("target_iqn")?;
    let lun = f.u64_opt("target_lun")?.unwrap_or(0);
    Ok(vec![IscsiTarget { portal, iqn, lun }])
}

/// A list item that must be a string parsing as `T`; errors name `field`.
fn parse_str_item<T>(v: &serde_json::Value, field: String) -> Result<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match v.as_str() {
        Some(s) => s
            .parse()
            .map_err(|e: T::Err| Error::invalid(field, e.to_string())),
        None => Err(Error::invalid(field, "expected a string")),
    }
}

/// The longest CHAP user name accepted, in bytes.
pub const CHAP_USERNAME_MAX: usize = 256;

/// Checks a CHAP user name (`auth_username`, `discovery_auth_username`), which goes into
/// the node and discovery records (`...auth.username = <name>`): 1 to
/// `CHAP_USERNAME_MAX` (256) printable ASCII characters, none of them whitespace or `=`.
pub fn check_chap_username(u: &str) -> std::result::Result<(), ParseIdError> {
    if u.is_empty() {
        return Err(ParseIdError("empty".into()));
    }
    if u.len() > CHAP_USERNAME_MAX {
        return Err(ParseIdError(format!(
            "the CHAP user name is {} bytes long, the limit is {CHAP_USERNAME_MAX}",
            u.len()
        )));
    }
    if let Some(c) = u.chars().find(|c| !c.is_ascii_graphic() || *c == '=') {
        return Err(ParseIdError(format!(
            "{c:?} is not allowed in a CHAP user name (printable ASCII without whitespace or '=')"
        )));
    }
    Ok(())
}

fn chap(f: &Fields<'_>, method: &str, user: &str, pass: &str) -> Result<Option<ChapCredentials>> {
    let m = f.str_opt(method)?.map(str::trim).unwrap_or("");
    if m.is_empty() || m.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    if !m.eq_ignore_ascii_case("chap") {
        return Err(Error::invalid(
            f.name(method),
            format!("{m:?} is not supported (only CHAP)"),
        ));
    }
    let username = f.str_req(user)?;
    check_chap_username(username).map_err(|e| Error::invalid(f.name(user), e.to_string()))?;
    if let Some(reason) = record_value_problem(username) {
        return Err(Error::invalid(f.name(user), reason));
    }
    // Read the password without ever putting it (or any of it) in an error message.
    let password = match f.get(pass) {
        Some(serde_json::Value::String(s)) => {
            if let Some(reason) = record_value_problem(s) {
                return Err(Error::invalid(f.name(pass), reason));
            }
            Secret::new(s.as_str())
        }
        Some(_) => return Err(Error::invalid(f.name(pass), "expected a string")),
        None => return Err(Error::invalid(f.name(pass), "missing")),
    };
    Ok(Some(ChapCredentials {
        username: username.to_string(),
        password,
    }))
}

/// The longest CHAP user name or password open-iscsi's records hold (`AUTH_STR_MAX_LEN`,
/// 256 bytes with the terminating NUL).
pub(crate) const MAX_CHAP_VALUE: usize = 255;

/// Why `value` cannot be a CHAP user name or password in an open-iscsi record file, if it
/// cannot. The record is `name = value` lines, read back with the line's ends stripped
/// (`idbm_recinfo_config`), so a control character (a newline would start a line of its
/// own) or white space at either end would not come back as written. The reason never
/// quotes the value.
pub(crate) fn record_value_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        Some("empty")
    } else if value.chars().any(char::is_control) {
        Some("has a control character (such as a newline), which open-iscsi's record file cannot hold")
    } else if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
        Some("starts or ends with white space, which open-iscsi's record file does not keep")
    } else if value.len() > MAX_CHAP_VALUE {
        Some("is longer than the 255 bytes open-iscsi's record holds")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::error::Error;
    use crate::model::connection::ConnectionInfo;
    use serde_json::json;

    fn parse(data: serde_json::Value) -> crate::Result<ConnectionInfo> {
        ConnectionInfo::from_value(&json!({"driver_volume_type": "iscsi", "data": data}))
    }

    fn field_of(e: Error) -> String {
        match e {
            Error::InvalidConnectionInfo { field, .. } => field,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn single_target_with_defaults_and_unknown_keys() {
        let ci = parse(json!({
            "target_portal": "10.0.0.2:3260",
            "target_iqn": "iqn.2010-10.org.openstack:volume-1",
            "volume_id": "1",
            "target_discovered": false,
            "some_vendor_key": {"x": 1},
            "encrypted": false
        }))
        .unwrap();
        let p = ci.iscsi().unwrap();
        assert_eq!(p.targets.len(), 1);
        assert_eq!(p.primary().lun, 0);
        assert_eq!(
            p.primary().to_string(),
            "10.0.0.2:3260 iqn.2010-10.org.openstack:volume-1 lun 0"
        );
        assert!(!p.wants_discovery());
        assert_eq!(p.volume_key(), "volume-1");
    }

    #[test]
    fn lists_zip_when_all_three_present() {
        let ci = parse(json!({
            "target_portal": "10.0.0.1:3260",
            "target_iqn": "iqn.2010-10.org.openstack:v",
            "target_lun": 1,
            "target_portals": ["10.0.0.1:3260", "10.0.0.2:3260"],
            "target_iqns": ["iqn.2010-10.org.openstack:v", "iqn.2010-10.org.openstack:v2"],
            "target_luns": [1, "2"]
        }))
        .unwrap();
        let t = &ci.iscsi().unwrap().targets;
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[1].portal.host(), t[1].iqn.as_str(), t[1].lun),
            ("10.0.0.2", "iqn.2010-10.org.openstack:v2", 2)
        );
    }

    #[test]
    fn partial_lists_fall_back_to_the_single_target() {
        let ci = parse(json!({
            "target_portal": "10.0.0.1:3260",
            "target_iqn": "iqn.2010-10.org.openstack:v",
            "target_portals": ["10.0.0.1:3260", "10.0.0.2:3260"]
        }))
        .unwrap();
        assert_eq!(ci.iscsi().unwrap().targets.len(), 1);
    }

    #[test]
    fn bad_properties_name_the_field() {
        let base_iqn = "iqn.2010-10.org.openstack:v";
        let cases = [
            (json!({"target_iqn": base_iqn}), "data.target_portal"),
            (json!({"target_portal": "10.0.0.1:3260"}), "data.target_iqn"),
            (
                json!({"target_portal": "10.0.0.1:99999", "target_iqn": base_iqn}),
                "data.target_portal",
            ),
            (
                json!({"target_portal": "10.0.0.1", "target_iqn": "volume-1"}),
                "data.target_iqn",
            ),
            (
                json!({"target_portal": "10.0.0.1", "target_iqn": base_iqn, "target_lun": -1}),
                "data.target_lun",
            ),
            (
                json!({"target_portals": ["10.0.0.1", "10.0.0.2"], "target_iqns": [base_iqn], "target_luns": [0, 0]}),
                "data.target_iqns",
            ),
            (
                json!({"target_portals": ["10.0.0.1"], "target_iqns": [base_iqn], "target_luns": [0, 1]}),
                "data.target_luns",
            ),
            (
                json!({"target_portals": [], "target_iqns": [], "target_luns": []}),
                "data.target_portals",
            ),
            (
                json!({"target_portals": ["10.0.0.1", 5], "target_iqns": [base_iqn, base_iqn], "target_luns": [0, 1]}),
                "data.target_portals[1]",
            ),
            (
                json!({"target_portal": "10.0.0.1", "target_iqn": base_iqn, "auth_method": "CHAP", "auth_username": "u"}),
                "data.auth_password",
            ),
            (
                json!({"target_portal": "10.0.0.1", "target_iqn": base_iqn, "auth_method": "kerberos"}),
                "data.auth_method",
            ),
            (
                json!({"target_portal": "10.0.0.1", "target_iqn": base_iqn, "access_mode": "rx"}),
                "data.access_mode",
            ),
        ];
        for (data, want) in cases {
            let text = data.to_string();
            assert_eq!(field_of(parse(data).unwrap_err()), want, "{text}");
        }
    }

    #[test]
    fn chap_user_names_are_printable_ascii_without_separators() {
        let base =
            json!({"target_portal": "10.0.0.1", "target_iqn": "iqn.2010-10.org.openstack:v"});
        let with = |method: &str, user: &str, name: &str| {
            let mut d = base.clone();
            let m = d.as_object_mut().unwrap();
            m.insert(method.into(), "CHAP".into());
            m.insert(user.into(), name.into());
            m.insert(user.replace("username", "password"), "pw".into());
            parse(d)
        };
        let long = "u".repeat(super::CHAP_USERNAME_MAX + 1);
        for (method, user) in [
            ("auth_method", "auth_username"),
            ("discovery_auth_method", "discovery_auth_username"),
        ] {
            for ok in ["alice", "user@example.com", "c1nder-01_x"] {
                assert!(with(method, user, ok).is_ok(), "{user} {ok:?}");
            }
            for bad in [
                "",
                "a b",
                "a\tb",
                "a\nnode.session.auth.password = x",
                "a=b",
                "a\u{0}",
                "\u{e9}l\u{e8}ve",
                long.as_str(),
            ] {
                let e = with(method, user, bad).unwrap_err();
                assert_eq!(field_of(e), format!("data.{user}"), "{bad:?}");
            }
        }
    }

    #[test]
    fn chap_password_never_printed() {
        let ci = parse(json!({
            "target_portal": "10.0.0.1", "target_iqn": "iqn.2010-10.org.openstack:v",
            "auth_method": "CHAP", "auth_username": "user", "auth_password": "pa55word",
            "discovery_auth_method": "CHAP", "discovery_auth_username": "du", "discovery_auth_password": "d1sc"
        }))
        .unwrap();
        let dbg = format!("{ci:?}");
        assert!(!dbg.contains("pa55word") && !dbg.contains("d1sc"), "{dbg}");
        let p = ci.iscsi().unwrap();
        assert_eq!(p.auth.as_ref().unwrap().password.expose(), "pa55word");
        assert!(p.wants_discovery());
    }
}
