//! The encryption steps of an attach and a detach: deciding who decrypts a volume, opening
//! and closing it on the host, and preparing a volume QEMU decrypts itself.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::attach::{Decryption, Secrets};
use crate::connector::HostContext;
use crate::encryption::{self, EncryptionMetadata, EncryptionProvider, KeyManager};
use crate::error::{Error, Result};
use crate::model::connection::ConnectionInfo;
use crate::model::record::{DeviceKind, DeviceRecord};
use crate::model::secret::Secret;
use crate::platform::cmd::Command;

/// How long opening, formatting or closing an encrypted volume may take (cryptsetup's key
/// derivation is slow on purpose).
const ENCRYPTION_TIMEOUT: Duration = Duration::from_secs(120);

/// What an encrypted volume's attach needs: its metadata, who decrypts, the seams, and
/// for native decryption the passphrase (never shown).
pub(super) struct Plan {
    pub(super) meta: EncryptionMetadata,
    pub(super) decryption: Decryption,
    keys: Arc<dyn KeyManager>,
    secrets: Option<Arc<dyn Secrets>>,
    pub(super) passphrase: Secret,
}

impl Plan {
    /// The secret store (a native plan always has one).
    pub(super) fn secrets(&self) -> Result<Arc<dyn Secrets>> {
        self.secrets.clone().ok_or_else(no_secrets)
    }
}

fn no_secrets() -> Error {
    Error::InvalidArgument {
        name: "decryption".into(),
        reason:
            "native decryption needs the hypervisor's secret store (Orchestrator::with_secrets)"
                .into(),
    }
}

/// Decides who decrypts: `None` for a volume the host has nothing to decrypt (not
/// encrypted, encrypted by the array, os-brick's no-op encryptor). The key is fetched
/// now, so a missing key fails before anything is connected.
pub(super) fn plan(
    meta: Option<EncryptionMetadata>,
    info: &ConnectionInfo,
    wanted: Decryption,
    keys: Option<&Arc<dyn KeyManager>>,
    secrets: Option<&Arc<dyn Secrets>>,
) -> Result<Option<Plan>> {
    let meta = match meta {
        Some(m) => m,
        None if info.encrypted() => {
            return Err(Error::InvalidEncryption {
                field: "encryption".into(),
                reason: "the connection_info says the volume is encrypted, but the storage \
                         service returned no encryption metadata for it"
                    .into(),
            })
        }
        None => return Ok(None),
    };
    if !meta.host_decrypts() {
        tracing::debug!(control_location = ?meta.control_location, "nothing to decrypt on this host");
        return Ok(None);
    }
    let provider = meta.provider.unwrap_or(EncryptionProvider::Luks);
    let decryption = match (wanted, provider) {
        (Decryption::Native, EncryptionProvider::Luks) => Decryption::Native,
        (Decryption::Native, other) => {
            tracing::info!(provider = %other, "QEMU's luks driver reads LUKS1 only: decrypting on the host, as Nova does");
            Decryption::Host
        }
        (Decryption::Host, _) => Decryption::Host,
    };
    let keys = keys.cloned().ok_or_else(|| Error::InvalidArgument {
        name: "key manager".into(),
        reason: format!(
            "the volume is encrypted ({provider}) and no key manager is configured \
             (Orchestrator::with_key_manager)"
        ),
    })?;
    if decryption == Decryption::Native && secrets.is_none() {
        return Err(no_secrets());
    }
    let passphrase = keys.key(meta.key_id()?)?.cryptsetup_passphrase()?;
    Ok(Some(Plan {
        meta,
        decryption,
        keys,
        secrets: secrets.cloned(),
        passphrase,
    }))
}

fn host_device(device: &DeviceRecord) -> Result<()> {
    match device.kind {
        DeviceKind::Block => Ok(()),
        DeviceKind::Network => Err(Error::InvalidEncryption {
            field: "decryption".into(),
            reason: "the volume is a network disk QEMU opens itself: there is no host device \
                     to decrypt (use native decryption, LUKS1 only)"
                .into(),
        }),
    }
}

/// Opens the volume with dm-crypt on this host; the record gains its mapping.
pub(super) fn open_on_host(
    host: &HostContext,
    plan: &Plan,
    device: &DeviceRecord,
) -> Result<DeviceRecord> {
    reopen_on_host(host, &plan.meta, plan.keys.as_ref(), device)
}

/// [`open_on_host`] from the metadata and key manager (the undo of a detach's close).
pub(super) fn reopen_on_host(
    host: &HostContext,
    meta: &EncryptionMetadata,
    keys: &dyn KeyManager,
    device: &DeviceRecord,
) -> Result<DeviceRecord> {
    host_device(device)?;
    encryption::open_volume(
        host,
        meta,
        keys,
        device,
        Instant::now() + ENCRYPTION_TIMEOUT,
    )
}

/// Closes the volume's dm-crypt mapping (nothing when it has none).
pub(super) fn close_on_host(host: &HostContext, device: &DeviceRecord) -> Result<()> {
    if device.encryption.is_none() {
        return Ok(());
    }
    encryption::close_volume(host, device, Instant::now() + ENCRYPTION_TIMEOUT)
}

/// Before QEMU decrypts a volume on a host device: a LUKS1 volume is used as it is; a
/// blank one is formatted LUKS1 first, as Nova has os-brick do (a device with any
/// signature is refused by [`encryption::open_volume`], which formats, opens and here is
/// closed again at once); a LUKS2 one is refused (QEMU cannot read it). A network disk
/// is left to QEMU.
pub(super) fn format_for_native(
    host: &HostContext,
    plan: &Plan,
    device: &DeviceRecord,
) -> Result<()> {
    if device.kind != DeviceKind::Block {
        return Ok(());
    }
    let path = device.path.to_string_lossy().into_owned();
    let deadline = Instant::now() + ENCRYPTION_TIMEOUT;
    let is_luks = |luks1: bool| -> Result<bool> {
        let mut cmd = Command::new("cryptsetup").args(["isLuks", &path]);
        if luks1 {
            cmd = cmd.args(["--type", "luks1"]);
        }
        let out = host.runner.run(&cmd.deadline(deadline))?;
        Ok(out.status.code() == Some(0))
    };
    if is_luks(true)? {
        return Ok(());
    }
    if is_luks(false)? {
        return Err(Error::InvalidEncryption {
            field: "provider".into(),
            reason: format!(
                "{path} has a LUKS2 header but the volume's provider is luks: QEMU reads \
                 LUKS1 only (attach it with host decryption)"
            ),
        });
    }
    tracing::info!(device = %path, "no LUKS header: formatting the volume (LUKS1) before QEMU opens it");
    let opened = reopen_on_host(host, &plan.meta, plan.keys.as_ref(), device)?;
    close_on_host(host, &opened)
}

/// What QEMU's `luks` driver says when the passphrase opens no key slot
/// (`crypto/block-luks.c`), as libvirt passes it on.
const QEMU_WRONG_PASSPHRASE: &str = "cannot unlock any keyslot";

/// A failed attach of a disk QEMU decrypts: [`Error::WrongKey`] when QEMU found that the
/// passphrase opens no key slot, else the error as it is.
pub(super) fn native_open_failure(e: Error, raw: &Path) -> Error {
    if e.chain().contains(QEMU_WRONG_PASSPHRASE) {
        tracing::warn!(error = %e.chain(), "QEMU: the volume's key opens no LUKS key slot");
        Error::WrongKey {
            device: raw.to_path_buf(),
        }
    } else {
        e
    }
}

/// Undefines the volume's libvirt secret, found by its usage (the volume id), as Nova's
/// `delete_secret('volume', volume_id)`. The recorded UUID is only a hint: a secret of
/// this volume's usage is what is removed, and none is success.
pub(super) fn undefine_volume_secret(
    secrets: &dyn Secrets,
    volume_id: &str,
    recorded: Option<&str>,
) -> Result<()> {
    match secrets.find_volume_secret(volume_id)? {
        Some(uuid) => {
            if recorded.is_some_and(|r| !r.eq_ignore_ascii_case(&uuid)) {
                tracing::warn!(secret = %uuid, recorded = ?recorded, "the volume's libvirt secret is not the recorded one; undefining the volume's");
            }
            secrets.undefine(&uuid)
        }
        None => {
            tracing::debug!("the volume has no libvirt secret left");
            Ok(())
        }
    }
}
