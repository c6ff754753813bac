//! Class 20, host state and kernel doors: a task may not write what the kernel or
//! untagged processes act on (`/proc/sys`, `/sys`, `binfmt_misc`) nor open the kernel's
//! memory (`/dev/mem`, `/dev/kmem`, `/dev/port`, `/proc/kcore`). leash decides on the
//! opened file, so a relative name, a symlink, another mount or a device node made
//! elsewhere is caught as the plain path is.

use std::{ffi::CString, fs, os::unix::fs::PermissionsExt as _, path::Path};

use harness::{Action, Reason};
use harness::{Harness, Scratch, Task, exec_denied, refused, spec};
use leash::{kernel::Backend, kernel::events::Target};

use super::untagged;

pub(super) const CORE_PATTERN: &str = "/proc/sys/kernel/core_pattern";
/// What an attempt writes: a plain name, so a write that landed harms no one before
/// the guard below puts the host's value back.
const PLANTED: &str = "core.leash-c20";

/// The host's `core_pattern`, recorded first and written back on drop whatever
/// happened in between.
pub(super) struct CorePattern(String);

impl CorePattern {
    #[must_use]
    pub(super) fn save() -> Self {
        Self(fs::read_to_string(CORE_PATTERN).expect("read core_pattern"))
    }

    /// Asserts the host's value is still the recorded one.
    pub(super) fn assert_unchanged(&self) {
        assert_eq!(
            fs::read_to_string(CORE_PATTERN).unwrap(),
            self.0,
            "core_pattern changed"
        );
    }
}

impl Drop for CorePattern {
    fn drop(&mut self) {
        if fs::read_to_string(CORE_PATTERN).ok().as_deref() != Some(&self.0) {
            fs::write(CORE_PATTERN, &self.0).expect("restore core_pattern");
        }
    }
}

/// Expects the attempt refused for host state, with `call` naming the file system.
fn host_state(task: &Task<'_>, denied: &str, call: &str, attempt: &str) {
    let ev = task.assert_denied(Action::Tamper, Reason::GuardHostState, denied, || {
        task.probe(attempt)
    });
    assert_eq!(
        ev.target,
        Target::Guard {
            call: call.into(),
            target_pid: 0
        },
        "{attempt}"
    );
}

#[test]
fn proc_sys_and_sys_writes_are_stopped_by_every_name() {
    let core = CorePattern::save();
    let h = Harness::load();
    let denied = refused(h.backend());
    let task = h.task(spec(&[], &[]));

    host_state(
        &task,
        denied,
        "procfs",
        &format!("open-write {CORE_PATTERN} {PLANTED}"),
    );
    core.assert_unchanged();
    // A name relative to the working directory, and a symlink from elsewhere.
    host_state(
        &task,
        denied,
        "procfs",
        &format!("open-write-in /proc/sys/kernel core_pattern {PLANTED}"),
    );
    core.assert_unchanged();
    let s = Scratch::new("host-state");
    let link = s.path("pattern");
    std::os::unix::fs::symlink(CORE_PATTERN, &link).unwrap();
    host_state(
        &task,
        denied,
        "procfs",
        &format!("open-write {link} {PLANTED}"),
    );
    core.assert_unchanged();
    // The BPF sysctls by a second procfs path: the task's own /proc/self/root.
    host_state(
        &task,
        denied,
        "procfs",
        "open-write /proc/self/root/proc/sys/kernel/unprivileged_bpf_disabled",
    );
    // Reading stays allowed.
    assert_eq!(task.probe(&format!("open-read {CORE_PATTERN}")), "ok");
    assert_eq!(task.probe("open-read /proc/self/status"), "ok");

    // sysfs: opened for write, nothing written.
    let sys = [
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/kernel/mm/ksm/run",
        "/sys/power/state",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("a writable sysfs file");
    host_state(&task, denied, "sysfs", &format!("open-write {sys}"));
    assert_eq!(task.probe(&format!("open-read {sys}")), "ok");
    // A process's own procfs files stay writable (user namespaces write their maps).
    assert_eq!(task.probe("open-write /proc/self/comm probe"), "ok");

    // Untagged processes are untouched: they open it for write, and write back the
    // same value.
    assert_eq!(untagged(&format!("open-write {CORE_PATTERN}")), "ok");
    assert_eq!(untagged(&format!("open-write {sys}")), "ok");
    fs::write(CORE_PATTERN, &core.0).expect("untagged write of core_pattern");
    core.assert_unchanged();
}

/// A private mount of `binfmt_misc` (the kernel's one instance before Linux 6.7, or a
/// new one): its `register` file is refused by the file system, wherever it is mounted.
struct BinfmtMount(String);

/// Mounts `binfmt_misc` at `dir`; `None` (skipped, said why) where it cannot be.
fn mount_binfmt(dir: &str) -> Option<BinfmtMount> {
    let c = CString::new(dir).unwrap();
    // SAFETY: mounting binfmt_misc at our own scratch directory.
    let rc = unsafe {
        libc::mount(
            c"binfmt_misc".as_ptr(),
            c.as_ptr(),
            c"binfmt_misc".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        eprintln!(
            "skipped binfmt_misc: mount failed ({})",
            std::io::Error::last_os_error()
        );
        return None;
    }
    Some(BinfmtMount(dir.to_owned()))
}

impl Drop for BinfmtMount {
    fn drop(&mut self) {
        let c = CString::new(self.0.as_str()).unwrap();
        // SAFETY: unmounting our own mount point.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn binfmt_misc_registration_is_stopped() {
    let h = Harness::load();
    let denied = refused(h.backend());
    let s = Scratch::new("binfmt");
    let dir = s.path("bm");
    fs::create_dir(&dir).unwrap();
    let Some(_mount) = mount_binfmt(&dir) else {
        return;
    };
    let task = h.task(spec(&[], &[]));
    // Opened for write, nothing written: a registration needs a write that never comes.
    host_state(
        &task,
        denied,
        "binfmt",
        &format!("open-write {dir}/register"),
    );
    assert_eq!(task.probe(&format!("open-read {dir}/status")), "ok");
    assert_eq!(untagged(&format!("open-write {dir}/register")), "ok");
}

/// `binfmt_misc` by the other ways in: its `status` file (`-1` removes every handler,
/// `0` turns them all off) is refused as `register` is; and an instance of the task's
/// own, in a new
/// user namespace (Linux >= 6.7 has one per user namespace), takes a mount, which is
/// refused as any other (c19).
#[test]
fn binfmt_misc_status_and_a_private_instance_are_stopped() {
    let h = Harness::load();
    let denied = refused(h.backend());
    let s = Scratch::new("binfmt-ways");
    let dir = s.path("bm");
    fs::create_dir(&dir).unwrap();
    let Some(_mount) = mount_binfmt(&dir) else {
        return;
    };
    let task = h.task(spec(&[], &[]));
    let ev = task.assert_denied(Action::Tamper, Reason::GuardHostState, denied, || {
        task.probe(&format!("open-write {dir}/status"))
    });
    assert_eq!(
        ev.target,
        Target::Guard {
            call: "binfmt".into(),
            target_pid: 0
        }
    );
    // An instance of its own: the mount is stopped before any handler is registered.
    let own = s.path("own");
    fs::create_dir(&own).unwrap();
    let attempt = format!("binfmt-userns {own} LEASHC20 /bin/true");
    task.assert_denied(Action::Tamper, Reason::GuardMount, denied, || {
        task.probe(&attempt)
    });
    // Outside a task it works where the kernel has per-namespace instances (the handler
    // dies with the namespace); older kernels refuse the mount themselves.
    let outside = untagged(&attempt);
    assert!(outside == "ok" || outside == "errno 1", "{outside}");
}

/// A handler the host registered (untagged, as root) and removes on drop.
struct Handler {
    entry: String,
}

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = fs::write(&self.entry, "-1");
    }
}

/// A handler the host registered is no way around exec grants: the data file is
/// checked as a shebang script is (c09), and the handler's interpreter as the program
/// that runs.
#[test]
fn an_existing_binfmt_misc_handler_runs_nothing_ungranted() {
    let h = Harness::load();
    let s = Scratch::new("binfmt-handler");
    let dir = s.path("bm");
    fs::create_dir(&dir).unwrap();
    let Some(_mount) = mount_binfmt(&dir) else {
        return;
    };
    let interp = s.copy_true("interp");
    // A magic no other file starts with, so the handler matches only ours.
    let name = format!("leash-c20-{}", std::process::id());
    let magic = format!("LEASHC20{}", std::process::id());
    fs::write(
        format!("{dir}/register"),
        format!(":{name}:M::{magic}::{interp}:"),
    )
    .expect("register a handler");
    let _handler = Handler {
        entry: format!("{dir}/{name}"),
    };
    let data = s.path("data");
    fs::write(&data, format!("{magic}\n")).unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        untagged(&format!("exec {data}")),
        "exit 0",
        "the handler runs"
    );

    let denied = exec_denied(h.backend());
    let both = h.task(spec(&[&data, &interp], &[]));
    assert_eq!(both.probe(&format!("exec {data}")), "exit 0");
    // The data file not granted: named by path on portable (as a script), by inode on
    // lsm.
    let only_interp = h.task(spec(&[&interp], &[]));
    let reason = match h.backend() {
        Backend::Portable => Reason::ScriptNotGranted,
        Backend::Lsm => Reason::NotGranted,
    };
    only_interp.assert_denied(Action::Exec, reason, denied, || {
        only_interp.probe(&format!("exec {data}"))
    });
    // The handler's interpreter not granted.
    let only_data = h.task(spec(&[&data], &[]));
    only_data.assert_denied(Action::Exec, Reason::NotGranted, denied, || {
        only_data.probe(&format!("exec {data}"))
    });
}

/// Makes the character device `major:minor` at `path`.
fn mknod(path: &str, minor: u32) {
    let c = CString::new(path).unwrap();
    // SAFETY: mknod with a NUL-terminated path in our scratch directory.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, minor)) };
    assert_eq!(rc, 0, "mknod {path}: {}", std::io::Error::last_os_error());
}

/// Expects the open of `path` refused as a kernel door named `call`. On the portable
/// backend leash sees an open that succeeded only: where the kernel refuses it itself
/// (lockdown for the memory devices, no driver for `/dev/kmem`), the task gets that
/// error and no descriptor, as an untagged process does.
fn kernel_door(h: &Harness, task: &Task<'_>, path: &str, call: &str) {
    let attempt = format!("open-only {path}");
    let outside = untagged(&attempt);
    if h.backend() == Backend::Portable && outside != "ok" {
        eprintln!("{path}: the kernel refuses it by itself here ({outside})");
        assert_eq!(task.probe(&attempt), outside);
        return;
    }
    let ev = task.assert_denied(
        Action::Tamper,
        Reason::GuardKernel,
        refused(h.backend()),
        || task.probe(&attempt),
    );
    assert_eq!(
        ev.target,
        Target::Guard {
            call: call.into(),
            target_pid: 0
        }
    );
}

#[test]
fn raw_memory_devices_and_kcore_are_refused_by_device_number() {
    let h = Harness::load();
    let task = h.task(spec(&[], &[]));
    // Nodes of our own, under names no path check would know.
    let s = Scratch::new("kernel-doors");
    for (name, minor) in [("m", 1), ("k", 2), ("p", 4)] {
        mknod(&s.path(name), minor);
    }
    kernel_door(&h, &task, &s.path("m"), "mem");
    kernel_door(&h, &task, &s.path("k"), "kmem");
    kernel_door(&h, &task, &s.path("p"), "port");
    kernel_door(&h, &task, "/proc/kcore", "kcore");
    // Other character devices are not doors.
    assert_eq!(task.probe("open-only /dev/null"), "ok");
}
