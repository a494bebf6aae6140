//! libvirt helpers: checking a `<disk>` element against libvirt's own schema.

/// Validates a `<disk>` element against libvirt's own RNG schema: wraps it in a minimal
/// domain and runs `virt-xml-validate` (Debian packages `libvirt-clients` and
/// `libxml2-utils`). Returns `Ok(false)` when the validator is not installed on a developer
/// machine; where `HOSTBRICK_SCHEMA_CHECK=required` (set by `scripts/test`, so in CI) or `CI`
/// is set, a missing validator is an error, so the check cannot silently stop running.
pub fn validate_disk_xml(disk_xml: &str) -> std::result::Result<bool, String> {
    let Ok(validator) = which::which("virt-xml-validate") else {
        let required = std::env::var("HOSTBRICK_SCHEMA_CHECK").is_ok_and(|v| v == "required")
            || std::env::var_os("CI").is_some();
        if required {
            return Err("virt-xml-validate is not installed (the schema check is required)".into());
        }
        eprintln!("virt-xml-validate not installed: disk XML not schema-checked");
        return Ok(false);
    };
    let domain = format!(
        "<domain type='qemu'>\n<name>hostbrick-schema-check</name>\n<memory unit='MiB'>64</memory>\n\
         <os><type arch='x86_64'>hvm</type></os>\n<devices>\n{disk_xml}\n</devices>\n</domain>\n"
    );
    let mut file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    std::io::Write::write_all(&mut file, domain.as_bytes()).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(validator)
        .arg(file.path())
        .arg("domain")
        .output()
        .map_err(|e| format!("running virt-xml-validate: {e}"))?;
    if out.status.success() {
        Ok(true)
    } else {
        Err(format!(
            "virt-xml-validate rejected the disk:\n{disk_xml}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
