//! A simulated Ceph client on a fake host tree: `rbd map`/`showmapped`/`unmap`/`info` and
//! `rbd-nbd map`/`list-mapped`/`unmap`, answering as the real tools do. A map makes the
//! krbd (`/dev/rbdN`, `/sys/bus/rbd/devices`) or nbd (`/dev/nbdN`) device in the tree; the
//! simulated cluster needs user `cinder` with [`KEY`] in the keyring it is given.
//!
//! ```
//! use hostbrick::testing::sim::rbd::{rbd_info, RbdSim, KEY};
//! use hostbrick::testing::sim::MIB;
//! use hostbrick::{connector_for, DisconnectOptions, Protocol};
//!
//! let sim = RbdSim::new();
//! sim.add_image("volumes/vol1", 64 * MIB);
//! let c = connector_for(Protocol::Rbd, sim.options()).unwrap();
//! let ci = rbd_info("volumes/vol1", KEY);
//! let rec = c.connect_volume(&ci).unwrap();
//! assert_eq!(sim.mapped().len(), 1);
//! c.disconnect_volume(&ci, Some(&rec), DisconnectOptions::default()).unwrap();
//! assert!(sim.mapped().is_empty());
//! ```

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use super::{args, connection_info, Tools};
use crate::testing::{FakeHost, FakeRunner};
use crate::{Command, CommandOutput, ConnectionInfo, ConnectorOptions, HostContext};

/// The cephx key of user `cinder`, the only one the simulated cluster lets in.
pub const KEY: &str = "AQBx0AhmAAAAABAAsQ5cNn1zZXR0aW5nLWtleQ==";

#[derive(Default)]
struct State {
    /// (spec, size)
    images: Vec<(String, u64)>,
    /// (mapper program, spec, device)
    mapped: Vec<(String, String, String)>,
    /// keyring paths seen, with their mode and whether they held the key
    keyrings: Vec<(String, u32, bool)>,
}

/// The positional argument of an `rbd` command: the first after `--` when there is one
/// (options end there), else the word at `at`.
fn positional(a: &[String], at: usize) -> Option<String> {
    match a.iter().position(|x| x == "--") {
        Some(i) => a.get(i + 1).cloned(),
        None => a.get(at).cloned(),
    }
}

fn value_after(a: &[String], flag: &str) -> Option<String> {
    a.iter()
        .position(|x| x == flag)
        .and_then(|i| a.get(i + 1).cloned())
}

/// The simulated Ceph client: a fake host tree and a runner whose `rbd` and `rbd-nbd` act
/// on it. Cloning shares both.
#[derive(Clone)]
pub struct RbdSim {
    /// The host tree the simulated tools change.
    pub fake: FakeHost,
    /// The runner the simulated tools answer on; it records every command.
    pub runner: Arc<FakeRunner>,
    tools: Tools<State>,
}

impl Default for RbdSim {
    fn default() -> Self {
        Self::new()
    }
}

impl RbdSim {
    /// A host with the Ceph tools and no image.
    pub fn new() -> Self {
        let fake = FakeHost::new();
        let sim = RbdSim {
            fake: fake.clone(),
            runner: Arc::new(FakeRunner::new()),
            tools: Tools::new(fake, State::default()),
        };
        let (t, r) = (&sim.tools, &*sim.runner);
        t.answer(r, "rbd", &[], |t, c| t.rbd(c, "rbd"));
        t.answer(r, "rbd-nbd", &[], |t, c| t.rbd(c, "rbd-nbd"));
        sim
    }

    /// Adds image `spec` (`pool/image` or `pool/namespace/image`) of `size` bytes.
    pub fn add_image(&self, spec: &str, size: u64) {
        self.tools.state().images.push((spec.into(), size));
    }

    /// Grows (or shrinks) image `spec` to `size`; its mapped devices show it at once.
    pub fn resize(&self, spec: &str, size: u64) {
        for i in self.tools.state().images.iter_mut().filter(|i| i.0 == spec) {
            i.1 = size;
        }
        let devs: Vec<String> = self
            .tools
            .state()
            .mapped
            .iter()
            .filter(|m| m.1 == spec)
            .map(|m| m.2.clone())
            .collect();
        for d in devs {
            self.fake
                .set_block_size(d.trim_start_matches("/dev/"), size);
        }
    }

    /// Every mapping, as `(program, spec, device)`.
    pub fn mapped(&self) -> Vec<(String, String, String)> {
        self.tools.state().mapped.clone()
    }

    /// Every keyring a command was given, as `(path, mode, whether it held the key)`.
    pub fn keyrings(&self) -> Vec<(String, u32, bool)> {
        self.tools.state().keyrings.clone()
    }

    /// A context on the simulated host.
    pub fn context(&self) -> HostContext {
        super::context(&self.fake, &self.runner)
    }

    /// Connector options on the simulated host, with time limits short enough for tests
    /// (operations 5 s, scans 300 ms).
    pub fn options(&self) -> ConnectorOptions {
        super::options(
            &self.fake,
            &self.runner,
            Duration::from_secs(5),
            Duration::from_millis(300),
        )
    }
}

/// What the simulated tools answer.
impl Tools<State> {
    fn check_auth(&self, a: &[String]) -> bool {
        let Some(k) = value_after(a, "--keyring") else {
            return false;
        };
        let meta = std::fs::metadata(&k);
        let mode = meta.map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        let text = std::fs::read_to_string(&k).unwrap_or_default();
        let ok = text.contains(&format!("key = {KEY}"))
            && value_after(a, "--id").as_deref() == Some("cinder");
        self.state().keyrings.push((k, mode, ok));
        ok
    }

    fn rbd(&self, c: &Command, prog: &str) -> CommandOutput {
        let a = args(c);
        match a.first().map(String::as_str) {
            Some("map") => {
                // rbd-nbd knows no `--`: its spec is the word after `map`.
                let spec = if prog == "rbd" {
                    positional(&a, 1)
                } else {
                    a.get(1).cloned()
                };
                let Some(spec) = spec else {
                    return CommandOutput::exit(
                        22,
                        format!("{prog}: must specify image-or-snap-spec\n"),
                    );
                };
                if !self.check_auth(&a) {
                    return if prog == "rbd" {
                        CommandOutput::exit(1, "rbd: sysfs write failed\nrbd: couldn't connect to the cluster!\nrbd: map failed: (1) Operation not permitted\n")
                    } else {
                        CommandOutput::exit(
                            1,
                            "rbd-nbd: failed to connect to the cluster: (13) Permission denied\n",
                        )
                    };
                }
                let Some((_, size)) = self.state().images.iter().find(|i| i.0 == spec).cloned()
                else {
                    return CommandOutput::exit(
                        2,
                        "rbd: sysfs write failed\nrbd: map failed: (2) No such file or directory\n",
                    );
                };
                let n = self.state().mapped.iter().filter(|m| m.0 == prog).count();
                let name = if prog == "rbd" {
                    format!("rbd{n}")
                } else {
                    format!("nbd{n}")
                };
                let dev = format!("/dev/{name}");
                let root = self.root().to_path_buf();
                // What the kernel shows of a mapping: the krbd device under
                // /sys/bus/rbd/devices, an nbd device's daemon pid.
                let (pool, image) = spec.rsplit_once('/').unwrap();
                let extra: Vec<(String, String)> = if prog == "rbd" {
                    vec![
                        (format!("sys/bus/rbd/devices/{n}/pool"), format!("{pool}\n")),
                        (
                            format!("sys/bus/rbd/devices/{n}/name"),
                            format!("{image}\n"),
                        ),
                        (format!("sys/bus/rbd/devices/{n}/pool_ns"), "\n".into()),
                        (
                            format!("sys/bus/rbd/devices/{n}/current_snap"),
                            "-\n".into(),
                        ),
                    ]
                } else {
                    vec![(format!("sys/block/{name}/pid"), "3322\n".into())]
                };
                for (p, v) in [
                    (
                        format!("sys/block/{name}/size"),
                        format!("{}\n", size / 512),
                    ),
                    (format!("sys/block/{name}/dev"), "252:0\n".into()),
                ]
                .into_iter()
                .chain(extra)
                {
                    std::fs::create_dir_all(root.join(&p).parent().unwrap()).unwrap();
                    std::fs::write(root.join(&p), v).unwrap();
                }
                std::fs::write(root.join(format!("dev/{name}")), vec![0u8; 8192]).unwrap();
                if prog == "rbd" {
                    let link = root.join(format!("dev/rbd/{spec}"));
                    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
                    let depth = spec.matches('/').count() + 1;
                    // udev replaces whatever link was there.
                    let _ = std::fs::remove_file(&link);
                    std::os::unix::fs::symlink(format!("{}{name}", "../".repeat(depth)), &link)
                        .unwrap();
                }
                self.state().mapped.push((prog.into(), spec, dev.clone()));
                CommandOutput::ok(format!("{dev}\n"))
            }
            Some("showmapped") | Some("list-mapped") => {
                let key = if prog == "rbd" { "name" } else { "image" };
                let list: Vec<serde_json::Value> = self
                    .state()
                    .mapped
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.0 == prog)
                    .map(|(i, m)| {
                        let parts: Vec<&str> = m.1.split('/').collect();
                        let (pool, ns, image) = match parts[..] { [p, i] => (p, "", i), [p, n, i] => (p, n, i), _ => unreachable!() };
                        if prog == "rbd" {
                            serde_json::json!({"id": i.to_string(), "pool": pool, "namespace": ns, key: image, "snap": "-", "device": m.2})
                        } else {
                            serde_json::json!({"id": 3000 + i, "pool": pool, "namespace": ns, key: image, "snap": "", "device": m.2, "cookie": ""})
                        }
                    })
                    .collect();
                CommandOutput::ok(serde_json::to_string(&list).unwrap())
            }
            Some("unmap") => {
                let dev = a.last().cloned().unwrap();
                let mut st = self.state();
                let Some(pos) = st.mapped.iter().position(|m| m.2 == dev && m.0 == prog) else {
                    return CommandOutput::exit(22, format!("rbd: '{dev}' is not a block device\nrbd: unmap failed: (22) Invalid argument\n"));
                };
                let (_, spec, _) = st.mapped.remove(pos);
                drop(st);
                let name = dev.trim_start_matches("/dev/");
                let root = self.root();
                let _ = std::fs::remove_dir_all(root.join(format!("sys/block/{name}")));
                if let Some(n) = name.strip_prefix("rbd") {
                    let _ = std::fs::remove_dir_all(root.join(format!("sys/bus/rbd/devices/{n}")));
                }
                let _ = std::fs::remove_file(root.join(format!("dev/{name}")));
                let _ = std::fs::remove_file(root.join(format!("dev/rbd/{spec}")));
                CommandOutput::ok("")
            }
            Some("info") => {
                let spec = positional(&a, 3).unwrap_or_default();
                if !self.check_auth(&a) {
                    return CommandOutput::exit(1, "rbd: couldn't connect to the cluster!\n");
                }
                match self.state().images.iter().find(|i| i.0 == spec) {
                    Some((name, size)) => CommandOutput::ok(format!("{{\"name\":\"{name}\",\"id\":\"1\",\"size\":{size},\"objects\":16,\"order\":22}}\n")),
                    None => CommandOutput::exit(2, "rbd: error opening image: (2) No such file or directory\n"),
                }
            }
            _ => CommandOutput::exit(1, format!("{prog}: unsupported {a:?}\n")),
        }
    }
}

/// The `connection_info` of image `name` (`pool/image`) on a cluster that lets user
/// `cinder` in with `key`.
pub fn rbd_info(name: &str, key: &str) -> ConnectionInfo {
    connection_info(
        "rbd",
        serde_json::json!({
            "name": name, "hosts": ["127.0.0.1"], "ports": ["6789"], "cluster_name": "ceph",
            "auth_enabled": true, "auth_username": "cinder", "secret_type": "ceph",
            "secret_uuid": "457eb676-33da-42ec-9a8c-9293d545c337",
            "keyring": format!("[client.cinder]\n\tkey = {key}\n"), "volume_id": name.replace('/', "-"),
            "discard": true, "access_mode": "rw"
        }),
    )
}
