//! Files that decide who may do what (the policy file, the JWKS) must be as trusted as
//! the daemon: owned by root or the daemon's uid, and writable by no one else. A policy
//! or key set that another user can rewrite would hand that user every grant.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// Why a file is not trusted; the message names the path and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot check {field} {}: {source}", path.display())]
    Stat {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{field} {} is writable by its group or by others (mode {mode:04o}), so they could \
         rewrite it: run `chmod go-w {}`",
        path.display(), path.display()
    )]
    Writable {
        field: &'static str,
        path: PathBuf,
        mode: u32,
    },
    #[error(
        "{field} {} is owned by uid {owner}, not by root or the daemon's uid {me}, so that \
         user could rewrite it: run `chown root {}`",
        path.display(), path.display()
    )]
    Owner {
        field: &'static str,
        path: PathBuf,
        owner: u32,
        me: u32,
    },
}

/// Checks `path` (a file, or a directory and the `*.json` files in it) and the
/// directory holding it. A directory with the sticky bit (like `/tmp`) may be
/// world-writable: others cannot rename or remove what they do not own there.
pub fn check(field: &'static str, path: &Path) -> Result<(), TrustError> {
    check_one(field, path, false)?;
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|source| TrustError::Stat {
            field,
            path: path.to_owned(),
            source,
        })?;
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                check_one(field, &p, false)?;
            }
        }
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        check_one(field, parent, true)?;
    }
    Ok(())
}

fn check_one(field: &'static str, path: &Path, sticky_ok: bool) -> Result<(), TrustError> {
    // The file a symlink names is what gets read.
    let meta = std::fs::metadata(path).map_err(|source| TrustError::Stat {
        field,
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.mode() & 0o7777;
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !(sticky_ok && sticky && meta.is_dir()) {
        return Err(TrustError::Writable {
            field,
            path: path.to_owned(),
            mode,
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(TrustError::Owner {
            field,
            path: path.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    Ok(())
}

/// Checks the policy file and the JWKS path the config names, if any.
pub fn check_config(config: &crate::config::Config) -> Result<(), TrustError> {
    if let Some(f) = &config.policy.file {
        check("policy.file", f)?;
    }
    if let Some(t) = &config.auth.tokens {
        check("auth.tokens.jwks", &t.jwks)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{fs::Permissions, os::unix::fs::PermissionsExt as _};

    use super::*;

    #[test]
    fn writable_or_foreign_files_are_refused_with_the_fix() {
        let dir = std::env::temp_dir().join(format!("leash-trust-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        let file = dir.join("policy.yaml");
        std::fs::write(&file, "rules: []\n").unwrap();
        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        check("policy.file", &file).unwrap();

        for mode in [0o666, 0o664, 0o646] {
            std::fs::set_permissions(&file, Permissions::from_mode(mode)).unwrap();
            let e = check("policy.file", &file).unwrap_err().to_string();
            assert!(e.contains("policy.file"), "{e}");
            assert!(e.contains(&file.display().to_string()), "{e}");
            assert!(e.contains("chmod go-w"), "{e}");
        }
        std::fs::set_permissions(&file, Permissions::from_mode(0o600)).unwrap();

        // A JWKS directory: the directory itself, and every *.json in it.
        let jwks = dir.join("jwks");
        std::fs::create_dir_all(&jwks).unwrap();
        std::fs::set_permissions(&jwks, Permissions::from_mode(0o755)).unwrap();
        let key = jwks.join("a.json");
        std::fs::write(&key, "{}").unwrap();
        std::fs::set_permissions(&key, Permissions::from_mode(0o644)).unwrap();
        check("auth.tokens.jwks", &jwks).unwrap();
        std::fs::set_permissions(&key, Permissions::from_mode(0o666)).unwrap();
        let e = check("auth.tokens.jwks", &jwks).unwrap_err().to_string();
        assert!(e.contains("a.json"), "{e}");
        std::fs::set_permissions(&key, Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&jwks, Permissions::from_mode(0o777)).unwrap();
        assert!(
            check("auth.tokens.jwks", &jwks).is_err(),
            "a writable directory"
        );
        // The directory holding the file counts too, unless sticky.
        std::fs::set_permissions(&jwks, Permissions::from_mode(0o1777)).unwrap();
        check("auth.tokens.jwks", &key).unwrap();
        std::fs::set_permissions(&jwks, Permissions::from_mode(0o757)).unwrap();
        assert!(check("auth.tokens.jwks", &key).is_err());
        std::fs::set_permissions(&jwks, Permissions::from_mode(0o755)).unwrap();

        // Another owner (tests run as root: give the file to uid 65534).
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
            let e = check("policy.file", &file).unwrap_err().to_string();
            assert!(e.contains("uid 65534") && e.contains("chown root"), "{e}");
        }
        let missing = dir.join("missing.yaml");
        assert!(matches!(
            check("policy.file", &missing),
            Err(TrustError::Stat { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
