//! The node record open-iscsi 2.1.8 writes for `iscsiadm -m node -T T -p P --interface I
//! --op new` (pure functions; the files and the lock are [`super::records`]'s).
//!
//! `add_static_rec` (usr/iscsiadm.c) starts from `idbm_node_setup_from_conf`: the built-in
//! defaults (`idbm_node_setup_defaults`) with every setting of `/etc/iscsi/iscsid.conf` that a
//! node record has read over them (`idbm_recinfo_config`); then it sets the target name, the
//! portal group tag, the portal and the iface's own settings (`iface_copy` of the built-in
//! `default` or `iser` iface: its name and transport), and `idbm_add_node` the discovery
//! fields of a static record. `idbm_print` writes the settings in `idbm_recinfo_node`'s order,
//! `name = value` a line, leaving out strings that are empty and the hidden password lengths.
//!
//! [`NodeRecord::new`] builds that record; [`NodeRecord::set`] is `--op update`'s
//! `idbm_rec_update_param`. A configuration value this module would read otherwise than
//! open-iscsi (out of range, not one of a setting's words), or an iface that is neither
//! built-in one, gives `None`: the caller then has iscsiadm make the record.
//!
//! The text was checked against records the Debian 12 guest's open-iscsi 2.1.8 wrote
//! (`tests/fixtures/iscsi/records/`).

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::model::iscsi::record_value_problem;

/// The version a record starts with (`# BEGIN RECORD 2.1.8`). open-iscsi reads a record by
/// its setting names and skips `#` lines, so other 2.x releases read it too.
pub(crate) const RECORD_VERSION: &str = "2.1.8";

/// How a setting's value is read and printed.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Text (`TYPE_STR`); an empty one is not printed.
    Str,
    /// `TYPE_INT`: a signed 32-bit number.
    Int,
    /// `TYPE_UINT8/16/32`: at most this.
    Uint(u32),
    /// `TYPE_INT_O`: one of these words.
    Choice(&'static [&'static str]),
    /// `TYPE_INT_LIST` of CHAP algorithms.
    Algs,
}

const NO_YES: &[&str] = &["No", "Yes"];
const STARTUP: &[&str] = &["manual", "automatic", "onboot"];
const DIGEST: &[&str] = &["None", "CRC32C", "CRC32C,None", "None,CRC32C"];
const CHAP_ALGS: &[&str] = &["MD5", "SHA1", "SHA256", "SHA3-256"];
const U8: Kind = Kind::Uint(u8::MAX as u32);
const U16: Kind = Kind::Uint(u16::MAX as u32);
const U32: Kind = Kind::Uint(u32::MAX);

/// `idbm_recinfo_node` of 2.1.8 for an iface of the IPv4 kind (every built-in one), with
/// `idbm_node_setup_defaults`' values, in print order.
const FIELDS: &[(&str, Kind, &str)] = &[
    ("node.name", Kind::Str, ""),
    ("node.tpgt", Kind::Int, "-1"),
    ("node.startup", Kind::Choice(STARTUP), "manual"),
    ("node.leading_login", Kind::Choice(NO_YES), "No"),
    ("iface.hwaddress", Kind::Str, ""),
    ("iface.ipaddress", Kind::Str, ""),
    ("iface.iscsi_ifacename", Kind::Str, ""),
    ("iface.net_ifacename", Kind::Str, ""),
    ("iface.gateway", Kind::Str, ""),
    ("iface.subnet_mask", Kind::Str, ""),
    ("iface.prefix_len", U8, "0"),
    ("iface.transport_name", Kind::Str, ""),
    ("iface.initiatorname", Kind::Str, ""),
    ("iface.state", Kind::Str, ""),
    ("iface.vlan_id", U16, "0"),
    ("iface.vlan_priority", U8, "0"),
    ("iface.vlan_state", Kind::Str, ""),
    ("iface.iface_num", Kind::Int, "0"),
    ("iface.mtu", U16, "0"),
    ("iface.port", U16, "0"),
    ("iface.bootproto", Kind::Str, ""),
    ("iface.dhcp_alt_client_id_state", Kind::Str, ""),
    ("iface.dhcp_alt_client_id", Kind::Str, ""),
    ("iface.dhcp_dns", Kind::Str, ""),
    ("iface.dhcp_learn_iqn", Kind::Str, ""),
    ("iface.dhcp_req_vendor_id_state", Kind::Str, ""),
    ("iface.dhcp_vendor_id_state", Kind::Str, ""),
    ("iface.dhcp_vendor_id", Kind::Str, ""),
    ("iface.dhcp_slp_da", Kind::Str, ""),
    ("iface.fragmentation", Kind::Str, ""),
    ("iface.gratuitous_arp", Kind::Str, ""),
    ("iface.incoming_forwarding", Kind::Str, ""),
    ("iface.tos_state", Kind::Str, ""),
    ("iface.tos", U8, "0"),
    ("iface.ttl", U8, "0"),
    ("iface.delayed_ack", Kind::Str, ""),
    ("iface.tcp_nagle", Kind::Str, ""),
    ("iface.tcp_wsf_state", Kind::Str, ""),
    ("iface.tcp_wsf", U8, "0"),
    ("iface.tcp_timer_scale", U8, "0"),
    ("iface.tcp_timestamp", Kind::Str, ""),
    ("iface.redirect", Kind::Str, ""),
    ("iface.def_task_mgmt_timeout", U16, "0"),
    ("iface.header_digest", Kind::Str, ""),
    ("iface.data_digest", Kind::Str, ""),
    ("iface.immediate_data", Kind::Str, ""),
    ("iface.initial_r2t", Kind::Str, ""),
    ("iface.data_seq_inorder", Kind::Str, ""),
    ("iface.data_pdu_inorder", Kind::Str, ""),
    ("iface.erl", U8, "0"),
    ("iface.max_receive_data_len", U32, "0"),
    ("iface.first_burst_len", U32, "0"),
    ("iface.max_outstanding_r2t", U16, "0"),
    ("iface.max_burst_len", U32, "0"),
    ("iface.chap_auth", Kind::Str, ""),
    ("iface.bidi_chap", Kind::Str, ""),
    ("iface.strict_login_compliance", Kind::Str, ""),
    ("iface.discovery_auth", Kind::Str, ""),
    ("iface.discovery_logout", Kind::Str, ""),
    ("node.discovery_address", Kind::Str, ""),
    ("node.discovery_port", Kind::Int, "0"),
    (
        "node.discovery_type",
        Kind::Choice(&[
            "send_targets",
            "isns",
            "offload_send_targets",
            "slp",
            "static",
            "fw",
        ]),
        "static",
    ),
    ("node.session.initial_cmdsn", Kind::Int, "0"),
    ("node.session.initial_login_retry_max", Kind::Int, "4"),
    ("node.session.xmit_thread_priority", Kind::Int, "-20"),
    ("node.session.cmds_max", Kind::Int, "128"),
    ("node.session.queue_depth", Kind::Int, "32"),
    ("node.session.nr_sessions", Kind::Int, "1"),
    (
        "node.session.auth.authmethod",
        Kind::Choice(&["None", "CHAP"]),
        "None",
    ),
    ("node.session.auth.username", Kind::Str, ""),
    ("node.session.auth.password", Kind::Str, ""),
    ("node.session.auth.username_in", Kind::Str, ""),
    ("node.session.auth.password_in", Kind::Str, ""),
    ("node.session.auth.chap_algs", Kind::Algs, "MD5"),
    ("node.session.timeo.replacement_timeout", Kind::Int, "120"),
    ("node.session.err_timeo.abort_timeout", Kind::Int, "15"),
    ("node.session.err_timeo.lu_reset_timeout", Kind::Int, "30"),
    ("node.session.err_timeo.tgt_reset_timeout", Kind::Int, "30"),
    ("node.session.err_timeo.host_reset_timeout", Kind::Int, "60"),
    ("node.session.iscsi.FastAbort", Kind::Choice(NO_YES), "Yes"),
    ("node.session.iscsi.InitialR2T", Kind::Choice(NO_YES), "No"),
    (
        "node.session.iscsi.ImmediateData",
        Kind::Choice(NO_YES),
        "Yes",
    ),
    ("node.session.iscsi.FirstBurstLength", Kind::Int, "262144"),
    ("node.session.iscsi.MaxBurstLength", Kind::Int, "16776192"),
    ("node.session.iscsi.DefaultTime2Retain", Kind::Int, "0"),
    ("node.session.iscsi.DefaultTime2Wait", Kind::Int, "2"),
    ("node.session.iscsi.MaxConnections", Kind::Int, "1"),
    ("node.session.iscsi.MaxOutstandingR2T", Kind::Int, "1"),
    ("node.session.iscsi.ERL", Kind::Int, "0"),
    (
        "node.session.scan",
        Kind::Choice(&["manual", "auto"]),
        "auto",
    ),
    ("node.session.reopen_max", Kind::Int, "0"),
    ("node.conn[0].address", Kind::Str, ""),
    ("node.conn[0].port", Kind::Int, "3260"),
    ("node.conn[0].startup", Kind::Choice(STARTUP), "manual"),
    ("node.conn[0].tcp.window_size", Kind::Int, "524288"),
    ("node.conn[0].tcp.type_of_service", Kind::Int, "0"),
    ("node.conn[0].timeo.logout_timeout", Kind::Int, "15"),
    ("node.conn[0].timeo.login_timeout", Kind::Int, "30"),
    ("node.conn[0].timeo.auth_timeout", Kind::Int, "45"),
    ("node.conn[0].timeo.noop_out_interval", Kind::Int, "5"),
    ("node.conn[0].timeo.noop_out_timeout", Kind::Int, "5"),
    (
        "node.conn[0].iscsi.MaxXmitDataSegmentLength",
        Kind::Int,
        "0",
    ),
    (
        "node.conn[0].iscsi.MaxRecvDataSegmentLength",
        Kind::Int,
        "262144",
    ),
    (
        "node.conn[0].iscsi.HeaderDigest",
        Kind::Choice(DIGEST),
        "None",
    ),
    (
        "node.conn[0].iscsi.DataDigest",
        Kind::Choice(DIGEST),
        "None",
    ),
    ("node.conn[0].iscsi.IFMarker", Kind::Choice(NO_YES), "No"),
    ("node.conn[0].iscsi.OFMarker", Kind::Choice(NO_YES), "No"),
];

/// The settings `add_static_rec` / `idbm_add_node` set after reading the configuration
/// (what the configuration says of them does not reach the record).
const SET_AFTER_CONF: &[&str] = &[
    "node.name",
    "node.tpgt",
    "node.conn[0].address",
    "node.conn[0].port",
    "iface.iscsi_ifacename",
    "iface.transport_name",
    "node.discovery_address",
    "node.discovery_port",
    "node.discovery_type",
];

/// The longest configuration text taken as it is (open-iscsi cuts strings at their
/// field's size, the shortest of which holds 223 bytes).
const MAX_CONF_TEXT: usize = 200;

/// The built-in ifaces (`default_ifaces` in usr/iface.c): name → transport.
pub(crate) fn builtin_iface_transport(iface: &str) -> Option<&'static str> {
    match iface {
        "default" => Some("tcp"),
        "iser" => Some("iser"),
        _ => None,
    }
}

/// The settings a configuration file sets, as `idbm_recinfo_config` reads them: a line
/// without its newline is dropped, the line is stripped at both ends, blank and `#` lines
/// are skipped, the name ends at white space or `=`, an `=` must follow (after spaces), and
/// the value is the rest after it and any spaces (a line without a value is skipped). In file
/// order; a later line for a name wins when applied.
pub(crate) fn conf_settings(text: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(nl) = rest.find('\n') {
        let raw = &rest[..nl];
        rest = &rest[nl + 1..];
        // fgets reads at most 2047 bytes: a longer line is "too long" and skipped.
        if raw.len() + 1 > 2047 {
            continue;
        }
        let line = raw.trim_matches(|c: char| c.is_ascii_whitespace());
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let end = line
            .find(|c: char| c.is_ascii_whitespace() || c == '=')
            .unwrap_or(line.len());
        let (name, after) = line.split_at(end);
        let after = after.trim_start_matches(|c: char| c.is_ascii_whitespace());
        let Some(value) = after.strip_prefix('=') else {
            continue;
        };
        let value = value.trim_start_matches(|c: char| c.is_ascii_whitespace());
        if value.is_empty() {
            continue;
        }
        out.push((name, value));
    }
    out
}

/// A node record's settings, in print order.
pub(crate) struct NodeRecord {
    values: Vec<Zeroizing<String>>,
}

impl std::fmt::Debug for NodeRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeRecord(..)")
    }
}

/// Where `name` is in [`FIELDS`].
fn field(name: &str) -> Option<(usize, Kind)> {
    FIELDS
        .iter()
        .position(|(n, _, _)| *n == name)
        .map(|i| (i, FIELDS[i].1))
}

/// `value` of a setting of kind `kind` as open-iscsi prints it back, or `None` when this
/// module would not read it as open-iscsi does.
fn normalize(kind: Kind, value: &str) -> Option<String> {
    match kind {
        Kind::Str => (value.len() <= MAX_CONF_TEXT).then(|| value.to_string()),
        Kind::Int => {
            let digits = value.strip_prefix('-').unwrap_or(value);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            value.parse::<i32>().ok().map(|n| n.to_string())
        }
        Kind::Uint(max) => {
            if !value.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            value
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= max)
                .map(|n| n.to_string())
        }
        Kind::Choice(words) => words.contains(&value).then(|| value.to_string()),
        Kind::Algs => {
            let mut algs: Vec<&str> = Vec::new();
            for token in value.split([',', ' ', '\n']).filter(|t| !t.is_empty()) {
                if !CHAP_ALGS.contains(&token) {
                    return None;
                }
                if !algs.contains(&token) {
                    algs.push(token);
                }
            }
            (!algs.is_empty()).then(|| algs.join(","))
        }
    }
}

impl NodeRecord {
    /// The record `--op new` makes for target `iqn` at `address`/`port` (the address
    /// without the brackets of an IPv6 one) with portal group tag `tpgt` (-1 for none) and
    /// built-in iface `iface`, after the configuration file text `conf`. `None` when `iface`
    /// is not a built-in one or `conf` holds a value read otherwise here than by open-iscsi.
    pub(crate) fn new(
        iqn: &str,
        address: &str,
        port: u16,
        tpgt: i32,
        iface: &str,
        conf: &str,
    ) -> Option<NodeRecord> {
        let transport = builtin_iface_transport(iface)?;
        let mut rec = NodeRecord {
            values: FIELDS
                .iter()
                .map(|(_, _, d)| Zeroizing::new((*d).to_string()))
                .collect(),
        };
        for (name, value) in conf_settings(conf) {
            let Some((i, kind)) = field(name) else {
                continue; // not a node setting (iscsid.*, discovery.*) or unknown
            };
            if SET_AFTER_CONF.contains(&name) {
                continue;
            }
            rec.values[i] = Zeroizing::new(normalize(kind, value)?);
        }
        for (name, value) in [
            ("node.name", iqn.to_string()),
            ("node.tpgt", tpgt.to_string()),
            ("node.conn[0].address", address.to_string()),
            ("node.conn[0].port", port.to_string()),
            ("iface.iscsi_ifacename", iface.to_string()),
            ("iface.transport_name", transport.to_string()),
            ("node.discovery_address", String::new()),
            ("node.discovery_port", "0".to_string()),
            ("node.discovery_type", "static".to_string()),
        ] {
            let (i, _) = field(name)?;
            rec.values[i] = Zeroizing::new(value);
        }
        Some(rec)
    }

    /// Sets `name` to `value`, as `--op update -n NAME -v VALUE`; a name a node record does
    /// not have, or a value it cannot hold, is an [`Error::InvalidArgument`] (the value is
    /// not repeated in it: it may be a password).
    pub(crate) fn set(&mut self, name: &str, value: &str) -> Result<()> {
        let invalid = |reason: &str| Error::InvalidArgument {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        let (i, kind) = field(name).ok_or_else(|| invalid("not a node record setting"))?;
        if let Some(reason) = record_value_problem(value) {
            return Err(invalid(reason));
        }
        let v = normalize(kind, value).ok_or_else(|| invalid("not a value of this setting"))?;
        self.values[i] = Zeroizing::new(v);
        Ok(())
    }

    /// The record file's text, as `idbm_print` writes it.
    pub(crate) fn text(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(format!("# BEGIN RECORD {RECORD_VERSION}\n"));
        for ((name, _, _), value) in FIELDS.iter().zip(&self.values) {
            if value.is_empty() {
                continue;
            }
            out.push_str(name);
            out.push_str(" = ");
            out.push_str(value);
            out.push('\n');
        }
        out.push_str("# END RECORD\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/iscsi/records");
    const IQN: &str = "iqn.2003-01.org.linux-iscsi.hostbrick:records";

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
    }

    /// What the guest's iscsiadm wrote, byte for byte, from the guest's iscsid.conf.
    #[test]
    fn records_match_what_open_iscsi_wrote() {
        let conf = fixture("iscsid.conf");
        let rec = NodeRecord::new(IQN, "127.0.0.1", 3260, -1, "default", &conf).unwrap();
        assert_eq!(*rec.text(), fixture("node-new-default"));
        let iser = NodeRecord::new(IQN, "127.0.0.3", 3260, -1, "iser", &conf).unwrap();
        assert_eq!(*iser.text(), fixture("node-new-iser"));
        let v6 = NodeRecord::new(IQN, "::1", 3260, -1, "default", &conf).unwrap();
        assert_eq!(*v6.text(), fixture("node-new-ipv6"));

        // hostbrick's one `--op update` of today.
        let mut rec = rec;
        for (k, v) in [
            ("node.session.scan", "manual"),
            ("node.conn[0].timeo.login_timeout", "5"),
            ("node.session.initial_login_retry_max", "1"),
            ("node.startup", "automatic"),
        ] {
            rec.set(k, v).unwrap();
        }
        assert_eq!(*rec.text(), fixture("node-new-default-updated"));
    }

    #[test]
    fn configuration_is_read_as_open_iscsi_reads_it() {
        let conf = "node.session.cmds_max = 64\n\
                    \t node.session.queue_depth=16  \n\
                    # node.session.nr_sessions = 9\n\
                    node.session.iscsi.FastAbort = No\n\
                    node.name = iqn.2003-01.x:elsewhere\n\
                    node.conn[0].port = 1\n\
                    iscsid.startup = /bin/true\n\
                    node.unknown = 1\n\
                    node.session.reopen_max\n\
                    node.session.err_timeo.abort_timeout = \n\
                    node.session.auth.chap_algs = SHA256 MD5,SHA256\n\
                    node.session.initial_cmdsn = 7";
        let rec = NodeRecord::new(IQN, "10.0.0.1", 3261, -1, "default", conf).unwrap();
        let text = rec.text();
        let v = |n| crate::iscsi::records::record_value(&text, n).map(str::to_string);
        assert_eq!(v("node.session.cmds_max").as_deref(), Some("64"));
        assert_eq!(v("node.session.queue_depth").as_deref(), Some("16"));
        assert_eq!(v("node.session.nr_sessions").as_deref(), Some("1"));
        assert_eq!(v("node.session.iscsi.FastAbort").as_deref(), Some("No"));
        assert_eq!(v("node.name").as_deref(), Some(IQN));
        assert_eq!(v("node.conn[0].port").as_deref(), Some("3261"));
        assert_eq!(v("node.session.reopen_max").as_deref(), Some("0"));
        assert_eq!(
            v("node.session.err_timeo.abort_timeout").as_deref(),
            Some("15")
        );
        assert_eq!(
            v("node.session.auth.chap_algs").as_deref(),
            Some("SHA256,MD5")
        );
        // The last line has no newline: open-iscsi drops it.
        assert_eq!(v("node.session.initial_cmdsn").as_deref(), Some("0"));
        assert!(!text.contains("iscsid.startup") && !text.contains("unknown"));

        // Values read otherwise here than by open-iscsi: iscsiadm makes the record.
        for bad in [
            "node.session.cmds_max = 12abc\n",
            "node.session.cmds_max = 99999999999\n",
            "iface.tos = 256\n",
            "node.session.scan = sometimes\n",
            "node.session.auth.chap_algs = MD4\n",
        ] {
            assert!(
                NodeRecord::new(IQN, "10.0.0.1", 3260, -1, "default", bad).is_none(),
                "{bad}"
            );
        }
        assert!(NodeRecord::new(IQN, "10.0.0.1", 3260, -1, "bnx2i.00:11", "").is_none());
    }

    #[test]
    fn settings_are_validated() {
        let mut rec = NodeRecord::new(IQN, "10.0.0.1", 3260, -1, "default", "").unwrap();
        for (k, v) in [
            ("node.session.scan", "never"),
            ("node.conn[0].timeo.login_timeout", "x"),
            ("node.nonsense", "1"),
            ("node.session.auth.password", "a\nnode.startup = manual"),
        ] {
            let e = rec.set(k, v).unwrap_err();
            assert_eq!(e.kind(), "invalid_argument", "{k}");
            assert!(!e.chain().contains("node.startup = manual"));
        }
        rec.set("node.session.auth.password", "pa ss=#1").unwrap();
        assert!(rec
            .text()
            .contains("\nnode.session.auth.password = pa ss=#1\n"));
    }
}
