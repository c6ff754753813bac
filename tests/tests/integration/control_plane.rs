//! The control plane's own rules, end to end on a real daemon: an approval takes a
//! second party, with tokens or without; with tokens on, ending and revoking take the
//! task's agent, an approver or root; from inside a task, reads show only that task.
#![expect(
    clippy::many_single_char_names,
    reason = "d(aemon), o(utput), s(ession) keep the scenarios short"
)]

use std::os::unix::process::CommandExt as _;

use harness::{
    daemon::{DaemonGuard, TaskSession, stderr, stdout, task_json},
    probe,
    tokens::{Signer, TempFile},
};

/// A uid other than root's that may call the daemon.
const OTHER: u32 = 4242;

const BOT: &str = "spiffe://leash.local/agent/bot-1";
const BOT2: &str = "spiffe://leash.local/agent/bot-2";
const REVIEWER: &str = "spiffe://leash.local/agent/reviewer";

/// A daemon with tokens on and a policy: agents `bot-*` may run the probe, and
/// connect to loopback port 2 once [`REVIEWER`] approves.
fn daemon(name: &str, signer: &Signer) -> (DaemonGuard, TempFile) {
    let policy = TempFile::new(
        &format!("{name}-policy.yaml"),
        &format!(
            "approvers: {{subjects: [\"{REVIEWER}\"]}}\nrules:\n  - name: bots\n    agents: [\"bot-*\"]\n    exec: [\"{}/\"]\n    approval:\n      connect: [\"127.0.0.1:2/tcp\"]\n",
            probe().parent().unwrap().display()
        ),
    );
    let d = DaemonGuard::start(
        name,
        &format!(
            "policy:\n  file: {}\n{}  uids: [0, {OTHER}]\n",
            policy.0.display(),
            signer.auth_config()
        ),
    );
    (d, policy)
}

/// A `leash` command with `$LEASH_TOKEN` set, or none, as `uid`.
fn cli(d: &DaemonGuard, token: Option<&str>, uid: u32) -> std::process::Command {
    let mut c = d.cli();
    if let Some(t) = token {
        c.env("LEASH_TOKEN", t);
    }
    if uid != 0 {
        // Group root's, so that it may open the socket.
        c.uid(uid).gid(0);
    }
    c
}

fn call(d: &DaemonGuard, token: Option<&str>, uid: u32, args: &[&str]) -> std::process::Output {
    cli(d, token, uid).args(args).output().unwrap()
}

#[test]
fn an_approval_takes_a_second_party_with_or_without_a_token() {
    let signer = Signer::new("cp-sod");
    let (mut d, _p) = daemon("cp-sod", &signer);
    let bot = signer.token(BOT, "leash", 300);
    let p = probe().display().to_string();
    // The agent asks for a grant that waits for approval (as root, with its token).
    let o = call(
        &d,
        Some(&bot),
        0,
        &[
            "task",
            "create",
            "--agent",
            "bot-1",
            "--allow-exec",
            &p,
            "--allow-connect",
            "127.0.0.1:2/tcp",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o);
    let pending = |d: &DaemonGuard| {
        task_json(d, &id)["grants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g.get("pending_until").is_some())
            .map(|g| g["id"].as_str().unwrap().to_owned())
    };
    let gid = pending(&d).expect("a pending grant");
    // Who asked is in the state file: a restarted daemon still knows.
    d.kill9();
    d.spawn();

    // The same uid leaving its token off is the same party: refused.
    let o = call(&d, None, 0, &["approve", &id, &gid]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("(self_approval)"), "{}", stderr(&o));
    assert!(stderr(&o).contains("another party"), "{}", stderr(&o));
    // The agent's own token never approves its grants.
    let o = call(&d, Some(&bot), 0, &["approve", &id, &gid]);
    assert!(stderr(&o).contains("its own grants"), "{}", stderr(&o));
    // Nor a token whose subject is not an approver.
    let o = call(
        &d,
        Some(&signer.token(BOT2, "leash", 300)),
        0,
        &["approve", &id, &gid],
    );
    assert!(
        stderr(&o).contains("not among the approvers"),
        "{}",
        stderr(&o)
    );
    assert_eq!(pending(&d).as_deref(), Some(gid.as_str()), "still pending");

    // Another subject that the policy names: approved, both parties on record.
    let o = call(
        &d,
        Some(&signer.token(REVIEWER, "leash", 300)),
        0,
        &["approve", &id, &gid],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(pending(&d), None);
    let ev = d
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "grant_approved")
        .expect("grant_approved");
    assert_eq!(ev["target"]["by"], format!("uid 0, sub {REVIEWER}"));
    assert_eq!(ev["target"]["requested_by"], format!("uid 0, sub {BOT}"));
}

#[test]
fn with_tokens_ending_and_revoking_take_the_agent_an_approver_or_root() {
    let signer = Signer::new("cp-narrow");
    let (d, _p) = daemon("cp-narrow", &signer);
    let bot = signer.token(BOT, "leash", 300);
    let p = probe().display().to_string();
    let create = || {
        let o = call(
            &d,
            Some(&bot),
            0,
            &["task", "create", "--agent", "bot-1", "--allow-exec", &p],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let (a, b, c) = (create(), create(), create());
    let g = task_json(&d, &a)["grants"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Another uid: without a token, or with another agent's, refused.
    let bot2 = signer.token(BOT2, "leash", 300);
    for token in [None, Some(bot2.as_str())] {
        for args in [vec!["task", "end", &a], vec!["grant", "revoke", &a, &g]] {
            let o = call(&d, token, OTHER, &args);
            assert!(!o.status.success(), "{args:?}");
            assert!(
                stderr(&o).contains("may not end tasks or revoke grants of agent \"bot-1\""),
                "{}",
                stderr(&o)
            );
        }
    }
    assert_eq!(task_json(&d, &a)["state"], "created");
    assert_eq!(task_json(&d, &a)["grants"].as_array().unwrap().len(), 1);
    // The agent's token, an approver subject's, and root: allowed.
    let reviewer = signer.token(REVIEWER, "leash", 300);
    let o = call(&d, Some(&bot), OTHER, &["grant", "revoke", &a, &g]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (id, token, uid) in [
        (&a, Some(&bot), OTHER),
        (&b, Some(&reviewer), OTHER),
        (&c, None, 0),
    ] {
        let o = call(&d, token.map(String::as_str), uid, &["task", "end", id]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(task_json(&d, id)["state"], "ended");
    }
}

#[test]
fn from_inside_a_task_reads_show_only_that_task() {
    let d = DaemonGuard::start("cp-reads", "");
    let leash = harness::daemon::leash_bin().display().to_string();
    let p = probe().display().to_string();
    let create = |exec: &str| {
        let o = d.run(&[
            "task",
            "create",
            "--agent",
            "ci",
            "--allow-exec",
            exec,
            "--allow-exec",
            &p,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let (other, own) = (create(&p), create(&leash));
    // A process of the task keeps it alive while the reads below come and go.
    let _s = TaskSession::join(&d, &own);
    let inside = |args: &[&str]| {
        let mut argv = vec!["run", "--task", own.as_str(), "--", leash.as_str()];
        argv.extend_from_slice(args);
        d.run(&argv)
    };
    let json = |o: &std::process::Output| -> serde_json::Value {
        assert!(o.status.success(), "{}", stderr(o));
        serde_json::from_slice(&o.stdout).unwrap()
    };

    let list = json(&inside(&["task", "list", "--json"]));
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [own.as_str()]);
    assert_eq!(
        json(&inside(&["task", "show", &own, "--json"]))["id"],
        own.as_str()
    );
    // Another task's id: no such task, as if it did not exist (not "forbidden").
    let o = inside(&["task", "show", &other]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("(not_found)"), "{}", stderr(&o));

    // Its own events only, whichever task it asks for.
    let o = inside(&["events", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let tasks: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["task"].clone())
        .collect();
    assert!(!tasks.is_empty(), "its own task_started at least");
    assert!(tasks.iter().all(|t| *t == own.as_str()), "{tasks:?}");
    let o = inside(&["events", "--json", "--task", &other]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "", "another task's events");

    let status = json(&inside(&["status", "--json"]));
    assert_eq!(status["tasks_active"], 1);
    assert_eq!(status["maps"].as_array().map(Vec::len), Some(0));
    assert!(status["scope"].as_str().unwrap().contains(&own), "{status}");

    // Outside every task, everything as before.
    let o = d.run(&["task", "list", "--json"]);
    assert_eq!(json(&o).as_array().map(Vec::len), Some(2));
    let status = json(&d.run(&["status", "--json"]));
    assert_eq!(status["tasks_active"], 2);
    assert!(status.get("scope").is_none(), "{status}");
    let o = d.run(&["events", "--json"]);
    assert!(stdout(&o).contains(&other), "{}", stdout(&o));
}
