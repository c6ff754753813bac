//! Identity and policy end to end: a real daemon with a node policy, refusing requests
//! beyond the ceilings, keeping pending grants out of the kernel until approved,
//! authenticating bearer tokens, and reloading the policy on SIGHUP.
#![expect(
    clippy::many_single_char_names,
    reason = "d(aemon), l(istener), o(utput), p(robe), s(ession) keep the scenarios short"
)]

use harness::{
    EPERM, Listeners,
    daemon::{DaemonGuard, TaskSession, stderr, stdout, task_json},
    probe,
    tokens::{self, TempFile},
    wait_for,
};

mod ceilings;

/// A daemon enforcing the policy `text`.
fn with_policy(name: &str, text: &str, extra: &str) -> (DaemonGuard, TempFile) {
    let f = TempFile::new(&format!("{name}-policy.yaml"), text);
    let d = DaemonGuard::start(
        name,
        &format!("policy:\n  file: {}\n{extra}", f.0.display()),
    );
    (d, f)
}

/// The directory holding the probe, as an exec ceiling (`DIR/`).
fn probe_dir() -> String {
    format!("{}/", probe().parent().unwrap().display())
}

fn post(d: &DaemonGuard, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let (status, text) = d.http("POST", path, body.to_string().as_bytes());
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

fn sighup(d: &DaemonGuard) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(d.pid().unwrap() as i32, libc::SIGHUP) };
}

fn audit_kinds(d: &DaemonGuard, kind: &str) -> Vec<serde_json::Value> {
    d.audit()
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

#[test]
fn requests_beyond_the_ceiling_are_refused_naming_grant_and_rule() {
    let l = Listeners::new();
    let port = l.tcp4_port();
    let policy = format!(
        "rules:\n  - name: ci\n    agents: [\"ci-*\"]\n    max_ttl: 10m\n    modes: [enforce]\n    require_intent: true\n    exec: [\"{}\"]\n    connect: [\"127.0.0.1:{port}/tcp\"]\n",
        probe_dir()
    );
    let (d, _f) = with_policy("pol-ceil", &policy, "");
    let p = probe().display().to_string();
    let allow = format!("127.0.0.1:{port}/tcp");

    // Within the ceiling: created, and the kernel enforces it as usual.
    let o = d.run(&[
        "task",
        "create",
        "--agent",
        "ci-1",
        "--intent",
        "build",
        "--ttl",
        "5m",
        "--allow-exec",
        &p,
        "--allow-connect",
        &allow,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o);
    let mut s = TaskSession::join(&d, &id);
    assert_eq!(s.run(&format!("connect tcp 127.0.0.1 {port}")), "ok");
    let other = Listeners::new();
    assert_eq!(
        s.run(&format!("connect tcp 127.0.0.1 {}", other.tcp4_port())),
        EPERM
    );

    let base = serde_json::json!({ "agent": "ci-1", "intent": "build", "ttl_seconds": 300 });
    let with = |k: &str, v: serde_json::Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases = [
        (
            with("grants", serde_json::json!({ "exec": ["/usr/bin/curl"] })),
            "exec grant /usr/bin/curl is outside the ceiling of rule \"ci\"",
        ),
        (
            with(
                "grants",
                serde_json::json!({ "connect": [format!("127.0.0.1:{}/tcp", other.tcp4_port())] }),
            ),
            "is outside the ceiling of rule \"ci\" for agent \"ci-1\"",
        ),
        (
            with(
                "grants",
                serde_json::json!({ "connect": [format!("127.0.0.0/8:{port}/tcp")] }),
            ),
            "outside the ceiling",
        ),
        (
            with("ttl_seconds", 3600.into()),
            "max_ttl 10m of rule \"ci\"",
        ),
        (
            with("mode", "audit".into()),
            "modes [\"enforce\"] of rule \"ci\"",
        ),
        (with("intent", "".into()), "require_intent of rule \"ci\""),
        (
            with("agent", "intruder".into()),
            "agent \"intruder\" matches no rule",
        ),
    ];
    for (body, want) in cases {
        let (status, v) = post(&d, "/v1/tasks", &body);
        assert_eq!(status, 403, "{body}: {v}");
        assert_eq!(v["error"]["code"], "forbidden");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(want), "{body}: {m}");
    }
    // Adding a grant beyond the ceiling to a running task.
    let o = d.run(&["grant", "add", &id, "--exec", "/usr/bin/curl"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("exec grant /usr/bin/curl is outside the ceiling of rule \"ci\""),
        "{}",
        stderr(&o)
    );
    assert_eq!(task_json(&d, &id)["grants"].as_array().unwrap().len(), 2);
    // No TTL asked for: the daemon's default (1h) is capped at the rule's max_ttl.
    let o = d.run(&["task", "create", "--agent", "ci-2", "--intent", "x"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = d.run(&["status"]);
    assert!(
        stdout(&o).contains("policy:") && stdout(&o).contains("(1 rules)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_pending_grant_is_denied_in_the_kernel_until_approved() {
    let l = Listeners::new();
    let (a, b, c) = (Listeners::new(), Listeners::new(), Listeners::new());
    let port = l.tcp4_port();
    let gated: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|x| format!("\"127.0.0.1:{}/tcp\"", x.tcp4_port()))
        .collect();
    let policy = format!(
        "approvers: {{uids: [0, {APPROVER}]}}\nrules:\n  - name: ci\n    agents: [ci]\n    pending_ttl: 2s\n    exec: [\"{}\"]\n    connect: [\"127.0.0.1:{port}/tcp\"]\n    approval:\n      connect: [{}]\n",
        probe_dir(),
        gated.join(", ")
    );
    let (d, _f) = with_policy(
        "pol-approve",
        &policy,
        &format!("auth:\n  uids: [0, {APPROVER}]\n"),
    );
    // One gated grant asked for at creation, the others added later.
    let id = create_ci(&d, &[port, a.tcp4_port()]);
    let task = task_json(&d, &id);
    let pending: Vec<&serde_json::Value> = task["grants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g.get("pending_until").is_some())
        .collect();
    assert_eq!(pending.len(), 1, "{task}");
    let ga = pending[0]["id"].as_str().unwrap().to_owned();
    let mut s = TaskSession::join(&d, &id);
    assert_eq!(s.run(&format!("connect tcp 127.0.0.1 {port}")), "ok");
    assert_eq!(s.run(&to(&a)), EPERM, "pending: not in the kernel");
    wait_for("the denial labelled pending_approval", || {
        d.audit().iter().any(|e| {
            e["verdict"] == "denied"
                && e["reason"] == "pending_approval"
                && e["target"]["port"] == a.tcp4_port()
        })
    });

    // Root asked for it, so root may not approve it, approver or not.
    let o = d.run(&["approve", &id, &ga]);
    assert!(stderr(&o).contains("(self_approval)"), "{}", stderr(&o));
    assert_eq!(s.run(&to(&a)), EPERM, "still pending");
    let o = as_uid(&d, APPROVER)
        .args(["approve", &id, &ga])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(s.run(&to(&a)), "ok", "approved: in the kernel at once");
    let approved = audit_kinds(&d, "grant_approved");
    assert_eq!(approved.len(), 1);
    assert_eq!(approved[0]["target"]["by"], format!("uid {APPROVER}"));
    assert_eq!(approved[0]["target"]["requested_by"], "uid 0");
    assert!(
        approved[0]["spiffe_id"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/agent/ci/task/{id}"))
    );
    let o = d.run(&["approve", &id, &ga]);
    assert!(stderr(&o).contains("not pending"), "{}", stderr(&o));

    rejected_stays_denied(&d, &mut s, &id, &b);
    expired_stays_denied(&d, &mut s, &id, &c);
}

/// An approver other than root (who asks for the grants here).
const APPROVER: u32 = 4242;

/// A `leash` command run as `uid` (group root's, so that it may open the socket).
fn as_uid(d: &DaemonGuard, uid: u32) -> std::process::Command {
    use std::os::unix::process::CommandExt as _;
    let mut c = d.cli();
    c.uid(uid).gid(0);
    c
}

/// A task of agent `ci` allowed the probe and TCP to these loopback ports; its id.
fn create_ci(d: &DaemonGuard, ports: &[u16]) -> String {
    let p = probe().display().to_string();
    let mut args = vec![
        "task".to_owned(),
        "create".into(),
        "--agent".into(),
        "ci".into(),
    ];
    args.extend(["--allow-exec".to_owned(), p]);
    for port in ports {
        args.extend([
            "--allow-connect".to_owned(),
            format!("127.0.0.1:{port}/tcp"),
        ]);
    }
    let o = d.cli().args(&args).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

/// `leash grant add ID --connect 127.0.0.1:PORT/tcp`.
fn add_connect(d: &DaemonGuard, id: &str, port: u16) -> std::process::Output {
    d.run(&[
        "grant",
        "add",
        id,
        "--connect",
        &format!("127.0.0.1:{port}/tcp"),
    ])
}

fn to(x: &Listeners) -> String {
    format!("connect tcp 127.0.0.1 {}", x.tcp4_port())
}

/// A pending grant added, then rejected: never in the kernel, then gone.
fn rejected_stays_denied(d: &DaemonGuard, s: &mut TaskSession, id: &str, b: &Listeners) {
    let o = add_connect(d, id, b.tcp4_port());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("pending approval"), "{}", stdout(&o));
    let gb = stdout(&o).split_whitespace().next().unwrap().to_owned();
    assert_eq!(s.run(&to(b)), EPERM);
    let o = d.run(&["deny", id, &gb]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(s.run(&to(b)), EPERM, "rejected: still denied");
    assert_eq!(audit_kinds(d, "grant_rejected").len(), 1);
    assert!(
        !task_json(d, id)["grants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["id"] == gb.as_str())
    );
}

/// A pending grant nobody decides on: dropped after `pending_ttl`, never allowed.
fn expired_stays_denied(d: &DaemonGuard, s: &mut TaskSession, id: &str, c: &Listeners) {
    let o = add_connect(d, id, c.tcp4_port());
    assert!(o.status.success(), "{}", stderr(&o));
    let gc = stdout(&o).split_whitespace().next().unwrap().to_owned();
    wait_for("the pending grant to expire", || {
        audit_kinds(d, "grant_expired")
            .iter()
            .any(|e| e["target"]["grant_id"] == gc.as_str())
    });
    assert_eq!(s.run(&to(c)), EPERM, "expired: still denied");
    let o = d.run(&["approve", id, &gc]);
    assert!(!o.status.success(), "an expired grant cannot be approved");
}

#[test]
fn reload_keeps_the_old_policy_on_a_bad_file_and_revokes_what_a_narrower_one_refuses() {
    let (a, b) = (Listeners::new(), Listeners::new());
    let rule = |ports: &[u16]| {
        let list: Vec<String> = ports
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}/tcp\""))
            .collect();
        format!(
            "rules:\n  - name: ci\n    agents: [ci]\n    exec: [\"{}\"]\n    connect: [{}]\n",
            probe_dir(),
            list.join(", ")
        )
    };
    let (pa, pb) = (a.tcp4_port(), b.tcp4_port());
    let (mut d, f) = with_policy("pol-reload", &rule(&[pa, pb]), "");
    let id = create_ci(&d, &[pa, pb]);
    let mut s = TaskSession::join(&d, &id);
    assert_eq!(s.run(&format!("connect tcp 127.0.0.1 {pb}")), "ok");

    // A bad file: refused with its error, the old policy stays.
    f.write("rules: [{name: ci, agents: [ci], connect: [\"no-port\"]}]");
    sighup(&d);
    wait_for("the reload error in the log", || {
        d.log().contains("policy not reloaded")
    });
    assert!(d.log().contains("no-port"), "{}", d.log());
    let o = add_connect(&d, &id, pb);
    assert!(
        o.status.success(),
        "old policy still in force: {}",
        stderr(&o)
    );
    let extra = stdout(&o);
    assert_eq!(s.run(&format!("connect tcp 127.0.0.1 {pb}")), "ok");

    // A narrower file: applied, and the grants it refuses are revoked.
    f.write(&rule(&[pa]));
    sighup(&d);
    wait_for("the refused grants to be revoked", || {
        task_json(&d, &id)["grants"].as_array().unwrap().len() == 2
    });
    let revoked = audit_kinds(&d, "grant_revoked");
    assert_eq!(revoked.len(), 2, "{revoked:?}");
    assert!(
        revoked
            .iter()
            .any(|e| e["target"]["grant_id"] == extra.as_str())
    );
    assert!(
        revoked
            .iter()
            .all(|e| e["reason"].as_str().unwrap().starts_with("policy: "))
    );
    assert_eq!(
        s.run(&format!("connect tcp 127.0.0.1 {pb}")),
        EPERM,
        "revoked in the kernel"
    );
    assert_eq!(
        s.run(&format!("connect tcp 127.0.0.1 {pa}")),
        "ok",
        "still allowed"
    );
    let o = add_connect(&d, &id, pb);
    assert!(stderr(&o).contains("outside the ceiling"), "{}", stderr(&o));

    // A daemon restarting under a policy that refuses what an adopted task holds
    // revokes it at start.
    f.write(&rule(&[pb]));
    d.kill9();
    d.spawn();
    // Revoked before the API answers at all (the check runs before the socket opens).
    let grants = task_json(&d, &id)["grants"].clone();
    assert_eq!(
        grants.as_array().map(Vec::len),
        Some(1),
        "the grant refused at start was not revoked: {grants}\n{:?}\n{}",
        audit_kinds(&d, "grant_revoked"),
        d.log()
    );
    assert_eq!(
        s.run(&format!("connect tcp 127.0.0.1 {pa}")),
        EPERM,
        "revoked at start"
    );
}

#[test]
fn with_tokens_the_agent_comes_from_the_token() {
    let signer = tokens::Signer::new("pol-tok");
    let (d, _f) = with_policy(
        "pol-tok",
        &format!(
            "rules:\n  - name: bots\n    agents: [\"bot-*\"]\n    exec: [\"{}\"]\n",
            probe_dir()
        ),
        &format!(
            "auth:\n  tokens:\n    jwks: {}\n    issuer: https://issuer.test\n    audience: leash\n",
            tokens::path(&signer.jwks.0)
        ),
    );
    let p = probe().display().to_string();
    let sub = "spiffe://leash.local/agent/bot-1";
    let create = |token: Option<&str>, agent: &str| {
        let mut c = d.cli();
        if let Some(t) = token {
            c.env("LEASH_TOKEN", t);
        }
        c.args(["task", "create", "--agent", agent, "--allow-exec", &p])
            .output()
            .unwrap()
    };
    let o = create(None, "bot-1");
    assert!(stderr(&o).contains("tokens are on"), "{}", stderr(&o));
    let good = signer.token(sub, "leash", 300);
    let o = create(Some(&good), "bot-1");
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o);
    let t = task_json(&d, &id);
    assert_eq!(t["agent"], "bot-1");
    assert_eq!(
        t["spiffe_id"],
        format!("spiffe://leash.local/agent/bot-1/task/{id}")
    );
    // Through the API: the body may leave the agent out, the token names it.
    let (status, body) = harness::daemon::http_with(
        &d.socket,
        "POST",
        "/v1/tasks",
        &format!("Authorization: Bearer {good}\r\n"),
        br#"{"grants":{}}"#,
    );
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["agent"], "bot-1");
    let (status, body) = harness::daemon::http_with(
        &d.socket,
        "POST",
        "/v1/tasks",
        "Authorization: Basic eDp5\r\n",
        br#"{"agent":"bot-1"}"#,
    );
    assert_eq!(status, 401, "{body}");
    // The body cannot claim another agent.
    let o = create(Some(&good), "bot-2");
    assert!(
        stderr(&o).contains("the token is for agent \"bot-1\""),
        "{}",
        stderr(&o)
    );
    for (token, want) in [
        (signer.token(sub, "leash", -3600), "ExpiredSignature"),
        (signer.token(sub, "someone-else", 300), "InvalidAudience"),
        (
            tokens::Signer::new("pol-tok2").token(sub, "leash", 300),
            "InvalidSignature",
        ),
        (
            signer.token("spiffe://evil.org/agent/bot-1", "leash", 300),
            "not in the trust domain",
        ),
    ] {
        let o = create(Some(&token), "bot-1");
        assert!(!o.status.success());
        assert!(stderr(&o).contains(want), "{want}: {}", stderr(&o));
    }
    // The events carry the identity.
    let o = d.run(&["events"]);
    assert!(
        stdout(&o).contains(&format!("id=spiffe://leash.local/agent/bot-1/task/{id}")),
        "{}",
        stdout(&o)
    );
}

#[test]
fn only_allowed_uids_and_gids_may_call() {
    let d = DaemonGuard::start("pol-peer", "auth:\n  uids: [4242]\n");
    let o = d.run(&["task", "list"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("uid 0 is not allowed"),
        "{}",
        stderr(&o)
    );
    let (status, body) = d.http("POST", "/v1/tasks", br#"{"agent":"ci"}"#);
    assert_eq!(status, 403, "{body}");
    let o = d.run(&["status"]);
    assert!(
        !o.status.success(),
        "read-only routes are authenticated too"
    );
    drop(d);
    // The caller's group (root's primary gid 0) admits it.
    let d = DaemonGuard::start("pol-peer-gid", "auth:\n  uids: [4242]\n  gids: [0]\n");
    let o = d.run(&["task", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = d.run(&["status"]);
    assert!(
        stdout(&o).contains("no policy: any authorized caller may grant anything"),
        "{}",
        stdout(&o)
    );
}
