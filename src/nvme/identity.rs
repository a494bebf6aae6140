//! The host's NVMe identity: host NQN and host id, kept stable across calls.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::nvme::normalize_uuid;
use crate::platform::host::Host;

/// Where the host NQN and host id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentitySource {
    /// `/etc/nvme/hostnqn` and `/etc/nvme/hostid` were there.
    Files,
    /// Derived from the DMI product UUID.
    Dmi,
    /// Generated (no usable DMI UUID) and saved.
    Generated,
}

/// The host NQN and host id this host connects with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NvmeHostIdentity {
    /// The host NQN.
    pub hostnqn: String,
    /// The host id (a UUID).
    pub hostid: String,
    /// Where they came from.
    pub source: IdentitySource,
    /// True when a controller on this host already uses this host id with another host
    /// NQN: the kernel refuses a connect with the same host id and a different host NQN.
    pub mismatch: bool,
}

const NQN_UUID_PREFIX: &str = "nqn.2014-08.org.nvmexpress:uuid:";

/// DMI UUIDs that firmware uses as placeholders: not unique, never used for identity.
const PLACEHOLDER_UUIDS: [&str; 2] = [
    "00000000-0000-0000-0000-000000000000",
    "03000200-0400-0500-0006-000700080009",
];

/// The system UUID (DMI product UUID), when the firmware gives a real one.
pub fn system_uuid(host: &Host) -> Result<Option<String>> {
    let raw = match host.read_attr_opt(&host.sys("class/dmi/id/product_uuid")) {
        Ok(v) => v,
        // Readable by root only on most systems.
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::PermissionDenied => {
            None
        }
        Err(e) => return Err(e),
    };
    Ok(raw
        .as_deref()
        .and_then(normalize_uuid)
        .filter(|u| !PLACEHOLDER_UUIDS.contains(&u.as_str())))
}

/// The host NQN and host id: from `/etc/nvme` when present; otherwise derived once from the
/// DMI product UUID (else a generated UUID) and saved there, so every later call (and
/// nvme-cli) sees the same values.
pub fn host_identity(host: &Host) -> Result<NvmeHostIdentity> {
    let (hostnqn, hostid, source) = saved_identity(host)?;
    let mismatch = match conflicting_controller(host, &hostnqn, &hostid)? {
        Some((ctrl, other)) => {
            tracing::warn!(%hostnqn, %hostid, controller = %ctrl, other_hostnqn = %other, "host id already in use with another host NQN; the kernel will refuse new connects");
            true
        }
        None => false,
    };
    Ok(NvmeHostIdentity {
        hostnqn,
        hostid,
        source,
        mismatch,
    })
}

/// The host NQN and host id as [`host_identity`] finds (or makes and saves) them, without
/// looking at the controllers for a conflict: what a connector needs on every call.
pub(crate) fn saved_identity(host: &Host) -> Result<(String, String, IdentitySource)> {
    let nqn_path = host.etc("nvme/hostnqn");
    let id_path = host.etc("nvme/hostid");
    let hostnqn = host.read_attr_opt(&nqn_path)?.filter(|s| !s.is_empty());
    let hostid = host.read_attr_opt(&id_path)?.filter(|s| !s.is_empty());
    let (hostnqn, hostid, source) = match (hostnqn, hostid) {
        (Some(n), Some(i)) => (n, i, IdentitySource::Files),
        (nqn, id) => {
            let from_nqn = nqn
                .as_deref()
                .and_then(|n| n.strip_prefix(NQN_UUID_PREFIX))
                .and_then(normalize_uuid);
            let (uuid, source) = match (
                id.as_deref().and_then(normalize_uuid),
                from_nqn,
                system_uuid(host)?,
            ) {
                (Some(u), _, _) | (None, Some(u), _) => (u, IdentitySource::Files),
                (None, None, Some(u)) => (u, IdentitySource::Dmi),
                (None, None, None) => (host.random_uuid()?, IdentitySource::Generated),
            };
            let hostnqn = nqn.unwrap_or_else(|| format!("{NQN_UUID_PREFIX}{uuid}"));
            let hostid = id.unwrap_or(uuid);
            save(&nqn_path, &hostnqn, source)?;
            save(&id_path, &hostid, source)?;
            (hostnqn, hostid, source)
        }
    };
    Ok((hostnqn, hostid, source))
}

/// A controller that uses `hostid` with a host NQN other than `hostnqn`, with that NQN.
pub fn conflicting_controller(
    host: &Host,
    hostnqn: &str,
    hostid: &str,
) -> Result<Option<(String, String)>> {
    let want = normalize_uuid(hostid);
    for name in host.list_dir(&host.sys("class/nvme"))? {
        let dir = host.sys(format!("class/nvme/{name}"));
        let (Some(id), Some(nqn)) = (
            host.read_attr_opt(&dir.join("hostid"))?,
            host.read_attr_opt(&dir.join("hostnqn"))?,
        ) else {
            continue;
        };
        if normalize_uuid(&id) == want && nqn != hostnqn {
            return Ok(Some((name, nqn)));
        }
    }
    Ok(None)
}

/// Saves a derived value. A generated one must persist (or it would change on the next
/// call); a DMI-derived one is stable anyway, so failing to save it is only a warning.
fn save(path: &std::path::Path, value: &str, source: IdentitySource) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    let r = (|| -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(path);
        fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, format!("{value}\n").as_bytes())?;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))?;
        tmp.persist_noclobber(path).map_err(|e| e.error)?;
        Ok(())
    })();
    match r {
        Ok(()) => {
            tracing::info!(path = %path.display(), "saved NVMe host identity");
            Ok(())
        }
        Err(e) if source == IdentitySource::Dmi => {
            tracing::warn!(path = %path.display(), error = %e, "cannot save the DMI-derived NVMe host identity");
            Ok(())
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> (tempfile::TempDir, Host) {
        let d = tempfile::tempdir().unwrap();
        let h = Host::with_root(d.path());
        (d, h)
    }

    #[test]
    fn files_win() {
        let (d, h) = host();
        fs::create_dir_all(d.path().join("etc/nvme")).unwrap();
        fs::write(
            d.path().join("etc/nvme/hostnqn"),
            "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555\n",
        )
        .unwrap();
        fs::write(
            d.path().join("etc/nvme/hostid"),
            "11111111-2222-3333-4444-555555555555\n",
        )
        .unwrap();
        let id = host_identity(&h).unwrap();
        assert_eq!(id.source, IdentitySource::Files);
        assert!(!id.mismatch);
        // Debian generates the two independently: a host id that is not the NQN's UUID is fine.
        let other_id = "99999999-2222-3333-4444-555555555555\n";
        fs::write(d.path().join("etc/nvme/hostid"), other_id).unwrap();
        assert!(!host_identity(&h).unwrap().mismatch);
        // A controller using this host id with another host NQN is the conflict.
        let c = d.path().join("sys/class/nvme/nvme0");
        fs::create_dir_all(&c).unwrap();
        fs::write(c.join("hostid"), other_id).unwrap();
        fs::write(c.join("hostnqn"), "nqn.2014-08.org.nvmexpress:uuid:other\n").unwrap();
        assert!(host_identity(&h).unwrap().mismatch);
    }

    #[test]
    fn derived_from_dmi_once() {
        let (d, h) = host();
        fs::create_dir_all(d.path().join("sys/class/dmi/id")).unwrap();
        fs::write(
            d.path().join("sys/class/dmi/id/product_uuid"),
            "4C4C4544-0042-3510-8051-B4C04F4E4D32\n",
        )
        .unwrap();
        let a = host_identity(&h).unwrap();
        assert_eq!(a.source, IdentitySource::Dmi);
        assert_eq!(a.hostid, "4c4c4544-0042-3510-8051-b4c04f4e4d32");
        assert_eq!(a.hostnqn, format!("{NQN_UUID_PREFIX}{}", a.hostid));
        let b = host_identity(&h).unwrap();
        assert_eq!((a.hostnqn, a.hostid), (b.hostnqn, b.hostid));
        assert_eq!(b.source, IdentitySource::Files);
    }

    #[test]
    fn generated_and_persisted_when_no_dmi() {
        let (d, h) = host();
        fs::create_dir_all(d.path().join("sys/class/dmi/id")).unwrap();
        fs::write(
            d.path().join("sys/class/dmi/id/product_uuid"),
            "03000200-0400-0500-0006-000700080009\n",
        )
        .unwrap();
        let a = host_identity(&h).unwrap();
        assert_eq!(a.source, IdentitySource::Generated);
        let b = host_identity(&h).unwrap();
        assert_eq!((&a.hostnqn, &a.hostid), (&b.hostnqn, &b.hostid));
        assert!(normalize_uuid(&a.hostid).is_some());
    }

    #[test]
    fn hostnqn_only_gives_its_uuid_as_host_id() {
        let (d, h) = host();
        fs::create_dir_all(d.path().join("etc/nvme")).unwrap();
        fs::write(
            d.path().join("etc/nvme/hostnqn"),
            "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555\n",
        )
        .unwrap();
        let id = host_identity(&h).unwrap();
        assert_eq!(id.hostid, "11111111-2222-3333-4444-555555555555");
        assert!(!id.mismatch);
    }
}
