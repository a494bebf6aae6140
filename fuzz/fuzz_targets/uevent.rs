//! Uevent property sets (a sysfs `uevent` file, `udevadm info --query=property` output, a
//! udev monitor event's properties) and udev database records. What either parser accepts
//! prints back to text it reads to the same value, and the well-known keys it accepts are
//! consistent: device names and links stay below /dev, numbers are numbers.
#![no_main]

use hostbrick::internals::platform::{UdevRecord, Uevent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    if let Ok(u) = Uevent::parse(&text) {
        check_set(&u);
        assert_eq!(Uevent::parse(&u.to_string()).as_ref(), Ok(&u), "{u}");
    }

    // A monitor event hands over pairs, not lines: NUL-separated KEY=value here.
    let pairs = text
        .split('\0')
        .filter_map(|p| p.split_once('='))
        .collect::<Vec<_>>();
    if let Ok(u) = Uevent::from_pairs(pairs.iter().copied()) {
        check_set(&u);
        for (k, v) in &pairs {
            assert_eq!(u.get(k), Some(*v));
        }
    }

    if let Ok(r) = UdevRecord::parse(&text) {
        check_set(&r.properties);
        for l in &r.links {
            assert!(below_dev(l) && !l.contains(' '), "{l:?}");
            assert!(r.has_link(l));
        }
        assert_eq!(UdevRecord::parse(&r.to_string()).as_ref(), Ok(&r), "{r}");
    }
});

fn check_set(u: &Uevent) {
    assert_eq!(u.action().is_some(), u.get("ACTION").is_some());
    if let Some(a) = u.action() {
        assert_eq!(Some(a.as_str()), u.get("ACTION"));
    }
    assert_eq!(u.devname().is_some(), u.get("DEVNAME").is_some());
    if let Some(n) = u.devname() {
        assert!(below_dev(n), "{n:?}");
    }
    assert_eq!(u.devnum().is_some(), u.get("MAJOR").is_some());
    assert_eq!(u.devnum().is_some(), u.get("MINOR").is_some());
    assert_eq!(u.seqnum().is_some(), u.get("SEQNUM").is_some());
    assert_eq!(u.diskseq().is_some(), u.get("DISKSEQ").is_some());
    for l in u.devlinks() {
        assert!(below_dev(l), "{l:?}");
    }
    for (k, v) in u.iter() {
        assert!(!k.is_empty() && !k.contains(['=', '\n', '\0']), "{k:?}");
        assert!(!v.contains(['\n', '\0']), "{v:?}");
    }
}

/// Relative, with no `..`, `.` or empty component.
fn below_dev(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}
