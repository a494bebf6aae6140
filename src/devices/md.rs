//! MD RAID1 over the replicas of a replicated volume (`mdadm`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::devices::block;
use crate::error::{Error, Result};
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
    host: &Host,
    alias: &str,
    members: &[PathBuf],
    deadline: Instant,
) -> Result<PathBuf> {
    for m in members {
        if has_superblock(runner, m, deadline)? {
            return assemble(runner, host, alias, members, deadline);
        }
    }
    let array = array_path(alias);
    let cmd = Command::new("mdadm")
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
        .args(members.iter().map(|m| m.to_string_lossy().into_owned()))
        .deadline(deadline);
    runner.run_ok(&cmd, &[])?;
    Ok(array)
}

/// Assembles `/dev/md/<alias>` from `members`, which carry its superblock (os-brick's
/// `stop_and_assemble_raid`): nothing to do when the array already runs over them under
/// that name; an array the kernel assembled from them under another name (udev's
/// incremental assembly, as `/dev/mdN`) is stopped first, but only when it is built of
/// these members alone and nothing uses it; then `mdadm --assemble --run`.
pub fn assemble(
    runner: &dyn CommandRunner,
    host: &Host,
    alias: &str,
    members: &[PathBuf],
    deadline: Instant,
) -> Result<PathBuf> {
    let array = array_path(alias);
    let names: Vec<String> = members.iter().filter_map(|m| dev_name(m)).collect();
    let current = array_name(host, alias)?;
    for m in &names {
        let Some(holder) = holding_array(host, m)? else {
            continue;
        };
        if current.as_deref() == Some(holder.as_str()) {
            tracing::debug!(array = %array.display(), md = %holder, "array already assembled");
            return Ok(array);
        }
        for member in block::slaves(host, &holder)? {
            if !names.contains(&member) {
                return Err(Error::RecordMismatch {
                    what: format!("MD array {holder} over {m}"),
                    reason: format!(
                        "its member {member} is not a replica of this volume; not stopping it to assemble {}",
                        array.display()
                    ),
                });
            }
        }
        block::ensure_unused(host, &holder, &[])?;
        tracing::info!(md = %holder, array = %array.display(), "stopping the array the kernel assembled under another name");
        let stop = Command::new("mdadm")
            .arg("--stop")
            .arg(format!("/dev/{holder}"))
            .deadline(deadline);
        runner.run_ok(&stop, &[])?;
    }
    let cmd = Command::new("mdadm")
        .args(["--assemble", "--run"])
        .arg(array.to_string_lossy())
        .args(members.iter().map(|m| m.to_string_lossy().into_owned()))
        .deadline(deadline);
    runner.run_ok(&cmd, &[])?;
    Ok(array)
}

/// Grows the array to the size of its (grown) members: `mdadm --grow --size max`, as
/// os-brick's `extend_volume` does for a replicated volume.
pub fn grow_to_max(runner: &dyn CommandRunner, alias: &str, deadline: Instant) -> Result<()> {
    let cmd = Command::new("mdadm")
        .args(["--grow", "--size", "max"])
        .arg(array_path(alias).to_string_lossy())
        .deadline(deadline);
    runner.run_ok(&cmd, &[]).map(|_| ())
}

/// The kernel name (`mdN`) `/dev/md/<alias>` leads to, when it exists.
pub fn array_name(host: &Host, alias: &str) -> Result<Option<String>> {
    Ok(host
        .canonical(&host.map_dev_path(&array_path(alias)))?
        .and_then(|t| t.file_name().and_then(|n| n.to_str()).map(str::to_string)))
}

/// The MD array (`mdN`) that holds the block device `name` (sysfs `holders`), if any.
pub fn holding_array(host: &Host, name: &str) -> Result<Option<String>> {
    Ok(block::holders(host, name)?
        .into_iter()
        .find(|h| is_md_name(h)))
}

/// The kernel name (`mdN`) of the array at `/dev/md/<alias>`, when it exists; a
/// [`Error::RecordMismatch`] when one of its members is not among `members` (the
/// volume's own block devices), so nothing acts on an array that is not the volume's.
pub fn owned_array(host: &Host, alias: &str, members: &[String]) -> Result<Option<String>> {
    let Some(md) = array_name(host, alias)? else {
        return Ok(None);
    };
    for member in block::slaves(host, &md)? {
        if !members.contains(&member) {
            return Err(Error::RecordMismatch {
                what: format!("MD array {alias} ({md})"),
                reason: format!("its member {member} is not a namespace of this volume"),
            });
        }
    }
    Ok(Some(md))
}

fn is_md_name(n: &str) -> bool {
    n.strip_prefix("md")
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

fn dev_name(p: &Path) -> Option<String> {
    p.strip_prefix("/dev")
        .ok()
        .and_then(|r| r.to_str())
        .filter(|r| !r.contains('/'))
        .map(str::to_string)
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

#[cfg(all(test, feature = "testing"))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testing::{FakeHost, FakeRunner};
    use crate::CommandOutput;

    const NQN: &str = "nqn.2014-08.org.hostbrick:vm1";
    const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:0f8fad5b-d9cb-469f-a165-70867728950e";

    /// A host with namespace heads `nvme0n1` (64 MiB), `nvme1n1` and `nvme2n1`, and a
    /// runner that answers every mdadm call with success.
    fn host() -> (FakeHost, FakeRunner) {
        let fake = FakeHost::new();
        for i in 0..3u32 {
            fake.add_nvme_controller(i, &format!("{NQN}{i}"), "tcp", "127.0.0.1", 4420, HOST);
            fake.add_nvme_namespace(
                i,
                i,
                1,
                &format!("11111111-1111-4111-8111-00000000000{i}"),
                &format!("1111111111114111811100000000000{i}"),
                64 << 20,
            );
        }
        let runner = FakeRunner::new();
        runner.on("mdadm", &[], |_| CommandOutput::ok(""));
        (fake, runner)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    fn devs(names: &[&str]) -> Vec<PathBuf> {
        names.iter().map(|n| Path::new("/dev").join(n)).collect()
    }

    #[test]
    fn md_names() {
        for (n, want) in [
            ("md127", true),
            ("md0", true),
            ("md", false),
            ("mdx", false),
            ("dm-0", false),
            ("md1p1", false),
        ] {
            assert_eq!(is_md_name(n), want, "{n}");
        }
    }

    #[test]
    fn superblock_is_mdadm_examine_success() {
        let runner = FakeRunner::new();
        runner.on("mdadm", &["--examine", "/dev/nvme0n1"], |_| {
            CommandOutput::ok("/dev/nvme0n1:\n          Magic : a92b4efc\n        Version : 1.2\n")
        });
        runner.on("mdadm", &["--examine", "/dev/nvme1n1"], |_| {
            CommandOutput::exit(1, "mdadm: No md superblock detected on /dev/nvme1n1.\n")
        });
        assert!(has_superblock(&runner, Path::new("/dev/nvme0n1"), soon()).unwrap());
        assert!(!has_superblock(&runner, Path::new("/dev/nvme1n1"), soon()).unwrap());
    }

    #[test]
    fn assemble_of_a_fresh_replica() {
        let (fake, runner) = host();
        let p = assemble(&runner, &fake.host(), "vol-r", &devs(&["nvme0n1"]), soon()).unwrap();
        assert_eq!(p, Path::new("/dev/md/vol-r"));
        assert_eq!(
            runner.calls(),
            ["mdadm --assemble --run /dev/md/vol-r /dev/nvme0n1"]
        );
    }

    #[test]
    fn assemble_of_an_array_already_running_does_nothing() {
        let (fake, runner) = host();
        fake.add_md_array("md127", Some("vol-r"), &["nvme0n1"]);
        let p = assemble(&runner, &fake.host(), "vol-r", &devs(&["nvme0n1"]), soon()).unwrap();
        assert_eq!(p, Path::new("/dev/md/vol-r"));
        assert!(runner.calls().is_empty(), "{:?}", runner.calls());
    }

    #[test]
    fn an_array_assembled_under_another_name_is_stopped_first() {
        let (fake, runner) = host();
        fake.add_md_array("md127", None, &["nvme0n1"]);
        assemble(
            &runner,
            &fake.host(),
            "vol-r",
            &devs(&["nvme0n1", "nvme1n1"]),
            soon(),
        )
        .unwrap();
        assert_eq!(
            runner.calls(),
            [
                "mdadm --stop /dev/md127",
                "mdadm --assemble --run /dev/md/vol-r /dev/nvme0n1 /dev/nvme1n1"
            ]
        );
    }

    #[test]
    fn a_foreign_or_used_array_is_not_stopped() {
        // An array with a member that is not a replica of the volume.
        let (fake, runner) = host();
        fake.add_md_array("md127", None, &["nvme0n1", "nvme2n1"]);
        let e = assemble(&runner, &fake.host(), "vol-r", &devs(&["nvme0n1"]), soon()).unwrap_err();
        assert!(
            matches!(&e, Error::RecordMismatch { reason, .. } if reason.contains("nvme2n1")),
            "{e:?}"
        );
        assert!(runner.calls().is_empty(), "{:?}", runner.calls());
        // An array of the volume's replicas that something holds open.
        let (fake, runner) = host();
        fake.add_md_array("md127", None, &["nvme0n1"]);
        fake.add_multipath_map("crypt", "x", &["md127"]);
        let e = assemble(&runner, &fake.host(), "vol-r", &devs(&["nvme0n1"]), soon()).unwrap_err();
        assert!(
            matches!(e, Error::DeviceInUse { ref device, .. } if device == "md127"),
            "{e:?}"
        );
        assert!(runner.calls().is_empty(), "{:?}", runner.calls());
    }

    #[test]
    fn create_over_fresh_members_assemble_over_carried_ones() {
        let (fake, runner) = host();
        runner.on("mdadm", &["--examine"], |c| {
            CommandOutput::exit(
                1,
                format!("mdadm: No md superblock detected on {}.\n", c.shown_args()),
            )
        });
        assemble_or_create(
            &runner,
            &fake.host(),
            "vol-r",
            &devs(&["nvme0n1", "nvme1n1"]),
            soon(),
        )
        .unwrap();
        let calls = runner.calls();
        assert!(
            calls
                .last()
                .unwrap()
                .starts_with("mdadm --create /dev/md/vol-r --run --level=1"),
            "{calls:?}"
        );
        assert!(
            calls
                .last()
                .unwrap()
                .ends_with("--raid-devices=2 /dev/nvme0n1 /dev/nvme1n1"),
            "{calls:?}"
        );

        let (fake, runner) = host();
        runner.on("mdadm", &["--examine", "/dev/nvme1n1"], |_| {
            CommandOutput::ok("/dev/nvme1n1:\n          Magic : a92b4efc\n")
        });
        runner.on("mdadm", &["--examine", "/dev/nvme0n1"], |_| {
            CommandOutput::exit(1, "mdadm: No md superblock detected on /dev/nvme0n1.\n")
        });
        assemble_or_create(
            &runner,
            &fake.host(),
            "vol-r",
            &devs(&["nvme0n1", "nvme1n1"]),
            soon(),
        )
        .unwrap();
        assert_eq!(
            runner.calls().last().unwrap(),
            "mdadm --assemble --run /dev/md/vol-r /dev/nvme0n1 /dev/nvme1n1"
        );
    }

    #[test]
    fn grow_is_mdadm_grow_size_max() {
        let runner = FakeRunner::new();
        runner.on("mdadm", &["--grow"], |_| CommandOutput::ok(""));
        grow_to_max(&runner, "vol-r", soon()).unwrap();
        assert_eq!(runner.calls(), ["mdadm --grow --size max /dev/md/vol-r"]);
        let failing = FakeRunner::new();
        failing.on("mdadm", &["--grow"], |_| {
            CommandOutput::exit(
                1,
                "mdadm: Cannot set device size for /dev/md/vol-r: No space left on device\n",
            )
        });
        assert!(matches!(
            grow_to_max(&failing, "vol-r", soon()),
            Err(Error::CommandFailed { .. })
        ));
    }

    #[test]
    fn owned_arrays() {
        let (fake, _) = host();
        let h = fake.host();
        let ours = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(owned_array(&h, "vol-r", &ours(&["nvme0n1"])).unwrap(), None);
        fake.add_md_array("md126", Some("vol-r"), &["nvme0n1", "nvme1n1"]);
        assert_eq!(
            owned_array(&h, "vol-r", &ours(&["nvme0n1", "nvme1n1"]))
                .unwrap()
                .as_deref(),
            Some("md126")
        );
        assert!(matches!(
            owned_array(&h, "vol-r", &ours(&["nvme0n1"])),
            Err(Error::RecordMismatch { .. })
        ));
        assert_eq!(
            holding_array(&h, "nvme1n1").unwrap().as_deref(),
            Some("md126")
        );
        assert_eq!(holding_array(&h, "nvme2n1").unwrap(), None);
        fake.remove_md_array("md126");
        assert_eq!(owned_array(&h, "vol-r", &ours(&["nvme0n1"])).unwrap(), None);
        assert_eq!(holding_array(&h, "nvme1n1").unwrap(), None);
    }
}
