//! `leash-soak`: the kill -9 soak (`cargo xtask soak [--minutes N]`, root).
//!
//! A real daemon on private paths (socket, state, audit log, pins under its own bpffs
//! directory; network hooks at the default scope, which never deny an untagged
//! process) serves a workload of many concurrent tasks while it is killed (`SIGKILL`) and
//! restarted at random moments and once aborted mid grant add; a prober checks
//! enforcement many times a second throughout. The run ends with the leak, counter,
//! audit and memory checks of `checks`. Exits 1 on any miss or failed check.

mod checks;
mod faults;
mod ledger;
mod prober;
mod util;
mod workload;

use std::{
    net::TcpListener,
    process::ExitCode,
    sync::{Mutex, atomic::Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use harness::daemon::DaemonGuard;

use crate::util::{Ctx, get};

struct Args {
    minutes: f64,
    workers: usize,
    seed: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        minutes: 2.0,
        workers: 32,
        seed: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_secs()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--minutes" => a.minutes = value()?.parse().context("--minutes")?,
            "--workers" => a.workers = value()?.parse().context("--workers")?,
            "--seed" => a.seed = value()?.parse().context("--seed")?,
            _ => anyhow::bail!(
                "unknown argument {flag:?}; usage: leash-soak [--minutes N] [--workers N] [--seed N]"
            ),
        }
    }
    anyhow::ensure!(
        a.minutes > 0.0 && a.workers > 0,
        "--minutes and --workers must be positive"
    );
    Ok(a)
}

/// A loopback listener whose connections are accepted (and dropped) as they come, so
/// granted connects never wait on a full backlog.
fn listener() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind a loopback listener")?;
    let port = l.local_addr()?.port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    Ok(port)
}

/// Ctrl-C and SIGTERM stop the run; cleanup then runs as on a normal end.
fn on_interrupt() {
    extern "C" fn handler(_: libc::c_int) {
        util::INTERRUPTED.store(true, Ordering::Relaxed);
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as *const () as libc::sighandler_t);
    }
}

fn main() -> ExitCode {
    match soak() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("leash-soak: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn soak() -> anyhow::Result<bool> {
    let a = args()?;
    harness::require_root();
    on_interrupt();
    eprintln!(
        "soak: {} minutes, {} workers, seed {}",
        a.minutes, a.workers, a.seed
    );
    let d = DaemonGuard::start("soak", "tasks:\n  kill_on_end: false\n");
    let scratch = harness::Scratch::new("soak");
    let reports = d.workspace().join("reports");
    std::fs::create_dir_all(&reports)?;
    let run_for = Duration::from_secs_f64(a.minutes * 60.0);
    let started = Instant::now();
    let ctx = Ctx {
        leash: harness::daemon::leash_bin(),
        socket: d.socket.clone(),
        workspace: d.workspace(),
        probe: harness::probe().display().to_string(),
        ungranted: scratch.copy_true("soak-ungranted"),
        exec_refused: harness::exec_denied(harness::Harness::backend_of_daemon(&d)),
        granted_port: listener()?,
        denied_port: listener()?,
        pool: (0..6).map(|_| listener()).collect::<anyhow::Result<_>>()?,
        scratch: reports,
        started,
        deadline: started + run_for,
        stop: false.into(),
        stats: util::Stats::default(),
        misses: Mutex::default(),
        survivors: Mutex::default(),
        restarts: Mutex::default(),
        rounds: Mutex::default(),
    };
    let base = checks::Baseline::take(&d);
    let prober = prober::Prober::start(&ctx, (a.minutes as u64) + 30)?;
    eprintln!("soak: prober task {}", prober.task);
    let daemon = Mutex::new(d);
    // Gaps of 0.5-4 s, plus a restart each (1-3 s under load): about 20 kills in
    // two minutes.
    let gaps = (500, 4000);
    let prober = std::thread::scope(|s| {
        let p = s.spawn(|| prober.run(&ctx));
        for i in 0..a.workers {
            let ctx = &ctx;
            s.spawn(move || workload::worker(ctx, i, a.seed));
        }
        s.spawn(|| faults::chaos(&ctx, &daemon, a.seed, gaps));
        let mut next_report = Instant::now() + Duration::from_secs(30);
        while ctx.running() {
            std::thread::sleep(Duration::from_millis(200));
            if Instant::now() > next_report {
                next_report += Duration::from_secs(30);
                progress(&ctx);
            }
        }
        ctx.stop.store(true, Ordering::Relaxed);
        p.join().expect("the prober panicked")
    });
    let d = daemon
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    eprintln!("soak: {}: workload stopped; checking", ctx.stamp());
    prober.finish();
    let mut report = checks::Report {
        live_at_end: checks::wind_down(&ctx),
        ..checks::Report::default()
    };
    let mut failures = checks::verify(&ctx, &d, &base, &mut report);
    let kills = get(&ctx.stats.kills) + get(&ctx.stats.fault_aborts);
    let required = faults::required_kills(a.minutes);
    if kills < required && !util::INTERRUPTED.load(Ordering::Relaxed) {
        failures.push(format!("{kills} daemon kills, fewer than {required}"));
    }
    if get(&ctx.stats.fault_aborts) != 1 {
        failures.push(format!(
            "the grant-add fault fired {} times, not once",
            get(&ctx.stats.fault_aborts)
        ));
    }
    let misses = ctx.misses.lock().unwrap().clone();
    summary(&ctx, &a, &report, &misses, &failures);
    if !(misses.is_empty() && failures.is_empty()) {
        keep_evidence(&d);
    }
    drop(d);
    Ok(misses.is_empty() && failures.is_empty())
}

/// Copies the daemon's directory (state, logs, audit log) and a metrics scrape out of
/// the way before cleanup removes them.
fn keep_evidence(d: &DaemonGuard) {
    let to = std::env::temp_dir().join(format!("leash-soak-failed-{}", std::process::id()));
    let _ = std::process::Command::new("cp")
        .args(["-a", "--no-preserve=links"])
        .arg(&d.dir)
        .arg(&to)
        .status();
    let _ = std::fs::write(to.join("metrics.txt"), d.metrics_get("/metrics").1);
    println!("evidence kept in {}", to.display());
}

fn progress(ctx: &Ctx) {
    let s = &ctx.stats;
    eprintln!(
        "soak: {}: tasks {} (+{} created), kills {}, prober checks {}, misses {}",
        ctx.stamp(),
        get(&s.runs),
        get(&s.created),
        get(&s.kills),
        get(&s.prober_checks),
        ctx.misses.lock().unwrap().len()
    );
}

fn summary(ctx: &Ctx, a: &Args, r: &checks::Report, misses: &[String], failures: &[String]) {
    let s = &ctx.stats;
    let line = |k: &str, v: String| println!("{k:<34} {v}");
    println!(
        "== leash soak: {} min, {} workers, seed {}",
        a.minutes, a.workers, a.seed
    );
    line("tasks run (leash run)", get(&s.runs).to_string());
    line(
        "tasks created (grant scenarios)",
        get(&s.created).to_string(),
    );
    line(
        "runs the daemon could not take",
        get(&s.run_refused).to_string(),
    );
    line("survivors left behind", get(&s.survivors).to_string());
    line(
        "grants acked / refused / unanswered",
        format!(
            "{} / {} / {}",
            get(&s.grants_acked),
            get(&s.grants_refused),
            get(&s.grants_unanswered)
        ),
    );
    line("revokes acked", get(&s.revokes_acked).to_string());
    line("workload checks", get(&s.workload_checks).to_string());
    line("daemon SIGKILLs survived", get(&s.kills).to_string());
    line("grant-add fault aborts", get(&s.fault_aborts).to_string());
    line("slowest restart (ms)", get(&s.restart_ms_max).to_string());
    line("prober checks", get(&s.prober_checks).to_string());
    line("misses", misses.len().to_string());
    line("tasks live at the end (ended)", r.live_at_end.to_string());
    line("leaked map entries", r.leaked_entries.to_string());
    line(
        "orphaned pins / scope cgroups",
        format!("{} / {}", r.orphaned_pins, r.scope_cgroups),
    );
    line(
        "audit lines / torn",
        format!("{} / {}", r.audit_lines, r.torn_lines),
    );
    line("daemon RSS max (KiB)", r.rss_kib_max.to_string());
    line(
        "prober rounds during restarts",
        r.rounds_in_restarts.to_string(),
    );
    line("prober decision counters", r.counters.join(", "));
    for m in misses {
        println!("MISS {m}");
    }
    for f in failures {
        println!("FAILED {f}");
    }
    println!(
        "== soak: {}",
        if misses.is_empty() && failures.is_empty() {
            "passed"
        } else {
            "FAILED"
        }
    );
}
