//! SCSI devices in sysfs: scanning one LUN, finding its block device and WWID, rescanning
//! and deleting it. Every lookup is a direct path from the H:C:T:L address; none lists
//! unrelated devices.

use std::path::PathBuf;

use crate::error::Result;
use crate::model::ids::{Hctl, Wwid};
use crate::platform::host::Host;

/// The sysfs directory of a SCSI device (`bus/scsi/devices/H:C:T:L`).
pub fn device_dir(host: &Host, hctl: Hctl) -> PathBuf {
    host.sys(format!("bus/scsi/devices/{hctl}"))
}

/// True when the SCSI device exists.
pub fn device_exists(host: &Host, hctl: Hctl) -> bool {
    device_dir(host, hctl).exists()
}

/// The block device name (`sdX`) of a SCSI device, once the kernel has made it.
pub fn block_name(host: &Host, hctl: Hctl) -> Result<Option<String>> {
    Ok(host
        .list_dir(&device_dir(host, hctl).join("block"))?
        .into_iter()
        .next())
}

/// The device's WWID in udev's form, from its `wwid` attribute (VPD page 0x83).
pub fn wwid(host: &Host, hctl: Hctl) -> Result<Option<Wwid>> {
    let path = device_dir(host, hctl).join("wwid");
    match host.read_attr_opt(&path)? {
        None => Ok(None),
        Some(raw) => {
            Wwid::from_sysfs(&raw)
                .map(Some)
                .map_err(|e| crate::Error::UnexpectedContent {
                    path,
                    reason: e.to_string(),
                })
        }
    }
}

/// Asks SCSI host `host_no` to scan one LUN: `echo "C T L" > .../scsi_host/hostH/scan`.
/// `None` for channel or target scans all of them (`-`), as when a session has no
/// target id yet.
pub fn scan_lun(
    host: &Host,
    host_no: u32,
    channel: Option<u32>,
    target: Option<u32>,
    lun: u64,
) -> Result<()> {
    let dash = |v: Option<u32>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let path = host.sys(format!("class/scsi_host/host{host_no}/scan"));
    let value = format!("{} {} {}", dash(channel), dash(target), lun);
    tracing::debug!(scan = %path.display(), %value, "scanning LUN");
    host.write_attr(&path, &value)
}

/// Re-reads the device's capacity (`rescan`).
pub fn rescan(host: &Host, hctl: Hctl) -> Result<()> {
    host.write_attr(&device_dir(host, hctl).join("rescan"), "1")
}

/// Removes the device from the kernel (`delete`). A device already gone is success.
pub fn delete(host: &Host, hctl: Hctl) -> Result<()> {
    match host.write_attr(&device_dir(host, hctl).join("delete"), "1") {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_writes_channel_target_lun() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::with_root(d.path());
        let scan = d.path().join("sys/class/scsi_host/host3/scan");
        std::fs::create_dir_all(scan.parent().unwrap()).unwrap();
        std::fs::write(&scan, "").unwrap();
        scan_lun(&host, 3, Some(0), Some(1), 7).unwrap();
        assert_eq!(std::fs::read_to_string(&scan).unwrap(), "0 1 7");
        scan_lun(&host, 3, None, None, 2).unwrap();
        assert_eq!(std::fs::read_to_string(&scan).unwrap(), "- - 2");
        assert!(scan_lun(&host, 4, None, None, 2).is_err());
    }

    #[test]
    fn missing_device_is_none_and_delete_is_idempotent() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::with_root(d.path());
        let h: Hctl = "1:0:0:1".parse().unwrap();
        assert_eq!(block_name(&host, h).unwrap(), None);
        assert_eq!(wwid(&host, h).unwrap(), None);
        delete(&host, h).unwrap();
    }
}
