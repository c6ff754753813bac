//! The workload: each worker runs one scenario after another until the run stops.
//! `leash run` tasks check allowed and denied exec and connect (random TTLs, some
//! leaving a process behind), grant scenarios add and revoke grants at runtime
//! ([`crate::ledger`]), and one-shot runs are refused. A call the daemon cannot answer
//! (it was killed) is not a miss; a wrong enforcement outcome is.

use std::time::{Duration, Instant, SystemTime};

use crate::util::{Ctx, Rng, Session, add, stdout};

/// One worker, until the run stops.
pub(crate) fn worker(ctx: &Ctx, index: usize, seed: u64) {
    let mut rng = Rng::new(seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let agent = format!("soak-w{index:02}");
    while ctx.running() {
        let refused = crate::util::get(&ctx.stats.run_refused);
        match rng.range(0, 9) {
            0..=4 => run_task(ctx, &mut rng, &agent),
            5..=7 => crate::ledger::grants(ctx, &mut rng, &agent),
            _ => one_shot(ctx, &mut rng, &agent),
        }
        if crate::util::get(&ctx.stats.run_refused) != refused {
            // The daemon is down: wait for it rather than spin.
            std::thread::sleep(Duration::from_millis(rng.range(100, 400)));
        }
    }
}

/// `leash run` of a probe session: the granted connect succeeds (before the TTL),
/// the ungranted connect and exec are refused; sometimes a survivor is left behind.
fn run_task(ctx: &Ctx, rng: &mut Rng, agent: &str) {
    let ttl = rng.chance(50).then(|| rng.range(2, 20));
    let connect = format!("127.0.0.1:{}/tcp", ctx.granted_port);
    let mut cmd = ctx.cli();
    cmd.args(["run", "--agent", agent, "--allow-exec", &ctx.probe])
        .args(["--allow-connect", &connect]);
    if let Some(ttl) = ttl {
        cmd.args(["--ttl", &format!("{ttl}s")]);
    }
    cmd.arg("--").arg(&ctx.probe);
    let asked = Instant::now();
    let Some(mut s) = Session::spawn(cmd) else {
        return;
    };
    if s.run("pid").parse::<u32>().is_err() {
        // The daemon was down or killed mid-create: no task ran.
        add(&ctx.stats.run_refused, 1);
        return;
    }
    add(&ctx.stats.runs, 1);
    // Until this, the TTL cannot have run out; after it, the task may have ended.
    let live_until = |margin: u64| {
        ttl.map_or(Instant::now() + Duration::from_hours(1), |t| {
            asked + Duration::from_secs(t).saturating_sub(Duration::from_millis(margin))
        })
    };
    let checks = [
        (
            format!("connect tcp 127.0.0.1 {}", ctx.granted_port),
            "ok",
            "granted connect",
        ),
        (
            format!("connect tcp 127.0.0.1 {}", ctx.denied_port),
            harness::EPERM,
            "ungranted connect",
        ),
        (
            format!("exec {}", ctx.ungranted),
            ctx.exec_refused,
            "ungranted exec",
        ),
    ];
    for _ in 0..rng.range(1, 3) {
        for (words, want, what) in &checks {
            let got = s.run(words);
            if Instant::now() > live_until(500) {
                // The TTL may have run out: past it everything is refused, and the
                // process may be gone under kill_on_end.
                if got == "ok" && *want != "ok" {
                    ctx.miss(&format!("{agent} run: {what} allowed after its TTL"));
                }
                continue;
            }
            add(&ctx.stats.workload_checks, 1);
            if got != *want {
                ctx.miss(&format!("{agent} run: {what}: {got} (want {want})"));
            }
        }
    }
    let survivor = rng.chance(30) && Instant::now() < live_until(1500);
    let report = ctx.scratch.join(format!("{agent}-{}", rng.next()));
    if survivor {
        let r = s.run(&format!(
            "linger 3000 {} connect tcp 127.0.0.1 {}",
            report.display(),
            ctx.granted_port
        ));
        if r == "ok" {
            add(&ctx.stats.survivors, 1);
        } else if Instant::now() < live_until(500) {
            ctx.miss(&format!("{agent} run: linger: {r}"));
        }
    }
    s.finish();
    if survivor {
        check_survivor(ctx, agent, &report);
    }
}

/// A survivor's granted connect, made after its task ended, must not succeed.
fn check_survivor(ctx: &Ctx, agent: &str, report: &std::path::Path) {
    let pid_file = report.with_extension("pid");
    if let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        ctx.survivors.lock().unwrap().push(pid);
    }
    // When the daemon saw the task end (its command exited): found from the task list.
    let ended_seen = wait_ended(ctx, agent);
    let until = Instant::now() + Duration::from_secs(10);
    while !report.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(50));
    let (Ok(out), Some(ended)) = (std::fs::read_to_string(report), ended_seen) else {
        // Killed under kill_on_end, or the end not seen in time (the leak checks at
        // the end of the run catch a task that never ends).
        return;
    };
    let connected = std::fs::metadata(report)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    add(&ctx.stats.workload_checks, 1);
    if out.trim() == "ok" && connected > ended {
        ctx.miss(&format!(
            "{agent} survivor: granted connect allowed after its task ended"
        ));
    }
}

/// Waits until the newest task of `agent` has ended; when that was first seen.
fn wait_ended(ctx: &Ctx, agent: &str) -> Option<SystemTime> {
    let until = Instant::now() + Duration::from_mins(1);
    while Instant::now() < until {
        if let Some(o) = ctx.call(&["task", "list", "--json"])
            && o.status.success()
            && let Ok(serde_json::Value::Array(tasks)) = serde_json::from_slice(&o.stdout)
            && let Some(t) = tasks.iter().filter(|t| t["agent"] == agent).max_by(|a, b| {
                a["created_at"]
                    .as_str()
                    .unwrap_or("")
                    .cmp(b["created_at"].as_str().unwrap_or(""))
            })
            && t["state"] == "ended"
        {
            return Some(SystemTime::now());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// One-shot runs: an ungranted connect, and an ungranted command.
fn one_shot(ctx: &Ctx, rng: &mut Rng, agent: &str) {
    let (args, want): (Vec<String>, &str) = if rng.chance(50) {
        (
            vec![
                ctx.probe.clone(),
                "connect".into(),
                "tcp".into(),
                "127.0.0.1".into(),
                ctx.denied_port.to_string(),
            ],
            harness::EPERM,
        )
    } else {
        (vec![ctx.ungranted.clone()], "")
    };
    let mut full = vec![
        "run".to_owned(),
        "--agent".into(),
        agent.into(),
        "--allow-exec".into(),
        ctx.probe.clone(),
        "--".into(),
    ];
    full.extend(args);
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    let Some(o) = ctx.call(&refs) else { return };
    let err = String::from_utf8_lossy(&o.stderr);
    if err.contains("cannot reach the leash daemon") || crate::util::refused(&o) {
        add(&ctx.stats.run_refused, 1);
        return;
    }
    if want.is_empty() {
        // An ungranted command: leash run refuses it or the kernel stops it.
        if o.status.success() {
            ctx.miss(&format!("{agent} one-shot: an ungranted command ran"));
        }
        add(&ctx.stats.runs, 1);
        add(&ctx.stats.workload_checks, 1);
        return;
    }
    let got = stdout(&o);
    if got.is_empty() {
        // The task never started (the daemon went away between create and attach).
        add(&ctx.stats.run_refused, 1);
        return;
    }
    add(&ctx.stats.runs, 1);
    add(&ctx.stats.workload_checks, 1);
    if got != want {
        ctx.miss(&format!(
            "{agent} one-shot: ungranted connect: {got} (want {want})"
        ));
    }
}
