//! Test doubles for code that links hostbrick (cargo feature `testing`): run a connector,
//! an audit or your own code that takes a [`HostContext`](crate::HostContext) against a
//! temporary host tree and scripted programs instead of a real kernel and real tools.
//!
//! The parts:
//!
//! - [`FakeRunner`]: a [`CommandRunner`](crate::CommandRunner) that answers from rules
//!   and records every command it was asked to run.
//! - [`FakeHost`]: a fake host tree (`sys`, `dev`, `etc`, `run`) in a temporary directory,
//!   with block devices, dm-multipath maps and a small "kernel" that answers LUN scans,
//!   device deletes and rescans the way sysfs does: synchronously, inside the write.
//! - SCSI and iSCSI on the tree: SCSI hosts, iSCSI sessions and the LUNs they offer
//!   ([`LunSpec`], [`FakeHost::offer_lun`], [`FakeHost::add_iscsi_session`]).
//! - NVMe-oF on the tree: controllers and namespaces as native multipath shows them
//!   ([`FakeHost::add_nvme_controller`], [`FakeHost::add_nvme_namespace`]).
//! - libvirt: [`validate_disk_xml`] checks a `<disk>` element against libvirt's schema.
//! - [`sim`]: simulated initiator stacks built from the parts above, scripted `iscsiadm`,
//!   `nvme`, `rbd` and friends that change the fake tree as the real tools change a host
//!   ([`sim::iscsi`], [`sim::nvme`], [`sim::rbd`]).
//!
//! ```
//! use hostbrick::testing::{FakeHost, FakeRunner, LunSpec};
//! use hostbrick::{Command, CommandOutput, CommandRunner};
//!
//! let fake = FakeHost::new();
//! fake.add_scsi_host(2);
//! fake.offer_lun(2, LunSpec::new(0, 0, 1, "naa.6001405aaaa", 1 << 20));
//! let runner = FakeRunner::new();
//! runner.on("blockdev", &["--flushbufs"], |_| CommandOutput::ok(""));
//! assert!(runner.run(&Command::new("blockdev").arg("--flushbufs").arg("/dev/sdb")).is_ok());
//! ```

use std::sync::{Mutex, MutexGuard};

mod host;
mod libvirt;
mod nvme;
mod runner;
mod scsi;
pub mod sim;

pub use host::FakeHost;
pub use libvirt::validate_disk_xml;
pub use runner::FakeRunner;
pub use scsi::LunSpec;

/// Locks `m`, also when a panicking test poisoned it: a fake's state stays usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
