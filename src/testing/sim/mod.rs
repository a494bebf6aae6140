//! Simulated initiator stacks: the programs a connector runs, scripted on a [`FakeHost`] so
//! that what they do shows in the tree the way the real tools' work shows in sysfs and
//! `/dev`. A connector (or your code around one) runs against them end to end, with no
//! target, kernel module or root.
//!
//! - [`iscsi`]: `iscsiadm` (node records, discovery, logins with CHAP, sessions),
//!   `multipath`/`multipathd` and `dmsetup remove`, over SCSI LUNs; the fake kernel flushes.
//! - [`nvme`]: the kernel's `/dev/nvme-fabrics` connects and `delete_controller`, `modprobe
//!   nvme-fabrics`, `nvme id-ns` and `mdadm`, over NVMe-oF subsystems with native or no
//!   multipath.
//! - [`rbd`]: `rbd` and `rbd-nbd` `map`/`showmapped`/`unmap`/`info` over Ceph images, with
//!   the keyring check of a cluster that requires `cephx`.
//! - [`crypt`]: `cryptsetup` (LUKS1/LUKS2 headers and their passphrases, dm-crypt mappings
//!   in the tree) and `blkid`, alone or on another simulator's host and runner.
//!
//! Each simulator has the same layout: constants for its target's names, a simulator type
//! (`IscsiSim`, `NvmeSim`, `RbdSim`) with public `fake` and `runner` fields, methods to set
//! the target up (`add_*`, `resize`, `set_reachable`), `options()` for a connector bound
//! to the simulated host, and functions building the `connection_info` the storage service
//! would return. Every answer has the exit status and text of the real program.
//!
//! # Testing your code against a simulated target
//!
//! Your code takes [`ConnectorOptions`]; a test hands it options bound to a simulator and
//! checks what the simulated host went through. In your crate the function below is a
//! `#[test]`.
//!
//! ```
//! use hostbrick::testing::sim::iscsi::{single, IscsiSim, WWID_1};
//! use hostbrick::testing::sim::MIB;
//! use hostbrick::{connector_for, ConnectionInfo, ConnectorOptions, DeviceRecord, DisconnectOptions};
//!
//! /// The code under test: attaches a volume and returns the record to persist...
//! fn attach(options: ConnectorOptions, info: &ConnectionInfo) -> hostbrick::Result<String> {
//!     connector_for(info.protocol(), options)?.connect_volume(info)?.to_json()
//! }
//!
//! /// ... and detaches it with that record, maybe after a restart.
//! fn detach(options: ConnectorOptions, info: &ConnectionInfo, saved: &str) -> hostbrick::Result<()> {
//!     let device = DeviceRecord::from_json(saved)?;
//!     let connector = connector_for(info.protocol(), options)?;
//!     connector.disconnect_volume(info, Some(&device), DisconnectOptions::default())?;
//!     Ok(())
//! }
//!
//! fn attach_then_detach_leaves_the_host_clean() {
//!     let sim = IscsiSim::new(); // a fake host tree; scripted iscsiadm and multipathd
//!     sim.add_target("192.0.2.10:3260", &[(1, WWID_1, 64 * MIB)]);
//!     let info = single("192.0.2.10:3260", 1, "vol-1");
//!     let saved = attach(sim.options(), &info).unwrap();
//!     assert_eq!(sim.session_count(), 1);
//!     assert!(saved.contains("/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-"));
//!     detach(sim.options(), &info, &saved).unwrap();
//!     sim.assert_clean(); // no session, node record, SCSI disk, map or by-path link left
//! }
//! # attach_then_detach_leaves_the_host_clean();
//! ```

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{lock, FakeHost, FakeRunner};
use crate::{Arg, Command, CommandOutput, ConnectionInfo, ConnectorOptions, HostContext};

pub mod crypt;
pub mod iscsi;
pub mod nvme;
pub mod rbd;

pub use crypt::CryptSim;
pub use iscsi::IscsiSim;
pub use nvme::NvmeSim;
pub use rbd::RbdSim;

/// One mebibyte, the unit the simulators' sizes are written in.
pub const MIB: u64 = 1 << 20;

/// The half of a simulator that answers commands: the tree and the simulated tools' state
/// `S`. The runner's rules hold clones of it, never the runner, so that no reference cycle
/// keeps a simulator (and its temporary tree) alive.
pub(crate) struct Tools<S> {
    pub(crate) fake: FakeHost,
    state: Arc<Mutex<S>>,
}

impl<S> Clone for Tools<S> {
    fn clone(&self) -> Self {
        Tools {
            fake: self.fake.clone(),
            state: self.state.clone(),
        }
    }
}

impl<S: Send + 'static> Tools<S> {
    /// Tools on `fake` with `state`.
    pub(crate) fn new(fake: FakeHost, state: S) -> Self {
        Tools {
            fake,
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The simulated tools' state, locked.
    pub(crate) fn state(&self) -> MutexGuard<'_, S> {
        lock(&self.state)
    }

    /// The tree's root directory.
    pub(crate) fn root(&self) -> &Path {
        self.fake.root()
    }

    /// Answers `program` run with arguments starting with `prefix` on `runner`: `answer`
    /// gets a clone of these tools and the command.
    pub(crate) fn answer(
        &self,
        runner: &FakeRunner,
        program: &str,
        prefix: &[&str],
        answer: impl Fn(&Self, &Command) -> CommandOutput + Send + Sync + 'static,
    ) {
        let tools = self.clone();
        runner.on(program, prefix, move |c| answer(&tools, c));
    }
}

impl<S: Send + 'static> Tools<S> {
    /// Answers exchanges with the control device `rel` of the tree (e.g. `dev/nvme-fabrics`)
    /// in place of the kernel: `answer` gets these tools and the request. The tree holds the
    /// answer; it keeps only the state, so no reference cycle keeps the tree alive.
    pub(crate) fn answer_exchanges(
        &self,
        rel: &str,
        answer: impl Fn(&Self, &str) -> std::io::Result<String> + Send + Sync + 'static,
    ) {
        let state = self.state.clone();
        self.fake.answer_exchanges(
            rel,
            Arc::new(move |fake, request| {
                let tools = Tools {
                    fake: fake.clone(),
                    state: state.clone(),
                };
                answer(&tools, request)
            }),
        );
    }
}

/// A command's arguments as the program gets them (secrets in clear).
pub(crate) fn args(c: &Command) -> Vec<String> {
    c.arg_list()
        .iter()
        .map(|a| match a {
            Arg::Plain(s) => s.clone(),
            Arg::Secret(s) => s.expose().to_string(),
        })
        .collect()
}

/// A [`HostContext`] on `fake`'s tree whose commands `runner` answers.
pub(crate) fn context(fake: &FakeHost, runner: &Arc<FakeRunner>) -> HostContext {
    HostContext::new(fake.host(), runner.clone())
}

/// Connector options on `fake`'s tree and `runner`, with short time limits; locks go to
/// the tree's default lock directory (in its state directory, where [`crate::audit`] looks).
pub(crate) fn options(
    fake: &FakeHost,
    runner: &Arc<FakeRunner>,
    operation: Duration,
    scan: Duration,
) -> ConnectorOptions {
    ConnectorOptions::with_context(context(fake, runner))
        .operation_timeout(operation)
        .scan_timeout(scan)
}

/// A `connection_info` of `driver_volume_type` `driver` with `data`.
pub(crate) fn connection_info(driver: &str, data: serde_json::Value) -> ConnectionInfo {
    ConnectionInfo::from_value(&serde_json::json!({"driver_volume_type": driver, "data": data}))
        .expect("simulated connection_info")
}

/// The names in directory `dir`, sorted; none when it is missing.
pub(crate) fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
