//! SMBIOS tables (`/sys/firmware/dmi/tables`): the system-UUID reader never panics, and what
//! it returns is dmidecode's text: a placeholder word or an upper-case 8-4-4-4-12 UUID.
//! The first byte of the input is the entry point's length, the rest after it the table.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (entry, table) = rest.split_at(usize::from(n).min(rest.len()));
    let Some(uuid) = hostbrick::internals::properties::smbios_system_uuid(entry, table) else {
        return;
    };
    if uuid == "Not Present" || uuid == "Not Settable" {
        return;
    }
    let groups: Vec<&str> = uuid.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    assert_eq!(lens, [8, 4, 4, 4, 12], "{uuid}");
    assert!(
        groups.iter().all(|g| g
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))),
        "{uuid}"
    );
});
