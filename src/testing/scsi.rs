//! SCSI and iSCSI parts of the fake tree: SCSI hosts, iSCSI sessions, the LUNs a host
//! offers ([`LunSpec`]) and the disks a scan makes of them, and the fake kernel's answers to
//! `scan`, `delete` and `rescan`.

use std::fs;
use std::path::Path;

use super::host::{link, write};
use super::FakeHost;
use crate::{Hctl, Portal};

/// A LUN a fake SCSI host offers: it appears when scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunSpec {
    /// Channel.
    pub channel: u32,
    /// Target id.
    pub target: u32,
    /// LUN.
    pub lun: u64,
    /// The `wwid` attribute as sysfs shows it, e.g. `naa.6001405...`.
    pub wwid: String,
    /// Size in bytes.
    pub size: u64,
    /// A `/dev/disk/by-path` link name to create with the device, if any.
    pub by_path: Option<String>,
}

impl LunSpec {
    /// A LUN without a by-path link.
    pub fn new(channel: u32, target: u32, lun: u64, wwid: &str, size: u64) -> Self {
        LunSpec {
            channel,
            target,
            lun,
            wwid: wwid.to_string(),
            size,
            by_path: None,
        }
    }

    /// With a by-path link.
    pub fn by_path(mut self, name: impl Into<String>) -> Self {
        self.by_path = Some(name.into());
        self
    }
}

fn disk_name(n: u32) -> String {
    // sda..sdz, sdaa..sdzz, ... as the kernel names them.
    let mut n = n as usize + 1;
    let mut s = Vec::new();
    while n > 0 {
        n -= 1;
        s.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    s.reverse();
    format!("sd{}", String::from_utf8_lossy(&s))
}

impl FakeHost {
    /// Writes `/etc/iscsi/initiatorname.iscsi`.
    pub fn set_initiator_name(&self, iqn: &str) {
        write(
            &self.p("etc/iscsi/initiatorname.iscsi"),
            &format!("## generated\nInitiatorName={iqn}\n"),
        );
    }

    /// Adds SCSI host `hostH` with its `scan` attribute.
    pub fn add_scsi_host(&self, host_no: u32) {
        let dev = self.p(&format!("sys/devices/platform/host{host_no}"));
        write(&dev.join(format!("scsi_host/host{host_no}/scan")), "");
        link(
            &dev.join(format!("scsi_host/host{host_no}")),
            &self.p(&format!("sys/class/scsi_host/host{host_no}")),
        );
    }

    /// Removes a SCSI host and everything under it.
    pub fn remove_scsi_host(&self, host_no: u32) {
        let hctls: Vec<Hctl> = self
            .state()
            .devices
            .keys()
            .filter(|h| h.host == host_no)
            .copied()
            .collect();
        for h in hctls {
            self.remove_scsi_device(h);
        }
        let _ = fs::remove_file(self.p(&format!("sys/class/scsi_host/host{host_no}")));
        let _ = fs::remove_dir_all(self.p(&format!("sys/devices/platform/host{host_no}")));
        self.state().offered.remove(&host_no);
    }

    /// Adds an iSCSI session `sid` on SCSI host `host_no` (created too) logged in to
    /// `iqn` at `portal`, with the kernel's `target_id` for its first scan.
    pub fn add_iscsi_session(
        &self,
        sid: u32,
        host_no: u32,
        target_id: u32,
        iqn: &str,
        portal: &Portal,
    ) {
        self.add_scsi_host(host_no);
        let sdev = self.p(&format!("sys/devices/platform/host{host_no}/session{sid}"));
        fs::create_dir_all(sdev.join(format!("connection{sid}:0"))).expect("fake tree: create dir");
        // As the kernel's login completes: the connection first, then the session entry,
        // whole at once, so a reader (an audit) never sees a session without its portal.
        let conn = self.p(&format!("sys/class/iscsi_connection/connection{sid}:0"));
        write(
            &conn.join("persistent_address"),
            &format!("{}\n", portal.host()),
        );
        write(
            &conn.join("persistent_port"),
            &format!("{}\n", portal.port()),
        );
        write(&conn.join("address"), &format!("{}\n", portal.host()));
        write(&conn.join("port"), &format!("{}\n", portal.port()));
        let staged = self.p(&format!("sys/class/.iscsi_session.new/session{sid}"));
        write(&staged.join("targetname"), &format!("{iqn}\n"));
        write(&staged.join("target_id"), &format!("{target_id}\n"));
        write(&staged.join("tpgt"), "1\n");
        write(&staged.join("state"), "LOGGED_IN\n");
        link(&sdev, &staged.join("device"));
        let class = self.p(&format!("sys/class/iscsi_session/session{sid}"));
        fs::create_dir_all(self.p("sys/class/iscsi_session")).expect("fake tree: create dir");
        fs::rename(&staged, &class).expect("fake tree: rename");
    }

    /// Sets the `ifacename` session `sid` shows (the kernel's copy of the iface it was
    /// logged in through).
    pub fn set_iscsi_session_iface(&self, sid: u32, iface: &str) {
        write(
            &self.p(&format!("sys/class/iscsi_session/session{sid}/ifacename")),
            &format!("{iface}\n"),
        );
    }

    /// Sets the `state` session `sid` shows (`LOGGED_IN`, `FAILED` in recovery, `FREE`
    /// before its login completes). A scan skips a session not `LOGGED_IN`, as the kernel's
    /// does.
    pub fn set_iscsi_session_state(&self, sid: u32, state: &str) {
        write(
            &self.p(&format!("sys/class/iscsi_session/session{sid}/state")),
            &format!("{state}\n"),
        );
    }

    /// Removes session `sid` and its SCSI host, with every device on it (a logout).
    pub fn remove_iscsi_session(&self, sid: u32) {
        let class = self.p(&format!("sys/class/iscsi_session/session{sid}"));
        let host_no = fs::canonicalize(class.join("device"))
            .ok()
            .and_then(|d| {
                d.parent()
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .and_then(|n| n.strip_prefix("host").and_then(|n| n.parse::<u32>().ok()));
        let _ = fs::remove_dir_all(&class);
        let _ =
            fs::remove_dir_all(self.p(&format!("sys/class/iscsi_connection/connection{sid}:0")));
        if let Some(h) = host_no {
            self.remove_scsi_host(h);
        }
    }

    /// Makes `spec` appear when SCSI host `host_no` scans it.
    pub fn offer_lun(&self, host_no: u32, spec: LunSpec) {
        self.state().offered.entry(host_no).or_default().push(spec);
    }

    /// Changes an offered LUN's size (seen after a rescan of its device).
    pub fn resize_lun(&self, wwid: &str, size: u64) {
        for specs in self.state().offered.values_mut() {
            for s in specs.iter_mut().filter(|s| s.wwid == wwid) {
                s.size = size;
            }
        }
    }

    /// The device name the kernel gave `hctl`, if present.
    pub fn device_at(&self, hctl: Hctl) -> Option<String> {
        self.state().devices.get(&hctl).cloned()
    }

    /// Every SCSI disk present, by address.
    pub fn devices(&self) -> Vec<(Hctl, String)> {
        let mut v: Vec<(Hctl, String)> = self
            .state()
            .devices
            .iter()
            .map(|(h, n)| (*h, n.clone()))
            .collect();
        v.sort();
        v
    }

    /// Adds a SCSI disk now (as a scan would) and returns its name.
    pub fn add_scsi_disk(&self, host_no: u32, spec: &LunSpec) -> String {
        let hctl = Hctl {
            host: host_no,
            channel: spec.channel,
            target: spec.target,
            lun: spec.lun,
        };
        let name = {
            let mut st = self.state();
            if let Some(n) = st.devices.get(&hctl) {
                return n.clone();
            }
            let n = disk_name(st.next_disk);
            st.next_disk += 1;
            st.devices.insert(hctl, n.clone());
            n
        };
        // Under the session's target directory when the host carries a session.
        let hostdir = self.p(&format!("sys/devices/platform/host{host_no}"));
        let parent = fs::read_dir(&hostdir)
            .ok()
            .and_then(|rd| {
                rd.flatten().map(|e| e.path()).find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("session"))
                })
            })
            .unwrap_or(hostdir);
        let tdir = parent.join(format!(
            "target{}:{}:{}",
            host_no, spec.channel, spec.target
        ));
        let ddir = tdir.join(hctl.to_string());
        write(&ddir.join("wwid"), &format!("{}\n", spec.wwid));
        write(&ddir.join("state"), "running\n");
        for a in ["delete", "rescan"] {
            write(&ddir.join(a), "");
        }
        link(&ddir, &self.p(&format!("sys/bus/scsi/devices/{hctl}")));
        let minor = 16 * self.state().next_disk;
        // As the kernel shows it: `sys/block/sdX` links into the SCSI device's directory.
        let bdir = ddir.join(format!("block/{name}"));
        self.add_block_at(&name, Some(&bdir), spec.size, &format!("8:{minor}"));
        link(&ddir, &self.p(&format!("sys/block/{name}/device")));
        if let Some(bp) = &spec.by_path {
            link(
                Path::new(&format!("../../{name}")),
                &self.p(&format!("dev/disk/by-path/{bp}")),
            );
        }
        name
    }
    /// Removes a SCSI disk (as `delete` or a logout would), with its links.
    pub fn remove_scsi_device(&self, hctl: Hctl) {
        let Some(name) = self.state().devices.remove(&hctl) else {
            return;
        };
        if let Ok(d) = fs::canonicalize(self.p(&format!("sys/bus/scsi/devices/{hctl}"))) {
            let _ = fs::remove_dir_all(d);
        }
        let _ = fs::remove_file(self.p(&format!("sys/bus/scsi/devices/{hctl}")));
        let _ = fs::remove_dir_all(self.p(&format!("sys/block/{name}")));
        let _ = fs::remove_file(self.p(&format!("dev/{name}")));
        if let Ok(rd) = fs::read_dir(self.p("dev/disk/by-path")) {
            for e in rd.flatten() {
                if fs::read_link(e.path())
                    .is_ok_and(|t| t.file_name().is_some_and(|n| n == name.as_str()))
                {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }

    /// The fake kernel's answer to a write of `value` to the `scan` attribute `path` of
    /// SCSI host `dir_name` (`hostH`): adds every offered LUN the value's
    /// `channel target lun` names (`-` is any).
    pub(super) fn kernel_scan(&self, path: &Path, dir_name: &str, value: &str) {
        let Some(h) = dir_name
            .strip_prefix("host")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            return;
        };
        let _ = fs::write(path, "");
        let parts: Vec<&str> = value.split_whitespace().collect();
        let want = |i: usize, v: u64| {
            parts
                .get(i)
                .is_some_and(|p| *p == "-" || p.parse::<u64>().ok() == Some(v))
        };
        // As `iscsi_user_scan_session()`: a session not logged in is not scanned.
        let hostdir = self.p(&format!("sys/devices/platform/host{h}"));
        let skipped = fs::read_dir(&hostdir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("session")
                    && fs::read_to_string(self.p(&format!("sys/class/iscsi_session/{name}/state")))
                        .is_ok_and(|st| st.trim() != "LOGGED_IN")
            });
        if skipped {
            return;
        }
        let specs: Vec<LunSpec> = self.state().offered.get(&h).cloned().unwrap_or_default();
        for s in specs
            .iter()
            .filter(|s| want(0, s.channel.into()) && want(1, s.target.into()) && want(2, s.lun))
        {
            self.add_scsi_disk(h, s);
        }
    }

    /// The fake kernel's answer to `1` written to the `delete` or `rescan` attribute (`attr`)
    /// `path` of SCSI device `dir_name` (`H:C:T:L`): removes the device, or reads the LUN's
    /// size anew.
    pub(super) fn kernel_scsi_device(&self, path: &Path, attr: &str, dir_name: &str) {
        let Ok(hctl) = dir_name.parse::<Hctl>() else {
            return;
        };
        let _ = fs::write(path, "");
        if attr == "delete" {
            self.remove_scsi_device(hctl);
            return;
        }
        let Some(name) = self.device_at(hctl) else {
            return;
        };
        let wwid = fs::read_to_string(path.with_file_name("wwid")).unwrap_or_default();
        let size = self
            .state()
            .offered
            .values()
            .flatten()
            .find(|s| s.wwid == wwid.trim())
            .map(|s| s.size);
        if let Some(size) = size {
            self.set_block_size(&name, size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_names_like_the_kernel() {
        assert_eq!(disk_name(0), "sda");
        assert_eq!(disk_name(25), "sdz");
        assert_eq!(disk_name(26), "sdaa");
        assert_eq!(disk_name(27), "sdab");
    }

    #[test]
    fn kernel_answers_scan_delete_rescan() {
        let fake = FakeHost::new();
        let host = fake.host();
        fake.add_iscsi_session(
            1,
            2,
            0,
            "iqn.2003-01.x:t",
            &"127.0.0.1:3260".parse().unwrap(),
        );
        fake.offer_lun(
            2,
            LunSpec::new(0, 0, 1, "naa.6001405aa", 1 << 20).by_path("ip-x-lun-1"),
        );
        crate::devices::scsi::scan_lun(&host, 2, Some(0), Some(0), 1).unwrap();
        let h: Hctl = "2:0:0:1".parse().unwrap();
        assert!(fake.device_at(h).is_some());
        let name = crate::devices::scsi::block_name(&host, h).unwrap().unwrap();
        assert_eq!(name, "sda");
        assert_eq!(
            crate::devices::scsi::wwid(&host, h)
                .unwrap()
                .unwrap()
                .as_str(),
            "36001405aa"
        );
        assert!(fake.root().join("dev/disk/by-path/ip-x-lun-1").exists());
        fake.resize_lun("naa.6001405aa", 2 << 20);
        crate::devices::scsi::rescan(&host, h).unwrap();
        assert_eq!(
            crate::devices::block::size_bytes(&host, "sda").unwrap(),
            2 << 20
        );
        crate::devices::scsi::delete(&host, h).unwrap();
        assert!(fake.device_at(h).is_none());
        assert!(!crate::devices::block::exists(&host, "sda"));
        assert!(!fake.root().join("dev/disk/by-path/ip-x-lun-1").exists());
    }
}
