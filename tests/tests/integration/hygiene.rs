//! Control-plane hygiene with a real daemon: approvers' tokens (classified by the
//! config, signed for real) approve, a person's plain `sub` is no agent, a policy file
//! others can write stops the daemon from starting, and the audit log is 0640.

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use harness::{
    Listeners,
    daemon::{DaemonGuard, leash_bin, stderr, stdout, task_json},
    probe,
    tokens::{Signer, TempFile},
};

const AGENT: &str = "spiffe://leash.local/agent/bot-1";
const ONCALL: &str = "spiffe://example.org/human/oncall";

#[test]
#[expect(
    clippy::many_single_char_names,
    reason = "d(aemon), l(istener), o(utput), p(robe), g(rant), t(ask) keep the scenario short"
)]
fn an_approver_subject_approves_and_a_plain_sub_is_no_agent() {
    let signer = Signer::new("hyg-tok");
    let l = Listeners::new();
    let gated = format!("127.0.0.1:{}/tcp", l.tcp4_port());
    let policy = TempFile::new(
        "hyg-tok-policy.yaml",
        &format!(
            "approvers:\n  subjects: [\"{ONCALL}\"]\nrules:\n  - name: bots\n    agents: [\"bot-*\"]\n    exec: [\"{}/\"]\n    approval:\n      connect: [\"{gated}\"]\n",
            probe().parent().unwrap().display()
        ),
    );
    let d = DaemonGuard::start(
        "hyg-tok",
        &format!(
            "policy:\n  file: {}\nauth:\n  tokens:\n    jwks: {}\n    issuer: https://issuer.test\n    audience: leash\n    approvers:\n      subjects: [\"spiffe://example.org/human/*\"]\n",
            policy.0.display(),
            signer.jwks.0.display()
        ),
    );
    let as_token = |token: &str, args: &[&str]| {
        d.cli()
            .env("LEASH_TOKEN", token)
            .args(args)
            .output()
            .unwrap()
    };
    let (agent, oncall) = (
        signer.token(AGENT, "leash", 300),
        signer.token(ONCALL, "leash", 300),
    );
    let p = probe().display().to_string();
    let o = as_token(
        &agent,
        &["task", "create", "--agent", "bot-1", "--allow-exec", &p],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o);
    let o = as_token(&agent, &["grant", "add", &id, "--connect", &gated]);
    assert!(stdout(&o).contains("pending approval"), "{}", stderr(&o));
    let gid = stdout(&o).split_whitespace().next().unwrap().to_owned();

    // Neither root without a token (not an approver here) nor the agent may approve.
    let o = d.run(&["approve", &id, &gid]);
    assert!(!o.status.success(), "root is no approver in this policy");
    let o = as_token(&agent, &["approve", &id, &gid]);
    assert!(
        !o.status.success(),
        "an agent never approves its own grants"
    );
    // The approver's token authenticates (it used to be read as an agent: 401) and approves.
    let o = as_token(&oncall, &["approve", &id, &gid]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = task_json(&d, &id);
    let g = t["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == gid.as_str())
        .unwrap();
    assert!(g.get("pending_until").is_none(), "{t}");
    let approved = d
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "grant_approved")
        .expect("grant_approved");
    assert!(
        approved["target"]["by"]
            .as_str()
            .unwrap()
            .contains(&format!("sub {ONCALL}")),
        "{approved}"
    );

    // An approver's token names no agent: it cannot create tasks.
    let o = as_token(
        &oncall,
        &["task", "create", "--agent", "bot-2", "--allow-exec", &p],
    );
    assert!(!o.status.success(), "{}", stdout(&o));
    // A person's plain `sub` is neither an agent's nor an approver's token: 401.
    let o = as_token(
        &signer.token("alice@example.org", "leash", 300),
        &["task", "create", "--allow-exec", &p],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("neither an agent's nor an approver's"),
        "{}",
        stderr(&o)
    );

    // The audit log is 0640.
    let mode = std::fs::metadata(&d.audit_log).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o640);
}

/// Starts `leash daemon` with `extra` config; its stderr if it exits within 10 s, else
/// `None` (it was stopped and cleaned up).
fn start_daemon(name: &str, extra: &str) -> (Option<String>, PathBuf) {
    let dir = std::env::temp_dir().join(format!("leash-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "socket:\n  path: {}\nstate_dir: {}\npin_dir: /sys/fs/bpf/leash-it-{name}-{}\naudit_log: {}\nmetrics:\n  addr: 127.0.0.1:{}\n{extra}",
            dir.join("leash.sock").display(),
            dir.join("state").display(),
            std::process::id(),
            dir.join("audit.jsonl").display(),
            harness::daemon::free_port(),
        ),
    )
    .unwrap();
    let log = dir.join("daemon.log");
    let mut child = Command::new(leash_bin())
        .args(["daemon", "--config"])
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return (Some(std::fs::read_to_string(&log).unwrap_or_default()), dir);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = Command::new(leash_bin())
        .args(["daemon", "--config"])
        .arg(&config)
        .arg("--cleanup")
        .output();
    (None, dir)
}

fn refused_with(path: &Path, extra: &str, want: &str) {
    let (err, dir) = start_daemon("hyg-perm", extra);
    let _ = std::fs::remove_dir_all(dir);
    let err = err.expect("the daemon started");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains(want), "{err}");
}

#[test]
fn a_policy_or_jwks_others_can_write_stops_the_daemon() {
    let policy = TempFile::new("hyg-perm-policy.yaml", "rules: []\n");
    let extra = format!("policy:\n  file: {}\n", policy.0.display());
    std::fs::set_permissions(&policy.0, std::fs::Permissions::from_mode(0o666)).unwrap();
    refused_with(&policy.0, &extra, "chmod go-w");
    std::fs::set_permissions(&policy.0, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(&policy.0, Some(65534), None).unwrap();
    refused_with(&policy.0, &extra, "chown root");

    let signer = Signer::new("hyg-perm");
    std::fs::set_permissions(&signer.jwks.0, std::fs::Permissions::from_mode(0o664)).unwrap();
    refused_with(
        &signer.jwks.0,
        &format!(
            "auth:\n  tokens:\n    jwks: {}\n    issuer: https://issuer.test\n    audience: leash\n",
            signer.jwks.0.display()
        ),
        "auth.tokens.jwks",
    );
}
