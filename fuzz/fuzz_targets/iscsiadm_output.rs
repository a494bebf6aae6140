//! iscsiadm session, node and discovery-database listings and the initiator-name file: parsers never panic,
//! and what they return prints back to what they read.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for s in hostbrick::internals::iscsi::parse_sessions(&text) {
        let again = hostbrick::internals::iscsi::parse_sessions(&format!(
            "{}: [{}] {},{} {}\n",
            s.transport, s.sid, s.portal, s.tpgt, s.iqn
        ));
        assert_eq!(again, vec![s]);
    }
    for n in hostbrick::internals::iscsi::parse_nodes(&text) {
        let again = hostbrick::internals::iscsi::parse_nodes(&format!(
            "{},{} {}\n",
            n.portal, n.tpgt, n.iqn
        ));
        assert_eq!(again, vec![n]);
    }
    // The discovery database listing: whatever it returns is a target of the portal asked.
    if let Ok(portal) = "10.0.0.1:3260".parse() {
        for n in hostbrick::internals::iscsi::parse_discoverydb(&text, &portal, "default") {
            let again = hostbrick::internals::iscsi::parse_nodes(&format!(
                "{},{} {}\n",
                n.portal, n.tpgt, n.iqn
            ));
            assert_eq!(again, vec![n]);
        }
    }
    let _ = hostbrick::internals::iscsi::parse_initiator_name(&text);
});
