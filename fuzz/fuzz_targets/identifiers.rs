//! Typed identifiers: parsing never panics and Display output parses back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(p) = s.parse::<hostbrick::Portal>() {
        assert_eq!(p.to_string().parse::<hostbrick::Portal>().ok(), Some(p));
    }
    if let Ok(i) = s.parse::<hostbrick::Iqn>() {
        assert_eq!(i.to_string().parse::<hostbrick::Iqn>().ok(), Some(i));
    }
    if let Ok(h) = s.parse::<hostbrick::Hctl>() {
        assert_eq!(h.to_string().parse::<hostbrick::Hctl>().ok(), Some(h));
    }
    let _ = hostbrick::Wwid::from_sysfs(s);
    let _ = s.parse::<hostbrick::Protocol>();
});
