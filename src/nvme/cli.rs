//! The `nvme` (nvme-cli) wrapper: fabrics connect and disconnect.

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::model::nvme::{Nqn, NvmePortal};
use crate::platform::cmd::{Command, CommandRunner};

/// The program.
pub const NVME: &str = "nvme";

/// `EALREADY`: the exit status of nvme-cli versions that pass the kernel's answer through
/// (nvme-cli 2.3 says "already connected" and exits 1).
const EXIT_ALREADY: i32 = 114;

/// How a connect ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// A new controller was made.
    Connected,
    /// One already existed for this subsystem, portal and host ("already connected").
    AlreadyConnected,
}

/// Arguments of a fabrics connect.
#[derive(Debug, Clone)]
pub struct ConnectArgs<'a> {
    /// The subsystem.
    pub nqn: &'a Nqn,
    /// The portal.
    pub portal: &'a NvmePortal,
    /// The host NQN.
    pub hostnqn: &'a str,
    /// The host id.
    pub hostid: &'a str,
    /// How long the kernel keeps retrying a lost controller before giving it up.
    pub ctrl_loss_tmo: Duration,
}

/// True when nvme-cli's answer means the controller is already there.
pub fn is_already_connected(code: Option<i32>, stderr: &str) -> bool {
    code == Some(EXIT_ALREADY)
        || stderr.contains("already connected")
        || stderr.contains("Operation already in progress")
}

/// `nvme connect -t T -a ADDR -s PORT -n NQN -q HOSTNQN -I HOSTID -l CTRL_LOSS_TMO`.
///
/// No positional argument, so no `--`: every value follows its option, and getopt takes
/// the next word as the value whatever it begins with. What libnvme splices into the
/// fabrics option string (`nqn=...,hostnqn=...`) is kept clean by [`Nqn`]'s validation
/// (no `,`, `=` or whitespace).
pub fn connect(
    runner: &dyn CommandRunner,
    a: &ConnectArgs<'_>,
    deadline: Instant,
) -> Result<ConnectOutcome> {
    let cmd = Command::new(NVME)
        .args([
            "connect",
            "-t",
            a.portal.transport.as_str(),
            "-a",
            a.portal.address.as_str(),
            "-s",
        ])
        .arg(a.portal.port.to_string())
        .args(["-n", a.nqn.as_str(), "-q", a.hostnqn, "-I", a.hostid, "-l"])
        .arg(a.ctrl_loss_tmo.as_secs().to_string())
        .deadline(deadline);
    let out = runner.run(&cmd)?;
    if out.status.success() {
        return Ok(ConnectOutcome::Connected);
    }
    if is_already_connected(out.status.code(), &out.stderr) {
        return Ok(ConnectOutcome::AlreadyConnected);
    }
    Err(cmd.failure(&out))
}

/// `nvme disconnect -d nvmeN`; a controller already gone is fine.
pub fn disconnect(runner: &dyn CommandRunner, controller: &str, deadline: Instant) -> Result<()> {
    let cmd = Command::new(NVME)
        .args(["disconnect", "-d", controller])
        .deadline(deadline);
    let out = runner.run(&cmd)?;
    // nvme-cli 2.3 says "Did not find device nvmeN" and exits 0 for a controller that is
    // gone; older ones fail with ENODEV.
    let gone = out.stderr.contains("Did not find device")
        || out.stderr.contains("No such device")
        || out.stderr.contains("No such file");
    if out.status.success() || gone {
        return Ok(());
    }
    Err(cmd.failure(&out))
}

/// The namespace size in bytes from `nvme id-ns -o json` output: `nsze` blocks of the
/// formatted LBA size (`lbafs[flbas & 0xf].ds`, a power of two).
pub fn parse_id_ns_size(json: &str) -> std::result::Result<u64, String> {
    let v: serde_json::Value = serde_json::from_str(json.trim()).map_err(|e| e.to_string())?;
    let nsze = v
        .get("nsze")
        .and_then(serde_json::Value::as_u64)
        .ok_or("no nsze")?;
    let flbas = v
        .get("flbas")
        .and_then(serde_json::Value::as_u64)
        .ok_or("no flbas")?;
    let ds = v
        .get("lbafs")
        .and_then(|l| l.get((flbas & 0xf) as usize))
        .and_then(|f| f.get("ds"))
        .and_then(serde_json::Value::as_u64)
        .ok_or("no lbafs[flbas].ds")?;
    if !(9..=16).contains(&ds) {
        return Err(format!("LBA data size 2^{ds} is not plausible"));
    }
    nsze.checked_shl(ds as u32)
        .filter(|b| b >> ds == nsze)
        .ok_or_else(|| "size overflows".to_string())
}

/// The namespace size the controller reports (`nvme id-ns DEV -o json`).
pub fn namespace_size(
    runner: &dyn CommandRunner,
    dev: &std::path::Path,
    deadline: Instant,
) -> Result<u64> {
    let cmd = Command::new(NVME)
        .arg("id-ns")
        .arg(dev.to_string_lossy())
        .args(["-o", "json"])
        .deadline(deadline);
    let out = runner.run_ok(&cmd, &[])?;
    parse_id_ns_size(&out.stdout).map_err(|reason| crate::Error::Parse {
        program: NVME.into(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_ns_sizes() {
        let j = r#"{"nsze":16384,"ncap":16384,"flbas":0,"lbafs":[{"ms":0,"ds":12,"rp":0}]}"#;
        assert_eq!(parse_id_ns_size(j), Ok(64 << 20));
        let j = r#"{"nsze":8,"flbas":1,"lbafs":[{"ds":12},{"ds":9}]}"#;
        assert_eq!(parse_id_ns_size(j), Ok(4096));
        assert!(parse_id_ns_size(r#"{"nsze":1,"flbas":3,"lbafs":[{"ds":9}]}"#).is_err());
        assert!(parse_id_ns_size(r#"{"nsze":1,"flbas":0,"lbafs":[{"ds":70}]}"#).is_err());
        assert!(parse_id_ns_size("nope").is_err());
    }

    #[test]
    fn already_connected_forms() {
        assert!(is_already_connected(Some(114), ""));
        assert!(is_already_connected(
            Some(1),
            "Failed to write to /dev/nvme-fabrics: Operation already in progress\n"
        ));
        assert!(is_already_connected(Some(1), "already connected\n"));
        assert!(!is_already_connected(
            Some(1),
            "Failed to write to /dev/nvme-fabrics: Connection refused\n"
        ));
    }
}
