//! NVMe-oF lookups on fake hosts carrying 1, 64 and 512 fabrics controllers (see README,
//! "Benchmarks").
//!
//! Controller `nvmeC` serves its own subsystem with one namespace (its own UUID), all
//! through the same portal, laid out as native multipath shows it (head `nvmeCn1` under
//! `nvme-subsysC`, udev's by-id link to it). Every lookup asks about the controller in the
//! middle, through the functions the NVMe connector calls. `find_controller/none` is the
//! one read of every controller a connect through a new portal needs (the kernel keeps no
//! index of controllers by subsystem and portal).
#![allow(missing_docs)] // criterion_group! generates undocumented items

mod common;

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use hostbrick::nvme::{NamespaceId, NvmePortal, NvmeTransport};
use hostbrick::testing::{FakeHost, FakeRunner};
use hostbrick::{connector_for, ConnectionInfo, ConnectorOptions, HostContext, Protocol};

const SIZES: [u32; 3] = [1, 64, 512];
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:0f8fad5b-d9cb-469f-a165-70867728950e";
const HOSTID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

fn nqn(c: u32) -> String {
    format!("nqn.2014-08.org.hostbrick:volume-{c:05}")
}

fn uuid(c: u32) -> String {
    format!("11111111-2222-4333-8444-{c:012}")
}

fn host_with_controllers(n: u32) -> FakeHost {
    let fake = common::fake_host();
    for (p, v) in [("etc/nvme/hostnqn", HOSTNQN), ("etc/nvme/hostid", HOSTID)] {
        let path = fake.root().join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("etc/nvme");
        std::fs::write(path, format!("{v}\n")).expect("identity");
    }
    for c in 0..n {
        fake.add_nvme_controller(c, &nqn(c), "tcp", "10.0.0.1", 4420, HOSTNQN);
        fake.add_nvme_namespace(c, c, 1, &uuid(c), &uuid(c).replace('-', ""), 1 << 30);
    }
    fake
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("nvme");
    let portal = NvmePortal {
        address: "10.0.0.1".into(),
        port: 4420,
        transport: NvmeTransport::Tcp,
    };
    for n in SIZES {
        let fake = host_with_controllers(n);
        let host = fake.host();
        let mid = n / 2;
        let connector = connector_for(
            Protocol::NvmeOf,
            ConnectorOptions::with_context(HostContext::new(
                host.clone(),
                Arc::new(FakeRunner::new()),
            )),
        )
        .expect("connector");
        let info = ConnectionInfo::from_value(&serde_json::json!({
            "driver_volume_type": "nvmeof",
            "data": {
                "target_nqn": nqn(mid),
                "portals": [["10.0.0.1", "4420", "tcp"]],
                "vol_uuid": uuid(mid),
                "volume_id": "bench"
            }
        }))
        .expect("connection_info");
        // The namespace by UUID through the connector: controller, namespace, head.
        let want = std::path::PathBuf::from(format!("/dev/nvme{mid}n1"));
        g.bench_with_input(
            BenchmarkId::new("namespace_by_uuid", n),
            &info,
            |b, info| {
                b.iter(|| {
                    let paths = connector.get_volume_paths(black_box(info)).unwrap();
                    assert_eq!(paths, std::slice::from_ref(&want));
                    paths
                })
            },
        );
        let id = NamespaceId {
            uuid: Some(uuid(mid)),
            ..NamespaceId::default()
        };
        let ctrl = format!("nvme{mid}");
        g.bench_with_input(BenchmarkId::new("find_namespace", n), &id, |b, id| {
            b.iter(|| {
                hostbrick::internals::nvme::find_namespace(&host, &ctrl, black_box(id))
                    .unwrap()
                    .unwrap()
            })
        });
        // A subsystem no controller serves: what the lookup before a first connect reads.
        let absent = "nqn.2014-08.org.hostbrick:volume-new";
        g.bench_with_input(
            BenchmarkId::new("find_controller/none", n),
            &absent,
            |b, nqn| {
                b.iter(|| {
                    assert!(hostbrick::internals::nvme::find_controller(
                        &host,
                        black_box(nqn),
                        &portal,
                        HOSTNQN
                    )
                    .unwrap()
                    .is_none())
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
