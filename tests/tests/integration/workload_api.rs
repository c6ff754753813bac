//! The SPIFFE Workload API on a real daemon, through a stock client library (the
//! `spiffe` crate, in `leash-spiffe-probe`): inside a task it fetches a JWT-SVID for
//! its own task and the bundle, verifies the token offline against the bundle, and the
//! daemon validates it; outside every task it gets no token; once the task has ended,
//! `ValidateJWTSVID` refuses the token it was issued.

use std::process::{Command, Output};

use harness::daemon::{DaemonGuard, stderr, stdout, task_json};

/// The SPIFFE probe, untagged, with the daemon's socket as its endpoint.
fn outside(d: &DaemonGuard, args: &[&str]) -> Output {
    Command::new(harness::bin("leash-spiffe-probe"))
        .env(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix:{}", d.socket.display()),
        )
        .args(args)
        .output()
        .expect("run leash-spiffe-probe")
}

#[test]
fn a_stock_spiffe_client_gets_its_tasks_identity_inside_a_task_only() {
    let d = DaemonGuard::start("workload-api", "");
    let probe = harness::bin("leash-spiffe-probe").display().to_string();
    let o = d.run(&["task", "create", "--ttl", "5m", "--allow-exec", &probe]);
    assert!(o.status.success(), "{}", stderr(&o));
    let task = stdout(&o);
    let spiffe_id = task_json(&d, &task)["spiffe_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Inside the task: `leash run` names the daemon's socket in SPIFFE_ENDPOINT_SOCKET.
    let o = d.run(&["run", "--task", &task, "--", &probe, "fetch", "svc-a"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(got["spiffe_id"], spiffe_id.as_str(), "verified offline");
    assert_eq!(
        got["validated"],
        spiffe_id.as_str(),
        "validated by the daemon"
    );
    let token = got["token"].as_str().unwrap().to_owned();
    let issued = d
        .audit()
        .into_iter()
        .filter(|e| e["kind"] == "token_issued" && e["task"] == task.as_str())
        .count();
    assert_eq!(issued, 1, "one token_issued record");

    // Outside every task: no token, a clear refusal.
    let o = outside(&d, &["fetch", "svc-a"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("PermissionDenied") && err.contains("only to a process inside a task"),
        "{err}"
    );
    // Anyone on the socket may have a token validated: this one, for its audience.
    let o = outside(&d, &["validate", "svc-a", &token]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), spiffe_id);
    let o = outside(&d, &["validate", "svc-b", &token]);
    assert!(!o.status.success(), "another audience: {}", stdout(&o));
    assert!(stderr(&o).contains("InvalidArgument"), "{}", stderr(&o));

    // Once the task has ended, its token no longer validates (offline it would until
    // its exp, at most task_tokens.ttl).
    let o = d.run(&["task", "end", &task]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = outside(&d, &["validate", "svc-a", &token]);
    assert!(!o.status.success(), "an ended task's token: {}", stdout(&o));
    assert!(stderr(&o).contains("has ended"), "{}", stderr(&o));
}

/// `FetchJWTBundles` is a stream, as the Workload API has it: the bundle, then a new
/// one when the JWKS changes (a key rotation), with the stream open in between.
#[test]
fn the_bundle_stream_stays_open_and_brings_each_new_key() {
    let watch = |d: &DaemonGuard, ms: &str| -> serde_json::Value {
        let o = outside(d, &["watch-bundles", ms]);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str(&stdout(&o)).unwrap()
    };
    let steady = DaemonGuard::start("workload-bundles-steady", "");
    let got = watch(&steady, "1500");
    assert_eq!(got["next"], "open", "{got}");
    assert_eq!(got["first"].as_array().map(Vec::len), Some(1), "{got}");

    let rotating = DaemonGuard::start(
        "workload-bundles-rotating",
        "task_tokens:\n  rotate_every: 2s\n  publish_ahead: 1s\n",
    );
    let got = watch(&rotating, "10000");
    assert_eq!(got["next"], "changed", "{got}");
    let (first, second) = (
        got["first"].as_array().unwrap(),
        got["second"].as_array().unwrap(),
    );
    assert!(
        second.len() > first.len() && first.iter().all(|k| second.contains(k)),
        "a new key, published beside the one that signs: {got}"
    );
}
