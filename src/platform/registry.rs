//! hostbrick's record of what it attached on this host, under `/run/hostbrick/attachments`.
//!
//! A connect that shares a host resource with other volumes (an NVMe controller serves every
//! namespace of its subsystem) writes an entry; a disconnect removes its own and releases the
//! shared resource only when no other entry needs it. The directory lives on tmpfs: it is
//! gone after a reboot, as are the attachments it describes.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};
use crate::platform::host::Host;
use crate::platform::state;

/// The registry's directory in the state directory.
const ATTACHMENTS_SUBDIR: &str = "attachments";

/// The attachment registry of one protocol.
///
/// It lives in hostbrick's private state directory ([`Host::state_dir`]), whose checks it
/// applies. An entry's file name is its key made safe plus a hash of the whole key, so
/// distinct keys (`a/b` and `a_b`) never share one; entries an earlier hostbrick wrote
/// under the bare safe name are still read, and removed with their key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    state: PathBuf,
    protocol: String,
    dir: PathBuf,
}

impl Registry {
    /// The registry for `protocol` on `host` (`/run/hostbrick/attachments/<protocol>`).
    pub fn new(host: &Host, protocol: &str) -> Self {
        let state = host.state_dir();
        Registry {
            dir: state.join(ATTACHMENTS_SUBDIR).join(protocol),
            state,
            protocol: protocol.to_string(),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn rel(&self) -> [&str; 2] {
        [ATTACHMENTS_SUBDIR, self.protocol.as_str()]
    }

    /// The directory, created when missing, once it passes the state directory's checks.
    fn ensure(&self) -> Result<PathBuf> {
        state::ensure_dir(&self.state, &self.rel())
    }

    /// The directory when it exists and passes the checks, changing nothing.
    fn existing(&self) -> Result<Option<PathBuf>> {
        state::existing_dir(&self.state, &self.rel())
    }

    /// The file name of the entry `key`.
    fn file_name(key: &str) -> String {
        state::key_file_name(key, ".json")
    }

    /// The name an earlier hostbrick gave the entry `key` (keys that differ only in
    /// unsafe characters shared it).
    fn legacy_file_name(key: &str) -> String {
        format!("{}.json", state::safe_name(key, usize::MAX))
    }

    /// Writes (or replaces) the entry `key`, atomically: a private temporary file in the
    /// directory, synced, renamed over the entry, the directory synced.
    pub fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let dir = self.ensure()?;
        let text = serde_json::to_vec(value).map_err(|e| Error::InvalidDeviceRecord {
            reason: e.to_string(),
        })?;
        state::write_atomic(&dir, &Self::file_name(key), &text)?;
        // The same entry under an earlier hostbrick's name would be listed twice.
        remove_file(&dir.join(Self::legacy_file_name(key)))
    }

    /// Removes the entry `key` (under its earlier name too); none is fine.
    pub fn remove(&self, key: &str) -> Result<()> {
        let Some(dir) = self.existing()? else {
            return Ok(());
        };
        remove_file(&dir.join(Self::file_name(key)))?;
        remove_file(&dir.join(Self::legacy_file_name(key)))?;
        state::sync_dir(&dir)
    }

    /// Every entry that parses as `T`, with its name: the key made safe (unsafe characters
    /// replaced by `_`). Entries that do not parse (another version's) and symlinks are
    /// skipped with a warning.
    pub fn entries<T: DeserializeOwned>(&self) -> Result<Vec<(String, T)>> {
        Ok(self
            .read_all()?
            .into_iter()
            .map(|(_, name, v)| (name, v))
            .collect())
    }

    /// Removes every entry that parses as `T` and for which `gone` says so; returns their
    /// names (as [`Registry::entries`] shows them).
    pub fn remove_where<T: DeserializeOwned>(
        &self,
        mut gone: impl FnMut(&T) -> Result<bool>,
    ) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for (path, name, v) in self.read_all::<T>()? {
            if gone(&v)? {
                remove_file(&path)?;
                removed.push(name);
            }
        }
        if !removed.is_empty() {
            if let Some(dir) = self.existing()? {
                state::sync_dir(&dir)?;
            }
        }
        Ok(removed)
    }

    /// Every entry that parses as `T`: its file, its name and its value, by name.
    fn read_all<T: DeserializeOwned>(&self) -> Result<Vec<(PathBuf, String, T)>> {
        let mut out = Vec::new();
        let Some(dir) = self.existing()? else {
            return Ok(out);
        };
        let rd = fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Temporary files of a write in progress start with a dot.
            let Some(stem) = name
                .strip_suffix(".json")
                .filter(|_| !name.starts_with('.'))
            else {
                continue;
            };
            let path = entry.path();
            let text = match state::read_file(&path) {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e @ Error::UnsafeStateDir { .. }) => {
                    tracing::warn!(error = %e, "skipping a registry entry that is a symlink");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let shown = state::strip_key_hash(stem).unwrap_or(stem).to_string();
            match serde_json::from_slice(&text) {
                Ok(v) => out.push((path, shown, v)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping unreadable registry entry")
                }
            }
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    /// The entry `key`, if present (under an earlier hostbrick's name too).
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let Some(dir) = self.existing()? else {
            return Ok(None);
        };
        for name in [Self::file_name(key), Self::legacy_file_name(key)] {
            let path = dir.join(name);
            if let Some(t) = state::read_file(&path)? {
                return serde_json::from_slice(&t).map(Some).map_err(|e| {
                    Error::UnexpectedContent {
                        path,
                        reason: e.to_string(),
                    }
                });
            }
        }
        Ok(None)
    }
}

/// Removes a file (a symlink itself, never its target); none is fine.
fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_list_remove() {
        let d = tempfile::tempdir().unwrap();
        let r = Registry::new(&Host::with_root(d.path()), "nvme");
        assert!(r.entries::<serde_json::Value>().unwrap().is_empty());
        r.put("volume-a/1", &serde_json::json!({"n": 1})).unwrap();
        r.put("volume-b", &serde_json::json!({"n": 2})).unwrap();
        fs::write(r.path().join("junk.json"), "{").unwrap();
        let e: Vec<(String, serde_json::Value)> = r.entries().unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].0, "volume-a_1");
        assert_eq!(
            r.get::<serde_json::Value>("volume-b").unwrap().unwrap()["n"],
            2
        );
        r.remove("volume-a/1").unwrap();
        r.remove("volume-a/1").unwrap();
        assert_eq!(r.entries::<serde_json::Value>().unwrap().len(), 1);
    }

    #[test]
    fn keys_differing_in_unsafe_characters_keep_their_own_entries() {
        let d = tempfile::tempdir().unwrap();
        let r = Registry::new(&Host::with_root(d.path()), "nvme");
        r.put("a/b", &serde_json::json!({"n": 1})).unwrap();
        r.put("a_b", &serde_json::json!({"n": 2})).unwrap();
        assert_eq!(r.get::<serde_json::Value>("a/b").unwrap().unwrap()["n"], 1);
        assert_eq!(r.get::<serde_json::Value>("a_b").unwrap().unwrap()["n"], 2);
        assert_eq!(r.entries::<serde_json::Value>().unwrap().len(), 2);
        r.remove("a/b").unwrap();
        assert_eq!(r.get::<serde_json::Value>("a/b").unwrap(), None);
        assert_eq!(r.get::<serde_json::Value>("a_b").unwrap().unwrap()["n"], 2);
    }

    #[test]
    fn entries_of_an_earlier_version_are_read_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let r = Registry::new(&Host::with_root(d.path()), "rbd");
        fs::create_dir_all(r.path()).unwrap();
        fs::write(r.path().join("volume-old.json"), r#"{"n": 7}"#).unwrap();
        let e: Vec<(String, serde_json::Value)> = r.entries().unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0, "volume-old");
        assert_eq!(
            r.get::<serde_json::Value>("volume-old").unwrap().unwrap()["n"],
            7
        );
        // Rewritten under the new name, it is listed once.
        r.put("volume-old", &serde_json::json!({"n": 8})).unwrap();
        let e: Vec<(String, serde_json::Value)> = r.entries().unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].1["n"], 8);
        r.remove("volume-old").unwrap();
        assert!(r.entries::<serde_json::Value>().unwrap().is_empty());
        fs::write(r.path().join("volume-old.json"), "{}").unwrap();
        r.remove("volume-old").unwrap();
        assert!(fs::read_dir(r.path()).unwrap().next().is_none());
    }

    #[test]
    fn records_are_private_and_links_are_not_followed() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        let host = Host::with_root(d.path());
        let r = Registry::new(&host, "nvme");
        r.put("vol", &serde_json::json!({"n": 1})).unwrap();
        let file = r.path().join(Registry::file_name("vol"));
        assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        for dir in [
            host.state_dir(),
            host.state_dir().join("attachments"),
            r.path().to_path_buf(),
        ] {
            assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700, "{dir:?}");
        }

        // A symlink planted as an entry: replaced, its target neither read nor written.
        let victim = d.path().join("victim");
        fs::write(&victim, r#"{"n": 99}"#).unwrap();
        let link = r.path().join(Registry::file_name("planted"));
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert_eq!(
            r.entries::<serde_json::Value>().unwrap().len(),
            1,
            "not listed"
        );
        assert_eq!(
            r.get::<serde_json::Value>("planted").unwrap_err().kind(),
            "unsafe_state_dir"
        );
        r.put("planted", &serde_json::json!({"n": 2})).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), r#"{"n": 99}"#);
        assert!(!fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());

        // A registry others may write to is refused.
        fs::set_permissions(r.path(), fs::Permissions::from_mode(0o733)).unwrap();
        for e in [
            r.put("vol", &1).unwrap_err(),
            r.entries::<serde_json::Value>().unwrap_err(),
            r.remove("vol").unwrap_err(),
        ] {
            assert_eq!(e.kind(), "unsafe_state_dir", "{e}");
        }
    }
}
