//! What every benchmark file shares: one criterion configuration that keeps a full
//! `cargo bench` run short (a few minutes on two cores).

use std::path::PathBuf;
use std::time::Duration;

use criterion::Criterion;
use hostbrick::testing::FakeHost;

/// 20 samples over one second after a short warm-up: enough for a stable median of
/// lookups that take microseconds to milliseconds. Command-line options still override it.
pub fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

/// An empty fake host on tmpfs (`/dev/shm`) when there is one: a tree of thousands of
/// devices is built in seconds there, and read as sysfs is, from memory.
#[allow(dead_code)] // not every benchmark file builds hosts
pub fn fake_host() -> FakeHost {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        FakeHost::new_in(shm)
    } else {
        FakeHost::new()
    }
}
