//! The `rbd` and `rbd-nbd` wrappers: map, unmap, list mappings, image size; the private
//! keyring and ceph.conf files a command needs.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Instant;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::rbd::{ImageSpec, RbdMapper, RbdProperties};
use crate::platform::cmd::{Command, CommandOutput, CommandRunner};

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

/// Parses a mapping list (both tools' JSON shapes); empty output is no mappings.
pub fn parse_mappings(text: &str) -> std::result::Result<Vec<Mapping>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(t).map_err(|e| e.to_string())
}

/// Files a command needs: a private directory (mode 0700) with the keyring (0600) and a
/// minimal ceph.conf naming the monitors. Removed on drop; never logged.
#[derive(Debug)]
pub struct CephFiles {
    dir: tempfile::TempDir,
    conf: Option<PathBuf>,
    keyring: Option<PathBuf>,
}

impl CephFiles {
    /// Writes what `props` carries: a keyring when it has one, a ceph.conf when it names
    /// monitors.
    pub fn write(props: &RbdProperties) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("hostbrick-rbd-")
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let private = |name: &str, content: &[u8]| -> Result<PathBuf> {
            let path = dir.path().join(name);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io(&path, e))?;
            f.write_all(content).map_err(|e| Error::io(&path, e))?;
            Ok(path)
        };
        let keyring = match &props.keyring {
            Some(k) => {
                let mut text = k.expose().to_string();
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                Some(private("keyring", text.as_bytes())?)
            }
            None => None,
        };
        let conf = if props.monitors.is_empty() {
            None
        } else {
            let mons: Vec<String> = props.monitors.iter().map(|m| m.address()).collect();
            let mut text = format!("[global]\nmon_host = {}\n", mons.join(","));
            if let Some(k) = &keyring {
                text.push_str(&format!("keyring = {}\n", k.display()));
            }
            Some(private("ceph.conf", text.as_bytes())?)
        };
        Ok(CephFiles { dir, conf, keyring })
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

    /// The private directory (for tests).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
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
