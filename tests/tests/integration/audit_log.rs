//! The audit log is evidence (docs/audit.md): a real daemon writes it hash-chained and
//! signs its head; `leash audit verify` passes the log as written, across a crash and a
//! restart, and names the record where it was edited, removed or reordered, and a tail
//! cut after the last signed head.

use std::process::Output;

use harness::daemon::{DaemonGuard, stderr, stdout};

fn verify(d: &DaemonGuard) -> Output {
    d.run(&[
        "audit",
        "verify",
        "--config",
        &d.config.display().to_string(),
    ])
}

/// Task starts and ends: records the daemon writes.
fn some_records(d: &DaemonGuard, n: usize) {
    for _ in 0..n {
        let o = d.run(&["task", "create", "--allow-exec", "/bin/true"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = d.run(&["task", "end", &stdout(&o)]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
}

fn lines(d: &DaemonGuard) -> Vec<String> {
    std::fs::read_to_string(&d.audit_log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn put(d: &DaemonGuard, lines: &[String]) {
    std::fs::write(&d.audit_log, lines.join("\n") + "\n").unwrap();
}

/// `verify` fails, and its first TAMPERED line says `what`.
fn tampered(d: &DaemonGuard, what: &str) {
    let o = verify(d);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{}", stderr(&o));
    let first = out
        .lines()
        .find(|l| l.starts_with("TAMPERED"))
        .unwrap_or_default();
    assert!(first.contains(what), "expected {what:?} first:\n{out}");
}

#[test]
fn the_chain_survives_a_crash_and_verify_finds_each_kind_of_tampering() {
    let mut d = DaemonGuard::start("audit-chain", "");
    some_records(&d, 3);
    // A crash between two writes, then a new daemon continues the same chain.
    d.kill9();
    d.spawn();
    some_records(&d, 3);
    // A stop signs the head: the whole log is covered.
    assert!(d.stop().is_some_and(|s| s.success()), "{}", d.log());
    let o = verify(&d);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("ok: the chain is intact"), "{out}");
    assert!(
        out.contains("0 record(s) after it not signed yet"),
        "the stop signed the last record: {out}"
    );
    let good = lines(&d);
    let heads = good
        .iter()
        .filter(|l| l.contains("\"kind\":\"audit_head\""))
        .count();
    assert!(heads >= 1, "{good:?}");
    let seq = |i: usize| -> u64 {
        serde_json::from_str::<serde_json::Value>(&good[i]).unwrap()["seq"]
            .as_u64()
            .unwrap()
    };

    // Edited: a task id changed in the fourth record.
    let mut l = good.clone();
    l[3] = l[3].replacen("\"task\":\"", "\"task\":\"x", 1);
    put(&d, &l);
    tampered(&d, &format!("record {} was edited", seq(3)));

    // Removed: the fifth record.
    let mut l = good.clone();
    l.remove(4);
    put(&d, &l);
    tampered(&d, &format!("record {} was removed", seq(4)));

    // Reordered: the third and fourth swapped.
    let mut l = good.clone();
    l.swap(2, 3);
    put(&d, &l);
    tampered(&d, &format!("record {} is out of order", seq(3)));

    // The tail cut, chain intact up to there: the signed head outlives it.
    put(&d, &good[..good.len() - 4]);
    tampered(&d, "the tail after record");

    put(&d, &good);
    assert!(verify(&d).status.success());
}
