//! API requests on a connection whose connecting process is gone: how a task would try
//! to pass its requests off as an outsider's.
//!
//! `api-orphan SOCKET MODE DIR METHOD PATH [BODY]` prints `pid N`, the pid of the
//! process that connected, once that process has exited. Another process of the task
//! then waits for `DIR/go`, sends the request on the connection and writes `status
//! CODE` to `DIR/status`. MODE:
//! - `connector-exits`: a child connects, forks, and exits; its child sends;
//! - `child-connects`: a child connects the parent's socket and exits; the parent sends.
//!
//! With a task id in `DIR/attach`, the sender first joins that task (`attach`, on a
//! connection of its own): a process that was outside every task when its connection
//! was accepted, and is inside one when it speaks.

use std::{
    io::{Read as _, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _},
        unix::net::UnixStream,
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub(crate) fn run(w: &[String]) -> Option<String> {
    let arg = |i: usize| w.get(i).map_or("", String::as_str);
    match arg(0) {
        "api-orphan" => Some(orphan(
            arg(1),
            arg(2),
            Path::new(arg(3)),
            [arg(4), arg(5), arg(6)],
        )),
        _ => None,
    }
}

fn orphan(socket: &str, mode: &str, dir: &Path, request: [&str; 3]) -> String {
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a local array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return format!("error pipe errno {}", super::errno());
    }
    let report = |pid: u32| {
        let line = format!("{pid}\n");
        // SAFETY: writing our buffer to the pipe.
        unsafe { libc::write(fds[1], line.as_ptr().cast(), line.len()) };
    };
    // SAFETY: the children run the probe's own code and leave with _exit.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return format!("error fork errno {}", super::errno());
    }
    if child == 0 {
        if mode == "connector-exits" {
            let Ok(conn) = UnixStream::connect(socket) else {
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(1) };
            };
            // SAFETY: as above; the grandchild keeps the connection.
            if unsafe { libc::fork() } == 0 {
                // SAFETY: closing our copy of the report pipe.
                unsafe { libc::close(fds[1]) };
                send_when_told(conn, dir, request);
            }
            report(std::process::id());
        } else {
            // SAFETY: a plain socket() call.
            let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            if fd < 0 {
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(1) };
            }
            // SAFETY: the new socket is ours alone.
            let conn = unsafe { UnixStream::from_raw_fd(fd) };
            // SAFETY: as above; the grandchild connects the shared socket and exits.
            let connector = unsafe { libc::fork() };
            if connector == 0 {
                let rc = connect_path(conn.as_raw_fd(), socket);
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(i32::from(rc < 0)) };
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(connector, &raw mut status, 0) };
            report(u32::try_from(connector).unwrap_or_default());
            // SAFETY: closing our copy of the report pipe.
            unsafe { libc::close(fds[1]) };
            send_when_told(conn, dir, request);
        }
        // SAFETY: leaving the forked child.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(fds[1]) };
    // SAFETY: the read end is ours.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut line = String::new();
    let _ = pipe.read_to_string(&mut line);
    if mode == "connector-exits" {
        let mut status = 0;
        // SAFETY: the connector is our child; it has exited or is about to.
        unsafe { libc::waitpid(child, &raw mut status, 0) };
    }
    match line.trim() {
        "" => "error no connection".into(),
        pid => format!("pid {pid}"),
    }
}

fn connect_path(fd: i32, path: &str) -> i32 {
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(path.bytes()) {
        *dst = src as libc::c_char;
    }
    let len = u32::try_from(size_of::<libc::sockaddr_un>()).unwrap_or_default();
    // SAFETY: a valid fd and address of the given length.
    unsafe { libc::connect(fd, (&raw const addr).cast(), len) }
}

/// Waits for `DIR/go`, sends the request, writes `status CODE` to `DIR/status`; exits.
fn send_when_told(conn: UnixStream, dir: &Path, [method, path, body]: [&str; 3]) -> ! {
    let go = dir.join("go");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !go.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Ok(task) = std::fs::read_to_string(dir.join("attach")) {
        let socket = conn
            .peer_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_owned));
        let attached = socket
            .and_then(|s| UnixStream::connect(s).ok())
            .map(|c| status_of(c, "POST", &format!("/v1/tasks/{}/attach", task.trim()), ""));
        if attached.as_deref() != Some("status 200") {
            let _ = std::fs::write(dir.join("status"), format!("error attach {attached:?}"));
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(1) };
        }
    }
    let out = status_of(conn, method, path, body);
    let _ = std::fs::write(PathBuf::from(dir).join("status"), out);
    // SAFETY: leaving the forked child.
    unsafe { libc::_exit(0) };
}

/// Sends one request on `conn`; `status CODE [ERROR_CODE]`.
fn status_of(mut conn: UnixStream, method: &str, path: &str, body: &str) -> String {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: leash\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut resp = String::new();
    match conn
        .write_all(head.as_bytes())
        .and_then(|()| conn.write_all(body.as_bytes()))
        .and_then(|()| conn.read_to_string(&mut resp))
    {
        Ok(_) => resp.split_whitespace().nth(1).map_or_else(
            || "error no status".to_owned(),
            |c| {
                let code = resp
                    .split("\"code\":\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("");
                format!("status {c} {code}").trim().to_owned()
            },
        ),
        Err(e) => format!("error {e}"),
    }
}
