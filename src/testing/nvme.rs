//! NVMe-oF parts of the fake tree: fabrics controllers, namespaces as native multipath
//! shows them (path entries, subsystem, head block device, by-id link), the fake
//! kernel's answer to `rescan_controller`, and MD arrays over namespaces (the RAID1 of a
//! replicated volume).

use std::fs;
use std::path::Path;

use super::host::{link, write};
use super::FakeHost;

impl FakeHost {
    /// Adds an NVMe-oF controller `nvme{ctrl}` (state `live`) of the subsystem `nqn`.
    pub fn add_nvme_controller(
        &self,
        ctrl: u32,
        nqn: &str,
        transport: &str,
        traddr: &str,
        trsvcid: u16,
        hostnqn: &str,
    ) -> String {
        let name = format!("nvme{ctrl}");
        let dir = self.p(&format!("sys/devices/virtual/nvme-fabrics/ctl/{name}"));
        write(&dir.join("subsysnqn"), &format!("{nqn}\n"));
        write(&dir.join("transport"), &format!("{transport}\n"));
        write(
            &dir.join("address"),
            &format!("traddr={traddr},trsvcid={trsvcid},src_addr={traddr}\n"),
        );
        write(&dir.join("hostnqn"), &format!("{hostnqn}\n"));
        if let Some(id) = hostnqn.rsplit(':').next().filter(|u| u.len() == 36) {
            write(&dir.join("hostid"), &format!("{id}\n"));
        }
        write(&dir.join("state"), "live\n");
        write(&dir.join("rescan_controller"), "");
        write(&dir.join("delete_controller"), "");
        link(&dir, &self.p(&format!("sys/class/nvme/{name}")));
        name
    }

    /// Adds namespace `nsid` to controller `nvme{ctrl}` the way native multipath shows it:
    /// a path entry `nvme{subsys}c{ctrl}n{nsid}` under the controller and the head block
    /// device `nvme{subsys}n{nsid}` (created once, shared by every controller) under the
    /// subsystem `nvme-subsys{subsys}`, which lists its controllers; and, as udev makes it,
    /// the head's `/dev/disk/by-id/nvme-<wwid>` link (`uuid.<uuid>`, else `eui.<nguid>`).
    /// Returns the head's name.
    pub fn add_nvme_namespace(
        &self,
        ctrl: u32,
        subsys: u32,
        nsid: u32,
        uuid: &str,
        nguid: &str,
        size: u64,
    ) -> String {
        let head = format!("nvme{subsys}n{nsid}");
        let entry = self.p(&format!(
            "sys/class/nvme/nvme{ctrl}/nvme{subsys}c{ctrl}n{nsid}"
        ));
        write(&entry.join("uuid"), &format!("{uuid}\n"));
        write(&entry.join("nguid"), &format!("{nguid}\n"));
        write(&entry.join("nsid"), &format!("{nsid}\n"));
        let sdir = self.p(&format!(
            "sys/devices/virtual/nvme-subsystem/nvme-subsys{subsys}"
        ));
        if !sdir.join("subsysnqn").exists() {
            let nqn = fs::read_to_string(self.p(&format!("sys/class/nvme/nvme{ctrl}/subsysnqn")))
                .unwrap_or_default();
            write(&sdir.join("subsysnqn"), &nqn);
            link(
                &sdir,
                &self.p(&format!("sys/class/nvme-subsystem/nvme-subsys{subsys}")),
            );
        }
        if let Ok(c) = fs::canonicalize(self.p(&format!("sys/class/nvme/nvme{ctrl}"))) {
            link(&c, &sdir.join(format!("nvme{ctrl}")));
        }
        if !self.p(&format!("sys/block/{head}")).exists() {
            let hdir = sdir.join(&head);
            self.add_block_at(
                &head,
                Some(&hdir),
                size,
                &format!("259:{}", subsys * 64 + nsid),
            );
            for (a, v) in [("uuid", uuid), ("nguid", nguid)] {
                write(&hdir.join(a), &format!("{v}\n"));
            }
            let wwid = if uuid.chars().any(|c| c.is_ascii_hexdigit() && c != '0') {
                format!("uuid.{}", uuid.to_ascii_lowercase())
            } else {
                format!("eui.{}", nguid.replace('-', "").to_ascii_lowercase())
            };
            write(&hdir.join("wwid"), &format!("{wwid}\n"));
            link(
                Path::new(&format!("../../{head}")),
                &self.p(&format!("dev/disk/by-id/nvme-{wwid}")),
            );
        }
        head
    }

    /// Removes controller `name` with its path entries; a head no controller shows any
    /// more goes too (as when the last path of a namespace is gone).
    pub fn remove_nvme_controller(&self, name: &str) {
        let dir = self.p(&format!("sys/class/nvme/{name}"));
        let heads: Vec<String> = fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| crate::nvme::head_name(&e.file_name().to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default();
        if let Ok(real) = fs::canonicalize(&dir) {
            let _ = fs::remove_dir_all(real);
        }
        let _ = fs::remove_file(&dir);
        if let Ok(rd) = fs::read_dir(self.p("sys/class/nvme-subsystem")) {
            for s in rd.flatten() {
                let _ = fs::remove_file(s.path().join(name));
            }
        }
        let remaining: Vec<String> = fs::read_dir(self.p("sys/class/nvme"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .flat_map(|c| {
                fs::read_dir(c)
                    .map(|rd| {
                        rd.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
            .filter_map(|e| crate::nvme::head_name(&e))
            .collect();
        for h in heads.iter().filter(|h| !remaining.contains(h)) {
            let block = self.p(&format!("sys/block/{h}"));
            if let Ok(wwid) = fs::read_to_string(block.join("wwid")) {
                let _ = fs::remove_file(self.p(&format!("dev/disk/by-id/nvme-{}", wwid.trim())));
            }
            if let Ok(real) = fs::canonicalize(&block) {
                let _ = fs::remove_dir_all(real);
            }
            let _ = fs::remove_file(&block);
            let _ = fs::remove_dir_all(&block);
            let _ = fs::remove_file(self.p(&format!("dev/{h}")));
        }
    }

    /// Makes the namespace head `head` show `size` after its controller's next rescan.
    pub fn resize_nvme_namespace(&self, head: &str, size: u64) {
        self.state()
            .nvme_pending_sizes
            .insert(head.to_string(), size);
    }

    /// The fake kernel's answer to `1` written to the `rescan_controller` attribute `path`:
    /// every namespace resized since shows its new size.
    pub(super) fn kernel_rescan_controller(&self, path: &Path) {
        let _ = fs::write(path, "");
        let pending: Vec<(String, u64)> = self.state().nvme_pending_sizes.drain().collect();
        for (head, size) in pending {
            self.set_block_size(&head, size);
        }
    }

    /// Adds the MD array `md` (`mdN`) over `members` (block devices already in the tree),
    /// as the kernel shows it: `sys/block/mdN` with `slaves`, each member's `holders`,
    /// `/dev/mdN`, and with `alias` the `/dev/md/<alias>` link mdadm makes. Its size is its
    /// smallest member's.
    pub fn add_md_array(&self, md: &str, alias: Option<&str>, members: &[&str]) {
        let size = members
            .iter()
            .filter_map(|m| fs::read_to_string(self.p(&format!("sys/block/{m}/size"))).ok())
            .filter_map(|s| s.trim().parse::<u64>().ok())
            .min()
            .unwrap_or(0)
            * 512;
        let n: u32 = md.trim_start_matches("md").parse().expect("an mdN name");
        self.add_block(md, size, &format!("9:{n}"));
        for m in members {
            self.add_multipath_slave(md, m);
        }
        if let Some(a) = alias {
            link(
                Path::new(&format!("../{md}")),
                &self.p(&format!("dev/md/{a}")),
            );
        }
    }

    /// Removes the MD array `md` (`mdN`): its sysfs directory, its members' holder
    /// entries, `/dev/mdN` and any `/dev/md/*` link to it.
    pub fn remove_md_array(&self, md: &str) {
        if let Ok(rd) = fs::read_dir(self.p(&format!("sys/block/{md}/slaves"))) {
            for e in rd.flatten() {
                let _ = fs::remove_dir_all(self.p(&format!(
                    "sys/block/{}/holders/{md}",
                    e.file_name().to_string_lossy()
                )));
            }
        }
        if let Ok(rd) = fs::read_dir(self.p("dev/md")) {
            for e in rd.flatten() {
                if fs::read_link(e.path()).is_ok_and(|t| t.file_name() == Some(md.as_ref())) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let _ = fs::remove_dir_all(self.p(&format!("sys/block/{md}")));
        let _ = fs::remove_file(self.p(&format!("dev/{md}")));
    }
}
