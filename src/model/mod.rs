//! The data that crosses hostbrick's boundary: the `connection_info` a storage service
//! sends, parsed into per-protocol properties; the device record a connect returns; the
//! typed identifiers and the secret wrapper they are built from. Nothing here touches the
//! host, and nothing here depends on a connector.

pub(crate) mod connection;
pub(crate) mod ids;
pub(crate) mod iscsi;
pub(crate) mod local;
pub(crate) mod nvme;
pub(crate) mod rbd;
pub(crate) mod record;
pub(crate) mod secret;
