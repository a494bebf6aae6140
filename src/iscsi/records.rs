//! open-iscsi's record database (`/etc/iscsi`, its `ISCSI_DB_ROOT`): hostbrick writes node
//! records itself, whole, as `iscsiadm --op new` and `--op update` would leave them
//! ([`ensure_node`], the text from [`super::idbm`]), removes them as `--op delete` does
//! ([`delete_node`]), and writes the CHAP settings of node and discovery records into the
//! record files, so that a connect runs only the login and no password is ever on an
//! iscsiadm command line (every local user can read a running program's arguments in
//! `/proc/PID/cmdline`).
//!
//! The layout and format are open-iscsi 2.1.8's (`usr/idbm.c`):
//!
//! - A node record is `nodes/<target>/<address>,<port>,<tpgt>/<iface>` (`idbm_rec_write`),
//!   or the older flat file `nodes/<target>/<address>,<port>` that `idbm_rec_write` still
//!   writes for a record made without a portal group tag, as `iscsiadm -m node -T T -p A:P
//!   --op new` makes it (tpgt -1). `idbm_for_each_portal` reads both, splitting an entry's
//!   name at its first comma. The address is the `-p` argument's, without the brackets of an
//!   IPv6 one (`str_to_ipport`): `fe80::1,3260`. Directories are 0700 and records 0600
//!   (iscsiadm runs with umask 077).
//! - A sendtargets discovery record is `send_targets/<address>,<port>/st_config`
//!   (`idbm_discovery_write`, through `idbm_open_rec_w`, which turns an older flat file
//!   `send_targets/<address>,<port>` into that directory; `idbm_open_rec_r` reads either).
//!   The node records its discovery made are portal directories, each linked from the
//!   discovery record's directory (`<target>,<address>,<port>,<tpgt>,<iface>`): those are
//!   left to `iscsiadm --op delete`, which removes the link too.
//! - A record is `# BEGIN RECORD <version>`, one `name = value` line per setting and
//!   `# END RECORD` (`idbm_print`). `idbm_recinfo_config` reads it back line by line: a line
//!   without its newline is dropped, the line is stripped at both ends, `#` lines are
//!   skipped, the name ends at white space or `=`, the value is the rest after `=` and any
//!   spaces, and a later line for a name wins. A password's `*_length` setting is derived
//!   when its line is read (`idbm_rec_update_param`), so it is not written.
//! - Every iscsiadm reading or writing records takes the database lock (`idbm_lock`): a hard
//!   link `/run/lock/iscsi/lock.write` of `/run/lock/iscsi/lock`, made or waited for every
//!   10 ms ([`lock_db`]). hostbrick takes it around each record write and removal, bounded
//!   by the operation's deadline.
//!
//! A rewrite keeps every other line, drops the old lines of the settings it writes, and
//! puts the new ones before `# END RECORD`. It goes to a temporary file, created exclusively
//! with mode 0600, in the directory that holds the portal entries (its name has no comma, so
//! no open-iscsi walk takes it for a record, as one would inside a portal directory), is
//! flushed to disk and renamed over the record. iscsiadm later rewrites a record in place
//! (`fopen(path, "w")`), which keeps its mode and the settings it read from it. A symbolic
//! link where the database has a directory or a record is refused.
//!
//! The callers hold the target's setup lock (node records) or the portal's discovery lock
//! (discovery records), so no other hostbrick connect changes the record meanwhile.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::idbm::NodeRecord;
use crate::error::{Error, Result};
use crate::model::ids::Portal;
use crate::model::iscsi::{record_value_problem, ChapCredentials, IscsiTarget};
use crate::platform::cancel;
use crate::platform::host::Host;

/// The node records' directory under the host's /etc.
const NODES: &str = "iscsi/nodes";
/// The sendtargets discovery records' directory under the host's /etc.
const SEND_TARGETS: &str = "iscsi/send_targets";
/// The file of a discovery record inside its portal directory (`ST_CONFIG_NAME`).
const ST_CONFIG: &str = "st_config";
/// The settings prefix of a node record's session CHAP.
pub(crate) const NODE_AUTH: &str = "node.session.auth";
/// The settings prefix of a sendtargets discovery record's CHAP.
pub(crate) const DISCOVERY_AUTH: &str = "discovery.sendtargets.auth";
/// How a record ends (`ISCSI_END_REC`).
const END_RECORD: &str = "# END RECORD";

/// The record files of target `t` (every iface's), found as open-iscsi finds them. A
/// symbolic link where open-iscsi keeps a directory or a record (the node records', the
/// target's, a portal's, a record file) is refused ([`Error::UnexpectedContent`]): nothing is
/// read or written through it.
pub(crate) fn node_record_files(host: &Host, t: &IscsiTarget) -> Result<Vec<PathBuf>> {
    let dir = target_dir(host, t)?;
    refuse_symlink(&host.etc(NODES))?;
    refuse_symlink(&dir)?;
    let mut files = Vec::new();
    for name in host.list_dir(&dir)? {
        let Some((address, rest)) = name.split_once(',') else {
            continue;
        };
        let (port, tpgt) = match rest.split_once(',') {
            Some((p, g)) => (p, Some(g)),
            None => (rest, None),
        };
        if address != t.portal.host() || port.parse::<u16>().ok() != Some(t.portal.port()) {
            continue;
        }
        let path = dir.join(&name);
        let meta =
            refuse_symlink(&path)?.ok_or_else(|| Error::io(&path, ErrorKind::NotFound.into()))?;
        match tpgt {
            None if meta.is_file() => files.push(path),
            Some(_) if meta.is_dir() => {
                for iface in host.list_dir(&path)? {
                    let file = path.join(iface);
                    if refuse_symlink(&file)?.is_some_and(|m| m.is_file()) {
                        files.push(file);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(files)
}

/// Writes session CHAP into every record file of target `t` (iscsiadm reported the record).
pub(crate) fn write_node_chap(host: &Host, t: &IscsiTarget, chap: &ChapCredentials) -> Result<()> {
    let dir = target_dir(host, t)?;
    let files = node_record_files(host, t)?;
    if files.is_empty() {
        return Err(Error::UnexpectedContent {
            path: dir,
            reason: format!(
                "iscsiadm has a node record for {} {} but no record file is here \
                 (is open-iscsi's database elsewhere?)",
                t.portal, t.iqn
            ),
        });
    }
    for file in files {
        set_chap(&file, &dir, NODE_AUTH, chap)?;
    }
    Ok(())
}

/// The sendtargets discovery record file of `portal`: `st_config` in its directory, or the
/// older flat file.
pub(crate) fn discovery_record_file(host: &Host, portal: &Portal) -> Result<PathBuf> {
    let entry =
        host.etc(SEND_TARGETS)
            .join(format!("{},{}", path_part(portal.host())?, portal.port()));
    match fs::metadata(&entry) {
        Ok(m) if m.is_dir() => Ok(entry.join(ST_CONFIG)),
        Ok(_) => Ok(entry),
        Err(e) => Err(Error::io(&entry, e)),
    }
}

/// Writes discovery CHAP into the sendtargets discovery record of `portal` (which
/// `iscsiadm -m discoverydb ... --op new` made).
pub(crate) fn write_discovery_chap(
    host: &Host,
    portal: &Portal,
    chap: &ChapCredentials,
) -> Result<()> {
    let file = discovery_record_file(host, portal)?;
    set_chap(&file, &host.etc(SEND_TARGETS), DISCOVERY_AUTH, chap)
}

/// `path`'s own metadata (`None` when it does not exist); a symbolic link is refused.
fn refuse_symlink(path: &Path) -> Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::UnexpectedContent {
            path: path.to_path_buf(),
            reason: "a symbolic link in open-iscsi's record database; refusing to follow it".into(),
        }),
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// open-iscsi's lock directory (`LOCK_DIR` of Debian's build, under the host's /run).
const LOCK_DIR: &str = "lock/iscsi";
/// How often a held database lock is tried again (`DB_LOCK_USECS_WAIT`).
const DB_LOCK_RETRY: Duration = Duration::from_millis(10);
/// The key [`Error::LockTimeout`] names for open-iscsi's database lock.
pub(crate) const DB_LOCK_KEY: &str = "open-iscsi record database";

/// open-iscsi's record database lock, held: `idbm_lock`'s hard link `lock.write` of
/// `lock`, removed when dropped (`idbm_unlock`). Every iscsiadm that reads or writes a
/// record takes it, so no iscsiadm sees a record while it is being written or removed.
#[derive(Debug)]
pub(crate) struct DbLock {
    write: PathBuf,
}

impl Drop for DbLock {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.write) {
            tracing::warn!(path = %self.write.display(), error = %e, "cannot release open-iscsi's database lock");
        }
    }
}

/// Takes open-iscsi's database lock as iscsiadm does (`idbm_lock`): makes the lock
/// directory (0700 under iscsiadm's umask) and its `lock` file if missing, then links
/// `lock.write` to `lock`, trying again every 10 ms while it exists, until `deadline`
/// ([`Error::LockTimeout`]). The lock has no owner to check: one left by a killed
/// iscsiadm stays until it is removed by hand (or the host reboots, /run being memory), and
/// iscsiadm waits for it as this does.
pub(crate) fn lock_db(host: &Host, deadline: Instant) -> Result<DbLock> {
    let dir = host.run(LOCK_DIR);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io(&dir, e))?;
    let lock = dir.join("lock");
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&lock)
        .map_err(|e| Error::io(&lock, e))?;
    let write = dir.join("lock.write");
    let started = Instant::now();
    loop {
        match fs::hard_link(&lock, &write) {
            Ok(()) => return Ok(DbLock { write }),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                cancel::check(|| format!("open-iscsi's record lock {}", write.display()))?;
                let now = Instant::now();
                if now >= deadline {
                    return Err(Error::LockTimeout {
                        key: DB_LOCK_KEY.into(),
                        path: write,
                        waited: now - started,
                    });
                }
                std::thread::sleep(DB_LOCK_RETRY.min(deadline - now));
            }
            Err(e) => return Err(Error::io(&write, e)),
        }
    }
}

/// The text of open-iscsi's configuration file when the record database is the one this
/// module knows: `/etc/iscsi` a directory (not a link) holding `iscsid.conf` as a regular
/// file, as Debian's and upstream's builds lay it out. `None` otherwise (a database
/// elsewhere, a host without open-iscsi's files): the caller uses iscsiadm.
pub(crate) fn known_database(host: &Host) -> Result<Option<Zeroizing<String>>> {
    let etc = host.etc("iscsi");
    match fs::symlink_metadata(&etc) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&etc, e)),
    }
    let conf = etc.join("iscsid.conf");
    match fs::symlink_metadata(&conf) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&conf, e)),
    }
    let bytes = Zeroizing::new(fs::read(&conf).map_err(|e| Error::io(&conf, e))?);
    // open-iscsi reads bytes; a file that is not UTF-8 is left to it.
    Ok(std::str::from_utf8(&bytes)
        .ok()
        .map(|s| Zeroizing::new(s.to_string())))
}

/// What [`ensure_node`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeWrite {
    /// It wrote a new record, this file.
    Made(PathBuf),
    /// Records were there: it set the settings in each.
    Updated,
    /// The configuration or the iface is not one this module writes a record for: nothing
    /// was written, iscsiadm is to make the record.
    Unsupported,
}

/// Makes target `t`'s node record for `iface` as `--op new` would (from configuration
/// text `conf`), with `settings` and `chap` set in it as `--op update` would, or, when the
/// target already has records at that portal (any iface's, as `iscsiadm -m node -T -p`
/// finds them), sets them in each of those. Under open-iscsi's database lock, waited for
/// until `deadline`. A new record goes where `idbm_rec_write` puts one without a portal
/// group tag: the flat file `nodes/<target>/<address>,<port>`, or, when a portal directory
/// `<address>,<port>,<tpgt>` is there (without records), `<tpgt>` is taken from its name and
/// the record is its `<iface>` file. Directories are made 0700 and records 0600, as the
/// guest's iscsiadm makes them.
pub(crate) fn ensure_node(
    host: &Host,
    t: &IscsiTarget,
    iface: &str,
    conf: &str,
    settings: &[(&str, String)],
    chap: Option<&ChapCredentials>,
    deadline: Instant,
) -> Result<NodeWrite> {
    let mut values: Vec<(String, Zeroizing<String>)> = settings
        .iter()
        .map(|(k, v)| ((*k).to_string(), Zeroizing::new(v.clone())))
        .collect();
    if let Some(c) = chap {
        values.push((
            format!("{NODE_AUTH}.authmethod"),
            Zeroizing::new("CHAP".into()),
        ));
        values.push((
            format!("{NODE_AUTH}.username"),
            Zeroizing::new(c.username.as_str().to_string()),
        ));
        values.push((
            format!("{NODE_AUTH}.password"),
            Zeroizing::new(c.password.expose().to_string()),
        ));
    }
    let address = path_part(t.portal.host())?;
    let dir = target_dir(host, t)?;
    let Some(mut rec) = NodeRecord::new(t.iqn.as_str(), address, t.portal.port(), -1, iface, conf)
    else {
        return Ok(NodeWrite::Unsupported);
    };
    for (k, v) in &values {
        rec.set(k, v)?;
    }
    let _db = lock_db(host, deadline)?;
    let files = node_record_files(host, t)?;
    if !files.is_empty() {
        for file in &files {
            let text = Zeroizing::new(fs::read_to_string(file).map_err(|e| Error::io(file, e))?);
            if record_value(&text, "node.name") != Some(t.iqn.as_str()) {
                return Err(Error::UnexpectedContent {
                    path: file.clone(),
                    reason: format!("the node record of {t} names another target"),
                });
            }
        }
        let pairs: Vec<(&str, &str)> = values
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for file in &files {
            set_values(file, &dir, &pairs, &[])?;
        }
        return Ok(NodeWrite::Updated);
    }
    let nodes = host.etc(NODES);
    for d in [&nodes, &dir] {
        match fs::DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(d, e)),
        }
    }
    // A portal directory without records: `idbm_rec_write_old` takes its tag.
    let prefix = format!("{address},{},", t.portal.port());
    let mut file = dir.join(format!("{address},{}", t.portal.port()));
    for name in host.list_dir(&dir)? {
        let Some(tpgt) = name
            .strip_prefix(&prefix)
            .and_then(|g| g.parse::<u16>().ok())
        else {
            continue;
        };
        if refuse_symlink(&dir.join(&name))?.is_some_and(|m| m.is_dir()) {
            rec = NodeRecord::new(
                t.iqn.as_str(),
                address,
                t.portal.port(),
                tpgt.into(),
                iface,
                conf,
            )
            .ok_or_else(|| Error::InvalidArgument {
                name: "iscsi_iface".into(),
                reason: format!("{iface:?} is not a built-in iface"),
            })?;
            for (k, v) in &values {
                rec.set(k, v)?;
            }
            file = dir.join(name).join(iface);
            break;
        }
    }
    if refuse_symlink(&file)?.is_some() {
        return Err(Error::UnexpectedContent {
            path: file,
            reason: "in the way of the node record (not a record open-iscsi reads)".into(),
        });
    }
    // The temporary file goes beside the portal entries (its name has no comma).
    replace_private(&file, &dir, rec.text().as_bytes())?;
    Ok(NodeWrite::Made(file))
}

/// What [`delete_node`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeDelete {
    /// The records are gone (or there were none).
    Done,
    /// A record of the target at that portal is one discovery made (a portal directory, which
    /// open-iscsi links from its discovery record): nothing was removed, iscsiadm is to
    /// delete them.
    Discovered,
}

/// Removes target `t`'s node records at its portal (every iface's, as `--op delete`
/// without an iface) and the target's directory if that leaves it empty, under open-iscsi's
/// database lock (waited for until `deadline`). Only flat records (`--op new`'s, hostbrick's
/// and os-brick's) are removed here; a file there that names another target in its
/// `node.name` is left (and logged).
pub(crate) fn delete_node(host: &Host, t: &IscsiTarget, deadline: Instant) -> Result<NodeDelete> {
    let dir = target_dir(host, t)?;
    let _db = lock_db(host, deadline)?;
    let files = node_record_files(host, t)?;
    if files.iter().any(|f| f.parent() != Some(dir.as_path())) {
        return Ok(NodeDelete::Discovered);
    }
    for file in &files {
        let text = Zeroizing::new(fs::read_to_string(file).map_err(|e| Error::io(file, e))?);
        if record_value(&text, "node.name") != Some(t.iqn.as_str()) {
            tracing::warn!(path = %file.display(), target = %t, "a node record file that names another target; leaving it");
            continue;
        }
        match fs::remove_file(file) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(file, e)),
        }
    }
    if !files.is_empty() {
        // `idbm_delete_node` removes the target's directory when it is empty.
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::DirectoryNotEmpty) => {}
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
    Ok(NodeDelete::Done)
}

/// `nodes/<target>`.
fn target_dir(host: &Host, t: &IscsiTarget) -> Result<PathBuf> {
    path_part(t.portal.host())?;
    Ok(host.etc(NODES).join(path_part(t.iqn.as_str())?))
}

/// `s` as one path component, refused when it would be more (or `.`/`..`).
fn path_part(s: &str) -> Result<&str> {
    if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\0') {
        return Err(Error::InvalidArgument {
            name: "iSCSI record path".into(),
            reason: format!("{s:?} cannot name a file in open-iscsi's record database"),
        });
    }
    Ok(s)
}

/// The setting a record line sets, as `idbm_recinfo_config` reads it; `None` for blank and
/// comment lines.
pub(crate) fn line_name(line: &str) -> Option<&str> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line
        .find(|c: char| c.is_ascii_whitespace() || c == '=')
        .unwrap_or(line.len());
    Some(&line[..end])
}

/// The value of setting `name` in record text `text` as open-iscsi reads it (the last line
/// for it wins); `None` when no line sets it.
pub fn record_value<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .filter(|l| line_name(l) == Some(name))
        .filter_map(|l| l.trim().split_once('='))
        .map(|(_, v)| v.trim())
        .next_back()
}

/// Rewrites record `file` with `prefix.authmethod = CHAP`, `prefix.username` and
/// `prefix.password` in place of any earlier lines for them (or the password's length).
fn set_chap(file: &Path, tmp_dir: &Path, prefix: &str, chap: &ChapCredentials) -> Result<()> {
    let username = chap.username.as_str();
    let password = chap.password.expose();
    for (key, value) in [("username", username), ("password", password)] {
        if let Some(reason) = record_value_problem(value) {
            return Err(Error::InvalidArgument {
                name: format!("{prefix}.{key}"),
                reason: reason.into(),
            });
        }
    }
    let (m, u, p) = (
        format!("{prefix}.authmethod"),
        format!("{prefix}.username"),
        format!("{prefix}.password"),
    );
    set_values(
        file,
        tmp_dir,
        &[(&m, "CHAP"), (&u, username), (&p, password)],
        &[&format!("{prefix}.password_length")],
    )
}

/// Rewrites record `file` with a `name = value` line for each of `values` in place of any
/// earlier lines for them (and for the names in `drop`), before `# END RECORD`.
fn set_values(file: &Path, tmp_dir: &Path, values: &[(&str, &str)], drop: &[&str]) -> Result<()> {
    let old = Zeroizing::new(fs::read_to_string(file).map_err(|e| Error::io(file, e))?);
    let mut ours = Zeroizing::new(String::new());
    for (k, v) in values {
        ours.push_str(k);
        ours.push_str(" = ");
        ours.push_str(v);
        ours.push('\n');
    }
    let lines: Vec<&str> = old
        .lines()
        .filter(|l| {
            !line_name(l).is_some_and(|n| values.iter().any(|(k, _)| *k == n) || drop.contains(&n))
        })
        .collect();
    let end = lines
        .iter()
        .rposition(|l| l.trim_start().starts_with(END_RECORD))
        .unwrap_or(lines.len());
    let mut text = Zeroizing::new(String::with_capacity(old.len() + ours.len()));
    for l in &lines[..end] {
        text.push_str(l);
        text.push('\n');
    }
    text.push_str(&ours);
    for l in &lines[end..] {
        text.push_str(l);
        text.push('\n');
    }
    replace_private(file, tmp_dir, text.as_bytes())
}

/// Replaces `path` with `content` at once: a new file, mode 0600, created exclusively in
/// `tmp_dir` (on the same file system), written, flushed to disk and renamed over `path`.
fn replace_private(path: &Path, tmp_dir: &Path, content: &[u8]) -> Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let (tmp, mut f) = loop {
        let tmp = tmp_dir.join(format!(
            ".hostbrick-{}-{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&tmp, e)),
        }
    };
    let written = f
        .write_all(content)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(&tmp, e));
    drop(f);
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path).map_err(|e| Error::io(path, e))) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename itself on disk: best effort (the record is whole either way).
    if let Some(dir) = path.parent() {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::model::secret::Secret;

    fn chap(user: &str, pass: &str) -> ChapCredentials {
        ChapCredentials {
            username: user.into(),
            password: Secret::new(pass),
        }
    }

    fn target(portal: &str) -> IscsiTarget {
        IscsiTarget {
            portal: portal.parse().unwrap(),
            iqn: "iqn.2003-01.org.linux-iscsi.vm:t1".parse().unwrap(),
            lun: 0,
        }
    }

    const RECORD: &str = "# BEGIN RECORD 2.1.8\nnode.name = iqn.2003-01.org.linux-iscsi.vm:t1\n\
        node.tpgt = -1\nnode.session.auth.authmethod = None\nnode.session.auth.chap_algs = MD5\n\
        node.conn[0].address = 10.0.0.1\n# END RECORD\n";

    #[test]
    fn flat_and_directory_records_are_found_and_rewritten() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::with_root(d.path());
        let tdir = host.etc("iscsi/nodes/iqn.2003-01.org.linux-iscsi.vm:t1");
        fs::create_dir_all(tdir.join("fe80::1,3260,1")).unwrap();
        fs::write(tdir.join("10.0.0.1,3260"), RECORD).unwrap();
        fs::write(tdir.join("10.0.0.10,3260"), RECORD).unwrap();
        fs::write(tdir.join("fe80::1,3260,1/default"), RECORD).unwrap();
        fs::write(tdir.join("fe80::1,3260,1/iser"), RECORD).unwrap();
        let v4 = target("10.0.0.1:3260");
        assert_eq!(
            node_record_files(&host, &v4).unwrap(),
            vec![tdir.join("10.0.0.1,3260")]
        );
        let v6 = target("[fe80::1]:3260");
        assert_eq!(node_record_files(&host, &v6).unwrap().len(), 2);
        assert!(node_record_files(&host, &target("10.0.0.1:3261"))
            .unwrap()
            .is_empty());

        write_node_chap(&host, &v4, &chap("alice", "pa ss=word#1")).unwrap();
        let file = tdir.join("10.0.0.1,3260");
        let text = fs::read_to_string(&file).unwrap();
        assert_eq!(
            text,
            "# BEGIN RECORD 2.1.8\nnode.name = iqn.2003-01.org.linux-iscsi.vm:t1\n\
             node.tpgt = -1\nnode.session.auth.chap_algs = MD5\nnode.conn[0].address = 10.0.0.1\n\
             node.session.auth.authmethod = CHAP\nnode.session.auth.username = alice\n\
             node.session.auth.password = pa ss=word#1\n# END RECORD\n"
        );
        assert_eq!(
            record_value(&text, "node.session.auth.password"),
            Some("pa ss=word#1")
        );
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Again: the lines are replaced, not added.
        write_node_chap(&host, &v4, &chap("bob", "other")).unwrap();
        let text = fs::read_to_string(&file).unwrap();
        assert_eq!(text.matches("node.session.auth.password").count(), 1);
        assert_eq!(
            record_value(&text, "node.session.auth.username"),
            Some("bob")
        );
        // The other record of the target's directory is untouched; no temporary file left.
        assert_eq!(
            fs::read_to_string(tdir.join("10.0.0.10,3260")).unwrap(),
            RECORD
        );
        assert_eq!(
            host.list_dir(&tdir).unwrap(),
            vec!["10.0.0.1,3260", "10.0.0.10,3260", "fe80::1,3260,1"]
        );

        write_node_chap(&host, &v6, &chap("carol", "six")).unwrap();
        for iface in ["default", "iser"] {
            let text = fs::read_to_string(tdir.join("fe80::1,3260,1").join(iface)).unwrap();
            assert_eq!(
                record_value(&text, "node.session.auth.password"),
                Some("six")
            );
            assert!(text.ends_with("node.session.auth.password = six\n# END RECORD\n"));
        }
        let e = write_node_chap(&host, &target("10.0.0.2:3260"), &chap("a", "b")).unwrap_err();
        assert_eq!(e.kind(), "unexpected_content");
    }

    #[test]
    fn values_the_record_cannot_hold_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::with_root(d.path());
        let tdir = host.etc("iscsi/nodes/iqn.2003-01.org.linux-iscsi.vm:t1");
        fs::create_dir_all(&tdir).unwrap();
        fs::write(tdir.join("10.0.0.1,3260"), RECORD).unwrap();
        let t = target("10.0.0.1:3260");
        let long = "x".repeat(256);
        for (user, pass) in [
            ("alice", "pw\nnode.startup = manual"),
            ("alice", "pw\r"),
            ("al\nice", "pw"),
            ("alice", " pw"),
            ("alice", ""),
            ("alice", long.as_str()),
        ] {
            let e = write_node_chap(&host, &t, &chap(user, pass)).unwrap_err();
            assert_eq!(e.kind(), "invalid_argument", "{user:?}");
            assert!(!e.chain().contains("pw"), "{}", e.chain());
        }
        assert_eq!(
            fs::read_to_string(tdir.join("10.0.0.1,3260")).unwrap(),
            RECORD
        );
    }

    #[test]
    fn discovery_records() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::with_root(d.path());
        let st = host.etc("iscsi/send_targets");
        fs::create_dir_all(st.join("10.0.0.1,3260")).unwrap();
        let rec =
            "# BEGIN RECORD 2.1.8\ndiscovery.startup = manual\ndiscovery.type = sendtargets\n\
            discovery.sendtargets.auth.authmethod = None\n# END RECORD\n";
        fs::write(st.join("10.0.0.1,3260/st_config"), rec).unwrap();
        let p: Portal = "10.0.0.1:3260".parse().unwrap();
        write_discovery_chap(&host, &p, &chap("disc", "d-pass")).unwrap();
        let file = st.join("10.0.0.1,3260/st_config");
        let text = fs::read_to_string(&file).unwrap();
        assert_eq!(
            record_value(&text, "discovery.sendtargets.auth.authmethod"),
            Some("CHAP")
        );
        assert_eq!(
            record_value(&text, "discovery.sendtargets.auth.username"),
            Some("disc")
        );
        assert_eq!(
            record_value(&text, "discovery.sendtargets.auth.password"),
            Some("d-pass")
        );
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(host.list_dir(&st).unwrap(), vec!["10.0.0.1,3260"]);
        // The older flat file.
        fs::write(st.join("10.0.0.2,3260"), rec).unwrap();
        let p2: Portal = "10.0.0.2:3260".parse().unwrap();
        write_discovery_chap(&host, &p2, &chap("disc", "d2")).unwrap();
        let text = fs::read_to_string(st.join("10.0.0.2,3260")).unwrap();
        assert_eq!(
            record_value(&text, "discovery.sendtargets.auth.password"),
            Some("d2")
        );
        let none: Portal = "10.0.0.3:3260".parse().unwrap();
        assert!(write_discovery_chap(&host, &none, &chap("disc", "d"))
            .unwrap_err()
            .is_not_found());
    }
}
