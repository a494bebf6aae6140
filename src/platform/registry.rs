//! hostbrick's record of what it attached on this host, under `/run/hostbrick`.
//!
//! A connect that shares a host resource with other volumes (an NVMe controller serves every
//! namespace of its subsystem) writes an entry; a disconnect removes its own and releases the
//! shared resource only when no other entry needs it. The directory lives on tmpfs: it is
//! gone after a reboot, as are the attachments it describes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};
use crate::platform::host::Host;

/// The attachment registry of one protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    /// The registry for `protocol` on `host` (`/run/hostbrick/attachments/<protocol>`).
    pub fn new(host: &Host, protocol: &str) -> Self {
        Registry {
            dir: host.run(format!("hostbrick/attachments/{protocol}")),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self, key: &str) -> PathBuf {
        let safe: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{safe}.json"))
    }

    /// Writes (or replaces) the entry `key`, atomically.
    pub fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let path = self.file(key);
        let text = serde_json::to_vec(value).map_err(|e| Error::InvalidDeviceRecord {
            reason: e.to_string(),
        })?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        tmp.write_all(&text).map_err(|e| Error::io(tmp.path(), e))?;
        tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
        Ok(())
    }

    /// Removes the entry `key`; none is fine.
    pub fn remove(&self, key: &str) -> Result<()> {
        let path = self.file(key);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&path, e)),
            _ => Ok(()),
        }
    }

    /// Every entry that parses as `T`, with its file name stem. Entries that do not parse
    /// (another version's) are skipped with a warning.
    pub fn entries<T: DeserializeOwned>(&self) -> Result<Vec<(String, T)>> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            let path = entry.path();
            let text = match fs::read(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            match serde_json::from_slice(&text) {
                Ok(v) => out.push((stem.to_string(), v)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping unreadable registry entry")
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The entry `key`, if present.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let path = self.file(key);
        match fs::read(&path) {
            Ok(t) => serde_json::from_slice(&t)
                .map(Some)
                .map_err(|e| Error::UnexpectedContent {
                    path,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
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
}
