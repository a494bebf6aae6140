//! The library's own cost per operation: connect and disconnect through the connectors on
//! simulated hosts (src/testing/sim), whose commands and kernel answer at once, so what is
//! measured is hostbrick's work between the commands: parsing connection_info, locks, the
//! attachment registry, sysfs lookups, records (see README, "Benchmarks"). The one
//! exception: a simulated `iscsiadm` takes 2 ms, as a real one's start-up does, so that an
//! iscsiadm call added to a path shows in its figure.
//!
//! Before measuring, each operation's external commands are printed (`commands per
//! operation`): the same lists `tests/command_budget.rs` holds each operation to.
#![allow(missing_docs)] // criterion_group! generates undocumented items

mod common;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use hostbrick::testing::sim::{iscsi, nvme, rbd, MIB};
use hostbrick::testing::FakeRunner;
use hostbrick::{
    connector_for, ConnectionInfo, Connector, DisconnectOptions, MultipathMode, Protocol,
};

/// One volume on a simulated host, ready to be connected and disconnected again and again.
struct Case {
    name: &'static str,
    connector: Box<dyn Connector>,
    info: ConnectionInfo,
    runner: std::sync::Arc<FakeRunner>,
    // keeps the simulated host alive
    _sim: Box<dyn std::any::Any>,
}

fn cases() -> Vec<Case> {
    let single = iscsi::IscsiSim::new();
    single.add_target("192.0.2.10:3260", &[(1, iscsi::WWID_1, 64 * MIB)]);
    let multi = iscsi::IscsiSim::new();
    for p in ["192.0.2.10:3260", "192.0.2.11:3260"] {
        multi.add_target(p, &[(1, iscsi::WWID_1, 64 * MIB)]);
    }
    let fabric = nvme::NvmeSim::new(true);
    fabric.add_subsystem(
        nvme::NQN,
        &["192.0.2.20:4420"],
        &[(1, nvme::UUID_1, 64 * MIB)],
    );
    let ceph = rbd::RbdSim::new();
    ceph.add_image("volumes/volume-1", 64 * MIB);
    vec![
        Case {
            name: "iscsi_single_path",
            connector: connector_for(Protocol::Iscsi, single.options()).expect("iscsi"),
            info: iscsi::single("192.0.2.10:3260", 1, "vol-1"),
            runner: single.runner.clone(),
            _sim: Box::new(single),
        },
        Case {
            name: "iscsi_multipath",
            connector: connector_for(
                Protocol::Iscsi,
                multi.options().multipath(MultipathMode::Optional),
            )
            .expect("iscsi"),
            info: iscsi::multi(&["192.0.2.10:3260", "192.0.2.11:3260"], 1, "vol-1"),
            runner: multi.runner.clone(),
            _sim: Box::new(multi),
        },
        Case {
            name: "nvme_tcp",
            connector: connector_for(Protocol::NvmeOf, fabric.options()).expect("nvme"),
            info: nvme::volume(nvme::UUID_1, &["192.0.2.20:4420"], "vol-1"),
            runner: fabric.runner.clone(),
            _sim: Box::new(fabric),
        },
        Case {
            name: "rbd_krbd",
            connector: connector_for(Protocol::Rbd, ceph.options()).expect("rbd"),
            info: rbd::rbd_info("volumes/volume-1", rbd::KEY),
            runner: ceph.runner.clone(),
            _sim: Box::new(ceph),
        },
    ]
}

/// Connects and disconnects once; the time of each.
fn cycle(c: &Case) -> (Duration, Duration) {
    let t0 = Instant::now();
    let record = c.connector.connect_volume(&c.info).expect("connect");
    let connected = t0.elapsed();
    let t1 = Instant::now();
    c.connector
        .disconnect_volume(&c.info, Some(&record), DisconnectOptions::default())
        .expect("disconnect");
    (connected, t1.elapsed())
}

fn program_list(runner: &FakeRunner) -> String {
    let calls = runner.calls();
    if calls.is_empty() {
        return "none".into();
    }
    calls
        .iter()
        .map(|c| c.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("; ")
}

fn operations(c: &mut Criterion) {
    // The simulated hosts' trees (and the registry's synced writes in them) on tmpfs, as
    // /run is on a real host, when there is one.
    if std::path::Path::new("/dev/shm").is_dir() {
        std::env::set_var("TMPDIR", "/dev/shm");
    }
    let cases = cases();
    eprintln!("commands per operation:");
    for case in &cases {
        case.runner.clear_calls();
        let record = case.connector.connect_volume(&case.info).expect("connect");
        let connect = (case.runner.calls().len(), program_list(&case.runner));
        case.runner.clear_calls();
        case.connector
            .disconnect_volume(&case.info, Some(&record), DisconnectOptions::default())
            .expect("disconnect");
        let disconnect = (case.runner.calls().len(), program_list(&case.runner));
        eprintln!(
            "  {}: connect {} ({}), disconnect {} ({})",
            case.name, connect.0, connect.1, disconnect.0, disconnect.1
        );
    }
    let mut g = c.benchmark_group("operation");
    for case in &cases {
        g.bench_function(format!("{}/connect", case.name), |b| {
            b.iter_custom(|n| (0..n).map(|_| cycle(case).0).sum())
        });
        g.bench_function(format!("{}/disconnect", case.name), |b| {
            b.iter_custom(|n| (0..n).map(|_| cycle(case).1).sum())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = operations
}
criterion_main!(benches);
