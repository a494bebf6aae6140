//! Saved device records: parsing never panics and a parsed record survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rec) = hostbrick::DeviceRecord::from_json(text) {
        if let Ok(json) = rec.to_json() {
            assert_eq!(hostbrick::DeviceRecord::from_json(&json).ok(), Some(rec));
        }
    }
});
