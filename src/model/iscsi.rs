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

/// How the storage array numbers its LUNs (`addressing_mode`), which decides the LUN
/// number the kernel uses for the volume (os-brick's `lun_for_addressing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressingMode {
    /// `SAM` (the default): the number is the kernel's LUN as it is.
    #[default]
    Sam,
    /// `transparent`: as `SAM`, for arrays that put the addressing method in the number.
    Transparent,
    /// `SAM2`: peripheral addressing below 256, flat-space addressing from 256 on.
    Sam2,
    /// `SAM3-flat`: flat-space addressing for every LUN.
    Sam3Flat,
}

impl AddressingMode {
    /// Flat-space addressing: method `01b` in the top two bits of the 16-bit first level
    /// (SAM-2/3), as the kernel's LUN number shows it.
    pub const FLAT_SPACE: u64 = 0x4000;

    /// The mode named `name`, spelled exactly as os-brick's `SCSI_ADDRESSING_MODES` are.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "SAM" => Some(AddressingMode::Sam),
            "transparent" => Some(AddressingMode::Transparent),
            "SAM2" => Some(AddressingMode::Sam2),
            "SAM3-flat" => Some(AddressingMode::Sam3Flat),
            _ => None,
        }
    }

    /// The mode's name in connection_info.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressingMode::Sam => "SAM",
            AddressingMode::Transparent => "transparent",
            AddressingMode::Sam2 => "SAM2",
            AddressingMode::Sam3Flat => "SAM3-flat",
        }
    }

    /// The LUN number the kernel uses for the array's LUN `lun`: flat-space addressing
    /// adds [`AddressingMode::FLAT_SPACE`] (`SAM3-flat` always, `SAM2` from 256 on).
    /// Flat space holds 14 bits: a larger LUN cannot be addressed that way.
    pub fn kernel_lun(self, lun: u64) -> std::result::Result<u64, String> {
        let flat = match self {
            AddressingMode::Sam | AddressingMode::Transparent => false,
            AddressingMode::Sam2 => lun >= 256,
            AddressingMode::Sam3Flat => true,
        };
        if !flat {
            return Ok(lun);
        }
        if lun >= Self::FLAT_SPACE {
            return Err(format!(
                "LUN {lun} cannot be addressed in flat space (addressing_mode {}, at most {})",
                self.as_str(),
                Self::FLAT_SPACE - 1
            ));
        }
        Ok(lun | Self::FLAT_SPACE)
    }

    fn from_fields(f: &Fields<'_>) -> Result<Self> {
        let field = f.name("addressing_mode");
        match f.get("addressing_mode") {
            None | Some(serde_json::Value::Null) => Ok(AddressingMode::default()),
            Some(serde_json::Value::String(s)) if s.is_empty() => Ok(AddressingMode::default()),
            Some(serde_json::Value::String(s)) => Self::from_name(s).ok_or_else(|| {
                Error::invalid(
                    field,
                    format!("{s:?} is not an addressing mode (SAM, transparent, SAM2, SAM3-flat)"),
                )
            }),
            Some(_) => Err(Error::invalid(field, "expected a string")),
        }
    }
}

impl fmt::Display for AddressingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    /// Every path, in the order to try them: the zipped `target_portals`/`target_iqns`
    /// lists when both are present, with `target_luns` or (when that is missing or empty)
    /// `target_lun` for every one, else the single `target_portal`/`target_iqn`/
    /// `target_lun` (LUN 0 by default). Each LUN is the kernel's number for it, after
    /// [`IscsiProperties::addressing_mode`].
    pub targets: Vec<IscsiTarget>,
    /// True when the targets came from the `target_portals`/`target_iqns` lists; without
    /// them a multipath connect asks sendtargets discovery for the other portals.
    pub listed_targets: bool,
    /// `addressing_mode`, already applied to every target's LUN.
    pub addressing_mode: AddressingMode,
    /// `enforce_multipath`: with multipath on, this connect fails rather than fall back to
    /// a single path (and fails at once when multipathd is not running).
    pub enforce_multipath: bool,
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
        let addressing_mode = AddressingMode::from_fields(f)?;
        let targets = targets(f, addressing_mode)?;
        let listed_targets = f.get("target_portals").is_some() && f.get("target_iqns").is_some();
        let auth = chap(f, "auth_method", "auth_username", "auth_password")?;
        let discovery_auth = chap(
            f,
            "discovery_auth_method",
            "discovery_auth_username",
            "discovery_auth_password",
        )?;
        Ok(IscsiProperties {
            targets,
            listed_targets,
            addressing_mode,
            enforce_multipath: f.bool_opt("enforce_multipath")?.unwrap_or(false),
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

    /// A copy with its own copies of the passwords, for the threads of a multipath connect
    /// that outlive the call (paths still logging in when it returns).
    pub(crate) fn duplicate(&self) -> IscsiProperties {
        let chap = |c: &Option<ChapCredentials>| {
            c.as_ref().map(|c| ChapCredentials {
                username: c.username.clone(),
                password: c.password.duplicate(),
            })
        };
        IscsiProperties {
            targets: self.targets.clone(),
            listed_targets: self.listed_targets,
            addressing_mode: self.addressing_mode,
            enforce_multipath: self.enforce_multipath,
            volume_id: self.volume_id.clone(),
            auth: chap(&self.auth),
            discovery_auth: chap(&self.discovery_auth),
            target_discovered: self.target_discovered,
            access_mode: self.access_mode,
            discard: self.discard,
            encrypted: self.encrypted,
            qos_specs: self.qos_specs.clone(),
        }
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

/// Where the LUNs of listed targets come from.
#[derive(Clone, Copy)]
enum Luns<'a> {
    /// `target_luns`, one per target.
    Listed(&'a Vec<serde_json::Value>),
    /// `target_lun`, the same for every target.
    Same(u64),
}

fn targets(f: &Fields<'_>, mode: AddressingMode) -> Result<Vec<IscsiTarget>> {
    let kernel_lun = |lun: u64, field: String| {
        mode.kernel_lun(lun)
            .map_err(|reason| Error::invalid(field, reason))
    };
    // As os-brick (`_get_all_targets`): the lists are used when `target_portals` and
    // `target_iqns` are both there; without `target_luns` (or with an empty one) every
    // target gets `target_lun`.
    if let (Some(portals), Some(iqns)) = (f.list_opt("target_portals")?, f.list_opt("target_iqns")?)
    {
        if portals.is_empty() {
            return Err(Error::invalid(f.name("target_portals"), "empty list"));
        }
        let luns = match f.list_opt("target_luns")?.filter(|l| !l.is_empty()) {
            Some(list) => Luns::Listed(list),
            None => Luns::Same(f.u64_opt("target_lun")?.ok_or_else(|| {
                Error::invalid(
                    f.name("target_lun"),
                    "missing (every target uses it when target_luns is not given)",
                )
            })?),
        };
        let listed_len = match luns {
            Luns::Listed(l) => Some(l.len()),
            Luns::Same(_) => None,
        };
        let lens = [
            ("target_iqns", Some(iqns.len())),
            ("target_luns", listed_len),
        ];
        for (key, len) in lens {
            let Some(len) = len else { continue };
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
        for (i, (p, q)) in portals.iter().zip(iqns).enumerate() {
            let item = |key: &str| format!("{}[{i}]", f.name(key));
            let portal = parse_str_item::<Portal>(p, item("target_portals"))?;
            let iqn = parse_str_item::<Iqn>(q, item("target_iqns"))?;
            let (lun, field) = match luns {
                Luns::Same(l) => (l, f.name("target_lun")),
                Luns::Listed(list) => (
                    as_u64(&list[i]).map_err(|r| Error::invalid(item("target_luns"), r))?,
                    item("target_luns"),
                ),
            };
            let lun = kernel_lun(lun, field)?;
            out.push(IscsiTarget { portal, iqn, lun });
        }
        return Ok(out);
    }
    let portal = f.parse_req::<Portal>("target_portal")?;
    let iqn = f.parse_req::<Iqn>("target_iqn")?;
    let lun = kernel_lun(f.u64_opt("target_lun")?.unwrap_or(0), f.name("target_lun"))?;
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

    fn luns_of(data: serde_json::Value) -> Vec<(String, u64)> {
        let ci = parse(data).unwrap();
        ci.iscsi()
            .unwrap()
            .targets
            .iter()
            .map(|t| (t.portal.to_string(), t.lun))
            .collect()
    }

    /// os-brick's `_get_luns`: `target_luns or [target_lun] * len(target_iqns)`.
    #[test]
    fn lists_without_target_luns_use_target_lun_for_every_target() {
        let q = "iqn.2010-10.org.openstack:v";
        let lists = json!({
            "target_portal": "10.0.0.1:3260", "target_iqn": q, "target_lun": 3,
            "target_portals": ["10.0.0.1:3260", "10.0.0.2:3260"],
            "target_iqns": [q, q],
        });
        let want = vec![
            ("10.0.0.1:3260".to_string(), 3),
            ("10.0.0.2:3260".to_string(), 3),
        ];
        assert_eq!(luns_of(lists.clone()), want);
        let mut empty = lists.clone();
        empty["target_luns"] = json!([]);
        assert_eq!(luns_of(empty), want);
        let mut listed = lists.clone();
        listed["target_luns"] = json!([5, 6]);
        assert_eq!(
            luns_of(listed),
            vec![
                ("10.0.0.1:3260".to_string(), 5),
                ("10.0.0.2:3260".to_string(), 6)
            ]
        );
        assert!(parse(lists).unwrap().iscsi().unwrap().listed_targets);
        // Without target_luns os-brick needs target_lun (a KeyError there).
        let e = parse(json!({"target_portals": ["10.0.0.1"], "target_iqns": [q]})).unwrap_err();
        assert_eq!(field_of(e), "data.target_lun");
    }

    /// os-brick's own expectations (`test_lun_for_addressing_*`).
    #[test]
    fn addressing_modes_give_the_kernel_lun() {
        use super::AddressingMode::{self, *};
        let table: &[(AddressingMode, u64, u64)] = &[
            (Sam, 1, 1),
            (Sam, 256, 256),
            (Transparent, 1, 1),
            (Transparent, 256, 256),
            (Sam2, 1, 1),
            (Sam2, 100, 100),
            (Sam2, 255, 255),
            (Sam2, 256, 16640),
            (Sam2, 1010, 17394),
            (Sam3Flat, 0, 16384),
            (Sam3Flat, 100, 16484),
            (Sam3Flat, 256, 16640),
            (Sam3Flat, 1010, 17394),
        ];
        for (mode, lun, want) in table {
            assert_eq!(mode.kernel_lun(*lun), Ok(*want), "{mode} {lun}");
        }
        assert!(Sam2.kernel_lun(16384).is_err());
        assert!(Sam3Flat.kernel_lun(u64::MAX).is_err());
        assert_eq!(Sam.kernel_lun(u64::MAX), Ok(u64::MAX));
    }

    #[test]
    fn addressing_mode_applies_to_every_target_and_refuses_unknown_names() {
        let q = "iqn.2010-10.org.openstack:v";
        let with = |mode: serde_json::Value| {
            json!({
                "target_portal": "10.0.0.1:3260", "target_iqn": q, "target_lun": 256,
                "addressing_mode": mode,
            })
        };
        assert_eq!(
            luns_of(with(json!("SAM2"))),
            vec![("10.0.0.1:3260".into(), 16640)]
        );
        assert_eq!(
            luns_of(with(json!("SAM"))),
            vec![("10.0.0.1:3260".into(), 256)]
        );
        assert_eq!(
            luns_of(with(json!(null))),
            vec![("10.0.0.1:3260".into(), 256)]
        );
        assert_eq!(
            luns_of(with(json!(""))),
            vec![("10.0.0.1:3260".into(), 256)]
        );
        let lists = json!({
            "target_portals": ["10.0.0.1:3260", "10.0.0.2:3260"], "target_iqns": [q, q],
            "target_luns": [0, 300], "addressing_mode": "SAM3-flat",
        });
        assert_eq!(
            luns_of(lists),
            vec![
                ("10.0.0.1:3260".into(), 16384),
                ("10.0.0.2:3260".into(), 16684)
            ]
        );
        // os-brick's `test_lun_for_addressing_bad`, and its spelling "SAM3-flat" only.
        for bad in [
            json!(1),
            json!("SAM3"),
            json!("TRANSPARENT"),
            json!("sam"),
            json!("sam2"),
            json!("SAM3_FLAT"),
        ] {
            let text = bad.to_string();
            assert_eq!(
                field_of(parse(with(bad)).unwrap_err()),
                "data.addressing_mode",
                "{text}"
            );
        }
        let too_big = json!({
            "target_portal": "10.0.0.1:3260", "target_iqn": q, "target_lun": 20000,
            "addressing_mode": "SAM2",
        });
        assert_eq!(field_of(parse(too_big).unwrap_err()), "data.target_lun");
    }

    #[test]
    fn enforce_multipath_is_read() {
        let base =
            json!({"target_portal": "10.0.0.1", "target_iqn": "iqn.2010-10.org.openstack:v"});
        assert!(
            !parse(base.clone())
                .unwrap()
                .iscsi()
                .unwrap()
                .enforce_multipath
        );
        let mut on = base.clone();
        on["enforce_multipath"] = json!(true);
        assert!(parse(on).unwrap().iscsi().unwrap().enforce_multipath);
        let mut bad = base;
        bad["enforce_multipath"] = json!("maybe");
        assert_eq!(field_of(parse(bad).unwrap_err()), "data.enforce_multipath");
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
