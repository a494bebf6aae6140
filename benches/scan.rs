//! Device-scan benchmarks on fake host trees (see README, "Benchmarks").
//!
//! Each lookup is measured on hosts carrying 16 and 1024 iSCSI sessions with one disk each,
//! to show which lookups stay flat as the host fills up.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use hostbrick::testing::{FakeHost, LunSpec};
use hostbrick::{by_path_name, Portal};

const SIZES: [u32; 2] = [16, 1024];

/// A host with `n` sessions (host `n+1`, target 0), each carrying LUN 1.
fn host_with_sessions(n: u32) -> FakeHost {
    let fake = FakeHost::new();
    for sid in 1..=n {
        let portal: Portal = format!("10.0.{}.{}:3260", sid / 250, sid % 250 + 1)
            .parse()
            .unwrap();
        let iqn = format!("iqn.2010-10.org.openstack:volume-{sid:05}");
        fake.add_iscsi_session(sid, sid + 1, 0, &iqn, &portal);
        let spec = LunSpec::new(0, 0, 1, &format!("naa.6001405{sid:025x}"), 1 << 30)
            .by_path(by_path_name(&portal, &iqn, 1));
        fake.add_scsi_disk(sid + 1, &spec);
    }
    fake
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup");
    for n in SIZES {
        let fake = host_with_sessions(n);
        let host = fake.host();
        // The middle session: nothing about it is first or last in any listing.
        let sid = n / 2 + 1;
        g.bench_with_input(BenchmarkId::new("session_luns", n), &sid, |b, sid| {
            b.iter(|| hostbrick::session_luns(&host, black_box(*sid)).unwrap())
        });
        // Finding the session of a target lists the sessions: this one grows with them.
        let target = hostbrick::IscsiTarget {
            portal: format!("10.0.{}.{}:3260", sid / 250, sid % 250 + 1)
                .parse()
                .unwrap(),
            iqn: format!("iqn.2010-10.org.openstack:volume-{sid:05}")
                .parse()
                .unwrap(),
            lun: 1,
        };
        g.bench_with_input(BenchmarkId::new("find_session", n), &target, |b, t| {
            b.iter(|| {
                hostbrick::find_session(&host, black_box(t))
                    .unwrap()
                    .unwrap()
            })
        });
    }
    g.finish();
}

fn parse_sessions(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_sessions");
    for n in [1usize, 100, 1000] {
        let out: String = (1..=n)
            .map(|i| {
                format!(
                    "tcp: [{i}] 127.0.0.1:3260,1 iqn.2003-01.org.linux-iscsi.vm:t{i} (non-flash)\n"
                )
            })
            .collect();
        g.bench_with_input(BenchmarkId::from_parameter(n), &out, |b, out| {
            b.iter(|| hostbrick::parse_sessions(black_box(out)))
        });
    }
    g.finish();
}

criterion_group!(benches, lookups, parse_sessions);
criterion_main!(benches);
