//! Encrypted volumes in `attach`: the key manager of `--key-dir`, the encryption metadata
//! (`--encryption FILE`, else the connection_info's top-level `encryption` key, else a
//! request's `encryption` key in `batch`), and the connector that opens and closes it.

use std::sync::Arc;
use std::time::Duration;

use hostbrick::encryption::{
    ControlLocation, EncryptedConnector, EncryptionKey, EncryptionMetadata, FileKeyManager,
    KeyManager,
};
use hostbrick::{Connector, DeviceRecord, HostContext};
use serde_json::Value;

/// The key manager without `--key-dir`: every key is missing, and the error says how to
/// give them. Detaching needs no key.
#[derive(Debug)]
pub struct NoKeys;

impl KeyManager for NoKeys {
    fn key(&self, key_id: &str) -> hostbrick::Result<EncryptionKey> {
        Err(hostbrick::Error::InvalidArgument {
            name: "--key-dir".into(),
            reason: format!(
                "the volume is encrypted (key {key_id}): give the directory of its key file"
            ),
        })
    }
}

/// The key manager over `--key-dir DIR` (checked now), or [`NoKeys`].
pub fn key_manager(dir: Option<&str>) -> hostbrick::Result<Arc<dyn KeyManager>> {
    Ok(match dir {
        Some(d) => Arc::new(FileKeyManager::new(d)?),
        None => Arc::new(NoKeys),
    })
}

/// The metadata of `value` (an `encryption` object; `null` or absent: none).
pub fn metadata(value: Option<&Value>) -> hostbrick::Result<Option<EncryptionMetadata>> {
    match value {
        None => Ok(None),
        Some(v) => EncryptionMetadata::from_value(v),
    }
}

/// What closes a mapping a record carries when no metadata was given: its provider, no
/// key (closing needs none).
fn closing(device: Option<&DeviceRecord>) -> Option<EncryptionMetadata> {
    let enc = device?.encryption.as_ref()?;
    Some(EncryptionMetadata {
        provider: Some(enc.provider),
        cipher: None,
        key_size: None,
        control_location: ControlLocation::FrontEnd,
        encryption_key_id: None,
    })
}

/// `inner`, wrapped in an [`EncryptedConnector`] when the volume is opened on this host:
/// the metadata asks for it, or (to detach) the record carries a mapping.
pub fn wrap(
    inner: Arc<dyn Connector>,
    context: &HostContext,
    timeout: Duration,
    keys: Arc<dyn KeyManager>,
    meta: Option<EncryptionMetadata>,
    device: Option<&DeviceRecord>,
) -> Arc<dyn Connector> {
    let meta = meta
        .filter(EncryptionMetadata::host_decrypts)
        .or_else(|| closing(device));
    match meta {
        Some(m) => Arc::new(EncryptedConnector::new(
            inner,
            context.clone(),
            timeout,
            keys,
            m,
        )),
        None => inner,
    }
}
