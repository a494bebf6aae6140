//! Device property sets: the kernel's uevents (a sysfs device's `uevent` file, the properties
//! of a udev monitor event) and udev's database record of a device it has processed
//! (`/run/udev/data/b<major>:<minor>`).
//!
//! Both parsers are pure and strict: a malformed line is an error naming it, never skipped, so
//! a waiter never acts on half a record.

use std::collections::BTreeMap;
use std::fmt;

/// What happened to a device, from a uevent's `ACTION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UeventAction {
    /// The device appeared.
    Add,
    /// The device went away.
    Remove,
    /// Something about the device changed (size, media, a rescan).
    Change,
    /// The device was renamed or moved in the device tree.
    Move,
    /// The device came online.
    Online,
    /// The device went offline.
    Offline,
    /// A driver bound to the device.
    Bind,
    /// A driver let go of the device.
    Unbind,
}

impl UeventAction {
    /// The kernel's name of the action.
    pub fn as_str(self) -> &'static str {
        match self {
            UeventAction::Add => "add",
            UeventAction::Remove => "remove",
            UeventAction::Change => "change",
            UeventAction::Move => "move",
            UeventAction::Online => "online",
            UeventAction::Offline => "offline",
            UeventAction::Bind => "bind",
            UeventAction::Unbind => "unbind",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "add" => UeventAction::Add,
            "remove" => UeventAction::Remove,
            "change" => UeventAction::Change,
            "move" => UeventAction::Move,
            "online" => UeventAction::Online,
            "offline" => UeventAction::Offline,
            "bind" => UeventAction::Bind,
            "unbind" => UeventAction::Unbind,
            _ => return None,
        })
    }
}

impl fmt::Display for UeventAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One device's uevent properties (`KEY=value`), checked: keys are property names, and the
/// well-known keys (`ACTION`, `MAJOR`/`MINOR`, `SEQNUM`, `DISKSEQ`, `DEVNAME`, `DEVLINKS`)
/// hold what the kernel and udev put there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Uevent {
    props: BTreeMap<String, String>,
}

impl Uevent {
    /// Parses `KEY=value` lines: a sysfs `uevent` file, or the output of
    /// `udevadm info --query=property`. Empty lines are skipped.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::from_pairs(
            text.split('\n')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    l.split_once('=')
                        .ok_or_else(|| format!("{l:?} is not KEY=value"))
                })
                .collect::<Result<Vec<_>, _>>()?,
        )
    }

    /// Builds the set from key/value pairs (a udev monitor event's properties).
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<Self, String>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut props = BTreeMap::new();
        for (k, v) in pairs {
            let (k, v) = (k.as_ref(), v.as_ref());
            check_key(k)?;
            if v.contains(['\n', '\0']) {
                return Err(format!("the value of {k} holds a newline or NUL"));
            }
            if props.insert(k.to_string(), v.to_string()).is_some() {
                return Err(format!("{k} is given twice"));
            }
        }
        let u = Uevent { props };
        u.check_known()?;
        Ok(u)
    }

    fn check_known(&self) -> Result<(), String> {
        if let Some(a) = self.get("ACTION") {
            UeventAction::parse(a).ok_or_else(|| format!("unknown ACTION {a:?}"))?;
        }
        match (self.get("MAJOR"), self.get("MINOR")) {
            (None, None) => {}
            (Some(ma), Some(mi)) => {
                decimal::<u32>("MAJOR", ma)?;
                decimal::<u32>("MINOR", mi)?;
            }
            _ => return Err("MAJOR and MINOR come together".into()),
        }
        for key in ["SEQNUM", "DISKSEQ"] {
            if let Some(v) = self.get(key) {
                decimal::<u64>(key, v)?;
            }
        }
        if let Some(n) = self.get("DEVNAME") {
            dev_relative(n).ok_or_else(|| format!("DEVNAME {n:?} is not a name under /dev"))?;
        }
        if let Some(links) = self.get("DEVLINKS") {
            for l in links.split(' ').filter(|l| !l.is_empty()) {
                dev_relative(l).ok_or_else(|| format!("DEVLINKS entry {l:?} is not under /dev"))?;
            }
        }
        Ok(())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props.get(key).map(String::as_str)
    }

    /// All properties, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.props.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// True when there are no properties.
    pub fn is_empty(&self) -> bool {
        self.props.is_empty()
    }

    /// `ACTION` (monitor events only; a sysfs `uevent` file has none).
    pub fn action(&self) -> Option<UeventAction> {
        self.get("ACTION").and_then(UeventAction::parse)
    }

    /// `SUBSYSTEM` (`block`, `scsi`, `nvme`, ...).
    pub fn subsystem(&self) -> Option<&str> {
        self.get("SUBSYSTEM")
    }

    /// `DEVTYPE` (`disk`, `partition`, `scsi_device`, ...).
    pub fn devtype(&self) -> Option<&str> {
        self.get("DEVTYPE")
    }

    /// `DEVPATH`, the device's path below /sys.
    pub fn devpath(&self) -> Option<&str> {
        self.get("DEVPATH")
    }

    /// The device node relative to /dev (`sdb`, `mapper/x`): the kernel writes it relative,
    /// udev absolute; both come out relative.
    pub fn devname(&self) -> Option<&str> {
        self.get("DEVNAME").and_then(dev_relative)
    }

    /// The device number from `MAJOR` and `MINOR`.
    pub fn devnum(&self) -> Option<(u32, u32)> {
        Some((
            self.get("MAJOR")?.parse().ok()?,
            self.get("MINOR")?.parse().ok()?,
        ))
    }

    /// `SEQNUM`, the kernel's event sequence number.
    pub fn seqnum(&self) -> Option<u64> {
        self.get("SEQNUM")?.parse().ok()
    }

    /// `DISKSEQ`, the kernel's sequence number of the disk: a new disk behind a reused name
    /// has a new one.
    pub fn diskseq(&self) -> Option<u64> {
        self.get("DISKSEQ")?.parse().ok()
    }

    /// The links udev made to the device (`DEVLINKS`), relative to /dev.
    pub fn devlinks(&self) -> impl Iterator<Item = &str> {
        self.get("DEVLINKS")
            .unwrap_or("")
            .split(' ')
            .filter_map(dev_relative)
    }
}

/// One `KEY=value` per line, by key: what [`Uevent::parse`] reads back to the same set.
impl fmt::Display for Uevent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.props {
            writeln!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// udev's database record of a device (`/run/udev/data/b<major>:<minor>`). It exists once
/// udev has processed the device: its node, links and permissions are in place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdevRecord {
    /// The links udev made (`S:`), relative to /dev, in the record's order.
    pub links: Vec<String>,
    /// When udev first processed the device (`I:`), microseconds of CLOCK_MONOTONIC.
    pub initialized_usec: Option<u64>,
    /// The link priority (`L:`).
    pub link_priority: Option<i32>,
    /// Tags (`G:`).
    pub tags: Vec<String>,
    /// The properties udev keeps for the device (`E:`).
    pub properties: Uevent,
}

impl UdevRecord {
    /// Parses a record: one `<letter>:<value>` per line. Letters hostbrick does not use (watch
    /// handle, current tags, version, ...) are accepted and left out.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rec = UdevRecord::default();
        let mut props = Vec::new();
        for line in text.split('\n').filter(|l| !l.is_empty()) {
            let bad = || format!("{line:?} is not a udev database line");
            let mut chars = line.chars();
            let (Some(kind), Some(':')) = (chars.next(), chars.next()) else {
                return Err(bad());
            };
            if !kind.is_ascii_alphabetic() {
                return Err(bad());
            }
            let value = chars.as_str();
            match kind {
                'S' => {
                    let l = dev_relative(value)
                        .filter(|l| !l.contains(' '))
                        .ok_or_else(|| format!("link {value:?} is not a path under /dev"))?;
                    rec.links.push(l.to_string());
                }
                'I' => rec.initialized_usec = Some(decimal("I:", value)?),
                'L' => rec.link_priority = Some(decimal("L:", value)?),
                'G' => rec.tags.push(value.to_string()),
                'E' => props.push(value.split_once('=').ok_or_else(bad)?),
                _ => {}
            }
        }
        rec.properties = Uevent::from_pairs(props)?;
        Ok(rec)
    }

    /// True when udev made the link `/dev/<link>` for this device.
    pub fn has_link(&self, link: &str) -> bool {
        self.links.iter().any(|l| l == link)
    }
}

/// `I:`, `L:`, `S:`, `G:` then `E:` lines: what [`UdevRecord::parse`] reads back to the same
/// record.
impl fmt::Display for UdevRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.initialized_usec {
            writeln!(f, "I:{i}")?;
        }
        if let Some(l) = self.link_priority {
            writeln!(f, "L:{l}")?;
        }
        for s in &self.links {
            writeln!(f, "S:{s}")?;
        }
        for g in &self.tags {
            writeln!(f, "G:{g}")?;
        }
        for (k, v) in self.properties.iter() {
            writeln!(f, "E:{k}={v}")?;
        }
        Ok(())
    }
}

/// Property names: the kernel's are upper-case words, but a local udev rule may set any
/// name without `=`, whitespace or control characters.
fn check_key(k: &str) -> Result<(), String> {
    if !k.is_empty() && !k.contains('=') && !k.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        Ok(())
    } else {
        Err(format!("{k:?} is not a property name"))
    }
}

fn decimal<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return Err(format!("{key} {v:?} is not a number"));
    }
    v.parse()
        .map_err(|_| format!("{key} {v:?} is not a number in range"))
}

/// A device name or link below /dev, given relative or as `/dev/...`: no empty, `.` or `..`
/// component (a path reads back as written, and stays below /dev).
fn dev_relative(p: &str) -> Option<&str> {
    let rel = p.strip_prefix("/dev/").unwrap_or(p);
    let ok = !rel.contains(['\0', '\n'])
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    ok.then_some(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_uevent_file() {
        let u =
            Uevent::parse("MAJOR=8\nMINOR=16\nDEVNAME=sdb\nDEVTYPE=disk\nDISKSEQ=12\n").unwrap();
        assert_eq!(u.devnum(), Some((8, 16)));
        assert_eq!(u.devname(), Some("sdb"));
        assert_eq!(u.devtype(), Some("disk"));
        assert_eq!(u.diskseq(), Some(12));
        assert_eq!(u.action(), None);
        assert_eq!(Uevent::parse(&u.to_string()).unwrap(), u);
    }

    #[test]
    fn monitor_event_properties() {
        let u = Uevent::from_pairs([
            ("ACTION", "add"),
            ("DEVPATH", "/devices/platform/host3/session1/target3:0:0/3:0:0:1/block/sdc"),
            ("SUBSYSTEM", "block"),
            ("DEVNAME", "/dev/sdc"),
            ("SEQNUM", "4711"),
            ("DEVLINKS", "/dev/disk/by-path/ip-192.0.2.1:3260-iscsi-iqn.x-lun-1 /dev/disk/by-id/wwn-0x6001405"),
            ("ID_SERIAL", "36001405"),
        ])
        .unwrap();
        assert_eq!(u.action(), Some(UeventAction::Add));
        assert_eq!(u.devname(), Some("sdc"));
        assert_eq!(u.seqnum(), Some(4711));
        assert_eq!(
            u.devlinks().collect::<Vec<_>>(),
            [
                "disk/by-path/ip-192.0.2.1:3260-iscsi-iqn.x-lun-1",
                "disk/by-id/wwn-0x6001405"
            ]
        );
    }

    #[test]
    fn malformed_sets_are_refused() {
        for bad in [
            "MAJOR=8\n",
            "MAJOR=8\nMINOR=x\n",
            "MAJOR=8\nMINOR=99999999999\n",
            "ACTION=explode\n",
            "no equals sign\n",
            "=value\n",
            "KEY WITH SPACE=1\n",
            "A=1\nA=2\n",
            "DEVNAME=../etc/passwd\n",
            "DEVNAME=/dev/\n",
            "SEQNUM=-1\n",
            "DEVLINKS=/dev/ok /dev/../bad\n",
            // Found by fuzzing: `Path::components` skips a `.` inside a path.
            "DEVNAME=disk/./sdb\n",
        ] {
            assert!(Uevent::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Uevent::from_pairs([("K", "a\0b")]).is_err());
    }

    #[test]
    fn udev_database_record() {
        let text = "S:disk/by-path/ip-192.0.2.1:3260-iscsi-iqn.x-lun-1\n\
                    S:disk/by-id/wwn-0x6001405\n\
                    W:3\nI:12345678\nL:0\n\
                    E:ID_SERIAL=36001405\nE:.ID_FS_TYPE_NEW=\nE:SYSTEMD_READY=1\n\
                    E:local-rule.flag=1\n\
                    G:systemd\nQ:systemd\nV:1\n";
        let r = UdevRecord::parse(text).unwrap();
        assert_eq!(r.initialized_usec, Some(12345678));
        assert_eq!(r.link_priority, Some(0));
        assert!(r.has_link("disk/by-id/wwn-0x6001405"));
        assert!(!r.has_link("disk/by-id/other"));
        assert_eq!(r.properties.get("ID_SERIAL"), Some("36001405"));
        assert_eq!(r.properties.get(".ID_FS_TYPE_NEW"), Some(""));
        assert_eq!(r.properties.get("local-rule.flag"), Some("1"));
        assert_eq!(r.tags, ["systemd"]);
        assert_eq!(UdevRecord::parse(&r.to_string()).unwrap(), r);
    }

    #[test]
    fn malformed_records_are_refused() {
        for bad in [
            "S\n",
            "SS:x\n",
            "1:x\n",
            "S:../x\n",
            "S:disk/./by-path\n",
            "S:disk//by-path\n",
            "S:/dev/a b\n",
            "I:soon\n",
            "E:novalue\n",
            "E:A=1\nE:A=2\n",
            "L:99999999999\n",
        ] {
            assert!(UdevRecord::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(UdevRecord::parse("").unwrap(), UdevRecord::default());
    }
}
