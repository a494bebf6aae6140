//! The NVMe-oF part of an audit: controllers without namespaces in use.

use crate::audit::{split_busy, ControllerReason, Found, OrphanController, StaleRecord};
use crate::devices::block;
use crate::error::Result;
use crate::platform::host::Host;
use crate::platform::lock::LockDir;
use crate::platform::registry::Registry;

use super::controllers::{all_controllers, controller};
use super::namespaces::namespaces;
use super::{controller_lock_key, Attachment, NvmePortal, NvmeTransport, REGISTRY};

/// The NQN of NVMe discovery controllers: they never carry namespaces.
const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// The NVMe-oF controllers on `host` without namespaces in use, split by whether a
/// hostbrick operation holds their controller lock in `locks`.
pub(crate) fn orphans(host: &Host, locks: &LockDir) -> Result<Found<OrphanController>> {
    split_busy(controllers(host)?, |c| {
        let Some(portal) = &c.portal else {
            return Ok(false);
        };
        locks.is_held(&controller_lock_key(&c.subsysnqn, portal))
    })
}

/// The registry entries of NVMe volumes the host no longer shows: no controller of their
/// subsystem at any of their portals.
pub(crate) fn stale_records(host: &Host) -> Result<Vec<StaleRecord>> {
    let entries = Registry::new(host, REGISTRY).entries::<Attachment>()?;
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let ctrls = all_controllers(host)?;
    Ok(entries
        .into_iter()
        .filter(|(_, a)| !a.has_controller(&ctrls))
        .map(|(entry, _)| StaleRecord {
            registry: REGISTRY.to_string(),
            entry,
            volume_id: None,
            reason: "no controller of its subsystem at its portals".into(),
        })
        .collect())
}

/// Every fabrics controller on `host` without namespaces in use, held or not.
fn controllers(host: &Host) -> Result<Vec<OrphanController>> {
    let attachments: Vec<Attachment> = Registry::new(host, REGISTRY)
        .entries::<Attachment>()?
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    let mut out = Vec::new();
    for name in host.list_dir(&host.sys("class/nvme"))? {
        let Some(c) = controller(host, &name)? else {
            continue;
        };
        // Only fabrics transports hostbrick connects (not PCIe disks, not loop or FC),
        // and never discovery controllers.
        let Ok(transport) = c.transport.parse::<NvmeTransport>() else {
            continue;
        };
        if c.subsysnqn == DISCOVERY_NQN {
            continue;
        }
        let namespaces: Vec<String> = namespaces(host, &c.name)?
            .into_iter()
            .map(|n| n.head)
            .collect();
        let hostnqn = c.hostnqn.clone().unwrap_or_default();
        let recorded = attachments.iter().any(|a| {
            a.copies.iter().any(|copy| {
                copy.portals
                    .iter()
                    .any(|p| c.serves(copy.nqn.as_str(), p, &hostnqn))
            })
        });
        let mut held = false;
        for head in &namespaces {
            held = held || !block::holders(host, head)?.is_empty();
        }
        if !namespaces.is_empty() && (recorded || held) {
            continue;
        }
        let portal = match (c.address.get("traddr"), c.address.get("trsvcid")) {
            (Some(a), Some(p)) => p.parse::<u16>().ok().map(|port| NvmePortal {
                address: a.clone(),
                port,
                transport,
            }),
            _ => None,
        };
        out.push(OrphanController {
            reason: if namespaces.is_empty() {
                ControllerReason::NoNamespaces
            } else {
                ControllerReason::NamespacesUnused
            },
            name: c.name,
            subsysnqn: c.subsysnqn,
            portal,
            hostnqn: c.hostnqn,
            state: c.state,
            namespaces,
        });
    }
    Ok(out)
}
