//! A private mount namespace for a command, made between fork and exec (before the
//! command is tagged: a tagged process may not mount), so that what the command mounts,
//! moves or pivots never reaches the host.

use std::{ffi::CString, io, os::unix::process::CommandExt as _, process::Command};

/// A mount for [`on_exec`] to make inside the new namespace: file system type and
/// target directory; a directory `old` is created in it (for `pivot_root`).
pub struct Mount<'a> {
    pub fstype: &'a str,
    pub target: &'a str,
}

/// Makes `cmd` start in a new mount namespace with every mount private, then with
/// `mounts` made in it.
pub fn on_exec(cmd: &mut Command, mounts: &[Mount<'_>]) {
    let mounts: Vec<(CString, CString, CString)> = mounts
        .iter()
        .map(|m| {
            (
                CString::new(m.fstype).expect("fstype"),
                CString::new(m.target).expect("target"),
                CString::new(format!("{}/old", m.target)).expect("target"),
            )
        })
        .collect();
    // SAFETY: the closure makes raw unshare, mount and mkdir syscalls only, on strings
    // built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (fstype, target, old) in &mounts {
                check(libc::mount(
                    c"leash-test".as_ptr(),
                    target.as_ptr(),
                    fstype.as_ptr(),
                    0,
                    std::ptr::null(),
                ))?;
                check(libc::mkdir(old.as_ptr(), 0o700))?;
            }
            Ok(())
        });
    }
}

/// A bind mount for [`binds_on_exec`]: `source` over `target`.
pub struct Bind<'a> {
    pub source: &'a str,
    pub target: &'a str,
}

/// Makes `cmd` start in a new mount namespace with every mount private, then with
/// `binds` made in it: as if a mount had landed there before the command ran.
pub fn binds_on_exec(cmd: &mut Command, binds: &[Bind<'_>]) {
    let binds: Vec<(CString, CString)> = binds
        .iter()
        .map(|b| {
            (
                CString::new(b.source).expect("source"),
                CString::new(b.target).expect("target"),
            )
        })
        .collect();
    // SAFETY: the closure makes raw unshare and mount syscalls only, on strings built
    // before the fork.
    unsafe {
        cmd.pre_exec(move || {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (source, target) in &binds {
                check(libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
            }
            Ok(())
        });
    }
}

/// The probe once outside any task, in a namespace made by [`binds_on_exec`].
#[must_use]
pub fn untagged_with_binds(binds: &[Bind<'_>], words: &str) -> String {
    let mut cmd = Command::new(crate::probe());
    binds_on_exec(&mut cmd, binds);
    let out = cmd
        .args(words.split_whitespace())
        .output()
        .expect("spawn the probe");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The probe once outside any task, in a namespace made by [`on_exec`].
#[must_use]
pub fn untagged(mounts: &[Mount<'_>], words: &str) -> String {
    let mut cmd = Command::new(crate::probe());
    on_exec(&mut cmd, mounts);
    let out = cmd
        .args(words.split_whitespace())
        .output()
        .expect("spawn the probe");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
