//! connection_info JSON: parsing never panics, and neither a parsed value nor a parse
//! error ever shows a password it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;

const SENTINEL: &str = "pw-sentinel-7Kd9ZqX";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = hostbrick::ConnectionInfo::from_json(text);
    // The same input with passwords planted wherever a secret may sit.
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(text) else { return };
    if let Some(d) = v.get_mut("data").and_then(|d| d.as_object_mut()) {
        for key in ["auth_password", "discovery_auth_password"] {
            d.insert(key.into(), serde_json::Value::String(SENTINEL.into()));
        }
    }
    let shown = match hostbrick::ConnectionInfo::from_value(&v) {
        Ok(info) => format!("{info:?}"),
        Err(e) => format!("{e:?} {}", e.chain()),
    };
    assert!(!shown.contains(SENTINEL), "a password was shown: {shown}");
});
