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

mod attach;
mod audit;
mod connector;
mod devices;
mod error;
mod factory;
mod iscsi;
mod libvirt;
mod local;
mod model;
mod nvme;
mod platform;
mod properties;
mod rbd;

#[cfg(feature = "testing")]
pub mod testing;

pub use attach::{
    next_device_name, parse_domblklist, AttachRequest, Attachment, AttachmentRecord,
    ConnectorFactory, Domain, DomainDisk, DomainFlags, JsonFileStorage, Orchestrator,
    StorageService, StoredConnectionInfo, VirshDomain,
};
pub use audit::{
    audit, audit_with_locks, AuditReport, ControllerReason, InProgress, MapReason, MappingReason,
    OrphanController, OrphanLun, OrphanMap, OrphanMapping, OrphanSession, SessionReason,
    AUDIT_COMMAND_TIMEOUT,
};
pub use connector::{
    Connector, ConnectorOptions, DisconnectOptions, HostContext, IscsiOptions, MultipathMode,
    NvmeOptions, RbdAttach, RbdOptions,
};
pub use devices::block::udev_record;
pub use devices::multipath::{holder_map, MultipathMap};
pub use devices::scsi::{block_name as scsi_block_name, wwid as scsi_wwid};
pub use error::{AttemptFailure, Error, ExitStatus, Result, RollbackFailure};
pub use factory::connector_for;
pub use iscsi::{
    by_path_name, find_session, parse_nodes, parse_sessions, session_luns, ChapCredentials,
    IscsiProperties, IscsiTarget, IscsiadmStatus, NodeEntry, Session, SessionEntry, SessionFinder,
};
pub use libvirt::{
    BlockIo, CacheMode, DetectZeroes, DiscardMode, DiskAddress, DiskAuth, DiskBus, DiskConfig,
    DiskDriver, DiskSource, DiskTarget, IoMode, IoTune, NetworkDisk, NetworkHost, NetworkProtocol,
    SecretType,
};
pub use model::connection::{
    AccessMode, ConnectionInfo, DiskProperties, Protocol, VolumeProperties,
};
pub use model::ids::{Hctl, Iqn, ParseIdError, Portal, Wwid};
pub use model::local::LocalProperties;
pub use model::record::{
    DeviceKind, DeviceRecord, NetworkSource, NvmePathRecord, PathRecord, RbdRecord,
};
pub use model::secret::Secret;
pub use nvme::{
    conflicting_controller, find_controller, find_namespace, head_name, host_identity,
    is_already_connected, native_multipath, parse_address, parse_id_ns_size, system_uuid,
    Controller, ControllerFinder, IdentitySource, Namespace, NamespaceId, Nqn, NvmeHostIdentity,
    NvmePortal, NvmeProperties, NvmeTarget, NvmeTransport,
};
pub use platform::cmd::{
    Arg, Cancel, Command, CommandOutput, CommandRunner, SystemRunner, EXTRA_BIN_DIRS,
};
pub use platform::host::{Host, WriteHook};
pub use platform::lock::{LockDir, LockGuard, LockMode};
pub use platform::registry::Registry;
pub use platform::uevent::{UdevRecord, Uevent, UeventAction};
pub use platform::wait::{DeviceWatch, SYSFS_POLL_INTERVAL, UDEV_RECHECK_INTERVAL};
pub use properties::{get_connector_properties, parse_initiator_name, ConnectorProperties};
pub use rbd::{
    is_auth_failure, network_source, parse_image_size, parse_mapped_device, parse_mappings,
    CephFiles, ImageSpec, Mapping, Monitor, RbdMapper, RbdProperties,
};
