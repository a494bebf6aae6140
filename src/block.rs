//! Block devices: size, readiness, holders, flushing and the first-block check.

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use crate::cmd::{Command, CommandRunner};
use crate::error::{Error, Result};
use crate::host::Host;

/// Size in bytes of block device `name` (e.g. `sdb`, `dm-0`), from its 512-byte sector count.
pub fn size_bytes(host: &Host, name: &str) -> Result<u64> {
    Ok(host.read_u64(&host.sys(format!("block/{name}/size")))? * 512)
}

/// True when block device `name` exists in sysfs.
pub fn exists(host: &Host, name: &str) -> bool {
    host.sys(format!("block/{name}")).exists()
}

/// True when `name` is usable: present in sysfs, its node in /dev, and (on a host running
/// udevd) processed by udev, so its links and permissions are in place.
pub fn is_ready(host: &Host, name: &str) -> Result<bool> {
    if !exists(host, name) || !host.dev(name).exists() {
        return Ok(false);
    }
    if host.udev_active() {
        let Some(devnum) = host.read_attr_opt(&host.sys(format!("block/{name}/dev")))? else {
            return Ok(false);
        };
        return Ok(host.run(format!("udev/data/b{devnum}")).exists());
    }
    Ok(true)
}

/// The devices holding `name` (e.g. the dm-multipath map over a path).
pub fn holders(host: &Host, name: &str) -> Result<Vec<String>> {
    host.list_dir(&host.sys(format!("block/{name}/holders")))
}

/// Writes the device's dirty buffers out: `blockdev --flushbufs`.
pub fn flush(runner: &dyn CommandRunner, dev: &Path, deadline: Instant) -> Result<()> {
    let cmd = Command::new("blockdev")
        .arg("--flushbufs")
        .arg(dev.to_string_lossy())
        .deadline(deadline);
    runner.run_ok(&cmd, &[]).map(|_| ())
}

/// Flushes before a device is removed. With `force` a failed flush is only a warning (the
/// removal goes on and unwritten data may be lost); without it the failure stops the removal.
pub fn flush_before_removal(
    runner: &dyn CommandRunner,
    dev: &Path,
    force: bool,
    deadline: Instant,
) -> Result<()> {
    match flush(runner, dev, deadline) {
        Err(e) if force => {
            tracing::warn!(device = %dev.display(), error = %e.chain(), "flush failed; removing anyway (force)");
            Ok(())
        }
        other => other,
    }
}

/// Reads the first block of `path`: the device answers I/O.
pub fn check_readable(path: &Path) -> Result<()> {
    let invalid = |source| Error::InvalidDevice {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(invalid)?;
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]).map_err(invalid)? {
            0 => break,
            n => got += n,
        }
    }
    if got == 0 {
        return Err(invalid(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the device has no data",
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_and_empty() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk");
        std::fs::write(&p, vec![1u8; 8192]).unwrap();
        check_readable(&p).unwrap();
        std::fs::write(&p, b"").unwrap();
        assert!(matches!(
            check_readable(&p),
            Err(Error::InvalidDevice { .. })
        ));
        assert!(check_readable(&d.path().join("none")).is_err());
    }
}
