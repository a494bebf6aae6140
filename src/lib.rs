//! hostbrick attaches remote block volumes to a Linux host and hands them to virtual
//! machines: what OpenStack's os-brick is to Nova and Cinder, as a synchronous Rust library.
//!
//! A storage service (Cinder) exports a volume and returns a `connection_info`; a
//! [`Connector`] for its protocol attaches it and returns a [`DeviceRecord`]; the caller
//! persists the record and later hands it back to detach, even after a restart.
//!
//! # Connect, persist, disconnect
//!
//! ```no_run
//! use hostbrick::{connector_for, ConnectionInfo, ConnectorOptions, DeviceRecord, DisconnectOptions};
//!
//! # fn main() -> hostbrick::Result<()> {
//! // What Cinder's initialize_connection returned, verbatim.
//! let info = ConnectionInfo::from_json(r#"{
//!     "driver_volume_type": "iscsi",
//!     "data": {
//!         "target_portal": "192.0.2.10:3260",
//!         "target_iqn": "iqn.2010-10.org.openstack:volume-0001",
//!         "target_lun": 1,
//!         "volume_id": "0001",
//!         "auth_method": "CHAP", "auth_username": "user", "auth_password": "secret"
//!     }
//! }"#)?;
//!
//! let connector = connector_for(info.protocol(), ConnectorOptions::new())?;
//! let device = connector.connect_volume(&info)?;
//! println!("attached at {}", device.path.display());
//!
//! // Persist the record next to the attachment...
//! let saved = device.to_json()?;
//!
//! // ... and, possibly after a restart, detach with it.
//! let device = DeviceRecord::from_json(&saved)?;
//! connector.disconnect_volume(&info, Some(&device), DisconnectOptions::default())?;
//! # Ok(())
//! # }
//! ```
//!
//! # Where things are
//!
//! - The crate root: what a caller of connect, disconnect, properties, libvirt and attach
//!   needs ([`connector_for`], [`Connector`], [`ConnectionInfo`], [`ConnectorOptions`],
//!   [`DeviceRecord`], [`Error`], [`HostContext`], [`get_connector_properties`], [`audit()`]).
//! - [`iscsi`], [`nvme`], [`rbd`], [`local`]: each protocol's parsed `connection_info` data
//!   and options.
//! - [`encryption`]: encrypted volumes: their metadata, keys and the host-side encryptors.
//! - [`libvirt`]: the typed libvirt disk and its XML, built the way Nova builds it.
//! - [`attach`]: attaching a volume to a guest in steps with undo, as Nova does.
//! - [`audit`](mod@audit): what hostbrick finds orphaned on the host.
//! - `testing` (feature `testing`): fake host trees, a scripted runner and simulated
//!   initiator stacks; `internals` (feature `internals`): the parsers and host probes
//!   beneath the connectors, for fuzz targets and benchmarks.
//!
//! # Testing code that uses hostbrick
//!
//! Everything hostbrick touches goes through a [`Host`] (file roots) and a
//! [`CommandRunner`] (external programs), both in a [`HostContext`]. With the `testing`
//! feature, `hostbrick::testing` has a fake host tree and a scripted runner:
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! use std::sync::Arc;
//! use hostbrick::testing::{FakeHost, FakeRunner};
//! use hostbrick::{get_connector_properties, HostContext, CommandOutput};
//!
//! let fake = FakeHost::new();
//! fake.set_initiator_name("iqn.1993-08.org.debian:01:host1");
//! let runner = FakeRunner::new();
//! runner.on("multipathd", &["show", "status"], |_| CommandOutput::ok("path checker states:\n"));
//! let ctx = HostContext::new(fake.host(), Arc::new(runner));
//! let props = get_connector_properties(&ctx, "192.0.2.1", true, false, "host1").unwrap();
//! assert!(props.multipath);
//! assert_eq!(props.initiator.as_deref(), Some("iqn.1993-08.org.debian:01:host1"));
//! # }
//! ```
#![warn(missing_docs)]
// Some parsers and probes are reached from outside only through `internals` (fuzz targets,
// benchmarks). Without that feature they look unused; CI lints with every feature on, where
// dead code is still found.
#![cfg_attr(not(feature = "internals"), allow(dead_code))]

pub mod attach;
pub mod audit;
mod connector;
mod devices;
pub mod encryption;
mod error;
mod factory;
#[cfg(feature = "internals")]
pub mod internals;
pub mod iscsi;
pub mod libvirt;
pub mod local;
mod model;
pub mod nvme;
mod platform;
mod properties;
pub mod rbd;

#[cfg(feature = "testing")]
pub mod testing;

pub use attach::{
    AttachRequest, AttachmentRecord, Domain, DomainFlags, Orchestrator, StorageService,
};
pub use audit::{audit, audit_with_locks, AuditReport};
pub use connector::{
    Connector, ConnectorOptions, DisconnectOptions, Disconnected, HostContext, MultipathMode,
};
pub use error::{AttemptFailure, Error, ExitStatus, Result, RollbackFailure};
pub use factory::connector_for;
pub use libvirt::{DiskBus, DiskConfig, DiskTarget};
pub use model::connection::{
    AccessMode, ConnectionInfo, DiskProperties, Protocol, VolumeProperties,
};
pub use model::ids::{Hctl, Iqn, ParseIdError, Portal, Wwid};
pub use model::record::{
    DeviceKind, DeviceRecord, EncryptionRecord, LocalRecord, NetworkSource, NvmePathRecord,
    PathRecord, RbdRecord,
};
pub use model::secret::Secret;
pub use platform::cmd::{Arg, Cancel, Command, CommandOutput, CommandRunner, SystemRunner};
pub use platform::host::{ExchangeHook, FlushHook, Host, WriteHook};
pub use platform::lock::{LockDir, LockGuard, LockMode};
pub use properties::{get_connector_properties, ConnectorProperties};
