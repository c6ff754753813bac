//! Attach scope `task` and the cgroups a node has: the leash cgroup is a child of the
//! task process's cgroup, so that cgroup's limits still bound it, and it goes when its
//! processes are gone, so the cgroup above can be removed.

use std::path::{Path, PathBuf};

use harness::{
    Listeners,
    daemon::{DaemonGuard, TaskSession},
    probe, wait_for,
};

use super::{TASK_SCOPE, cgroup_dir, cgroup_of, create_task};

/// A cgroup made for one test under this process's cgroup, removed at the end.
struct Made(PathBuf);

impl Drop for Made {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(self.0.join("leash"));
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Turns the memory controller off again for the children of a cgroup.
struct Subtree(PathBuf);

impl Drop for Subtree {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.subtree_control"), "-memory");
    }
}

/// A `leash run --task` probe started in cgroup `dir` (it joins it before it runs).
fn join_in(d: &DaemonGuard, task: &str, dir: &Path) -> TaskSession {
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
        .unwrap();
    let mut cmd = d.cli();
    cmd.args(["run", "--task", task, "--"])
        .arg(probe())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    // SAFETY: one write() of a static buffer in the child before exec.
    unsafe {
        use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};
        let fd = procs.as_raw_fd();
        cmd.pre_exec(move || {
            if libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    TaskSession::from_child(cmd.spawn().unwrap())
}

/// A new cgroup next to this process, under the daemon's cgroup2 mount.
fn make(d: &DaemonGuard, name: &str) -> Made {
    let own = cgroup_dir(d, &cgroup_of(&std::process::id().to_string()));
    let dir = own.join(format!("leash-it-{name}-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    Made(dir)
}

#[test]
fn a_memory_limit_on_the_tasks_cgroup_bounds_its_leash_cgroup() {
    let d = DaemonGuard::start("scope-memory", TASK_SCOPE);
    let own = cgroup_dir(&d, &cgroup_of(&std::process::id().to_string()));
    let read = |f: &str| std::fs::read_to_string(own.join(f)).unwrap_or_default();
    let has = |text: String| text.split_whitespace().any(|c| c == "memory");
    // At the cgroup2 root (a VM guest), turn the controller on for the children and
    // back off after; elsewhere only where it is on already.
    let _enabled = (!has(read("cgroup.subtree_control"))
        && has(read("cgroup.controllers"))
        && !own.join("cgroup.type").exists())
    .then(|| {
        std::fs::write(own.join("cgroup.subtree_control"), "+memory")
            .ok()
            .map(|()| Subtree(own.clone()))
    })
    .flatten();
    if !has(read("cgroup.subtree_control")) {
        eprintln!(
            "skipped: the memory controller is not enabled for {} on cgroup2",
            own.display()
        );
        return;
    }
    let l = Listeners::new();
    let id = create_task(&d, l.tcp4_port());
    let pod = make(&d, "memory");
    std::fs::write(pod.0.join("memory.max"), "33554432").unwrap();
    std::fs::write(pod.0.join("memory.swap.max"), "0").ok();
    let mut s = join_in(&d, &id, &pod.0);
    let pid = s.run("pid");
    assert_eq!(
        cgroup_dir(&d, &cgroup_of(&pid)),
        pod.0.join("leash"),
        "moved into a leash cgroup under the limited one"
    );
    // 128 MiB touched under a 32 MiB limit: the OOM killer ends it.
    assert_eq!(
        s.run("alloc 128"),
        "",
        "the limit of the cgroup above applies"
    );
    let events = std::fs::read_to_string(pod.0.join("memory.events")).unwrap();
    assert!(
        events
            .lines()
            .any(|l| l.starts_with("oom_kill ") && l != "oom_kill 0"),
        "{events}"
    );
}

#[test]
fn a_task_cgroup_can_be_removed_once_its_processes_are_gone() {
    let d = DaemonGuard::start("scope-removed", TASK_SCOPE);
    let l = Listeners::new();
    let id = create_task(&d, l.tcp4_port());
    let pod = make(&d, "removed");
    let mut s = join_in(&d, &id, &pod.0);
    let pid = s.run("pid");
    assert_eq!(cgroup_dir(&d, &cgroup_of(&pid)), pod.0.join("leash"));
    drop(s);
    // The daemon prunes the emptied leash cgroup, so the pod's cgroup can go.
    wait_for("the pod's cgroup to be removable", || {
        std::fs::remove_dir(&pod.0).is_ok()
    });
    // The task lives on and takes processes from elsewhere.
    let mut again = TaskSession::join(&d, &id);
    assert!(cgroup_of(&again.run("pid")).ends_with("/leash"));
}
