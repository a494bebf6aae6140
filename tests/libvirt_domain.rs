//! Real libvirt: a running TCG guest under a private `libvirtd` (QEMU driver), started by
//! `tests/libvirt/run.sh`, which runs these `#[ignore]`d tests against it and passes
//!
//! - `HOSTBRICK_LIBVIRT_URI`: the connection URI (`qemu:///system?socket=...`);
//! - `HOSTBRICK_LIBVIRT_DOMAIN`: the running domain;
//! - `HOSTBRICK_LIBVIRT_CONSOLE`: the guest's serial log, where its init logs every disk it
//!   sees appear (`block add vdX serial=... sectors=...`) and go (`block remove vdX`);
//! - `HOSTBRICK_LIBVIRT_SCRATCH`: a directory for disk images (the harness detaches the loop
//!   devices backed there and removes it);
//! - `HOSTBRICK_LIBVIRT_ATTACH_TO_GUEST`: the built `attach_to_guest` example.
//!
//! Run outside the harness they fail, saying so: a missing variable is never a skip.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hostbrick::attach::{next_device_name, VirshDomain};
use hostbrick::libvirt::DiskSource;
use hostbrick::testing::validate_disk_xml;
use hostbrick::{DiskBus, DiskConfig, DiskTarget, Domain, DomainFlags, HostContext};

/// How long the guest may take to report a disk coming or going.
const GUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// virtio-blk carries at most 20 bytes of serial (`VIRTIO_BLK_ID_BYTES`): the guest sees a
/// longer `<serial>` (a volume UUID, say) cut to its first 20.
const VIRTIO_SERIAL_BYTES: usize = 20;

/// The `serial=` the guest logs for a virtio disk with this `<serial>`.
fn guest_serial(serial: &str) -> String {
    format!(
        "serial={}",
        &serial[..serial.len().min(VIRTIO_SERIAL_BYTES)]
    )
}

/// What the harness passes.
struct Harness {
    uri: String,
    domain: String,
    console: PathBuf,
    scratch: PathBuf,
}

fn var(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: these tests run inside tests/libvirt/run.sh (as root), which \
             starts libvirtd and the guest and passes them in HOSTBRICK_LIBVIRT_*"
        ),
    }
}

fn harness() -> Harness {
    let h = Harness {
        uri: var("HOSTBRICK_LIBVIRT_URI"),
        domain: var("HOSTBRICK_LIBVIRT_DOMAIN"),
        console: var("HOSTBRICK_LIBVIRT_CONSOLE").into(),
        scratch: var("HOSTBRICK_LIBVIRT_SCRATCH").into(),
    };
    assert!(
        h.console.is_file(),
        "guest console {} missing",
        h.console.display()
    );
    assert!(
        h.scratch.is_dir(),
        "scratch dir {} missing",
        h.scratch.display()
    );
    h
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `virsh domblklist --details` as (type, device, target, source) rows, read here without
/// hostbrick's own parser.
fn raw_domblklist(h: &Harness) -> Vec<[String; 4]> {
    let out =
        run(Command::new("virsh").args(["-q", "-c", &h.uri, "domblklist", &h.domain, "--details"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 4).then(|| [w[0], w[1], w[2], w[3]].map(str::to_string))
        })
        .collect()
}

/// The `<disk>` element of `target` in the live domain XML (`virsh dumpxml`).
fn live_disk_xml(h: &Harness, target: &str) -> Option<String> {
    domain_disk_xml(h, target, false)
}

/// The `<disk>` element of `target` in the live (or the persistent, `--inactive`) domain XML.
fn domain_disk_xml(h: &Harness, target: &str, inactive: bool) -> Option<String> {
    let mut cmd = Command::new("virsh");
    cmd.args(["-c", &h.uri, "dumpxml", &h.domain]);
    if inactive {
        cmd.arg("--inactive");
    }
    let out = run(&mut cmd);
    let xml = String::from_utf8_lossy(&out.stdout).into_owned();
    let needle = format!("<target dev='{target}'");
    xml.split("<disk ")
        .skip(1)
        .filter_map(|rest| rest.find("</disk>").map(|end| &rest[..end]))
        .find(|body| body.contains(&needle))
        .map(|body| format!("<disk {body}</disk>"))
}

fn console_lines(h: &Harness) -> Vec<String> {
    fs::read(&h.console)
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for a console line after the first `skip` lines containing every one of `words`;
/// returns it and when it was seen.
fn wait_console(h: &Harness, skip: usize, words: &[&str]) -> (String, Instant) {
    let deadline = Instant::now() + GUEST_TIMEOUT;
    loop {
        if let Some(line) = console_lines(h)
            .into_iter()
            .skip(skip)
            .find(|l| words.iter().all(|w| l.contains(w)))
        {
            return (line, Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "the guest did not log a line with {words:?} within {GUEST_TIMEOUT:?}; console \
             since the step:\n{}",
            console_lines(h)
                .into_iter()
                .skip(skip)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The guest's name for the disk in a `block add vdX ...` console line.
fn guest_dev(add_line: &str) -> String {
    let mut words = add_line.split_whitespace();
    words
        .find(|w| *w == "add")
        .and_then(|_| words.next())
        .unwrap_or_else(|| panic!("not a block add line: {add_line:?}"))
        .to_string()
}

fn sparse_file(path: &Path, bytes: u64) {
    let f = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.set_len(bytes)
        .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
}

/// A loop device over a file, detached on drop.
struct Loop(String);

impl Loop {
    fn new(backing: &Path) -> Loop {
        let out = run(Command::new("losetup").arg("-f").arg("--show").arg(backing));
        Loop(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

#[test]
#[ignore = "needs the real-libvirt harness: tests/libvirt/run.sh"]
fn virsh_domain_attaches_and_detaches_a_file_disk_live() {
    let h = harness();
    let dom = VirshDomain::new(&h.domain, HostContext::system()).with_uri(&h.uri);
    assert_eq!(dom.name(), h.domain);

    let before = dom.disk_targets().expect("disk_targets");
    assert!(
        before.iter().any(|t| t == "vda"),
        "the guest's root disk vda is not among {before:?}"
    );
    let target = next_device_name(DiskBus::Virtio, &before).expect("a free virtio name");
    assert!(!before.contains(&target));

    let image = h.scratch.join("file-disk.img");
    sparse_file(&image, 32 << 20);
    let mut disk = DiskConfig::file(&image, DiskTarget::new(&target, DiskBus::Virtio));
    disk.serial = Some("hostbrick-file-disk".into());
    let xml = disk.to_xml().expect("to_xml");
    validate_disk_xml(&xml).expect("libvirt's schema");
    println!("disk XML:\n{xml}");

    // attach
    let mark = console_lines(&h).len();
    let t0 = Instant::now();
    dom.attach_device(&xml, DomainFlags::LIVE)
        .expect("attach_device");
    let attach_time = t0.elapsed();
    let targets = dom.disk_targets().expect("disk_targets");
    assert!(
        targets.contains(&target),
        "{target} not in disk_targets() after attach: {targets:?}"
    );
    let image_str = image.to_string_lossy().into_owned();
    let rows = raw_domblklist(&h);
    assert!(
        rows.contains(&[
            "file".into(),
            "disk".into(),
            target.clone(),
            image_str.clone()
        ]),
        "virsh domblklist does not show file disk {target} -> {image_str}: {rows:?}"
    );
    // libvirt's own view of the disk reads back to what was attached
    let live = live_disk_xml(&h, &target).expect("the disk in virsh dumpxml");
    let back = DiskConfig::from_xml(&live)
        .unwrap_or_else(|e| panic!("from_xml of libvirt's disk XML failed: {e}\n{live}"));
    assert_eq!(back.source, DiskSource::File(image.clone()), "{live}");
    assert_eq!(back.target, disk.target, "{live}");
    assert_eq!(back.serial, disk.serial, "{live}");
    // the guest sees a disk of that serial and size (32 MiB = 65536 sectors)
    let (add, seen) = wait_console(
        &h,
        mark,
        &[
            "block add",
            &guest_serial("hostbrick-file-disk"),
            "sectors=65536",
        ],
    );
    let guest_seen = seen - t0;
    let gdev = guest_dev(&add);

    // detach
    let mark = console_lines(&h).len();
    let t0 = Instant::now();
    dom.detach_device(&xml, DomainFlags::LIVE)
        .expect("detach_device");
    let detach_time = t0.elapsed();
    let targets = dom.disk_targets().expect("disk_targets");
    assert!(
        !targets.contains(&target),
        "{target} still in disk_targets() after detach: {targets:?}"
    );
    let rows = raw_domblklist(&h);
    assert!(
        !rows.iter().any(|r| r[2] == target),
        "virsh domblklist still shows {target}: {rows:?}"
    );
    assert_eq!(
        rows.len(),
        before.len(),
        "disks after detach differ from before: {rows:?} vs {before:?}"
    );
    wait_console(&h, mark, &[&format!("block remove {gdev}")]);

    println!(
        "file disk {target} (guest {gdev}): attach_device {}, guest saw it after {}, \
         detach_device (guest acknowledged) {}",
        secs(attach_time),
        secs(guest_seen),
        secs(detach_time)
    );
}

#[test]
#[ignore = "needs the real-libvirt harness: tests/libvirt/run.sh"]
fn attach_to_guest_example_attaches_a_local_loop_device_and_detaches_it() {
    let h = harness();
    let exe = PathBuf::from(var("HOSTBRICK_LIBVIRT_ATTACH_TO_GUEST"));
    assert!(
        exe.is_file(),
        "attach_to_guest example {} missing",
        exe.display()
    );

    let backing = h.scratch.join("loop-volume.img");
    sparse_file(&backing, 48 << 20);
    let lo = Loop::new(&backing);
    let volumes = h.scratch.join("volumes");
    fs::create_dir_all(&volumes).expect("volumes dir");
    let info = volumes.join("vol-loop-1.json");
    fs::write(
        &info,
        format!(
            r#"{{"driver_volume_type":"local","data":{{"device_path":"{}"}}}}"#,
            lo.0
        ),
    )
    .expect("write connection_info");
    let record = h.scratch.join("vol-loop-1.record.json");
    let locks = h.scratch.join("locks");
    let before = raw_domblklist(&h);

    // attach
    let mark = console_lines(&h).len();
    let t0 = Instant::now();
    let out = run(Command::new(&exe)
        .args(["--domain", &h.domain, "--uri", &h.uri, "--live"])
        .arg("--connection-info")
        .arg(&info)
        .arg("--record")
        .arg(&record)
        .arg("--lock-dir")
        .arg(&locks));
    let attach_time = t0.elapsed();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("attach_to_guest printed:\n{printed}");
    let disk = DiskConfig::from_xml(printed.trim())
        .unwrap_or_else(|e| panic!("the printed XML does not read back: {e}\n{printed}"));
    validate_disk_xml(printed.trim()).expect("libvirt's schema");
    assert_eq!(disk.source, DiskSource::Block(PathBuf::from(&lo.0)));
    // Nova's mapping: the volume id (here the file name) is the disk's serial
    assert_eq!(disk.serial.as_deref(), Some("vol-loop-1"), "{printed}");
    let target = disk.target.dev.clone();
    let saved: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&record).expect("the record was written"))
            .expect("the record is JSON");
    assert_eq!(
        saved["attachment"]["target_dev"],
        target.as_str(),
        "{saved}"
    );
    assert_eq!(saved["attachment"]["domain"], h.domain.as_str(), "{saved}");
    let rows = raw_domblklist(&h);
    assert!(
        rows.contains(&["block".into(), "disk".into(), target.clone(), lo.0.clone()]),
        "virsh domblklist does not show block disk {target} -> {}: {rows:?}",
        lo.0
    );
    // the guest sees a disk of that serial and size (48 MiB = 98304 sectors)
    let (add, seen) = wait_console(
        &h,
        mark,
        &["block add", &guest_serial("vol-loop-1"), "sectors=98304"],
    );
    let guest_seen = seen - t0;
    let gdev = guest_dev(&add);

    // detach
    let mark = console_lines(&h).len();
    let t0 = Instant::now();
    let out = run(Command::new(&exe)
        .arg("--detach")
        .arg("--record")
        .arg(&record)
        .arg("--lock-dir")
        .arg(&locks));
    let detach_time = t0.elapsed();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains(&format!("dev=\"{target}\""))
            || printed.contains(&format!("dev='{target}'")),
        "detach did not print the disk it detached:\n{printed}"
    );
    assert!(!record.exists(), "the record was not removed");
    let rows = raw_domblklist(&h);
    assert!(
        !rows.iter().any(|r| r[2] == target),
        "virsh domblklist still shows {target}: {rows:?}"
    );
    assert_eq!(
        rows, before,
        "the guest's disks differ from before the attach"
    );
    wait_console(&h, mark, &[&format!("block remove {gdev}")]);
    let leftover: Vec<_> = fs::read_dir(volumes.join("attachments"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftover.is_empty(),
        "attachment files left after detach: {leftover:?}"
    );
    // the local protocol leaves the device as it found it
    assert!(
        Path::new(&lo.0).exists(),
        "{} is gone after detach: the local protocol must not remove it",
        lo.0
    );

    println!(
        "attach_to_guest over {} as {target} (guest {gdev}): attach {}, guest saw it after \
         {}, detach {}",
        lo.0,
        secs(attach_time),
        secs(guest_seen),
        secs(detach_time)
    );
}

#[test]
#[ignore = "needs the real-libvirt harness: tests/libvirt/run.sh"]
fn virsh_domain_live_and_config_flags_change_the_persistent_definition_too() {
    let h = harness();
    let dom = VirshDomain::new(&h.domain, HostContext::system()).with_uri(&h.uri);
    let before = dom.disk_targets().expect("disk_targets");
    let target = next_device_name(DiskBus::Virtio, &before).expect("a free virtio name");
    assert!(
        domain_disk_xml(&h, &target, true).is_none(),
        "{target} already in the persistent definition"
    );

    let image = h.scratch.join("config-disk.img");
    sparse_file(&image, 16 << 20);
    let mut disk = DiskConfig::file(&image, DiskTarget::new(&target, DiskBus::Virtio));
    disk.serial = Some("hostbrick-config-disk".into());
    let xml = disk.to_xml().expect("to_xml");

    let mark = console_lines(&h).len();
    dom.attach_device(&xml, DomainFlags::LIVE_AND_CONFIG)
        .expect("attach_device --live --config");
    assert!(dom.disk_targets().expect("disk_targets").contains(&target));
    let persistent = domain_disk_xml(&h, &target, true)
        .unwrap_or_else(|| panic!("--config: {target} not in the persistent definition"));
    let back = DiskConfig::from_xml(&persistent)
        .unwrap_or_else(|e| panic!("from_xml of the persistent disk failed: {e}\n{persistent}"));
    assert_eq!(back.source, DiskSource::File(image.clone()), "{persistent}");
    assert_eq!(back.serial, disk.serial, "{persistent}");
    // 16 MiB = 32768 sectors; the 21-byte serial reaches the guest as its first 20 bytes
    let (add, _) = wait_console(
        &h,
        mark,
        &[
            "block add",
            &guest_serial("hostbrick-config-disk"),
            "sectors=32768",
        ],
    );
    assert!(add.contains("serial=hostbrick-config-dis "), "{add}");
    let gdev = guest_dev(&add);

    let mark = console_lines(&h).len();
    dom.detach_device(&xml, DomainFlags::LIVE_AND_CONFIG)
        .expect("detach_device --live --config");
    assert!(!dom.disk_targets().expect("disk_targets").contains(&target));
    assert!(
        domain_disk_xml(&h, &target, true).is_none(),
        "--config: {target} still in the persistent definition after detach"
    );
    wait_console(&h, mark, &[&format!("block remove {gdev}")]);
}

/// The volume's key in the key directory (hex, as `openssl rand -hex 32` writes it) and the
/// passphrase QEMU gets from it: the same hex text, as os-brick and Nova derive it.
const LUKS_KEY_HEX: &str = "5ec7e7015ec7e7025ec7e7035ec7e7045ec7e7055ec7e7065ec7e7075ec7e708";

/// What the plaintext holds: an MBR with two partitions the guest's kernel finds only if
/// it reads the decrypted disk (start and length in 512-byte sectors), and a marker text.
const PARTITIONS: [(u32, u32); 2] = [(2048, 4321), (8192, 1234)];
const PLAINTEXT_MARKER: &[u8] = b"HOSTBRICK-NATIVE-LUKS-PLAINTEXT";

fn mbr_plaintext() -> Vec<u8> {
    let mut b = vec![0u8; 1 << 20];
    for (i, (start, len)) in PARTITIONS.iter().enumerate() {
        let e = 446 + 16 * i;
        b[e + 4] = 0x83; // Linux
        b[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
        b[e + 12..e + 16].copy_from_slice(&len.to_le_bytes());
    }
    b[510] = 0x55;
    b[511] = 0xaa;
    b[4096..4096 + PLAINTEXT_MARKER.len()].copy_from_slice(PLAINTEXT_MARKER);
    b
}

fn private_file(path: &Path, content: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    std::io::Write::write_all(&mut f, content).expect("write");
}

/// `virsh secret-list` as (uuid, usage) rows, read here without hostbrick's parser.
fn raw_secret_list(h: &Harness) -> Vec<(String, String)> {
    let out = run(Command::new("virsh").args(["-q", "-c", &h.uri, "secret-list"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let (uuid, usage) = l.split_once(char::is_whitespace)?;
            Some((uuid.to_string(), usage.trim().to_string()))
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
#[ignore = "needs the real-libvirt harness: tests/libvirt/run.sh"]
fn attach_to_guest_native_luks_the_guest_reads_the_plaintext_and_detach_removes_the_secret() {
    use std::os::unix::fs::PermissionsExt;
    let h = harness();
    let exe = PathBuf::from(var("HOSTBRICK_LIBVIRT_ATTACH_TO_GUEST"));
    let dir = h.scratch.join("native-luks");
    fs::create_dir_all(&dir).expect("scratch dir");
    let keys = dir.join("keys");
    fs::create_dir(&keys).expect("key dir");
    fs::set_permissions(&keys, fs::Permissions::from_mode(0o700)).expect("chmod key dir");
    private_file(&keys.join("vol-luks-1-key"), LUKS_KEY_HEX.as_bytes());
    // qemu-img reads the passphrase from a 0600 file too (never its command line).
    let pass = dir.join("passphrase");
    private_file(&pass, LUKS_KEY_HEX.as_bytes());

    // A LUKS1 volume of 32 MiB of payload (QEMU's luks format writes LUKS1), the plaintext
    // written through QEMU's own encryption.
    let image = dir.join("vol-luks-1.luks");
    let secret_obj = format!("secret,id=sec0,file={}", pass.display());
    let t0 = Instant::now();
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "luks", "--object", &secret_obj])
        .args(["-o", "key-secret=sec0,iter-time=50"])
        .arg(&image)
        .arg("32M"));
    let plain = dir.join("plaintext.raw");
    fs::write(&plain, mbr_plaintext()).expect("plaintext");
    run(Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw"])
        .arg(&plain)
        .args(["--object", &secret_obj, "--target-image-opts"])
        .arg(format!(
            "driver=luks,file.filename={},key-secret=sec0",
            image.display()
        )));
    let make_time = t0.elapsed();
    let raw = fs::read(&image).expect("read the image");
    assert_eq!(&raw[..6], b"LUKS\xba\xbe", "not a LUKS image");
    assert_eq!(u16::from_be_bytes([raw[6], raw[7]]), 1, "not LUKS1");
    assert!(
        !contains(&raw, PLAINTEXT_MARKER),
        "the encrypted image shows the plaintext"
    );
    let raw_sectors = raw.len() / 512;
    drop(raw);
    let lo = Loop::new(&image);

    let volumes = dir.join("volumes");
    fs::create_dir_all(&volumes).expect("volumes dir");
    let info = volumes.join("vol-luks-1.json");
    fs::write(
        &info,
        serde_json::json!({
            "driver_volume_type": "local",
            "data": {"device_path": lo.0, "encrypted": true},
            "encryption": {"provider": "luks", "cipher": "aes-xts-plain64", "key_size": 256,
                           "control_location": "front-end",
                           "encryption_key_id": "vol-luks-1-key"}
        })
        .to_string(),
    )
    .expect("write connection_info");
    let record = dir.join("vol-luks-1.record.json");
    let locks = dir.join("locks");
    let before = raw_domblklist(&h);
    let secrets_before = raw_secret_list(&h);
    assert!(
        secrets_before.is_empty(),
        "libvirt has secrets already: {secrets_before:?}"
    );

    // A wrong key: QEMU cannot open the LUKS header, the attach fails and is rolled back,
    // the secret it defined is gone, nothing reached the guest.
    const WRONG_KEY_HEX: &str = "00000000000000000000000000000000000000000000000000000000deadbeef";
    private_file(&keys.join("wrong-key"), WRONG_KEY_HEX.as_bytes());
    let bad_info = volumes.join("vol-luks-bad.json");
    let mut bad: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&info).expect("read connection_info"))
            .expect("JSON");
    bad["encryption"]["encryption_key_id"] = "wrong-key".into();
    fs::write(&bad_info, bad.to_string()).expect("write connection_info");
    let t0 = Instant::now();
    let out = Command::new(&exe)
        .args(["--domain", &h.domain, "--uri", &h.uri, "--live"])
        .arg("--connection-info")
        .arg(&bad_info)
        .arg("--record")
        .arg(dir.join("bad.record.json"))
        .arg("--lock-dir")
        .arg(&locks)
        .arg("--key-dir")
        .arg(&keys)
        .args(["--decryption", "native"])
        .output()
        .expect("run attach_to_guest");
    let wrong_key_time = t0.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("attach_to_guest with the wrong key:\n{stderr}");
    assert!(!out.status.success(), "the wrong key attached");
    assert!(
        stderr.contains("error[orchestration]")
            && stderr.contains("step attach_device")
            && stderr.contains(&format!("the key does not open {}", lo.0)),
        "{stderr}"
    );
    assert!(
        !stderr.contains(WRONG_KEY_HEX) && !stderr.contains(LUKS_KEY_HEX),
        "a passphrase in the error"
    );
    assert!(
        raw_secret_list(&h).is_empty(),
        "the secret was not undefined"
    );
    assert_eq!(raw_domblklist(&h), before, "a disk was left in the guest");
    assert!(!dir.join("bad.record.json").exists());

    // attach, QEMU decrypting
    let mark = console_lines(&h).len();
    let t0 = Instant::now();
    let out = run(Command::new(&exe)
        .args(["--domain", &h.domain, "--uri", &h.uri, "--live"])
        .arg("--connection-info")
        .arg(&info)
        .arg("--record")
        .arg(&record)
        .arg("--lock-dir")
        .arg(&locks)
        .arg("--key-dir")
        .arg(&keys)
        .args(["--decryption", "native"]));
    let attach_time = t0.elapsed();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("attach_to_guest printed:\n{printed}");
    for text in [
        printed.clone(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        fs::read_to_string(&record).expect("the record was written"),
    ] {
        assert!(
            !text.contains(LUKS_KEY_HEX),
            "the passphrase shows in {text}"
        );
    }
    validate_disk_xml(printed.trim()).expect("libvirt's schema");
    let disk = DiskConfig::from_xml(printed.trim())
        .unwrap_or_else(|e| panic!("the printed XML does not read back: {e}\n{printed}"));
    assert_eq!(disk.source, DiskSource::Block(PathBuf::from(&lo.0)));
    let uuid = disk
        .encryption
        .as_ref()
        .unwrap_or_else(|| panic!("no <encryption> in {printed}"))
        .secret_uuid
        .clone();
    let target = disk.target.dev.clone();
    // libvirt's secret: this volume's, private (its value cannot be read back)
    let secrets = raw_secret_list(&h);
    assert_eq!(
        secrets,
        [(uuid.clone(), "volume vol-luks-1".to_string())],
        "virsh secret-list"
    );
    let dumped = run(Command::new("virsh").args(["-c", &h.uri, "secret-dumpxml", &uuid]));
    let dumped = String::from_utf8_lossy(&dumped.stdout);
    assert!(
        dumped.contains("private='yes'") && dumped.contains("ephemeral='no'"),
        "{dumped}"
    );
    let get = Command::new("virsh")
        .args(["-c", &h.uri, "secret-get-value", &uuid])
        .output()
        .expect("virsh secret-get-value");
    assert!(
        !get.status.success() && !String::from_utf8_lossy(&get.stdout).contains(LUKS_KEY_HEX),
        "a private secret's value was handed out"
    );
    // libvirt's live view: the encrypted block device with QEMU's luks decryption
    let live = live_disk_xml(&h, &target).expect("the disk in virsh dumpxml");
    println!("libvirt's live disk:\n{live}");
    let back = DiskConfig::from_xml(&live)
        .unwrap_or_else(|e| panic!("from_xml of libvirt's disk XML failed: {e}\n{live}"));
    assert_eq!(back.encryption, disk.encryption, "{live}");
    // The guest sees the decrypted size (32 MiB = 65536 sectors, the raw device has
    // {raw_sectors}) and finds the partitions of the plaintext: it reads the plaintext.
    let (add, seen) = wait_console(
        &h,
        mark,
        &["block add", &guest_serial("vol-luks-1"), "sectors=65536"],
    );
    let guest_seen = seen - t0;
    let gdev = guest_dev(&add);
    for n in 1..=PARTITIONS.len() {
        wait_console(&h, mark, &[&format!("block add {gdev}{n} ")]);
    }
    assert!(
        !console_lines(&h)
            .iter()
            .skip(mark)
            .any(|l| l.contains(&format!("block add {gdev}{} ", PARTITIONS.len() + 1))),
        "the guest found a partition the plaintext does not have"
    );
    // nothing left in hostbrick's state dir: the secret value file is gone
    let value_dir = Path::new("/run/hostbrick/secrets");
    let left: Vec<_> = fs::read_dir(value_dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "secret value files left: {left:?}");

    // detach
    let mark = console_lines(&h).len();
    let t0 = Instant::now();
    run(Command::new(&exe)
        .arg("--detach")
        .arg("--record")
        .arg(&record)
        .arg("--lock-dir")
        .arg(&locks));
    let detach_time = t0.elapsed();
    assert!(!record.exists(), "the record was not removed");
    let rows = raw_domblklist(&h);
    assert_eq!(
        rows, before,
        "the guest's disks differ from before the attach"
    );
    wait_console(&h, mark, &[&format!("block remove {gdev}")]);
    let secrets = raw_secret_list(&h);
    assert!(
        secrets.is_empty(),
        "libvirt secrets left after detach: {secrets:?}"
    );
    assert!(
        Path::new(&lo.0).exists(),
        "{} is gone after detach: the local protocol must not remove it",
        lo.0
    );

    println!(
        "native LUKS over {} ({raw_sectors} raw sectors) as {target} (guest {gdev}, 65536 \
         sectors, partitions {gdev}1..{gdev}{}): image made in {}, attach {}, guest saw it \
         after {}, detach {}; secret {uuid} defined, then gone; a wrong key refused and \
         rolled back in {}",
        lo.0,
        PARTITIONS.len(),
        secs(make_time),
        secs(attach_time),
        secs(guest_seen),
        secs(detach_time),
        secs(wrong_key_time)
    );
}
