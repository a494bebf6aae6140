//! Device-scan benchmarks on fake host trees (see README, "Benchmarks").
#![allow(missing_docs)] // criterion_group! generates undocumented items
use criterion::{black_box, criterion_group, criterion_main, Criterion};

fn parse_sessions(c: &mut Criterion) {
    let out: String = (1..=1000)
        .map(|i| {
            format!("tcp: [{i}] 127.0.0.1:3260,1 iqn.2003-01.org.linux-iscsi.vm:t{i} (non-flash)\n")
        })
        .collect();
    c.bench_function("parse_sessions/1000", |b| {
        b.iter(|| hostbrick::parse_sessions(black_box(&out)))
    });
}

criterion_group!(benches, parse_sessions);
criterion_main!(benches);
