//! File grants (`read:PATH`, `write:PATH`), a task's file rules, and the Landlock
//! domain `leash run` builds from them just before it execs (docs/grants.md, "files").
//!
//! The daemon only records the rules: Landlock restricts the calling process and its
//! descendants, so the process that is about to become the task's command applies it
//! to itself ([`domain::Domain`]). Processes that join a task through the attach API
//! get no domain unless they apply one the same way.
//!
//! `exclude` leaves a path out of an allowed hierarchy: Landlock can only allow, so the
//! hierarchy is replaced by the siblings along the excluded path ([`exclude`]).

use crate::{
    config::FilesConfig,
    grants::GrantError,
    protocol::{FileMode, FileRules},
};

pub mod audit_records;
pub mod domain;
mod exclude;
pub mod within;
pub mod workspace;

pub use domain::{Domain, DomainError, Enforced, Extra, enforcement, kernel_abi};
pub use workspace::{WorkspaceError, check_workspace, remove_tmpdirs, tmpdir_for};

/// One file grant: `read:PATH` or `write:PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileGrant {
    /// `write:` (which implies read).
    pub write: bool,
    pub path: String,
}

/// Parses `read:PATH` or `write:PATH`: an absolute path, no NUL byte.
pub fn parse_grant(spec: &str) -> Result<FileGrant, GrantError> {
    let bad = |reason: &str| GrantError::BadFile {
        spec: spec.to_owned(),
        reason: reason.to_owned(),
    };
    let (write, path) = if let Some(p) = spec.strip_prefix("read:") {
        (false, p)
    } else if let Some(p) = spec.strip_prefix("write:") {
        (true, p)
    } else {
        return Err(bad("it must start with read: or write:"));
    };
    if path.is_empty() {
        return Err(bad("the path is missing"));
    }
    if !path.starts_with('/') {
        return Err(bad("the path must be absolute"));
    }
    if path.contains('\0') {
        return Err(bad("the path contains a NUL byte"));
    }
    Ok(FileGrant {
        write,
        path: path.to_owned(),
    })
}

/// A new task's file rules: its mode and grants, and the config's base sets.
pub fn rules(
    mode: FileMode,
    grants: &[String],
    base: &FilesConfig,
) -> Result<FileRules, GrantError> {
    let mut rules = FileRules {
        mode,
        base_read: base.read.clone(),
        base_write: base.write.clone(),
        exclude: base.exclude.clone(),
        ..FileRules::default()
    };
    for spec in grants {
        let g = parse_grant(spec)?;
        let list = if g.write {
            &mut rules.write
        } else {
            &mut rules.read
        };
        if !list.contains(&g.path) {
            list.push(g.path);
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_grants() {
        assert_eq!(
            parse_grant("read:/data").unwrap(),
            FileGrant {
                write: false,
                path: "/data".into()
            }
        );
        assert!(parse_grant("write:/srv/out").unwrap().write);
        let err = |s: &str| parse_grant(s).unwrap_err().to_string();
        assert!(
            err("exec:/x").contains("read: or write:"),
            "{}",
            err("exec:/x")
        );
        assert!(err("read:data").contains("absolute"));
        assert!(err("write:").contains("missing"));
        assert!(err("read:/a\0b").contains("NUL"));
        assert!(err("/data").contains("\"/data\""), "names the grant");
    }

    #[test]
    fn rules_split_grants_and_carry_the_base() {
        let base = FilesConfig::default();
        let r = rules(
            FileMode::Restricted,
            &["read:/d".into(), "write:/w".into(), "read:/d".into()],
            &base,
        )
        .unwrap();
        assert_eq!(r.read, ["/d"]);
        assert_eq!(r.write, ["/w"]);
        assert_eq!(r.base_read, base.read);
        assert!(r.exclude.iter().any(|e| e == "/etc/shadow"));
        assert!(rules(FileMode::Writes, &["x:/y".into()], &base).is_err());
    }
}
