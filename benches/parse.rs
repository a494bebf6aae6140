//! Parsers of tool output at 1 to 1000 entries (see README, "Benchmarks"): `iscsiadm -m
//! session` and `rbd showmapped --format json`, in the shapes the tools print.
#![allow(missing_docs)] // criterion_group! generates undocumented items

mod common;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};

const SIZES: [usize; 4] = [1, 10, 100, 1000];

fn iscsiadm_sessions(n: usize) -> String {
    (1..=n)
        .map(|i| {
            format!(
                "tcp: [{i}] 10.0.{}.{}:3260,1 iqn.2010-10.org.openstack:volume-{i:05} (non-flash)\n",
                i / 250,
                i % 250 + 1
            )
        })
        .collect()
}

fn rbd_showmapped(n: usize) -> String {
    let maps: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"id":"{i}","pool":"volumes","namespace":"","name":"volume-{i:05}","snap":"-","device":"/dev/rbd{i}"}}"#
            )
        })
        .collect();
    format!("[{}]\n", maps.join(","))
}

fn parsers(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for n in SIZES {
        let out = iscsiadm_sessions(n);
        g.bench_with_input(BenchmarkId::new("iscsiadm_sessions", n), &out, |b, out| {
            b.iter(|| {
                let s = hostbrick::internals::iscsi::parse_sessions(black_box(out));
                assert_eq!(s.len(), n);
                s
            })
        });
        let out = rbd_showmapped(n);
        g.bench_with_input(BenchmarkId::new("rbd_showmapped", n), &out, |b, out| {
            b.iter(|| {
                let m = hostbrick::internals::rbd::parse_mappings(black_box(out)).unwrap();
                assert_eq!(m.len(), n);
                m
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = parsers
}
criterion_main!(benches);
