//! The `data` of a `local` connection_info: a block device already on this host.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::model::connection::{AccessMode, Fields};

/// The `data` of a `local` connection_info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalProperties {
    /// `device_path`: the block device, an absolute path under /dev.
    pub device_path: PathBuf,
    /// `volume_id`.
    pub volume_id: Option<String>,
    /// `access_mode`.
    pub access_mode: AccessMode,
}

impl LocalProperties {
    pub(crate) fn from_fields(f: &Fields<'_>) -> Result<Self> {
        let path = f.str_req("device_path")?;
        let device_path = PathBuf::from(path);
        if !device_path.is_absolute() || !device_path.starts_with("/dev") {
            return Err(Error::invalid(
                f.name("device_path"),
                format!("{path:?} is not an absolute path under /dev"),
            ));
        }
        Ok(LocalProperties {
            device_path,
            volume_id: f.volume_id()?,
            access_mode: f.access_mode()?.unwrap_or_default(),
        })
    }
}
