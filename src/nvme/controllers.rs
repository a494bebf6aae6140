//! NVMe-oF controllers in sysfs (`class/nvme`): reading one, and finding the one that
//! serves a subsystem through a portal for a host NQN.

use std::collections::hash_map::{Entry, HashMap};

use super::namespaces::head_by_id;
use crate::error::Result;
use crate::model::nvme::{NamespaceId, NvmePortal};
use crate::platform::host::Host;

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

/// Every controller the host has (`/sys/class/nvme`).
pub fn all_controllers(host: &Host) -> Result<Vec<Controller>> {
    let mut out = Vec::new();
    for name in host.list_dir(&host.sys("class/nvme"))? {
        if let Some(c) = controller(host, &name)? {
            out.push(c);
        }
    }
    Ok(out)
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

/// The usable controller serving `nqn` through `portal` for `hostnqn`, if any (see
/// [`ControllerFinder`]).
pub fn find_controller(
    host: &Host,
    nqn: &str,
    portal: &NvmePortal,
    hostnqn: &str,
) -> Result<Option<Controller>> {
    ControllerFinder::new(host).find(nqn, portal, hostnqn)
}

/// What a controller's fixed attributes showed. They never change while the controller
/// exists; its name can be reused by a later controller, which has a new sysfs inode.
#[derive(Debug, Clone, Default)]
struct Seen {
    subsysnqn: String,
    /// Read only for controllers of a wanted subsystem.
    rest: Option<Fixed>,
}

#[derive(Debug, Clone)]
struct Fixed {
    transport: String,
    address: HashMap<String, String>,
    hostnqn: Option<String>,
}

/// Finds the controllers of NVMe-oF subsystems for one operation (a connect, a disconnect,
/// ...).
///
/// The kernel keeps no index of controllers by subsystem and portal, so telling that none
/// serves a portal means reading every controller's subsystem NQN. The finder goes directly
/// wherever the host already points at the controller and reads each controller's fixed
/// attributes at most once per operation:
///
/// 1. controllers it already matched, and those it was pointed at
///    ([`ControllerFinder::hint`]: a device record's paths; [`ControllerFinder::hint_namespace`]:
///    the controllers of a namespace udev links by UUID or NGUID);
/// 2. only then the controller list, reading controllers this finder has not read yet.
///
/// So a lookup of an attached namespace costs the same beside 1 controller as beside
/// hundreds, and a wait for a new controller reads only the controllers that appeared since
/// the wait began. The state, which does change, is read afresh for every match; a
/// controller the kernel is still making (state `new`) is not remembered from what it shows
/// then, but read again at the next look.
#[derive(Debug)]
pub struct ControllerFinder<'h> {
    host: &'h Host,
    seen: HashMap<(String, u64), Seen>,
    candidates: Vec<String>,
}

impl<'h> ControllerFinder<'h> {
    /// A finder that has read nothing yet.
    pub fn new(host: &'h Host) -> Self {
        ControllerFinder {
            host,
            seen: HashMap::new(),
            candidates: Vec::new(),
        }
    }

    /// Names a controller that may be a wanted one (e.g. from a device record): it is
    /// checked first, directly.
    pub fn hint(&mut self, name: &str) {
        if is_controller_name(name) && !self.candidates.iter().any(|c| c == name) {
            self.candidates.push(name.to_string());
        }
    }

    /// Hints the controllers through which the namespace `id` is reached, when udev's
    /// by-id link for its UUID (or NGUID) shows where it is.
    pub fn hint_namespace(&mut self, id: &NamespaceId) -> Result<()> {
        let Some(head) = head_by_id(self.host, id)? else {
            return Ok(());
        };
        for c in controllers_of_head(self.host, &head)? {
            self.hint(&c);
        }
        Ok(())
    }

    /// The usable controller serving `nqn` through `portal` for `hostnqn`, if any.
    pub fn find(
        &mut self,
        nqn: &str,
        portal: &NvmePortal,
        hostnqn: &str,
    ) -> Result<Option<Controller>> {
        for i in 0..self.candidates.len() {
            let name = self.candidates[i].clone();
            if let Some(c) = controller(self.host, &name)? {
                if c.is_usable() && c.serves(nqn, portal, hostnqn) {
                    return Ok(Some(c));
                }
            }
        }
        let mut list = self.host.list_dir_inodes(&self.host.sys("class/nvme"))?;
        list.sort();
        for (name, ino) in list {
            let Some(fixed) = self.fixed(&name, ino, nqn)? else {
                continue;
            };
            let c = Controller {
                name: name.clone(),
                transport: fixed.transport,
                address: fixed.address,
                subsysnqn: nqn.to_string(),
                hostnqn: fixed.hostnqn,
                state: String::new(),
            };
            if !c.serves(nqn, portal, hostnqn) {
                tracing::debug!(controller = %name, ino, transport = %c.transport, address = ?c.address, hostnqn = ?c.hostnqn, "controller of the subsystem serves another portal or host");
                continue;
            }
            let dir = self.host.sys(format!("class/nvme/{name}"));
            let Some(state) = self.host.read_attr_opt(&dir.join("state"))? else {
                continue;
            };
            let c = Controller { state, ..c };
            if c.is_usable() {
                self.hint(&name);
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// The fixed attributes of controller `name` (sysfs inode `ino`), read at most once;
    /// `None` when it is gone or of another subsystem. A controller still being set up
    /// (attributes missing) is not remembered.
    fn fixed(&mut self, name: &str, ino: u64, nqn: &str) -> Result<Option<Fixed>> {
        let host = self.host;
        let dir = host.sys(format!("class/nvme/{name}"));
        let seen = match self.seen.entry((name.to_string(), ino)) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => {
                // A controller the kernel is still making (state `new`, or gone) is read
                // again next time: what it shows before its first connect is done is not
                // remembered.
                if !matches!(
                    host.read_attr_opt(&dir.join("state"))?.as_deref(),
                    Some(s) if s != "new"
                ) {
                    return Ok(None);
                }
                match host.read_attr_opt(&dir.join("subsysnqn"))? {
                    Some(subsysnqn) if subsysnqn_is_set(&subsysnqn) => v.insert(Seen {
                        subsysnqn,
                        rest: None,
                    }),
                    _ => return Ok(None),
                }
            }
        };
        if seen.subsysnqn != nqn {
            return Ok(None);
        }
        if seen.rest.is_none() {
            let (Some(transport), Some(address)) = (
                host.read_attr_opt(&dir.join("transport"))?,
                host.read_attr_opt(&dir.join("address"))?,
            ) else {
                return Ok(None);
            };
            seen.rest = Some(Fixed {
                transport,
                address: parse_address(&address),
                hostnqn: host.read_attr_opt(&dir.join("hostnqn"))?,
            });
        }
        Ok(seen.rest.clone())
    }
}

/// False for the `subsysnqn` a controller shows before it knows its subsystem: empty, or
/// what the kernel prints for the subsystem it has not set yet. A new fabrics controller is
/// in sysfs from `nvme_init_ctrl()`, and `ctrl->subsys` is set only at its first Identify
/// (`nvme_init_subsystem()`); meanwhile the attribute prints `ctrl->subsys->subnqn` of a NULL
/// subsystem, which vsprintf shows as `(efault)` (or `(null)`). Remembering that would hide
/// the controller from the finder for good.
fn subsysnqn_is_set(value: &str) -> bool {
    !value.is_empty() && !matches!(value, "(null)" | "(efault)")
}

fn is_controller_name(name: &str) -> bool {
    name.strip_prefix("nvme")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The controllers through which the head `head` is reached: every controller of its
/// subsystem with native multipath (the head sits under `nvme-subsysN`), else the one
/// controller it sits under.
fn controllers_of_head(host: &Host, head: &str) -> Result<Vec<String>> {
    let Some(dev) = host.canonical(&host.sys(format!("block/{head}")))? else {
        return Ok(Vec::new());
    };
    let Some(parent) = dev.parent() else {
        return Ok(Vec::new());
    };
    let pname = parent.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if pname.starts_with("nvme-subsys") {
        return Ok(host
            .list_dir(parent)?
            .into_iter()
            .filter(|n| is_controller_name(n))
            .collect());
    }
    if is_controller_name(pname) {
        return Ok(vec![pname.to_string()]);
    }
    Ok(Vec::new())
}

/// Whether the kernel's native NVMe multipath is on.
pub fn native_multipath(host: &Host) -> Result<bool> {
    Ok(host
        .read_attr_opt(&host.sys("module/nvme_core/parameters/multipath"))?
        .is_some_and(|v| v.eq_ignore_ascii_case("y")))
}

#[cfg(test)]
pub(crate) mod tests {
    //! Also the fixtures of the namespace tests.

    use super::*;
    use crate::model::nvme::NvmeTransport;
    use crate::nvme::namespaces::{find_namespace, head_name};
    use crate::testing::FakeHost;

    pub(crate) const NQN: &str = "nqn.2014-08.org.hostbrick:vm1";
    pub(crate) const OTHER_NQN: &str = "nqn.2014-08.org.hostbrick:other";
    pub(crate) const HOSTNQN: &str =
        "nqn.2014-08.org.nvmexpress:uuid:0f8fad5b-d9cb-469f-a165-70867728950e";
    pub(crate) const UUID: &str = "11111111-1111-4111-8111-111111111111";

    pub(crate) fn portal(addr: &str) -> NvmePortal {
        NvmePortal {
            address: addr.into(),
            port: 4420,
            transport: NvmeTransport::Tcp,
        }
    }

    pub(crate) fn by_uuid(uuid: &str) -> NamespaceId {
        NamespaceId {
            uuid: Some(uuid.into()),
            ..NamespaceId::default()
        }
    }

    /// Controllers `nvme0..n` of other subsystems (each its own), then `nvme{n}` serving
    /// NQN at 10.0.0.1 with namespace 1 (UUID).
    pub(crate) fn host_with(n: u32) -> FakeHost {
        let fake = FakeHost::new();
        for c in 0..n {
            fake.add_nvme_controller(
                c,
                &format!("{OTHER_NQN}{c}"),
                "tcp",
                "10.0.0.1",
                4420,
                HOSTNQN,
            );
            fake.add_nvme_namespace(
                c,
                c,
                1,
                &format!("22222222-2222-4222-8222-{c:012}"),
                "",
                1 << 20,
            );
        }
        fake.add_nvme_controller(n, NQN, "tcp", "10.0.0.1", 4420, HOSTNQN);
        fake.add_nvme_namespace(n, n, 1, UUID, "", 1 << 20);
        fake
    }

    #[test]
    fn finds_the_controller_of_subsystem_portal_and_host() {
        let fake = host_with(3);
        let host = fake.host();
        let c = find_controller(&host, NQN, &portal("10.0.0.1"), HOSTNQN)
            .unwrap()
            .unwrap();
        assert_eq!((c.name.as_str(), c.state.as_str()), ("nvme3", "live"));
        assert_eq!(
            find_controller(&host, NQN, &portal("10.0.0.2"), HOSTNQN).unwrap(),
            None
        );
        assert_eq!(
            find_controller(&host, NQN, &portal("10.0.0.1"), "nqn.x:other-host").unwrap(),
            None
        );
        // A controller going away is not one to use.
        std::fs::write(fake.root().join("sys/class/nvme/nvme3/state"), "deleting\n").unwrap();
        assert_eq!(
            find_controller(&host, NQN, &portal("10.0.0.1"), HOSTNQN).unwrap(),
            None
        );
        let mut finder = ControllerFinder::new(&host);
        finder.hint("nvme3");
        assert_eq!(
            finder.find(NQN, &portal("10.0.0.1"), HOSTNQN).unwrap(),
            None
        );
    }

    /// A controller the kernel is still making (state `new`) is not remembered from what it
    /// shows then: seen once mid-creation with attributes that do not match, the same
    /// controller (same sysfs entry) is found once it is up.
    #[test]
    fn a_controller_seen_while_being_made_is_found_once_up() {
        let fake = host_with(3);
        let host = fake.host();
        let dir = fake.root().join("sys/class/nvme/nvme3");
        std::fs::write(dir.join("state"), "new\n").unwrap();
        std::fs::write(dir.join("address"), "traddr=10.0.0.9,trsvcid=4420\n").unwrap();
        let mut finder = ControllerFinder::new(&host);
        assert_eq!(
            finder.find(NQN, &portal("10.0.0.1"), HOSTNQN).unwrap(),
            None
        );
        std::fs::write(dir.join("address"), "traddr=10.0.0.1,trsvcid=4420\n").unwrap();
        std::fs::write(dir.join("state"), "live\n").unwrap();
        let c = finder
            .find(NQN, &portal("10.0.0.1"), HOSTNQN)
            .unwrap()
            .expect("the controller, up");
        assert_eq!(c.name, "nvme3");
    }

    #[test]
    fn the_namespace_link_leads_to_its_controllers() {
        let fake = host_with(2);
        let host = fake.host();
        // nvme7 serves the same subsystem and portal as nvme2 (a duplicate connect) and
        // is the one that reaches namespace 33333333-....
        fake.add_nvme_controller(7, NQN, "tcp", "10.0.0.1", 4420, HOSTNQN);
        fake.add_nvme_namespace(7, 9, 1, "33333333-3333-4333-8333-333333333333", "", 1 << 20);
        // Listing order (nvme2, nvme7) would answer nvme2, whose namespace is UUID. Asked
        // for the other namespace's UUID, the link answers nvme7.
        let id = by_uuid("33333333-3333-4333-8333-333333333333");
        assert_eq!(head_by_id(&host, &id).unwrap().as_deref(), Some("nvme9n1"));
        let mut finder = ControllerFinder::new(&host);
        finder.hint_namespace(&id).unwrap();
        let c = finder
            .find(NQN, &portal("10.0.0.1"), HOSTNQN)
            .unwrap()
            .unwrap();
        assert_eq!(c.name, "nvme7");
        let ns = find_namespace(&host, &c.name, &id).unwrap().unwrap();
        assert_eq!(
            (ns.head.as_str(), ns.entry.as_str()),
            ("nvme9n1", "nvme9c7n1")
        );
        // Without a hint the list answers the first.
        let c = find_controller(&host, NQN, &portal("10.0.0.1"), HOSTNQN)
            .unwrap()
            .unwrap();
        assert_eq!(c.name, "nvme2");
    }

    /// A controller still being set up shows no subsystem yet (`(efault)`, the kernel's
    /// print of a NULL subsystem's NQN): a finder that looked then still finds it once it
    /// is up.
    #[test]
    fn a_controller_read_before_its_subsystem_is_set_is_found_later() {
        let fake = FakeHost::new();
        let host = fake.host();
        fake.add_nvme_controller(0, NQN, "tcp", "10.0.0.1", 4420, HOSTNQN);
        let attr = fake.root().join("sys/class/nvme/nvme0/subsysnqn");
        let mut finder = ControllerFinder::new(&host);
        for early in ["(efault)\n", "(null)\n", "\n"] {
            std::fs::write(&attr, early).unwrap();
            assert_eq!(
                finder.find(NQN, &portal("10.0.0.1"), HOSTNQN).unwrap(),
                None,
                "{early:?}"
            );
        }
        std::fs::write(&attr, format!("{NQN}\n")).unwrap();
        let c = finder.find(NQN, &portal("10.0.0.1"), HOSTNQN).unwrap();
        assert_eq!(c.map(|c| c.name).as_deref(), Some("nvme0"));
    }

    #[test]
    fn one_finder_reads_each_controller_once_and_sees_new_ones() {
        let fake = FakeHost::new();
        let host = fake.host();
        fake.add_nvme_controller(0, OTHER_NQN, "tcp", "10.0.0.1", 4420, HOSTNQN);
        fake.add_nvme_controller(1, NQN, "tcp", "10.0.0.2", 4420, HOSTNQN);
        let mut finder = ControllerFinder::new(&host);
        assert_eq!(
            finder.find(NQN, &portal("10.0.0.1"), HOSTNQN).unwrap(),
            None
        );
        // Fixed attributes are read once: nvme1's address, were it read again, would match.
        let a = fake.root().join("sys/class/nvme/nvme1/address");
        std::fs::write(&a, "traddr=10.0.0.1,trsvcid=4420\n").unwrap();
        assert_eq!(
            finder.find(NQN, &portal("10.0.0.1"), HOSTNQN).unwrap(),
            None
        );
        // A connect makes nvme2: the next look reads it.
        fake.add_nvme_controller(2, NQN, "tcp", "10.0.0.1", 4420, HOSTNQN);
        assert_eq!(
            finder
                .find(NQN, &portal("10.0.0.1"), HOSTNQN)
                .unwrap()
                .unwrap()
                .name,
            "nvme2"
        );
        // A controller name reused by a new controller is read again. (The old entry's
        // inode is kept in use, so the fake tree cannot hand it to the new entry: sysfs
        // never does.)
        std::fs::hard_link(
            fake.root().join("sys/class/nvme/nvme0"),
            fake.root().join("old-nvme0"),
        )
        .unwrap();
        fake.remove_nvme_controller("nvme0");
        fake.remove_nvme_controller("nvme2");
        fake.add_nvme_controller(0, NQN, "tcp", "10.0.0.1", 4420, HOSTNQN);
        assert_eq!(
            finder
                .find(NQN, &portal("10.0.0.1"), HOSTNQN)
                .unwrap()
                .unwrap()
                .name,
            "nvme0"
        );
    }

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
