//! Attempts on leash's own defences: socket families, unix paths, `bpf()`, ptrace,
//! signals, the pin directory, cgroup moves, fork floods. Each runs in a forked child,
//! since a denial may kill the caller; the outcome is the child's report, or
//! `signal N` when it was killed first.

use std::{ffi::CString, io::Read as _, os::fd::FromRawFd as _};

use super::{errno, outcome};

/// Runs one attack command; `None` if `w[0]` is not one.
pub(crate) fn run(w: &[String]) -> Option<String> {
    let arg = |i: usize| w.get(i).map_or("", String::as_str);
    let num = |i: usize| arg(i).parse::<i64>().unwrap_or(-1);
    let out = match arg(0) {
        "socket" => in_child(|| socket(num(1), num(2), num(3))),
        "unix-connect" => in_child(|| unix_op(arg(1), UnixOp::Connect)),
        "unix-sendto" => in_child(|| unix_op(arg(1), UnixOp::SendTo)),
        "unix-sendmsg" => in_child(|| unix_op(arg(1), UnixOp::SendMsg)),
        "unix-sendmmsg" => in_child(|| unix_op(arg(1), UnixOp::SendMmsg)),
        "unix-uring-connect" => in_child(|| unix_op(arg(1), UnixOp::Uring)),
        "unix-sendmmsg-tail" => in_child(|| unix_sendmmsg_tail(arg(1), arg(2))),
        "bpf-obj-get" => in_child(|| bpf_obj_get(arg(1))),
        "ptrace-attach" => in_child(|| {
            // SAFETY: PTRACE_ATTACH with a pid; no memory is passed.
            let rc = unsafe { libc::ptrace(libc::PTRACE_ATTACH, num(1) as libc::pid_t, 0, 0) };
            outcome(rc as i32)
        }),
        // `vm-write PID [ADDR]`: one byte (0x5a) to ADDR (default: address 0) of PID.
        "vm-write" => in_child(|| vm_write(num(1), arg(2).parse().unwrap_or(0))),
        "pidfd-getfd" => in_child(|| pidfd_getfd(num(1), num(2))),
        "pidfd-open" => in_child(|| {
            // SAFETY: pidfd_open(pid, 0).
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, num(1), 0) };
            outcome(fd as i32)
        }),
        "kill" => in_child(|| {
            // SAFETY: kill(pid, sig).
            outcome(unsafe { libc::kill(num(1) as libc::pid_t, num(2) as i32) })
        }),
        "tkill" => in_child(|| {
            // SAFETY: tkill(tid, sig).
            outcome(unsafe { libc::syscall(libc::SYS_tkill, num(1), num(2)) } as i32)
        }),
        "sigqueue" => in_child(|| sigqueue(num(1), None, num(2))),
        "tgsigqueue" => in_child(|| sigqueue(num(1), Some(num(2)), num(3))),
        "unlink" => in_child(|| path_call(arg(1), |p| unsafe { libc::unlink(p) })),
        "rmdir" => in_child(|| path_call(arg(1), |p| unsafe { libc::rmdir(p) })),
        // unlinkat(open(DIR), NAME): a name relative to a directory descriptor.
        "unlinkat" => in_child(|| {
            let (Ok(dir), Ok(name)) = (CString::new(arg(1)), CString::new(arg(2))) else {
                return "error bad path".into();
            };
            // SAFETY: open and unlinkat with NUL-terminated paths.
            let fd = unsafe { libc::open(dir.as_ptr(), libc::O_PATH | libc::O_DIRECTORY) };
            if fd < 0 {
                return outcome(fd);
            }
            outcome(unsafe { libc::unlinkat(fd, name.as_ptr(), 0) })
        }),
        "umount" => {
            in_child(|| path_call(arg(1), |p| unsafe { libc::umount2(p, libc::MNT_DETACH) }))
        }
        "rename" => in_child(|| {
            let (Ok(a), Ok(b)) = (CString::new(arg(1)), CString::new(arg(2))) else {
                return "error bad path".into();
            };
            // SAFETY: two NUL-terminated paths.
            outcome(unsafe { libc::rename(a.as_ptr(), b.as_ptr()) })
        }),
        "cgroup-move" => in_child(|| cgroup_move(arg(1))),
        "clone3-into-cgroup" => in_child(|| clone3_into_cgroup(arg(1))),
        "fork-fill" => fork_fill(num(1)),
        "fork-race" => fork_race(num(1)),
        "connect-loop" => connect_loop(arg(1), num(2), num(3)),
        // `alloc MIB`: touches MIB mebibytes, then `allocated`.
        "alloc" => {
            let mut held = vec![0u8; usize::try_from(num(1)).unwrap_or(0) << 20];
            for i in (0..held.len()).step_by(4096) {
                held[i] = 1;
            }
            std::hint::black_box(&held);
            "allocated".into()
        }
        // `spin MILLIS`: busy in user space, no system call, then `spun`.
        "spin" => {
            let end = std::time::Instant::now()
                + std::time::Duration::from_millis(u64::try_from(num(1)).unwrap_or(0));
            while std::time::Instant::now() < end {
                std::hint::spin_loop();
            }
            "spun".into()
        }
        "spawn" => spawn(arg(1)),
        "unshare" => in_child(|| {
            // SAFETY: unshare with flags from the test.
            if unsafe { libc::unshare(num(1) as i32) } < 0 {
                return format!("error unshare errno {}", errno());
            }
            super::run(&w[2..])
        }),
        _ => return None,
    };
    Some(out)
}

/// Forks; the child runs `f` and writes its outcome to a pipe. A child killed before
/// it reports shows as `signal N`.
/// `rt_sigqueueinfo(tgid, sig, info)`, or `rt_tgsigqueueinfo(tgid, tid, sig, info)`:
/// a queued signal, which `kill()`'s checks never see.
fn sigqueue(process: i64, thread: Option<i64>, sig: i64) -> String {
    /// `SI_QUEUE`: what `sigqueue(3)` sends; allowed towards another process.
    const SI_QUEUE: i32 = -1;
    // SAFETY: an all-zero siginfo is valid; the fields set below are plain integers.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    info.si_signo = sig as i32;
    info.si_code = SI_QUEUE;
    let info = std::ptr::from_ref(&info);
    // SAFETY: the syscalls read `info` only.
    let rc = unsafe {
        match thread {
            None => libc::syscall(libc::SYS_rt_sigqueueinfo, process, sig, info),
            Some(t) => libc::syscall(libc::SYS_rt_tgsigqueueinfo, process, t, sig, info),
        }
    };
    outcome(rc as i32)
}

pub(super) fn in_child(f: impl FnOnce() -> String) -> String {
    in_child_pid(f).1
}

/// [`in_child`], also returning the child's pid.
fn in_child_pid(f: impl FnOnce() -> String) -> (libc::pid_t, String) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a local array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return (0, format!("error pipe errno {}", errno()));
    }
    // SAFETY: the child runs the attack and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return (0, format!("error fork errno {}", errno()));
    }
    if pid == 0 {
        let out = f();
        // SAFETY: writing our report to the pipe, then leaving without destructors.
        unsafe {
            libc::write(fds[1], out.as_ptr().cast(), out.len());
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end; reading the read end we own.
    unsafe { libc::close(fds[1]) };
    let mut report = String::new();
    let _ = unsafe { std::fs::File::from_raw_fd(fds[0]) }.read_to_string(&mut report);
    let status = super::wait_outcome(pid);
    let out = if status.starts_with("signal") || report.is_empty() {
        status
    } else {
        report
    };
    (pid, out)
}

fn socket(family: i64, ty: i64, proto: i64) -> String {
    // SAFETY: socket() with numbers from the test; the fd is closed at once.
    let fd = unsafe { libc::socket(family as i32, ty as i32, proto as i32) };
    if fd >= 0 {
        // SAFETY: our own fd.
        unsafe { libc::close(fd) };
    }
    outcome(fd)
}

#[derive(Clone, Copy)]
enum UnixOp {
    Connect,
    SendTo,
    SendMsg,
    SendMmsg,
    /// `IORING_OP_CONNECT`: no connect syscall.
    Uring,
}

/// `@name` is abstract.
pub(super) fn unix_addr(path: &str) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let (bytes, skip) = match path.strip_prefix('@') {
        Some(name) => (name.as_bytes(), 1),
        None => (path.as_bytes(), 0),
    };
    for (i, b) in bytes.iter().take(107 - skip).enumerate() {
        sa.sun_path[i + skip] = *b as libc::c_char;
    }
    let len = 2 + skip + bytes.len().min(107 - skip) + usize::from(skip == 0);
    (sa, len as libc::socklen_t)
}

pub(crate) fn unix_connect(path: &str) -> String {
    unix_op(path, UnixOp::Connect)
}

fn unix_op(path: &str, op: UnixOp) -> String {
    let ty = if matches!(op, UnixOp::Connect | UnixOp::Uring) {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_DGRAM
    };
    // SAFETY: a fresh unix socket.
    let fd = unsafe { libc::socket(libc::AF_UNIX, ty, 0) };
    if fd < 0 {
        return format!("error socket errno {}", errno());
    }
    let (mut sa, len) = unix_addr(path);
    let sp = (&raw mut sa).cast::<libc::sockaddr>();
    let mut byte = *b"x";
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: all-zero is a valid msghdr; the fields set below point at live locals.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = sp.cast();
    msg.msg_namelen = len;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: every pointer is to a live local of the right size.
    let rc = unsafe {
        match op {
            UnixOp::Connect => libc::connect(fd, sp, len),
            UnixOp::SendTo => libc::sendto(fd, byte.as_ptr().cast(), 1, 0, sp, len) as i32,
            UnixOp::SendMsg => libc::sendmsg(fd, &raw const msg, 0) as i32,
            UnixOp::SendMmsg => {
                let mut m = [libc::mmsghdr {
                    msg_hdr: msg,
                    msg_len: 0,
                }];
                libc::sendmmsg(fd, m.as_mut_ptr(), 1, 0)
            }
            UnixOp::Uring => {
                let sock = std::os::fd::OwnedFd::from_raw_fd(fd);
                return super::uring_connect(&sock, sp, len);
            }
        }
    };
    outcome(rc)
}

/// One `sendmmsg` of nine datagrams: eight to `granted`, the ninth to `other`. Reports
/// how many went out (`sent N`), or the errno when none did.
fn unix_sendmmsg_tail(granted: &str, other: &str) -> String {
    // SAFETY: a fresh unix datagram socket.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return format!("error socket errno {}", errno());
    }
    let mut addrs = [unix_addr(granted), unix_addr(other)];
    let mut byte = *b"x";
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: all-zero is a valid mmsghdr; the fields set below point at live locals.
    let mut msgs: [libc::mmsghdr; 9] = unsafe { std::mem::zeroed() };
    for (i, m) in msgs.iter_mut().enumerate() {
        let (sa, len) = &mut addrs[usize::from(i == 8)];
        m.msg_hdr.msg_name = (&raw mut *sa).cast();
        m.msg_hdr.msg_namelen = *len;
        m.msg_hdr.msg_iov = &raw mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: nine valid messages. Never blocks on a full receiver (10 datagrams queue
    // by default): that ends the batch, short, instead.
    // (The flags are an int in glibc, unsigned in musl.)
    let rc = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), 9, libc::MSG_DONTWAIT as _) };
    if rc < 0 {
        format!("errno {}", errno())
    } else {
        format!("sent {rc}")
    }
}

/// `bpf(BPF_OBJ_GET, {pathname})`: the first step to editing a pinned map.
fn bpf_obj_get(path: &str) -> String {
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let Ok(c) = CString::new(path) else {
        return "error bad path".into();
    };
    let attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: BPF_OBJ_GET (7) with a valid attr and path.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, 7, &raw const attr, size_of::<ObjAttr>()) };
    outcome(rc as i32)
}

fn vm_write(pid: i64, addr: i64) -> String {
    let byte = [0x5au8; 1];
    let local = libc::iovec {
        iov_base: byte.as_ptr() as *mut libc::c_void,
        iov_len: 1,
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: 1,
    };
    // SAFETY: one local byte to a remote address; the kernel checks both.
    let rc = unsafe {
        libc::process_vm_writev(
            pid as libc::pid_t,
            &raw const local,
            1,
            &raw const remote,
            1,
            0,
        )
    };
    outcome(rc as i32)
}

fn pidfd_getfd(pid: i64, fd: i64) -> String {
    // SAFETY: pidfd_open(pid, 0).
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return format!("error pidfd_open errno {}", errno());
    }
    // SAFETY: pidfd_getfd(pidfd, fd, 0).
    outcome(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) } as i32)
}

fn path_call(path: &str, f: impl FnOnce(*const libc::c_char) -> i32) -> String {
    match CString::new(path) {
        Ok(c) => outcome(f(c.as_ptr())),
        Err(_) => "error bad path".into(),
    }
}

/// Writes our pid into `DIR/cgroup.procs`.
fn cgroup_move(dir: &str) -> String {
    match std::fs::write(
        format!("{dir}/cgroup.procs"),
        std::process::id().to_string(),
    ) {
        Ok(()) => "ok".into(),
        Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
    }
}

/// `clone3` with `CLONE_INTO_CGROUP`: the child is born in `dir`.
fn clone3_into_cgroup(dir: &str) -> String {
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    let Ok(c) = CString::new(dir) else {
        return "error bad path".into();
    };
    // SAFETY: opening a directory we were given.
    let cg = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    if cg < 0 {
        return format!("error open errno {}", errno());
    }
    let args = CloneArgs {
        flags: 0x2_0000_0000, // CLONE_INTO_CGROUP
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cg as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without a new stack behaves like fork; the child exits at once.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &raw const args, size_of::<CloneArgs>()) };
    if pid == 0 {
        // SAFETY: leaving the child.
        unsafe { libc::_exit(0) };
    }
    if pid < 0 {
        return format!("errno {}", errno());
    }
    super::wait_outcome(pid as libc::pid_t);
    "ok".into()
}

/// `posix_spawn`: glibc creates the child with `clone(CLONE_VM | CLONE_VFORK)`.
/// `errno N` when the spawn itself failed (an exec refused with EPERM), else how the
/// child ended.
fn spawn(path: &str) -> String {
    let Ok(c) = CString::new(path) else {
        return "error bad path".into();
    };
    let argv = [c.as_ptr().cast_mut(), std::ptr::null_mut()];
    let envp: [*mut libc::c_char; 1] = [std::ptr::null_mut()];
    let mut pid: libc::pid_t = 0;
    // SAFETY: NUL-terminated argv and envp; no file actions or attributes.
    let rc = unsafe {
        libc::posix_spawn(
            &raw mut pid,
            c.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    if rc != 0 {
        return format!("errno {rc}");
    }
    super::wait_outcome(pid)
}

/// Forks up to `n` children that sleep, in a new process group the test can find and
/// end: `OUTCOME pgid P`, OUTCOME being how many forks succeeded, or how the forking
/// process was stopped.
fn fork_fill(n: i64) -> String {
    let (pgid, out) = in_child_pid(|| {
        // SAFETY: a new process group for this flood.
        unsafe { libc::setpgid(0, 0) };
        let mut made = 0;
        for _ in 0..n {
            // SAFETY: the child only sleeps.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: detach from the pipe and sleep until the test ends the group.
                unsafe {
                    for fd in 0..64 {
                        libc::close(fd);
                    }
                    libc::pause();
                    libc::_exit(0);
                }
            }
            if pid < 0 {
                return format!("errno {} after {made}", errno());
            }
            made += 1;
        }
        format!("forked {made}")
    });
    format!("{out} pgid {pgid}")
}

/// `fork-race THREADS`: in a new process group, THREADS threads released together each
/// fork sleeping children until the process is killed (the process map is full), so
/// several threads of one task race for the map's last slots. Prints the outcome and
/// the group.
fn fork_race(threads: i64) -> String {
    use std::sync::{Arc, Barrier};
    let (pgid, out) = in_child_pid(|| {
        // SAFETY: a new process group for this flood.
        unsafe { libc::setpgid(0, 0) };
        let threads = usize::try_from(threads).unwrap_or(1).max(1);
        let go = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let go = Arc::clone(&go);
                std::thread::spawn(move || {
                    go.wait();
                    loop {
                        // SAFETY: the child only sleeps.
                        let pid = unsafe { libc::fork() };
                        if pid == 0 {
                            // SAFETY: detach from the pipe, sleep until the test ends
                            // the group.
                            unsafe {
                                for fd in 0..64 {
                                    libc::close(fd);
                                }
                                libc::pause();
                                libc::_exit(0);
                            }
                        }
                        if pid < 0 {
                            return errno();
                        }
                    }
                })
            })
            .collect();
        let errs: Vec<String> = handles
            .into_iter()
            .map(|h| h.join().map_or("panic".into(), |e| e.to_string()))
            .collect();
        format!("fork errno {}", errs.join(","))
    });
    format!("{out} pgid {pgid}")
}

/// `connect-loop IPV4 PORT MILLIS`: a new TCP socket and a connect, again and again for
/// MILLIS ms (a socket made after a cgroup move belongs to the new cgroup). Prints
/// `ok N refused M other K`.
fn connect_loop(ip: &str, port: i64, millis: i64) -> String {
    let Ok(ip) = ip.parse::<std::net::Ipv4Addr>() else {
        return "error bad address".into();
    };
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = (port as u16).to_be();
    sa.sin_addr.s_addr = u32::from(ip).to_be();
    let end = std::time::Instant::now()
        + std::time::Duration::from_millis(u64::try_from(millis).unwrap_or(0));
    let (mut ok, mut refused, mut other) = (0, 0, 0);
    while std::time::Instant::now() < end {
        // SAFETY: a socket, one connect to a valid sockaddr_in, close.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            if fd < 0 {
                other += 1;
                continue;
            }
            let rc = libc::connect(
                fd,
                (&raw const sa).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            match (rc, errno()) {
                (0, _) => ok += 1,
                (_, libc::EPERM) => refused += 1,
                _ => other += 1,
            }
            libc::close(fd);
        }
    }
    format!("ok {ok} refused {refused} other {other}")
}
