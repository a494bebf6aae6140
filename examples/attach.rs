//! `attach`: a small command line over hostbrick, for operators and test suites.
//!
//! ```text
//! attach properties [--ip IP] [--host NAME] [--multipath] [--enforce-multipath] [--no-local-attach]
//! attach connect [--multipath] [--enforce-multipath] [--rbd-nbd] [--no-local-attach] [--key-dir DIR] [--encryption FILE] CONNECTION_INFO.json|-
//! attach disconnect [--force] [--ignore-errors] [--multipath] [--encryption FILE] CONNECTION_INFO.json [DEVICE.json]
//! attach extend [--multipath] [--key-dir DIR] [--encryption FILE] CONNECTION_INFO.json|-
//! attach audit
//! attach batch [--ip IP] [--host NAME] [--multipath] [--enforce-multipath] [--rbd-nbd] [--no-local-attach] [--key-dir DIR]
//! ```
//!
//! JSON in, JSON out: results go to stdout and nothing else does. Errors go to stderr as
//! `error[KIND]: message` with exit status 1 (2 for a bad command line). `audit` prints
//! what hostbrick finds orphaned on the host (sessions without LUNs in use, multipath maps
//! without paths, NVMe controllers without namespaces in use, unrecorded RBD mappings) as
//! one JSON object and changes nothing; sessions, controllers and mappings that a hostbrick operation
//! holds at that moment (under `--lock-dir`) are listed apart, under `in_progress`. Set `RUST_LOG`
//! (e.g. `RUST_LOG=hostbrick=info`) for tracing output on stderr.
//!
//! `batch` is hostbrick as a library behind a pipe: one JSON request per line on stdin
//! (`properties`, `connect`, `disconnect`, `extend`, and `connect_many` / `disconnect_many`
//! that run several calls at once on threads), one JSON answer per line on stdout
//! (`{"ok": true, "result": ..., "secs": S}` or `{"ok": false, "error": {"kind", "message"},
//! "secs": S}`), every call in this one process, connectors kept from call to call (as an
//! orchestrator linking hostbrick makes them). Its flags are the defaults of the requests.
//! It speaks the protocol of the VM suite's os-brick driver, so that a suite drives both
//! the same way; a bad line gets an error answer and the loop goes on until `{"op": "quit"}`
//! or the end of stdin. The request and answer shapes: `examples/attach/batch.rs`.
//!
//! Common options: `--timeout SECS` (operation deadline), `--lock-dir DIR`,
//! `--iface NAME` (open-iscsi iface), `--root-helper CMD` (e.g. `sudo`).
//!
//! Encrypted volumes: the encryption metadata (Cinder's, `{"provider": "luks", "cipher":
//! ..., "key_size": ..., "control_location": "front-end", "encryption_key_id": ...}`) comes
//! from `--encryption FILE`, else from the connection_info file's top-level `encryption`
//! key (beside `driver_volume_type` and `data`); in `batch`, from a request's `encryption`
//! key. `--key-dir DIR` is the key manager: a 0700 directory with one 0600 file per key
//! id (`DIR/<id>`: the key in hex, as `openssl rand -hex 32` writes it; or
//! `DIR/<id>.passphrase`: a passphrase). `connect` then opens the volume (LUKS, LUKS2 or
//! plain dm-crypt; a blank volume is formatted on its first attach, a device with any
//! signature is refused) and prints the device record with `encryption` (the dm-crypt
//! mapping; `encryption.device` is what a guest gets); `disconnect` with a DEVICE.json that
//! has `encryption` closes the mapping first (no key needed); `extend` resizes the mapping
//! and prints the decrypted size. Without metadata, or with `back-end` encryption, nothing
//! changes.
//!
//! Signals: `connect`, `disconnect`, `extend` and `batch` take `SIGINT` and `SIGTERM`. The
//! first cancels the running operations: a connect undoes what it made (sessions, devices,
//! maps, controllers, mappings) and fails with `error[cancelled]: ...` (exit 1); `batch`
//! answers the requests under way (`"kind": "cancelled"`) and exits 1. A second signal exits
//! at once with 128 + its number (130, 143), leaving what is half made to `attach audit`.
//! (`SIGKILL` leaves it too.) The other commands change nothing and die on the signal.

use std::io::Read;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hostbrick::encryption::EncryptionMetadata;
use hostbrick::{
    connector_for, get_connector_properties, ConnectionInfo, Connector, ConnectorOptions,
    DeviceRecord, DisconnectOptions, HostContext,
};

const USAGE: &str = "usage:
  attach properties [--ip IP] [--host NAME] [--multipath] [--enforce-multipath] [--no-local-attach]
  attach connect [--multipath] [--enforce-multipath] [--rbd-nbd] [--no-local-attach] [--key-dir DIR] [--encryption FILE] CONNECTION_INFO.json|-
  attach disconnect [--force] [--ignore-errors] [--multipath] [--encryption FILE] CONNECTION_INFO.json [DEVICE.json]
  attach extend [--multipath] [--key-dir DIR] [--encryption FILE] CONNECTION_INFO.json|-
  attach audit
  attach batch [--ip IP] [--host NAME] [--multipath] [--enforce-multipath] [--rbd-nbd] [--no-local-attach] [--key-dir DIR]
    (one JSON request a line on stdin: properties, connect, disconnect, extend, connect_many,
     disconnect_many, quit; one JSON answer a line on stdout; the flags are the requests' defaults)
common options: --timeout SECS, --lock-dir DIR, --iface NAME, --root-helper CMD,
  --rbd-nbd (map RBD images with rbd-nbd), --no-local-attach (RBD: network record, no mapping)
encryption: --encryption FILE (Cinder's encryption metadata; default: the connection_info's
  top-level \"encryption\" key; batch: a request's \"encryption\" key), --key-dir DIR (one 0600
  file per key id: hex key, or <id>.passphrase); a DEVICE.json with \"encryption\" is closed first
SIGINT/SIGTERM: the first cancels (a connect undoes what it made; error[cancelled], exit 1),
  a second exits at once (exit 128+signal)";

#[path = "attach/batch.rs"]
mod batch;
mod common;
#[path = "attach/crypt.rs"]
mod crypt;
#[path = "attach/signals.rs"]
mod signals;

use common::Usage;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Properties,
    Connect,
    Disconnect,
    Extend,
    Audit,
    Batch,
}

struct Args {
    command: Cmd,
    files: Vec<String>,
    ip: Option<String>,
    host: Option<String>,
    multipath: bool,
    enforce_multipath: bool,
    force: bool,
    ignore_errors: bool,
    timeout: Option<Duration>,
    lock_dir: Option<String>,
    iface: Option<String>,
    root_helper: Option<String>,
    rbd_nbd: bool,
    no_local_attach: bool,
    key_dir: Option<String>,
    encryption: Option<String>,
}

fn parse_args(argv: Vec<String>) -> Result<Args, Usage> {
    let mut it = argv.into_iter();
    let command = match it.next().as_deref() {
        Some("properties") => Cmd::Properties,
        Some("connect") => Cmd::Connect,
        Some("disconnect") => Cmd::Disconnect,
        Some("extend") => Cmd::Extend,
        Some("audit") => Cmd::Audit,
        Some("batch") => Cmd::Batch,
        Some("-h" | "--help") => return Err(Usage(String::new())),
        Some(other) => return Err(Usage(format!("unknown command {other:?}"))),
        None => return Err(Usage("missing command".into())),
    };
    let mut a = Args {
        command,
        files: Vec::new(),
        ip: None,
        host: None,
        multipath: false,
        enforce_multipath: false,
        force: false,
        ignore_errors: false,
        timeout: None,
        lock_dir: None,
        iface: None,
        root_helper: None,
        rbd_nbd: false,
        no_local_attach: false,
        key_dir: None,
        encryption: None,
    };
    let value = common::value;
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--ip" => a.ip = Some(value("--ip", &mut it)?),
            "--host" => a.host = Some(value("--host", &mut it)?),
            "--multipath" => a.multipath = true,
            "--enforce-multipath" => {
                a.multipath = true;
                a.enforce_multipath = true;
            }
            "--force" => a.force = true,
            "--rbd-nbd" => a.rbd_nbd = true,
            "--no-local-attach" => a.no_local_attach = true,
            "--ignore-errors" => a.ignore_errors = true,
            "--timeout" => a.timeout = Some(common::timeout(&mut it)?),
            "--lock-dir" => a.lock_dir = Some(value("--lock-dir", &mut it)?),
            "--iface" => a.iface = Some(value("--iface", &mut it)?),
            "--root-helper" => a.root_helper = Some(value("--root-helper", &mut it)?),
            "--key-dir" => a.key_dir = Some(value("--key-dir", &mut it)?),
            "--encryption" => a.encryption = Some(value("--encryption", &mut it)?),
            "-h" | "--help" => return Err(Usage(String::new())),
            "-" => a.files.push(arg),
            s if s.starts_with('-') => return Err(Usage(format!("unknown option {s}"))),
            _ => a.files.push(arg),
        }
    }
    let (name, min, max) = match a.command {
        Cmd::Properties => ("properties", 0, 0),
        Cmd::Connect => ("connect", 1, 1),
        Cmd::Extend => ("extend", 1, 1),
        Cmd::Disconnect => ("disconnect", 1, 2),
        Cmd::Audit => ("audit", 0, 0),
        Cmd::Batch => ("batch", 0, 0),
    };
    if a.files.len() < min || a.files.len() > max {
        return Err(Usage(format!("{name} takes {min} to {max} file arguments")));
    }
    Ok(a)
}

fn read_input(path: &str) -> hostbrick::Result<String> {
    let mut text = String::new();
    let r = if path == "-" {
        std::io::stdin().read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text))
    };
    r.map_err(|source| hostbrick::Error::Io {
        path: path.into(),
        source,
    })?;
    Ok(text)
}

fn context(a: &Args) -> HostContext {
    common::system_context(a.root_helper.as_deref())
}

fn options(a: &Args) -> ConnectorOptions {
    let mut o = common::connector_options(
        a.root_helper.as_deref(),
        hostbrick::MultipathMode::from_flags(a.multipath, a.enforce_multipath),
        a.timeout,
        a.lock_dir.as_deref(),
    );
    if let Some(i) = &a.iface {
        o.iscsi.iface = Some(i.clone());
    }
    if a.rbd_nbd {
        o.rbd.mapper = hostbrick::rbd::RbdMapper::Nbd;
    }
    if a.no_local_attach {
        o.rbd.attach = hostbrick::rbd::RbdAttach::Network;
    }
    o
}

/// The command's options with a cancel the first `SIGINT` or `SIGTERM` fires (see
/// [`signals`]); `then` runs after it fired.
fn cancellable(
    a: &Args,
    then: impl FnOnce() + Send + 'static,
) -> hostbrick::Result<ConnectorOptions> {
    let cancel = signals::on_first_signal(then).map_err(|source| hostbrick::Error::Io {
        path: "signals".into(),
        source,
    })?;
    Ok(options(a).cancel(cancel))
}

/// The volume of the first file argument and its encryption metadata (`--encryption FILE`,
/// else the file's top-level `encryption` key).
fn volume(a: &Args) -> hostbrick::Result<(ConnectionInfo, Option<EncryptionMetadata>)> {
    let text = read_input(&a.files[0])?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| hostbrick::Error::InvalidConnectionInfo {
            field: "connection_info".into(),
            reason: format!("not valid JSON: {e}"),
        })?;
    let info = ConnectionInfo::from_value(&v)?;
    let meta = match &a.encryption {
        Some(f) => EncryptionMetadata::from_json(&read_input(f)?)?,
        None => crypt::metadata(v.get("encryption"))?,
    };
    Ok((info, meta))
}

/// The connector for `info` (cancellable), opening and closing the volume's encryption
/// when `meta` (or the record, to detach) asks for it.
fn encrypted(
    a: &Args,
    info: &ConnectionInfo,
    meta: Option<EncryptionMetadata>,
    device: Option<&DeviceRecord>,
) -> hostbrick::Result<Arc<dyn Connector>> {
    let o = cancellable(a, || {})?;
    let (context, timeout) = (o.context.clone(), o.operation_timeout);
    let inner: Arc<dyn Connector> = Arc::from(connector_for(info.protocol(), o)?);
    let keys = crypt::key_manager(a.key_dir.as_deref())?;
    Ok(crypt::wrap(inner, &context, timeout, keys, meta, device))
}

fn run(a: &Args) -> hostbrick::Result<String> {
    match a.command {
        Cmd::Properties => {
            let ip = a.ip.clone().unwrap_or_else(|| "127.0.0.1".to_string());
            let host = a.host.clone().unwrap_or_else(common::hostname);
            let props = get_connector_properties(
                &context(a),
                &ip,
                a.multipath,
                a.enforce_multipath,
                &host,
            )?;
            serde_json::to_string_pretty(&props).map_err(|e| hostbrick::Error::Parse {
                program: "attach".into(),
                reason: e.to_string(),
            })
        }
        Cmd::Connect => {
            let (info, meta) = volume(a)?;
            let connector = encrypted(a, &info, meta, None)?;
            connector.connect_volume(&info)?.to_json()
        }
        Cmd::Disconnect => {
            let (info, meta) = volume(a)?;
            let device = match a.files.get(1) {
                Some(f) => Some(DeviceRecord::from_json(&read_input(f)?)?),
                None => None,
            };
            let connector = encrypted(a, &info, meta, device.as_ref())?;
            let opts = DisconnectOptions {
                force: a.force,
                ignore_errors: a.ignore_errors,
            };
            let done = connector.disconnect_volume(&info, device.as_ref(), opts)?;
            // --ignore-errors: what --force carried on past is told, and the call succeeds.
            for e in &done.failures {
                eprintln!("warning: disconnect step failed (ignored): {}", e.chain());
            }
            Ok(String::new())
        }
        Cmd::Extend => {
            let (info, meta) = volume(a)?;
            let connector = encrypted(a, &info, meta, None)?;
            Ok(connector.extend_volume(&info)?.to_string())
        }
        Cmd::Batch => {
            // After the first signal: the answers under way written, exit.
            let answering = Arc::new(Mutex::new(()));
            let held = answering.clone();
            let options = cancellable(a, move || {
                let _last = held.lock().unwrap_or_else(|p| p.into_inner());
                eprintln!("error[cancelled]: batch stopped by a signal");
                std::process::exit(1);
            })?;
            let server = batch::Batch::new(
                options,
                a.ip.clone().unwrap_or_else(|| "127.0.0.1".to_string()),
                a.host.clone().unwrap_or_else(common::hostname),
            )
            .with_keys(crypt::key_manager(a.key_dir.as_deref())?)
            .answering_under(answering);
            server
                .serve(std::io::stdin().lock(), std::io::stdout().lock())
                .map_err(|source| hostbrick::Error::Io {
                    path: "stdin/stdout".into(),
                    source,
                })?;
            Ok(String::new())
        }
        Cmd::Audit => {
            // The lock directory of --lock-dir tells attaches still in progress.
            let o = options(a);
            let report = hostbrick::audit_with_locks(&o.context, &o.locks())?;
            serde_json::to_string_pretty(&report).map_err(|e| hostbrick::Error::Parse {
                program: "attach".into(),
                reason: e.to_string(),
            })
        }
    }
}

fn main() -> ExitCode {
    common::cli_main(USAGE, parse_args, run)
}
