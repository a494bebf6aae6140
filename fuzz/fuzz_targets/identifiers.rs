//! Typed identifiers: parsing never panics and Display output parses back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn round_trip<T>(s: &str)
where
    T: std::str::FromStr + std::fmt::Display + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = s.parse::<T>() {
        assert_eq!(v.to_string().parse::<T>().ok(), Some(v));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    round_trip::<hostbrick::Portal>(s);
    round_trip::<hostbrick::Iqn>(s);
    round_trip::<hostbrick::Hctl>(s);
    round_trip::<hostbrick::nvme::Nqn>(s);
    round_trip::<hostbrick::rbd::ImageSpec>(s);
    round_trip::<hostbrick::nvme::NvmeTransport>(s);
    round_trip::<hostbrick::Protocol>(s);
    round_trip::<hostbrick::Wwid>(s);
    if let Ok(w) = hostbrick::Wwid::from_sysfs(s) {
        // udev's form of the kernel's wwid is itself a valid WWID (it names the map).
        assert_eq!(w.as_str().parse::<hostbrick::Wwid>().ok(), Some(w));
    }
});
