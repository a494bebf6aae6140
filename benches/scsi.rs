//! SCSI, iSCSI and dm-multipath lookups on fake hosts carrying 16, 256, 1024 and 4096 SCSI
//! disks (see README, "Benchmarks").
//!
//! Each host carries `n / 2` multipath volumes, each reached through two portals: `n` iSCSI
//! sessions (each on its own SCSI host, as iscsi_tcp makes them), `n` disks with udev's
//! by-path links, and `n / 2` dm-multipath maps. Every lookup asks about a volume in the
//! middle, through the functions the iSCSI connector calls. A targeted lookup must cost
//! the same whatever else the host carries; `find_session/no_session` is the one read of
//! every session a first login needs (the kernel keeps no index of sessions by target).
#![allow(missing_docs)] // criterion_group! generates undocumented items

mod common;

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use hostbrick::iscsi::{by_path_name, IscsiTarget};
use hostbrick::testing::{FakeHost, FakeRunner, LunSpec};
use hostbrick::{
    connector_for, ConnectionInfo, ConnectorOptions, Hctl, HostContext, Portal, Protocol,
};

const SIZES: [u32; 4] = [16, 256, 1024, 4096];

/// One multipath volume of the fake host.
struct Volume {
    iqn: String,
    portals: [Portal; 2],
    hctls: [Hctl; 2],
    disks: [String; 2],
}

fn iqn(v: u32) -> String {
    format!("iqn.2010-10.org.openstack:volume-{v:05}")
}

fn portal(k: u32, v: u32) -> Portal {
    format!("10.{k}.{}.{}:3260", v / 250, v % 250 + 1)
        .parse()
        .expect("portal")
}

/// A host with `n` SCSI disks: volume `v` (0 .. n/2) has sessions `2v+1` and `2v+2`, one
/// per portal, on SCSI hosts `2v+2` and `2v+3`, LUN 1 on each, and a map over both.
fn host_with_disks(n: u32) -> (FakeHost, Vec<Volume>) {
    let fake = common::fake_host();
    let mut volumes = Vec::new();
    for v in 0..n / 2 {
        let iqn = iqn(v);
        let wwid = format!("naa.6001405{v:025x}");
        let portals = [portal(0, v), portal(1, v)];
        let mut hctls = Vec::new();
        let mut disks = Vec::new();
        for (k, p) in portals.iter().enumerate() {
            let sid = 2 * v + k as u32 + 1;
            let host_no = sid + 1;
            fake.add_iscsi_session(sid, host_no, 0, &iqn, p);
            let spec = LunSpec::new(0, 0, 1, &wwid, 1 << 30).by_path(by_path_name(p, &iqn, 1));
            disks.push(fake.add_scsi_disk(host_no, &spec));
            hctls.push(Hctl {
                host: host_no,
                channel: 0,
                target: 0,
                lun: 1,
            });
        }
        let slaves: Vec<&str> = disks.iter().map(String::as_str).collect();
        fake.add_multipath_map(
            &format!("36001405{v:025x}"),
            &format!("36001405{v:025x}"),
            &slaves,
        );
        volumes.push(Volume {
            iqn,
            portals: portals.clone(),
            hctls: [hctls[0], hctls[1]],
            disks: [disks[0].clone(), disks[1].clone()],
        });
    }
    (fake, volumes)
}

fn connection_info(v: &Volume) -> ConnectionInfo {
    let json = serde_json::json!({
        "driver_volume_type": "iscsi",
        "data": {
            "target_portal": v.portals[0].to_string(),
            "target_iqn": v.iqn,
            "target_lun": 1,
            "target_portals": [v.portals[0].to_string(), v.portals[1].to_string()],
            "target_iqns": [v.iqn, v.iqn],
            "target_luns": [1, 1],
            "volume_id": "bench"
        }
    });
    ConnectionInfo::from_value(&json).expect("connection_info")
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("scsi");
    for n in SIZES {
        let (fake, volumes) = host_with_disks(n);
        let host = fake.host();
        // A volume in the middle: nothing about it is first or last in any listing.
        let v = &volumes[volumes.len() / 2];
        let hctl = v.hctls[1];
        let disk = v.disks[1].as_str();
        g.bench_with_input(BenchmarkId::new("block_device", n), &hctl, |b, h| {
            b.iter(|| {
                hostbrick::internals::devices::block_name(&host, black_box(*h))
                    .unwrap()
                    .unwrap()
            })
        });
        g.bench_with_input(BenchmarkId::new("wwid", n), &hctl, |b, h| {
            b.iter(|| {
                hostbrick::internals::devices::wwid(&host, black_box(*h))
                    .unwrap()
                    .unwrap()
            })
        });
        g.bench_with_input(BenchmarkId::new("multipath_holder", n), disk, |b, d| {
            b.iter(|| {
                hostbrick::internals::devices::holder_map(&host, black_box(d))
                    .unwrap()
                    .unwrap()
            })
        });
        let connector = connector_for(
            Protocol::Iscsi,
            ConnectorOptions::with_context(HostContext::new(
                host.clone(),
                Arc::new(FakeRunner::new()),
            )),
        )
        .expect("connector");
        let info = connection_info(v);
        g.bench_with_input(BenchmarkId::new("volume_paths", n), &info, |b, info| {
            b.iter(|| {
                let paths = connector.get_volume_paths(black_box(info)).unwrap();
                assert_eq!(paths.len(), 2);
                paths
            })
        });
        let target = IscsiTarget {
            portal: v.portals[1].clone(),
            iqn: v.iqn.parse().expect("iqn"),
            lun: 1,
        };
        g.bench_with_input(BenchmarkId::new("find_session", n), &target, |b, t| {
            b.iter(|| {
                hostbrick::internals::iscsi::find_session(&host, black_box(t))
                    .unwrap()
                    .unwrap()
            })
        });
        g.bench_with_input(BenchmarkId::new("session_luns", n), &target, |b, t| {
            let sid = hostbrick::internals::iscsi::find_session(&host, t)
                .unwrap()
                .unwrap()
                .sid;
            b.iter(|| hostbrick::internals::iscsi::session_luns(&host, black_box(sid)).unwrap())
        });
        // A target no session serves yet: what the lookup before a first login reads.
        let absent = IscsiTarget {
            iqn: "iqn.2010-10.org.openstack:volume-new".parse().expect("iqn"),
            ..target.clone()
        };
        g.bench_with_input(
            BenchmarkId::new("find_session/no_session", n),
            &absent,
            |b, t| {
                b.iter(|| {
                    assert!(
                        hostbrick::internals::iscsi::find_session(&host, black_box(t))
                            .unwrap()
                            .is_none()
                    )
                })
            },
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = lookups
}
criterion_main!(benches);
