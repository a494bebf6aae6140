//! NVMe sysfs attribute values: a controller's `address` (`traddr=..,trsvcid=..`), namespace
//! entry names, and a namespace's `nsid`, `uuid` and `nguid`. The parsers never panic, and
//! what they return is normalized and consistent with itself.
//!
//! The whole input is first given to each single-value parser; then its lines are read as
//! one directory's attributes: entry name, nsid, uuid, nguid (a namespace), then address,
//! transport, subsysnqn, hostnqn (a controller). A missing line is a missing file.
#![no_main]

use hostbrick::internals::nvme::{head_name, parse_address, Controller, Namespace};
use hostbrick::nvme::{NamespaceId, NvmePortal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_address(&text);
    check_head(&text);

    let mut lines = text.split('\n');
    let mut next = || lines.next();
    let (entry, nsid, uuid, nguid) = (next().unwrap_or(""), next(), next(), next());
    if let Some(ns) = Namespace::from_attrs(entry, nsid, uuid, nguid) {
        assert_eq!(Some(&ns.head), head_name(entry).as_ref());
        assert_eq!(ns.entry, entry);
        if let Some(u) = &ns.uuid {
            assert!(is_uuid(u), "{u:?}");
        }
        if let Some(g) = &ns.nguid {
            assert!(
                g.len() == 32
                    && g.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
        }
        if let Some(n) = ns.nsid {
            assert_eq!(nsid.map(|v| v.trim().parse::<u32>()), Some(Ok(n)));
        }
        // A namespace answers to each of its own ids, and to none.
        assert!(ns.matches(&NamespaceId::default()));
        let own = NamespaceId {
            uuid: ns.uuid.clone(),
            nguid: ns.nguid.clone(),
            nsid: ns.nsid,
        };
        assert!(ns.matches(&own));
    }

    let (address, transport, subsysnqn, hostnqn) = (next(), next(), next(), next());
    let (Some(address), Some(transport)) = (address, transport) else {
        return;
    };
    let c = Controller {
        name: "nvme0".into(),
        transport: transport.trim().to_string(),
        address: parse_address(address),
        subsysnqn: subsysnqn.unwrap_or("").trim().to_string(),
        hostnqn: hostnqn.map(|h| h.trim().to_string()),
        state: "live".into(),
    };
    // A controller serves the portal its own attributes describe.
    let (Some(traddr), Some(port)) = (c.address.get("traddr"), c.address.get("trsvcid")) else {
        return;
    };
    let (Ok(port), Ok(transport)) = (port.parse::<u16>(), c.transport.parse()) else {
        return;
    };
    if port.to_string() != c.address["trsvcid"] {
        return;
    }
    let portal = NvmePortal {
        address: traddr.clone(),
        port,
        transport,
    };
    if portal.transport.as_str() == c.transport {
        let host = c.hostnqn.clone().unwrap_or_default();
        assert!(c.serves(&c.subsysnqn, &portal, &host), "{c:?} {portal:?}");
        assert!(!c.serves(&format!("{}x", c.subsysnqn), &portal, &host));
    }
});

fn check_address(text: &str) {
    for (k, v) in parse_address(text) {
        assert_eq!(k, k.trim());
        assert_eq!(v, v.trim());
        assert!(!k.contains([',', '=']) && !v.contains(','), "{k:?}={v:?}");
    }
}

fn check_head(text: &str) {
    if let Some(head) = head_name(text) {
        assert!(head.starts_with("nvme") && !head.contains('c'), "{head:?}");
        assert_eq!(head_name(&head).as_ref(), Some(&head));
    }
}

fn is_uuid(u: &str) -> bool {
    u.len() == 36
        && u.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        })
}
