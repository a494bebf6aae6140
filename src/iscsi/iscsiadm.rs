//! The `iscsiadm` wrapper: building its argument vectors, classifying its exit codes, and
//! parsing its output (pure functions).

use std::str::FromStr;
use std::time::{Duration, Instant};

use super::records;
use crate::error::{Error, Result};
use crate::model::ids::{Iqn, Portal};
use crate::model::iscsi::{ChapCredentials, IscsiTarget};
use crate::platform::cancel;
use crate::platform::cmd::{Cancel, Command, CommandOutput, CommandRunner};
use crate::platform::host::Host;

/// The program.
pub const ISCSIADM: &str = "iscsiadm";

/// What an iscsiadm exit code means (open-iscsi `iscsi_err.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IscsiadmStatus {
    /// 0.
    Success,
    /// 15, `ISCSI_ERR_SESS_EXISTS`: success for a login.
    SessionExists,
    /// 21, `ISCSI_ERR_NO_OBJS_FOUND`: no records or no sessions; "nothing there".
    NothingThere,
    /// 24, `ISCSI_ERR_LOGIN_AUTH_FAILED`.
    AuthFailed,
    /// 6 (`ISCSI_ERR_IDBM`, the node database was busy) or 255 (iscsid unreachable):
    /// worth another try.
    Retryable,
    /// Anything else, or killed by a signal.
    Failed,
}

impl IscsiadmStatus {
    /// Classifies an exit code.
    pub fn from_code(code: Option<i32>) -> Self {
        match code {
            Some(0) => IscsiadmStatus::Success,
            Some(15) => IscsiadmStatus::SessionExists,
            Some(21) => IscsiadmStatus::NothingThere,
            Some(24) => IscsiadmStatus::AuthFailed,
            Some(6) | Some(255) => IscsiadmStatus::Retryable,
            _ => IscsiadmStatus::Failed,
        }
    }
}

/// One line of `iscsiadm -m session`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEntry {
    /// The transport (`tcp`, `iser`, ...).
    pub transport: String,
    /// The session id (`[N]`).
    pub sid: u32,
    /// The portal.
    pub portal: Portal,
    /// The target portal group tag (`-1` for none).
    pub tpgt: i32,
    /// The target.
    pub iqn: Iqn,
}

/// The portal group tag iscsiadm prints for a node record made with `--op new`, which
/// has none (`node.tpgt = -1`): `127.0.0.1:3260,-1 iqn...`.
pub const TPGT_NONE: i32 = -1;

/// Parses `iscsiadm -m session` output, e.g.
/// `tcp: [1] 127.0.0.1:3260,1 iqn.2003-01.org.linux-iscsi.t:t1 (non-flash)`.
/// Lines that are not session lines are skipped.
pub fn parse_sessions(out: &str) -> Vec<SessionEntry> {
    out.lines().filter_map(parse_session_line).collect()
}

fn parse_session_line(line: &str) -> Option<SessionEntry> {
    let mut words = line.split_whitespace();
    let transport = words.next()?.strip_suffix(':')?;
    let sid = words
        .next()?
        .strip_prefix('[')?
        .strip_suffix(']')?
        .parse()
        .ok()?;
    let (portal, tpgt) = parse_portal_tpgt(words.next()?)?;
    let iqn = Iqn::from_str(words.next()?).ok()?;
    Some(SessionEntry {
        transport: transport.to_string(),
        sid,
        portal,
        tpgt,
        iqn,
    })
}

/// One line of `iscsiadm -m node` or of sendtargets discovery output:
/// `127.0.0.1:3260,1 iqn.2003-01.org.linux-iscsi.t:t1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEntry {
    /// The portal.
    pub portal: Portal,
    /// The target portal group tag (`-1` for a record made with `--op new`).
    pub tpgt: i32,
    /// The target.
    pub iqn: Iqn,
}

/// Parses `iscsiadm -m node` / `iscsiadm -m discovery` output; other lines are skipped.
pub fn parse_nodes(out: &str) -> Vec<NodeEntry> {
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (portal, tpgt) = parse_portal_tpgt(words.next()?)?;
            let iqn = Iqn::from_str(words.next()?).ok()?;
            Some(NodeEntry { portal, tpgt, iqn })
        })
        .collect()
}

/// The targets sendtargets discovery at `discovery` recorded for `iface`, from
/// `iscsiadm -m discoverydb -o show -P 1` (the shape os-brick's `_get_discoverydb_portals`
/// reads), in the order printed:
///
/// ```text
/// SENDTARGETS:
/// DiscoveryAddress: 192.168.1.2,3260
/// Target: iqn.2004-04.com.qnap:ts-831x:iscsi.cinder-1
///     Portal: 192.168.1.3:3260,1
///         Iface Name: default
/// DiscoveryAddress: 192.168.1.38,3260
/// iSNS:
/// No targets found.
/// ```
///
/// Only the SENDTARGETS section counts; a discovery address is `address,port` with or
/// without brackets around an IPv6 address. Other lines are skipped.
pub fn parse_discoverydb(out: &str, discovery: &Portal, iface: &str) -> Vec<NodeEntry> {
    let mut found = Vec::new();
    let mut in_sendtargets = false;
    let mut at_discovery = false;
    let mut target: Option<Iqn> = None;
    let mut portal: Option<(Portal, i32)> = None;
    for line in out.lines() {
        let line = line.trim();
        if let Some(section) = line.strip_suffix(':').filter(|s| !s.contains(' ')) {
            in_sendtargets = section == "SENDTARGETS";
            at_discovery = false;
            continue;
        }
        if !in_sendtargets {
            continue;
        }
        if let Some(addr) = line.strip_prefix("DiscoveryAddress:") {
            at_discovery = discovery_address(addr.trim()).as_ref() == Some(discovery);
            target = None;
            portal = None;
        } else if let Some(name) = line.strip_prefix("Target:") {
            target = Iqn::from_str(name.trim()).ok();
            portal = None;
        } else if let Some(p) = line.strip_prefix("Portal:") {
            portal = parse_portal_tpgt(p.trim());
        } else if let Some(name) = line.strip_prefix("Iface Name:") {
            if let (true, Some(iqn), Some((p, tpgt))) = (at_discovery, &target, portal.take()) {
                if name.trim() == iface {
                    found.push(NodeEntry {
                        portal: p,
                        tpgt,
                        iqn: iqn.clone(),
                    });
                }
            }
        }
    }
    found
}

/// A discovery record's address as `-m discoverydb -P 1` prints it: `address,port`.
fn discovery_address(word: &str) -> Option<Portal> {
    let (addr, port) = word.rsplit_once(',')?;
    let port: u16 = port.parse().ok()?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let text = if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    };
    Portal::from_str(&text).ok()
}

/// `address:port,tpgt`; the tag is 0 to 65535 (16 bits in iSCSI), or `-1` (none).
fn parse_portal_tpgt(word: &str) -> Option<(Portal, i32)> {
    let (portal, tpgt) = word.rsplit_once(',')?;
    let tpgt: i32 = tpgt.parse().ok()?;
    if tpgt != TPGT_NONE && !(0..=0xffff).contains(&tpgt) {
        return None;
    }
    // iscsiadm prints IPv6 portals bracketed; its "[addr]:port" form parses directly.
    Some((Portal::from_str(portal).ok()?, tpgt))
}

/// How a login ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// This call made the session.
    LoggedIn,
    /// A session already existed (exit 15).
    AlreadyLoggedIn,
}

/// One node-record parameter for [`Iscsiadm::node_update`]: never a secret, since it goes
/// on iscsiadm's command line (CHAP goes in the record file: [`Iscsiadm::node_chap`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeParam {
    key: String,
    value: String,
}

impl NodeParam {
    /// A plain value.
    pub fn new(key: &str, value: impl Into<String>) -> Self {
        NodeParam {
            key: key.to_string(),
            value: value.into(),
        }
    }
}

/// Attempts for a command that exits with a retryable code.
pub const RETRY_ATTEMPTS: u32 = 3;
/// The pause before retrying a retryable iscsiadm failure.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(250);

/// iscsiadm bound to a host (whose open-iscsi records it writes CHAP into), a runner, an
/// iface and a deadline.
#[derive(Debug, Clone, Copy)]
pub struct Iscsiadm<'a> {
    host: &'a Host,
    runner: &'a dyn CommandRunner,
    iface: &'a str,
    deadline: Instant,
    cancel: Option<&'a Cancel>,
}

impl<'a> Iscsiadm<'a> {
    /// iscsiadm of `host` through `runner`, node records bound to `iface`, every command
    /// limited to `deadline`.
    pub fn new(
        host: &'a Host,
        runner: &'a dyn CommandRunner,
        iface: &'a str,
        deadline: Instant,
    ) -> Self {
        Iscsiadm {
            host,
            runner,
            iface,
            deadline,
            cancel: None,
        }
    }

    /// Lets `cancel` stop the commands.
    pub fn with_cancel(mut self, cancel: &'a Cancel) -> Self {
        self.cancel = Some(cancel);
        self
    }

    fn cmd(&self) -> Command {
        let c = Command::new(ISCSIADM).deadline(self.deadline);
        match self.cancel {
            Some(x) => c.cancel_with(x),
            None => c,
        }
    }

    /// `iscsiadm -m node -T IQN -p PORTAL`. iscsiadm takes no positional argument, so no
    /// `--`: getopt takes the word after `-T` as the value whatever it begins with, and an
    /// [`Iqn`] begins with `iqn.`, `eui.` or `naa.` and holds no `/` (open-iscsi names the
    /// node-record directory after it).
    fn node_cmd(&self, t: &IscsiTarget) -> Command {
        self.cmd()
            .args(["-m", "node", "-T", t.iqn.as_str(), "-p"])
            .arg(t.portal.to_string())
    }

    /// Runs `cmd`, retrying retryable exit codes; returns the output and its class.
    /// Not the login retry ([`super::IscsiDriver::login_limit`]): iscsid's, inside one login.
    fn run(&self, cmd: &Command) -> Result<(CommandOutput, IscsiadmStatus)> {
        let mut attempt = 1;
        loop {
            let out = self.runner.run(cmd)?;
            let status = IscsiadmStatus::from_code(out.status.code());
            if status != IscsiadmStatus::Retryable
                || attempt >= RETRY_ATTEMPTS
                || Instant::now() + RETRY_INTERVAL >= self.deadline
            {
                return Ok((out, status));
            }
            tracing::debug!(command = %cmd, code = ?out.status.code(), attempt, "retrying iscsiadm");
            std::thread::sleep(RETRY_INTERVAL);
            cancel::check(|| format!("a retry of `{cmd}`"))?;
            attempt += 1;
        }
    }

    /// Runs `cmd`; success and "nothing there" are fine, the rest is an error.
    fn run_tolerating_absent(&self, cmd: &Command) -> Result<IscsiadmStatus> {
        let (out, status) = self.run(cmd)?;
        match status {
            IscsiadmStatus::Success | IscsiadmStatus::NothingThere => Ok(status),
            _ => Err(cmd.failure(&out)),
        }
    }

    /// True when a node record exists for the target.
    pub fn node_exists(&self, t: &IscsiTarget) -> Result<bool> {
        let cmd = self.node_cmd(t);
        Ok(self.run_tolerating_absent(&cmd)? == IscsiadmStatus::Success)
    }

    /// Every node record (`iscsiadm -m node`); none is an empty list.
    pub fn nodes(&self) -> Result<Vec<NodeEntry>> {
        let cmd = self.cmd().args(["-m", "node"]);
        let (out, status) = self.run(&cmd)?;
        match status {
            IscsiadmStatus::Success => Ok(parse_nodes(&out.stdout)),
            IscsiadmStatus::NothingThere => Ok(Vec::new()),
            _ => Err(cmd.failure(&out)),
        }
    }

    /// Creates the node record (`--op new` with the iface).
    pub fn node_new(&self, t: &IscsiTarget) -> Result<()> {
        let cmd = self
            .node_cmd(t)
            .args(["--interface", self.iface, "--op", "new"]);
        let (out, status) = self.run(&cmd)?;
        match status {
            IscsiadmStatus::Success | IscsiadmStatus::SessionExists => Ok(()),
            _ => Err(cmd.failure(&out)),
        }
    }

    /// Sets node parameters, all in one iscsiadm call (`-n KEY -v VALUE` repeated).
    pub fn node_update(&self, t: &IscsiTarget, params: &[NodeParam]) -> Result<()> {
        let mut cmd = self.node_cmd(t).args(["--op", "update"]);
        for p in params {
            cmd = cmd.args(["-n", p.key.as_str(), "-v", p.value.as_str()]);
        }
        let (out, status) = self.run(&cmd)?;
        match status {
            IscsiadmStatus::Success => Ok(()),
            _ => Err(cmd.failure(&out)),
        }
    }

    /// Sets session CHAP in the target's node records (every iface's, as `--op update`
    /// would): written into open-iscsi's record files, 0600, never on a command line. The
    /// caller holds the target's setup lock.
    pub fn node_chap(&self, t: &IscsiTarget, chap: &ChapCredentials) -> Result<()> {
        records::write_node_chap(self.host, t, chap)
    }

    /// Logs in, giving up (killing iscsiadm) after `limit`. Exit 15 (session exists) is
    /// success; exit 24 is [`Error::AuthenticationFailed`].
    pub fn login(&self, t: &IscsiTarget, limit: Duration) -> Result<LoginOutcome> {
        let cmd = self
            .node_cmd(t)
            .args(["--interface", self.iface, "--login"])
            .timeout(limit)
            .deadline(self.deadline);
        let (out, status) = self.run(&cmd)?;
        match status {
            IscsiadmStatus::Success => Ok(LoginOutcome::LoggedIn),
            IscsiadmStatus::SessionExists => Ok(LoginOutcome::AlreadyLoggedIn),
            IscsiadmStatus::AuthFailed => Err(Error::AuthenticationFailed {
                target: format!("{} {}", t.portal, t.iqn),
                source: Box::new(cmd.failure(&out)),
            }),
            _ => Err(cmd.failure(&out)),
        }
    }

    /// Logs out; no session is fine.
    pub fn logout(&self, t: &IscsiTarget) -> Result<()> {
        let cmd = self
            .node_cmd(t)
            .args(["--interface", self.iface, "--logout"]);
        self.run_tolerating_absent(&cmd).map(|_| ())
    }

    /// Deletes the node record; no record is fine.
    pub fn node_delete(&self, t: &IscsiTarget) -> Result<()> {
        let cmd = self.node_cmd(t).args(["--op", "delete"]);
        self.run_tolerating_absent(&cmd).map(|_| ())
    }

    /// The targets the discovery database holds for sendtargets discovery at `portal`
    /// with this iface (`iscsiadm -m discoverydb -o show -P 1`); none is an empty list.
    pub fn discoverydb_targets(&self, portal: &Portal) -> Result<Vec<NodeEntry>> {
        let cmd = self
            .cmd()
            .args(["-m", "discoverydb", "-o", "show", "-P", "1"]);
        let (out, status) = self.run(&cmd)?;
        match status {
            IscsiadmStatus::Success => Ok(parse_discoverydb(&out.stdout, portal, self.iface)),
            IscsiadmStatus::NothingThere => Ok(Vec::new()),
            _ => Err(cmd.failure(&out)),
        }
    }

    /// sendtargets discovery at `portal` (with discovery CHAP when given); the discovered
    /// node records are created by iscsiadm. With CHAP, the discovery record is made with
    /// `--op new` and the credentials are written into its file (never on a command line);
    /// the caller holds the portal's discovery lock.
    pub fn discover(
        &self,
        portal: &Portal,
        auth: Option<&ChapCredentials>,
    ) -> Result<Vec<NodeEntry>> {
        let db = |extra: &[&str]| {
            self.cmd()
                .args(["-m", "discoverydb", "-t", "sendtargets", "-p"])
                .arg(portal.to_string())
                .args(["--interface", self.iface])
                .args(extra.iter().copied())
        };
        if let Some(chap) = auth {
            let cmd = db(&["--op", "new"]);
            let (out, status) = self.run(&cmd)?;
            if !matches!(
                status,
                IscsiadmStatus::Success | IscsiadmStatus::SessionExists
            ) {
                return Err(cmd.failure(&out));
            }
            records::write_discovery_chap(self.host, portal, chap)?;
        }
        // Without CHAP the plain discovery mode makes its own discovery record.
        let cmd = match auth {
            Some(_) => db(&["--discover"]),
            None => self
                .cmd()
                .args(["-m", "discovery", "-t", "sendtargets", "-p"])
                .arg(portal.to_string())
                .args(["--interface", self.iface]),
        };
        let (out, status) = self.run(&cmd)?;
        match status {
            IscsiadmStatus::Success => Ok(parse_nodes(&out.stdout)),
            IscsiadmStatus::NothingThere => Ok(Vec::new()),
            IscsiadmStatus::AuthFailed => Err(Error::AuthenticationFailed {
                target: format!("{portal} (discovery)"),
                source: Box::new(cmd.failure(&out)),
            }),
            _ => Err(cmd.failure(&out)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_exit_codes() {
        use IscsiadmStatus::*;
        let table = [
            (Some(0), Success),
            (Some(15), SessionExists),
            (Some(21), NothingThere),
            (Some(24), AuthFailed),
            (Some(6), Retryable),
            (Some(255), Retryable),
            (Some(8), Failed),
            (None, Failed),
        ];
        for (code, want) in table {
            assert_eq!(IscsiadmStatus::from_code(code), want, "{code:?}");
        }
    }

    #[test]
    fn sessions_parse() {
        let out = "tcp: [1] 127.0.0.1:3260,1 iqn.2003-01.org.linux-iscsi.vm:t1 (non-flash)\n\
                   tcp: [12] [fe80::1]:3260,2 iqn.2003-01.org.linux-iscsi.vm:t2 (non-flash)\n\
                   iser: [3] 10.0.0.1:3260,1 iqn.2010-10.org.openstack:volume-x\n\
                   iscsiadm: No active sessions.\n\
                   garbage line\n";
        let s = parse_sessions(out);
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].sid, s[0].portal.to_string(), s[0].tpgt),
            (1, "127.0.0.1:3260".into(), 1)
        );
        assert_eq!(
            (s[1].sid, s[1].portal.host(), s[1].tpgt),
            (12, "fe80::1", 2)
        );
        assert_eq!(s[2].transport, "iser");
        assert!(parse_sessions("").is_empty());
    }

    /// Node records made with `--op new` have no portal group tag: iscsiadm prints -1.
    #[test]
    fn records_without_a_portal_group_tag_parse() {
        let table: &[(&str, Option<(&str, i32)>)] = &[
            (
                "127.0.0.1:3260,-1 iqn.2003-01.org.linux-iscsi.vm:t1",
                Some(("127.0.0.1:3260", -1)),
            ),
            (
                "[fe80::1]:3260,-1 iqn.2003-01.org.linux-iscsi.vm:t1",
                Some(("[fe80::1]:3260", -1)),
            ),
            (
                "127.0.0.1:3260,1 iqn.2003-01.org.linux-iscsi.vm:t1",
                Some(("127.0.0.1:3260", 1)),
            ),
            (
                "127.0.0.1:3260,65535 iqn.2003-01.org.linux-iscsi.vm:t1",
                Some(("127.0.0.1:3260", 65535)),
            ),
            ("127.0.0.1:3260,-2 iqn.2003-01.org.linux-iscsi.vm:t1", None),
            (
                "127.0.0.1:3260,65536 iqn.2003-01.org.linux-iscsi.vm:t1",
                None,
            ),
            ("127.0.0.1:3260, iqn.2003-01.org.linux-iscsi.vm:t1", None),
        ];
        for (line, want) in table {
            let got: Vec<_> = parse_nodes(line)
                .into_iter()
                .map(|n| (n.portal.to_string(), n.tpgt))
                .collect();
            let want: Vec<_> = want.iter().map(|(p, t)| (p.to_string(), *t)).collect();
            assert_eq!(got, want, "{line}");
            let session = format!("tcp: [4] {line} (non-flash)");
            let got: Vec<_> = parse_sessions(&session)
                .into_iter()
                .map(|s| (s.portal.to_string(), s.tpgt))
                .collect();
            assert_eq!(got, want, "{session}");
        }
        // What the fuzz target checks: a parsed entry prints back to itself.
        for n in parse_nodes("10.0.0.1:3260,-1 iqn.2003-01.org.linux-iscsi.vm:t1\n") {
            let again = parse_nodes(&format!("{},{} {}\n", n.portal, n.tpgt, n.iqn));
            assert_eq!(again, vec![n]);
        }
    }

    /// The shape of os-brick's `test_get_discoverydb_portals` and its error cases.
    #[test]
    fn discoverydb_lists_the_targets_of_one_discovery_portal_and_iface() {
        let out = "SENDTARGETS:\n\
                   DiscoveryAddress: 192.168.1.33,3260\n\
                   Target: iqn.2004-04.com.qnap:other\n\
                   \tPortal: 192.168.1.33:3260,1\n\
                   \t\tIface Name: default\n\
                   DiscoveryAddress: 10.0.0.1,3260\n\
                   Target: iqn.2004-04.com.qnap:a\n\
                   \tPortal: 10.0.0.2:3260,1\n\
                   \t\tIface Name: default\n\
                   \tPortal: 10.0.0.1:3260,1\n\
                   \t\tIface Name: default\n\
                   \tPortal: 10.0.0.1:3260,1\n\
                   \t\tIface Name: iser\n\
                   Target: iqn.2004-04.com.qnap:b\n\
                   \tPortal: 10.0.0.2:3260,-1\n\
                   \t\tIface Name: default\n\
                   DiscoveryAddress: [fe80::1],3260\n\
                   Target: iqn.2004-04.com.qnap:v6\n\
                   \tPortal: [fe80::1]:3260,1\n\
                   \t\tIface Name: default\n\
                   DiscoveryAddress: 192.168.1.38,3260\n\
                   iSNS:\n\
                   No targets found.\n\
                   STATIC:\n\
                   Target: iqn.2004-04.com.qnap:static\n\
                   \tPortal: 10.0.0.1:3260,1\n\
                   \t\tIface Name: default\n\
                   FIRMWARE:\n\
                   No targets found.\n";
        let pairs = |portal: &str, iface: &str| -> Vec<(String, String)> {
            parse_discoverydb(out, &portal.parse().unwrap(), iface)
                .into_iter()
                .map(|n| (n.portal.to_string(), n.iqn.to_string()))
                .collect()
        };
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            pairs("10.0.0.1:3260", "default"),
            vec![
                s("10.0.0.2:3260", "iqn.2004-04.com.qnap:a"),
                s("10.0.0.1:3260", "iqn.2004-04.com.qnap:a"),
                s("10.0.0.2:3260", "iqn.2004-04.com.qnap:b"),
            ]
        );
        assert_eq!(
            pairs("10.0.0.1:3260", "iser"),
            vec![s("10.0.0.1:3260", "iqn.2004-04.com.qnap:a")]
        );
        assert_eq!(
            pairs("[fe80::1]:3260", "default"),
            vec![s("[fe80::1]:3260", "iqn.2004-04.com.qnap:v6")]
        );
        // A discovery address without targets, one not listed, an empty output.
        assert!(pairs("192.168.1.38:3260", "default").is_empty());
        assert!(pairs("10.9.9.9:3260", "default").is_empty());
        assert!(parse_discoverydb("", &"10.0.0.1:3260".parse().unwrap(), "default").is_empty());
    }

    #[test]
    fn nodes_parse() {
        let out = "127.0.0.1:3260,1 iqn.2003-01.org.linux-iscsi.vm:t1\n127.0.0.2:3260,1 iqn.2003-01.org.linux-iscsi.vm:t1\n[::1]:3260,1 iqn.2003-01.org.linux-iscsi.vm:t1\n";
        let n = parse_nodes(out);
        assert_eq!(n.len(), 3);
        assert_eq!(n[1].portal.host(), "127.0.0.2");
        assert_eq!(n[2].portal.host(), "::1");
        // Found by the `iscsiadm_output` fuzz target: a zone id that swallowed the rest of
        // the portal.
        assert!(parse_nodes("0::%]:3260,2 iqn.2003-01.org.linux-iscsi.v:27\n").is_empty());
        let zoned = parse_nodes("[fe80::1%eth0]:3260,1 iqn.2003-01.org.linux-iscsi.vm:t1\n");
        assert_eq!(zoned[0].portal.host(), "fe80::1%eth0");
    }
}
