//! Mount calls that re-point names, and kernel doors. Each runs in a forked child (a
//! denial may kill the caller); the arguments are chosen so that an allowed call is
//! harmless: mounts land in a private mount namespace the test made, and every door
//! call fails early in the kernel (nothing is loaded, unloaded or replaced).

use std::ffi::CString;

use super::{
    attacks::{in_child, unix_connect},
    errno, outcome,
};

/// Runs one command; `None` if `w[0]` is not one of these.
pub(crate) fn run(w: &[String]) -> Option<String> {
    mounts(w).or_else(|| doors(w))
}

fn mounts(w: &[String]) -> Option<String> {
    let arg = |i: usize| w.get(i).map_or("", String::as_str);
    let out = match arg(0) {
        // mount --bind OTHER TARGET, then connect to TARGET.
        "bind-connect" => in_child(|| {
            let rc = mount(arg(1), arg(2), None, libc::MS_BIND);
            if rc == "ok" { unix_connect(arg(2)) } else { rc }
        }),
        "mount-tmpfs" => in_child(|| mount("leash-probe", arg(1), Some("tmpfs"), 0)),
        // chroot JAIL, then connect to PATH inside it.
        "chroot-connect" => in_child(|| {
            let rc = with_path(arg(1), |p| unsafe { libc::chroot(p) });
            if rc == "ok" {
                // SAFETY: a static path.
                unsafe { libc::chdir(c"/".as_ptr()) };
                unix_connect(arg(2))
            } else {
                rc
            }
        }),
        // chroot JAIL in a process that shares this one's root and cwd (CLONE_FS),
        // then connect to PATH from here: the root changed under this process.
        "fs-chroot-connect" => in_child(|| {
            // SAFETY: a fork-like clone (no shared memory) of this single-threaded
            // process; the child only calls chroot and leaves with _exit.
            let pid = unsafe {
                libc::syscall(libc::SYS_clone, libc::CLONE_FS | libc::SIGCHLD, 0, 0, 0, 0)
            };
            if pid < 0 {
                return format!("error clone errno {}", errno());
            }
            if pid == 0 {
                let _ = with_path(arg(1), |p| unsafe { libc::chroot(p) });
                // SAFETY: leaving the clone without destructors.
                unsafe { libc::_exit(0) };
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid as libc::pid_t, &raw mut status, 0) };
            // SAFETY: a static path.
            unsafe { libc::chdir(c"/".as_ptr()) };
            unix_connect(arg(2))
        }),
        "pivot-root" => in_child(|| {
            let (Ok(new), Ok(old)) = (CString::new(arg(1)), CString::new(arg(2))) else {
                return "error bad path".into();
            };
            // SAFETY: two NUL-terminated paths.
            outcome(
                unsafe { libc::syscall(libc::SYS_pivot_root, new.as_ptr(), old.as_ptr()) } as i32,
            )
        }),
        // move_mount of an attached mount FROM onto TO.
        "move-mount" => in_child(|| {
            let (Ok(from), Ok(to)) = (CString::new(arg(1)), CString::new(arg(2))) else {
                return "error bad path".into();
            };
            // SAFETY: two NUL-terminated paths relative to the cwd; no flags.
            outcome(unsafe {
                libc::syscall(
                    libc::SYS_move_mount,
                    libc::AT_FDCWD,
                    from.as_ptr(),
                    libc::AT_FDCWD,
                    to.as_ptr(),
                    0,
                )
            } as i32)
        }),
        "fsopen" => in_child(|| {
            let Ok(fs) = CString::new(arg(1)) else {
                return "error bad name".into();
            };
            // SAFETY: fsopen(name, 0).
            outcome(unsafe { libc::syscall(libc::SYS_fsopen, fs.as_ptr(), 0) } as i32)
        }),
        // open_tree(PATH, OPEN_TREE_CLONE): a detached copy, the first step of move_mount.
        "open-tree-clone" => in_child(|| {
            with_path(arg(1), |p| unsafe {
                libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, p, 1) as i32
            })
        }),
        // open_tree(PATH, 0): an O_PATH descriptor of PATH, nothing copied.
        "open-tree" => in_child(|| {
            with_path(arg(1), |p| unsafe {
                libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, p, 0) as i32
            })
        }),
        // mount_setattr(PATH, 0, {attr_set: MOUNT_ATTR_RDONLY}) on a mount of the test.
        "mount-setattr-ro" => in_child(|| {
            let attr: [u64; 4] = [1, 0, 0, 0];
            with_path(arg(1), |p| unsafe {
                libc::syscall(
                    libc::SYS_mount_setattr,
                    libc::AT_FDCWD,
                    p,
                    0,
                    attr.as_ptr(),
                    size_of_val(&attr),
                ) as i32
            })
        }),
        // In a new user and mount namespace (binfmt_misc has an instance per user
        // namespace from Linux 6.7 on): mount binfmt_misc at DIR and register a
        // handler that runs INTERP for files starting with MAGIC.
        "binfmt-userns" => in_child(|| binfmt_userns(arg(1), arg(2), arg(3))),
        _ => return None,
    };
    Some(out)
}

/// See `binfmt-userns`: the mount's outcome when it fails, else the registration's
/// (`ok`, or `register errno N`).
fn binfmt_userns(dir: &str, magic: &str, interp: &str) -> String {
    // SAFETY: unshare with constant flags.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } < 0 {
        return format!("error unshare errno {}", errno());
    }
    for (file, map) in [
        ("/proc/self/setgroups", "deny"),
        ("/proc/self/uid_map", "0 0 1"),
        ("/proc/self/gid_map", "0 0 1"),
    ] {
        if let Err(e) = std::fs::write(file, map) {
            return format!("error {file} {e}");
        }
    }
    let rc = mount("binfmt_misc", dir, Some("binfmt_misc"), 0);
    if rc != "ok" {
        return rc;
    }
    let rule = format!(":leash-probe:M::{magic}::{interp}:");
    match std::fs::OpenOptions::new()
        .write(true)
        .open(format!("{dir}/register"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, rule.as_bytes()))
    {
        Ok(()) => "ok".into(),
        Err(e) => format!("register errno {}", e.raw_os_error().unwrap_or(-1)),
    }
}

fn doors(w: &[String]) -> Option<String> {
    let arg = |i: usize| w.get(i).map_or("", String::as_str);
    let num = |i: usize| arg(i).parse::<i64>().unwrap_or(-1);
    let out = match arg(0) {
        // init_module with 128 zero bytes: longer than an ELF header, no image.
        "init-module" => in_child(|| {
            let image = [0u8; 128];
            // SAFETY: a local buffer of the given length, empty arguments.
            outcome(unsafe {
                libc::syscall(
                    libc::SYS_init_module,
                    image.as_ptr(),
                    image.len(),
                    c"".as_ptr(),
                )
            } as i32)
        }),
        "finit-module" => in_child(|| {
            with_open(arg(1), |fd| unsafe {
                libc::syscall(libc::SYS_finit_module, fd, c"".as_ptr(), 0) as i32
            })
        }),
        "delete-module" => in_child(|| {
            with_path(arg(1), |p| unsafe {
                libc::syscall(libc::SYS_delete_module, p, libc::O_NONBLOCK) as i32
            })
        }),
        // kexec_load with no segments and a flag no kernel knows (0x8000, without
        // KEXEC_ON_CRASH): refused before anything is loaded or unloaded.
        "kexec-load" => in_child(|| {
            // SAFETY: no pointers are dereferenced with zero segments.
            outcome(unsafe {
                libc::syscall(libc::SYS_kexec_load, 0, 0, std::ptr::null::<u8>(), 0x8000)
            } as i32)
        }),
        // kexec_file_load of FILE (no kernel image) with KEXEC_FILE_NO_INITRAMFS: the
        // kernel reads it, finds no image it can boot, and changes nothing.
        "kexec-file-load" => in_child(|| {
            with_open(arg(1), |fd| unsafe {
                libc::syscall(libc::SYS_kexec_file_load, fd, -1, 1, c"".as_ptr(), 4) as i32
            })
        }),
        "iopl" => in_child(|| {
            // SAFETY: iopl(level); the process does no port I/O and exits.
            outcome(unsafe { libc::syscall(libc::SYS_iopl, num(1)) } as i32)
        }),
        "ioperm" => in_child(|| {
            // SAFETY: ioperm(from, num, on); as above.
            outcome(unsafe { libc::syscall(libc::SYS_ioperm, num(1), num(2), num(3)) } as i32)
        }),
        _ => return None,
    };
    Some(out)
}

/// `mount(source, target, fstype, flags, NULL)`.
fn mount(source: &str, target: &str, fstype: Option<&str>, flags: libc::c_ulong) -> String {
    let (Ok(src), Ok(dst)) = (CString::new(source), CString::new(target)) else {
        return "error bad path".into();
    };
    let fstype = fstype.map(|t| CString::new(t).unwrap_or_default());
    let ty = fstype.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
    // SAFETY: NUL-terminated strings (or NULL type) and no data.
    outcome(unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), ty, flags, std::ptr::null()) })
}

fn with_path(path: &str, f: impl FnOnce(*const libc::c_char) -> i32) -> String {
    match CString::new(path) {
        Ok(c) => outcome(f(c.as_ptr())),
        Err(_) => "error bad path".into(),
    }
}

/// Opens `path` read-only and runs `f` on the fd.
fn with_open(path: &str, f: impl FnOnce(libc::c_int) -> i32) -> String {
    let Ok(c) = CString::new(path) else {
        return "error bad path".into();
    };
    // SAFETY: opening a path we were given.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return format!("error open errno {}", errno());
    }
    outcome(f(fd))
}
