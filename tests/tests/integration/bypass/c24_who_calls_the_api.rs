//! Class 20, who is calling the API: `SO_PEERCRED` names the process that called
//! `connect()`, by pid. A task's process speaking on a connection whose connector has
//! exited (its parent's, or a child's), or whose connector's pid now names an untagged
//! process, must still be refused every mutating call, and change nothing.

use std::{
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command},
};

use harness::{
    daemon::{DaemonGuard, TaskSession, stderr, stdout, task_json},
    probe, wait_for,
};

/// A uid other than root's, allowed to call, that asks for the pending grant: root
/// is then a second party who may approve it (were it outside every task).
const REQUESTER: u32 = 4242;

/// The go and status files of one request on an orphaned connection; removed on drop.
struct Exchange(PathBuf);

impl Exchange {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("leash-c20-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Lets the waiting process send, and returns `status CODE ERROR_CODE`.
    fn go(&self) -> String {
        std::fs::write(self.0.join("go"), "").unwrap();
        let status = self.0.join("status");
        wait_for("the orphaned request's status", || status.exists());
        // Written in one call; read until it is complete.
        let mut text = String::new();
        wait_for("the status line", || {
            text = std::fs::read_to_string(&status).unwrap_or_default();
            !text.is_empty()
        });
        text
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A daemon with a policy under which agent `ci` may hold the probe and loopback
/// port 1, and needs an approval (by root) for port 2.
fn daemon(name: &str) -> DaemonGuard {
    let dir = probe().parent().unwrap().display().to_string();
    let policy = std::env::temp_dir().join(format!("leash-c20-{name}-{}.yaml", std::process::id()));
    std::fs::write(
        &policy,
        format!(
            "approvers: {{uids: [0]}}\nrules:\n  - name: ci\n    agents: [ci]\n    exec: [\"{dir}/\"]\n    connect: [\"127.0.0.1:1/tcp\"]\n    approval:\n      connect: [\"127.0.0.1:2/tcp\"]\n"
        ),
    )
    .unwrap();
    // A connection here waits idle while its connector exits and its pid is handed out
    // again (many seconds under TCG): longer than the default idle timeout.
    let d = DaemonGuard::start(
        name,
        &format!(
            "policy:\n  file: {}\nauth:\n  uids: [0, {REQUESTER}]\nconnections:\n  header_timeout: 5m\n",
            policy.display()
        ),
    );
    // The daemon has read it.
    let _ = std::fs::remove_file(&policy);
    d
}

/// A task of agent `ci` allowed the probe, with a grant pending approval that
/// [`REQUESTER`] asked for; (task id, pending grant id).
fn task_with_pending_grant(d: &DaemonGuard) -> (String, String) {
    let p = probe().display().to_string();
    // `open` file mode: the task's processes report through files outside the
    // workspace (the exchange directories); this class is about API callers.
    let o = d.run(&[
        "task",
        "create",
        "--agent",
        "ci",
        "--files",
        "open",
        "--allow-exec",
        &p,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o);
    let o = d
        .cli()
        .uid(REQUESTER)
        .gid(0)
        .args(["grant", "add", &id, "--connect", "127.0.0.1:2/tcp"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("pending approval"), "{}", stdout(&o));
    let gid = stdout(&o).split_whitespace().next().unwrap().to_owned();
    (id, gid)
}

/// What the task holds: (grant ids, how many are pending).
fn grants(d: &DaemonGuard, id: &str) -> (Vec<String>, usize) {
    let t = task_json(d, id);
    let list = t["grants"].as_array().unwrap();
    (
        list.iter()
            .map(|g| g["id"].as_str().unwrap().to_owned())
            .collect(),
        list.iter()
            .filter(|g| g.get("pending_until").is_some())
            .count(),
    )
}

/// Starts `api-orphan` in the task session; returns the connector's pid once it has
/// exited. The request waits for [`Exchange::go`].
fn orphan(d: &DaemonGuard, s: &mut TaskSession, x: &Exchange, mode: &str, request: &str) -> u32 {
    let out = s.run(&format!(
        "api-orphan {} {mode} {} {request}",
        d.socket.display(),
        x.0.display()
    ));
    let pid: u32 = out
        .strip_prefix("pid ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("api-orphan: {out}"));
    let proc = PathBuf::from(format!("/proc/{pid}"));
    wait_for("the connector to be gone", || !proc.exists());
    pid
}

const GONE: &str = "status 403 caller_gone";

#[test]
fn a_task_cannot_use_a_connection_whose_connector_exited() {
    let d = daemon("c20-orphan");
    let (id, gid) = task_with_pending_grant(&d);
    let before = grants(&d, &id);
    let mut s = TaskSession::join(&d, &id);
    let requests = [
        format!("POST /v1/tasks/{id}/grants {{\"connect\":\"127.0.0.1:1/tcp\"}}"),
        format!("POST /v1/tasks/{id}/grants/{gid}/approve"),
        "POST /v1/tasks {\"agent\":\"ci\"}".to_owned(),
    ];
    // The connector forks and exits, its child sends; a child connects and exits, its
    // parent sends. Both are the task's processes.
    for mode in ["connector-exits", "child-connects"] {
        for (n, request) in requests.iter().enumerate() {
            let x = Exchange::new(&format!("{mode}-{n}"));
            orphan(&d, &mut s, &x, mode, request);
            assert_eq!(x.go(), GONE, "{mode}: {request}");
        }
    }
    assert_eq!(grants(&d, &id), before, "nothing changed");
    let tasks = d.run(&["task", "list", "--json"]);
    let tasks: serde_json::Value = serde_json::from_slice(&tasks.stdout).unwrap();
    assert_eq!(tasks.as_array().map(Vec::len), Some(1), "no task created");
    assert!(
        !d.audit().iter().any(|e| e["kind"] == "grant_approved"),
        "nothing approved"
    );

    // An untagged live caller still may: root approves what another uid asked for.
    let o = d.run(&["approve", &id, &gid]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = d.run(&["grant", "add", &id, "--connect", "127.0.0.1:1/tcp"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// An untagged process that takes pid `pid`, if the kernel hands it out again.
fn take_pid(pid: u32) -> Option<Child> {
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        if child.id() == pid {
            return Some(child);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    None
}

/// Runs `api-orphan` outside every task: the connection is accepted from an untagged
/// process, and the sender joins `task` before it speaks. Returns the connector's pid
/// once it has exited.
fn orphan_untagged(d: &DaemonGuard, x: &Exchange, task: &str, request: &str) -> u32 {
    std::fs::write(x.0.join("attach"), task).unwrap();
    let mut argv = vec![
        "api-orphan".to_owned(),
        d.socket.display().to_string(),
        "connector-exits".into(),
        x.0.display().to_string(),
    ];
    argv.extend(request.split_whitespace().map(str::to_owned));
    let o = Command::new(probe()).args(&argv).output().unwrap();
    let out = stdout(&o);
    let pid: u32 = out
        .strip_prefix("pid ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("api-orphan: {out}"));
    let proc = PathBuf::from(format!("/proc/{pid}"));
    wait_for("the connector to be gone", || !proc.exists());
    pid
}

#[test]
fn a_recycled_connector_pid_does_not_make_a_task_an_outsider() {
    let d = daemon("c20-recycled");
    let (id, gid) = task_with_pending_grant(&d);
    let before = grants(&d, &id);
    // Keeps the task alive while the senders join it and exit.
    let _s = TaskSession::join(&d, &id);
    let mut recycled = 0;
    // The connection is accepted from an untagged process, which exits; its pid goes
    // to another untagged process; the connector's child, in the task by then, sends.
    for (n, request) in [
        format!("POST /v1/tasks/{id}/grants/{gid}/approve"),
        format!("POST /v1/tasks/{id}/grants {{\"connect\":\"127.0.0.1:1/tcp\"}}"),
    ]
    .iter()
    .enumerate()
    {
        let x = Exchange::new(&format!("recycled-{n}"));
        let pid = orphan_untagged(&d, &x, &id, request);
        let taker = take_pid(pid);
        let out = x.go();
        if let Some(mut c) = taker {
            recycled += 1;
            let _ = c.kill();
            let _ = c.wait();
        }
        assert_eq!(out, GONE, "{request}");
    }
    assert_eq!(grants(&d, &id), before, "nothing changed");
    assert_eq!(recycled, 2, "the connector's pid was not handed out again");
}
