//! NVMe kernel text: a controller's `address` (`traddr=..,trsvcid=..`), namespace entry
//! names, a namespace's `nsid`, `uuid` and `nguid`, and `/dev/nvme-fabrics`'s answer to a
//! connect (`instance=N,cntlid=M`). The parsers never panic, and what they return is
//! normalized and consistent with itself. Also the other way: a connect's option string,
//! with the input as the portal address and host NQN, is refused or holds exactly its eight
//! options (nothing spliced in).
//!
//! The whole input is first given to each single-value parser; then its lines are read as
//! one directory's attributes: entry name, nsid, uuid, nguid (a namespace), then address,
//! transport, subsysnqn, hostnqn (a controller). A missing line is a missing file.
#![no_main]

use hostbrick::internals::nvme::{
    connect_options, head_name, parse_address, parse_answer, ConnectArgs, Controller, Namespace,
};
use hostbrick::nvme::{NamespaceId, Nqn, NvmePortal, NvmeTransport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_address(&text);
    check_head(&text);
    check_fabrics_answer(&text);
    check_connect_options(&text);

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

fn check_fabrics_answer(text: &str) {
    let Ok(a) = parse_answer(text) else {
        return;
    };
    assert!(text.contains(&format!("instance={}", a.instance)), "{a:?}");
    assert_eq!(a.controller(), format!("nvme{}", a.instance));
    let again = parse_answer(&format!("instance={},cntlid={}\n", a.instance, a.cntlid));
    assert_eq!(again, Ok(a));
}

fn check_connect_options(text: &str) {
    // Host names would be resolved (a DNS lookup per input): addresses only.
    let line = text.lines().next().unwrap_or("");
    if line.parse::<std::net::IpAddr>().is_err() && !line.contains([',', '=', '\n', ' ']) {
        return;
    }
    let nqn: Nqn = "nqn.2014-08.org.hostbrick:fuzz".parse().unwrap();
    let portal = NvmePortal {
        address: line.to_string(),
        port: 4420,
        transport: NvmeTransport::Tcp,
    };
    let hostid = "0f8fad5b-d9cb-469f-a165-70867728950e";
    for (portal, hostnqn) in [
        (
            portal.clone(),
            "nqn.2014-08.org.nvmexpress:uuid:0f8fad5b-d9cb-469f-a165-70867728950e",
        ),
        (
            NvmePortal {
                address: "127.0.0.1".into(),
                ..portal
            },
            text,
        ),
    ] {
        let args = ConnectArgs {
            nqn: &nqn,
            portal: &portal,
            hostnqn,
            hostid,
            recovery: &hostbrick::nvme::NvmeOptions::new(),
        };
        let Ok(s) = connect_options(&args) else {
            continue;
        };
        let keys: Vec<&str> = s
            .split([',', '\n'])
            .map(|f| f.split_once('=').map_or(f, |(k, _)| k))
            .collect();
        assert_eq!(
            keys,
            [
                "nqn",
                "transport",
                "traddr",
                "trsvcid",
                "hostnqn",
                "hostid",
                "reconnect_delay",
                "ctrl_loss_tmo"
            ],
            "{s:?}"
        );
        assert!(s.contains(&format!(",hostnqn={hostnqn},")), "{s:?}");
        assert!(!s.contains(char::is_whitespace), "{s:?}");
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
