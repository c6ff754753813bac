//! Checks of single values shared by the sections: paths, the trust domain, the log level.

use std::{
    os::unix::ffi::OsStrExt,
    path::{Component, Path},
};

use super::{BPFFS_ROOT, ConfigError, error::invalid};

/// Longest trust domain (a DNS name's limit).
const TRUST_DOMAIN_MAX: usize = 255;

/// An absolute path with no `..`.
pub(super) fn check_path(
    field: &'static str,
    path: &Path,
    example: &str,
) -> Result<(), ConfigError> {
    if !path.is_absolute() {
        return Err(invalid(
            field,
            format!(
                "{:?} is not an absolute path: give one starting with /, like {example}",
                path.display()
            ),
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(invalid(
            field,
            format!(
                "{} contains `..`: write the path without it, like {example}",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// [`check_path`], naming a file rather than a directory.
pub(super) fn check_file_path(
    field: &'static str,
    path: &Path,
    example: &str,
) -> Result<(), ConfigError> {
    check_path(field, path, example)?;
    if path.as_os_str().as_bytes().ends_with(b"/") || path.file_name().is_none() {
        return Err(invalid(
            field,
            format!(
                "{} names a directory: give a file path, like {example}",
                path.display()
            ),
        ));
    }
    Ok(())
}

pub(super) fn check_pin_dir(path: &Path) -> Result<(), ConfigError> {
    const EXAMPLE: &str = "/sys/fs/bpf/leash";
    check_path("pin_dir", path, EXAMPLE)?;
    // RootDir, sys, fs, bpf and at least one more.
    if !path.starts_with(BPFFS_ROOT) || path.components().count() < 5 {
        return Err(invalid(
            "pin_dir",
            format!(
                "{} is not a directory under {BPFFS_ROOT}/: pins only survive on bpffs, so \
                 use a subdirectory of it, like {EXAMPLE}",
                path.display()
            ),
        ));
    }
    Ok(())
}

pub(super) fn check_trust_domain(domain: &str) -> Result<(), ConfigError> {
    const FIELD: &str = "trust_domain";
    let fail = |message: String| Err(invalid(FIELD, message));
    if domain.is_empty() {
        return fail("is empty: give a DNS-like name, like leash.local or example.org".into());
    }
    if let Some((scheme, rest)) = domain.split_once("://") {
        return fail(format!(
            "{domain:?} has a scheme ({scheme}://): give the bare domain, like {:?}",
            rest.split('/').next().unwrap_or_default()
        ));
    }
    if domain.chars().any(|c| c.is_ascii_uppercase()) {
        return fail(format!(
            "{domain:?} has uppercase letters: write it in lowercase, {:?}",
            domain.to_ascii_lowercase()
        ));
    }
    if let Some(c) = domain
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-'))
    {
        return fail(format!(
            "{domain:?} contains {c:?}: use only lowercase letters, digits, dots and dashes, \
             like leash.local"
        ));
    }
    if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
        return fail(format!(
            "{domain:?} has an empty label: separate non-empty labels by single dots, like \
             leash.local"
        ));
    }
    if domain.len() > TRUST_DOMAIN_MAX {
        return fail(format!(
            "is {} characters long: use at most {TRUST_DOMAIN_MAX}",
            domain.len()
        ));
    }
    Ok(())
}

pub(super) fn check_log_level(level: &str) -> Result<(), ConfigError> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let level = level.trim();
    if level.is_empty() {
        return Err(invalid(
            "log_level",
            "is empty: use error, warn, info, debug or trace",
        ));
    }
    // Filters with targets (`leash=debug,info`) are left to the log filter parser.
    let is_filter = level.contains(['=', ',', '[']);
    if !is_filter && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
        return Err(invalid(
            "log_level",
            format!(
                "unknown level {level:?}: use error, warn, info, debug or trace (or a filter \
                 like leash=debug,info)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Config, tests::invalid_field};

    #[test]
    fn relative_or_misplaced_paths_are_rejected() {
        let (field, message) = invalid_field("state_dir: var/lib/leash");
        assert_eq!(field, "state_dir");
        assert!(message.contains("absolute"), "{message}");
        assert_eq!(invalid_field("state_dir: \"\"").0, "state_dir");
        assert_eq!(invalid_field("audit_log: audit.jsonl").0, "audit_log");
        assert_eq!(invalid_field("audit_log: /var/log/leash/").0, "audit_log");
        assert_eq!(invalid_field("socket: {path: leash.sock}").0, "socket.path");
        let long = format!("socket: {{path: /{}}}", "s".repeat(120));
        assert_eq!(invalid_field(&long).0, "socket.path");

        let (field, message) = invalid_field("pin_dir: /tmp/leash");
        assert_eq!(field, "pin_dir");
        assert!(message.contains("/sys/fs/bpf/"), "{message}");
        assert_eq!(invalid_field("pin_dir: /sys/fs/bpf").0, "pin_dir");
        assert_eq!(invalid_field("pin_dir: /sys/fs/bpfx/leash").0, "pin_dir");
        assert_eq!(invalid_field("pin_dir: /sys/fs/bpf/../../tmp").0, "pin_dir");
        assert_eq!(invalid_field("pin_dir: sys/fs/bpf/leash").0, "pin_dir");
        Config::from_yaml("pin_dir: /sys/fs/bpf/other/leash").unwrap();
    }

    #[test]
    fn bad_trust_domain_is_rejected() {
        for bad in [
            "\"\"",
            "spiffe://example.org",
            "Example.org",
            "exa_mple.org",
            "example.org/x",
            ".example.org",
            "example..org",
        ] {
            let (field, message) = invalid_field(&format!("trust_domain: {bad}"));
            assert_eq!(field, "trust_domain", "{bad}: {message}");
        }
        let err = Config::from_yaml("trust_domain: spiffe://example.org").unwrap_err();
        assert!(err.to_string().contains("\"example.org\""), "{err}");
        Config::from_yaml("trust_domain: prod-1.example.org").unwrap();
    }

    #[test]
    fn log_level_is_checked() {
        assert_eq!(invalid_field("log_level: loud").0, "log_level");
        assert_eq!(invalid_field("log_level: \"\"").0, "log_level");
        Config::from_yaml("log_level: debug").unwrap();
        Config::from_yaml("log_level: \"leash=debug,info\"").unwrap();
    }
}
