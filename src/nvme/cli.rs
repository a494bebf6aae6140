//! The `nvme` (nvme-cli) wrapper: the namespace size the controller reports (`id-ns`), for
//! extend. Connect and disconnect run no `nvme`: they use the kernel's interface directly
//! ([`super::fabrics`]).

use std::time::Instant;

use crate::error::Result;
use crate::platform::cmd::{Command, CommandRunner};

/// The program.
pub const NVME: &str = "nvme";

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
}
