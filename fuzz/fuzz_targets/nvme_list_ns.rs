//! `nvme list-ns` output: the parser never panics, and what it accepts has one nonzero nsid
//! per non-empty line, each the hexadecimal after the line's `]:0x`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(nsids) = hostbrick::internals::nvme::parse_list_ns(&text) else {
        return;
    };
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(nsids.len(), lines.len());
    for (n, line) in nsids.iter().zip(lines) {
        assert_ne!(*n, 0);
        let hex = line.rsplit_once("]:0x").expect("accepted line has ]:0x").1;
        assert_eq!(u32::from_str_radix(hex, 16).ok(), Some(*n), "{line}");
    }
});
