//! dm-multipath as the host shows it: a device-mapper device's `dm/uuid` and `dm/name`
//! attribute values. The parser never panics; a map it returns has a WWID, a name, and
//! the WWID the uuid carries.
//!
//! The input's first line is the uuid, its second (when there is one) the name.
#![no_main]

use hostbrick::internals::devices::MultipathMap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (uuid, name) = match text.split_once('\n') {
        Some((u, n)) => (u, Some(n)),
        None => (&*text, None),
    };
    for name in [name, None] {
        let Some(m) = MultipathMap::from_dm_attrs("dm-0", uuid, name) else {
            assert!(!uuid.trim().starts_with("mpath-") || uuid.trim() == "mpath-");
            continue;
        };
        assert_eq!(m.dm, "dm-0");
        assert!(!m.wwid.is_empty() && !m.name.is_empty());
        assert_eq!(format!("mpath-{}", m.wwid), uuid.trim());
        match name.map(str::trim).filter(|n| !n.is_empty()) {
            Some(n) => assert_eq!(m.name, n),
            None => assert_eq!(m.name, m.wwid),
        }
    }
});
