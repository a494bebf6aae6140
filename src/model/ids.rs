//! Typed identifiers with validating `FromStr`: IQN, portal, SCSI address, WWID.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIdError(pub String);

impl fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseIdError {}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Formats 32 hex digits as a lower-case 8-4-4-4-12 UUID.
pub(crate) fn uuid_from_hex(hex: &str) -> String {
    let h = hex.to_ascii_lowercase();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// An iSCSI qualified name: `iqn.YYYY-MM.reversed.domain[:id]`, `eui.` + 16 hex digits,
/// or `naa.` + 16 or 32 hex digits (RFC 3720 §3.2.6.3).
///
/// Only the ASCII characters RFC 3722's stringprep profile leaves in a name are accepted:
/// letters (either case), digits, `-`, `.` and `:`, at most 223 bytes. open-iscsi builds
/// node-record paths (`/etc/iscsi/nodes/<iqn>/...`) from the name, so it never holds a `/`,
/// whitespace or a control character; being one path component that begins with `iqn.`,
/// `eui.` or `naa.`, it is never `.`, `..` or an option (`-...`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Iqn(String);

static IQN_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(iqn\.[0-9]{4}-[0-9]{2}(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+(:[a-z0-9.:-]+)?|eui\.[0-9a-f]{16}|naa\.([0-9a-f]{16}|[0-9a-f]{32}))$",
    )
    .expect("static regex")
});

impl Iqn {
    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Iqn {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > 223 {
            return Err(ParseIdError(format!(
                "iSCSI name is {} bytes long, the limit is 223",
                s.len()
            )));
        }
        // Checked before the (case-insensitive, hence Unicode-folding) pattern: the Kelvin
        // sign folds to `k`, and only ASCII may pass.
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':')))
        {
            return Err(ParseIdError(format!(
                "{s:?} is not an iSCSI name: {c:?} is not allowed (letters, digits, '-', '.', ':')"
            )));
        }
        if IQN_RE.is_match(s) {
            Ok(Iqn(s.to_string()))
        } else {
            Err(ParseIdError(format!(
                "{s:?} is not an iSCSI name (iqn.YYYY-MM.domain[:id], eui.<16 hex>, naa.<16|32 hex>)"
            )))
        }
    }
}

impl fmt::Display for Iqn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

serde_via_str!(Iqn);

/// A network portal: host (IPv4, bracketed IPv6 or DNS name) and TCP port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Portal {
    host: String,
    port: u16,
}

impl Portal {
    /// Makes a portal from parts.
    pub fn new(host: impl Into<String>, port: u16) -> Result<Self, ParseIdError> {
        let host = host.into();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        validate_host(&host)?;
        Ok(Portal { host, port })
    }

    /// Parses `host[:port]`, using `default_port` when none is given.
    pub fn parse_with_default(s: &str, default_port: u16) -> Result<Self, ParseIdError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ParseIdError("empty portal".into()));
        }
        // Cinder drivers sometimes append the target portal group tag: "ip:port,tpgt".
        let s = s.split(',').next().unwrap_or(s);
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, tail) = rest
                .split_once(']')
                .ok_or_else(|| ParseIdError(format!("{s:?}: unclosed '[' in IPv6 portal")))?;
            match tail {
                "" => (h, None),
                t => (
                    h,
                    Some(t.strip_prefix(':').ok_or_else(|| {
                        ParseIdError(format!("{s:?}: expected ':port' after ']'"))
                    })?),
                ),
            }
        } else if s.matches(':').count() > 1 {
            // A bare IPv6 address without port.
            (s, None)
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| ParseIdError(format!("{s:?}: port {p:?} is not 1-65535")))?,
        };
        Portal::new(host, port)
    }

    /// The host part (without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True when the host is an IPv6 address.
    pub fn is_ipv6(&self) -> bool {
        self.host.contains(':')
    }
}

fn validate_host(host: &str) -> Result<(), ParseIdError> {
    static HOST_RE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^([0-9A-Za-z]([0-9A-Za-z_-]*[0-9A-Za-z])?)(\.[0-9A-Za-z]([0-9A-Za-z_-]*[0-9A-Za-z])?)*\.?$")
            .expect("static regex")
    });
    if host.is_empty() {
        return Err(ParseIdError("empty host in portal".into()));
    }
    if host.contains(':') {
        // A link-local address may carry its zone: `fe80::1%eth0` (an interface name or index).
        let (addr, zone) = match host.split_once('%') {
            Some((a, z)) => (a, Some(z)),
            None => (host, None),
        };
        let zone_ok = zone.is_none_or(|z| {
            !z.is_empty()
                && z.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        });
        if addr.parse::<std::net::Ipv6Addr>().is_err() || !zone_ok {
            return Err(ParseIdError(format!("{host:?} is not an IPv6 address")));
        }
        return Ok(());
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() || HOST_RE.is_match(host) {
        // Reject things like "999.1.1.1" that look numeric but are no address.
        if host.chars().all(|c| c.is_ascii_digit() || c == '.')
            && host.parse::<std::net::Ipv4Addr>().is_err()
        {
            return Err(ParseIdError(format!("{host:?} is not an IPv4 address")));
        }
        Ok(())
    } else {
        Err(ParseIdError(format!(
            "{host:?} is not a host name or address"
        )))
    }
}

impl FromStr for Portal {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Portal::parse_with_default(s, 3260)
    }
}

impl fmt::Display for Portal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ipv6() {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

serde_via_str!(Portal);

/// A SCSI address: host, channel, target id and LUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hctl {
    /// SCSI host number (`hostN`).
    pub host: u32,
    /// Channel (bus).
    pub channel: u32,
    /// Target id.
    pub target: u32,
    /// Logical unit number.
    pub lun: u64,
}

impl FromStr for Hctl {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseIdError(format!("{s:?} is not a SCSI address H:C:T:L"));
        let mut it = s.split(':');
        let mut next = || it.next().ok_or_else(bad);
        let host = next()?.parse().map_err(|_| bad())?;
        let channel = next()?.parse().map_err(|_| bad())?;
        let target = next()?.parse().map_err(|_| bad())?;
        let lun = next()?.parse().map_err(|_| bad())?;
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(Hctl {
            host,
            channel,
            target,
            lun,
        })
    }
}

impl fmt::Display for Hctl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.host, self.channel, self.target, self.lun
        )
    }
}

serde_via_str!(Hctl);

/// A SCSI device's world-wide identifier in udev's form (`ID_SERIAL`, the dm-multipath name),
/// e.g. `36001405d27e5d898829468b90ce4ef8c` for the sysfs `naa.6001405d27e5d898829468b90ce4ef8c`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Wwid(String);

impl Wwid {
    /// Maps the kernel's `device/wwid` attribute (`naa.`, `eui.`, `t10.` designators) to
    /// udev's form, the way udev's SCSI rules and os-brick do: `t10.` → `1`, `eui.` → `2`,
    /// `naa.` → `3`, any other 4-character designator → `8`. A `/` or control character
    /// (which a vendor's T10 id may hold, and a map name cannot) becomes `_`, as udev
    /// writes it, so the result is always a valid [`Wwid`].
    pub fn from_sysfs(raw: &str) -> Result<Self, ParseIdError> {
        let raw = raw.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        if raw.len() <= 4 || !raw.is_char_boundary(4) {
            return Err(ParseIdError(format!("{raw:?} is not a sysfs wwid")));
        }
        let (designator, rest) = raw.split_at(4);
        let prefix = match designator {
            "t10." => '1',
            "eui." => '2',
            "naa." => '3',
            _ => '8',
        };
        let rest: String = rest
            .chars()
            .map(|c| if c == '/' || c.is_control() { '_' } else { c })
            .collect();
        Ok(Wwid(format!("{prefix}{rest}")))
    }

    /// The WWID as udev and multipath show it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Wwid {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.chars().any(|c| c.is_control() || c == '/') {
            return Err(ParseIdError(format!("{s:?} is not a WWID")));
        }
        Ok(Wwid(s.to_string()))
    }
}

impl fmt::Display for Wwid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

serde_via_str!(Wwid);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iqn_table() {
        for ok in [
            "iqn.2003-01.org.linux-iscsi.host:sn.1234",
            "iqn.2010-10.org.openstack:volume-00000001",
            "IQN.1993-08.org.debian:01:abcdef",
            "eui.02004567A425678D",
            "naa.52004567BA64678D",
            "naa.6001405d27e5d898829468b90ce4ef8c",
        ] {
            assert!(ok.parse::<Iqn>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "iqn",
            "iqn.2003.org.x",
            "iqn.2003-01",
            "iqn.2003-01.org.x:has space",
            "eui.123",
            "naa.xyz",
            "target1",
        ] {
            assert!(bad.parse::<Iqn>().is_err(), "{bad}");
        }
    }

    #[test]
    fn iqn_refuses_what_would_leave_a_node_record_directory() {
        // open-iscsi keeps node records at /etc/iscsi/nodes/<iqn>/<portal>,<tpgt>,<iface>.
        for bad in [
            "iqn.2003-01.org.x:a/../../../etc",
            "iqn.2003-01.org.x:t/1",
            "iqn.2003-01.org.x:t\\1",
            "iqn.2003-01.org.x:t\n",
            "iqn.2003-01.org.x:t\u{0}",
            "iqn.2003-01.org.x:t,1",
            "iqn.2003-01.org.x:t=1",
            "iqn.2003-01.org.x:t_1",
            "iqn.2003-01.org.x:t\u{e9}",
            // The Kelvin sign folds to `k` in a case-insensitive match.
            "iqn.2003-01.org.\u{212a}:t",
            "iqn.2003-01.org.x:\u{212a}",
        ] {
            assert!(bad.parse::<Iqn>().is_err(), "{bad:?}");
        }
        let long = format!("iqn.2003-01.org.x:{}", "a".repeat(205));
        assert_eq!(long.len(), 223);
        assert!(long.parse::<Iqn>().is_ok());
        assert!(format!("{long}a").parse::<Iqn>().is_err());
        // What the tests, the VM scenarios and common targets use stays valid.
        for ok in [
            "iqn.2003-01.org.linux-iscsi.hostbrick:single",
            "iqn.2010-10.org.openstack:volume-0001",
            "iqn.1993-08.org.debian:01:host1",
            "iqn.2004-10.com.hostbrick:vm-initiator",
            "iqn.1992-08.com.netapp:sn.0123456789abcdef:vs.3",
            "iqn.2010-06.com.purestorage:flasharray.5c3c3b0d8b2d5d5a",
            "iqn.2003-01.com.redhat.iscsi-gw:iscsi-igw",
        ] {
            assert!(ok.parse::<Iqn>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn portal_table() {
        let cases = [
            ("127.0.0.1:3260", "127.0.0.1", 3260),
            ("10.0.0.5", "10.0.0.5", 3260),
            ("10.0.0.5:3261,1", "10.0.0.5", 3261),
            ("[fe80::1]:3260", "fe80::1", 3260),
            ("[2001:db8::2]", "2001:db8::2", 3260),
            ("2001:db8::2", "2001:db8::2", 3260),
            ("storage.example.com:860", "storage.example.com", 860),
        ];
        for (s, host, port) in cases {
            let p: Portal = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!((p.host(), p.port()), (host, port), "{s}");
        }
        assert_eq!(
            "[fe80::1]:3260".parse::<Portal>().unwrap().to_string(),
            "[fe80::1]:3260"
        );
        for bad in [
            "",
            ":3260",
            "1.2.3.4:0",
            "1.2.3.4:99999",
            "1.2.3.4:x",
            "[fe80::1",
            "999.1.1.1",
            "a b:1",
            "[::1]x",
        ] {
            assert!(bad.parse::<Portal>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ipv6_zone_is_an_interface_name() {
        let p: Portal = "[fe80::1%eth0]:3260".parse().unwrap();
        assert_eq!(p.host(), "fe80::1%eth0");
        assert_eq!(p.to_string().parse::<Portal>(), Ok(p));
        // Found by the `iscsiadm_output` fuzz target: anything after `%` was taken as the
        // zone, so this parsed to a host "0::%]:3260" whose portal does not parse back.
        for bad in [
            "0::%]:3260",
            "fe80::1%",
            "[fe80::1%]:3260",
            "fe80::1%a b",
            "fe80::1%a%b",
        ] {
            assert!(bad.parse::<Portal>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hctl_round_trip() {
        let h: Hctl = "2:0:1:5".parse().unwrap();
        assert_eq!((h.host, h.channel, h.target, h.lun), (2, 0, 1, 5));
        assert_eq!(h.to_string(), "2:0:1:5");
        for bad in ["", "1:2:3", "1:2:3:4:5", "a:0:0:0", "-1:0:0:0"] {
            assert!(bad.parse::<Hctl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn wwid_from_sysfs_designators() {
        let cases = [
            (
                "naa.6001405d27e5d898829468b90ce4ef8c\n",
                "36001405d27e5d898829468b90ce4ef8c",
            ),
            ("eui.0025388b71b5e001", "20025388b71b5e001"),
            ("t10.LIO-ORG disk1", "1LIO-ORG disk1"),
            ("xyz.0011", "80011"),
        ];
        for (raw, want) in cases {
            assert_eq!(Wwid::from_sysfs(raw).unwrap().as_str(), want);
        }
        assert!(Wwid::from_sysfs("naa.").is_err());
        assert!(Wwid::from_sysfs("").is_err());
    }

    #[test]
    fn wwid_from_sysfs_is_always_a_valid_wwid() {
        // Found by the `identifiers` fuzz target: a `/` went through into a WWID that
        // names a dm-multipath map and that `Wwid::from_str` rejects.
        let cases = [
            ("volumes/ns1/vol2", "8mes_ns1_vol2"),
            ("t10.HP/COMPAQ disk\u{1}9", "1HP_COMPAQ disk_9"),
        ];
        for (raw, want) in cases {
            let w = Wwid::from_sysfs(raw).unwrap();
            assert_eq!(w.as_str(), want);
            assert_eq!(w.as_str().parse::<Wwid>(), Ok(w));
        }
    }
}
