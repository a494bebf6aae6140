//! Block devices: size, readiness, holders, flushing and the first-block check.

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::platform::cmd::{Command, CommandRunner};
use crate::platform::host::Host;
use crate::platform::uevent::UdevRecord;

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
        // udev's own test of "processed" is that the record exists. One this parser refuses
        // (a property from a local rule, say) does not hold an attach back; it is reported.
        return match udev_record(host, name) {
            Ok(r) => Ok(r.is_some()),
            Err(e @ Error::UnexpectedContent { .. }) => {
                tracing::warn!(device = name, error = %e, "udev record not understood");
                Ok(true)
            }
            Err(e) => Err(e),
        };
    }
    Ok(true)
}

/// udev's database record of block device `name`, `None` until udev has processed the device
/// (or when it is gone). A record that does not parse is an error: udev writes it whole.
pub fn udev_record(host: &Host, name: &str) -> Result<Option<UdevRecord>> {
    let Some(devnum) = host.read_attr_opt(&host.sys(format!("block/{name}/dev")))? else {
        return Ok(None);
    };
    let path = host.run(format!("udev/data/b{devnum}"));
    let Some(text) = host.read_attr_opt(&path)? else {
        return Ok(None);
    };
    UdevRecord::parse(&text)
        .map(Some)
        .map_err(|reason| Error::UnexpectedContent { path, reason })
}

/// True when `link` (a udev link such as a by-path name) resolves to block device `name`.
pub fn is_link_to(host: &Host, link: &Path, name: &str) -> Result<bool> {
    Ok(host
        .canonical(link)?
        .is_some_and(|t| t.file_name().is_some_and(|n| n == name)))
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

    fn tree() -> (tempfile::TempDir, Host) {
        let d = tempfile::tempdir().unwrap();
        let host = Host::with_root(d.path());
        for p in ["sys/block/sdb", "dev/disk/by-path", "run/udev/data"] {
            std::fs::create_dir_all(d.path().join(p)).unwrap();
        }
        std::fs::write(d.path().join("sys/block/sdb/dev"), "8:16\n").unwrap();
        std::fs::write(d.path().join("dev/sdb"), "").unwrap();
        std::fs::write(d.path().join("dev/sdc"), "").unwrap();
        (d, host)
    }

    #[test]
    fn udev_record_is_read_by_device_number() {
        let (d, host) = tree();
        assert_eq!(udev_record(&host, "sdb").unwrap(), None);
        assert_eq!(udev_record(&host, "sdz").unwrap(), None);
        let db = d.path().join("run/udev/data/b8:16");
        std::fs::write(&db, "S:disk/by-path/ip-x-lun-1\nI:42\nE:ID_SERIAL=x\n").unwrap();
        let r = udev_record(&host, "sdb").unwrap().unwrap();
        assert!(r.has_link("disk/by-path/ip-x-lun-1"));
        assert_eq!(r.initialized_usec, Some(42));
        std::fs::write(&db, "garbage\n").unwrap();
        assert!(matches!(
            udev_record(&host, "sdb"),
            Err(Error::UnexpectedContent { path, .. }) if path == db
        ));
    }

    #[test]
    fn a_link_counts_only_when_it_leads_to_the_device() {
        let (d, host) = tree();
        let link = host.dev("disk/by-path/ip-x-lun-1");
        assert!(!is_link_to(&host, &link, "sdb").unwrap());
        std::os::unix::fs::symlink("../../sdc", &link).unwrap();
        assert!(!is_link_to(&host, &link, "sdb").unwrap(), "a stale link");
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("../../sdb", &link).unwrap();
        assert!(is_link_to(&host, &link, "sdb").unwrap());
        std::fs::remove_file(d.path().join("dev/sdb")).unwrap();
        assert!(!is_link_to(&host, &link, "sdb").unwrap(), "a dangling link");
    }
}
