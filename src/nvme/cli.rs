//! The `nvme` (nvme-cli) wrapper: the namespace size the controller reports (`id-ns`), for
//! extend; the namespaces a subsystem lists (`list-ns`), asked by a connect only when the
//! volume's namespace has not shown (to tell a namespace the target lacks from one the
//! kernel is still scanning). Connect and disconnect otherwise run no `nvme`: they use the
//! kernel's interface directly ([`super::fabrics`]).

use std::time::Instant;

use crate::error::Result;
use crate::platform::cmd::{Command, CommandRunner};

/// The program.
pub const NVME: &str = "nvme";

/// How many nsids one Identify Active Namespace ID list (CNS 02h) returns: a 4 KiB page of
/// 32-bit ids. A list this long may go on past what `nvme list-ns` printed.
pub const NS_LIST_PAGE: usize = 1024;

/// The nsids in `nvme list-ns` output: one `[   i]:0x<nsid>` line per active namespace
/// (nvme-cli 1.x and 2.x print it so), in the controller's order.
pub fn parse_list_ns(text: &str) -> std::result::Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let nsid = line
            .strip_prefix('[')
            .and_then(|l| l.split_once("]:"))
            .filter(|(i, _)| i.trim().parse::<u32>().is_ok())
            .and_then(|(_, v)| v.strip_prefix("0x"))
            .and_then(|v| u32::from_str_radix(v, 16).ok())
            .filter(|n| *n != 0)
            .ok_or_else(|| format!("unexpected line {line:?}"))?;
        out.push(nsid);
    }
    Ok(out)
}

/// The nsids the subsystem lists as active to the controller `dev` (`/dev/nvmeN`):
/// `nvme list-ns DEV`, the Identify Active Namespace ID list the kernel's own scan reads
/// (`nvme_scan_ns_list()`).
pub fn active_namespaces(
    runner: &dyn CommandRunner,
    dev: &std::path::Path,
    deadline: Instant,
) -> Result<Vec<u32>> {
    let cmd = Command::new(NVME)
        .arg("list-ns")
        .arg(dev.to_string_lossy())
        .deadline(deadline);
    let out = runner.run_ok(&cmd, &[])?;
    parse_list_ns(&out.stdout).map_err(|reason| crate::Error::Parse {
        program: NVME.into(),
        reason,
    })
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
    fn list_ns_output() {
        assert_eq!(parse_list_ns("[   0]:0x1\n[   1]:0x2\n"), Ok(vec![1, 2]));
        assert_eq!(parse_list_ns("[   0]:0x1f\n"), Ok(vec![31]));
        assert_eq!(parse_list_ns(""), Ok(vec![]));
        assert!(parse_list_ns("[   0]:0x0\n").is_err());
        assert!(parse_list_ns("NVMe status: INVALID_NS\n").is_err());
        assert!(parse_list_ns("[x]:0x1\n").is_err());
    }

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
}
