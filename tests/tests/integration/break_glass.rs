//! Break-glass on a real daemon and kernel: only an approver of the agent's rule may
//! start one; the policy's ceilings do not apply, but its grants are enforced in the
//! kernel; its TTL is capped; it is logged and counted.
#![expect(
    clippy::many_single_char_names,
    reason = "d(aemon), o(utput), s(ession), t(ask) keep the scenario short"
)]

use std::os::unix::process::CommandExt as _;

use harness::{
    EPERM, Listeners,
    daemon::{DaemonGuard, TaskSession, stderr, stdout, task_json},
    probe,
    tokens::TempFile,
};

/// The approver's uid (the policy names it; the config lets it call).
const APPROVER: u32 = 4242;

#[test]
fn only_an_approver_breaks_glass_and_its_grants_still_hold() {
    let p = probe().display().to_string();
    let policy = TempFile::new(
        "bg-policy.yaml",
        &format!(
            "approvers: {{uids: [{APPROVER}]}}\nrules:\n  - name: ops\n    agents: [ops]\n    exec: [\"{}/\"]\n",
            probe().parent().unwrap().display()
        ),
    );
    let d = DaemonGuard::start(
        "break-glass",
        &format!(
            "policy:\n  file: {}\nauth:\n  uids: [0, {APPROVER}]\ntasks:\n  break_glass_max_ttl: 10m\n",
            policy.0.display()
        ),
    );
    let (l, other) = (Listeners::new(), Listeners::new());
    let spec = format!("127.0.0.1:{}/tcp", l.tcp4_port());
    let create = |uid: u32, extra: &[&str]| {
        let mut c = d.cli();
        if uid != 0 {
            // Group root's, so that it may open the socket.
            c.uid(uid).gid(0);
        }
        c.args(["task", "create", "--agent", "ops", "--allow-exec", &p])
            .args(["--allow-connect", &spec])
            .args(extra)
            .output()
            .unwrap()
    };
    let glass = ["--break-glass", "--justification", "db failover, INC-42"];

    // The rule has no connect ceiling: an ordinary task may not have the grant ...
    let o = create(0, &[]);
    assert!(stderr(&o).contains("ops"), "{}", stderr(&o));
    assert!(!o.status.success());
    // ... nor may a caller who is not an approver break glass (root is none here).
    let o = create(0, &glass);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not an approver"), "{}", stderr(&o));
    // The TTL cap holds for an approver too.
    let mut capped = glass.to_vec();
    capped.extend(["--ttl", "2h"]);
    let o = create(APPROVER, &capped);
    assert!(stderr(&o).contains("break_glass_max_ttl"), "{}", stderr(&o));

    // The approver may: the task exists outside the ceiling, capped to 10 minutes.
    let o = create(APPROVER, &glass);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = stdout(&o);
    let task = task_json(&d, &t);
    assert_eq!(task["break_glass"]["approver"], format!("uid {APPROVER}"));
    assert_eq!(task["break_glass"]["justification"], "db failover, INC-42");
    let expires = time::OffsetDateTime::parse(
        task["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = expires - time::OffsetDateTime::now_utc();
    assert!(left <= time::Duration::minutes(10), "{left}");

    // Its grants are enforced in the kernel: the granted port, nothing else.
    let mut s = TaskSession::join(&d, &t);
    assert_eq!(
        s.run(&format!("connect tcp 127.0.0.1 {}", l.tcp4_port())),
        "ok"
    );
    assert_eq!(
        s.run(&format!("connect tcp 127.0.0.1 {}", other.tcp4_port())),
        EPERM
    );
    drop(s);

    // Loud: a break_glass record naming the approver and why, and the counter.
    let record = d.audit().into_iter().find(|e| e["kind"] == "break_glass");
    let record = record.expect("a break_glass audit record");
    assert_eq!(record["task"], t.as_str());
    assert_eq!(record["target"]["approver"], format!("uid {APPROVER}"));
    assert_eq!(record["target"]["justification"], "db failover, INC-42");
    let (_, metrics) = d.metrics_get("/metrics");
    assert!(
        metrics.lines().any(|l| l == "leash_break_glass_total 1"),
        "{metrics}"
    );
}
