//! Attach scope `task`: the network hooks run in leash cgroups only. A task's process
//! is moved into one and enforced as before; untagged processes outside are not
//! reached; a tagged process that moves itself out is killed and counted. Moves by
//! others and `auto`: `moves`; the cgroups a node has: `cgroups`.

use std::{os::unix::process::ExitStatusExt as _, path::Path};

mod cgroups;
mod moves;
mod switch;

use harness::{
    EPERM, Listeners,
    daemon::{DaemonGuard, TaskSession, stdout},
    probe, untagged, wait_for,
};

const TASK_SCOPE: &str = "attach_scope: task\n";

/// `open` file mode: these tests are about the cgroup hooks, and a Landlock domain
/// would refuse the task's own `cgroup.procs` writes before the kernel guard sees them.
fn create_task(d: &DaemonGuard, port: u16) -> String {
    let out = d.run(&[
        "task",
        "create",
        "--agent",
        "scope",
        "--files",
        "open",
        "--allow-exec",
        &probe().display().to_string(),
        "--allow-connect",
        &format!("127.0.0.1:{port}/tcp"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

fn cgroup_of(pid: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap()
        .to_owned()
}

fn counter(d: &DaemonGuard, name: &str) -> u64 {
    let (_, body) = d.metrics_get("/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the scrape"))
}

fn count_pins(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |e| {
        e.flatten()
            .map(|e| {
                if e.path().is_dir() {
                    count_pins(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

#[test]
fn a_task_runs_in_its_leash_cgroup_enforced_as_before_and_untagged_are_not_reached() {
    let d = DaemonGuard::start("scope-enforce", TASK_SCOPE);
    let l = Listeners::new();
    let other = Listeners::new();
    let id = create_task(&d, l.tcp4_port());
    let mut s = TaskSession::join(&d, &id);
    let pid = s.run("pid");
    let ours = cgroup_of(&std::process::id().to_string());
    let theirs = cgroup_of(&pid);
    assert_eq!(
        theirs,
        format!("{}/leash", ours.trim_end_matches('/')),
        "the task's process sits in a leash cgroup under the cgroup it came from"
    );
    let ok = format!("connect tcp 127.0.0.1 {}", l.tcp4_port());
    let denied = format!("connect tcp 127.0.0.1 {}", other.tcp4_port());
    assert_eq!(s.run(&ok), "ok");
    assert_eq!(s.run(&denied), EPERM);
    assert_eq!(
        s.run(&format!("sendto 127.0.0.1 {}", other.udp4_port())),
        EPERM
    );
    // Unix names: the leash cgroup carries the unix hooks too, where the kernel has them.
    let scratch = harness::Scratch::new("scope-unix");
    let sock = scratch.path("other.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let unix = format!("unix-connect {sock}");
    if harness::daemon::unix_hooks(&d) {
        assert_eq!(s.run(&unix), EPERM);
    }
    assert_eq!(untagged(&unix), "ok");
    // Raw sockets: `sock_create` is attached there too.
    let raw = format!(
        "socket {} {} {}",
        libc::AF_INET,
        libc::SOCK_RAW,
        libc::IPPROTO_ICMP
    );
    assert_eq!(s.run(&raw), EPERM);
    assert_eq!(untagged(&raw), "ok");
    // Processes outside: not tagged, and not where the hooks are.
    assert_eq!(untagged(&denied), "ok");
    // The hooks are pinned per leash cgroup, none at the root.
    let root_links: Vec<String> = std::fs::read_dir(d.pin_dir.join("links"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !root_links.iter().any(|n| n.starts_with("net_")),
        "no network hook at the root: {root_links:?}"
    );
    assert!(root_links.iter().any(|n| n == "scope_cgroup_attach"));
    assert_eq!(
        count_pins(&d.pin_dir.join("links-scope")),
        harness::daemon::scope_links(&d)
    );

    // Once its processes are gone, the leash cgroup and its hooks go too (the task,
    // from `leash task create`, lives on until ended).
    drop(s);
    assert_eq!(harness::daemon::task_json(&d, &id)["state"], "active");
    wait_for("the empty leash cgroup to be pruned", || {
        count_pins(&d.pin_dir.join("links-scope")) == 0
    });
}

#[test]
fn a_tagged_process_moving_itself_out_of_its_leash_cgroup_is_killed_and_counted() {
    let d = DaemonGuard::start("scope-escape", TASK_SCOPE);
    let l = Listeners::new();
    let id = create_task(&d, l.tcp4_port());
    let escapes = counter(&d, "leash_cgroup_escapes_total");
    let killed = counter(&d, "leash_processes_killed_total");
    let mut s = TaskSession::join(&d, &id);
    let pid = s.run("pid");
    let leash = cgroup_of(&pid);
    let parent = Path::new(&leash).parent().unwrap().to_owned();
    let status: serde_json::Value =
        serde_json::from_slice(&d.run(&["status", "--json"]).stdout).unwrap();
    let root = Path::new(status["cgroup"].as_str().unwrap());
    let target = root.join(parent.strip_prefix("/").unwrap());
    // An untagged process moving between the same cgroups is left alone (first: the
    // daemon prunes the leash cgroup once the tagged probe below has died in it).
    let mut child = std::process::Command::new(probe())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let cpid = child.id().to_string();
    std::fs::write(
        root.join(leash.trim_start_matches('/'))
            .join("cgroup.procs"),
        &cpid,
    )
    .unwrap();
    std::fs::write(target.join("cgroup.procs"), &cpid).unwrap();
    assert!(
        child.try_wait().unwrap().is_none(),
        "the untagged process lives"
    );
    let _ = child.kill();
    let _ = child.wait();
    // The move itself succeeds; the process never returns to user space.
    assert_eq!(
        s.run(&format!("cgroup-move-self {}", target.display())),
        "",
        "the probe must die before answering"
    );
    let exit = s.child.wait().unwrap();
    // `leash run` execs the probe, so the child is the probe itself.
    assert_eq!(exit.signal(), Some(libc::SIGKILL), "{exit:?}");
    assert_eq!(counter(&d, "leash_cgroup_escapes_total"), escapes + 1);
    assert_eq!(counter(&d, "leash_processes_killed_total"), killed + 1);
}

#[test]
fn a_restarted_daemon_takes_over_the_leash_cgroups_hooks() {
    let mut d = DaemonGuard::start("scope-restart", TASK_SCOPE);
    let l = Listeners::new();
    let other = Listeners::new();
    let id = create_task(&d, l.tcp4_port());
    let mut s = TaskSession::join(&d, &id);
    let ok = format!("connect tcp 127.0.0.1 {}", l.tcp4_port());
    let denied = format!("connect tcp 127.0.0.1 {}", other.tcp4_port());
    assert_eq!(s.run(&denied), EPERM);
    let scope_dir = d.pin_dir.join("links-scope");
    let pins_before: Vec<_> = std::fs::read_dir(&scope_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();

    d.kill9();
    assert_eq!(s.run(&denied), EPERM, "enforced with no daemon");
    d.spawn();
    assert_eq!(s.run(&denied), EPERM, "no gap across the restart");
    assert_eq!(s.run(&ok), "ok");
    let pins_after: Vec<_> = std::fs::read_dir(&scope_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(pins_after, pins_before, "the same leash cgroup, adopted");
    assert_eq!(
        count_pins(&scope_dir),
        harness::daemon::scope_links(&d),
        "its links replaced, not doubled"
    );
    // The adopted task still takes new grants.
    let out = d.run(&[
        "grant",
        "add",
        &id,
        "--connect",
        &format!("127.0.0.1:{}/tcp", other.tcp4_port()),
    ]);
    assert!(out.status.success());
    assert_eq!(s.run(&denied), "ok");
}

#[test]
fn an_in_process_enforcer_in_task_scope_enforces_commands_that_join_its_leash_cgroup() {
    let h = harness::Harness::load_scoped(leash::kernel::AttachScope::Task);
    let l = Listeners::new();
    let other = Listeners::new();
    let task = h.task(harness::spec(
        &[],
        &[&format!("127.0.0.1:{}/tcp", l.tcp4_port())],
    ));
    let denied = format!("connect tcp 127.0.0.1 {}", other.tcp4_port());
    assert_eq!(
        task.probe(&format!("connect tcp 127.0.0.1 {}", l.tcp4_port())),
        "ok"
    );
    assert_eq!(task.probe(&denied), EPERM);
    let mut s = task.session();
    assert!(cgroup_of(&s.run("pid")).ends_with("/leash"));
    assert_eq!(untagged(&denied), "ok");
    assert!(!cgroup_of(&std::process::id().to_string()).ends_with("/leash"));
}

/// The cgroup2 mount the daemon uses, from `leash status`.
fn status(d: &DaemonGuard) -> serde_json::Value {
    serde_json::from_slice(&d.run(&["status", "--json"]).stdout).unwrap()
}

/// Where cgroup `rel` (as in `/proc/<pid>/cgroup`) is in the daemon's cgroup2 mount.
fn cgroup_dir(d: &DaemonGuard, rel: &str) -> std::path::PathBuf {
    Path::new(status(d)["cgroup"].as_str().unwrap()).join(rel.trim_start_matches('/'))
}

/// The audit events of `reason`.
fn audited(d: &DaemonGuard, reason: &str) -> Vec<serde_json::Value> {
    d.audit()
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

/// Whether this kernel's BTF names the kfunc `bpf_send_signal_task` (Linux >= 6.13).
pub(super) fn kernel_has_send_signal_task() -> bool {
    std::fs::read("/sys/kernel/btf/vmlinux").is_ok_and(|b| {
        b.windows(b"bpf_send_signal_task".len())
            .any(|w| w == b"bpf_send_signal_task")
    })
}
