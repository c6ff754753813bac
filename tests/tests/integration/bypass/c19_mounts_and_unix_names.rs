//! Class 19, names that can be re-pointed: a unix grant (and the API socket, open to
//! every task) is a path, and a bind mount, `chroot` plus a hard link or `pivot_root`
//! makes the path name another socket. A tagged process may not mount, unmount, move
//! mounts, pivot or chroot, nor unlink or rename the API socket or a directory above it.
//! Each attempt runs in a private mount namespace the test made before tagging, so
//! nothing reaches the host even if it landed.

use std::{os::unix::net::UnixListener, path::Path};

use harness::{Action, Reason};
use harness::{
    EPERM, Harness, Scratch,
    daemon::{DaemonGuard, stderr, stdout},
    mount_ns::{self, Mount},
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
