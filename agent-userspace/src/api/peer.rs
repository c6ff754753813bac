//! Who is on the other end of an API connection. `SO_PEERCRED` names the process that
//! called `connect()`, by pid; that process may fork, exit, and leave the connection to
//! a child, and its pid may be handed to another process. So the daemon holds the
//! connecting process itself from the moment it accepts (a pidfd), and on every request
//! checks that it is still alive and whether it is, or was, inside a task.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::Arc,
    time::Duration,
};

use axum::serve::Listener;
use tokio::net::{UnixListener, UnixStream};

use crate::{auth::Standing, daemon::Daemon};

/// `SO_PEERPIDFD` (Linux 6.5, `asm-generic/socket.h`); the libc crate does not export it.
const SO_PEERPIDFD: libc::c_int = 77;

/// How the connecting process is held.
#[derive(Debug)]
enum Handle {
    /// A pidfd: `SO_PEERPIDFD`, or before Linux 6.5 `pidfd_open` of `SO_PEERCRED`'s pid
    /// as the daemon accepts.
    Pidfd(OwnedFd),
    /// Without pidfds: the pid and the start time it had at accept.
    Start { pid: u32, start: u64 },
    /// Gone before the daemon could hold it.
    Gone,
}

/// The peer of one API connection, from its credentials at accept.
#[derive(Clone, Debug)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    handle: Arc<Handle>,
    /// The task the connecting process was in when the daemon accepted it.
    task_at_accept: Option<u64>,
}

impl Peer {
    /// The connection's peer, held as the daemon accepts it.
    #[must_use]
    pub fn accept(stream: &UnixStream, daemon: &Daemon) -> Self {
        let Ok(cred) = stream.peer_cred() else {
            // No credentials: an unknown caller, refused by authentication.
            return Self {
                uid: u32::MAX,
                gid: u32::MAX,
                handle: Arc::new(Handle::Gone),
                task_at_accept: None,
            };
        };
        let pid = cred.pid().and_then(|p| u32::try_from(p).ok());
        let mut peer = Self {
            uid: cred.uid(),
            gid: cred.gid(),
            handle: Arc::new(Handle::open(stream.as_raw_fd(), pid)),
            task_at_accept: None,
        };
        if let (_, Standing::InTask(task)) = peer.standing(daemon) {
            peer.task_at_accept = Some(task);
        }
        peer
    }

    /// The connecting process's pid while it lives, and where it stands now. The tag is
    /// read between two looks at the process, so a pid recycled in between is caught.
    #[must_use]
    pub fn standing(&self, daemon: &Daemon) -> (Option<u32>, Standing) {
        let Some(pid) = self.handle.pid() else {
            return (None, Standing::Gone);
        };
        let task = daemon.task_of(pid);
        // The kernel drops a thread's tag early in its exit, before its pidfd turns
        // readable: in between, a dying task process would pass for one outside every
        // task. It is `PF_EXITING` by then.
        if task.is_none() && self.task_at_accept.is_none() && exiting(pid) {
            return (None, Standing::Gone);
        }
        if !self.handle.alive_as(pid) {
            return (None, Standing::Gone);
        }
        match task.or(self.task_at_accept) {
            Some(t) => (Some(pid), Standing::InTask(t)),
            None => (Some(pid), Standing::Host),
        }
    }
}

impl Handle {
    fn open(sock: libc::c_int, pid: Option<u32>) -> Self {
        match peer_pidfd(sock) {
            Ok(fd) => return Self::Pidfd(fd),
            // Before 6.5 the option is unknown: fall back to the pid. Any other error
            // (the peer has exited) leaves nothing to hold.
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {}
            Err(_) => return Self::Gone,
        }
        let Some(pid) = pid.filter(|&p| p > 0) else {
            return Self::Gone;
        };
        match pidfd_open(pid) {
            Ok(fd) => Self::Pidfd(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                start_time(pid).map_or(Self::Gone, |start| Self::Start { pid, start })
            }
            Err(_) => Self::Gone,
        }
    }

    /// The process's pid, if it has not exited.
    fn pid(&self) -> Option<u32> {
        match self {
            Self::Pidfd(fd) => pidfd_pid(fd),
            Self::Start { pid, start } => (start_time(*pid) == Some(*start)).then_some(*pid),
            Self::Gone => None,
        }
    }

    /// Whether the process is still alive and still has `pid`.
    fn alive_as(&self, pid: u32) -> bool {
        match self {
            // A pidfd turns readable when its process exits; its pid is freed only after.
            Self::Pidfd(fd) => !readable(fd),
            Self::Start { .. } => self.pid() == Some(pid),
            Self::Gone => false,
        }
    }
}

/// `getsockopt(SO_PEERPIDFD)`: a pidfd for the process that connected.
fn peer_pidfd(sock: libc::c_int) -> io::Result<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: `fd` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            sock,
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&raw mut fd).cast(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: the kernel just installed `fd` in our table for us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_open,
            libc::pid_t::try_from(pid).unwrap_or(-1),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(rc).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just installed `fd` in our table for us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The pid a pidfd names in our pid namespace (`Pid:` of its fdinfo): none once the
/// process has exited (-1) or when it is outside our namespace (0).
fn pidfd_pid(fd: &OwnedFd) -> Option<u32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse::<i64>().ok())
        .and_then(|p| u32::try_from(p).ok())
        .filter(|&p| p > 0)
}

/// Whether a pidfd polls readable, which it does once its process has exited.
fn readable(fd: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let rc = unsafe { libc::poll(&raw mut pfd, 1, 0) };
    // A failed poll counts as exited: fail closed.
    rc != 0
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; it ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// `PF_EXITING` (`linux/sched.h`): set as a thread starts to exit.
const PF_EXITING: u32 = 0x4;

/// Whether `pid`'s thread is exiting, by the flags of `/proc/PID/stat` (field 9); an
/// unreadable one counts as exiting.
fn exiting(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    stat_flags(&stat).is_none_or(|flags| flags & PF_EXITING != 0)
}

/// Field 9 of a `/proc/PID/stat` line, past a command name that may hold spaces and
/// parentheses.
fn stat_flags(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(6)?.parse().ok()
}

/// The API socket's listener: each accepted connection comes with its [`Peer`].
pub struct PeerListener {
    pub inner: UnixListener,
    pub daemon: Arc<Daemon>,
}

impl Listener for PeerListener {
    type Io = UnixStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (UnixStream, Peer) {
        loop {
            match self.inner.accept().await {
                Ok((stream, _)) => {
                    let peer = Peer::accept(&stream, &self.daemon);
                    return (stream, peer);
                }
                // A connection that failed before it was accepted concerns only itself.
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // Out of descriptors and the like: wait rather than spin.
                    tracing::error!("API accept failed: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the API listener has no peer of its own",
        ))
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_reads_past_a_command_name_with_spaces_and_parentheses() {
        let me = std::process::id();
        let start = start_time(me).expect("our own start time");
        assert!(start > 0);
        assert_eq!(start_time(me), Some(start), "stable");
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn a_thread_on_its_way_out_is_exiting() {
        let line = |flags: u32| format!("42 (a) b) c) S 1 42 42 0 -1 {flags} 100 0 0");
        assert_eq!(stat_flags(&line(0x400_0100)), Some(0x400_0100));
        assert!(stat_flags(&line(0x4)).is_some_and(|f| f & PF_EXITING != 0));
        assert_eq!(stat_flags("42 (a"), None);
        assert!(!exiting(std::process::id()));
        assert!(exiting(u32::MAX), "no such process");
    }

    #[test]
    fn a_pidfd_of_a_live_process_names_it_and_one_of_an_exited_process_does_not() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id();
        let h = Handle::Pidfd(pidfd_open(pid).unwrap());
        assert_eq!(h.pid(), Some(pid));
        assert!(h.alive_as(pid));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(h.pid(), None, "exited");
        assert!(!h.alive_as(pid));
        let s = Handle::Start {
            pid: std::process::id(),
            start: start_time(std::process::id()).unwrap() + 1,
        };
        assert_eq!(s.pid(), None, "another start time: another process");
    }
}
