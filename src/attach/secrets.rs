//! libvirt secrets for volumes QEMU decrypts itself (libvirt's native LUKS): the seam
//! ([`Secrets`]) and its `virsh` implementation ([`VirshSecrets`]), as Nova's
//! `host.create_secret('volume', volume_id, password)`, `find_secret` and `delete_secret`.
//!
//! A volume's secret has usage type `volume` and the volume id as its usage id, so there is
//! at most one per volume (libvirt refuses a second secret with the same usage) and a
//! leftover of a crashed attach is found by the volume id alone. It is persistent
//! (`ephemeral='no'`: a restarted libvirtd still starts the guest) and private
//! (`private='yes'`: libvirt never hands the value out through its API).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::connector::HostContext;
use crate::error::{Error, Result};
use crate::libvirt::is_uuid;
use crate::model::secret::Secret;
use crate::platform::cmd::{Command, CommandOutput};
use crate::platform::state;
use crate::rbd::cli::{instance, sweep_stale_files};

/// The directory of secret value files in hostbrick's state directory.
const SECRETS_SUBDIR: &str = "secrets";

/// The hypervisor's secret store (libvirt's `virSecret` API).
pub trait Secrets: Send + Sync {
    /// The UUID of the secret whose usage is `volume` `volume_id`, if libvirt has one.
    fn find_volume_secret(&self, volume_id: &str) -> Result<Option<String>>;

    /// Defines a persistent, private secret with usage `volume` `volume_id` and no value
    /// yet; returns its UUID.
    fn define_volume_secret(&self, volume_id: &str) -> Result<String>;

    /// Sets the secret's value: the bytes of `value`, never on a command line.
    fn set_value(&self, uuid: &str, value: &Secret) -> Result<()>;

    /// Removes the secret. Removing one already gone is success.
    fn undefine(&self, uuid: &str) -> Result<()>;
}

/// One row of `virsh secret-list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretListEntry {
    /// The secret's UUID.
    pub uuid: String,
    /// Its usage as virsh shows it (`volume vol-1`, `ceph client.cinder secret`), `None`
    /// for `Unused`.
    pub usage: Option<String>,
}

impl SecretListEntry {
    /// The usage id when the usage type is `volume`.
    pub fn volume(&self) -> Option<&str> {
        self.usage.as_deref()?.strip_prefix("volume ")
    }
}

/// Parses `virsh secret-list` output (a `UUID Usage` header, a rule, one row per secret).
pub fn parse_secret_list(text: &str) -> Result<Vec<SecretListEntry>> {
    let bad = |line: &str| Error::Parse {
        program: "virsh secret-list".into(),
        reason: format!("unexpected line {line:?}"),
    };
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match lines.next() {
        Some(h) if h.split_whitespace().eq(["UUID", "Usage"]) => {}
        Some(h) => return Err(bad(h)),
        None => return Ok(Vec::new()),
    }
    let mut out = Vec::new();
    for line in lines {
        if line.chars().all(|c| c == '-') {
            continue;
        }
        let (uuid, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        if !is_uuid(uuid) {
            return Err(bad(line));
        }
        let usage = match rest.trim() {
            "" | "Unused" => None,
            u => Some(u.to_string()),
        };
        out.push(SecretListEntry {
            uuid: uuid.to_string(),
            usage,
        });
    }
    Ok(out)
}

/// A volume id as a secret's usage id: what `virsh secret-list` shows it as, one word.
fn check_volume_id(volume_id: &str) -> Result<&str> {
    let ok = !volume_id.is_empty()
        && volume_id.len() <= 255
        && volume_id
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control());
    if ok {
        Ok(volume_id)
    } else {
        Err(Error::InvalidArgument {
            name: "volume_id".into(),
            reason: format!(
                "{volume_id:?} cannot name a libvirt secret (empty, spaces or control characters)"
            ),
        })
    }
}

/// The XML of a volume secret, as Nova defines it (but private).
pub fn volume_secret_xml(uuid: &str, volume_id: &str) -> Result<String> {
    if !is_uuid(uuid) {
        return Err(Error::InvalidArgument {
            name: "secret uuid".into(),
            reason: format!("{uuid:?} is not a UUID"),
        });
    }
    let id = quick_xml::escape::escape(check_volume_id(volume_id)?);
    Ok(format!(
        "<secret ephemeral='no' private='yes'>\n  <uuid>{uuid}</uuid>\n  \
         <usage type='volume'>\n    <volume>{id}</volume>\n  </usage>\n</secret>\n"
    ))
}

/// libvirt secrets reached with `virsh` (through the context's command runner). A value
/// goes to `virsh secret-set-value --file F --plain` in a file `F` created 0600 in
/// `secrets/` of hostbrick's private state directory, named after this process, and
/// removed as soon as virsh returns (after a failure too); files a killed process left are
/// removed by the next [`Secrets::set_value`] of any process.
#[derive(Debug, Clone)]
pub struct VirshSecrets {
    uri: Option<String>,
    ctx: HostContext,
}

/// A secret value file, removed on drop.
struct ValueFile(PathBuf);

impl Drop for ValueFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.0.display(), error = %e, "cannot remove a secret value file");
            }
        }
    }
}

impl VirshSecrets {
    /// Secrets of libvirt's default connection.
    pub fn new(ctx: HostContext) -> Self {
        VirshSecrets { uri: None, ctx }
    }

    /// Connects to this libvirt URI (`qemu:///system`).
    pub fn with_uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = Some(uri.into());
        self
    }

    fn virsh(&self) -> Command {
        super::virsh::virsh_command(self.uri.as_deref())
    }

    fn run(&self, cmd: Command) -> Result<CommandOutput> {
        self.ctx.runner.run_ok(&cmd, &[])
    }

    /// Every secret libvirt has.
    pub fn list(&self) -> Result<Vec<SecretListEntry>> {
        let out = self.run(self.virsh().arg("secret-list"))?;
        parse_secret_list(&out.stdout)
    }

    fn write_value(&self, value: &Secret) -> Result<ValueFile> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = state::ensure_dir(&self.ctx.host.state_dir(), &[SECRETS_SUBDIR])?;
        if let Err(e) = sweep_stale_files(&dir) {
            tracing::warn!(error = %e.chain(), "cannot sweep stale secret value files");
        }
        let path = dir.join(format!(
            "{}-{}-{}.secret",
            std::process::id(),
            instance(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let mut f = state::create_private(&path).map_err(|e| state::open_error(&path, e))?;
        let file = ValueFile(path);
        f.write_all(value.expose().as_bytes())
            .and_then(|()| f.flush())
            .map_err(|e| Error::io(&file.0, e))?;
        Ok(file)
    }
}

impl Secrets for VirshSecrets {
    fn find_volume_secret(&self, volume_id: &str) -> Result<Option<String>> {
        let id = check_volume_id(volume_id)?;
        Ok(self
            .list()?
            .into_iter()
            .find(|s| s.volume() == Some(id))
            .map(|s| s.uuid))
    }

    fn define_volume_secret(&self, volume_id: &str) -> Result<String> {
        let uuid = self.ctx.host.random_uuid()?;
        let xml = volume_secret_xml(&uuid, volume_id)?;
        let mut file = tempfile::Builder::new()
            .prefix("hostbrick-secret-")
            .suffix(".xml")
            .tempfile()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?;
        file.write_all(xml.as_bytes())
            .and_then(|_| file.flush())
            .map_err(|e| Error::io(file.path(), e))?;
        self.run(
            self.virsh()
                .arg("secret-define")
                .arg(file.path().to_string_lossy()),
        )?;
        tracing::info!(volume = %volume_id, secret = %uuid, "libvirt volume secret defined");
        Ok(uuid)
    }

    fn set_value(&self, uuid: &str, value: &Secret) -> Result<()> {
        if !is_uuid(uuid) {
            return Err(Error::InvalidArgument {
                name: "secret uuid".into(),
                reason: format!("{uuid:?} is not a UUID"),
            });
        }
        let file = self.write_value(value)?;
        let result = self.run(
            self.virsh()
                .args(["secret-set-value", "--secret", uuid, "--file"])
                .arg(file.0.to_string_lossy())
                .arg("--plain"),
        );
        drop(file);
        result.map(drop)
    }

    fn undefine(&self, uuid: &str) -> Result<()> {
        match self.run(self.virsh().args(["secret-undefine", uuid])) {
            Ok(_) => {
                tracing::info!(secret = %uuid, "libvirt secret undefined");
                Ok(())
            }
            // Gone already (a retried detach): success. Anything else stays an error.
            Err(e) => match self.list() {
                Ok(list) if !list.iter().any(|s| s.uuid.eq_ignore_ascii_case(uuid)) => {
                    tracing::debug!(secret = %uuid, "libvirt secret already gone");
                    Ok(())
                }
                _ => Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_secret_list() {
        let out = " UUID                                   Usage\n\
                   --------------------------------------------------------------------------------\n \
                   0f4c1a2e-8d3b-4f7a-9e6c-5b2d1c0a9e8f   volume vol-luks-1\n \
                   457eb676-33da-42ec-9a8c-9293d545c337   ceph client.cinder secret\n \
                   d6ac8c8e-7c3b-4a57-9c7b-4b9c6e0e3a11   Unused\n";
        let list = parse_secret_list(out).unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].volume(), Some("vol-luks-1"));
        assert_eq!(list[1].usage.as_deref(), Some("ceph client.cinder secret"));
        assert_eq!(list[1].volume(), None);
        assert_eq!(list[2].usage, None);
        assert_eq!(parse_secret_list("").unwrap(), Vec::new());
        assert_eq!(
            parse_secret_list(" UUID   Usage\n-----\n").unwrap(),
            Vec::new()
        );
        assert!(parse_secret_list("Name Usage\n").is_err());
        assert!(parse_secret_list(" UUID Usage\n---\n not-a-uuid volume x\n").is_err());
    }

    #[test]
    fn volume_secret_xml_is_novas_but_private() {
        let xml = volume_secret_xml("0f4c1a2e-8d3b-4f7a-9e6c-5b2d1c0a9e8f", "vol&1").unwrap();
        assert!(
            xml.starts_with("<secret ephemeral='no' private='yes'>"),
            "{xml}"
        );
        assert!(xml.contains("<usage type='volume'>"), "{xml}");
        assert!(xml.contains("<volume>vol&amp;1</volume>"), "{xml}");
        assert!(volume_secret_xml("x", "vol1").is_err());
        assert!(volume_secret_xml("0f4c1a2e-8d3b-4f7a-9e6c-5b2d1c0a9e8f", "a b").is_err());
        assert!(volume_secret_xml("0f4c1a2e-8d3b-4f7a-9e6c-5b2d1c0a9e8f", "").is_err());
    }
}
