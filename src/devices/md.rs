//! MD RAID1 over the replicas of a replicated volume (`mdadm`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::Result;
use crate::platform::cmd::{Command, CommandRunner};
use crate::platform::host::Host;

/// `/dev/md/<alias>`, as callers should see it.
pub fn array_path(alias: &str) -> PathBuf {
    Path::new("/dev/md").join(alias)
}

/// True when `dev` carries an MD superblock (`mdadm --examine` succeeds).
pub fn has_superblock(runner: &dyn CommandRunner, dev: &Path, deadline: Instant) -> Result<bool> {
    let cmd = Command::new("mdadm")
        .arg("--examine")
        .arg(dev.to_string_lossy())
        .deadline(deadline);
    Ok(runner.run(&cmd)?.status.success())
}

/// Assembles the array from members that already carry it, or creates it over fresh ones
/// (`--assume-clean`: the replicas hold the same data).
///
/// No `--` before the device names: mdadm collects devices inside its getopt loop and
/// would not take those after a `--`. None can be read as an option: the array is
/// `/dev/md/<alias>` with an alias checked at parse time (`check_md_alias`), and
/// the members are `/dev` paths.
pub fn assemble_or_create(
    runner: &dyn CommandRunner,
    alias: &str,
    members: &[PathBuf],
    deadline: Instant,
) -> Result<PathBuf> {
    let array = array_path(alias);
    let mut existing = false;
    for m in members {
        if has_superblock(runner, m, deadline)? {
            existing = true;
            break;
        }
    }
    let cmd = if existing {
        Command::new("mdadm")
            .args(["--assemble", "--run"])
            .arg(array.to_string_lossy())
    } else {
        Command::new("mdadm")
            .args(["--create"])
            .arg(array.to_string_lossy())
            .args([
                "--run",
                "--level=1",
                "--metadata=1.2",
                "--bitmap=internal",
                "--assume-clean",
                "--homehost=any",
            ])
            .arg(format!("--raid-devices={}", members.len()))
    };
    let cmd = cmd
        .args(members.iter().map(|m| m.to_string_lossy().into_owned()))
        .deadline(deadline);
    runner.run_ok(&cmd, &[])?;
    Ok(array)
}

/// Stops the array; one not running is fine.
pub fn stop(runner: &dyn CommandRunner, host: &Host, alias: &str, deadline: Instant) -> Result<()> {
    let local = host.map_dev_path(&array_path(alias));
    if !local.exists() {
        return Ok(());
    }
    let cmd = Command::new("mdadm")
        .arg("--stop")
        .arg(array_path(alias).to_string_lossy())
        .deadline(deadline);
    runner.run_ok(&cmd, &[]).map(|_| ())
}
