//! Class 19, names that can be re-pointed: a unix grant (and the API socket, open to
//! every task) is a path, and a bind mount, `chroot` plus a hard link or `pivot_root`
//! makes the path name another socket. A tagged process may not mount, unmount, move
//! mounts, pivot or chroot, nor unlink or rename the API socket or a directory above it.
//! Each attempt runs in a private mount namespace the test made before tagging, so
//! nothing reaches the host even if it landed.
//!
//! Where such a change lands anyway (a killed caller's mount in a namespace the task
//! shares, a `chroot` through a shared `fs_struct`), a path grant holds only in the
//! mount namespace and root it was granted in; on the lsm backend, only for the socket
//! file it named then (a symlink or hard link put on the name reaches nothing). Each
//! test checks at the other socket that nothing arrived.

use std::{os::unix::net::UnixListener, path::Path};

use harness::{Action, Reason};
use harness::{
    EPERM, Harness, Scratch,
    daemon::{DaemonGuard, TaskSession, stderr, stdout, task_json},
    mount_ns::{self, Bind, Mount, untagged_with_binds},
    probe, refused, spec,
};
use leash::{kernel::Backend, kernel::events::Target};

use super::untagged;

const KILLED: &str = "signal 9";

/// A listening unix socket that tells whether anyone connected.
struct Socket {
    path: String,
    listener: UnixListener,
}

impl Socket {
    fn new(s: &Scratch, name: &str) -> Self {
        let path = s.path(name);
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        Self { path, listener }
    }

    /// Takes one pending connection, if there is one.
    fn reached(&self) -> bool {
        self.listener.accept().is_ok()
    }
}

fn guard(call: &str) -> Target {
    Target::Guard {
        call: call.into(),
        target_pid: 0,
    }
}

#[test]
fn a_bind_mount_over_the_api_socket_is_stopped_before_it_is_reached() {
    let h = Harness::load();
    let s = Scratch::new("c19-bind");
    let api = Socket::new(&s, "api.sock");
    let other = Socket::new(&s, "other.sock");
    // As the daemon does for its API socket: every task may reach it.
    h.enforcer
        .lock()
        .unwrap()
        .maps_mut()
        .grant_unix_everywhere(Path::new(&api.path))
        .unwrap();
    let task = h.task(spec(&[], &[]));
    assert_eq!(task.probe(&format!("unix-connect {}", api.path)), "ok");
    assert!(api.reached(), "the task reaches the API socket");
    let attempt = format!("bind-connect {} {}", other.path, api.path);
    let ev = task.assert_denied(
        Action::Tamper,
        Reason::GuardMount,
        refused(h.backend()),
        || task.probe_in_mount_ns(&[], &attempt),
    );
    assert_eq!(ev.target, guard("mount"));
    assert!(!other.reached(), "the other socket was reached");
    // Untagged, the same steps reach the other socket: the attack is real.
    assert_eq!(mount_ns::untagged(&[], &attempt), "ok");
    assert!(
        other.reached(),
        "untagged: the bind mount re-pointed the name"
    );
}

#[test]
fn chroot_with_a_hard_link_to_another_socket_is_stopped() {
    let h = Harness::load();
    let s = Scratch::new("c19-chroot");
    let granted = Socket::new(&s, "granted.sock");
    let other = Socket::new(&s, "other.sock");
    // In the jail, the granted path is a hard link to the other socket.
    let jail = s.path("jail");
    let inside = format!("{jail}{}", granted.path);
    std::fs::create_dir_all(Path::new(&inside).parent().unwrap()).unwrap();
    std::fs::hard_link(&other.path, &inside).unwrap();
    let task = h.task(spec(&[], &[&format!("unix:{}", granted.path)]));
    let attempt = format!("chroot-connect {jail} {}", granted.path);
    let ev = task.assert_denied(
        Action::Tamper,
        Reason::GuardMount,
        refused(h.backend()),
        || task.probe(&attempt),
    );
    assert_eq!(ev.target, guard("chroot"));
    assert!(!other.reached(), "the other socket was reached");
    assert_eq!(untagged(&attempt), "ok");
    assert!(
        other.reached(),
        "untagged: the granted name named the other socket"
    );
}

#[test]
fn mounting_unmounting_moving_and_pivoting_are_stopped() {
    let h = Harness::load();
    let s = Scratch::new("c19-mounts");
    let (mnt, mnt2) = (s.path("mnt"), s.path("mnt2"));
    std::fs::create_dir(&mnt).unwrap();
    std::fs::create_dir(&mnt2).unwrap();
    // A tmpfs of the test's own, in the namespace it made: not bpffs.
    let ns = [Mount {
        fstype: "tmpfs",
        target: &mnt,
    }];
    let task = h.task(spec(&[], &[]));
    let denied = refused(h.backend());
    let hooked = [
        (format!("mount-tmpfs {mnt2}"), "mount"),
        (format!("umount {mnt}"), "umount"),
        (format!("move-mount {mnt} {mnt2}"), "move_mnt"),
        (format!("pivot-root {mnt} {mnt}/old"), "pivot"),
    ];
    // No LSM hook sees these: killed on both backends (each only yields an fd or
    // changes a mount's attributes).
    let unhooked = [
        ("fsopen tmpfs".to_owned(), "fsopen"),
        (format!("open-tree-clone {mnt}"), "opentree"),
        (format!("mount-setattr-ro {mnt}"), "mnt_attr"),
    ];
    for (attempts, outcome) in [(&hooked[..], denied), (&unhooked[..], KILLED)] {
        for (attempt, call) in attempts {
            let ev = task.assert_denied(Action::Tamper, Reason::GuardMount, outcome, || {
                task.probe_in_mount_ns(&ns, attempt)
            });
            assert_eq!(ev.target, guard(call), "{attempt}");
        }
    }
    // open_tree without OPEN_TREE_CLONE is an O_PATH open: let be.
    assert_eq!(task.probe(&format!("open-tree {mnt}")), "ok");
    for (attempt, _) in hooked.iter().chain(&unhooked) {
        let out = mount_ns::untagged(&ns, attempt);
        // The VM's root is its initramfs, which cannot be pivoted (EINVAL).
        let pivot_on_rootfs = attempt.starts_with("pivot-root") && out == "errno 22";
        assert!(out == "ok" || pivot_on_rootfs, "untagged {attempt}: {out}");
    }
}

#[test]
fn the_api_socket_cannot_be_unlinked_or_renamed() {
    let h = Harness::load();
    let s = Scratch::new("c19-names");
    let api = Socket::new(&s, "api.sock");
    h.enforcer
        .lock()
        .unwrap()
        .maps_mut()
        .protect_socket_only(Path::new(&api.path))
        .unwrap();
    let task = h.task(spec(&[], &[]));
    let dir = s.dir.display().to_string();
    let decoy = s.path("decoy");
    std::fs::write(&decoy, "").unwrap();
    if h.backend() == Backend::Lsm {
        // Refused by the inodes, whatever the path names them by.
        for attempt in [
            format!("unlink {}", api.path),
            format!("rename {} {dir}/moved.sock", api.path),
            format!("rename {decoy} {}", api.path),
            format!("rename {dir} {dir}-moved"),
            format!("unlinkat {dir} api.sock"),
        ] {
            task.assert_denied(Action::Tamper, Reason::GuardPins, EPERM, || {
                task.probe(&attempt)
            });
        }
        let c = std::os::unix::net::UnixStream::connect(&api.path);
        assert!(c.is_ok() && api.reached(), "the socket is still there");
        assert_eq!(untagged(&format!("rename {decoy} {dir}/decoy2")), "ok");
    } else {
        // By the path string: killed, and the effect lands (docs/security.md), so
        // these attempts are ones that change nothing either way.
        for attempt in [
            format!("rename {dir}/absent {}", api.path),
            format!("rmdir {dir}"),
            format!("rmdir {dir}/"),
        ] {
            task.assert_denied(Action::Tamper, Reason::GuardPins, KILLED, || {
                task.probe(&attempt)
            });
        }
        assert!(Path::new(&api.path).exists());
        // A name relative to a directory fd is not recognised (docs/security.md).
        assert_eq!(task.probe(&format!("unlinkat {dir} absent")), "errno 2");
    }
    assert_eq!(untagged(&format!("rmdir {dir}")), "errno 39", "untagged");
}

#[test]
fn the_daemon_protects_its_own_socket() {
    let d = DaemonGuard::start("c19-socket", "");
    let p = probe().display().to_string();
    let socket = d.socket.display().to_string();
    // In the `open` file mode, so that the daemon's own guard is what refuses (in the
    // other modes Landlock refuses writes outside the workspace first).
    let in_task = |args: &[&str]| {
        let mut argv = vec![
            "run",
            "--files",
            "open",
            "--allow-exec",
            p.as_str(),
            "--",
            p.as_str(),
        ];
        argv.extend_from_slice(args);
        d.run(&argv)
    };
    let lsm = Harness::backend_of_daemon(&d) == Backend::Lsm;
    let moved = format!("{socket}-moved");
    let o = if lsm {
        in_task(&["rename", &socket, &moved])
    } else {
        in_task(&["rename", "/nonexistent-leash-c19", &socket])
    };
    assert_eq!(
        stdout(&o),
        if lsm { EPERM } else { KILLED },
        "{}",
        stderr(&o)
    );
    assert!(d.socket.exists(), "the API socket is still there");
    let o = d.run(&["status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let tamper = || {
        d.audit()
            .into_iter()
            .find(|e| e["kind"] == "tamper" && e["reason"] == "leash_pins")
    };
    harness::wait_for("a leash_pins event in the audit log", || tamper().is_some());
}

/// The probe's stream connect and datagram send to `path`.
fn connect(path: &str) -> String {
    format!("unix-connect {path}")
}

fn sendto(path: &str) -> String {
    format!("unix-sendto {path}")
}

/// Checks that a refused connect reached nothing at `socket`: no connection where the
/// kernel refuses before the lookup (lsm, cgroup unix hooks); where the syscall
/// tracepoints decide after it (portable before Linux 6.7), at most a connection the
/// killed caller never wrote to (docs/security.md, class 5).
fn not_reached(h: &Harness, socket: &Socket) {
    if h.unix_refused() == EPERM {
        assert!(!socket.reached(), "{} was reached", socket.path);
    } else if let Ok((mut c, _)) = socket.listener.accept() {
        use std::io::Read as _;
        c.set_nonblocking(false).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        assert_eq!(
            c.read(&mut [0u8; 1]).unwrap(),
            0,
            "the killed caller wrote to {}",
            socket.path
        );
    }
}

/// Puts a link to the first path at the second.
type Link = fn(&str, &str) -> std::io::Result<()>;

/// A datagram socket that tells whether anything arrived.
struct Datagrams {
    path: String,
    socket: std::os::unix::net::UnixDatagram,
}

impl Datagrams {
    fn new(s: &Scratch, name: &str) -> Self {
        let path = s.path(name);
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        Self { path, socket }
    }

    /// Takes one pending datagram, if there is one.
    fn reached(&self) -> bool {
        self.socket.recv(&mut [0u8; 16]).is_ok()
    }
}

#[test]
fn a_granted_name_holds_only_in_the_mount_namespace_it_was_granted_in() {
    let h = Harness::load();
    let denied = h.unix_refused();
    let s = Scratch::new("c19-view");
    let granted = Socket::new(&s, "granted.sock");
    let other = Socket::new(&s, "other.sock");
    let task = h.task(spec(&[], &[&format!("unix:{}", granted.path)]));
    // The granted socket itself, from where the grant was made.
    assert_eq!(task.probe(&connect(&granted.path)), "ok");
    assert!(granted.reached(), "the task reaches the granted socket");
    // A namespace where a bind mount over the name landed (made here before the probe
    // is tagged: a tagged process cannot mount, but a killed one's mount lands in a
    // namespace other processes of the task may share).
    let over = [Bind {
        source: &other.path,
        target: &granted.path,
    }];
    let ev = task.assert_denied(Action::Connect, Reason::UnixOtherView, denied, || {
        task.probe_with_binds(&over, &connect(&granted.path))
    });
    assert_eq!(
        ev.target,
        Target::Unix {
            path: granted.path.clone()
        }
    );
    not_reached(&h, &other);
    // Any other mount namespace, even one where the name still names the granted
    // socket: the kernel cannot tell, so it refuses (fail closed).
    task.assert_denied(Action::Connect, Reason::UnixOtherView, denied, || {
        task.probe_with_binds(&[], &connect(&granted.path))
    });
    not_reached(&h, &granted);
    // Untagged, the same namespace reaches the other socket: the attack is real.
    assert_eq!(untagged_with_binds(&over, &connect(&granted.path)), "ok");
    assert!(
        other.reached(),
        "untagged: the bind mount re-pointed the name"
    );
    // And the grant still holds where it was made.
    assert_eq!(task.probe(&connect(&granted.path)), "ok");
    assert!(granted.reached());
}

#[test]
fn the_api_socket_is_open_only_in_the_daemons_mount_namespace() {
    let h = Harness::load();
    let denied = h.unix_refused();
    let s = Scratch::new("c19-api-view");
    let api = Socket::new(&s, "api.sock");
    let other = Socket::new(&s, "other.sock");
    h.enforcer
        .lock()
        .unwrap()
        .maps_mut()
        .grant_unix_everywhere(Path::new(&api.path))
        .unwrap();
    let task = h.task(spec(&[], &[]));
    assert_eq!(task.probe(&connect(&api.path)), "ok");
    assert!(api.reached(), "the task reaches the API socket");
    let over = [Bind {
        source: &other.path,
        target: &api.path,
    }];
    task.assert_denied(Action::Connect, Reason::UnixOtherView, denied, || {
        task.probe_with_binds(&over, &connect(&api.path))
    });
    not_reached(&h, &other);
    assert!(!api.reached(), "the API socket was reached");
    assert_eq!(untagged_with_binds(&over, &connect(&api.path)), "ok");
    assert!(
        other.reached(),
        "untagged: the bind mount re-pointed the name"
    );
}

#[test]
fn a_link_put_on_a_granted_name_reaches_nothing_on_lsm() {
    let h = Harness::load();
    let lsm = h.backend() == Backend::Lsm;
    let s = Scratch::new("c19-links");
    let granted = Socket::new(&s, "granted.sock");
    let other = Socket::new(&s, "other.sock");
    let dgram = Datagrams::new(&s, "granted.dgram");
    let other_dgram = Datagrams::new(&s, "other.dgram");
    let task = h.task(spec(
        &[],
        &[
            &format!("unix:{}", granted.path),
            &format!("unix:{}", dgram.path),
        ],
    ));
    assert_eq!(task.probe(&sendto(&dgram.path)), "ok");
    assert!(dgram.reached(), "the granted datagram socket");
    // A task that can write the directory moves the granted sockets away and puts a
    // symlink, then a hard link, to other sockets at their names.
    let (moved, moved_dgram) = (s.path("moved.sock"), s.path("moved.dgram"));
    std::fs::rename(&granted.path, &moved).unwrap();
    std::fs::rename(&dgram.path, &moved_dgram).unwrap();
    let links: [(&str, Link); 2] = [
        ("symlink", |from, to| std::os::unix::fs::symlink(from, to)),
        ("hard link", |from, to| std::fs::hard_link(from, to)),
    ];
    for (how, link) in links {
        link(&other.path, &granted.path).unwrap();
        link(&other_dgram.path, &dgram.path).unwrap();
        if lsm {
            // The peer is not the socket file recorded at grant time.
            let ev = task.assert_denied(Action::Connect, Reason::UnixOtherSocket, EPERM, || {
                task.probe(&connect(&granted.path))
            });
            assert_eq!(
                ev.target,
                Target::Unix {
                    path: other.path.clone()
                },
                "{how}: the event names the socket reached"
            );
            task.assert_denied(Action::Send, Reason::UnixOtherSocket, EPERM, || {
                task.probe(&sendto(&dgram.path))
            });
            assert!(!other.reached(), "{how}: the other socket was reached");
            assert!(!other_dgram.reached(), "{how}: the other datagram socket");
        } else {
            // No portable hook sees the peer: the residual risk docs/security.md
            // states for a task that can write a directory on a granted path.
            assert_eq!(task.probe(&connect(&granted.path)), "ok", "{how}");
            assert!(other.reached(), "{how}: portable reaches the other socket");
        }
        std::fs::remove_file(&granted.path).unwrap();
        std::fs::remove_file(&dgram.path).unwrap();
    }
    // The granted sockets back at their names: reached again, on both backends.
    std::fs::rename(&moved, &granted.path).unwrap();
    std::fs::rename(&moved_dgram, &dgram.path).unwrap();
    assert_eq!(task.probe(&connect(&granted.path)), "ok");
    assert!(granted.reached());
    assert_eq!(task.probe(&sendto(&dgram.path)), "ok");
    assert!(dgram.reached());
    // Untagged processes are not checked at all.
    assert_eq!(untagged(&connect(&other.path)), "ok");
    assert!(other.reached());
}

#[test]
fn a_chroot_by_a_process_sharing_the_callers_root_does_not_re_point_a_grant() {
    let h = Harness::load();
    let s = Scratch::new("c19-fs-chroot");
    let granted = Socket::new(&s, "granted.sock");
    let other = Socket::new(&s, "other.sock");
    let jail = s.path("jail");
    let inside = format!("{jail}{}", granted.path);
    std::fs::create_dir_all(Path::new(&inside).parent().unwrap()).unwrap();
    std::fs::hard_link(&other.path, &inside).unwrap();
    let task = h.task(spec(&[], &[&format!("unix:{}", granted.path)]));
    let attempt = format!("fs-chroot-connect {jail} {}", granted.path);
    if h.backend() == Backend::Lsm {
        // The chroot is refused, so the root never changes: the granted socket.
        assert_eq!(task.probe(&attempt), "ok");
        assert!(granted.reached());
    } else {
        // The clone that called chroot is killed, but the chroot landed in the
        // `fs_struct` the caller shares: the caller's root is not the granted one.
        task.assert_denied(
            Action::Connect,
            Reason::UnixOtherView,
            h.unix_refused(),
            || task.probe(&attempt),
        );
    }
    not_reached(&h, &other);
    assert_eq!(untagged(&attempt), "ok");
    assert!(other.reached(), "untagged: the shared root was changed");
}

#[test]
fn a_socket_made_after_its_grant_is_recorded_and_a_later_one_is_not_followed() {
    let d = DaemonGuard::start("c19-later", "");
    let lsm = Harness::backend_of_daemon(&d) == Backend::Lsm;
    let s = Scratch::new("c19-later");
    let path = s.path("later.sock");
    let p = probe().display().to_string();
    let o = d.run(&[
        "task",
        "create",
        "--allow-exec",
        &p,
        "--allow-connect",
        &format!("unix:{path}"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o);
    let mut task = TaskSession::join(&d, &id);
    // No socket yet: the grant names none.
    assert_eq!(
        task_json(&d, &id)["grants"][1]["resolved"],
        serde_json::json!([])
    );
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    let resolved = format!(
        "{path} {}:{}",
        leash::grants::dev_text(leash::grants::kernel_dev(
            std::os::unix::fs::MetadataExt::dev(&meta)
        )),
        std::os::unix::fs::MetadataExt::ino(&meta)
    );
    harness::wait_for("the daemon records the socket", || {
        task_json(&d, &id)["grants"][1]["resolved"][0] == resolved.as_str()
    });
    assert_eq!(task.run(&connect(&path)), "ok");
    assert!(listener.accept().is_ok(), "the recorded socket is reached");
    // Another socket bound at the name later (by a task that can write the directory,
    // or a server restarted) is not the one granted: lsm refuses it; grant again.
    drop(listener);
    std::fs::remove_file(&path).unwrap();
    let later = UnixListener::bind(&path).unwrap();
    later.set_nonblocking(true).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(
        task.run(&connect(&path)),
        if lsm { EPERM } else { "ok" },
        "a socket bound after the grant was recorded"
    );
    assert_eq!(later.accept().is_ok(), !lsm);
    if lsm {
        let refused = || {
            d.audit()
                .into_iter()
                .find(|e| e["kind"] == "connect" && e["reason"] == "unix_other_socket")
        };
        harness::wait_for("a unix_other_socket event in the audit log", || {
            refused().is_some()
        });
    }
}
