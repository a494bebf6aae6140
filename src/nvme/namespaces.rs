//! NVMe namespaces in sysfs (the `nvmeXcYnZ` entries under `class/nvme/nvmeY`, their
//! `block/nvmeXnZ` heads), and the one resolver of a volume's namespace id on a controller.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use regex::Regex;

use super::cli;
use crate::error::Result;
use crate::model::nvme::{normalize_nguid, normalize_uuid, NamespaceId};
use crate::platform::cmd::CommandRunner;
use crate::platform::host::Host;

/// The head block device of the namespace `id` from udev's by-id link
/// (`/dev/disk/by-id/nvme-uuid.<uuid>`, or `nvme-eui.<nguid>` for a namespace without a
/// UUID: the namespace's `wwid`), if the link is there.
pub fn head_by_id(host: &Host, id: &NamespaceId) -> Result<Option<String>> {
    let wwid = match (&id.uuid, &id.nguid) {
        (Some(u), _) => format!("uuid.{u}"),
        (None, Some(g)) => format!("eui.{g}"),
        (None, None) => return Ok(None),
    };
    let Some(dev) = host.canonical(&host.dev(format!("disk/by-id/nvme-{wwid}")))? else {
        return Ok(None);
    };
    Ok(dev
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| head_name(n).as_deref() == Some(*n))
        .map(str::to_string))
}

/// A namespace reached through a controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// The block device to use: the multipath head (`nvme{subsys}n{N}`) for a path entry
    /// `nvme{subsys}c{ctrl}n{N}`, else the entry itself.
    pub head: String,
    /// The entry under the controller.
    pub entry: String,
    /// `nsid`.
    pub nsid: Option<u32>,
    /// `uuid`, normalized.
    pub uuid: Option<String>,
    /// `nguid`, normalized.
    pub nguid: Option<String>,
}

impl Namespace {
    /// True when the namespace is the one `id` names (`uuid`, else `nguid`, else `nsid`;
    /// an empty id matches any).
    pub fn matches(&self, id: &NamespaceId) -> bool {
        if let Some(u) = &id.uuid {
            return self.uuid.as_ref() == Some(u);
        }
        if let Some(g) = &id.nguid {
            return self.nguid.as_ref() == Some(g);
        }
        if let Some(n) = id.nsid {
            return self.nsid == Some(n);
        }
        true
    }
}

static NS_ENTRY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^nvme(\d+)(c\d+)?n(\d+)$").expect("static regex"));

/// The head block device for a namespace entry name (`nvme0c1n2` → `nvme0n2`).
pub fn head_name(entry: &str) -> Option<String> {
    let c = NS_ENTRY.captures(entry)?;
    Some(format!("nvme{}n{}", &c[1], &c[3]))
}

impl Namespace {
    /// The namespace a controller shows as directory `entry` with the attribute values
    /// `nsid`, `uuid` and `nguid` (as read, absent when the file is missing); `None` when
    /// `entry` is no namespace. Values that are not ids, and the all-zero UUID and NGUID
    /// a namespace without one reports, count as absent.
    pub fn from_attrs(
        entry: &str,
        nsid: Option<&str>,
        uuid: Option<&str>,
        nguid: Option<&str>,
    ) -> Option<Namespace> {
        Some(Namespace {
            head: head_name(entry)?,
            entry: entry.to_string(),
            nsid: nsid.and_then(|v| v.trim().parse().ok()),
            uuid: uuid
                .map(str::trim)
                .and_then(normalize_uuid)
                .filter(|u| u != "00000000-0000-0000-0000-000000000000"),
            nguid: nguid
                .map(str::trim)
                .and_then(normalize_nguid)
                .filter(|g| g.chars().any(|c| c != '0')),
        })
    }
}

/// The namespaces the controller `name` carries.
pub fn namespaces(host: &Host, name: &str) -> Result<Vec<Namespace>> {
    let dir = host.sys(format!("class/nvme/{name}"));
    let mut out = Vec::new();
    for entry in host.list_dir(&dir)? {
        if let Some(ns) = namespace_entry(host, name, &entry)? {
            out.push(ns);
        }
    }
    Ok(out)
}

/// The namespace entry `entry` under controller `ctrl`, if the name is one (an entry that
/// does not exist shows no attributes, so it matches no namespace id).
fn namespace_entry(host: &Host, ctrl: &str, entry: &str) -> Result<Option<Namespace>> {
    if head_name(entry).is_none() {
        return Ok(None);
    }
    let edir = host.sys(format!("class/nvme/{ctrl}/{entry}"));
    let attr = |a: &str| host.read_attr_opt(&edir.join(a));
    let (nsid, uuid, nguid) = (attr("nsid")?, attr("uuid")?, attr("nguid")?);
    Ok(Namespace::from_attrs(
        entry,
        nsid.as_deref(),
        uuid.as_deref(),
        nguid.as_deref(),
    ))
}

/// The namespace `id` names under controller `ctrl`: directly when udev's by-id link shows
/// its head (the entry is then `nvme{S}c{C}n{N}` under native multipath, else the head
/// itself), otherwise from the controller's own entries.
pub fn find_namespace(host: &Host, ctrl: &str, id: &NamespaceId) -> Result<Option<Namespace>> {
    if let Some(head) = head_by_id(host, id)? {
        let c = NS_ENTRY.captures(&head);
        let n = ctrl.trim_start_matches("nvme");
        let entries = c
            .map(|c| vec![format!("nvme{}c{n}n{}", &c[1], &c[3]), head.clone()])
            .unwrap_or_default();
        for entry in entries {
            if let Some(ns) = namespace_entry(host, ctrl, &entry)? {
                if ns.matches(id) {
                    return Ok(Some(ns));
                }
            }
        }
    }
    Ok(namespaces(host, ctrl)?
        .into_iter()
        .find(|ns| ns.matches(id)))
}

/// What a controller shows of a wanted namespace: see [`resolve_namespace`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// The namespace the id names (for an empty id, the controller's only namespace).
    Found(Namespace),
    /// No such namespace (yet).
    Missing,
    /// The id is empty and the controller carries this many namespaces: the volume names
    /// none of them.
    Ambiguous(usize),
}

/// The namespace `id` names under controller `ctrl`: by UUID, else NGUID, else nsid
/// ([`find_namespace`]). An empty id (connection info naming no namespace) stands for the
/// controller's only namespace, and is [`Resolved::Ambiguous`] when it carries more.
///
/// Every lookup of a volume's namespace on a controller goes through here.
pub(crate) fn resolve_namespace(host: &Host, ctrl: &str, id: &NamespaceId) -> Result<Resolved> {
    if !id.is_empty() {
        return Ok(find_namespace(host, ctrl, id)?.map_or(Resolved::Missing, Resolved::Found));
    }
    let mut all = namespaces(host, ctrl)?;
    Ok(match all.len() {
        0 => Resolved::Missing,
        1 => Resolved::Found(all.remove(0)),
        n => Resolved::Ambiguous(n),
    })
}

/// How long after a controller this connect made is ready a namespace still not shown
/// makes the connect ask the subsystem for its namespace list: long enough that the
/// kernel's first scan of a live controller (a few admin commands) usually shows the
/// namespace before, so a connect that finds it runs no `nvme`.
pub(crate) const NAMESPACE_LIST_AFTER: Duration = Duration::from_millis(100);

/// The same for a controller the connect reused, counted from its `rescan_controller`
/// write: the namespaces that controller shows may predate the rescan, and the kernel's
/// rescan (queued by the write) is what drops an entry whose ids the target changed under
/// the same nsid. See [`AbsenceCheck`].
pub(crate) const RESCAN_SETTLE: Duration = Duration::from_millis(250);

/// How long the `nvme list-ns` of [`AbsenceCheck`] may take (an admin command; one to a
/// controller that just lost its connection waits for the reconnect): past it the wait for
/// the namespace goes on to its deadline as before.
pub(crate) const NAMESPACE_LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a namespace not found on a controller is missing for good, so a connect can
/// fail at once instead of at its deadline.
///
/// The kernel scans namespaces asynchronously: the fabrics connect returns once the
/// controller is `live`, with `nvme_start_ctrl()` having queued `scan_work`, and a
/// `rescan_controller` write only queues it again (drivers/nvme/host/core.c,
/// `nvme_queue_scan()`). `nvme_scan_work()` reads the subsystem's Identify Active Namespace
/// ID list (`nvme_scan_ns_list()`, CNS 02h) and adds a block device per nsid
/// (`nvme_scan_ns()` → `nvme_alloc_ns()`), with nothing in sysfs to say it is done. So
/// the same list is asked of the target (`nvme list-ns`, [`cli::active_namespaces`]) and
/// compared with the controller's entries (each entry's `nsid` attribute): when the
/// controller is `live` and shows an entry for every nsid the target lists, the scan has
/// added everything the target offers, and if none of those is the volume's namespace it
/// does not exist on the subsystem. An nsid listed but not (yet) shown keeps the connect
/// waiting: the scan may be adding it, or the kernel skips it until an AEN (a namespace
/// not ready), as before. A volume named by nsid alone that the list lacks is missing at
/// once: the target itself says the nsid is not active.
///
/// For a controller the connect made, every entry comes from its own scan, so its ids
/// are current. A reused controller's entries can be older: the one way a stale entry
/// hides the volume is an nsid the target reused for it with new ids, and the rescan the
/// connect wrote drops that entry (`nvme_validate_ns()`: "identifiers changed" →
/// `nvme_ns_remove()`), after which the nsid is listed but not shown and the connect waits.
/// The check on a reused controller therefore starts [`RESCAN_SETTLE`] after the rescan
/// was written, time for the queued scan to have validated the entries.
///
/// The list is asked once per wait, and only when the namespace is not shown by
/// [`NAMESPACE_LIST_AFTER`] (or [`RESCAN_SETTLE`]); without `nvme`, or when it fails, or
/// for a list of a full page ([`cli::NS_LIST_PAGE`], which may go on), nothing is proven
/// and the wait runs to its deadline as before.
#[derive(Debug)]
pub(crate) struct AbsenceCheck {
    from: Instant,
    listed: Listed,
}

#[derive(Debug)]
enum Listed {
    NotAsked,
    Ids(Vec<u32>),
    Unavailable,
}

impl AbsenceCheck {
    /// A check for a controller that became ready (or was rescanned) now.
    pub(crate) fn new(reused: bool) -> Self {
        AbsenceCheck {
            from: Instant::now()
                + if reused {
                    RESCAN_SETTLE
                } else {
                    NAMESPACE_LIST_AFTER
                },
            listed: Listed::NotAsked,
        }
    }

    /// After the namespace `id` was not found ready on controller `ctrl`: what the
    /// controller and its subsystem show, when that proves the namespace missing.
    pub(crate) fn missing(
        &mut self,
        runner: &dyn CommandRunner,
        host: &Host,
        ctrl: &str,
        id: &NamespaceId,
        deadline: Instant,
    ) -> Result<Option<String>> {
        if Instant::now() < self.from {
            return Ok(None);
        }
        let state = host.read_attr_opt(&host.sys(format!("class/nvme/{ctrl}/state")))?;
        if state.as_deref() != Some("live") {
            return Ok(None);
        }
        if let Listed::NotAsked = self.listed {
            let dev = host.public_dev_path(&host.dev(ctrl));
            let limit = deadline.min(Instant::now() + NAMESPACE_LIST_TIMEOUT);
            self.listed = match cli::active_namespaces(runner, &dev, limit) {
                Ok(ids) => Listed::Ids(ids),
                Err(e) => {
                    tracing::debug!(controller = ctrl, error = %e.chain(), "cannot read the subsystem's namespace list; waiting for the namespace until the deadline");
                    Listed::Unavailable
                }
            };
        }
        let Listed::Ids(listed) = &self.listed else {
            return Ok(None);
        };
        if listed.len() >= cli::NS_LIST_PAGE {
            return Ok(None);
        }
        let nsids = |l: &[u32]| l.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        if let (None, None, Some(n)) = (&id.uuid, &id.nguid, id.nsid) {
            if !listed.contains(&n) {
                return Ok(Some(match listed.is_empty() {
                    true => "the subsystem lists no active namespace".to_string(),
                    false => format!("the subsystem lists nsids {}", nsids(listed)),
                }));
            }
        }
        let shown = namespaces(host, ctrl)?;
        if shown.iter().any(|ns| ns.matches(id)) {
            return Ok(None);
        }
        if listed
            .iter()
            .any(|n| !shown.iter().any(|ns| ns.nsid == Some(*n)))
        {
            return Ok(None);
        }
        // Still live after the list and the entries were read: no reset or reconnect in
        // between (whose rescan could change the entries).
        if host
            .read_attr_opt(&host.sys(format!("class/nvme/{ctrl}/state")))?
            .as_deref()
            != Some("live")
        {
            return Ok(None);
        }
        Ok(Some(match listed.is_empty() {
            true => format!("controller {ctrl} is live and its subsystem lists no active namespace"),
            false => format!(
                "controller {ctrl} is live and shows every namespace its subsystem lists (nsids {}), none of them this one",
                nsids(listed)
            ),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::controllers::tests::{by_uuid, host_with, portal, HOSTNQN, NQN, UUID};
    use crate::nvme::ControllerFinder;
    use crate::testing::FakeHost;

    #[test]
    fn namespaces_without_or_with_a_stale_link_are_found_in_the_controller() {
        let fake = host_with(1);
        let host = fake.host();
        let id = by_uuid(UUID);
        let link = fake.root().join(format!("dev/disk/by-id/nvme-uuid.{UUID}"));
        assert!(link.exists());
        std::fs::remove_file(&link).unwrap();
        assert_eq!(head_by_id(&host, &id).unwrap(), None);
        let ns = find_namespace(&host, "nvme1", &id).unwrap().unwrap();
        assert_eq!(ns.head, "nvme1n1");
        // A link left pointing at another namespace is checked against the UUID.
        std::os::unix::fs::symlink("../../nvme0n1", &link).unwrap();
        assert_eq!(head_by_id(&host, &id).unwrap().as_deref(), Some("nvme0n1"));
        let ns = find_namespace(&host, "nvme1", &id).unwrap().unwrap();
        assert_eq!(ns.head, "nvme1n1");
        let mut finder = ControllerFinder::new(&host);
        finder.hint_namespace(&id).unwrap();
        let c = finder
            .find(NQN, &portal("10.0.0.1"), HOSTNQN)
            .unwrap()
            .unwrap();
        assert_eq!(c.name, "nvme1");
        assert_eq!(
            find_namespace(
                &host,
                "nvme1",
                &by_uuid("44444444-4444-4444-8444-444444444444")
            )
            .unwrap(),
            None
        );
    }

    #[test]
    fn namespaces_without_a_uuid_are_linked_by_nguid() {
        let fake = FakeHost::new();
        let host = fake.host();
        fake.add_nvme_controller(0, NQN, "tcp", "10.0.0.1", 4420, HOSTNQN);
        let nguid = "aaaaaaaa-bbbb-cccc-dddd-000000000001";
        fake.add_nvme_namespace(
            0,
            0,
            1,
            "00000000-0000-0000-0000-000000000000",
            nguid,
            1 << 20,
        );
        let id = NamespaceId {
            nguid: normalize_nguid(nguid),
            ..NamespaceId::default()
        };
        assert_eq!(head_by_id(&host, &id).unwrap().as_deref(), Some("nvme0n1"));
        assert_eq!(
            find_namespace(&host, "nvme0", &id).unwrap().unwrap().entry,
            "nvme0c0n1"
        );
        assert_eq!(head_by_id(&host, &NamespaceId::default()).unwrap(), None);
    }

    /// What the absence check concludes from the controller's state, the subsystem's list
    /// and the entries shown.
    #[test]
    fn absence_is_proven_only_by_a_live_controller_showing_the_whole_list() {
        use crate::testing::FakeRunner;
        use crate::CommandOutput;
        const A: &str = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
        let fake = FakeHost::new();
        let host = fake.host();
        fake.add_nvme_controller(0, NQN, "tcp", "10.0.0.1", 4420, HOSTNQN);
        fake.add_nvme_namespace(0, 0, 1, UUID, "", 1 << 20);
        let deadline = Instant::now() + Duration::from_secs(5);
        let check = |list: CommandOutput, id: &NamespaceId| {
            let runner = FakeRunner::new();
            runner.on("nvme", &["list-ns", "/dev/nvme0"], move |_| list.clone());
            let mut c = AbsenceCheck {
                from: Instant::now(),
                listed: Listed::NotAsked,
            };
            c.missing(&runner, &host, "nvme0", id, deadline).unwrap()
        };
        let nsid = |n| NamespaceId {
            nsid: Some(n),
            ..NamespaceId::default()
        };
        let one = || CommandOutput::ok("[   0]:0x1\n");
        let two = || CommandOutput::ok("[   0]:0x1\n[   1]:0x2\n");
        // Every listed nsid shown, none of them the volume's: missing.
        let seen = check(one(), &by_uuid(A)).unwrap();
        assert!(
            seen.contains("shows every namespace its subsystem lists (nsids 1)"),
            "{seen}"
        );
        // The one shown is the volume's (its head not ready yet): not missing.
        assert_eq!(check(one(), &by_uuid(UUID)), None);
        // nsid 2 listed but not shown: the scan may still add it.
        assert_eq!(check(two(), &by_uuid(A)), None);
        // By nsid alone: one the list lacks is missing even while the scan runs.
        let seen = check(two(), &nsid(3)).unwrap();
        assert_eq!(seen, "the subsystem lists nsids 1, 2");
        assert_eq!(check(two(), &nsid(2)), None);
        // No list (nvme failing or absent), or a full page that may go on: nothing proven.
        assert_eq!(check(CommandOutput::exit(1, "nope\n"), &by_uuid(A)), None);
        let page: String = (1..=1024u32)
            .map(|n| format!("[{n:>4}]:{n:#x}\n"))
            .collect();
        assert_eq!(check(CommandOutput::ok(page), &by_uuid(A)), None);
        // An empty list with nothing shown: the subsystem has no namespace at all.
        let bare = NamespaceId::default();
        std::fs::remove_dir_all(fake.root().join("sys/class/nvme/nvme0/nvme0c0n1")).unwrap();
        let seen = check(CommandOutput::ok(""), &bare).unwrap();
        assert!(seen.contains("lists no active namespace"), "{seen}");
        // A controller that is not live proves nothing.
        std::fs::write(
            fake.root().join("sys/class/nvme/nvme0/state"),
            "connecting\n",
        )
        .unwrap();
        assert_eq!(check(CommandOutput::ok(""), &bare), None);
    }

    #[test]
    fn namespace_from_attributes() {
        let ns = Namespace::from_attrs(
            "nvme0c1n2",
            Some("2\n"),
            Some("9F0C1A7E-6C3B-4C8E-9A55-2B4F3C1D0E11"),
            Some("9f0c1a7e6c3b4c8e9a552b4f3c1d0e11"),
        )
        .unwrap();
        assert_eq!(
            (ns.head.as_str(), ns.entry.as_str()),
            ("nvme0n2", "nvme0c1n2")
        );
        assert_eq!(ns.nsid, Some(2));
        assert_eq!(
            ns.uuid.as_deref(),
            Some("9f0c1a7e-6c3b-4c8e-9a55-2b4f3c1d0e11")
        );
        assert_eq!(
            ns.nguid.as_deref(),
            Some("9f0c1a7e6c3b4c8e9a552b4f3c1d0e11")
        );
        // No ids: absent files, all-zero values, junk.
        let bare = Namespace::from_attrs(
            "nvme1n1",
            Some("x"),
            Some("00000000-0000-0000-0000-000000000000"),
            Some("00000000000000000000000000000000"),
        )
        .unwrap();
        assert_eq!((bare.nsid, bare.uuid, bare.nguid), (None, None, None));
        assert_eq!(Namespace::from_attrs("nvme1", Some("1"), None, None), None);
        assert_eq!(Namespace::from_attrs("ng0n1", None, None, None), None);
    }

    #[test]
    fn the_resolver_by_id_and_for_an_empty_id() {
        const A: &str = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
        const B: &str = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";
        const G: &str = "aaaaaaaa-bbbb-cccc-dddd-000000000001";
        let fake = FakeHost::new();
        let host = fake.host();
        // nvme0: one namespace; nvme1: two; nvme2: none.
        for c in 0..3 {
            fake.add_nvme_controller(c, &format!("{NQN}{c}"), "tcp", "10.0.0.1", 4420, HOSTNQN);
        }
        fake.add_nvme_namespace(0, 0, 1, A, G, 1 << 20);
        fake.add_nvme_namespace(1, 1, 1, UUID, "", 1 << 20);
        fake.add_nvme_namespace(1, 1, 2, B, "", 1 << 20);
        let empty = NamespaceId::default();
        let nsid = |n| NamespaceId {
            nsid: Some(n),
            ..NamespaceId::default()
        };
        let nguid = NamespaceId {
            nguid: normalize_nguid(G),
            ..NamespaceId::default()
        };
        let cases: [(&str, NamespaceId, &str); 13] = [
            ("nvme0", empty.clone(), "nvme0n1"),
            ("nvme0", by_uuid(A), "nvme0n1"),
            ("nvme0", by_uuid(B), "missing"),
            ("nvme0", nguid.clone(), "nvme0n1"),
            ("nvme0", nsid(1), "nvme0n1"),
            ("nvme0", nsid(2), "missing"),
            ("nvme1", empty.clone(), "ambiguous 2"),
            ("nvme1", by_uuid(B), "nvme1n2"),
            ("nvme1", nsid(2), "nvme1n2"),
            ("nvme1", nguid, "missing"),
            ("nvme2", empty, "missing"),
            ("nvme2", by_uuid(A), "missing"),
            ("nvme9", nsid(1), "missing"),
        ];
        for (ctrl, id, want) in cases {
            let got = match resolve_namespace(&host, ctrl, &id).unwrap() {
                Resolved::Found(ns) => ns.head,
                Resolved::Missing => "missing".into(),
                Resolved::Ambiguous(n) => format!("ambiguous {n}"),
            };
            assert_eq!(got, want, "{ctrl} {id}");
        }
    }
}
