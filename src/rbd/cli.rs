//! The `rbd` and `rbd-nbd` wrappers: map, unmap, list mappings, image size; the private
//! keyring and ceph.conf files a command needs.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::rbd::{ImageSpec, RbdMapper, RbdProperties};
use crate::platform::cmd::{Command, CommandOutput, CommandRunner};
use crate::platform::host::Host;
use crate::platform::state;

/// One mapped image, from `rbd showmapped --format json` or `rbd-nbd list-mapped --format json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Mapping {
    /// The pool.
    pub pool: String,
    /// The RADOS namespace (empty for none).
    #[serde(default)]
    pub namespace: String,
    /// The image (`name` for krbd, `image` for rbd-nbd).
    #[serde(alias = "image")]
    pub name: String,
    /// The snapshot (`-` for none).
    #[serde(default)]
    pub snap: String,
    /// The device, e.g. `/dev/rbd0`.
    pub device: String,
}

impl Mapping {
    /// True when this maps `spec`'s head (not a snapshot).
    pub fn maps(&self, spec: &ImageSpec) -> bool {
        self.pool == spec.pool
            && self.namespace == spec.namespace.clone().unwrap_or_default()
            && self.name == spec.image
            && (self.snap.is_empty() || self.snap == "-")
    }
}

/// Parses a mapping list (both tools' JSON shapes); empty output is no mappings. Ceph
/// before 13.2 (Mimic) printed `rbd showmapped` as an object keyed by mapping id
/// (`{"0": {...}}`, and `{}` for none); that shape is read too, in id order.
pub fn parse_mappings(text: &str) -> std::result::Result<Vec<Mapping>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(Vec::new());
    }
    if !t.starts_with('{') {
        return serde_json::from_str(t).map_err(|e| e.to_string());
    }
    let by_id: BTreeMap<String, Mapping> = serde_json::from_str(t).map_err(|e| e.to_string())?;
    let mut v: Vec<(String, Mapping)> = by_id.into_iter().collect();
    // Numeric ids in numeric order ("10" after "9").
    v.sort_by(|(a, _), (b, _)| (a.len(), a).cmp(&(b.len(), b)));
    Ok(v.into_iter().map(|(_, m)| m).collect())
}

/// The keyrings directory's name in the state directory.
const KEYRINGS_SUBDIR: &str = "keyrings";

/// How old a keyring file of another live process may grow before a sweep removes it
/// (one left by a dead process goes at once). A command reads its keyring when it
/// starts, well within this.
pub const STALE_KEYRING_AGE: Duration = Duration::from_secs(10 * 60);

/// Files a command needs: the keyring (mode 0600) and a minimal ceph.conf naming the
/// monitors, in `keyrings/` of hostbrick's private state directory (mode 0700). Each is
/// created `O_EXCL | O_NOFOLLOW` with its mode from the start, named after this process
/// (`<pid>-<instance>-<n>.keyring`), and removed on drop (so after a failed command too);
/// files a killed process left are swept by the next [`CephFiles::write`]. Never logged.
#[derive(Debug)]
pub struct CephFiles {
    dir: PathBuf,
    conf: Option<PathBuf>,
    keyring: Option<PathBuf>,
}

impl Drop for CephFiles {
    fn drop(&mut self) {
        for path in [self.keyring.take(), self.conf.take()]
            .into_iter()
            .flatten()
        {
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a Ceph file");
                }
            }
        }
    }
}

/// What tells this process's files from those of an earlier process that had the same pid.
pub(crate) fn instance() -> &'static str {
    static INSTANCE: OnceLock<String> = OnceLock::new();
    INSTANCE.get_or_init(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!("{:x}{:08x}", t.as_secs(), t.subsec_nanos())
    })
}

/// The pid and instance a short-lived secret file's name gives, when it is one of ours:
/// a Ceph keyring or conf, or a libvirt secret value (`<pid>-<instance>-<n>.secret`,
/// [`crate::attach::VirshSecrets`]).
fn owner_of(name: &str) -> Option<(i32, &str)> {
    let stem = name
        .strip_suffix(".keyring")
        .or_else(|| name.strip_suffix(".conf"))
        .or_else(|| name.strip_suffix(".secret"))?;
    let mut parts = stem.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    let inst = parts.next()?;
    parts.next()?;
    Some((pid, inst))
}

/// True when process `pid` exists.
fn alive(pid: i32) -> bool {
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::Error::ESRCH)
    )
}

/// Removes the Ceph files in `dir` that no running command can need: those of a dead
/// process, of an earlier process that had this one's pid, or older than
/// [`STALE_KEYRING_AGE`]. Returns how many it removed.
pub fn sweep_stale_files(dir: &Path) -> Result<usize> {
    let me = std::process::id() as i32;
    let mut removed = 0;
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((pid, inst)) = owner_of(&name) else {
            continue;
        };
        let ours = pid == me && inst == instance();
        if ours {
            continue;
        }
        let old = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_KEYRING_AGE);
        if pid == me || old || pid <= 0 || !alive(pid) {
            let path = entry.path();
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
    }
    if removed > 0 {
        tracing::info!(removed, dir = %dir.display(), "removed Ceph files a stopped process left");
    }
    Ok(removed)
}

impl CephFiles {
    /// Writes what `props` carries in `host`'s state directory: a keyring when it has
    /// one, a ceph.conf when it names monitors. Stale files are swept first.
    pub fn write(host: &Host, props: &RbdProperties) -> Result<Self> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = state::ensure_dir(&host.state_dir(), &[KEYRINGS_SUBDIR])?;
        if let Err(e) = sweep_stale_files(&dir) {
            tracing::warn!(error = %e.chain(), "cannot sweep stale Ceph files");
        }
        let base = format!(
            "{}-{}-{}",
            std::process::id(),
            instance(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let private = |name: &str, content: &[u8]| -> Result<PathBuf> {
            let path = dir.join(name);
            let mut f = state::create_private(&path).map_err(|e| state::open_error(&path, e))?;
            if let Err(e) = f.write_all(content) {
                drop(f);
                let _ = std::fs::remove_file(&path);
                return Err(Error::io(&path, e));
            }
            Ok(path)
        };
        // Built up as the files appear, so a failure part way removes what was made.
        let mut files = CephFiles {
            dir: dir.clone(),
            conf: None,
            keyring: None,
        };
        if let Some(k) = &props.keyring {
            let mut text = k.expose().to_string();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            files.keyring = Some(private(&format!("{base}.keyring"), text.as_bytes())?);
        }
        if !props.monitors.is_empty() {
            let mons: Vec<String> = props.monitors.iter().map(|m| m.address()).collect();
            let mut text = format!("[global]\nmon_host = {}\n", mons.join(","));
            if let Some(k) = &files.keyring {
                text.push_str(&format!("keyring = {}\n", k.display()));
            }
            files.conf = Some(private(&format!("{base}.conf"), text.as_bytes())?);
        }
        Ok(files)
    }

    /// The arguments naming the cluster, user, monitors, config and keyring.
    pub fn args(&self, props: &RbdProperties) -> Vec<String> {
        let mut a = vec![
            "--cluster".to_string(),
            props.cluster_name.clone(),
            "--id".into(),
            props.user().to_string(),
        ];
        if let Some(c) = &self.conf {
            a.push("--conf".into());
            a.push(c.display().to_string());
        }
        if !props.monitors.is_empty() {
            a.push("-m".into());
            a.push(
                props
                    .monitors
                    .iter()
                    .map(|m| m.address())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        if let Some(k) = &self.keyring {
            a.push("--keyring".into());
            a.push(k.display().to_string());
        }
        a
    }

    /// The private directory the files are in (for tests).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The keyring file, when `props` had a keyring.
    pub fn keyring(&self) -> Option<&Path> {
        self.keyring.as_deref()
    }
}

/// True when a failed map or info says the credentials were refused. As captured from Ceph
/// 16: `rbd map` with a wrong key or unknown user exits 13 (`EACCES`) saying "couldn't
/// connect to the cluster!"; rbd-nbd says "failed to fetch mon config"; a user without caps
/// on the pool gets "(1) Operation not permitted".
pub fn is_auth_failure(out: &CommandOutput) -> bool {
    let e = out.stderr.to_ascii_lowercase();
    out.status.code() == Some(13)
        || e.contains("failed to fetch mon config")
        || e.contains("permission denied")
        || e.contains("operation not permitted")
}

/// Runs a command that talks to the cluster as the volume's user; a refusal of the
/// credentials is [`Error::AuthenticationFailed`], any other failure the command's error.
fn run_as_client(
    runner: &dyn CommandRunner,
    cmd: &Command,
    props: &RbdProperties,
) -> Result<CommandOutput> {
    let out = runner.run(cmd)?;
    if out.status.success() {
        return Ok(out);
    }
    if is_auth_failure(&out) {
        return Err(Error::AuthenticationFailed {
            target: format!("{} {}", props.image, props.user()),
            source: Box::new(cmd.failure(&out)),
        });
    }
    Err(cmd.failure(&out))
}

/// Maps `props.image`; returns the device the tool printed.
///
/// `rbd` ends its options at `--` (its command finder and boost::program_options take
/// what follows as positional, and Ceph's own config parsers stop there), so the spec
/// comes last, after `--`. `rbd-nbd` has its own parser, which does not know `--` (it
/// would read `--` as the image spec): there the spec stays right after `map`, and what
/// keeps it from being read as an option is [`ImageSpec`]'s validation (no part begins with
/// `-`). The validation is the defence for `rbd` too: `rbd` drops `--<config option>`
/// tokens wherever they stand, `--` or not.
pub fn map(
    runner: &dyn CommandRunner,
    mapper: RbdMapper,
    props: &RbdProperties,
    files: &CephFiles,
    read_only: bool,
    deadline: Instant,
) -> Result<String> {
    let mut cmd = Command::new(mapper.program()).arg("map");
    if mapper == RbdMapper::Nbd {
        cmd = cmd.arg(props.image.to_string());
    }
    cmd = cmd.args(files.args(props));
    if read_only {
        cmd = cmd.arg("--read-only");
    }
    if mapper == RbdMapper::Krbd {
        cmd = cmd.arg("--").arg(props.image.to_string());
    }
    let cmd = cmd.deadline(deadline);
    let out = run_as_client(runner, &cmd, props)?;
    parse_mapped_device(&out.stdout).ok_or_else(|| Error::Parse {
        program: mapper.program().into(),
        reason: format!("no device in {:?}", out.stdout),
    })
}

/// The device a map printed: its last line that names one (`/dev/rbd0`, `/dev/nbd0`).
pub fn parse_mapped_device(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .map(str::trim)
        .rfind(|l| l.starts_with("/dev/"))
        .map(str::to_string)
}

/// The images mapped through `mapper`.
pub fn mappings(
    runner: &dyn CommandRunner,
    mapper: RbdMapper,
    deadline: Instant,
) -> Result<Vec<Mapping>> {
    let cmd = match mapper {
        RbdMapper::Krbd => Command::new("rbd").args(["showmapped", "--format", "json"]),
        RbdMapper::Nbd => Command::new("rbd-nbd").args(["list-mapped", "--format", "json"]),
    }
    .deadline(deadline);
    let out = runner.run_ok(&cmd, &[])?;
    parse_mappings(&out.stdout).map_err(|reason| Error::Parse {
        program: mapper.program().into(),
        reason,
    })
}

/// Unmaps `device`; one no longer mapped is fine. `rbd` gets `--` before the device (see
/// [`map`]); `rbd-nbd` does not know `--`, and takes an argument beginning with `/dev/` as
/// the device.
pub fn unmap(
    runner: &dyn CommandRunner,
    mapper: RbdMapper,
    device: &str,
    force: bool,
    deadline: Instant,
) -> Result<()> {
    let mut cmd = Command::new(mapper.program()).arg("unmap");
    if force && mapper == RbdMapper::Krbd {
        cmd = cmd.args(["-o", "force"]);
    }
    if mapper == RbdMapper::Krbd {
        cmd = cmd.arg("--");
    }
    let cmd = cmd.arg(device).deadline(deadline);
    let out = runner.run(&cmd)?;
    let gone = out.stderr.contains("not a mapped image")
        || out.stderr.contains("not mapped")
        || out.stderr.contains("No such file");
    if out.status.success() || gone {
        return Ok(());
    }
    Err(cmd.failure(&out))
}

/// The image's size in bytes (`rbd info --format json ... -- <spec>`; `--` as for
/// [`map`]).
pub fn image_size(
    runner: &dyn CommandRunner,
    props: &RbdProperties,
    files: &CephFiles,
    deadline: Instant,
) -> Result<u64> {
    let cmd = Command::new("rbd")
        .args(["info", "--format", "json"])
        .args(files.args(props))
        .arg("--")
        .arg(props.image.to_string())
        .deadline(deadline);
    let out = run_as_client(runner, &cmd, props)?;
    parse_image_size(&out.stdout).map_err(|reason| Error::Parse {
        program: "rbd".into(),
        reason,
    })
}

/// The image size in bytes from `rbd info --format json` output.
pub fn parse_image_size(json: &str) -> std::result::Result<u64, String> {
    let v: serde_json::Value = serde_json::from_str(json.trim()).map_err(|e| e.to_string())?;
    v.get("size")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| "no size".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_mapping_shapes() {
        let krbd = r#"[{"id":"0","pool":"volumes","namespace":"","name":"vol1","snap":"-","device":"/dev/rbd0"},
                       {"id":"1","pool":"volumes","namespace":"ns1","name":"vol2","snap":"-","device":"/dev/rbd1"}]"#;
        let m = parse_mappings(krbd).unwrap();
        assert_eq!(m.len(), 2);
        assert!(m[1].maps(&"volumes/ns1/vol2".parse().unwrap()));
        assert!(!m[0].maps(&"volumes/ns1/vol1".parse().unwrap()));
        // rbd-nbd 16: numeric id, empty snap, a cookie.
        let nbd = r#"[{"id":3322,"pool":"volumes","namespace":"","image":"vol1","snap":"","device":"/dev/nbd0","cookie":""}]"#;
        assert_eq!(parse_mappings(nbd).unwrap()[0].name, "vol1");
        assert!(parse_mappings("").unwrap().is_empty());
        assert!(parse_mappings("[]\n").unwrap().is_empty());
        assert!(parse_mappings("{").is_err());
        // Ceph before 13.2: an object keyed by id, `{}` for none.
        let old = r#"{"10": {"pool":"volumes","namespace":"","name":"v10","snap":"-","device":"/dev/rbd10"},
                     "9": {"pool":"volumes","name":"v9","snap":"-","device":"/dev/rbd9"}}"#;
        let m = parse_mappings(old).unwrap();
        assert_eq!(
            m.iter().map(|m| m.device.as_str()).collect::<Vec<_>>(),
            ["/dev/rbd9", "/dev/rbd10"]
        );
        assert_eq!(m[0].namespace, "");
        assert!(parse_mappings("{}").unwrap().is_empty());
        assert!(parse_mappings(r#"{"0": {"pool": "p"}}"#).is_err());
    }

    #[test]
    fn info_size_and_mapped_device() {
        // Ceph 16, as captured in tests/fixtures/rbd/environment.txt.
        let info = r#"{"name":"vol1","id":"101fbab781f7","size":67108864,"objects":16,"order":22,"object_size":4194304,"format":2}"#;
        assert_eq!(parse_image_size(&format!("{info}\n")), Ok(64 << 20));
        assert!(parse_image_size(r#"{"size":-1}"#).is_err());
        assert!(parse_image_size("").is_err());
        assert!(parse_image_size("[67108864]").is_err());
        assert_eq!(
            parse_mapped_device("/dev/rbd0\n").as_deref(),
            Some("/dev/rbd0")
        );
        assert_eq!(
            parse_mapped_device("rbd: warning: something\n  /dev/nbd1  \n\n").as_deref(),
            Some("/dev/nbd1")
        );
        assert_eq!(parse_mapped_device("mapped\n"), None);
    }
}
