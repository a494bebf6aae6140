//! libvirt disk XML: reading never panics, and any `<disk>` that `DiskConfig::from_xml`
//! accepts writes back (`to_xml`) as XML that reads again to the same config, and that
//! writes again to the same text.
#![no_main]

use hostbrick::DiskConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(disk) = DiskConfig::from_xml(text) else {
        return;
    };
    let xml = disk
        .to_xml()
        .unwrap_or_else(|e| panic!("{disk:?} was read but cannot be written: {e}"));
    let again = DiskConfig::from_xml(&xml)
        .unwrap_or_else(|e| panic!("written XML does not read back: {e}\n{xml}"));
    assert_eq!(again, disk, "{xml}");
    assert_eq!(again.to_xml().ok().as_deref(), Some(xml.as_str()));
});
