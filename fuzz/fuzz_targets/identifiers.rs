//! Typed identifiers: parsing never panics and Display output parses back to the same value.
//! What connection_info names and hostbrick puts in paths or command lines (image specs,
//! IQNs, NQNs, MD aliases, volume ids, monitor hosts, CHAP user names), once accepted, never
//! leads out of the directory it is joined under and never begins with `-`.
#![no_main]

use std::path::{Component, Path, PathBuf};

use hostbrick::internals::ids;
use libfuzzer_sys::fuzz_target;

fn round_trip<T>(s: &str)
where
    T: std::str::FromStr + std::fmt::Display + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = s.parse::<T>() {
        assert_eq!(v.to_string().parse::<T>().ok(), Some(v));
    }
}

/// `root` joined with `parts` and normalised lexically (`.` dropped, `..` taking off the
/// last component), or `None` when a `..` climbs above the filesystem root.
fn normalised(root: &Path, parts: &[&str]) -> Option<PathBuf> {
    let mut joined = root.to_path_buf();
    for p in parts {
        joined.push(p);
    }
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// Each part is one plain path component, and joined under `root` they name something
/// strictly inside it, one level per part.
fn stays_inside(root: &str, parts: &[&str]) {
    let root = Path::new(root);
    for p in parts {
        let mut c = Path::new(p).components();
        assert!(
            matches!((c.next(), c.next()), (Some(Component::Normal(n)), None) if n == *p),
            "{p:?} is not one path component"
        );
        assert!(!p.starts_with('-'), "{p:?} begins with '-'");
    }
    let n = normalised(root, parts).unwrap_or_else(|| panic!("{parts:?} climbs out of /"));
    assert!(
        n.starts_with(root) && n.components().count() == root.components().count() + parts.len(),
        "{parts:?} under {} is {}",
        root.display(),
        n.display()
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    round_trip::<hostbrick::Portal>(s);
    round_trip::<hostbrick::Iqn>(s);
    round_trip::<hostbrick::Hctl>(s);
    round_trip::<hostbrick::nvme::Nqn>(s);
    round_trip::<hostbrick::rbd::ImageSpec>(s);
    round_trip::<hostbrick::nvme::NvmeTransport>(s);
    round_trip::<hostbrick::Protocol>(s);
    round_trip::<hostbrick::Wwid>(s);
    if let Ok(w) = hostbrick::Wwid::from_sysfs(s) {
        // udev's form of the kernel's wwid is itself a valid WWID (it names the map).
        assert_eq!(w.as_str().parse::<hostbrick::Wwid>().ok(), Some(w));
    }

    // krbd's udev link: /dev/rbd/<pool>[/<namespace>]/<image>.
    if let Ok(spec) = s.parse::<hostbrick::rbd::ImageSpec>() {
        let mut parts = vec![spec.pool.as_str()];
        parts.extend(spec.namespace.as_deref());
        parts.push(spec.image.as_str());
        stays_inside("/dev/rbd", &parts);
        assert!(!spec.to_string().starts_with('-'));
    }
    // open-iscsi's node records: /etc/iscsi/nodes/<iqn>/<portal>,<tpgt>,<iface>.
    if let Ok(iqn) = s.parse::<hostbrick::Iqn>() {
        stays_inside("/etc/iscsi/nodes", &[iqn.as_str()]);
    }
    if let Ok(nqn) = s.parse::<hostbrick::nvme::Nqn>() {
        stays_inside("/sys/kernel/config/nvmet/subsystems", &[nqn.as_str()]);
        assert!(!nqn.as_str().contains([',', '=']), "{nqn:?}");
    }
    if ids::check_md_alias(s).is_ok() {
        stays_inside("/dev/md", &[s]);
        assert!(s.len() <= ids::MD_ALIAS_MAX);
    }
    // A volume id is only ever used behind a prefix, as in the lock and registry key
    // `volume-<id>`.
    if ids::check_volume_id(s).is_ok() {
        stays_inside("/run/hostbrick/attachments/rbd", &[&format!("volume-{s}")]);
    }
    if let Ok(h) = ids::monitor_host(s) {
        assert!(!h.is_empty() && !h.starts_with('-'), "{s:?}");
        assert!(!h.contains([',', ';', '/', ' ', '[', ']']), "{s:?}");
    }
    if ids::check_chap_username(s).is_ok() {
        assert!(!s.is_empty() && !s.contains('='), "{s:?}");
        assert!(s.bytes().all(|b| b.is_ascii_graphic()), "{s:?}");
    }
    if ids::check_ceph_name("image", s).is_ok() {
        stays_inside("/dev/rbd/volumes", &[s]);
    }
});
