//! `leash-probe`: performs one action per command and prints its outcome, so a test can
//! drive a tagged process step by step. Commands come from argv (one) or stdin (one a line).
//!
//! Outcomes: `ok`, `errno N`, `exit N`, `signal N`, or `error TEXT` for a probe fault.

use std::{
    ffi::CString,
    io::{BufRead as _, Write as _},
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

#[path = "probe/api.rs"]
mod api;
#[path = "probe/attacks.rs"]
mod attacks;
#[path = "probe/compat.rs"]
mod compat;
#[path = "probe/dns.rs"]
mod dns;
#[path = "probe/dns_load.rs"]
mod dns_load;
#[path = "probe/file_bench.rs"]
mod file_bench;
#[path = "probe/host.rs"]
mod host;
#[path = "probe/linger.rs"]
mod linger;
#[path = "probe/mounts_and_doors.rs"]
mod mounts_and_doors;
#[path = "probe/unpaged.rs"]
mod unpaged;
#[path = "probe/uring_files.rs"]
mod uring_files;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        println!("{}", run(&args));
        return;
    }
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        if words.is_empty() {
            continue;
        }
        let out = run(&words);
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{out}");
        let _ = stdout.flush();
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

fn outcome(rc: libc::c_int) -> String {
    if rc < 0 {
        format!("errno {}", errno())
    } else {
        "ok".into()
    }
}

fn run(w: &[String]) -> String {
    let arg = |i: usize| w.get(i).map_or("", String::as_str);
    match arg(0) {
        "pid" => std::process::id().to_string(),
        "dns" => dns::query(arg(1), arg(2), arg(3), arg(4)),
        "dns-raw" => dns::raw(arg(1), arg(2), arg(3)),
        "dns-peer" => dns::peer(arg(1), arg(2)),
        "dns-flood" => dns::flood(arg(1), arg(2)),
        "dns-load" => dns_load::load(arg(1), arg(2), arg(3), arg(4)),
        "resolve" => dns::resolve(arg(1)),
        "connect" => sock_op(arg(1), arg(2), arg(3), Op::Connect),
        "sendto" => sock_op("udp", arg(1), arg(2), Op::SendTo),
        "sendmmsg" => sock_op("udp", arg(1), arg(2), Op::SendMmsg),
        "fastopen" => sock_op("tcp", arg(1), arg(2), Op::FastOpen),
        "uring-connect" => sock_op("tcp", arg(1), arg(2), Op::Uring),
        "thread" => {
            // Runs the rest of the command on a new thread of this process.
            let rest: Vec<String> = w[1..].to_vec();
            std::thread::spawn(move || run(&rest))
                .join()
                .unwrap_or_else(|_| "error thread panicked".into())
        }
        "exec" => spawn_and_wait(|| exec_path(&w[1..])),
        "execveat" => spawn_and_wait(|| execveat_empty(arg(1))),
        "memfd-exec" => spawn_and_wait(|| memfd_exec(arg(1))),
        "thread-exec" => spawn_and_wait(|| {
            // A non-leader thread execs; the kernel makes it the leader. A refused exec
            // (lsm: EPERM) returns in the thread, whose 200 + errno is the exit code.
            let args = w[1..].to_vec();
            let t = std::thread::spawn(move || exec_path(&args));
            t.join().unwrap_or(127)
        }),
        "double-fork" => double_fork(&w[1..]),
        "bench" => bench(arg(1), arg(2), arg(3).parse().unwrap_or(0)),
        "bench-open" => file_bench::open_read(arg(1), arg(2).parse().unwrap_or(0)),
        "restricted-bench" => {
            file_bench::restricted(arg(1), arg(2), arg(3), arg(4).parse().unwrap_or(0))
        }
        "landlock-bench" => match landlock_restrict(arg(4).parse().unwrap_or(0), arg(5)) {
            Ok(()) => bench(arg(1), arg(2), arg(3).parse().unwrap_or(0)),
            Err(e) => format!("error landlock: {e}"),
        },
        "flood" => flood(arg(1), arg(2), arg(3).parse().unwrap_or(0)),
        "api-create" => api_create(arg(1)),
        "leader-exit" => leader_exit(&w[1..]),
        "linger" => linger::linger(arg(1), arg(2), w.get(3..).unwrap_or_default()),
        // Moves this very process (not a forked child, as `cgroup-move` does) into the
        // cgroup2 cgroup at the given path.
        "cgroup-move-self" => match std::fs::write(
            std::path::Path::new(arg(1)).join("cgroup.procs"),
            std::process::id().to_string(),
        ) {
            Ok(()) => "ok".into(),
            Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
        },
        other => attacks::run(w)
            .or_else(|| compat::run(w))
            .or_else(|| mounts_and_doors::run(w))
            .or_else(|| host::run(w))
            .or_else(|| api::run(w))
            .or_else(|| unpaged::run(w))
            .or_else(|| uring_files::run(w))
            .unwrap_or_else(|| format!("error unknown command {other:?}")),
    }
}

#[derive(Clone, Copy)]
enum Op {
    Connect,
    SendTo,
    SendMmsg,
    FastOpen,
    Uring,
}

/// `ADDR` may be `mapped:a.b.c.d` for an IPv4-mapped address on an `AF_INET6` socket.
fn parse_addr(addr: &str, port: &str) -> Result<SocketAddr, String> {
    let port: u16 = port
        .parse()
        .map_err(|_| format!("error bad port {port:?}"))?;
    let ip: IpAddr = if let Some(v4) = addr.strip_prefix("mapped:") {
        let v4: std::net::Ipv4Addr = v4.parse().map_err(|_| format!("error bad addr {addr:?}"))?;
        IpAddr::V6(v4.to_ipv6_mapped())
    } else {
        addr.parse()
            .map_err(|_| format!("error bad addr {addr:?}"))?
    };
    Ok(SocketAddr::new(ip, port))
}

fn raw_sockaddr(sa: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match sa {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn sock_op(proto: &str, addr: &str, port: &str, op: Op) -> String {
    let sa = match parse_addr(addr, port) {
        Ok(sa) => sa,
        Err(e) => return e,
    };
    let family = if sa.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // MPTCP: a stream socket of IP protocol 262 (IPPROTO_MPTCP).
    let (ty, protocol) = match proto {
        "tcp" => (libc::SOCK_STREAM, 0),
        "udp" => (libc::SOCK_DGRAM, 0),
        "mptcp" => (libc::SOCK_STREAM, 262),
        other => return format!("error bad proto {other:?}"),
    };
    // SAFETY: plain socket syscall; the fd is owned right away.
    let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return format!("error socket errno {}", errno());
    }
    // SAFETY: fd is a fresh socket we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let (ss, len) = raw_sockaddr(&sa);
    let sp = (&raw const ss).cast::<libc::sockaddr>();
    let msg = b"leash";
    // SAFETY: valid fd, address and buffer for each call.
    match op {
        Op::Connect => outcome(unsafe { libc::connect(sock.as_raw_fd(), sp, len) }),
        Op::SendTo => outcome(unsafe {
            libc::sendto(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0, sp, len)
                as libc::c_int
        }),
        Op::FastOpen => outcome(unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                libc::MSG_FASTOPEN,
                sp,
                len,
            ) as libc::c_int
        }),
        Op::SendMmsg => {
            let mut iov = libc::iovec {
                iov_base: msg.as_ptr().cast_mut().cast(),
                iov_len: msg.len(),
            };
            // SAFETY: zeroed mmsghdr, then filled with valid pointers.
            let mut hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
            hdr.msg_hdr.msg_name = sp.cast_mut().cast();
            hdr.msg_hdr.msg_namelen = len;
            hdr.msg_hdr.msg_iov = &raw mut iov;
            hdr.msg_hdr.msg_iovlen = 1;
            // SAFETY: one valid message.
            let rc = unsafe { libc::sendmmsg(sock.as_raw_fd(), &raw mut hdr, 1, 0) };
            outcome(rc)
        }
        Op::Uring => uring_connect(&sock, sp, len),
    }
}

pub(crate) fn uring_connect(
    sock: &OwnedFd,
    sp: *const libc::sockaddr,
    len: libc::socklen_t,
) -> String {
    use io_uring::{IoUring, opcode, types};
    let mut ring = match IoUring::new(4) {
        Ok(r) => r,
        Err(e) => return format!("error io_uring_setup {e}"),
    };
    let sqe = opcode::Connect::new(types::Fd(sock.as_raw_fd()), sp, len).build();
    // SAFETY: the address outlives the submission (we wait for completion below).
    if unsafe { ring.submission().push(&sqe) }.is_err() {
        return "error sq full".into();
    }
    if let Err(e) = ring.submit_and_wait(1) {
        return format!("error io_uring_enter {e}");
    }
    match ring.completion().next() {
        Some(cqe) if cqe.result() < 0 => format!("errno {}", -cqe.result()),
        Some(_) => "ok".into(),
        None => "error no completion".into(),
    }
}

/// Forks; the child runs `f` (which execs or returns an exit code); reports how it ended.
fn spawn_and_wait(f: impl FnOnce() -> i32) -> String {
    // SAFETY: the child only runs exec-family calls before _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return format!("error fork errno {}", errno());
    }
    if pid == 0 {
        let code = f();
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    wait_outcome(pid)
}

fn wait_outcome(pid: libc::pid_t) -> String {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    if unsafe { libc::waitpid(pid, &raw mut status, 0) } < 0 {
        return format!("error waitpid errno {}", errno());
    }
    if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        // exit 126 carries an exec errno in the low byte below; see exec_path.
        format!("exit {}", libc::WEXITSTATUS(status))
    }
}

fn cstrings(args: &[String]) -> Vec<CString> {
    args.iter()
        .map(|a| CString::new(a.as_str()).unwrap_or_default())
        .collect()
}

/// Execs `args[0]`; on failure exits with 200 + errno so the parent sees why.
fn exec_path(args: &[String]) -> i32 {
    let owned = cstrings(args);
    let mut ptrs: Vec<*const libc::c_char> = owned.iter().map(|s| s.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: NUL-terminated argv of valid C strings.
    unsafe { libc::execv(ptrs[0], ptrs.as_ptr()) };
    200 + errno()
}

fn execveat_empty(path: &str) -> i32 {
    let Ok(c) = CString::new(path) else {
        return 199;
    };
    // SAFETY: opening a path we were given.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
    if fd < 0 {
        return 198;
    }
    let argv = [c.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let empty = c"";
    // SAFETY: valid fd, empty path with AT_EMPTY_PATH, NUL-terminated arrays.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd,
            empty.as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    200 + errno()
}

fn memfd_exec(path: &str) -> i32 {
    let Ok(bytes) = std::fs::read(path) else {
        return 199;
    };
    // SAFETY: memfd_create with a static name.
    let fd = unsafe { libc::memfd_create(c"leash-probe".as_ptr(), 0) };
    if fd < 0 {
        return 198;
    }
    // SAFETY: fd is ours.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    if std::io::Write::write_all(&mut file, &bytes).is_err() {
        return 197;
    }
    let argv = [c"memfd".as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: fexecve on our memfd with NUL-terminated arrays.
    unsafe { libc::fexecve(file.as_raw_fd(), argv.as_ptr(), envp.as_ptr()) };
    200 + errno()
}

/// fork → setsid → fork; the grandchild (reparented to init) runs the command and
/// reports through a pipe, which the original process reads.
fn double_fork(rest: &[String]) -> String {
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a local array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return format!("error pipe errno {}", errno());
    }
    // SAFETY: the children only use async-signal-safe calls and the probe's own logic.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            libc::setsid();
            if libc::fork() != 0 {
                libc::_exit(0);
            }
        }
        let out = run(rest);
        let line = format!("{out}\n");
        // SAFETY: writing our buffer to the pipe.
        unsafe {
            libc::write(fds[1], line.as_ptr().cast(), line.len());
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(fds[1]) };
    let _ = wait_outcome(pid);
    // SAFETY: the read end is ours.
    let file = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut line = String::new();
    let _ = std::io::BufReader::new(file).read_line(&mut line);
    let line = line.trim().to_owned();
    if line.is_empty() {
        "error no report".into()
    } else {
        line
    }
}

/// `bench connect|udp|exec TARGET N`: N operations, prints mean ns per operation.
/// `connect` is socket + connect + close (with `SO_LINGER` 0, so no `TIME_WAIT` piles up);
/// `udp` is one `sendto` on one socket; `exec` is fork + exec + wait.
fn bench(kind: &str, target: &str, n: u32) -> String {
    if kind == "syscall" {
        return bench_syscall(n);
    }
    let Ok(port) = target.parse::<u16>() else {
        return bench_exec(target, n);
    };
    let sa = SocketAddr::from(([127, 0, 0, 1], port));
    let (ss, len) = raw_sockaddr(&sa);
    let sp = (&raw const ss).cast::<libc::sockaddr>();
    let udp = match kind {
        // SAFETY: plain socket syscall; owned right away.
        "udp" => Some(unsafe {
            OwnedFd::from_raw_fd(libc::socket(
                libc::AF_INET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                0,
            ))
        }),
        "connect" => None,
        other => return format!("error unknown bench {other:?}"),
    };
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let start = std::time::Instant::now();
    for _ in 0..n {
        // SAFETY: valid fds, addresses and buffers; each socket is closed by OwnedFd.
        let rc = unsafe {
            if let Some(u) = &udp {
                libc::sendto(u.as_raw_fd(), b"x".as_ptr().cast(), 1, 0, sp, len) as libc::c_int
            } else {
                let s = OwnedFd::from_raw_fd(libc::socket(
                    libc::AF_INET,
                    libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                    0,
                ));
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&raw const linger).cast(),
                    size_of::<libc::linger>() as libc::socklen_t,
                );
                libc::connect(s.as_raw_fd(), sp, len)
            }
        };
        if rc < 0 {
            return format!("error {kind} failed: errno {}", errno());
        }
    }
    (start.elapsed().as_nanos() / u128::from(n.max(1))).to_string()
}

/// `getppid()`, which no leash program watches: what any syscall pays for the
/// machine's enabled syscall tracepoints (the traced entry and exit path).
fn bench_syscall(n: u32) -> String {
    let start = std::time::Instant::now();
    for _ in 0..n {
        // SAFETY: no arguments; the raw syscall, so no libc caching.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    (start.elapsed().as_nanos() / u128::from(n.max(1))).to_string()
}

fn bench_exec(path: &str, n: u32) -> String {
    let start = std::time::Instant::now();
    for _ in 0..n {
        let out = spawn_and_wait(|| exec_path(&[path.to_owned()]));
        if out != "exit 0" {
            return format!("error exec failed: {out}");
        }
    }
    (start.elapsed().as_nanos() / u128::from(n.max(1))).to_string()
}

/// Restricts this process with Landlock to TCP connects to `port` and execs of `exe`
/// (the same rules leash enforces in the benchmark), for a like-for-like comparison.
fn landlock_restrict(port: u16, exe: &str) -> Result<(), String> {
    use landlock::{
        ABI, AccessFs, AccessNet, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr as _,
        RulesetCreatedAttr as _,
    };
    let abi = ABI::V4;
    let exe = std::fs::canonicalize(exe).map_err(|e| e.to_string())?;
    let exe = PathFd::new(&exe).map_err(|e| e.to_string())?;
    // Landlock also checks the ELF interpreter, which the kernel opens for execution.
    let loader = std::fs::canonicalize("/lib64/ld-linux-x86-64.so.2").map_err(|e| e.to_string())?;
    let loader = PathFd::new(&loader).map_err(|e| e.to_string())?;
    Ruleset::default()
        .handle_access(AccessFs::Execute)
        .and_then(|r| r.handle_access(AccessNet::ConnectTcp))
        .and_then(Ruleset::create)
        .and_then(|r| r.add_rule(PathBeneath::new(exe, AccessFs::Execute)))
        .and_then(|r| r.add_rule(PathBeneath::new(loader, AccessFs::Execute)))
        .and_then(|r| r.add_rule(NetPort::new(port, AccessNet::ConnectTcp)))
        .and_then(landlock::RulesetCreated::restrict_self)
        .map_err(|e| e.to_string())
        .and_then(|status| {
            if status.ruleset == landlock::RulesetStatus::FullyEnforced {
                Ok(())
            } else {
                Err(format!(
                    "not fully enforced (ABI {abi:?}): {:?}",
                    status.ruleset
                ))
            }
        })
}

/// `flood udp PORT N`: N unconnected sends, errors ignored; prints how many got EPERM.
fn flood(_proto: &str, port: &str, n: u32) -> String {
    let Ok(port) = port.parse::<u16>() else {
        return "error bad port".into();
    };
    let sa = SocketAddr::from(([127, 0, 0, 1], port));
    let (ss, len) = raw_sockaddr(&sa);
    let sp = (&raw const ss).cast::<libc::sockaddr>();
    // SAFETY: plain socket syscall; owned right away.
    let sock = unsafe {
        OwnedFd::from_raw_fd(libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        ))
    };
    let mut eperm = 0u32;
    for _ in 0..n {
        // SAFETY: valid fd, address and buffer.
        let rc = unsafe { libc::sendto(sock.as_raw_fd(), b"x".as_ptr().cast(), 1, 0, sp, len) };
        if rc < 0 && errno() == libc::EPERM {
            eperm += 1;
        }
    }
    eperm.to_string()
}

/// `api-create SOCKET`: asks the daemon for a new task over raw HTTP; prints the status.
fn api_create(socket: &str) -> String {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return format!("error connect {socket}");
    };
    let body = br#"{"agent":"escape","grants":{"exec":["/bin/sh"]}}"#;
    let head = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: leash\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .is_err()
    {
        return "error write".into();
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split_whitespace()
        .nth(1)
        .map_or_else(|| "error no status".into(), |c| format!("status {c}"))
}

/// `leader-exit CMD...`: the main thread exits while another thread runs CMD, prints
/// its outcome and ends the process: the process then has no leader thread left.
fn leader_exit(rest: &[String]) -> String {
    let rest = rest.to_vec();
    std::thread::spawn(move || {
        // Give the leader time to exit first.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let out = run(&rest);
        println!("{out}");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        std::process::exit(0);
    });
    // SAFETY: the raw exit syscall (not exit_group) ends only the calling thread, with no
    // unwinding; the process lives on in the other thread.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
    unreachable!("SYS_exit returned")
}
