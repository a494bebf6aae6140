//! Host identity: the connector properties a storage service needs to export a volume to
//! this host, in the JSON shape Cinder expects.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::connector::HostContext;
use crate::devices::multipath;
use crate::error::{Error, Result};
use crate::nvme::{host_identity, native_multipath, system_uuid};

/// What a storage service is told about this host (`get_connector_properties`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorProperties {
    /// The machine architecture, e.g. `x86_64`.
    pub platform: String,
    /// `linux`.
    pub os_type: String,
    /// The address the storage should export to.
    pub ip: String,
    /// The host name.
    pub host: String,
    /// True when multipath was asked for and multipathd is running.
    pub multipath: bool,
    /// Whether multipath is enforced.
    pub enforce_multipath: bool,
    /// The iSCSI initiator name, from `/etc/iscsi/initiatorname.iscsi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator: Option<String>,
    /// The NVMe host NQN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nqn: Option<String>,
    /// The NVMe host id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvme_hostid: Option<String>,
    /// The system UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Whether the kernel's native NVMe multipath is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvme_native_multipath: Option<bool>,
    /// Whether RBD volumes are mapped on this host (false: handed to the hypervisor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub do_local_attach: Option<bool>,
}

/// How long the multipathd liveness check may take.
const MULTIPATHD_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Gathers this host's connector properties.
///
/// `multipath` is reported true only when asked for and multipathd is running; with
/// `enforce_multipath` and no multipathd the answer is [`Error::MultipathdNotRunning`].
pub fn get_connector_properties(
    ctx: &HostContext,
    my_ip: &str,
    multipath: bool,
    enforce_multipath: bool,
    host: &str,
) -> Result<ConnectorProperties> {
    if my_ip.trim().is_empty() {
        return Err(Error::InvalidArgument {
            name: "my_ip".into(),
            reason: "empty".into(),
        });
    }
    let running = multipath
        && multipath::multipathd_running(&*ctx.runner, Instant::now() + MULTIPATHD_CHECK_TIMEOUT);
    if multipath && enforce_multipath && !running {
        return Err(Error::MultipathdNotRunning);
    }
    let initiator_path = ctx.host.etc("iscsi/initiatorname.iscsi");
    let initiator = ctx
        .host
        .read_attr_opt(&initiator_path)?
        .and_then(|text| parse_initiator_name(&text));
    let nvme = host_identity(&ctx.host)?;
    Ok(ConnectorProperties {
        platform: machine(),
        os_type: "linux".to_string(),
        ip: my_ip.to_string(),
        host: host.to_string(),
        multipath: running,
        enforce_multipath,
        initiator,
        nqn: Some(nvme.hostnqn),
        nvme_hostid: Some(nvme.hostid),
        uuid: system_uuid(&ctx.host)?,
        nvme_native_multipath: Some(native_multipath(&ctx.host)?),
        // hostbrick maps RBD images itself unless a caller sets RbdOptions::attach
        // to false (and reports that here).
        do_local_attach: Some(true),
    })
}

fn machine() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.machine().to_string_lossy().into_owned())
        .unwrap_or_else(|_| std::env::consts::ARCH.to_string())
}

/// The name in an `initiatorname.iscsi` file (`InitiatorName=iqn...`; comments skipped).
pub fn parse_initiator_name(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix("InitiatorName="))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initiator_file_shapes() {
        let text =
            "## DO NOT EDIT\n#InitiatorName=iqn.old\nInitiatorName=iqn.1993-08.org.debian:01:abc\n";
        assert_eq!(
            parse_initiator_name(text).as_deref(),
            Some("iqn.1993-08.org.debian:01:abc")
        );
        assert_eq!(parse_initiator_name("# nothing\n"), None);
        assert_eq!(parse_initiator_name("InitiatorName=\n"), None);
    }
}
