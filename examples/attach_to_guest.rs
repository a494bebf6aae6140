//! `attach_to_guest`: attach a volume to a libvirt guest the way Nova does, and detach it.
//!
//! ```text
//! attach_to_guest --domain NAME --connection-info DIR/VOLUME.json --record STATE.json
//!                 [--uri URI] [--bus virtio|scsi|sata] [--dev NAME] [--instance ID]
//!                 [--live] [--config] [--ip IP] [--multipath] [--enforce-multipath]
//!                 [--key-dir DIR] [--decryption host|native]
//! attach_to_guest --detach --record STATE.json [--force] [--key-dir DIR]
//! ```
//!
//! The connection_info file is served by a [`hostbrick::attach::JsonFileStorage`] over its
//! directory, the volume id being the file name without `.json`; attachments are recorded in
//! `DIR/attachments/`. Attach connects the volume on this host, attaches the disk to the
//! domain through `virsh`, prints the disk XML it used on stdout and writes everything a
//! later detach needs to `--record` (mode 0600; it holds no password or keyring). Any
//! failure rolls back what was done. Detach reads the record, detaches the disk from the
//! guest and the volume from the host, deletes the attachment and the record, and prints the
//! XML it detached.
//!
//! An encrypted volume (its metadata in the connection_info file's top-level `encryption`
//! key, as Cinder returns it) needs `--key-dir DIR`, a [`hostbrick::encryption::FileKeyManager`]
//! directory (0700) with one 0600 file per key id. `--decryption host` (the default) opens
//! it with dm-crypt on this host and gives the guest the decrypted device;
//! `--decryption native` has QEMU decrypt a LUKS1 volume (the passphrase in a private
//! libvirt secret, undefined on detach; `luks2` and `plain` volumes are decrypted on the
//! host). Detach needs no key; with `--key-dir` a failed detach can reopen the mapping it
//! closed.
//!
//! Without `--live`/`--config`, changes apply to the domain's current state. Common options:
//! `--timeout SECS`, `--lock-dir DIR`, `--root-helper CMD`. Errors go to stderr as
//! `error[KIND]: message` (exit 1; 2 for a bad command line).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use hostbrick::attach::{Decryption, JsonFileStorage, VirshDomain, VirshSecrets};
use hostbrick::encryption::FileKeyManager;
use hostbrick::{
    get_connector_properties, AttachRequest, AttachmentRecord, ConnectorOptions, DisconnectOptions,
    DiskBus, DomainFlags, Error, Orchestrator,
};
use serde::{Deserialize, Serialize};

const USAGE: &str = "usage:
  attach_to_guest --domain NAME --connection-info DIR/VOLUME.json --record STATE.json
                  [--uri URI] [--bus virtio|scsi|sata] [--dev NAME] [--instance ID]
                  [--live] [--config] [--ip IP] [--multipath] [--enforce-multipath]
                  [--key-dir DIR] [--decryption host|native]
  attach_to_guest --detach --record STATE.json [--force] [--key-dir DIR]
common options: --timeout SECS, --lock-dir DIR, --root-helper CMD";

mod common;

use common::{value, Usage};

#[derive(Default)]
struct Args {
    detach: bool,
    domain: Option<String>,
    uri: Option<String>,
    connection_info: Option<PathBuf>,
    record: Option<PathBuf>,
    bus: Option<DiskBus>,
    dev: Option<String>,
    instance: Option<String>,
    flags: DomainFlags,
    ip: Option<String>,
    multipath: bool,
    enforce_multipath: bool,
    force: bool,
    timeout: Option<Duration>,
    lock_dir: Option<String>,
    root_helper: Option<String>,
    key_dir: Option<PathBuf>,
    decryption: Option<Decryption>,
}

/// What `--record` holds: the attachment record plus where its storage and domain live.
#[derive(Serialize, Deserialize)]
struct State {
    storage_dir: PathBuf,
    uri: Option<String>,
    attachment: AttachmentRecord,
}

fn parse_args(argv: Vec<String>) -> Result<Args, Usage> {
    let mut a = Args::default();
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--detach" => a.detach = true,
            "--domain" => a.domain = Some(value("--domain", &mut it)?),
            "--uri" | "-c" => a.uri = Some(value("--uri", &mut it)?),
            "--connection-info" => {
                a.connection_info = Some(value("--connection-info", &mut it)?.into())
            }
            "--record" => a.record = Some(value("--record", &mut it)?.into()),
            "--bus" => {
                let v = value("--bus", &mut it)?;
                a.bus = Some(v.parse().map_err(|e: Error| Usage(e.to_string()))?);
            }
            "--dev" => a.dev = Some(value("--dev", &mut it)?),
            "--instance" => a.instance = Some(value("--instance", &mut it)?),
            "--live" => a.flags.live = true,
            "--config" => a.flags.config = true,
            "--ip" => a.ip = Some(value("--ip", &mut it)?),
            "--multipath" => a.multipath = true,
            "--enforce-multipath" => {
                a.multipath = true;
                a.enforce_multipath = true;
            }
            "--force" => a.force = true,
            "--timeout" => a.timeout = Some(common::timeout(&mut it)?),
            "--lock-dir" => a.lock_dir = Some(value("--lock-dir", &mut it)?),
            "--root-helper" => a.root_helper = Some(value("--root-helper", &mut it)?),
            "--key-dir" => a.key_dir = Some(value("--key-dir", &mut it)?.into()),
            "--decryption" => {
                let v = value("--decryption", &mut it)?;
                a.decryption = Some(v.parse().map_err(|e: Error| Usage(e.to_string()))?);
            }
            "-h" | "--help" => return Err(Usage(String::new())),
            other => return Err(Usage(format!("unknown argument {other:?}"))),
        }
    }
    if a.record.is_none() {
        return Err(Usage("--record is required".into()));
    }
    if !a.detach && (a.domain.is_none() || a.connection_info.is_none()) {
        return Err(Usage("attach needs --domain and --connection-info".into()));
    }
    if a.detach && a.decryption.is_some() {
        return Err(Usage(
            "--decryption is for attach (detach reads it from the record)".into(),
        ));
    }
    Ok(a)
}

fn options(a: &Args) -> ConnectorOptions {
    common::connector_options(
        a.root_helper.as_deref(),
        hostbrick::MultipathMode::from_flags(a.multipath, a.enforce_multipath),
        a.timeout,
        a.lock_dir.as_deref(),
    )
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn orchestrator(
    a: &Args,
    storage_dir: &Path,
    domain: &str,
    uri: Option<&str>,
) -> hostbrick::Result<Orchestrator> {
    let opts = options(a);
    let mut dom = VirshDomain::new(domain, opts.context.clone());
    let mut secrets = VirshSecrets::new(opts.context.clone());
    if let Some(uri) = uri {
        dom = dom.with_uri(uri);
        secrets = secrets.with_uri(uri);
    }
    let host = common::hostname();
    let ip = a.ip.as_deref().unwrap_or("127.0.0.1");
    let props =
        get_connector_properties(&opts.context, ip, a.multipath, a.enforce_multipath, &host)?;
    let locks = opts.locks();
    let context = opts.context.clone();
    let mut orch = Orchestrator::new(
        Arc::new(JsonFileStorage::new(storage_dir)),
        Arc::new(dom),
        Arc::new(opts),
        props,
        locks,
    )
    .with_flags(a.flags)
    .with_disconnect_options(DisconnectOptions {
        force: a.force,
        ignore_errors: false,
    })
    .with_host(context)
    .with_secrets(Arc::new(secrets));
    if let Some(dir) = &a.key_dir {
        orch = orch.with_key_manager(Arc::new(FileKeyManager::new(dir)?));
    }
    Ok(orch)
}

fn run(a: &Args) -> hostbrick::Result<String> {
    let record_path = a.record.as_deref().expect("checked by parse_args");
    if a.detach {
        let text = std::fs::read_to_string(record_path).map_err(io_err(record_path))?;
        let state: State = serde_json::from_str(&text).map_err(|e| Error::InvalidDeviceRecord {
            reason: format!(
                "{} is not an attach_to_guest record: {e}",
                record_path.display()
            ),
        })?;
        let rec = &state.attachment;
        orchestrator(a, &state.storage_dir, &rec.domain, state.uri.as_deref())?.detach(rec)?;
        std::fs::remove_file(record_path).map_err(io_err(record_path))?;
        return Ok(rec.disk_xml.clone());
    }
    let info_path = a.connection_info.as_deref().expect("checked by parse_args");
    let volume_id = info_path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".json"))
        .ok_or_else(|| Error::InvalidArgument {
            name: "--connection-info".into(),
            reason: format!("{} is not a VOLUME.json file", info_path.display()),
        })?;
    let storage_dir = match info_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let storage_dir = storage_dir.canonicalize().map_err(io_err(&storage_dir))?;
    let domain = a.domain.as_deref().expect("checked by parse_args");
    let orch = orchestrator(a, &storage_dir, domain, a.uri.as_deref())?;
    let mut request = AttachRequest::new(volume_id);
    request.bus = a.bus.unwrap_or(DiskBus::Virtio);
    request.device_name = a.dev.clone();
    request.instance = a.instance.clone();
    request.decryption = a.decryption.unwrap_or_default();
    let rec = orch.attach(&request)?;
    let state = State {
        storage_dir,
        uri: a.uri.clone(),
        attachment: rec,
    };
    let saved = serde_json::to_string_pretty(&state).map_err(|e| Error::InvalidDeviceRecord {
        reason: e.to_string(),
    });
    let written = saved.and_then(|s| write_private(record_path, &s));
    if let Err(e) = written {
        // Without a record nobody can detach it later: undo the attach.
        let undo = orch.detach(&state.attachment);
        return Err(match undo {
            Ok(()) => e,
            Err(u) => {
                eprintln!(
                    "error[{}]: undoing the attach failed too: {}",
                    u.kind(),
                    u.chain()
                );
                e
            }
        });
    }
    Ok(state.attachment.disk_xml)
}

/// Writes `text` to `path` whole or not at all, readable by its owner only (0600): a new
/// file beside it, renamed over it.
fn write_private(path: &Path, text: &str) -> hostbrick::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
    Ok(())
}

fn main() -> ExitCode {
    common::cli_main(USAGE, parse_args, run)
}
