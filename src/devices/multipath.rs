//! dm-multipath: the `multipath`/`multipathd` wrappers and the sysfs view of maps.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::devices::block;
use crate::error::Result;
use crate::model::ids::Wwid;
use crate::platform::cancel;
use crate::platform::cmd::{Command, CommandOutput, CommandRunner};
use crate::platform::host::Host;
use crate::platform::wait::DeviceWatch;

/// The dm uuid prefix of multipath maps.
pub const MPATH_UUID_PREFIX: &str = "mpath-";

/// A dm-multipath map as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipathMap {
    /// The kernel name, `dm-N`.
    pub dm: String,
    /// The map name (`/dev/mapper/<name>`): the WWID, or an alias.
    pub name: String,
    /// The WWID from the dm uuid.
    pub wwid: String,
}

impl MultipathMap {
    /// The map device-mapper device `dm` is, from its `dm/uuid` and `dm/name` attribute
    /// values (`name` absent when the file is missing); `None` unless the uuid is a
    /// multipath one (`mpath-<wwid>`) with a WWID. A map without a name is known by its WWID.
    pub fn from_dm_attrs(dm: &str, uuid: &str, name: Option<&str>) -> Option<MultipathMap> {
        let wwid = uuid.trim().strip_prefix(MPATH_UUID_PREFIX)?;
        if wwid.is_empty() {
            return None;
        }
        let name = name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or(wwid);
        Some(MultipathMap {
            dm: dm.to_string(),
            name: name.to_string(),
            wwid: wwid.to_string(),
        })
    }
}

/// The multipath map `dm` (`dm-N`), if it is one.
pub fn map_info(host: &Host, dm: &str) -> Result<Option<MultipathMap>> {
    let Some(uuid) = host.read_attr_opt(&host.sys(format!("block/{dm}/dm/uuid")))? else {
        return Ok(None);
    };
    let name = host.read_attr_opt(&host.sys(format!("block/{dm}/dm/name")))?;
    Ok(MultipathMap::from_dm_attrs(dm, &uuid, name.as_deref()))
}

/// The multipath map holding path device `name`, if any.
pub fn holder_map(host: &Host, name: &str) -> Result<Option<MultipathMap>> {
    for h in block::holders(host, name)? {
        if h.starts_with("dm-") {
            if let Some(m) = map_info(host, &h)? {
                return Ok(Some(m));
            }
        }
    }
    Ok(None)
}

/// The map named `name` (`/dev/mapper/<name>`), if it exists.
pub fn map_by_name(host: &Host, name: &str) -> Result<Option<MultipathMap>> {
    if name.is_empty() || name.contains('/') {
        return Ok(None);
    }
    let Some(target) = host.canonical(&host.dev(format!("mapper/{name}")))? else {
        return Ok(None);
    };
    let Some(dm) = target.file_name().and_then(|n| n.to_str()) else {
        return Ok(None);
    };
    map_info(host, dm)
}

/// Adds the WWID to multipath's wwids file so the map is made even with
/// `find_multipaths` set: `multipath -a <wwid>`.
pub fn add_wwid(runner: &dyn CommandRunner, wwid: &Wwid, deadline: Instant) -> Result<()> {
    let cmd = Command::new("multipath")
        .args(["-a", wwid.as_str()])
        .deadline(deadline);
    runner.run_ok(&cmd, &[]).map(|_| ())
}

/// Tells multipathd about a path: `multipathd add path /dev/sdX`.
pub fn add_path(runner: &dyn CommandRunner, dev: &Path, deadline: Instant) -> Result<()> {
    let cmd = Command::new("multipathd")
        .args(["add", "path"])
        .arg(dev.to_string_lossy())
        .deadline(deadline);
    multipathd_ok(runner, &cmd)
}

/// Runs a multipathd command that changes something: a failure is its exit status, or
/// `fail` on stdout (multipathd reports some failures that way with exit status 0).
fn multipathd_ok(runner: &dyn CommandRunner, cmd: &Command) -> Result<()> {
    let out = runner.run_ok(cmd, &[])?;
    if out.stdout.trim_start().starts_with("fail") {
        return Err(cmd.failure(&out));
    }
    Ok(())
}

/// How long a flush is retried while the map is only briefly open ("map in use": udev
/// probing it after a change, busiest when many volumes come and go at once).
pub const MAP_BUSY_RETRY_FOR: Duration = Duration::from_secs(5);
/// The longest pause between those retries; a udev event on a block device ends it sooner.
pub const MAP_BUSY_RETRY_INTERVAL: Duration = Duration::from_millis(250);

/// True when `multipath -f` refused because the map is open.
fn map_in_use(out: &CommandOutput) -> bool {
    out.stdout.contains("map in use") || out.stderr.contains("map in use")
}

/// Flushes and removes the map: `multipath -f <name>`, retried for up to
/// [`MAP_BUSY_RETRY_FOR`] while it answers "map in use".
///
/// What holds a map open for a moment is udev: a map multipathd just made or reloaded gets
/// an event whose rules probe it (blkid, kpartx), and udev tells its listeners of the event
/// once those are done and the device is closed. So a refused flush is tried again at the
/// next block-device event `watch` (opened on `block` before the flush) sees, or after
/// [`MAP_BUSY_RETRY_INTERVAL`] at the latest.
pub fn flush_map(
    runner: &dyn CommandRunner,
    watch: &mut DeviceWatch,
    name: &str,
    deadline: Instant,
) -> Result<()> {
    let cmd = Command::new("multipath")
        .args(["-f", name])
        .deadline(deadline);
    let give_up = deadline.min(Instant::now() + MAP_BUSY_RETRY_FOR);
    loop {
        let out = runner.run(&cmd)?;
        if out.status.success() {
            return Ok(());
        }
        let now = Instant::now();
        if !map_in_use(&out) || now >= give_up {
            return Err(cmd.failure(&out));
        }
        tracing::debug!(
            map = name,
            "map in use; flushing again after udev's next event"
        );
        watch.next_event((now + MAP_BUSY_RETRY_INTERVAL).min(give_up))?;
        cancel::check(|| format!("a retry of `{cmd}`"))?;
    }
}

/// Makes the map fail I/O it queues for want of a path, at once and from now on:
/// `dmsetup message <name> 0 fail_if_no_path`.
pub fn fail_if_no_path(runner: &dyn CommandRunner, name: &str, deadline: Instant) -> Result<()> {
    let cmd = Command::new("dmsetup")
        .args(["message", name, "0", "fail_if_no_path"])
        .deadline(deadline);
    runner.run_ok(&cmd, &[]).map(|_| ())
}

/// Removes the map even when it is open: `dmsetup remove --force --retry <name>`.
pub fn force_remove_map(runner: &dyn CommandRunner, name: &str, deadline: Instant) -> Result<()> {
    let cmd = Command::new("dmsetup")
        .args(["remove", "--force", "--retry", name])
        .deadline(deadline);
    runner.run_ok(&cmd, &[]).map(|_| ())
}

/// How long a disconnect waits for multipathd to drop the paths it removed before it
/// drops them itself (`multipathd del path`).
pub const PATH_DROP_WAIT: Duration = Duration::from_secs(1);
/// The pause between two looks at multipathd's paths.
pub const PATH_DROP_POLL: Duration = Duration::from_millis(50);

/// The device names of a `multipathd show paths raw format %d` answer, one a line.
pub fn parse_path_names(out: &str) -> Vec<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains(char::is_whitespace))
        .map(str::to_string)
        .collect()
}

/// multipathd's paths (`multipathd show paths raw format %d`); `None` when multipathd does
/// not answer (not running).
pub fn daemon_paths(runner: &dyn CommandRunner, deadline: Instant) -> Result<Option<Vec<String>>> {
    let cmd = Command::new("multipathd")
        .args(["show", "paths", "raw", "format", "%d"])
        .deadline(deadline);
    let out = runner.run(&cmd)?;
    if !out.status.success() {
        tracing::debug!(stderr = %out.stderr.trim(), "multipathd does not answer; no paths to wait for");
        return Ok(None);
    }
    Ok(Some(parse_path_names(&out.stdout)))
}

/// Waits until multipathd no longer lists any of `removed` (SCSI disks a disconnect took out
/// from under a map it flushed), so that a following attach, whose `multipathd add path`
/// may run before multipathd's event thread has handled the removals, never meets a path
/// multipathd still has from before. multipathd drops a path when udev tells it the disk is
/// gone; one that is still listed after [`PATH_DROP_WAIT`] is dropped with `multipathd del
/// path`, unless a disk of that name exists again (then it is another disk, not ours).
pub fn await_paths_dropped(
    runner: &dyn CommandRunner,
    host: &Host,
    removed: &[String],
    deadline: Instant,
) -> Result<()> {
    let give_up = deadline.min(Instant::now() + PATH_DROP_WAIT);
    loop {
        let Some(listed) = daemon_paths(runner, deadline)? else {
            return Ok(());
        };
        let left: Vec<&String> = removed.iter().filter(|r| listed.contains(r)).collect();
        if left.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        if now >= give_up {
            for name in left {
                if block::exists(host, name) {
                    continue;
                }
                tracing::info!(path = %name, "multipathd still lists a removed path; dropping it");
                let cmd = Command::new("multipathd")
                    .args(["del", "path", name.as_str()])
                    .deadline(deadline);
                multipathd_ok(runner, &cmd)?;
            }
            return Ok(());
        }
        std::thread::sleep(PATH_DROP_POLL.min(give_up - now));
    }
}

/// Resizes the map to its paths' new size: `multipathd resize map <name>`.
pub fn resize_map(runner: &dyn CommandRunner, name: &str, deadline: Instant) -> Result<()> {
    let cmd = Command::new("multipathd")
        .args(["resize", "map", name])
        .deadline(deadline);
    multipathd_ok(runner, &cmd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeRunner;
    use std::fs;

    #[test]
    fn a_removed_path_multipathd_still_lists_is_dropped_unless_its_name_is_back() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::with_root(d.path());
        // sda is a disk again (another one, since ours was removed): never dropped; sdb is
        // gone but still listed; sdc was dropped by multipathd itself.
        fs::create_dir_all(d.path().join("sys/block/sda")).unwrap();
        let runner = FakeRunner::new();
        runner.on("multipathd", &["show", "paths"], |_| {
            CommandOutput::ok("sda\nsdb\nsdd\n")
        });
        runner.on("multipathd", &["del", "path"], |_| {
            CommandOutput::ok("ok\n")
        });
        let removed: Vec<String> = ["sda", "sdb", "sdc"].map(String::from).to_vec();
        let started = Instant::now();
        await_paths_dropped(
            &runner,
            &host,
            &removed,
            Instant::now() + Duration::from_secs(30),
        )
        .unwrap();
        assert!(started.elapsed() >= PATH_DROP_WAIT);
        assert_eq!(runner.count("multipathd del path"), 1);
        assert_eq!(runner.count("multipathd del path sdb"), 1);
        // multipathd not running: nothing to wait for.
        let down = FakeRunner::new();
        down.on("multipathd", &[], |_| {
            CommandOutput::exit(1, "error -104 receiving packet\n")
        });
        await_paths_dropped(
            &down,
            &host,
            &removed,
            Instant::now() + Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(down.calls().len(), 1);
    }

    #[test]
    fn path_names_of_a_raw_listing() {
        assert_eq!(
            parse_path_names("sda\n sdb \n\nsdc\n"),
            ["sda", "sdb", "sdc"]
        );
        // A line with spaces is not a device name (a header or a message).
        assert!(parse_path_names("dev dm_st\n").is_empty());
    }

    #[test]
    fn map_from_dm_attributes() {
        let m = MultipathMap::from_dm_attrs("dm-3", "mpath-3600a\n", Some("mpatha")).unwrap();
        assert_eq!(
            (m.dm.as_str(), m.name.as_str(), m.wwid.as_str()),
            ("dm-3", "mpatha", "3600a")
        );
        let unnamed = MultipathMap::from_dm_attrs("dm-3", "mpath-3600a", None).unwrap();
        assert_eq!(unnamed.name, "3600a");
        let empty_name = MultipathMap::from_dm_attrs("dm-3", "mpath-3600a", Some(" ")).unwrap();
        assert_eq!(empty_name.name, "3600a");
        assert_eq!(MultipathMap::from_dm_attrs("dm-1", "LVM-xyz", None), None);
        assert_eq!(MultipathMap::from_dm_attrs("dm-1", "", Some("x")), None);
        // A multipath uuid without a WWID names no map.
        assert_eq!(
            MultipathMap::from_dm_attrs("dm-1", "mpath-", Some("x")),
            None
        );
    }

    #[test]
    fn finds_map_through_holders_and_mapper_link() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let host = Host::with_root(root);
        fs::create_dir_all(root.join("sys/block/dm-0/dm")).unwrap();
        fs::write(root.join("sys/block/dm-0/dm/uuid"), "mpath-3600a\n").unwrap();
        fs::write(root.join("sys/block/dm-0/dm/name"), "3600a\n").unwrap();
        fs::create_dir_all(root.join("sys/block/dm-1/dm")).unwrap();
        fs::write(root.join("sys/block/dm-1/dm/uuid"), "LVM-xyz\n").unwrap();
        fs::create_dir_all(root.join("sys/block/sdb/holders/dm-1")).unwrap();
        fs::create_dir_all(root.join("sys/block/sdb/holders/dm-0")).unwrap();
        let m = holder_map(&host, "sdb").unwrap().unwrap();
        assert_eq!(
            (m.dm.as_str(), m.name.as_str(), m.wwid.as_str()),
            ("dm-0", "3600a", "3600a")
        );
        assert_eq!(holder_map(&host, "sdc").unwrap(), None);
        assert_eq!(map_info(&host, "dm-1").unwrap(), None);
        fs::create_dir_all(root.join("dev/mapper")).unwrap();
        fs::write(root.join("dev/dm-0"), "").unwrap();
        std::os::unix::fs::symlink("../dm-0", root.join("dev/mapper/3600a")).unwrap();
        assert_eq!(map_by_name(&host, "3600a").unwrap().unwrap().dm, "dm-0");
        assert_eq!(map_by_name(&host, "nope").unwrap(), None);
        assert_eq!(map_by_name(&host, "../x").unwrap(), None);
    }
}
