//! NVMe-oF controllers and namespaces in sysfs (`class/nvme`, `block/nvmeXnY`).

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

use crate::error::Result;
use crate::host::Host;
use crate::nvme::props::{normalize_nguid, normalize_uuid, NamespaceId, NvmePortal};

/// A fabrics controller as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    /// The kernel name, `nvmeN`.
    pub name: String,
    /// `tcp`, `rdma`, ...
    pub transport: String,
    /// The `address` attribute's fields (`traddr`, `trsvcid`, `src_addr`, ...).
    pub address: HashMap<String, String>,
    /// The subsystem NQN.
    pub subsysnqn: String,
    /// The host NQN it connected with (absent on old kernels).
    pub hostnqn: Option<String>,
    /// `live`, `connecting`, `resetting`, `deleting`, ...
    pub state: String,
}

impl Controller {
    /// True when the controller serves `nqn` through `portal` for `hostnqn`.
    pub fn serves(&self, nqn: &str, portal: &NvmePortal, hostnqn: &str) -> bool {
        self.subsysnqn == nqn
            && self.transport == portal.transport.as_str()
            && self
                .address
                .get("traddr")
                .is_some_and(|a| same_address(a, &portal.address))
            && self.address.get("trsvcid").map(String::as_str)
                == Some(portal.port.to_string().as_str())
            && self.hostnqn.as_deref().is_none_or(|h| h == hostnqn)
    }

    /// True when the controller can carry I/O (or is getting there by itself).
    pub fn is_usable(&self) -> bool {
        matches!(self.state.as_str(), "live" | "connecting" | "resetting")
    }
}

fn same_address(a: &str, b: &str) -> bool {
    match (a.parse::<std::net::IpAddr>(), b.parse::<std::net::IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.eq_ignore_ascii_case(b),
    }
}

/// Parses a controller's `address` attribute, e.g.
/// `traddr=127.0.0.1,trsvcid=4420,src_addr=127.0.0.1`.
pub fn parse_address(text: &str) -> HashMap<String, String> {
    text.trim()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The controller `name`, if it exists.
pub fn controller(host: &Host, name: &str) -> Result<Option<Controller>> {
    let dir = host.sys(format!("class/nvme/{name}"));
    let Some(subsysnqn) = host.read_attr_opt(&dir.join("subsysnqn"))? else {
        return Ok(None);
    };
    Ok(Some(Controller {
        name: name.to_string(),
        transport: host
            .read_attr_opt(&dir.join("transport"))?
            .unwrap_or_default(),
        address: parse_address(
            &host
                .read_attr_opt(&dir.join("address"))?
                .unwrap_or_default(),
        ),
        subsysnqn,
        hostnqn: host.read_attr_opt(&dir.join("hostnqn"))?,
        state: host.read_attr_opt(&dir.join("state"))?.unwrap_or_default(),
    }))
}

/// The usable controller serving `nqn` through `portal` for `hostnqn`, if any.
pub fn find_controller(
    host: &Host,
    nqn: &str,
    portal: &NvmePortal,
    hostnqn: &str,
) -> Result<Option<Controller>> {
    for name in host.list_dir(&host.sys("class/nvme"))? {
        if let Some(c) = controller(host, &name)? {
            if c.is_usable() && c.serves(nqn, portal, hostnqn) {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

/// A namespace reached through a controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// The block device to use: the multipath head (`nvme{subsys}n{N}`) for a path entry
    /// `nvme{subsys}c{ctrl}n{N}`, else the entry itself.
    pub head: String,
    /// The entry under the controller.
    pub entry: String,
    /// `nsid`.
    pub nsid: Option<u32>,
    /// `uuid`, normalized.
    pub uuid: Option<String>,
    /// `nguid`, normalized.
    pub nguid: Option<String>,
}

impl Namespace {
    /// True when the namespace is the one `id` names (`uuid`, else `nguid`, else `nsid`;
    /// an empty id matches any).
    pub fn matches(&self, id: &NamespaceId) -> bool {
        if let Some(u) = &id.uuid {
            return self.uuid.as_ref() == Some(u);
        }
        if let Some(g) = &id.nguid {
            return self.nguid.as_ref() == Some(g);
        }
        if let Some(n) = id.nsid {
            return self.nsid == Some(n);
        }
        true
    }
}

static NS_ENTRY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^nvme(\d+)(c\d+)?n(\d+)$").expect("static regex"));

/// The head block device for a namespace entry name (`nvme0c1n2` → `nvme0n2`).
pub fn head_name(entry: &str) -> Option<String> {
    let c = NS_ENTRY.captures(entry)?;
    Some(format!("nvme{}n{}", &c[1], &c[3]))
}

impl Namespace {
    /// The namespace a controller shows as directory `entry` with the attribute values
    /// `nsid`, `uuid` and `nguid` (as read, absent when the file is missing); `None` when
    /// `entry` is no namespace. Values that are not ids, and the all-zero UUID and NGUID
    /// a namespace without one reports, count as absent.
    pub fn from_attrs(
        entry: &str,
        nsid: Option<&str>,
        uuid: Option<&str>,
        nguid: Option<&str>,
    ) -> Option<Namespace> {
        Some(Namespace {
            head: head_name(entry)?,
            entry: entry.to_string(),
            nsid: nsid.and_then(|v| v.trim().parse().ok()),
            uuid: uuid
                .map(str::trim)
                .and_then(normalize_uuid)
                .filter(|u| u != "00000000-0000-0000-0000-000000000000"),
            nguid: nguid
                .map(str::trim)
                .and_then(normalize_nguid)
                .filter(|g| g.chars().any(|c| c != '0')),
        })
    }
}

/// The namespaces the controller `name` carries.
pub fn namespaces(host: &Host, name: &str) -> Result<Vec<Namespace>> {
    let dir = host.sys(format!("class/nvme/{name}"));
    let mut out = Vec::new();
    for entry in host.list_dir(&dir)? {
        if head_name(&entry).is_none() {
            continue;
        }
        let edir = dir.join(&entry);
        let attr = |a: &str| host.read_attr_opt(&edir.join(a));
        let (nsid, uuid, nguid) = (attr("nsid")?, attr("uuid")?, attr("nguid")?);
        out.extend(Namespace::from_attrs(
            &entry,
            nsid.as_deref(),
            uuid.as_deref(),
            nguid.as_deref(),
        ));
    }
    Ok(out)
}

/// Whether the kernel's native NVMe multipath is on.
pub fn native_multipath(host: &Host) -> Result<bool> {
    Ok(host
        .read_attr_opt(&host.sys("module/nvme_core/parameters/multipath"))?
        .is_some_and(|v| v.eq_ignore_ascii_case("y")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::props::NvmeTransport;

    #[test]
    fn address_and_head_names() {
        let a = parse_address("traddr=127.0.0.1,trsvcid=4420,src_addr=127.0.0.1\n");
        assert_eq!(a["traddr"], "127.0.0.1");
        assert_eq!(a["trsvcid"], "4420");
        assert_eq!(head_name("nvme0c1n2").as_deref(), Some("nvme0n2"));
        assert_eq!(head_name("nvme3n1").as_deref(), Some("nvme3n1"));
        assert_eq!(head_name("nvme0"), None);
        assert_eq!(head_name("ng0n1"), None);
    }

    #[test]
    fn namespace_from_attributes() {
        let ns = Namespace::from_attrs(
            "nvme0c1n2",
            Some("2\n"),
            Some("9F0C1A7E-6C3B-4C8E-9A55-2B4F3C1D0E11"),
            Some("9f0c1a7e6c3b4c8e9a552b4f3c1d0e11"),
        )
        .unwrap();
        assert_eq!(
            (ns.head.as_str(), ns.entry.as_str()),
            ("nvme0n2", "nvme0c1n2")
        );
        assert_eq!(ns.nsid, Some(2));
        assert_eq!(
            ns.uuid.as_deref(),
            Some("9f0c1a7e-6c3b-4c8e-9a55-2b4f3c1d0e11")
        );
        assert_eq!(
            ns.nguid.as_deref(),
            Some("9f0c1a7e6c3b4c8e9a552b4f3c1d0e11")
        );
        // No ids: absent files, all-zero values, junk.
        let bare = Namespace::from_attrs(
            "nvme1n1",
            Some("x"),
            Some("00000000-0000-0000-0000-000000000000"),
            Some("00000000000000000000000000000000"),
        )
        .unwrap();
        assert_eq!((bare.nsid, bare.uuid, bare.nguid), (None, None, None));
        assert_eq!(Namespace::from_attrs("nvme1", Some("1"), None, None), None);
        assert_eq!(Namespace::from_attrs("ng0n1", None, None, None), None);
    }

    #[test]
    fn controller_matching() {
        let c = Controller {
            name: "nvme0".into(),
            transport: "tcp".into(),
            address: parse_address("traddr=::1,trsvcid=4420"),
            subsysnqn: "nqn.2014-08.org.x:a".into(),
            hostnqn: Some("nqn.2014-08.org.nvmexpress:uuid:h".into()),
            state: "live".into(),
        };
        let p = NvmePortal {
            address: "0:0:0:0:0:0:0:1".into(),
            port: 4420,
            transport: NvmeTransport::Tcp,
        };
        assert!(c.serves(
            "nqn.2014-08.org.x:a",
            &p,
            "nqn.2014-08.org.nvmexpress:uuid:h"
        ));
        assert!(!c.serves(
            "nqn.2014-08.org.x:b",
            &p,
            "nqn.2014-08.org.nvmexpress:uuid:h"
        ));
        assert!(!c.serves(
            "nqn.2014-08.org.x:a",
            &p,
            "nqn.2014-08.org.nvmexpress:uuid:other"
        ));
        let p2 = NvmePortal {
            port: 4421,
            ..p.clone()
        };
        assert!(!c.serves(
            "nqn.2014-08.org.x:a",
            &p2,
            "nqn.2014-08.org.nvmexpress:uuid:h"
        ));
    }
}
