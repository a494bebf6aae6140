//! `concurrent_attach`: attaches N volumes at once from N threads, checks that every
//! device is the volume it should be, detaches them all at once, and prints the timings.
//!
//! ```text
//! concurrent_attach [--multipath] [--timeout SECS] [--lock-dir DIR] CONNECTION_INFO.json=ID...
//! ```
//!
//! `ID` is what the device must show: the WWID (udev's form, e.g. `36001405...`) of an
//! iSCSI volume, the namespace UUID of an NVMe-oF volume, `pool/image` of an RBD image, the
//! device itself (e.g. `/dev/loop0`) of a `local` volume.
//! Every thread starts its connect at the same moment (a barrier), and, once all connects
//! are back, its disconnect at the same moment. A failed connect or a device showing
//! another volume is a failure; the devices that did attach are still detached.
//!
//! Prints one JSON object on stdout:
//! `{"volumes", "connect_total_s", "disconnect_total_s", "connect_s": [...],
//! "disconnect_s": [...], "devices": [...], "scsi_hosts": [...], "nvme_controllers": [...],
//! "failures": [{"volume", "phase", "kind", "error"}], "ok"}` (`scsi_hosts` and
//! `nvme_controllers`: what the attached volumes' paths went through); exit status 0 when everything worked, 1 otherwise, 2 for a bad
//! command line.

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hostbrick::{
    connector_for, ConnectionInfo, ConnectorOptions, DeviceRecord, DisconnectOptions, HostContext,
    MultipathMode, Protocol, Wwid,
};
use serde_json::json;

const USAGE: &str = "usage: concurrent_attach [--multipath] [--timeout SECS] [--lock-dir DIR] CONNECTION_INFO.json=ID...
  ID: the volume's WWID (iSCSI), namespace UUID (NVMe-oF), pool/image (RBD) or device (local)";

struct Volume {
    file: String,
    expect: String,
    info: ConnectionInfo,
}

struct Args {
    multipath: bool,
    timeout: Option<Duration>,
    lock_dir: Option<String>,
    volumes: Vec<Volume>,
}

fn parse_args(argv: Vec<String>) -> Result<Args, String> {
    let mut a = Args {
        multipath: false,
        timeout: None,
        lock_dir: None,
        volumes: Vec::new(),
    };
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--multipath" => a.multipath = true,
            "--timeout" => {
                let v = it.next().ok_or("--timeout needs a value")?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| format!("--timeout {v:?} is not a positive number"))?;
                a.timeout = Some(Duration::from_secs_f64(secs));
            }
            "--lock-dir" => a.lock_dir = Some(it.next().ok_or("--lock-dir needs a value")?),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            spec => {
                let (file, expect) = spec
                    .split_once('=')
                    .ok_or_else(|| format!("{spec:?} is not CONNECTION_INFO.json=ID"))?;
                let text = std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot read {file}: {e}"))?;
                let info = ConnectionInfo::from_json(&text)
                    .map_err(|e| format!("{file}: {}", e.chain()))?;
                a.volumes.push(Volume {
                    file: file.to_string(),
                    expect: expect.to_string(),
                    info,
                });
            }
        }
    }
    if a.volumes.is_empty() {
        return Err("no volumes given".into());
    }
    Ok(a)
}

/// What the device at `path` shows as its identity, by the volume's protocol.
fn identity(ctx: &HostContext, protocol: Protocol, path: &Path) -> Result<String, String> {
    let host = &ctx.host;
    let real = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = real
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{} has no device name", real.display()))?
        .to_string();
    let attr = |rel: String| host.read_attr(&host.sys(rel)).map_err(|e| e.chain());
    match protocol {
        Protocol::Iscsi | Protocol::Iser if name.starts_with("dm-") => {
            let uuid = attr(format!("block/{name}/dm/uuid"))?;
            uuid.strip_prefix("mpath-")
                .map(str::to_string)
                .ok_or_else(|| format!("{name} is not a multipath map (dm uuid {uuid:?})"))
        }
        Protocol::Iscsi | Protocol::Iser => {
            let raw = attr(format!("block/{name}/device/wwid"))?;
            Wwid::from_sysfs(&raw)
                .map(|w| w.to_string())
                .map_err(|e| e.to_string())
        }
        Protocol::NvmeOf => attr(format!("block/{name}/uuid")),
        Protocol::Local => Ok(real.display().to_string()),
        Protocol::Rbd => {
            let id = name
                .strip_prefix("rbd")
                .ok_or_else(|| format!("{name} is not a kernel rbd device"))?;
            let pool = attr(format!("bus/rbd/devices/{id}/pool"))?;
            let image = attr(format!("bus/rbd/devices/{id}/name"))?;
            Ok(format!("{pool}/{image}"))
        }
    }
}

struct Outcome {
    connect: Option<(Instant, Instant)>,
    disconnect: Option<(Instant, Instant)>,
    device: Option<String>,
    record: Option<DeviceRecord>,
    failures: Vec<serde_json::Value>,
}

fn failure(v: &Volume, phase: &str, kind: &str, error: String) -> serde_json::Value {
    eprintln!("{}: {phase} failed: {error}", v.file);
    json!({"volume": v.file, "phase": phase, "kind": kind, "error": error})
}

fn run_one(
    ctx: &HostContext,
    opts: ConnectorOptions,
    v: &Volume,
    start: &Barrier,
    middle: &Barrier,
) -> Outcome {
    let mut out = Outcome {
        connect: None,
        disconnect: None,
        device: None,
        record: None,
        failures: Vec::new(),
    };
    let connector = match connector_for(v.info.protocol(), opts) {
        Ok(c) => c,
        Err(e) => {
            out.failures
                .push(failure(v, "connect", e.kind(), e.chain()));
            start.wait();
            middle.wait();
            return out;
        }
    };
    start.wait();
    let t0 = Instant::now();
    let result = connector.connect_volume(&v.info);
    out.connect = Some((t0, Instant::now()));
    let record: Option<DeviceRecord> = match result {
        Ok(r) => Some(r),
        Err(e) => {
            out.failures
                .push(failure(v, "connect", e.kind(), e.chain()));
            None
        }
    };
    if let Some(r) = &record {
        out.device = Some(r.path.display().to_string());
        match identity(ctx, v.info.protocol(), &r.path) {
            Ok(id) if id == v.expect => {}
            Ok(id) => out.failures.push(failure(
                v,
                "verify",
                "wrong_device",
                format!("{} shows {id}, expected {}", r.path.display(), v.expect),
            )),
            Err(e) => out.failures.push(failure(v, "verify", "io", e)),
        }
        if let Some(w) = &r.scsi_wwn {
            if *w != v.expect {
                out.failures.push(failure(
                    v,
                    "verify",
                    "wrong_record",
                    format!("the record says WWID {w}, expected {}", v.expect),
                ));
            }
        }
    }
    middle.wait();
    if let Some(r) = &record {
        let t0 = Instant::now();
        let result = connector.disconnect_volume(&v.info, Some(r), DisconnectOptions::default());
        out.disconnect = Some((t0, Instant::now()));
        if let Err(e) = result {
            out.failures
                .push(failure(v, "disconnect", e.kind(), e.chain()));
        }
    }
    out.record = record;
    out
}

fn span(points: impl Iterator<Item = (Instant, Instant)> + Clone) -> f64 {
    let first = points.clone().map(|p| p.0).min();
    let last = points.map(|p| p.1).max();
    match (first, last) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    }
}

fn secs(p: Option<(Instant, Instant)>) -> serde_json::Value {
    p.map_or(serde_json::Value::Null, |(a, b)| {
        json!((b.duration_since(a).as_secs_f64() * 1000.0).round() / 1000.0)
    })
}

mod common;

fn main() -> ExitCode {
    common::init_tracing();
    let args = match parse_args(std::env::args().skip(1).collect()) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("error[usage]: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let ctx = HostContext::system();
    let mut opts = ConnectorOptions::with_context(ctx.clone());
    if args.multipath {
        opts = opts.multipath(MultipathMode::Optional);
    }
    if let Some(t) = args.timeout {
        opts = opts.operation_timeout(t);
    }
    if let Some(d) = &args.lock_dir {
        opts = opts.lock_dir(d);
    }
    let n = args.volumes.len();
    let start = Arc::new(Barrier::new(n));
    let middle = Arc::new(Barrier::new(n));
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = args
            .volumes
            .iter()
            .map(|v| {
                let (ctx, opts, start, middle) =
                    (ctx.clone(), opts.clone(), start.clone(), middle.clone());
                s.spawn(move || run_one(&ctx, opts, v, &start, &middle))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| Outcome {
                    connect: None,
                    disconnect: None,
                    device: None,
                    record: None,
                    failures: vec![json!({"phase": "thread", "kind": "panic", "error": "a worker thread panicked"})],
                })
            })
            .collect()
    });
    let mut failures: Vec<serde_json::Value> =
        outcomes.iter().flat_map(|o| o.failures.clone()).collect();
    // Two volumes on one device would be a mix-up even if each identity matched.
    let mut seen: Vec<(String, &str)> = Vec::new();
    for (o, v) in outcomes.iter().zip(&args.volumes) {
        let Some(d) = &o.device else { continue };
        let real = std::fs::canonicalize(d)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| d.clone());
        if let Some((_, other)) = seen.iter().find(|(r, _)| *r == real) {
            failures.push(failure(
                v,
                "verify",
                "shared_device",
                format!("{d} is also the device of {other}"),
            ));
        }
        seen.push((real, &v.file));
    }
    // What the volumes shared: SCSI hosts (one per iSCSI session) and NVMe controllers.
    let mut scsi_hosts: Vec<u32> = Vec::new();
    let mut controllers: Vec<String> = Vec::new();
    for r in outcomes.iter().filter_map(|o| o.record.as_ref()) {
        for p in &r.paths {
            if !scsi_hosts.contains(&p.hctl.host) {
                scsi_hosts.push(p.hctl.host);
            }
        }
        for p in &r.nvme_paths {
            if !controllers.contains(&p.controller) {
                controllers.push(p.controller.clone());
            }
        }
    }
    scsi_hosts.sort_unstable();
    controllers.sort();
    let report = json!({
        "volumes": n,
        "connect_total_s": (span(outcomes.iter().filter_map(|o| o.connect)) * 1000.0).round() / 1000.0,
        "disconnect_total_s": (span(outcomes.iter().filter_map(|o| o.disconnect)) * 1000.0).round() / 1000.0,
        "connect_s": outcomes.iter().map(|o| secs(o.connect)).collect::<Vec<_>>(),
        "disconnect_s": outcomes.iter().map(|o| secs(o.disconnect)).collect::<Vec<_>>(),
        "devices": outcomes.iter().map(|o| o.device.clone()).collect::<Vec<_>>(),
        "scsi_hosts": scsi_hosts,
        "nvme_controllers": controllers,
        "failures": failures,
        "ok": failures.is_empty(),
    });
    println!("{report}");
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
