//! The faults: the daemon is killed (`SIGKILL`) and restarted at random moments, and once it is
//! started with the test fault armed, so that it aborts during a grant add, after the
//! map write and before the answer (`leash::daemon::fault`).

use std::{
    os::unix::process::ExitStatusExt as _,
    sync::Mutex,
    time::{Duration, Instant},
};

use harness::daemon::DaemonGuard;
use leash::daemon::fault;

use crate::util::{Ctx, Rng, add, raise};

/// The daemon's RSS in KiB (0 when it is not running).
pub(crate) fn rss_kib(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Kills and restarts the daemon until the run stops: every `min_gap..=max_gap` ms
/// after it last came up. Past a third of the run, one restart arms the fault.
pub(crate) fn chaos(ctx: &Ctx, daemon: &Mutex<DaemonGuard>, seed: u64, gap_ms: (u64, u64)) {
    let mut rng = Rng::new(seed ^ 0xfa17);
    let third = ctx.started + (ctx.deadline - ctx.started) / 3;
    let mut armed_done = false;
    while ctx.running() {
        let until = Instant::now() + Duration::from_millis(rng.range(gap_ms.0, gap_ms.1));
        while Instant::now() < until && ctx.running() {
            sample_rss(ctx, daemon);
            std::thread::sleep(Duration::from_millis(100));
        }
        if !ctx.running() {
            break;
        }
        let mut d = daemon.lock().unwrap();
        sample_rss_of(ctx, &d);
        d.kill9();
        add(&ctx.stats.kills, 1);
        // The restarts alternate kill_on_end, so that both ends of a task happen.
        set_kill_on_end(&d, rng.chance(50));
        let arm = !armed_done && Instant::now() > third;
        let started = Instant::now();
        if arm {
            armed_done = true;
            // Not waiting for its socket here: a worker's grant add may reach it, and
            // abort it, before this thread sees the socket answer.
            d.spawn_with_env(
                &[(fault::ABORT_AFTER_GRANT_MAP_WRITE, fault::CONFIRM)],
                false,
            );
        } else {
            d.spawn();
        }
        if arm {
            drop(d);
            wait_for_fault(ctx, daemon);
        } else {
            restarted(ctx, started);
        }
    }
}

/// Waits for the armed daemon to abort at a worker's grant add, then restarts it.
fn wait_for_fault(ctx: &Ctx, daemon: &Mutex<DaemonGuard>) {
    let armed = Instant::now();
    let until = armed + Duration::from_mins(2);
    loop {
        let mut d = daemon.lock().unwrap();
        if let Some(status) = d.try_wait() {
            let log = d.log();
            let fired = log.contains("fault injection: aborting after the map write");
            if status.signal() == Some(libc::SIGABRT) && fired {
                add(&ctx.stats.fault_aborts, 1);
                eprintln!(
                    "soak: {}: the daemon aborted after a grant's map write",
                    ctx.stamp()
                );
            } else {
                ctx.miss(&format!(
                    "the armed daemon exited with {status} without the injected fault"
                ));
            }
            // Its start was a handover too (see the counter check).
            ctx.restarts.lock().unwrap().push((armed, Instant::now()));
            let started = Instant::now();
            d.spawn();
            restarted(ctx, started);
            return;
        }
        if Instant::now() > until || !ctx.running() {
            // No grant add came in time: disarm by restarting plainly.
            eprintln!("soak: no grant add reached the armed daemon; restarting it unarmed");
            d.kill9();
            add(&ctx.stats.kills, 1);
            let started = Instant::now();
            d.spawn();
            restarted(ctx, started);
            return;
        }
        drop(d);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Records a restart's window: started then, answering now.
fn restarted(ctx: &Ctx, started: Instant) {
    let now = Instant::now();
    raise(
        &ctx.stats.restart_ms_max,
        u64::try_from((now - started).as_millis()).unwrap_or(u64::MAX),
    );
    ctx.restarts.lock().unwrap().push((started, now));
}

fn sample_rss(ctx: &Ctx, daemon: &Mutex<DaemonGuard>) {
    if let Ok(d) = daemon.try_lock() {
        sample_rss_of(ctx, &d);
    }
}

fn sample_rss_of(ctx: &Ctx, d: &DaemonGuard) {
    raise(&ctx.stats.rss_kib_max, rss_kib(d.pid()));
}

/// Rewrites the `kill_on_end` line of the daemon's config.
fn set_kill_on_end(d: &DaemonGuard, on: bool) {
    let Ok(text) = std::fs::read_to_string(&d.config) else {
        return;
    };
    let text = text.replace(
        &format!("kill_on_end: {}", !on),
        &format!("kill_on_end: {on}"),
    );
    let _ = std::fs::write(&d.config, text);
}

/// How many kills the run must survive: 20 from two minutes on, a few in a shorter run.
/// A run kills about ten a minute on an idle machine, fewer when it is shared (each
/// restart takes longer), so the floor does not grow with the run.
pub(crate) fn required_kills(minutes: f64) -> u64 {
    if minutes >= 2.0 { 20 } else { 5 }
}
