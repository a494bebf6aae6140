//! The parsers and host probes beneath the connectors, for fuzz targets, benchmarks and
//! hostbrick's own tests (feature `internals`).
//!
//! Each is a pure function over tool output or a lookup in a host tree; connectors call
//! them with what the host shows. They are not part of the stable API: callers attach
//! volumes through [`crate::connector_for`] and friends.

/// iSCSI: `iscsiadm` output and sysfs sessions.
pub mod iscsi {
    pub use crate::iscsi::iscsiadm::{
        parse_discoverydb, parse_nodes, parse_sessions, IscsiadmStatus, NodeEntry, SessionEntry,
    };
    pub use crate::iscsi::records::record_value;
    pub use crate::iscsi::session::{
        find as find_session, luns as session_luns, Session, SessionFinder,
    };
    pub use crate::properties::parse_initiator_name;
}

/// Host identity: what `get_connector_properties` reads from host files.
pub mod properties {
    pub use crate::properties::{parse_root_mount, smbios_system_uuid};
}

/// The checks connection_info identifiers pass at parse time (the typed ones, [`crate::Iqn`],
/// [`crate::nvme::Nqn`] and [`crate::rbd::ImageSpec`], check in their `FromStr`).
pub mod ids {
    pub use crate::model::connection::{check_volume_id, VOLUME_ID_MAX};
    pub use crate::model::iscsi::{check_chap_username, CHAP_USERNAME_MAX};
    pub use crate::model::nvme::{check_md_alias, MD_ALIAS_MAX};
    pub use crate::model::rbd::{check_ceph_name, monitor_host, CEPH_NAME_MAX};
}

/// NVMe-oF: controllers and namespaces in sysfs, the fabrics device's option string and
/// answer, `nvme` output.
pub mod nvme {
    pub use crate::nvme::cli::{parse_id_ns_size, parse_list_ns};
    pub use crate::nvme::controllers::{
        find_controller, native_multipath, parse_address, Controller, ControllerFinder,
    };
    pub use crate::nvme::fabrics::{connect_options, parse_answer, ConnectArgs, FabricsAnswer};
    pub use crate::nvme::identity::{conflicting_controller, system_uuid};
    pub use crate::nvme::namespaces::{find_namespace, head_name, Namespace};
}

/// Ceph RBD: `rbd` / `rbd-nbd` output and the private Ceph files.
pub mod rbd {
    pub use crate::rbd::cli::{
        is_auth_failure, parse_image_size, parse_mapped_device, parse_mappings, sweep_stale_files,
        CephFiles, Mapping, STALE_KEYRING_AGE,
    };
}

/// Block, SCSI and dm-multipath devices in sysfs and udev's database.
pub mod devices {
    pub use crate::devices::block::udev_record;
    pub use crate::devices::multipath::{holder_map, MultipathMap};
    pub use crate::devices::scsi::{block_name, wwid};
}

/// Uevents, device waits, the attachment registry, the lock poll interval and the binary
/// search list.
pub mod platform {
    pub use crate::platform::cmd::EXTRA_BIN_DIRS;
    pub use crate::platform::lock::LOCK_POLL_INTERVAL;
    pub use crate::platform::registry::Registry;
    pub use crate::platform::uevent::{UdevRecord, Uevent, UeventAction};
    pub use crate::platform::wait::{DeviceWatch, SYSFS_POLL_INTERVAL, UDEV_RECHECK_INTERVAL};
}
