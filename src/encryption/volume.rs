//! The host encryptors: open an attached volume's device to a dm-crypt mapping, close it,
//! resize it, as os-brick's `LuksEncryptor`, `Luks2Encryptor` and `CryptsetupEncryptor` do.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::cryptsetup as cs;
use super::keys::KeyManager;
use super::mapping::{self, CryptMapping, CryptType};
use super::metadata::{EncryptionMetadata, EncryptionProvider};
use crate::connector::HostContext;
use crate::devices::{block, multipath};
use crate::error::{Error, Result};
use crate::model::record::{DeviceKind, DeviceRecord, EncryptionRecord};
use crate::model::secret::Secret;
use crate::platform::cancel;
use crate::platform::cmd::Command;
use crate::platform::host::Host;
use crate::platform::lock::{LockDir, LockGuard, LockMode};

/// The block device a record's path leads to on the live host.
struct Raw {
    /// Its kernel name (`sdb`, `dm-3`, `nvme0n1`, `rbd0`).
    kernel: String,
    /// Its node in this host's /dev (what commands get).
    dev: PathBuf,
    /// Its `/dev/...` name (what records and errors show).
    public: PathBuf,
}

/// The block device `device.path` resolves to now, `None` when it leads nowhere. A path
/// that leads to a dm-crypt mapping (os-brick rewrites the volume's link to the decrypted
/// device) stands for the device beneath it.
fn locate(host: &Host, device: &DeviceRecord) -> Result<Option<Raw>> {
    let Some(target) = host.canonical(&host.map_dev_path(&device.path))? else {
        return Ok(None);
    };
    let Some(mut kernel) = target
        .file_name()
        .and_then(|n| n.to_str())
        .map(String::from)
    else {
        return Ok(None);
    };
    if !block::exists(host, &kernel) {
        return Ok(None);
    }
    if let Some(m) = mapping::crypt_info(host, &kernel)? {
        match m.slaves.as_slice() {
            [one] => kernel = one.clone(),
            _ => return Ok(None),
        }
    }
    let dev = host.dev(&kernel);
    Ok(Some(Raw {
        public: host.public_dev_path(&dev),
        dev,
        kernel,
    }))
}

/// For finding an open mapping: the dm-multipath map over `raw` when `raw` is one of its
/// paths and no dm-crypt mapping sits on the path itself (a connector reports a multipath
/// volume's paths; the mapping sits on the map).
fn through_map(host: &Host, raw: Raw) -> Result<Raw> {
    if !mapping::crypt_holders(host, &raw.kernel)?.is_empty() {
        return Ok(raw);
    }
    Ok(match multipath::holder_map(host, &raw.kernel)? {
        Some(m) => {
            let dev = host.dev(&m.dm);
            Raw {
                public: host.public_dev_path(&dev),
                dev,
                kernel: m.dm,
            }
        }
        None => raw,
    })
}

/// The raw device of an open or extend, which must be there.
fn require(host: &Host, device: &DeviceRecord) -> Result<Raw> {
    if device.kind == DeviceKind::Network {
        return Err(Error::EncryptionNotSupported {
            volume: volume_name(device),
            reason: format!(
                "it is opened by the hypervisor over the network ({}); host-side decryption \
                 needs a block device on this host (map the image with the kernel client, or \
                 let QEMU decrypt LUKS natively)",
                device.path.display()
            ),
        });
    }
    locate(host, device)?.ok_or_else(|| Error::RecordMismatch {
        what: format!("device {}", device.path.display()),
        reason: "it does not lead to a block device on this host".into(),
    })
}

fn volume_name(device: &DeviceRecord) -> String {
    device
        .volume_id
        .clone()
        .unwrap_or_else(|| device.path.display().to_string())
}

/// Serialises the encryptors' work on one device, across processes.
fn lock(host: &Host, raw: &Raw, deadline: Instant) -> Result<LockGuard> {
    LockDir::default_for(host).lock_until(
        &format!("dm-crypt:{}", raw.kernel),
        LockMode::Exclusive,
        deadline,
    )
}

/// The mappings on `raw` that are this volume's: dm-crypt, sitting on `raw` alone, with one
/// of the names hostbrick or os-brick give it ([`mapping::candidate_names`]).
fn own_mappings(host: &Host, device: &DeviceRecord, raw: &Raw) -> Result<Vec<CryptMapping>> {
    let names = mapping::candidate_names(device, &raw.kernel);
    Ok(mapping::crypt_holders(host, &raw.kernel)?
        .into_iter()
        .filter(|m| m.sits_on(&raw.kernel) && names.contains(&m.name))
        .collect())
}

fn record_with(
    host: &Host,
    device: &DeviceRecord,
    provider: EncryptionProvider,
    name: &str,
    raw: &Raw,
) -> DeviceRecord {
    DeviceRecord {
        encryption: Some(EncryptionRecord {
            provider,
            name: name.to_string(),
            device: host.public_dev_path(&host.dev(format!("mapper/{name}"))),
            raw: raw.public.clone(),
        }),
        ..device.clone()
    }
}

fn matches_provider(kind: &CryptType, provider: EncryptionProvider) -> bool {
    match provider {
        EncryptionProvider::Luks | EncryptionProvider::Luks2 => kind.is_luks(),
        EncryptionProvider::Plain => *kind == CryptType::Plain,
    }
}

/// Opens an attached volume's device to a dm-crypt mapping and returns its record with
/// [`DeviceRecord::encryption`] set; [`DeviceRecord::guest_path`] is then the decrypted
/// device. `device` is the record the connector returned; its `path` stays the encrypted
/// device (the connector detaches it).
///
/// For metadata that asks nothing of the host (back-end encryption, os-brick's no-op
/// provider) the record comes back unchanged.
///
/// As os-brick's encryptors:
///
/// - LUKS (`luks`, `luks2`): `cryptsetup luksOpen --key-file=- RAW NAME`. When that fails
///   because the device is not LUKS (`cryptsetup isLuks`), the volume is new: it is
///   formatted (`cryptsetup --batch-mode luksFormat --type luks1|luks2 --key-file=-
///   [--cipher C] [--key-size N] RAW`) and opened. Unlike os-brick, only a blank device is
///   formatted: when `blkid -p` finds any signature (a filesystem, a partition table, a
///   LUKS header cryptsetup would not open) it is [`Error::DeviceHasSignature`] and nothing
///   is written. A key that opens no key slot is [`Error::WrongKey`], with nothing left
///   open.
/// - plain: `cryptsetup create --key-file=- [--cipher C] [--key-size N] NAME RAW`. There is
///   no header: nothing to format, and a wrong key opens a mapping of noise (no error is
///   possible).
///
/// The key goes to cryptsetup's stdin, never into its arguments; it is fetched only when a
/// mapping is made. `NAME` is os-brick's, `crypt-<basename of os-brick's device path>`
/// (`crypt-sdb`, `crypt-dm-3`, `crypt-nvme0n1`, `crypt-<rbd image>`). A mapping already
/// open on the device under any name hostbrick or os-brick gives it (os-brick's old name
/// without the prefix, the multipath id, the name in the record) is reused, so a volume
/// os-brick opened is taken over as it is. Another dm-crypt mapping holding the device,
/// any other holder of the device (a dm-multipath map over the path the record names, LVM)
/// or a mounted filesystem on it, or a device-mapper device of the chosen name elsewhere,
/// is [`Error::DeviceInUse`], before anything is written.
/// A mapping made by a call that then fails is closed again.
///
/// Where os-brick points the volume's device link at the decrypted device
/// (`ln -sf /dev/mapper/NAME PATH`), hostbrick leaves udev's links alone: callers hand a
/// guest [`DeviceRecord::guest_path`].
pub fn open_volume(
    ctx: &HostContext,
    meta: &EncryptionMetadata,
    keys: &dyn KeyManager,
    device: &DeviceRecord,
    deadline: Instant,
) -> Result<DeviceRecord> {
    let provider = match meta.provider {
        Some(p) if meta.host_decrypts() => p,
        _ => return Ok(device.clone()),
    };
    let span = tracing::info_span!("open_volume", volume = %volume_name(device), device = %device.path.display(), %provider);
    let _span = span.enter();
    let started = Instant::now();
    let host = &ctx.host;
    let raw = require(host, device)?;
    let _lock = lock(host, &raw, deadline)?;

    let holders = mapping::crypt_holders(host, &raw.kernel)?;
    let own = own_mappings(host, device, &raw)?;
    if let Some(m) = own.first() {
        if !matches_provider(&m.kind, provider) {
            return Err(Error::DeviceInUse {
                device: raw.kernel.clone(),
                reason: format!(
                    "dm-crypt mapping {} ({}) is open on it as {:?}, the metadata says {provider}",
                    m.name, m.dm, m.kind
                ),
            });
        }
        tracing::info!(name = %m.name, dm = %m.dm, "dm-crypt mapping already open on the device; reusing it");
        return Ok(record_with(host, device, provider, &m.name, &raw));
    }
    if let Some(m) = holders.first() {
        return Err(Error::DeviceInUse {
            device: raw.kernel.clone(),
            reason: format!(
                "held by dm-crypt mapping {} ({}), not a name hostbrick or os-brick gives this \
                 volume",
                m.name, m.dm
            ),
        });
    }
    // Anything else holding the device (a dm-multipath map over one of its paths, LVM) or
    // a filesystem mounted from it: cryptsetup could not open it exclusively, and must not.
    if let Some(reason) = block::in_use(host, &raw.kernel, &[])? {
        let hint = match multipath::holder_map(host, &raw.kernel)? {
            Some(m) => format!(
                "{reason}: dm-multipath map {} is over it; open the map (connect with \
                 multipath), not one of its paths",
                m.name
            ),
            None => reason,
        };
        return Err(Error::DeviceInUse {
            device: raw.kernel.clone(),
            reason: hint,
        });
    }
    let name = mapping::mapping_name(device, &raw.kernel);
    if let Some((dm, m)) = mapping::dm_by_name(host, &name)? {
        let on = m
            .map(|m| m.slaves.join(", "))
            .unwrap_or_else(|| "(not dm-crypt)".into());
        return Err(Error::DeviceInUse {
            device: name.clone(),
            reason: format!(
                "the device-mapper name is taken by {dm} on {on}, not on {} (a leftover of an \
                 earlier attach?)",
                raw.kernel
            ),
        });
    }

    let key = keys.key(meta.key_id()?)?.cryptsetup_passphrase()?;
    let opened = match provider {
        EncryptionProvider::Plain => {
            let cmd = cs::plain_create(&raw.dev, &name, meta, &key, deadline);
            ctx.runner.run_ok(&cmd, &[]).map(drop)
        }
        EncryptionProvider::Luks | EncryptionProvider::Luks2 => {
            open_luks(ctx, meta, provider, &key, &raw, &name, deadline)
        }
    }
    .and_then(|()| {
        // The proof that the mapping is there and is over this device.
        match mapping::dm_by_name(host, &name)? {
            Some((_, Some(m))) if m.sits_on(&raw.kernel) => Ok(m),
            other => Err(Error::UnexpectedContent {
                path: host.sys("block"),
                reason: format!(
                    "cryptsetup opened {name} on {} but sysfs shows {}",
                    raw.kernel,
                    match other {
                        None => "no device-mapper device of that name".to_string(),
                        Some((dm, _)) => format!("{dm} of that name, not a dm-crypt mapping on it"),
                    }
                ),
            }),
        }
    });
    match opened {
        Ok(m) => {
            tracing::info!(phase = "opened", name = %name, dm = %m.dm, elapsed_ms = started.elapsed().as_millis() as u64, "dm-crypt mapping open");
            Ok(record_with(host, device, provider, &name, &raw))
        }
        Err(e) => {
            undo_open(ctx, &raw, &name, provider);
            Err(e)
        }
    }
}

/// After a failed open: closes a mapping of `name` the call left on `raw` (a command
/// killed at its time limit after the kernel made the mapping).
fn undo_open(ctx: &HostContext, raw: &Raw, name: &str, provider: EncryptionProvider) {
    let _shield = cancel::shield();
    let host = &ctx.host;
    let left = match mapping::dm_by_name(host, name) {
        Ok(Some((_, Some(m)))) if m.sits_on(&raw.kernel) => m,
        _ => return,
    };
    let plain = provider == EncryptionProvider::Plain;
    let cmd = cs::close(&left.name, plain, Instant::now() + cs::CRYPTSETUP_TIMEOUT);
    match ctx.runner.run_ok(&cmd, &[cs::EXIT_NO_DEVICE]) {
        Ok(_) => tracing::info!(name, "closed the mapping of the failed open"),
        Err(e) => {
            tracing::warn!(name, error = %e.chain(), "cannot close the mapping of the failed open")
        }
    }
}

/// LUKS: open; when the device is not LUKS, format it (blank devices only) and open.
fn open_luks(
    ctx: &HostContext,
    meta: &EncryptionMetadata,
    provider: EncryptionProvider,
    key: &Secret,
    raw: &Raw,
    name: &str,
    deadline: Instant,
) -> Result<()> {
    let runner = &*ctx.runner;
    let open = cs::luks_open(&raw.dev, name, key, deadline);
    let out = runner.run(&open)?;
    match out.status.code() {
        Some(0) => return Ok(()),
        Some(cs::EXIT_WRONG_KEY) => return Err(wrong_key(raw)),
        Some(cs::EXIT_INVALID) => {}
        _ => return Err(open.failure(&out)),
    }
    if runner
        .run(&cs::is_luks(&raw.dev, deadline))?
        .status
        .success()
    {
        // LUKS, and still the open failed with invalid parameters: its error stands.
        return Err(open.failure(&out));
    }
    let probe = cs::blkid_probe(&raw.dev, deadline);
    let probed = runner.run(&probe)?;
    if let Some(signature) = cs::signature(&probe, &probed)? {
        return Err(Error::DeviceHasSignature {
            device: raw.public.clone(),
            signature,
        });
    }
    tracing::info!(device = %raw.public.display(), "not a LUKS device and blank: formatting it for first use");
    let luks_type = match provider {
        EncryptionProvider::Luks2 => "luks2",
        _ => "luks1",
    };
    let format = cs::luks_format(&raw.dev, luks_type, meta, key, deadline);
    runner.run_ok(&format, &[])?;
    let out = runner.run(&open)?;
    match out.status.code() {
        Some(0) => Ok(()),
        Some(cs::EXIT_WRONG_KEY) => Err(wrong_key(raw)),
        _ => Err(open.failure(&out)),
    }
}

fn wrong_key(raw: &Raw) -> Error {
    Error::WrongKey {
        device: raw.public.clone(),
    }
}

/// Closes the dm-crypt mapping of an attached volume, before its connector detaches it.
/// Needs no key. A volume with no mapping open (or not on the host any more) is success,
/// so it can be called again.
///
/// Only a mapping the live host proves to be this volume's is closed: a dm-crypt mapping
/// (dm uuid `CRYPT-...`) whose one slave (`/sys/block/dm-N/slaves`) is the device the
/// record's `path` leads to now (or the dm-multipath map over it, when `path` names one of
/// the map's paths), under a name hostbrick or os-brick gives the volume
/// (the record's [`EncryptionRecord::name`], `crypt-<base>`, os-brick's old `<base>`, the
/// multipath id). A mapping of the recorded name that sits elsewhere is
/// [`Error::RecordMismatch`] and is left alone; one whose device is mounted or held is
/// [`Error::DeviceInUse`]. A record without `encryption` (os-brick's `device_info`) closes
/// the mapping os-brick opened for the volume.
pub fn close_volume(ctx: &HostContext, device: &DeviceRecord, deadline: Instant) -> Result<()> {
    if device.kind == DeviceKind::Network {
        return Ok(());
    }
    let span = tracing::info_span!("close_volume", volume = %volume_name(device), device = %device.path.display());
    let _span = span.enter();
    let host = &ctx.host;
    let recorded = device.encryption.as_ref().map(|e| e.name.as_str());
    let Some(raw) = locate(host, device)? else {
        if let Some(name) = recorded {
            if let Some((dm, _)) = mapping::dm_by_name(host, name)? {
                return Err(Error::RecordMismatch {
                    what: format!("dm-crypt mapping {name} ({dm})"),
                    reason: format!(
                        "the volume's device {} is not on the host, so the mapping cannot be \
                         proven to be its own; it was left open",
                        device.path.display()
                    ),
                });
            }
        }
        return Ok(());
    };
    let raw = through_map(host, raw)?;
    let _lock = lock(host, &raw, deadline)?;
    let own = own_mappings(host, device, &raw)?;
    if own.is_empty() {
        if let Some(name) = recorded {
            if let Some((dm, m)) = mapping::dm_by_name(host, name)? {
                let on = m
                    .map(|m| m.slaves.join(", "))
                    .unwrap_or_else(|| "(not dm-crypt)".into());
                return Err(Error::RecordMismatch {
                    what: format!("dm-crypt mapping {name} ({dm})"),
                    reason: format!(
                        "it sits on {on}, not on {} (where {} leads now); it was left open",
                        raw.kernel,
                        device.path.display()
                    ),
                });
            }
        }
        tracing::debug!("no dm-crypt mapping of the volume open");
        return Ok(());
    }
    for m in own {
        block::ensure_unused(host, &m.dm, &[])?;
        let plain = m.kind == CryptType::Plain;
        let cmd = cs::close(&m.name, plain, deadline);
        ctx.runner.run_ok(&cmd, &[cs::EXIT_NO_DEVICE])?;
        tracing::info!(phase = "closed", name = %m.name, dm = %m.dm, "dm-crypt mapping closed");
        remove_os_brick_link(host, &m.name);
    }
    Ok(())
}

/// After closing a mapping os-brick opened under its own link's name
/// (`crypt-os-brick+dev+dm-0`): removes that link (`/dev/disk/by-id/os-brick+dev+dm-0`), as
/// os-brick's disconnect would, but only while it is a symlink to the closed mapping (what
/// os-brick's encryptor made it); anything else there is left alone.
fn remove_os_brick_link(host: &Host, name: &str) {
    let Some(link) = mapping::os_brick_link_of(name) else {
        return;
    };
    let at = host.map_dev_path(&link);
    let Ok(meta) = std::fs::symlink_metadata(&at) else {
        return;
    };
    let ours = meta.file_type().is_symlink()
        && std::fs::read_link(&at).is_ok_and(|t| {
            t == Path::new("/dev/mapper").join(name) || t == Path::new("../../mapper").join(name)
        });
    if !ours {
        tracing::debug!(link = %link.display(), "os-brick's link does not lead to the closed mapping; left alone");
        return;
    }
    match std::fs::remove_file(&at) {
        Ok(()) => {
            tracing::info!(link = %link.display(), "os-brick's link to the closed mapping removed")
        }
        Err(e) => {
            tracing::warn!(link = %link.display(), error = %e, "cannot remove os-brick's link")
        }
    }
}

/// Resizes the volume's dm-crypt mapping to its device, after the connector grew the
/// device ([`crate::Connector::extend_volume`]); returns the decrypted device's new size in
/// bytes: `cryptsetup resize [--key-file=-] NAME`, the passphrase on stdin for a LUKS
/// mapping (LUKS2 needs it when its volume key is not in the kernel keyring). The mapping
/// is found as [`close_volume`] finds it; none open is [`Error::RecordMismatch`]. For
/// metadata that asks nothing of the host, the size of the device itself.
pub fn extend_volume(
    ctx: &HostContext,
    meta: &EncryptionMetadata,
    keys: &dyn KeyManager,
    device: &DeviceRecord,
    deadline: Instant,
) -> Result<u64> {
    let host = &ctx.host;
    let raw = require(host, device)?;
    if !meta.host_decrypts() {
        return block::size_bytes(host, &raw.kernel);
    }
    let span = tracing::info_span!("extend_volume", volume = %volume_name(device), device = %device.path.display());
    let _span = span.enter();
    let raw = through_map(host, raw)?;
    let _lock = lock(host, &raw, deadline)?;
    let Some(m) = own_mappings(host, device, &raw)?.into_iter().next() else {
        return Err(Error::RecordMismatch {
            what: "dm-crypt mapping".into(),
            reason: format!(
                "no dm-crypt mapping of the volume is open on {}",
                raw.kernel
            ),
        });
    };
    let key = if m.kind.is_luks() {
        Some(keys.key(meta.key_id()?)?.cryptsetup_passphrase()?)
    } else {
        None
    };
    let cmd: Command = cs::resize(&m.name, key.as_ref(), deadline);
    ctx.runner.run_ok(&cmd, &[])?;
    let size = block::size_bytes(host, &m.dm)?;
    tracing::info!(phase = "resized", name = %m.name, size, "dm-crypt mapping resized");
    Ok(size)
}
