//! Block devices: size, readiness, holders, flushing and the first-block check.

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use crate::error::{Error, Result};
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

/// True when block device `name` is read-only (its `ro` attribute is 1); a device without
/// the attribute counts as writable.
pub fn read_only(host: &Host, name: &str) -> Result<bool> {
    Ok(host
        .read_attr_opt(&host.sys(format!("block/{name}/ro")))?
        .as_deref()
        == Some("1"))
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
    udev_record_of(host, &devnum)
}

/// udev's database record of the block device numbered `devnum` (`major:minor`).
pub fn udev_record_of(host: &Host, devnum: &str) -> Result<Option<UdevRecord>> {
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

/// The devices under `name` (a dm map's paths, an MD array's members).
pub fn slaves(host: &Host, name: &str) -> Result<Vec<String>> {
    host.list_dir(&host.sys(format!("block/{name}/slaves")))
}

/// The `major:minor` numbers of every mounted device, from `/proc/self/mountinfo` text
/// (the third field of each line).
pub fn parse_mounted_devnums(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|d| {
            d.split_once(':').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
            })
        })
        .map(str::to_string)
        .collect()
}

/// The device names of active swap areas, from `/proc/swaps` text (`/dev/sdb2` → `sdb2`;
/// swap files are left out).
pub fn parse_swap_devices(swaps: &str) -> Vec<String> {
    swaps
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?;
            (f.next()? == "partition").then_some(name)
        })
        .filter_map(|p| p.rsplit('/').next())
        .map(str::to_string)
        .collect()
}

/// Why block device `name` must not be flushed and removed, if it must not: a filesystem on
/// it (or on one of its partitions) is mounted, it is active swap, or something other than
/// `allowed` holds it (LVM, dm-crypt, an MD array or a multipath map hostbrick did not make
/// for this volume). `None` when it is free to go, or already gone.
pub fn in_use(host: &Host, name: &str, allowed: &[&str]) -> Result<Option<String>> {
    if let Some(reason) = mounted_or_swap(host, name)? {
        return Ok(Some(reason));
    }
    let foreign: Vec<String> = holders(host, name)?
        .into_iter()
        .filter(|h| !allowed.contains(&h.as_str()))
        .collect();
    if !foreign.is_empty() {
        return Ok(Some(format!("held by {}", foreign.join(", "))));
    }
    Ok(None)
}

/// Why block device `name` must not be flushed and removed as far as mounts and swap tell:
/// a filesystem on it (or on one of its partitions) is mounted, or it is active swap.
pub fn mounted_or_swap(host: &Host, name: &str) -> Result<Option<String>> {
    if !exists(host, name) {
        return Ok(None);
    }
    let mut names = vec![name.to_string()];
    for entry in host.list_dir(&host.sys(format!("block/{name}")))? {
        if entry.starts_with(name) && host.sys(format!("block/{name}/{entry}/partition")).exists() {
            names.push(entry);
        }
    }
    let mounted = host
        .read_attr_opt(&host.proc("self/mountinfo"))?
        .map(|t| parse_mounted_devnums(&t))
        .unwrap_or_default();
    let swaps = host
        .read_attr_opt(&host.proc("swaps"))?
        .map(|t| parse_swap_devices(&t))
        .unwrap_or_default();
    for n in &names {
        let dev = if n == name {
            host.read_attr_opt(&host.sys(format!("block/{name}/dev")))?
        } else {
            host.read_attr_opt(&host.sys(format!("block/{name}/{n}/dev")))?
        };
        if let Some(dev) = dev {
            if mounted.contains(&dev) {
                return Ok(Some(format!("a filesystem on {n} ({dev}) is mounted")));
            }
        }
        if swaps.iter().any(|s| s == n) {
            return Ok(Some(format!("{n} is active swap")));
        }
    }
    Ok(None)
}

/// Fails with [`Error::DeviceInUse`] when [`in_use`] finds `name` in use.
pub fn ensure_unused(host: &Host, name: &str, allowed: &[&str]) -> Result<()> {
    match in_use(host, name, allowed)? {
        Some(reason) => Err(Error::DeviceInUse {
            device: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Flushes block device `dev` (a path in `host`'s /dev) before it is removed: its dirty
/// buffers are written out as `blockdev --flushbufs` would, in this process
/// ([`Host::flush_device`]). Without `force` a failed flush stops the removal (the error);
/// with it the removal goes on (unwritten data may be lost) and the failure is handed back
/// for the caller to report once the device is gone (os-brick's `force`).
pub fn flush_before_removal(
    host: &Host,
    dev: &Path,
    force: bool,
    deadline: Instant,
) -> Result<Option<Error>> {
    let shown = host.public_dev_path(dev);
    match host.flush_device(dev, deadline) {
        Ok(()) => Ok(None),
        Err(e) if force => {
            tracing::warn!(device = %shown.display(), error = %e.chain(), "flush failed; removing anyway (force)");
            Ok(Some(e))
        }
        Err(e) => Err(e),
    }
}

/// `result`, unless it succeeded and `carried` holds a failure `force` carried on past:
/// then that failure, reported once the step is done.
pub fn then_report(result: Result<()>, carried: Option<Error>) -> Result<()> {
    result?;
    carried.map_or(Ok(()), Err)
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

    #[test]
    fn mounted_devices_and_swaps_parse() {
        let mi = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                  30 22 0:26 / /run rw - tmpfs tmpfs rw\n\
                  31 22 253:3 / /data rw - xfs /dev/mapper/x rw\n\
                  garbage\n";
        assert_eq!(parse_mounted_devnums(mi), ["8:1", "0:26", "253:3"]);
        let sw = "Filename\tType\tSize\tUsed\tPriority\n\
                  /dev/sdb2                               partition\t1048572\t0\t-2\n\
                  /swapfile                               file\t1048572\t0\t-3\n";
        assert_eq!(parse_swap_devices(sw), ["sdb2"]);
        assert!(parse_swap_devices("").is_empty());
    }
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
