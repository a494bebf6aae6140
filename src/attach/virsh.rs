//! A libvirt domain driven through `virsh`, by the command runner.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::attach::{Domain, DomainFlags};
use crate::connector::HostContext;
use crate::error::{Error, Result};
use crate::platform::cmd::{Command, CommandOutput};

/// How long `virsh` itself may take for one call.
const VIRSH_TIMEOUT: Duration = Duration::from_secs(60);

/// A `virsh` command with its time limit, on connection `uri` (libvirt's default when
/// `None`): the start of every virsh call, of the domain and of its secrets.
pub(super) fn virsh_command(uri: Option<&str>) -> Command {
    let cmd = Command::new("virsh").timeout(VIRSH_TIMEOUT);
    match uri {
        Some(uri) => cmd.arg("-c").arg(uri),
        None => cmd,
    }
}
/// How often a live detach checks whether the guest let the disk go.
const DETACH_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// One disk of `virsh domblklist --details`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainDisk {
    /// `file`, `block`, `network`.
    pub kind: String,
    /// `disk`, `cdrom`, ...
    pub device: String,
    /// `vda`, `sdb`, ...
    pub target: String,
    /// The source, `None` for `-` (an empty drive).
    pub source: Option<String>,
}

/// Parses `virsh domblklist --details` output.
pub fn parse_domblklist(text: &str) -> Result<Vec<DomainDisk>> {
    let bad = |line: &str| Error::Parse {
        program: "virsh domblklist".into(),
        reason: format!("unexpected line {line:?}"),
    };
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match lines.next() {
        Some(h)
            if h.split_whitespace()
                .eq(["Type", "Device", "Target", "Source"]) => {}
        Some(h) => return Err(bad(h)),
        None => return Ok(Vec::new()),
    }
    let mut disks = Vec::new();
    for line in lines {
        if line.chars().all(|c| c == '-') {
            continue;
        }
        let mut rest = line;
        let mut word = || {
            let w = rest.trim_start();
            let end = w.find(char::is_whitespace).unwrap_or(w.len());
            rest = &w[end..];
            (end > 0).then(|| w[..end].to_string())
        };
        let (Some(kind), Some(device), Some(target)) = (word(), word(), word()) else {
            return Err(bad(line));
        };
        let source = match rest.trim() {
            "" | "-" => None,
            s => Some(s.to_string()),
        };
        disks.push(DomainDisk {
            kind,
            device,
            target,
            source,
        });
    }
    Ok(disks)
}

/// A libvirt domain reached with `virsh` (through the context's command runner).
#[derive(Debug, Clone)]
pub struct VirshDomain {
    name: String,
    uri: Option<String>,
    ctx: HostContext,
    detach_timeout: Duration,
}

impl VirshDomain {
    /// The domain `name` on libvirt's default connection.
    pub fn new(name: impl Into<String>, ctx: HostContext) -> Self {
        VirshDomain {
            name: name.into(),
            uri: None,
            ctx,
            detach_timeout: Duration::from_secs(20),
        }
    }

    /// Connects to this libvirt URI (`qemu:///system`).
    pub fn with_uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = Some(uri.into());
        self
    }

    /// How long a live detach waits for the guest to release the disk (default 20 s).
    pub fn with_detach_timeout(mut self, t: Duration) -> Self {
        self.detach_timeout = t;
        self
    }

    fn virsh(&self) -> Command {
        virsh_command(self.uri.as_deref())
    }

    fn run(&self, cmd: Command) -> Result<CommandOutput> {
        self.ctx.runner.run_ok(&cmd, &[])
    }

    /// Runs `virsh <verb> <domain> <xml file> <flags>`.
    fn device_change(&self, verb: &str, xml: &str, flags: DomainFlags) -> Result<()> {
        let mut file = tempfile::Builder::new()
            .prefix("hostbrick-disk-")
            .suffix(".xml")
            .tempfile()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?;
        file.write_all(xml.as_bytes())
            .and_then(|_| file.flush())
            .map_err(|e| Error::io(file.path(), e))?;
        let mut cmd = self
            .virsh()
            .arg(verb)
            .arg(&self.name)
            .arg(file.path().to_string_lossy());
        if flags.live {
            cmd = cmd.arg("--live");
        }
        if flags.config {
            cmd = cmd.arg("--config");
        }
        if !flags.live && !flags.config {
            cmd = cmd.arg("--current");
        }
        self.run(cmd).map(|_| ())
    }

    /// The domain's disks.
    pub fn disks(&self) -> Result<Vec<DomainDisk>> {
        let out = self.run(self.virsh().args(["domblklist", &self.name, "--details"]))?;
        parse_domblklist(&out.stdout)
    }
}

impl Domain for VirshDomain {
    fn name(&self) -> &str {
        &self.name
    }

    fn attach_device(&self, xml: &str, flags: DomainFlags) -> Result<()> {
        self.device_change("attach-device", xml, flags)
    }

    fn detach_device(&self, xml: &str, flags: DomainFlags) -> Result<()> {
        let target = crate::libvirt::DiskConfig::from_xml(xml)?.target.dev;
        let deadline = Instant::now() + self.detach_timeout;
        self.device_change("detach-device", xml, flags)?;
        if !flags.live {
            return Ok(());
        }
        // libvirt returns once the unplug is requested; the disk is gone when the guest
        // acknowledges it.
        loop {
            if !self.disk_targets()?.contains(&target) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    waited: self.detach_timeout,
                    what: format!("guest {} to release disk {target}", self.name),
                });
            }
            std::thread::sleep(DETACH_POLL_INTERVAL);
        }
    }

    fn disk_targets(&self) -> Result<Vec<String>> {
        Ok(self.disks()?.into_iter().map(|d| d.target).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_domblklist_details() {
        let out = " Type      Device   Target   Source\n\
                   -----------------------------------------------------------\n \
                   file      disk     vda      /var/lib/libvirt/images/guest 1.qcow2\n \
                   block     disk     vdb      /dev/disk/by-path/ip-127.0.0.1:3260-iscsi-iqn.x-lun-1\n \
                   network   disk     vdc      volumes/volume-1\n \
                   file      cdrom    sda      -\n";
        let disks = parse_domblklist(out).unwrap();
        assert_eq!(disks.len(), 4);
        assert_eq!(
            disks[0].source.as_deref(),
            Some("/var/lib/libvirt/images/guest 1.qcow2")
        );
        assert_eq!(disks[1].kind, "block");
        assert_eq!(disks[2].target, "vdc");
        assert_eq!(disks[3].device, "cdrom");
        assert_eq!(disks[3].source, None);
        assert_eq!(parse_domblklist("").unwrap(), Vec::new());
        assert!(parse_domblklist("Target Source\n").is_err());
        assert!(parse_domblklist(" Type Device Target Source\n----\n file\n").is_err());
    }
}
