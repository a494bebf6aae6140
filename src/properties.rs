//! Host identity: the connector properties a storage service needs to export a volume to
//! this host, in the JSON shape Cinder expects.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::connector::HostContext;
use crate::devices::block;
use crate::error::{Error, Result};
use crate::nvme::{host_identity, native_multipath};
use crate::platform::cmd::Command;
use crate::platform::host::Host;

/// What a storage service is told about this host (`get_connector_properties`): for the
/// same host, os-brick's answer key by key.
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
    /// Whether the caller asked for multipath (os-brick reports the request; whether
    /// multipathd runs is checked at connect).
    pub multipath: bool,
    /// Whether the caller asked for multipath to be enforced.
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
    /// The UUID of the root filesystem (os-brick's `uuid`: `findmnt -v /` then `blkid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The DMI product UUID as the firmware gives it (os-brick's `system uuid`).
    #[serde(
        rename = "system uuid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub system_uuid: Option<String>,
    /// Whether the kernel's native NVMe multipath is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvme_native_multipath: Option<bool>,
    /// os-brick's RBD connector default for mapping images on this host: false, as
    /// os-brick reports (a caller asks per volume with `do_local_attach` in data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub do_local_attach: Option<bool>,
    /// os-brick's LightOS discovery client answer: `"found"` when one answers, else `""`
    /// (hostbrick has no LightOS connector, so `""`). Present with a host NQN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found_dsc: Option<String>,
    /// The host's IP addresses, loopback left out (IPv6 ones only when IPv6 is on), by
    /// interface. Present with a host NQN, as os-brick's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ips: Option<Vec<String>>,
}

/// Gathers this host's connector properties, as os-brick's `get_connector_properties`
/// does: `multipath` and `enforce_multipath` are the requested values (a connect checks
/// multipathd), so this runs no command on a host whose root filesystem udev knows.
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
        multipath,
        enforce_multipath,
        initiator,
        nqn: Some(nvme.hostnqn),
        nvme_hostid: Some(nvme.hostid),
        uuid: root_fs_uuid(ctx)?,
        system_uuid: system_uuid(ctx)?,
        nvme_native_multipath: Some(native_multipath(&ctx.host)?),
        do_local_attach: Some(false),
        found_dsc: Some(String::new()),
        host_ips: Some(host_ips(&ctx.host)?),
    })
}

/// How long `blkid` may take, when udev does not know the root filesystem's UUID.
const BLKID_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `dmidecode` may take, when the kernel shows no system UUID.
const DMIDECODE_TIMEOUT: Duration = Duration::from_secs(10);

/// The UUID of the filesystem mounted on `/`: udev's `ID_FS_UUID` of its device, else
/// `blkid` of its source. None for a filesystem without a device (overlay, tmpfs) or a UUID.
fn root_fs_uuid(ctx: &HostContext) -> Result<Option<String>> {
    let host = &ctx.host;
    let Some(mountinfo) = host.read_attr_opt(&host.proc("self/mountinfo"))? else {
        return Ok(None);
    };
    let Some(root) = parse_root_mount(&mountinfo) else {
        return Ok(None);
    };
    if let Some(rec) = block::udev_record_of(host, &root.devnum)? {
        if let Some(uuid) = rec.properties.get("ID_FS_UUID").filter(|u| !u.is_empty()) {
            return Ok(Some(uuid.to_string()));
        }
    }
    if !root.source.starts_with("/dev/") {
        return Ok(None);
    }
    let cmd = Command::new("blkid")
        .args([root.source.as_str(), "-s", "UUID", "-o", "value"])
        .deadline(Instant::now() + BLKID_TIMEOUT);
    match ctx.runner.run_ok(&cmd, &[]) {
        Ok(out) => Ok(out
            .stdout
            .lines()
            .next()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)),
        Err(e) => {
            tracing::debug!(error = %e.chain(), "blkid of the root filesystem failed");
            Ok(None)
        }
    }
}

/// The mount on `/` that is visible (the last one in mountinfo order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootMount {
    /// Its device's `major:minor`.
    pub devnum: String,
    /// The filesystem type.
    pub fstype: String,
    /// The mount source (e.g. `/dev/vda1`, `overlay`).
    pub source: String,
}

/// The visible mount on `/` in `/proc/self/mountinfo` text.
pub fn parse_root_mount(mountinfo: &str) -> Option<RootMount> {
    mountinfo.lines().rev().find_map(|line| {
        let (head, tail) = line.split_once(" - ")?;
        let head: Vec<&str> = head.split_whitespace().collect();
        if head.get(4) != Some(&"/") {
            return None;
        }
        let mut tail = tail.split_whitespace();
        Some(RootMount {
            devnum: head.get(2)?.to_string(),
            fstype: tail.next()?.to_string(),
            source: tail.next()?.to_string(),
        })
    })
}

/// The DMI system UUID as os-brick reads it: the kernel's `product_uuid`, else what
/// `dmidecode -s system-uuid` prints (the kernel leaves the file out for a placeholder UUID,
/// which dmidecode prints as `Not Settable` or `Not Present`). None without either.
///
/// dmidecode's answer is read from the SMBIOS tables the kernel exports
/// (`/sys/firmware/dmi/tables`, [`smbios_system_uuid`]), as dmidecode itself reads them; only
/// where those are not readable does `dmidecode` run.
fn system_uuid(ctx: &HostContext) -> Result<Option<String>> {
    let host = &ctx.host;
    match host.read_attr_opt(&host.sys("class/dmi/id/product_uuid")) {
        Ok(Some(v)) if !v.trim().is_empty() => return Ok(Some(v.trim().to_string())),
        Ok(_) => {}
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::PermissionDenied => {}
        Err(e) => return Err(e),
    }
    let tables = host.sys("firmware/dmi/tables");
    if let (Ok(entry), Ok(table)) = (
        std::fs::read(tables.join("smbios_entry_point")),
        std::fs::read(tables.join("DMI")),
    ) {
        return Ok(smbios_system_uuid(&entry, &table));
    }
    let cmd = Command::new("dmidecode")
        .args(["-s", "system-uuid"])
        .deadline(Instant::now() + DMIDECODE_TIMEOUT);
    match ctx.runner.run_ok(&cmd, &[]) {
        Ok(out) => Ok(Some(out.stdout.trim().to_string()).filter(|u| !u.is_empty())),
        Err(e) => {
            tracing::debug!(error = %e.chain(), "no system UUID from dmidecode");
            Ok(None)
        }
    }
}

/// The SMBIOS version of an entry point (`smbios_entry_point`), `major << 8 | minor`, with
/// dmidecode's fix-ups of two versions firmware got wrong (2.33 is 2.3, 2.51 is 2.6).
fn smbios_version(entry: &[u8]) -> Option<u16> {
    let (major, minor) = if entry.starts_with(b"_SM3_") {
        (*entry.get(7)?, *entry.get(8)?)
    } else if entry.starts_with(b"_SM_") {
        (*entry.get(6)?, *entry.get(7)?)
    } else {
        return None;
    };
    Some(match u16::from_be_bytes([major, minor]) {
        0x0233 => 0x0203,
        0x0251 => 0x0206,
        v => v,
    })
}

/// What `dmidecode -s system-uuid` prints for SMBIOS tables: the UUID of the System
/// Information structure (type 1), upper case, its first three fields little-endian from
/// SMBIOS 2.6 on; `Not Present` for all-ones and `Not Settable` for all-zeroes. None when
/// the tables hold no such structure (dmidecode prints nothing then).
pub fn smbios_system_uuid(entry_point: &[u8], table: &[u8]) -> Option<String> {
    let version = smbios_version(entry_point)?;
    let mut at = 0usize;
    while at + 4 <= table.len() {
        let kind = table[at];
        let len = usize::from(table[at + 1]);
        if len < 4 {
            return None;
        }
        if kind == 1 && len >= 0x18 {
            let u = table.get(at + 8..at + 24)?;
            if u.iter().all(|&b| b == 0xff) {
                return Some("Not Present".into());
            }
            if u.iter().all(|&b| b == 0) {
                return Some("Not Settable".into());
            }
            let order: [usize; 16] = if version >= 0x0206 {
                [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15]
            } else {
                std::array::from_fn(|i| i)
            };
            let mut out = String::with_capacity(36);
            for (i, &k) in order.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    out.push('-');
                }
                out.push_str(&format!("{:02X}", u[k]));
            }
            return Some(out);
        }
        if kind == 127 {
            return None;
        }
        // The strings after the formatted area end with two NULs.
        let strings = at.checked_add(len)?;
        let end = table.get(strings..)?.windows(2).position(|w| w == [0, 0])?;
        at = strings + end + 2;
    }
    None
}

/// The host's addresses, as os-brick lists them: interfaces in the kernel's order,
/// loopback (`lo`) left out, IPv4 and (when IPv6 is on) IPv6 without a scope.
fn host_ips(host: &Host) -> Result<Vec<String>> {
    let ipv6 = host
        .read_attr_opt(&host.proc("sys/net/ipv6/conf/default/disable_ipv6"))?
        .is_some_and(|v| v.trim() == "0");
    let addrs = match nix::ifaddrs::getifaddrs() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the host's addresses");
            return Ok(Vec::new());
        }
    };
    let mut by_iface: Vec<(String, Vec<String>)> = Vec::new();
    for a in addrs {
        let pos = match by_iface.iter().position(|(n, _)| *n == a.interface_name) {
            Some(p) => p,
            None => {
                by_iface.push((a.interface_name.clone(), Vec::new()));
                by_iface.len() - 1
            }
        };
        let Some(addr) = a.address else { continue };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            v4.ip().to_string()
        } else if let Some(v6) = addr.as_sockaddr_in6().filter(|_| ipv6) {
            v6.ip().to_string()
        } else {
            continue;
        };
        by_iface[pos].1.push(ip);
    }
    Ok(by_iface
        .into_iter()
        .filter(|(name, _)| name != "lo")
        .flat_map(|(_, ips)| ips)
        .collect())
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

    /// SMBIOS tables: a BIOS structure (type 0, with strings), a System Information one
    /// (type 1) holding `uuid`, and the end of table.
    fn smbios_table(uuid: [u8; 16]) -> Vec<u8> {
        let mut t = vec![0u8, 0x18, 0x00, 0x00];
        t.extend([1u8, 2, 0xe8, 0x03]);
        t.resize(0x18, 0);
        t.extend(b"SeaBIOS\x001.16.2\x00\x00");
        let mut sys = vec![1u8, 0x1b, 0x01, 0x01, 1, 2, 3, 4];
        sys.extend(uuid);
        sys.resize(0x1b, 0);
        t.extend(sys);
        t.extend(b"QEMU\0Standard PC\0\0");
        t.extend([127u8, 4, 0xff, 0xfe, 0, 0]);
        t
    }

    fn entry_point(major: u8, minor: u8) -> Vec<u8> {
        let mut e = b"_SM3_".to_vec();
        e.extend([0, 0x18, major, minor, 0]);
        e
    }

    #[test]
    fn smbios_system_uuid_reads_as_dmidecode_prints_it() {
        let uuid = [
            0x44, 0x45, 0x4c, 0x4c, 0x42, 0x00, 0x10, 0x35, 0x80, 0x52, 0xb4, 0xc0, 0x4f, 0x38,
            0x4d, 0x32,
        ];
        // SMBIOS 2.6 and later: the first three fields are little-endian.
        assert_eq!(
            smbios_system_uuid(&entry_point(3, 0), &smbios_table(uuid)).as_deref(),
            Some("4C4C4544-0042-3510-8052-B4C04F384D32")
        );
        // Before 2.6, the bytes in order; a 32-bit entry point keeps its version at 6..8.
        let mut old = b"_SM_".to_vec();
        old.extend([0, 0x1f, 2, 5]);
        assert_eq!(
            smbios_system_uuid(&old, &smbios_table(uuid)).as_deref(),
            Some("44454C4C-4200-1035-8052-B4C04F384D32")
        );
        // dmidecode's fix-up: 2.51 is 2.6.
        let mut fixed = b"_SM_".to_vec();
        fixed.extend([0, 0x1f, 2, 0x51]);
        assert_eq!(
            smbios_system_uuid(&fixed, &smbios_table(uuid)).as_deref(),
            Some("4C4C4544-0042-3510-8052-B4C04F384D32")
        );
        // The placeholders the kernel leaves out of product_uuid (QEMU without -uuid: zeroes).
        assert_eq!(
            smbios_system_uuid(&entry_point(3, 0), &smbios_table([0; 16])).as_deref(),
            Some("Not Settable")
        );
        assert_eq!(
            smbios_system_uuid(&entry_point(2, 8), &smbios_table([0xff; 16])).as_deref(),
            Some("Not Present")
        );
    }

    #[test]
    fn smbios_tables_without_a_system_uuid() {
        let table = smbios_table([7; 16]);
        assert_eq!(smbios_system_uuid(b"junk", &table), None);
        assert_eq!(smbios_system_uuid(&entry_point(3, 0), &[]), None);
        // Only the BIOS structure and the end: no type 1.
        let mut short = table[..0x18 + 17].to_vec();
        short.extend([127u8, 4, 0, 0, 0, 0]);
        assert_eq!(smbios_system_uuid(&entry_point(3, 0), &short), None);
        // Cut anywhere, or with a structure length below its header: never a panic.
        for cut in 0..table.len() {
            let _ = smbios_system_uuid(&entry_point(3, 0), &table[..cut]);
        }
        assert_eq!(
            smbios_system_uuid(&entry_point(3, 0), &[1, 2, 0, 0, 0, 0]),
            None
        );
    }

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

    #[test]
    fn root_mount_is_the_last_mount_on_slash() {
        let text = "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    23 22 0:21 / /proc rw - proc proc rw\n";
        assert_eq!(
            parse_root_mount(text),
            Some(RootMount {
                devnum: "254:0".into(),
                fstype: "ext4".into(),
                source: "/dev/vda".into(),
            })
        );
        // Over-mounted (a container's overlay on top): the visible one counts.
        let text = "22 1 8:2 / / rw - ext4 /dev/sda2 rw\n\
                    90 22 0:50 / / rw - overlay overlay rw,lowerdir=/l\n";
        assert_eq!(parse_root_mount(text).unwrap().source, "overlay");
        // Optional fields of any number before the separator.
        let text = "22 1 8:2 /@ / rw shared:1 master:2 - btrfs /dev/sda2 rw\n";
        assert_eq!(parse_root_mount(text).unwrap().devnum, "8:2");
        assert_eq!(
            parse_root_mount("23 22 0:21 / /proc rw - proc proc rw\n"),
            None
        );
        assert_eq!(parse_root_mount(""), None);
        assert_eq!(parse_root_mount("garbage\n"), None);
    }
}
