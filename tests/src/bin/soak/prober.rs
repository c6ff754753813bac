//! The prober: one long-lived task whose probe checks, many times a second for the
//! whole run, restart windows included, that a granted connect succeeds, an ungranted
//! connect is denied and an ungranted exec is stopped. It needs no daemon once started:
//! every check is the kernel's.

use std::time::{Duration, Instant};

use crate::util::{Ctx, Session, add, stdout};

/// The prober's agent: its decision counters are its alone.
pub(crate) const AGENT: &str = "soak-prober";

/// Rounds of three checks per second.
const ROUNDS_PER_S: u32 = 20;

/// The prober's task and session, started while the daemon is up.
pub(crate) struct Prober {
    pub(crate) task: String,
    session: Session,
}

impl Prober {
    pub(crate) fn start(ctx: &Ctx, ttl_minutes: u64) -> anyhow::Result<Self> {
        let ttl = format!("{ttl_minutes}m");
        let connect = format!("127.0.0.1:{}/tcp", ctx.granted_port);
        let o = ctx
            .call(&[
                "task",
                "create",
                "--agent",
                AGENT,
                "--ttl",
                &ttl,
                "--allow-exec",
                &ctx.probe,
                "--allow-connect",
                &connect,
            ])
            .ok_or_else(|| anyhow::anyhow!("task create for the prober timed out"))?;
        anyhow::ensure!(
            o.status.success(),
            "task create for the prober: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let task = stdout(&o);
        let mut cmd = ctx.cli();
        cmd.args(["run", "--task", &task, "--"]).arg(&ctx.probe);
        let mut session =
            Session::spawn(cmd).ok_or_else(|| anyhow::anyhow!("cannot start the prober"))?;
        let pid = session.run("pid");
        anyhow::ensure!(
            pid.parse::<u32>().is_ok(),
            "the prober did not start: {pid}"
        );
        Ok(Self { task, session })
    }

    /// Probes until the run stops.
    pub(crate) fn run(mut self, ctx: &Ctx) -> Self {
        let period = Duration::from_secs(1) / ROUNDS_PER_S;
        let granted = format!("connect tcp 127.0.0.1 {}", ctx.granted_port);
        let denied = format!("connect tcp 127.0.0.1 {}", ctx.denied_port);
        let exec = format!("exec {}", ctx.ungranted);
        let checks: [(&str, &str, &str); 3] = [
            (&granted, "ok", "granted connect"),
            (&denied, harness::EPERM, "ungranted connect"),
            (&exec, ctx.exec_refused, "ungranted exec"),
        ];
        let s = &ctx.stats;
        let mut next = Instant::now();
        while ctx.running() {
            ctx.rounds.lock().unwrap().push(Instant::now());
            for (words, want, what) in checks {
                let got = self.session.run(words);
                add(&s.prober_checks, 1);
                if got == want {
                    add(
                        match what {
                            "granted connect" => &s.prober_connect_ok,
                            "ungranted connect" => &s.prober_connect_denied,
                            _ => &s.prober_exec_denied,
                        },
                        1,
                    );
                } else {
                    ctx.miss(&format!("prober: {what}: {got} (want {want})"));
                    if got == "eof" {
                        return self;
                    }
                }
            }
            next += period;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
        }
        self
    }

    pub(crate) fn finish(self) {
        self.session.finish();
    }
}
