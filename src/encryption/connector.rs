//! [`EncryptedConnector`]: a connector that also opens (and closes) the volume's
//! encryption, so one call attaches an encrypted volume.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::keys::KeyManager;
use super::metadata::EncryptionMetadata;
use super::volume::{close_volume, extend_volume, open_volume};
use crate::connector::{Connector, ConnectorOptions, DisconnectOptions, Disconnected, HostContext};
use crate::error::{Error, Result, RollbackFailure};
use crate::factory::connector_for;
use crate::model::connection::{ConnectionInfo, Protocol};
use crate::model::record::DeviceRecord;
use crate::platform::cancel;

/// Wraps a protocol's connector with a volume's encryption: connect is the inner connect,
/// then [`open_volume`]; disconnect is [`close_volume`], then the inner disconnect; extend
/// is the inner extend, then [`extend_volume`]. The record connect returns carries the
/// mapping ([`DeviceRecord::encryption`]); hand the guest
/// [`DeviceRecord::guest_path`].
///
/// One wrapper serves the volumes of one encryption metadata (usually one volume: build it
/// from the metadata the storage service returned for it). Metadata that asks nothing of
/// the host (back-end, no-op provider) makes it the inner connector.
///
/// The key is fetched before the inner connect, so a key the manager lacks fails the call
/// with nothing attached. A failed open detaches the volume again (the connect leaves
/// nothing); when that fails
/// too the error is [`Error::EncryptedAttach`] with both. A disconnect closes the mapping
/// first: without a record (`device` `None`) it closes the mapping found on every path
/// the inner connector reports for the volume; with `force` a failed close is carried
/// past (reported at the end, as every forced failure is).
///
/// ```
/// use std::sync::Arc;
/// use hostbrick::encryption::{EncryptedConnector, EncryptionMetadata, EncryptionKey, KeyManager};
/// use hostbrick::testing::sim::{crypt::CryptSim, iscsi::{single, IscsiSim, WWID_1}, MIB};
/// use hostbrick::{Connector, DisconnectOptions, Protocol};
///
/// #[derive(Debug)]
/// struct OneKey;
/// impl KeyManager for OneKey {
///     fn key(&self, _id: &str) -> hostbrick::Result<EncryptionKey> {
///         Ok(EncryptionKey::symmetric(vec![7; 32]))
///     }
/// }
///
/// let iscsi = IscsiSim::new();
/// iscsi.add_target("192.0.2.10:3260", &[(1, WWID_1, 64 * MIB)]);
/// let crypt = CryptSim::on(&iscsi.fake, &iscsi.runner);
/// let meta = EncryptionMetadata::from_json(
///     r#"{"provider": "luks", "encryption_key_id": "k1"}"#).unwrap().unwrap();
/// let c = EncryptedConnector::for_protocol(Protocol::Iscsi, iscsi.options(), Arc::new(OneKey), meta).unwrap();
/// let info = single("192.0.2.10:3260", 1, "vol-1");
/// let rec = c.connect_volume(&info).unwrap();
/// assert!(rec.guest_path().to_str().unwrap().starts_with("/dev/mapper/crypt-sd"));
/// c.disconnect_volume(&info, Some(&rec), DisconnectOptions::default()).unwrap();
/// assert!(crypt.mappings().is_empty());
/// iscsi.assert_clean();
/// ```
pub struct EncryptedConnector {
    inner: Arc<dyn Connector>,
    context: HostContext,
    timeout: Duration,
    keys: Arc<dyn KeyManager>,
    meta: EncryptionMetadata,
}

impl fmt::Debug for EncryptedConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedConnector")
            .field("inner", &self.inner)
            .field("meta", &self.meta)
            .field("keys", &self.keys)
            .finish()
    }
}

impl EncryptedConnector {
    /// Wraps `inner` (a `Box<dyn Connector>` from [`connector_for`], or a connector shared
    /// as `Arc<dyn Connector>`), which works on `context`; each encryption step may take up
    /// to `timeout`.
    pub fn new(
        inner: impl Into<Arc<dyn Connector>>,
        context: HostContext,
        timeout: Duration,
        keys: Arc<dyn KeyManager>,
        meta: EncryptionMetadata,
    ) -> Self {
        EncryptedConnector {
            inner: inner.into(),
            context,
            timeout,
            keys,
            meta,
        }
    }

    /// The connector of `protocol` with `options` ([`connector_for`]), wrapped; the
    /// encryption steps run on the options' context within their operation timeout.
    pub fn for_protocol(
        protocol: Protocol,
        options: ConnectorOptions,
        keys: Arc<dyn KeyManager>,
        meta: EncryptionMetadata,
    ) -> Result<Self> {
        let context = options.context.clone();
        let timeout = options.operation_timeout;
        let inner = connector_for(protocol, options)?;
        Ok(Self::new(inner, context, timeout, keys, meta))
    }

    /// The encryption metadata.
    pub fn metadata(&self) -> &EncryptionMetadata {
        &self.meta
    }

    /// The wrapped connector.
    pub fn inner(&self) -> &dyn Connector {
        &*self.inner
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// Records of the volume's devices on the host, from the inner connector, for the
    /// steps that get no record.
    fn records_from_host(&self, info: &ConnectionInfo) -> Result<Vec<DeviceRecord>> {
        Ok(self
            .inner
            .get_volume_paths(info)?
            .into_iter()
            .map(|p| DeviceRecord::block(self.inner.protocol(), p, None))
            .collect())
    }
}

impl Connector for EncryptedConnector {
    fn protocol(&self) -> Protocol {
        self.inner.protocol()
    }

    fn connect_volume(&self, info: &ConnectionInfo) -> Result<DeviceRecord> {
        if self.meta.host_decrypts() {
            // A key that cannot be had fails the call before anything is attached.
            drop(self.keys.key(self.meta.key_id()?)?);
        }
        let attached = self.inner.connect_volume(info)?;
        match open_volume(
            &self.context,
            &self.meta,
            &*self.keys,
            &attached,
            self.deadline(),
        ) {
            Ok(opened) => Ok(opened),
            Err(cause) => {
                let _shield = cancel::shield();
                tracing::warn!(error = %cause.chain(), "opening the encrypted volume failed; detaching it again");
                match self
                    .inner
                    .disconnect_volume(info, Some(&attached), DisconnectOptions::default())
                    .and_then(Disconnected::into_result)
                {
                    Ok(()) => Err(cause),
                    Err(error) => Err(Error::EncryptedAttach {
                        cause: Box::new(cause),
                        rollback: vec![RollbackFailure {
                            step: "connect",
                            error,
                        }],
                    }),
                }
            }
        }
    }

    fn disconnect_volume(
        &self,
        info: &ConnectionInfo,
        device: Option<&DeviceRecord>,
        options: DisconnectOptions,
    ) -> Result<Disconnected> {
        let deadline = self.deadline();
        let closed = match device {
            Some(d) => close_volume(&self.context, d, deadline),
            None => self.records_from_host(info).and_then(|recs| {
                recs.iter()
                    .try_for_each(|r| close_volume(&self.context, r, deadline))
            }),
        };
        let carried = match closed {
            Ok(()) => None,
            Err(e) if options.force => {
                tracing::warn!(error = %e.chain(), "closing the dm-crypt mapping failed; detaching anyway (force)");
                Some(e)
            }
            Err(e) => return Err(e),
        };
        let mut done = self.inner.disconnect_volume(info, device, options)?;
        if let Some(e) = carried {
            if options.ignore_errors {
                done.failures.insert(0, e);
            } else {
                let mut failures = vec![e];
                failures.append(&mut done.failures);
                return Err(Error::DisconnectIncomplete { failures });
            }
        }
        Ok(done)
    }

    fn extend_volume(&self, info: &ConnectionInfo) -> Result<u64> {
        let size = self.inner.extend_volume(info)?;
        if !self.meta.host_decrypts() {
            return Ok(size);
        }
        let Some(rec) = self.records_from_host(info)?.into_iter().next() else {
            return Err(Error::RecordMismatch {
                what: "volume".into(),
                reason: "the connector reports no device of the volume on this host".into(),
            });
        };
        extend_volume(
            &self.context,
            &self.meta,
            &*self.keys,
            &rec,
            self.deadline(),
        )
    }

    fn get_volume_paths(&self, info: &ConnectionInfo) -> Result<Vec<PathBuf>> {
        self.inner.get_volume_paths(info)
    }

    fn get_search_path(&self) -> Option<PathBuf> {
        self.inner.get_search_path()
    }

    fn get_all_available_volumes(&self) -> Result<Vec<PathBuf>> {
        self.inner.get_all_available_volumes()
    }

    fn check_valid_device(&self, path: &Path) -> Result<()> {
        self.inner.check_valid_device(path)
    }
}
