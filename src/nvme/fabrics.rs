//! The kernel's NVMe-oF interface, used the way nvme-cli (libnvme) uses it, with no process:
//! a connect is the option string written to `/dev/nvme-fabrics`, answered on the same open
//! file with the new controller's `instance=N,cntlid=M`; a disconnect is `1` written to the
//! controller's `delete_controller` attribute.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::libc;

use crate::connector::NvmeOptions;
use crate::error::{Error, Result};
use crate::model::nvme::{Nqn, NvmePortal};
use crate::platform::cancel;
use crate::platform::cmd::{Command, CommandRunner};
use crate::platform::host::Host;

/// The fabrics control device, under /dev.
pub const FABRICS_DEVICE: &str = "nvme-fabrics";

/// The module that makes [`FABRICS_DEVICE`]. The transport's module (`nvme-tcp`,
/// `nvme-rdma`) the kernel loads by itself at the first connect over it.
pub const FABRICS_MODULE: &str = "nvme-fabrics";

/// The longest host or subsystem NQN the kernel takes (`NVMF_NQN_SIZE`).
const NQN_MAX: usize = 223;

/// How a connect ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// The kernel made this controller (`nvmeN`).
    Connected(String),
    /// One already existed for this subsystem, portal and host (`EALREADY`).
    AlreadyConnected,
}

/// Arguments of a fabrics connect.
#[derive(Debug, Clone)]
pub struct ConnectArgs<'a> {
    /// The subsystem.
    pub nqn: &'a Nqn,
    /// The portal.
    pub portal: &'a NvmePortal,
    /// The host NQN.
    pub hostnqn: &'a str,
    /// The host id.
    pub hostid: &'a str,
    /// How the kernel rides out a lost connection: the controller-loss timeout, the
    /// reconnect delay and the fast I/O fail timeout.
    pub recovery: &'a NvmeOptions,
}

impl ConnectArgs<'_> {
    /// The portal and subsystem, for errors and logs.
    fn target(&self) -> String {
        format!("{} {}", self.portal, self.nqn)
    }
}

/// What the kernel answers a connect with: the new controller's instance (`nvme<instance>`)
/// and controller id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FabricsAnswer {
    /// The controller's instance number: it is `nvme<instance>`.
    pub instance: u32,
    /// The controller id the target gave it.
    pub cntlid: u16,
}

impl FabricsAnswer {
    /// The controller's kernel name, `nvme<instance>`.
    pub fn controller(&self) -> String {
        format!("nvme{}", self.instance)
    }
}

/// Parses what `/dev/nvme-fabrics` answers after a connect: `instance=N,cntlid=M` (a line;
/// fields split at `,` and newlines, as libnvme reads them). Kernels that answer a read with
/// no connect behind it say `instance=-1,cntlid=-1,...`: no controller, an error here.
pub fn parse_answer(text: &str) -> std::result::Result<FabricsAnswer, String> {
    let (mut instance, mut cntlid) = (None, None);
    for field in text.split([',', '\n']).filter(|f| !f.is_empty()) {
        let Some((k, v)) = field.split_once('=') else {
            continue;
        };
        let slot = match k {
            "instance" => &mut instance,
            "cntlid" => &mut cntlid,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(v);
        }
    }
    let instance = instance.ok_or_else(|| format!("no instance in {text:?}"))?;
    let instance: u32 = instance
        .parse()
        .map_err(|_| format!("instance {instance:?} names no controller"))?;
    let cntlid = cntlid.ok_or_else(|| format!("no cntlid in {text:?}"))?;
    let cntlid: u16 = cntlid
        .parse()
        .map_err(|_| format!("cntlid {cntlid:?} is not a controller id"))?;
    Ok(FabricsAnswer { instance, cntlid })
}

/// Checks a value spliced into the option string: the kernel splits options at `,` and
/// newlines and each at its first `=`, so none of those (nor whitespace or a control
/// character) may be in a value, or it would carry options of its own.
fn check_value(option: &str, value: &str) -> Result<()> {
    let bad = |reason: String| Error::InvalidArgument {
        name: option.to_string(),
        reason,
    };
    if value.is_empty() {
        return Err(bad("empty".into()));
    }
    if let Some(c) = value
        .chars()
        .find(|c| matches!(c, ',' | '=') || c.is_whitespace() || c.is_control())
    {
        return Err(bad(format!(
            "{value:?}: {c:?} cannot be in an NVMe-oF connect option"
        )));
    }
    Ok(())
}

fn check_nqn(option: &str, value: &str) -> Result<()> {
    check_value(option, value)?;
    if value.len() > NQN_MAX {
        return Err(Error::InvalidArgument {
            name: option.into(),
            reason: format!("{} bytes long, the kernel takes {NQN_MAX}", value.len()),
        });
    }
    Ok(())
}

/// The transport address to connect to: an IP address as given (an IPv6 one may carry its
/// `%zone`, which the kernel reads), a host name resolved to its first address (libnvme
/// resolves names the same way; the kernel takes addresses only).
fn transport_address(portal: &NvmePortal) -> Result<String> {
    let addr = portal.address.as_str();
    check_value("traddr", addr)?;
    let ip_part = addr.split_once('%').map_or(addr, |(a, _)| a);
    if ip_part.parse::<IpAddr>().is_ok() {
        return Ok(addr.to_string());
    }
    let resolved = (addr, portal.port)
        .to_socket_addrs()
        .map_err(|e| Error::InvalidArgument {
            name: "traddr".into(),
            reason: format!("{addr:?} does not resolve: {e}"),
        })?
        .next()
        .ok_or_else(|| Error::InvalidArgument {
            name: "traddr".into(),
            reason: format!("{addr:?} resolves to no address"),
        })?;
    tracing::debug!(name = addr, address = %resolved.ip(), "resolved the portal's host name");
    Ok(resolved.ip().to_string())
}

/// The option string of a connect, in libnvme's order with nvme-cli's defaults for what
/// hostbrick does not set: `nqn=..,transport=..,traddr=..,trsvcid=..,hostnqn=..,hostid=..,
/// reconnect_delay=..,ctrl_loss_tmo=..` and `,fast_io_fail_tmo=..` when one is set
/// (`ctrl_loss_tmo=-1`: never give the controller up). Every value is checked first
/// ([`Error::InvalidArgument`] naming the option): no `,`, `=`, whitespace or control
/// character, NQNs at most 223 bytes, the host id a UUID (the kernel's `uuid_parse` form),
/// the timeouts as [`NvmeOptions::validate`] says.
pub fn connect_options(a: &ConnectArgs<'_>) -> Result<String> {
    check_nqn("nqn", a.nqn.as_str())?;
    check_nqn("hostnqn", a.hostnqn)?;
    if !is_uuid(a.hostid) {
        return Err(Error::InvalidArgument {
            name: "hostid".into(),
            reason: format!("{:?} is not a UUID", a.hostid),
        });
    }
    let (delay, loss, fast) = a.recovery.kernel_values()?;
    let traddr = transport_address(a.portal)?;
    let mut s = format!(
        "nqn={},transport={},traddr={traddr},trsvcid={},hostnqn={},hostid={},reconnect_delay={delay},ctrl_loss_tmo={loss}",
        a.nqn,
        a.portal.transport.as_str(),
        a.portal.port,
        a.hostnqn,
        a.hostid,
    );
    if let Some(fast) = fast {
        s.push_str(&format!(",fast_io_fail_tmo={fast}"));
    }
    Ok(s)
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Makes the controller: [`connect_options`] written to `/dev/nvme-fabrics`, the kernel's
/// answer read back on the same file. `EALREADY` (a controller for the same subsystem,
/// portal and host exists) is [`ConnectOutcome::AlreadyConnected`]; any other refusal is an
/// [`Error::NvmeConnect`] with the kernel's errno. When the device is missing, the
/// `nvme-fabrics` module is loaded first (`modprobe`, the one command this may run).
///
/// # Deadline
///
/// The write blocks in the kernel until the controller is made or given up, and nothing
/// from here can cut it short: `deadline` only bounds the `modprobe`, and no connect starts
/// once it has passed. What bounds the write is the kernel's own limits, per queue: for TCP,
/// the connection (the socket makes one SYN retry: about 3 s to an address that does not
/// answer; at once for a refused port), 10 s for the target's answer to the initial
/// connection request, then the fabrics Connect and Identify commands, each within the
/// admin timeout (`nvme_core.admin_timeout`, 60 s by default). A killed `nvme connect` is no
/// shorter: the process stays in the same write until the kernel returns.
///
/// # Cancellation
///
/// For the same reason the operation's cancel cannot stop the write: it is checked before
/// the write starts ([`Error::WaitCancelled`]), and a write under way runs to the kernel's
/// answer; the connect's undo then drops the controller it made.
pub fn connect(
    runner: &dyn CommandRunner,
    host: &Host,
    a: &ConnectArgs<'_>,
    deadline: Instant,
) -> Result<ConnectOutcome> {
    let request = connect_options(a)?;
    let dev = host.dev(FABRICS_DEVICE);
    if !dev.exists() {
        load_module(runner, deadline)?;
    }
    if Instant::now() >= deadline {
        return Err(Error::Timeout {
            what: format!("a connect to {}", a.target()),
            waited: Duration::ZERO,
        });
    }
    cancel::check(|| format!("a connect to {}", a.target()))?;
    tracing::debug!(target_nqn = %a.nqn, portal = %a.portal, "writing the connect to {}", dev.display());
    match host.exchange(&dev, &request)? {
        Ok(answer) => {
            let answer = parse_answer(&answer).map_err(|reason| Error::UnexpectedContent {
                path: public(&dev),
                reason,
            })?;
            Ok(ConnectOutcome::Connected(answer.controller()))
        }
        Err(e) if e.raw_os_error() == Some(libc::EALREADY) => Ok(ConnectOutcome::AlreadyConnected),
        Err(source) => Err(Error::NvmeConnect {
            target: a.target(),
            source,
        }),
    }
}

fn public(dev: &std::path::Path) -> PathBuf {
    PathBuf::from("/dev").join(dev.file_name().unwrap_or_default())
}

/// `modprobe nvme-fabrics`, as systemd's `nvmf-autoconnect` and newer nvme-cli do when
/// `/dev/nvme-fabrics` is missing.
fn load_module(runner: &dyn CommandRunner, deadline: Instant) -> Result<()> {
    tracing::info!(module = FABRICS_MODULE, "loading the NVMe-oF module");
    runner.run_ok(
        &Command::new("modprobe")
            .arg(FABRICS_MODULE)
            .deadline(deadline),
        &[],
    )?;
    Ok(())
}

/// Drops controller `name`: `1` written to its `delete_controller` attribute, which
/// returns once the kernel has removed it (with its namespaces' paths). A controller that
/// is already gone is fine.
pub fn delete_controller(host: &Host, name: &str) -> Result<()> {
    match host.write_attr(
        &host.sys(format!("class/nvme/{name}/delete_controller")),
        "1",
    ) {
        Err(e) if e.is_not_found() => {
            tracing::debug!(controller = name, "controller already gone");
            Ok(())
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::ControllerLoss;
    use crate::model::nvme::NvmeTransport;

    const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:0f8fad5b-d9cb-469f-a165-70867728950e";
    const HOSTID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

    fn portal(address: &str) -> NvmePortal {
        NvmePortal {
            address: address.into(),
            port: 4420,
            transport: NvmeTransport::Tcp,
        }
    }

    #[test]
    fn answers() {
        let a = parse_answer("instance=3,cntlid=1\n").unwrap();
        assert_eq!(
            (a.instance, a.cntlid, a.controller()),
            (3, 1, "nvme3".into())
        );
        assert_eq!(
            parse_answer("cntlid=65535,instance=0").unwrap(),
            FabricsAnswer {
                instance: 0,
                cntlid: 65535
            }
        );
        for bad in [
            "",
            "\n",
            "instance=-1,cntlid=-1,transport=%s,nqn=%s\n",
            "instance=3\n",
            "cntlid=1\n",
            "instance=x,cntlid=1",
            "instance=1,cntlid=65536",
            "instance= 1,cntlid=1",
        ] {
            assert!(parse_answer(bad).is_err(), "{bad:?}");
        }
    }

    /// The default recovery options.
    static DEFAULTS: NvmeOptions = NvmeOptions::new();

    /// The arguments of a connect to `nqn` through `portal` with the test host's identity
    /// and the default recovery options.
    fn args<'a>(nqn: &'a Nqn, portal: &'a NvmePortal) -> ConnectArgs<'a> {
        ConnectArgs {
            nqn,
            portal,
            hostnqn: HOSTNQN,
            hostid: HOSTID,
            recovery: &DEFAULTS,
        }
    }

    #[test]
    fn options_in_libnvme_order() {
        let nqn: Nqn = "nqn.2014-08.org.hostbrick:vm1".parse().unwrap();
        let p = portal("127.0.0.1");
        let a = args(&nqn, &p);
        assert_eq!(
            connect_options(&a).unwrap(),
            format!("nqn=nqn.2014-08.org.hostbrick:vm1,transport=tcp,traddr=127.0.0.1,trsvcid=4420,hostnqn={HOSTNQN},hostid={HOSTID},reconnect_delay=10,ctrl_loss_tmo=-1")
        );
        let v6 = portal("fe80::1%eth0");
        assert!(connect_options(&ConnectArgs {
            portal: &v6,
            ..a.clone()
        })
        .unwrap()
        .contains(",traddr=fe80::1%eth0,"));
        let rdma = NvmePortal {
            transport: NvmeTransport::Rdma,
            ..portal("192.0.2.1")
        };
        assert!(connect_options(&ConnectArgs {
            portal: &rdma,
            ..a.clone()
        })
        .unwrap()
        .contains(",transport=rdma,traddr=192.0.2.1,"));
        let local = portal("localhost");
        let s = connect_options(&ConnectArgs {
            portal: &local,
            ..a.clone()
        })
        .unwrap();
        assert!(
            s.contains(",traddr=127.0.0.1,") || s.contains(",traddr=::1,"),
            "a host name is resolved: {s}"
        );
    }

    #[test]
    fn no_value_carries_options_of_its_own() {
        let nqn: Nqn = "nqn.2014-08.org.hostbrick:vm1".parse().unwrap();
        let ok = portal("127.0.0.1");
        let a = args(&nqn, &ok);
        let name = |r: Result<String>| match r {
            Err(Error::InvalidArgument { name, .. }) => name,
            other => panic!("{other:?}"),
        };
        for addr in [
            "127.0.0.1,hostnqn=nqn.evil",
            "127.0.0.1=1",
            "127.0.0.1\nnqn=x",
            "127.0.0.1 ",
            "",
        ] {
            let p = portal(addr);
            assert_eq!(
                name(connect_options(&ConnectArgs {
                    portal: &p,
                    ..a.clone()
                })),
                "traddr",
                "{addr:?}"
            );
        }
        for hostnqn in [
            "nqn.2014-08.org.x:h,duplicate_connect",
            "nqn.2014-08.org.x:h=1",
            "nqn.2014-08.org.x:h\n",
            "",
        ] {
            assert_eq!(
                name(connect_options(&ConnectArgs {
                    hostnqn,
                    ..a.clone()
                })),
                "hostnqn",
                "{hostnqn:?}"
            );
        }
        let long = format!("nqn.2014-08.org.x:{}", "a".repeat(NQN_MAX));
        assert_eq!(
            name(connect_options(&ConnectArgs {
                hostnqn: &long,
                ..a.clone()
            })),
            "hostnqn"
        );
        for hostid in [
            "0f8fad5b-d9cb-469f-a165-70867728950e,tos=1",
            "0f8fad5bd9cb469fa16570867728950e",
            "host-1",
        ] {
            assert_eq!(
                name(connect_options(&ConnectArgs {
                    hostid,
                    ..a.clone()
                })),
                "hostid",
                "{hostid:?}"
            );
        }
        for (recovery, option) in [
            (
                NvmeOptions::new()
                    .ctrl_loss_timeout(ControllerLoss::After(Duration::from_secs(1 << 40))),
                "ctrl_loss_tmo",
            ),
            (
                NvmeOptions::new()
                    .ctrl_loss_timeout(ControllerLoss::After(Duration::from_millis(1500))),
                "ctrl_loss_tmo",
            ),
            (
                NvmeOptions::new().reconnect_delay(Duration::ZERO),
                "reconnect_delay",
            ),
            (
                NvmeOptions::new().reconnect_delay(Duration::from_millis(500)),
                "reconnect_delay",
            ),
            (
                NvmeOptions::new().reconnect_delay(Duration::from_secs(1 << 31)),
                "reconnect_delay",
            ),
            (
                NvmeOptions::new().fast_io_fail_timeout(Duration::from_secs(1 << 31)),
                "fast_io_fail_tmo",
            ),
            (
                NvmeOptions::new()
                    .ctrl_loss_timeout(ControllerLoss::After(Duration::from_secs(30)))
                    .fast_io_fail_timeout(Duration::from_secs(31)),
                "fast_io_fail_tmo",
            ),
        ] {
            assert_eq!(
                name(connect_options(&ConnectArgs {
                    recovery: &recovery,
                    ..a.clone()
                })),
                option,
                "{recovery:?}"
            );
            assert!(recovery.validate().is_err(), "{recovery:?}");
        }
    }

    /// The recovery options as the kernel takes them: -1 for a controller never given up,
    /// whole seconds, the fast I/O fail timeout only when one is set.
    #[test]
    fn recovery_options() {
        let nqn: Nqn = "nqn.2014-08.org.hostbrick:vm1".parse().unwrap();
        let p = portal("127.0.0.1");
        let tail = |recovery: &NvmeOptions| {
            let s = connect_options(&ConnectArgs {
                recovery,
                ..args(&nqn, &p)
            })
            .unwrap();
            let at = s.find(",reconnect_delay=").expect(&s);
            s[at + 1..].to_string()
        };
        let defaults = NvmeOptions::default();
        assert_eq!(defaults.ctrl_loss_timeout, ControllerLoss::Never);
        assert_eq!(tail(&defaults), "reconnect_delay=10,ctrl_loss_tmo=-1");
        assert_eq!(
            tail(
                &NvmeOptions::new()
                    .ctrl_loss_timeout(ControllerLoss::After(Duration::from_secs(600)))
                    .reconnect_delay(Duration::from_secs(2))
                    .fast_io_fail_timeout(Duration::from_secs(600))
            ),
            "reconnect_delay=2,ctrl_loss_tmo=600,fast_io_fail_tmo=600"
        );
        assert_eq!(
            tail(
                &NvmeOptions::new()
                    .ctrl_loss_timeout(ControllerLoss::After(Duration::ZERO))
                    .reconnect_delay(Duration::from_secs(1))
                    .fast_io_fail_timeout(Duration::ZERO)
            ),
            "reconnect_delay=1,ctrl_loss_tmo=0,fast_io_fail_tmo=0"
        );
        // Never giving up takes any fast I/O fail timeout.
        assert_eq!(
            tail(&NvmeOptions::new().fast_io_fail_timeout(Duration::from_secs(i32::MAX as u64))),
            format!(
                "reconnect_delay=10,ctrl_loss_tmo=-1,fast_io_fail_tmo={}",
                i32::MAX
            )
        );
    }

    /// Records the commands it is asked to run; `modprobe` makes the device.
    #[derive(Debug)]
    struct Modprobe(std::sync::Mutex<Vec<String>>, PathBuf);

    impl CommandRunner for Modprobe {
        fn run(&self, cmd: &Command) -> Result<crate::platform::cmd::CommandOutput> {
            self.0.lock().unwrap().push(cmd.to_string());
            std::fs::write(&self.1, "").unwrap();
            Ok(crate::platform::cmd::CommandOutput::ok(""))
        }
    }

    #[test]
    fn connect_outcomes() {
        let d = tempfile::tempdir().unwrap();
        let dev = d.path().join("dev/nvme-fabrics");
        std::fs::create_dir_all(dev.parent().unwrap()).unwrap();
        let host = Host::with_root(d.path()).with_exchange_hook(std::sync::Arc::new(|_, req| {
            let errno = |e| Err(std::io::Error::from_raw_os_error(e));
            match req.split(',').nth(2) {
                Some("traddr=127.0.0.1") => Ok("instance=4,cntlid=2\n".into()),
                Some("traddr=127.0.0.2") => errno(libc::EALREADY),
                Some("traddr=127.0.0.3") => errno(libc::ECONNREFUSED),
                _ => Ok("instance=-1,cntlid=-1\n".into()),
            }
        }));
        let runner = Modprobe(Default::default(), dev.clone());
        let nqn: Nqn = "nqn.2014-08.org.hostbrick:vm1".parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let run = |addr: &str| {
            let p = portal(addr);
            connect(&runner, &host, &args(&nqn, &p), deadline)
        };
        // The module is loaded once, when the device is missing.
        assert_eq!(
            run("127.0.0.1").unwrap(),
            ConnectOutcome::Connected("nvme4".into())
        );
        assert_eq!(*runner.0.lock().unwrap(), ["modprobe nvme-fabrics"]);
        assert_eq!(run("127.0.0.2").unwrap(), ConnectOutcome::AlreadyConnected);
        match run("127.0.0.3").unwrap_err() {
            e @ Error::NvmeConnect { .. } => {
                assert_eq!(e.kind(), "nvme_connect");
                assert!(e.chain().contains("Connection refused"), "{}", e.chain());
                assert!(e
                    .chain()
                    .contains("tcp:127.0.0.3:4420 nqn.2014-08.org.hostbrick:vm1"));
            }
            other => panic!("{other:?}"),
        }
        match run("127.0.0.4").unwrap_err() {
            Error::UnexpectedContent { path, .. } => {
                assert_eq!(path, PathBuf::from("/dev/nvme-fabrics"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(runner.0.lock().unwrap().len(), 1);
        // Past the deadline no connect starts.
        let p = portal("127.0.0.1");
        let late = connect(&runner, &host, &args(&nqn, &p), Instant::now());
        assert!(matches!(late, Err(Error::Timeout { .. })), "{late:?}");
    }

    #[test]
    fn delete_controller_writes_the_attribute() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::with_root(d.path());
        delete_controller(&host, "nvme0").unwrap();
        let attr = d.path().join("sys/class/nvme/nvme1/delete_controller");
        std::fs::create_dir_all(attr.parent().unwrap()).unwrap();
        std::fs::write(&attr, "").unwrap();
        delete_controller(&host, "nvme1").unwrap();
        assert_eq!(std::fs::read_to_string(&attr).unwrap(), "1");
    }
}
