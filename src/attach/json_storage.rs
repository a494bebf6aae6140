//! A storage service served from JSON files, for examples and for hosts whose volumes are
//! exported by an outside controller that drops a connection_info per volume.
//!
//! Layout under the directory:
//! - `<volume_id>.json`: the volume's connection_info, written by the controller; an
//!   encrypted volume's metadata (as Cinder returns it) in its top-level `encryption` key,
//!   beside `driver_volume_type` and `data`;
//! - `attachments/<volume_id>@<instance>.json`: one per attachment, written here (state
//!   `attaching` → `attached`, removed on delete), with the connector properties the
//!   controller should export to.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::attach::{Attachment, StorageService};
use crate::encryption::EncryptionMetadata;
use crate::error::{Error, Result};
use crate::model::connection::ConnectionInfo;
use crate::properties::ConnectorProperties;

/// Connection infos from `<dir>/<volume_id>.json`; attachments in `<dir>/attachments/`.
#[derive(Debug, Clone)]
pub struct JsonFileStorage {
    dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct AttachmentFile {
    id: String,
    volume_id: String,
    instance: String,
    state: String,
    connector: ConnectorProperties,
}

impl JsonFileStorage {
    /// Volumes in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JsonFileStorage { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn volume_path(&self, volume_id: &str) -> Result<PathBuf> {
        Ok(self
            .dir
            .join(format!("{}.json", file_name("volume_id", volume_id)?)))
    }

    fn attachment_path(&self, id: &str) -> Result<PathBuf> {
        Ok(self
            .dir
            .join("attachments")
            .join(format!("{}.json", file_name("attachment_id", id)?)))
    }

    fn read_attachment(&self, id: &str) -> Result<Option<AttachmentFile>> {
        let path = self.attachment_path(id)?;
        match fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|e| Error::UnexpectedContent {
                        path,
                        reason: format!("not an attachment file: {e}"),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Writes the attachment file whole or not at all.
    fn write_attachment(&self, a: &AttachmentFile) -> Result<()> {
        let path = self.attachment_path(&a.id)?;
        let dir = self.dir.join("attachments");
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let text = serde_json::to_string_pretty(a).map_err(|e| Error::UnexpectedContent {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|e| Error::io(&dir, e))?;
        tmp.write_all(text.as_bytes())
            .map_err(|e| Error::io(tmp.path(), e))?;
        tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
        Ok(())
    }

    fn attachments_of(&self, volume_id: &str) -> Result<Vec<AttachmentFile>> {
        let dir = self.dir.join("attachments");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json") {
                if let Some(a) = self.read_attachment(id)? {
                    if a.volume_id == volume_id {
                        out.push(a);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A name used as a file name: no path separators, no hidden files.
fn file_name<'a>(what: &str, s: &'a str) -> Result<&'a str> {
    let ok = !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':'));
    if ok {
        Ok(s)
    } else {
        Err(Error::InvalidArgument {
            name: what.to_string(),
            reason: format!("{s:?} must be letters, digits and - _ . @ : (a file name)"),
        })
    }
}

impl StorageService for JsonFileStorage {
    fn create_attachment(
        &self,
        volume_id: &str,
        instance: &str,
        connector: &ConnectorProperties,
    ) -> Result<Attachment> {
        let path = self.volume_path(volume_id)?;
        let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let connection_info: Value =
            serde_json::from_str(&text).map_err(|e| Error::UnexpectedContent {
                path: path.clone(),
                reason: format!("not JSON: {e}"),
            })?;
        // Refuse what cannot be connected before recording anything.
        let info = ConnectionInfo::from_value(&connection_info)?;
        let id = format!("{volume_id}@{}", file_name("instance", instance)?);
        let existing = self.attachments_of(volume_id)?;
        if existing.iter().any(|a| a.id == id) {
            return Err(Error::InvalidArgument {
                name: "volume_id".into(),
                reason: format!("volume {volume_id} is already attached to {instance}"),
            });
        }
        if !existing.is_empty() && !info.disk().multiattach {
            return Err(Error::InvalidArgument {
                name: "volume_id".into(),
                reason: format!(
                    "volume {volume_id} is attached to {} and is not multiattach",
                    existing[0].instance
                ),
            });
        }
        self.write_attachment(&AttachmentFile {
            id: id.clone(),
            volume_id: volume_id.to_string(),
            instance: instance.to_string(),
            state: "attaching".into(),
            connector: connector.clone(),
        })?;
        Ok(Attachment {
            id,
            connection_info,
        })
    }

    fn complete_attachment(&self, attachment_id: &str) -> Result<()> {
        let mut a = self
            .read_attachment(attachment_id)?
            .ok_or_else(|| Error::InvalidArgument {
                name: "attachment_id".into(),
                reason: format!("no attachment {attachment_id}"),
            })?;
        a.state = "attached".into();
        self.write_attachment(&a)
    }

    fn encryption(&self, volume_id: &str) -> Result<Option<EncryptionMetadata>> {
        let path = self.volume_path(volume_id)?;
        let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::UnexpectedContent {
            path: path.clone(),
            reason: format!("not JSON: {e}"),
        })?;
        match v.get("encryption") {
            None => Ok(None),
            Some(meta) => EncryptionMetadata::from_value(meta),
        }
    }

    fn delete_attachment(&self, attachment_id: &str) -> Result<()> {
        let path = self.attachment_path(attachment_id)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props() -> ConnectorProperties {
        serde_json::from_value(serde_json::json!({
            "platform": "x86_64", "os_type": "linux", "ip": "192.0.2.1", "host": "h1",
            "multipath": false, "enforce_multipath": false
        }))
        .unwrap()
    }

    #[test]
    fn attachment_lifecycle_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let s = JsonFileStorage::new(dir.path());
        fs::write(
            dir.path().join("vol1.json"),
            r#"{"driver_volume_type": "local", "data": {"device_path": "/dev/loop0"}}"#,
        )
        .unwrap();
        let a = s.create_attachment("vol1", "vm1", &props()).unwrap();
        assert_eq!(a.id, "vol1@vm1");
        assert_eq!(a.connection_info["data"]["device_path"], "/dev/loop0");
        assert_eq!(
            s.read_attachment(&a.id).unwrap().unwrap().state,
            "attaching"
        );
        // Not multiattach: a second guest is refused, as is the same guest twice.
        assert!(matches!(
            s.create_attachment("vol1", "vm2", &props()),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(s.create_attachment("vol1", "vm1", &props()).is_err());
        s.complete_attachment(&a.id).unwrap();
        assert_eq!(s.read_attachment(&a.id).unwrap().unwrap().state, "attached");
        s.delete_attachment(&a.id).unwrap();
        s.delete_attachment(&a.id).unwrap();
        assert!(s.read_attachment(&a.id).unwrap().is_none());
        assert!(s.complete_attachment(&a.id).is_err());

        // Missing volume, bad names, invalid connection_info: errors, nothing recorded.
        assert!(matches!(
            s.create_attachment("nope", "vm1", &props()),
            Err(Error::Io { .. })
        ));
        assert!(s
            .create_attachment("../etc/passwd", "vm1", &props())
            .is_err());
        assert!(s.create_attachment("vol1", "a/b", &props()).is_err());
        fs::write(
            dir.path().join("bad.json"),
            r#"{"driver_volume_type": "iscsi", "data": {}}"#,
        )
        .unwrap();
        assert!(matches!(
            s.create_attachment("bad", "vm1", &props()),
            Err(Error::InvalidConnectionInfo { .. })
        ));
        assert!(s.attachments_of("bad").unwrap().is_empty());
    }

    #[test]
    fn encryption_metadata_from_the_volume_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = JsonFileStorage::new(dir.path());
        fs::write(
            dir.path().join("plain.json"),
            r#"{"driver_volume_type": "local", "data": {"device_path": "/dev/loop0"}}"#,
        )
        .unwrap();
        fs::write(
            dir.path().join("enc.json"),
            r#"{"driver_volume_type": "local", "data": {"device_path": "/dev/loop1",
                "encrypted": true},
                "encryption": {"provider": "luks", "control_location": "front-end",
                               "encryption_key_id": "key-1"}}"#,
        )
        .unwrap();
        fs::write(
            dir.path().join("badenc.json"),
            r#"{"driver_volume_type": "local", "data": {"device_path": "/dev/loop1"},
                "encryption": {"provider": "rot13", "encryption_key_id": "key-1"}}"#,
        )
        .unwrap();
        assert_eq!(s.encryption("plain").unwrap(), None);
        let m = s.encryption("enc").unwrap().unwrap();
        assert_eq!(m.key_id().unwrap(), "key-1");
        assert_eq!(
            s.encryption("badenc").unwrap_err().kind(),
            "invalid_encryption"
        );
        assert!(s.encryption("missing").is_err());
        // The connection_info still parses with the extra key.
        let a = s.create_attachment("enc", "vm1", &props()).unwrap();
        assert_eq!(a.connection_info["encryption"]["provider"], "luks");
    }
}
