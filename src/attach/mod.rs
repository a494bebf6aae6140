//! Attaching a volume to a guest the way Nova does, as explicit steps with undo:
//!
//! 1. take the guest's lock (two attaches to one guest never pick the same name);
//! 2. pick the next free device name on the bus;
//! 3. ask the storage service for an attachment (it initializes the connection for this
//!    host's connector properties and returns the connection_info);
//! 4. for an encrypted volume, get its encryption metadata and key and settle who decrypts
//!    it ([`Decryption`]);
//! 5. connect the volume on this host;
//! 6. host decryption: open it with dm-crypt ([`crate::encryption::open_volume`]); native
//!    decryption: check its LUKS1 header (format a blank volume), define the volume's
//!    libvirt secret and set its value ([`Secrets`]);
//! 7. build the disk XML (over the decrypted device, or with `<encryption>` over the raw
//!    one) and attach it to the domain;
//! 8. mark the attachment complete.
//!
//! A failed step undoes the steps before it in reverse order (detach from the domain,
//! undefine the secret or close the mapping, disconnect, delete the attachment) and the
//! error carries the cause and any undo that failed too. Detach mirrors it from the
//! persisted [`AttachmentRecord`].

mod encrypted;
mod json_storage;
mod secrets;
mod virsh;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::connector::{Connector, ConnectorOptions, DisconnectOptions, HostContext};
use crate::encryption::{EncryptionMetadata, KeyManager};
use crate::error::{Error, Result, RollbackFailure};
use crate::factory::connector_for;
use crate::libvirt::{DiskBus, DiskConfig, DiskEncryption, DiskTarget};
use crate::model::connection::{ConnectionInfo, Protocol};
use crate::model::record::DeviceRecord;
use crate::platform::lock::{LockDir, LockMode};
use crate::properties::ConnectorProperties;

pub use json_storage::JsonFileStorage;
pub use secrets::{parse_secret_list, volume_secret_xml, SecretListEntry, Secrets, VirshSecrets};
pub use virsh::{parse_domblklist, DomainDisk, VirshDomain};

/// An attachment the storage service created: its id and the connection_info for this
/// host.
#[derive(Clone, PartialEq)]
pub struct Attachment {
    /// The attachment id.
    pub id: String,
    /// The connection_info, verbatim (it may hold secrets; never printed).
    pub connection_info: Value,
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attachment")
            .field("id", &self.id)
            .field(
                "connection_info",
                &StoredConnectionInfo::redacted(&self.connection_info),
            )
            .finish()
    }
}

/// The storage side (Cinder's attachment API).
pub trait StorageService: Send + Sync {
    /// Creates an attachment of `volume_id` to `instance` and initializes the connection for
    /// a host with these connector properties; returns the connection_info.
    fn create_attachment(
        &self,
        volume_id: &str,
        instance: &str,
        connector: &ConnectorProperties,
    ) -> Result<Attachment>;

    /// Marks the attachment complete: the guest has the disk.
    fn complete_attachment(&self, attachment_id: &str) -> Result<()>;

    /// Deletes the attachment and terminates the connection. Deleting one already gone is
    /// success.
    fn delete_attachment(&self, attachment_id: &str) -> Result<()>;

    /// The volume's encryption metadata (Cinder's `GET /volumes/{id}/encryption`), `None`
    /// for a volume that is not encrypted. The default knows of none: an attach of a
    /// volume whose connection_info says `encrypted` then fails before anything is
    /// connected, rather than give the guest ciphertext.
    fn encryption(&self, volume_id: &str) -> Result<Option<EncryptionMetadata>> {
        let _ = volume_id;
        Ok(None)
    }
}

/// Where a domain change applies: the running guest, its persistent config, or both.
/// Neither means libvirt's "current" state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DomainFlags {
    /// The running guest (`--live`, `VIR_DOMAIN_AFFECT_LIVE`).
    pub live: bool,
    /// The persistent definition (`--config`, `VIR_DOMAIN_AFFECT_CONFIG`).
    pub config: bool,
}

impl DomainFlags {
    /// Only the running guest.
    pub const LIVE: DomainFlags = DomainFlags {
        live: true,
        config: false,
    };
    /// The running guest and its persistent definition, as Nova does for a running,
    /// persistent domain.
    pub const LIVE_AND_CONFIG: DomainFlags = DomainFlags {
        live: true,
        config: true,
    };
}

/// The hypervisor side: one guest.
pub trait Domain: Send + Sync {
    /// The guest's name.
    fn name(&self) -> &str;

    /// Attaches a device described by its XML.
    fn attach_device(&self, xml: &str, flags: DomainFlags) -> Result<()>;

    /// Detaches the device described by its XML; returns once the guest let go of it.
    fn detach_device(&self, xml: &str, flags: DomainFlags) -> Result<()>;

    /// The target names (`vda`, `sdb`, ...) of the guest's disks.
    fn disk_targets(&self) -> Result<Vec<String>>;
}

/// Makes the connector for a protocol; [`ConnectorOptions`] is the real one.
pub trait ConnectorFactory: Send + Sync {
    /// The connector for `protocol`.
    fn connector(&self, protocol: Protocol) -> Result<Box<dyn Connector>>;
}

impl ConnectorFactory for ConnectorOptions {
    fn connector(&self, protocol: Protocol) -> Result<Box<dyn Connector>> {
        connector_for(protocol, self.clone())
    }
}

/// The most device names per bus prefix: `vda` … `vdzz`.
const MAX_DEVICE_NAMES: usize = 26 + 26 * 26;

/// The first device name on `bus` that no disk in `used` has: `vda`, `vdb`, … `vdz`,
/// `vdaa`, … (the kernel's naming order).
pub fn next_device_name(bus: DiskBus, used: &[String]) -> Result<String> {
    let prefix = bus.dev_prefix();
    (0..MAX_DEVICE_NAMES)
        .map(|i| format!("{prefix}{}", disk_letters(i)))
        .find(|name| !used.iter().any(|u| u == name))
        .ok_or_else(|| Error::InvalidArgument {
            name: "device name".into(),
            reason: format!("all {MAX_DEVICE_NAMES} {prefix}* names are taken"),
        })
}

/// `0 → a`, `25 → z`, `26 → aa`, …
fn disk_letters(mut i: usize) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'a' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The `data` keys of a connection_info that hold secrets: a record never keeps them.
/// (`secret_uuid` and `secret_type` name a libvirt secret; they are no secret themselves.)
pub const SECRET_KEYS: [&str; 3] = ["auth_password", "discovery_auth_password", "keyring"];

/// The `data` keys that ask for CHAP: a record drops them (when they say `CHAP`) with the
/// passwords, so that it still parses (CHAP without a password is refused) and describes
/// the volume without CHAP, which is all a detach needs.
const CHAP_METHOD_KEYS: [&str; 2] = ["auth_method", "discovery_auth_method"];

/// A connection_info kept in a record, without its secrets: a detach needs none, so the
/// CHAP passwords and the keyring are left out ([`StoredConnectionInfo::new`]) and
/// serialising leaves them out too, whatever the value holds. `Debug` shows only the
/// protocol.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct StoredConnectionInfo(pub Value);

impl StoredConnectionInfo {
    /// Keeps `connection_info` without its secrets ([`SECRET_KEYS`]) and CHAP settings.
    pub fn new(connection_info: &Value) -> Self {
        let mut v = connection_info.clone();
        if let Some(data) = v.get_mut("data").and_then(Value::as_object_mut) {
            for key in SECRET_KEYS {
                data.remove(key);
            }
            for key in CHAP_METHOD_KEYS {
                let chap = data
                    .get(key)
                    .and_then(Value::as_str)
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("chap"));
                if chap {
                    data.remove(key);
                }
            }
        }
        StoredConnectionInfo(v)
    }

    /// Parses it.
    pub fn parse(&self) -> Result<ConnectionInfo> {
        ConnectionInfo::from_value(&self.0)
    }

    fn redacted(v: &Value) -> String {
        let kind = v
            .get("driver_volume_type")
            .and_then(Value::as_str)
            .unwrap_or("?");
        format!("{{driver_volume_type: {kind:?}, data: <redacted>}}")
    }
}

impl Serialize for StoredConnectionInfo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        StoredConnectionInfo::new(&self.0).0.serialize(s)
    }
}

impl fmt::Debug for StoredConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Self::redacted(&self.0))
    }
}

/// Everything needed to detach later, even after a restart: persist it with
/// [`AttachmentRecord::to_json`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    /// The storage service's attachment id.
    pub attachment_id: String,
    /// The volume.
    pub volume_id: String,
    /// The guest.
    pub domain: String,
    /// The connection_info the volume was connected with.
    pub connection_info: StoredConnectionInfo,
    /// What connect returned.
    pub device: DeviceRecord,
    /// The guest's name for the disk.
    pub target_dev: String,
    /// The disk XML given to the domain.
    pub disk_xml: String,
    /// Where it was attached.
    pub flags: DomainFlags,
    /// The volume's encryption metadata (no key), when it is decrypted on this host or by
    /// QEMU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionMetadata>,
    /// Who decrypts it, when it is encrypted: [`Decryption::Host`] (the dm-crypt mapping is
    /// in [`DeviceRecord::encryption`]) or [`Decryption::Native`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption: Option<Decryption>,
    /// For [`Decryption::Native`]: the libvirt secret (usage `volume` and the volume id)
    /// holding the passphrase, undefined on detach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_uuid: Option<String>,
}

impl AttachmentRecord {
    /// Serialises the record.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::InvalidDeviceRecord {
            reason: format!("cannot serialise the attachment record: {e}"),
        })
    }

    /// Reads a record [`AttachmentRecord::to_json`] wrote.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::InvalidDeviceRecord {
            reason: format!("not an attachment record: {e}"),
        })
    }
}

/// Who decrypts a front-end encrypted volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decryption {
    /// dm-crypt on this host ([`crate::encryption::open_volume`], os-brick's
    /// encryptors): the guest's disk is the decrypted device. Needs a host block device,
    /// so not for a network disk QEMU opens itself.
    #[default]
    Host,
    /// QEMU decrypts (libvirt's native LUKS): the passphrase goes into a libvirt secret
    /// and the guest's disk is the encrypted device with `<encryption format='luks'>`.
    /// QEMU's `luks` driver reads LUKS1 only, so, as Nova does, a `luks2` or `plain`
    /// volume is decrypted on the host instead (logged; the record says which was used).
    /// A blank volume on a host device is formatted (LUKS1) first, as Nova does.
    Native,
}

impl Decryption {
    /// `host` or `native`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decryption::Host => "host",
            Decryption::Native => "native",
        }
    }
}

impl std::str::FromStr for Decryption {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "host" => Ok(Decryption::Host),
            "native" => Ok(Decryption::Native),
            other => Err(Error::InvalidArgument {
                name: "decryption".into(),
                reason: format!("{other:?} is neither host nor native"),
            }),
        }
    }
}

impl fmt::Display for Decryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    /// The volume.
    pub volume_id: String,
    /// The instance id the storage service records (Nova's instance UUID); the domain name
    /// when `None`.
    pub instance: Option<String>,
    /// The guest bus.
    pub bus: DiskBus,
    /// A device name to use instead of the next free one; refused when taken.
    pub device_name: Option<String>,
    /// Who decrypts the volume when it is encrypted (ignored when it is not).
    pub decryption: Decryption,
}

impl AttachRequest {
    /// The volume on a virtio bus, under the next free name.
    pub fn new(volume_id: impl Into<String>) -> Self {
        AttachRequest {
            volume_id: volume_id.into(),
            instance: None,
            bus: DiskBus::Virtio,
            device_name: None,
            decryption: Decryption::Host,
        }
    }
}

/// Runs attaches and detaches of volumes to one guest.
pub struct Orchestrator {
    storage: Arc<dyn StorageService>,
    domain: Arc<dyn Domain>,
    connectors: Arc<dyn ConnectorFactory>,
    connector_properties: ConnectorProperties,
    locks: LockDir,
    flags: DomainFlags,
    disconnect: DisconnectOptions,
    host: HostContext,
    keys: Option<Arc<dyn KeyManager>>,
    secrets: Option<Arc<dyn Secrets>>,
}

impl fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Orchestrator")
            .field("domain", &self.domain.name())
            .field("locks", &self.locks.path())
            .field("flags", &self.flags)
            .finish()
    }
}

impl Orchestrator {
    /// An orchestrator for one guest. Device changes apply live and to the persistent
    /// config by default; locks go to `locks` (use the connectors' lock directory).
    pub fn new(
        storage: Arc<dyn StorageService>,
        domain: Arc<dyn Domain>,
        connectors: Arc<dyn ConnectorFactory>,
        connector_properties: ConnectorProperties,
        locks: LockDir,
    ) -> Self {
        Orchestrator {
            storage,
            domain,
            connectors,
            connector_properties,
            locks,
            flags: DomainFlags::LIVE_AND_CONFIG,
            disconnect: DisconnectOptions::default(),
            host: HostContext::system(),
            keys: None,
            secrets: None,
        }
    }

    /// The host where encrypted volumes are opened and closed (cryptsetup through its
    /// runner; the running system by default). Give it the connectors' context.
    pub fn with_host(mut self, host: HostContext) -> Self {
        self.host = host;
        self
    }

    /// Where the keys of encrypted volumes come from. Without one, an encrypted volume
    /// is refused before anything is connected. Detach needs none.
    pub fn with_key_manager(mut self, keys: Arc<dyn KeyManager>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// The hypervisor's secret store, for [`Decryption::Native`] (use [`VirshSecrets`]
    /// with the domain's URI).
    pub fn with_secrets(mut self, secrets: Arc<dyn Secrets>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// Where device changes apply.
    pub fn with_flags(mut self, flags: DomainFlags) -> Self {
        self.flags = flags;
        self
    }

    /// How detach (and rollback) disconnect the volume.
    pub fn with_disconnect_options(mut self, options: DisconnectOptions) -> Self {
        self.disconnect = options;
        self
    }

    /// Attaches a volume to the guest; on failure, everything done is undone.
    pub fn attach(&self, request: &AttachRequest) -> Result<AttachmentRecord> {
        let domain = self.domain.name().to_string();
        let span =
            tracing::info_span!("attach_to_guest", volume = %request.volume_id, domain = %domain);
        let _e = span.enter();
        let mut steps = Steps::new("attach", &request.volume_id, &domain);

        let _guard = steps.run("lock_domain", || {
            self.locks
                .lock(&format!("domain-{domain}"), LockMode::Exclusive)
        })?;
        let target_dev = steps.run("reserve_device_name", || {
            let used = self.domain.disk_targets()?;
            match &request.device_name {
                Some(name) if used.contains(name) => Err(Error::InvalidArgument {
                    name: "device name".into(),
                    reason: format!("{name} is already used by domain {domain}"),
                }),
                Some(name) => Ok(name.clone()),
                None => next_device_name(request.bus, &used),
            }
        })?;
        let instance = request.instance.as_deref().unwrap_or(&domain);
        let attachment = steps.run("create_attachment", || {
            self.storage
                .create_attachment(&request.volume_id, instance, &self.connector_properties)
        })?;
        let (storage, id) = (self.storage.clone(), attachment.id.clone());
        steps.undo("create_attachment", move || storage.delete_attachment(&id));

        let mut stored = attachment.connection_info.clone();
        if let Some(obj) = stored.as_object_mut() {
            // Nova keeps the volume id as the disk serial.
            obj.entry("serial")
                .or_insert_with(|| Value::String(request.volume_id.clone()));
        }
        let (info, connector) = steps.run("connect_volume", || {
            let info = Arc::new(ConnectionInfo::from_value(&stored)?);
            let connector: Arc<dyn Connector> = self.connectors.connector(info.protocol())?.into();
            Ok((info, connector))
        })?;
        // Encryption is settled before anything is connected: the metadata, the key, and
        // who decrypts.
        let plan = steps.run("get_encryption", || self.encryption_plan(request, &info))?;
        let device = steps.run("connect_volume", || connector.connect_volume(&info))?;
        let (c, i, d, opts) = (
            connector.clone(),
            info.clone(),
            device.clone(),
            self.disconnect,
        );
        steps.undo("connect_volume", move || {
            // Undoing a connect leaves nothing behind, or fails.
            c.disconnect_volume(&i, Some(&d), opts)?.into_result()
        });

        let mut secret_uuid = None;
        let device = match &plan {
            None => device,
            Some(plan) if plan.decryption == Decryption::Host => {
                let opened = steps.run("open_encryption", || {
                    encrypted::open_on_host(&self.host, plan, &device)
                })?;
                let (host, o) = (self.host.clone(), opened.clone());
                steps.undo("open_encryption", move || {
                    encrypted::close_on_host(&host, &o)
                });
                opened
            }
            Some(plan) => {
                let secrets = steps.run("define_secret", || plan.secrets())?;
                steps.run("format_encryption", || {
                    encrypted::format_for_native(&self.host, plan, &device)
                })?;
                let (uuid, created) = steps.run("define_secret", || {
                    match secrets.find_volume_secret(&request.volume_id)? {
                        Some(uuid) => {
                            tracing::info!(secret = %uuid, "reusing the volume's libvirt secret (left by an earlier attach)");
                            Ok((uuid, false))
                        }
                        None => Ok((secrets.define_volume_secret(&request.volume_id)?, true)),
                    }
                })?;
                if created {
                    let (sec, u) = (secrets.clone(), uuid.clone());
                    steps.undo("define_secret", move || sec.undefine(&u));
                }
                steps.run("set_secret_value", || {
                    secrets.set_value(&uuid, &plan.passphrase)
                })?;
                secret_uuid = Some(uuid);
                device
            }
        };

        let xml = steps.run("build_disk_xml", || {
            let mut disk =
                DiskConfig::for_volume(&info, &device, DiskTarget::new(&target_dev, request.bus))?;
            disk.encryption = secret_uuid.as_ref().map(DiskEncryption::luks);
            disk.to_xml()
        })?;
        steps.run("attach_device", || {
            let attached = self.domain.attach_device(&xml, self.flags);
            match &secret_uuid {
                Some(_) => attached.map_err(|e| encrypted::native_open_failure(e, &device.path)),
                None => attached,
            }
        })?;
        let (dom, x, flags) = (self.domain.clone(), xml.clone(), self.flags);
        steps.undo("attach_device", move || dom.detach_device(&x, flags));

        steps.run("complete_attachment", || {
            self.storage.complete_attachment(&attachment.id)
        })?;
        steps.commit();
        tracing::info!(
            target_dev = %target_dev,
            device = %device.guest_path().display(),
            decryption = plan.as_ref().map(|p| p.decryption.as_str()).unwrap_or("none"),
            "volume attached to guest"
        );
        let (encryption, decryption) = match plan {
            Some(p) => (Some(p.meta), Some(p.decryption)),
            None => (None, None),
        };
        Ok(AttachmentRecord {
            attachment_id: attachment.id.clone(),
            volume_id: request.volume_id.clone(),
            domain,
            connection_info: StoredConnectionInfo::new(&stored),
            device,
            target_dev,
            disk_xml: xml,
            flags: self.flags,
            encryption,
            decryption,
            secret_uuid,
        })
    }

    /// What an encrypted volume needs, or `None` when the host has nothing to decrypt.
    fn encryption_plan(
        &self,
        request: &AttachRequest,
        info: &ConnectionInfo,
    ) -> Result<Option<encrypted::Plan>> {
        let meta = self.storage.encryption(&request.volume_id)?;
        encrypted::plan(
            meta,
            info,
            request.decryption,
            self.keys.as_ref(),
            self.secrets.as_ref(),
        )
    }

    /// Detaches what [`Orchestrator::attach`] attached: from the guest (when it still has
    /// the disk), then from the host (a dm-crypt mapping closed first), then the libvirt
    /// secret of a volume QEMU decrypted, then the storage service's attachment. If the
    /// host side fails, the disk goes back to the guest (and a closed mapping is opened
    /// again when the orchestrator has the key). A failed secret undefine or attachment
    /// delete leaves the host side detached (retrying detach with the same record
    /// finishes it).
    pub fn detach(&self, record: &AttachmentRecord) -> Result<()> {
        let domain = self.domain.name().to_string();
        let span = tracing::info_span!("detach_from_guest", volume = %record.volume_id, domain = %domain, target_dev = %record.target_dev);
        let _e = span.enter();
        let mut steps = Steps::new("detach", &record.volume_id, &domain);
        if record.domain != domain {
            return Err(steps.fail(
                "check_record",
                Error::InvalidDeviceRecord {
                    reason: format!("the record is for domain {}, not {domain}", record.domain),
                },
            ));
        }
        let _guard = steps.run("lock_domain", || {
            self.locks
                .lock(&format!("domain-{domain}"), LockMode::Exclusive)
        })?;
        let (info, connector) = steps.run("read_record", || {
            let info = record.connection_info.parse()?;
            let connector = self.connectors.connector(info.protocol())?;
            Ok((info, connector))
        })?;
        let attached = steps.run("detach_device", || {
            Ok(self.domain.disk_targets()?.contains(&record.target_dev))
        })?;
        if attached {
            steps.run("detach_device", || {
                self.domain.detach_device(&record.disk_xml, record.flags)
            })?;
            let (dom, x, flags) = (self.domain.clone(), record.disk_xml.clone(), record.flags);
            steps.undo("detach_device", move || dom.attach_device(&x, flags));
        } else {
            tracing::info!("the guest no longer has the disk; detaching from the host only");
        }
        if record.device.encryption.is_some() {
            steps.run("close_encryption", || {
                encrypted::close_on_host(&self.host, &record.device)
            })?;
            // Undone by opening it again, when this orchestrator has the key.
            if let (Some(keys), Some(meta)) = (self.keys.clone(), record.encryption.clone()) {
                let (host, d) = (self.host.clone(), record.device.clone());
                steps.undo("close_encryption", move || {
                    encrypted::reopen_on_host(&host, &meta, keys.as_ref(), &d).map(drop)
                });
            }
        }
        steps.run("disconnect_volume", || {
            connector
                .disconnect_volume(&info, Some(&record.device), self.disconnect)
                .map(drop)
        })?;
        steps.commit();
        let mut last = Steps::new("detach", &record.volume_id, &domain);
        if record.decryption == Some(Decryption::Native) || record.secret_uuid.is_some() {
            // After the disconnect: a guest disk put back by a rollback still has its secret.
            last.run("undefine_secret", || {
                let secrets = self
                    .secrets
                    .as_ref()
                    .ok_or_else(|| Error::InvalidArgument {
                        name: "secrets".into(),
                        reason: "the volume was decrypted by QEMU; its libvirt secret needs \
                                 the hypervisor's secret store (Orchestrator::with_secrets)"
                            .into(),
                    })?;
                encrypted::undefine_volume_secret(
                    secrets.as_ref(),
                    &record.volume_id,
                    record.secret_uuid.as_deref(),
                )
            })?;
        }
        last.run("delete_attachment", || {
            self.storage.delete_attachment(&record.attachment_id)
        })?;
        tracing::info!("volume detached from guest");
        Ok(())
    }
}

type UndoFn = Box<dyn FnOnce() -> Result<()>>;

/// The steps of one attach or detach: runs each, remembers its undo, and on a failure runs
/// the undos done so far in reverse.
struct Steps {
    operation: &'static str,
    volume: String,
    domain: String,
    undo: Vec<(&'static str, UndoFn)>,
}

impl Steps {
    fn new(operation: &'static str, volume: &str, domain: &str) -> Self {
        Steps {
            operation,
            volume: volume.to_string(),
            domain: domain.to_string(),
            undo: Vec::new(),
        }
    }

    /// Runs a step; on failure rolls back and returns the orchestration error.
    fn run<T>(&mut self, step: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let started = std::time::Instant::now();
        match f() {
            Ok(v) => {
                tracing::debug!(
                    step,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "step done"
                );
                Ok(v)
            }
            Err(e) => Err(self.fail(step, e)),
        }
    }

    /// Registers the undo of the step just done.
    fn undo(&mut self, step: &'static str, f: impl FnOnce() -> Result<()> + 'static) {
        self.undo.push((step, Box::new(f)));
    }

    fn fail(&mut self, step: &'static str, cause: Error) -> Error {
        tracing::warn!(step, error = %cause.chain(), "step failed; rolling back");
        let mut rollback = Vec::new();
        while let Some((undone, f)) = self.undo.pop() {
            if let Err(error) = f() {
                tracing::error!(step = undone, error = %error.chain(), "rollback step failed");
                rollback.push(RollbackFailure {
                    step: undone,
                    error,
                });
            }
        }
        Error::Orchestration {
            operation: self.operation,
            step,
            volume: self.volume.clone(),
            domain: self.domain.clone(),
            cause: Box::new(cause),
            rollback,
        }
    }

    /// Success: nothing to undo.
    fn commit(&mut self) {
        self.undo.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_follow_the_kernel_order() {
        assert_eq!(disk_letters(0), "a");
        assert_eq!(disk_letters(25), "z");
        assert_eq!(disk_letters(26), "aa");
        assert_eq!(disk_letters(27), "ab");
        assert_eq!(disk_letters(51), "az");
        assert_eq!(disk_letters(52), "ba");
        assert_eq!(disk_letters(MAX_DEVICE_NAMES - 1), "zz");
        let used = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            next_device_name(DiskBus::Virtio, &used(&["vda", "vdb", "sda"])).unwrap(),
            "vdc"
        );
        assert_eq!(
            next_device_name(DiskBus::Scsi, &used(&["vda", "sda", "sdc"])).unwrap(),
            "sdb"
        );
        assert_eq!(next_device_name(DiskBus::Sata, &used(&[])).unwrap(), "sda");
        let all: Vec<String> = (0..MAX_DEVICE_NAMES)
            .map(|i| format!("vd{}", disk_letters(i)))
            .collect();
        assert!(matches!(
            next_device_name(DiskBus::Virtio, &all),
            Err(Error::InvalidArgument { .. })
        ));
    }

    #[test]
    fn stored_connection_info_hides_secrets() {
        let v = serde_json::json!({"driver_volume_type": "iscsi", "data": {"auth_password": "hunter2"}});
        let s = StoredConnectionInfo(v.clone());
        assert!(!format!("{s:?}").contains("hunter2"));
        let a = Attachment {
            id: "a1".into(),
            connection_info: v,
        };
        assert!(!format!("{a:?}").contains("hunter2"));
    }
}
