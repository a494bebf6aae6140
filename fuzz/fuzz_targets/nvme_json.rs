//! nvme-cli JSON (`nvme id-ns -o json`): the namespace-size parser never panics, and a size
//! it returns is what the fields say: `nsze` blocks of `2^ds` bytes, with `ds` in 9..=16.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(size) = hostbrick::internals::nvme::parse_id_ns_size(&text) else {
        return;
    };
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("accepted input is JSON");
    let nsze = v["nsze"].as_u64().expect("accepted input has nsze");
    let flbas = v["flbas"].as_u64().expect("accepted input has flbas");
    let ds = v["lbafs"][(flbas & 0xf) as usize]["ds"]
        .as_u64()
        .expect("accepted input has ds");
    assert!((9..=16).contains(&ds), "ds {ds}");
    assert_eq!(u128::from(size), u128::from(nsze) << ds);
});
