//! Simulated `cryptsetup` and `blkid` on a fake host tree: LUKS headers and their
//! passphrases kept per device, dm-crypt mappings made in the tree as the kernel shows
//! them (`/sys/block/dm-N/dm/{name,uuid}`, `slaves/`, the raw device's `holders/`,
//! `/dev/mapper/<name>`), answers with the real tools' exit codes and messages.
//!
//! It layers onto another simulator's host and runner ([`CryptSim::on`]), so a test can
//! attach an iSCSI LUN, an NVMe namespace or an RBD image and open it encrypted.
//!
//! ```
//! use hostbrick::encryption::{open_volume, close_volume, EncryptionMetadata, EncryptionKey, KeyManager};
//! use hostbrick::testing::sim::crypt::CryptSim;
//! use hostbrick::testing::sim::MIB;
//! use hostbrick::{DeviceRecord, Protocol};
//! use std::time::{Duration, Instant};
//!
//! #[derive(Debug)]
//! struct OneKey;
//! impl KeyManager for OneKey {
//!     fn key(&self, _id: &str) -> hostbrick::Result<EncryptionKey> {
//!         Ok(EncryptionKey::symmetric(vec![0xab; 32]))
//!     }
//! }
//!
//! let sim = CryptSim::new();
//! sim.add_disk("sdb", 64 * MIB);
//! let meta = EncryptionMetadata::from_json(
//!     r#"{"provider": "luks2", "encryption_key_id": "k1"}"#).unwrap().unwrap();
//! let attached = DeviceRecord::block(Protocol::Iscsi, "/dev/sdb", None);
//! let deadline = Instant::now() + Duration::from_secs(5);
//! let opened = open_volume(&sim.context(), &meta, &OneKey, &attached, deadline).unwrap();
//! assert_eq!(opened.guest_path().to_str(), Some("/dev/mapper/crypt-sdb"));
//! assert_eq!(sim.header("sdb").as_deref(), Some("luks2")); // formatted on first use
//! close_volume(&sim.context(), &opened, deadline).unwrap();
//! assert!(sim.mappings().is_empty());
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use super::{args, Tools};
use crate::testing::{FakeHost, FakeRunner};
use crate::{Command, CommandOutput, HostContext};

/// The data offset of a LUKS1 header cryptsetup writes by default (2 MiB).
pub const LUKS1_OFFSET: u64 = 2 << 20;
/// The data offset of a LUKS2 header cryptsetup writes by default (16 MiB).
pub const LUKS2_OFFSET: u64 = 16 << 20;

#[derive(Debug, Clone)]
struct Header {
    /// `luks1` or `luks2`.
    version: String,
    passphrase: String,
    cipher: Option<String>,
    key_size: Option<String>,
}

#[derive(Default)]
struct State {
    /// LUKS headers by the raw device's identity ([`Tools::identity`]): what is on a
    /// volume stays with the volume when it comes back under another kernel name.
    headers: HashMap<String, Header>,
    /// What `blkid` finds on a device without a header, as `KEY=value` lines, by
    /// identity.
    signatures: HashMap<String, String>,
    /// Open mappings: (name, dm, raw kernel name, passphrase it was opened with).
    mappings: Vec<(String, String, String, String)>,
    /// The next open or create makes its mapping and then fails with this exit code (a
    /// program killed after the kernel made the mapping).
    fail_after_mapping: Option<i32>,
    /// Every `luksFormat` run, by device.
    formats: Vec<String>,
    /// Disks added.
    disks: u32,
}

/// The simulated `cryptsetup` and `blkid`. Cloning shares the state.
#[derive(Clone)]
pub struct CryptSim {
    /// The host tree the simulated tools change.
    pub fake: FakeHost,
    /// The runner the simulated tools answer on; it records every command.
    pub runner: Arc<FakeRunner>,
    tools: Tools<State>,
}

impl Default for CryptSim {
    fn default() -> Self {
        Self::new()
    }
}

impl CryptSim {
    /// A host of its own with `cryptsetup` and `blkid`, and no disk.
    pub fn new() -> Self {
        Self::on(&FakeHost::new(), &Arc::new(FakeRunner::new()))
    }

    /// `cryptsetup` and `blkid` on another simulator's host and runner (their rules are
    /// added to the runner).
    pub fn on(fake: &FakeHost, runner: &Arc<FakeRunner>) -> Self {
        let sim = CryptSim {
            fake: fake.clone(),
            runner: runner.clone(),
            tools: Tools::new(fake.clone(), State::default()),
        };
        sim.tools
            .answer(&sim.runner, "cryptsetup", &[], |t, c| t.cryptsetup(c));
        sim.tools
            .answer(&sim.runner, "blkid", &[], |t, c| t.blkid(c));
        sim
    }

    /// Adds a blank block device `name` (e.g. `sdb`) of `size` bytes.
    pub fn add_disk(&self, name: &str, size: u64) {
        let n = {
            let mut st = self.tools.state();
            st.disks += 1;
            st.disks
        };
        self.fake.add_block(name, size, &format!("8:{}", 16 * n));
    }

    /// Makes `blkid` find this on device `kernel` (`KEY=value` lines of `blkid -o export`,
    /// e.g. `TYPE=ext4`), as a filesystem or partition table would show; empty text wipes
    /// it.
    pub fn set_signature(&self, kernel: &str, export: &str) {
        let id = self.tools.identity(kernel);
        if export.is_empty() {
            self.tools.state().signatures.remove(&id);
        } else {
            self.tools.state().signatures.insert(id, export.into());
        }
    }

    /// Writes a LUKS header (`luks1`, `luks2`) with `passphrase` on device `kernel`, as
    /// another host (os-brick) formatted it.
    pub fn put_header(&self, kernel: &str, version: &str, passphrase: &str) {
        let id = self.tools.identity(kernel);
        self.tools.state().headers.insert(
            id,
            Header {
                version: version.into(),
                passphrase: passphrase.into(),
                cipher: None,
                key_size: None,
            },
        );
    }

    /// The LUKS version of the header on device `kernel`, if it has one.
    pub fn header(&self, kernel: &str) -> Option<String> {
        let id = self.tools.identity(kernel);
        self.tools
            .state()
            .headers
            .get(&id)
            .map(|h| h.version.clone())
    }

    /// The passphrase, cipher and key size the header on `kernel` was made with.
    pub fn header_params(&self, kernel: &str) -> Option<(String, Option<String>, Option<String>)> {
        let id = self.tools.identity(kernel);
        self.tools
            .state()
            .headers
            .get(&id)
            .map(|h| (h.passphrase.clone(), h.cipher.clone(), h.key_size.clone()))
    }

    /// Every device `luksFormat` ran on, in order.
    pub fn formats(&self) -> Vec<String> {
        self.tools.state().formats.clone()
    }

    /// Every open mapping, as `(name, dm-N, raw device)`.
    pub fn mappings(&self) -> Vec<(String, String, String)> {
        self.tools
            .state()
            .mappings
            .iter()
            .map(|m| (m.0.clone(), m.1.clone(), m.2.clone()))
            .collect()
    }

    /// The passphrase the mapping `name` was opened with (what a plain mapping decrypts
    /// with).
    pub fn opened_with(&self, name: &str) -> Option<String> {
        self.tools
            .state()
            .mappings
            .iter()
            .find(|m| m.0 == name)
            .map(|m| m.3.clone())
    }

    /// Opens a mapping `name` on `kernel` of cryptsetup type `ty` (`LUKS1`, `LUKS2`,
    /// `PLAIN`) directly, as another tool (os-brick) would have; returns its `dm-N`.
    pub fn open_mapping(&self, name: &str, kernel: &str, ty: &str) -> String {
        self.tools.make_mapping(name, kernel, ty, "")
    }

    /// The next `luksOpen` or `create` makes its mapping and then fails with exit `code`.
    pub fn fail_after_mapping(&self, code: i32) {
        self.tools.state().fail_after_mapping = Some(code);
    }

    /// A context on the simulated host.
    pub fn context(&self) -> HostContext {
        super::context(&self.fake, &self.runner)
    }
}

fn value_after(a: &[String], flag: &str) -> Option<String> {
    a.iter()
        .position(|x| x == flag)
        .and_then(|i| a.get(i + 1).cloned())
}

/// The words that are neither options nor their values.
fn positionals(a: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < a.len() {
        let w = &a[i];
        if matches!(w.as_str(), "--cipher" | "--key-size" | "--type") {
            i += 2;
            continue;
        }
        if !w.starts_with('-') {
            out.push(w.clone());
        }
        i += 1;
    }
    out
}

fn kernel_of(dev: &str) -> String {
    dev.rsplit('/').next().unwrap_or_default().to_string()
}

impl Tools<State> {
    /// What identifies the volume behind block device `kernel`: its SCSI `wwid`, NVMe
    /// namespace `wwid`/`uuid` or dm `uuid` where sysfs has one, else the kernel name.
    fn identity(&self, kernel: &str) -> String {
        for attr in ["device/wwid", "wwid", "uuid", "dm/uuid"] {
            let p = self.root().join(format!("sys/block/{kernel}/{attr}"));
            if let Ok(v) = std::fs::read_to_string(p) {
                if !v.trim().is_empty() {
                    return v.trim().to_string();
                }
            }
        }
        format!("dev:{kernel}")
    }

    fn size_of(&self, kernel: &str) -> u64 {
        std::fs::read_to_string(self.root().join(format!("sys/block/{kernel}/size")))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 512
    }

    fn make_mapping(&self, name: &str, kernel: &str, ty: &str, passphrase: &str) -> String {
        let offset = match ty {
            "LUKS1" => LUKS1_OFFSET,
            "LUKS2" => LUKS2_OFFSET,
            _ => 0,
        };
        let size = self.size_of(kernel).saturating_sub(offset);
        let uuid = match ty {
            "PLAIN" => format!("CRYPT-PLAIN-{name}"),
            t => format!("CRYPT-{t}-0123456789abcdef0123456789abcdef-{name}"),
        };
        let dm = self.fake.add_dm_device(name, &uuid, &[kernel], size);
        self.state()
            .mappings
            .push((name.into(), dm.clone(), kernel.into(), passphrase.into()));
        dm
    }

    fn active(&self, name: &str) -> Option<(String, String)> {
        self.state()
            .mappings
            .iter()
            .find(|m| m.0 == name)
            .map(|m| (m.1.clone(), m.2.clone()))
    }

    fn has_holders(&self, kernel: &str) -> bool {
        std::fs::read_dir(self.root().join(format!("sys/block/{kernel}/holders")))
            .map(|mut rd| rd.next().is_some())
            .unwrap_or(false)
    }

    fn open(&self, name: &str, kernel: &str, ty: &str, passphrase: &str) -> CommandOutput {
        if self.active(name).is_some() {
            return CommandOutput::exit(5, format!("Device {name} already exists.\n"));
        }
        self.make_mapping(name, kernel, ty, passphrase);
        match self.state().fail_after_mapping.take() {
            Some(code) => CommandOutput::exit(code, "simulated failure after the mapping\n"),
            None => CommandOutput::ok(""),
        }
    }

    fn cryptsetup(&self, c: &Command) -> CommandOutput {
        let a = args(c);
        let stdin = c.stdin().map(|s| s.expose().to_string());
        let pos = positionals(&a);
        let verb = pos.first().cloned().unwrap_or_default();
        match verb.as_str() {
            "luksOpen" | "open" => {
                let (Some(dev), Some(name)) = (pos.get(1), pos.get(2)) else {
                    return CommandOutput::exit(1, "Command requires device and mapped name.\n");
                };
                let kernel = kernel_of(dev);
                let id = self.identity(&kernel);
                let Some(h) = self.state().headers.get(&id).cloned() else {
                    return CommandOutput::exit(
                        1,
                        format!("Device {dev} is not a valid LUKS device.\n"),
                    );
                };
                if stdin.as_deref() != Some(h.passphrase.as_str()) {
                    return CommandOutput::exit(2, "No key available with this passphrase.\n");
                }
                let ty = if h.version == "luks2" {
                    "LUKS2"
                } else {
                    "LUKS1"
                };
                self.open(name, &kernel, ty, &h.passphrase)
            }
            "isLuks" => {
                let dev = pos.get(1).cloned().unwrap_or_default();
                let id = self.identity(&kernel_of(&dev));
                if self.state().headers.contains_key(&id) {
                    CommandOutput::ok("")
                } else {
                    CommandOutput::exit(1, format!("Device {dev} is not a valid LUKS device.\n"))
                }
            }
            "luksFormat" => {
                let Some(dev) = pos.get(1) else {
                    return CommandOutput::exit(1, "Command requires device as argument.\n");
                };
                let kernel = kernel_of(dev);
                if !a.contains(&"--batch-mode".to_string()) {
                    return CommandOutput::exit(1, "Operation aborted.\n");
                }
                if self.has_holders(&kernel) {
                    return CommandOutput::exit(5, format!("Cannot format device {dev} in use.\n"));
                }
                let Some(pass) = stdin else {
                    return CommandOutput::exit(1, "Nothing to read on input.\n");
                };
                let version = match value_after(&a, "--type").as_deref() {
                    Some("luks2") | None => "luks2",
                    Some("luks1") | Some("luks") => "luks1",
                    Some(other) => {
                        return CommandOutput::exit(1, format!("Unknown LUKS type {other}.\n"))
                    }
                };
                let id = self.identity(&kernel);
                let mut st = self.state();
                st.signatures.remove(&id);
                st.formats.push(kernel);
                st.headers.insert(
                    id,
                    Header {
                        version: version.into(),
                        passphrase: pass,
                        cipher: value_after(&a, "--cipher"),
                        key_size: value_after(&a, "--key-size"),
                    },
                );
                CommandOutput::ok("")
            }
            "create" => {
                let (Some(name), Some(dev)) = (pos.get(1), pos.get(2)) else {
                    return CommandOutput::exit(1, "Command requires device and mapped name.\n");
                };
                let Some(pass) = stdin else {
                    return CommandOutput::exit(1, "Nothing to read on input.\n");
                };
                self.open(name, &kernel_of(dev), "PLAIN", &pass)
            }
            "luksClose" | "remove" | "close" => {
                let name = pos.get(1).cloned().unwrap_or_default();
                let Some((dm, _)) = self.active(&name) else {
                    return CommandOutput::exit(4, format!("Device {name} is not active.\n"));
                };
                if self.has_holders(&dm) {
                    return CommandOutput::exit(5, format!("Device {name} is still in use.\n"));
                }
                self.fake.remove_dm_device(&dm);
                self.state().mappings.retain(|m| m.0 != name);
                CommandOutput::ok("")
            }
            "resize" => {
                let name = pos.get(1).cloned().unwrap_or_default();
                let Some((dm, kernel)) = self.active(&name) else {
                    return CommandOutput::exit(4, format!("Device {name} is not active.\n"));
                };
                let id = self.identity(&kernel);
                let h = self.state().headers.get(&id).cloned();
                let offset = match h.as_ref().map(|h| h.version.as_str()) {
                    Some("luks1") => LUKS1_OFFSET,
                    Some(_) => LUKS2_OFFSET,
                    None => 0,
                };
                if let Some(h) = &h {
                    // LUKS2 without the volume key in the keyring asks for the passphrase.
                    if h.version == "luks2" && stdin.as_deref() != Some(h.passphrase.as_str()) {
                        return CommandOutput::exit(2, "No key available with this passphrase.\n");
                    }
                }
                let size = self.size_of(&kernel).saturating_sub(offset);
                self.fake.set_block_size(&dm, size);
                CommandOutput::ok("")
            }
            "status" => {
                let name = pos.get(1).cloned().unwrap_or_default();
                match self.active(&name) {
                    Some((dm, kernel)) => CommandOutput::ok(format!(
                        "/dev/mapper/{name} is active.\n  type:    LUKS\n  device:  /dev/{kernel}\n  dm:      {dm}\n"
                    )),
                    None => CommandOutput::exit(4, format!("/dev/mapper/{name} is inactive.\n")),
                }
            }
            _ => CommandOutput::exit(1, format!("Unknown action {verb}.\n")),
        }
    }

    fn blkid(&self, c: &Command) -> CommandOutput {
        let a = args(c);
        let Some(dev) = a.last().cloned() else {
            return CommandOutput::exit(4, "usage\n");
        };
        let id = self.identity(&kernel_of(&dev));
        let st = self.state();
        if let Some(h) = st.headers.get(&id) {
            let version = if h.version == "luks2" { 2 } else { 1 };
            return CommandOutput::ok(format!(
                "DEVNAME={dev}\nUUID=01234567-89ab-cdef-0123-456789abcdef\nVERSION={version}\nTYPE=crypto_LUKS\nUSAGE=crypto\n"
            ));
        }
        match st.signatures.get(&id) {
            Some(s) => CommandOutput::ok(format!("DEVNAME={dev}\n{s}\n")),
            None => CommandOutput::exit(2, ""),
        }
    }
}
