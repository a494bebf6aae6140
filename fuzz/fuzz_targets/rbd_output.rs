//! rbd and rbd-nbd output: the mapping list (`rbd showmapped --format json`, `rbd-nbd
//! list-mapped --format json`), the image size (`rbd info --format json`) and the device a
//! map prints. The parsers never panic, and what they return is what the text holds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(mappings) = hostbrick::internals::rbd::parse_mappings(&text) {
        for m in &mappings {
            // A mapping maps the image named by its own parts exactly when it is the
            // image's head (no snapshot).
            let spec = hostbrick::rbd::ImageSpec {
                pool: m.pool.clone(),
                namespace: (!m.namespace.is_empty()).then(|| m.namespace.clone()),
                image: m.name.clone(),
            };
            assert_eq!(m.maps(&spec), m.snap.is_empty() || m.snap == "-", "{m:?}");
        }
        if text.trim().is_empty() {
            assert!(mappings.is_empty());
        }
    }
    if let Ok(size) = hostbrick::internals::rbd::parse_image_size(&text) {
        let v: serde_json::Value =
            serde_json::from_str(text.trim()).expect("accepted input is JSON");
        assert_eq!(v["size"].as_u64(), Some(size));
    }
    if let Some(dev) = hostbrick::internals::rbd::parse_mapped_device(&text) {
        assert!(dev.starts_with("/dev/"));
        assert_eq!(dev, dev.trim());
        assert!(text.lines().any(|l| l.trim() == dev));
    }
});
