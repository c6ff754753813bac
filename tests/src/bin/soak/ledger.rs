//! Grant scenarios: a created task whose probe session checks, after every grant add
//! or revoke, that exactly the grants the API acknowledged are enforced, across daemon
//! kills. A call that got no answer (the daemon died during it, the injected fault
//! included) leaves the grant unknown until the restarted daemon says whether it has
//! it; the kernel must then agree with what it says.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use crate::util::{Ctx, Rng, Session, add, stdout};

/// What the soak knows about one port's grant.
#[derive(Clone, Debug)]
enum Known {
    /// No grant (never added, refused, or revoked with an answer).
    Denied,
    /// Acknowledged (or found after a restart); with a TTL it expires between the two
    /// instants (asked, answered) plus the TTL.
    Granted {
        gid: String,
        expiry: Option<(Instant, Instant)>,
    },
    /// Asked without an answer: settled by asking the restarted daemon.
    Unknown { expiry: Option<(Instant, Instant)> },
}

struct Scenario<'a> {
    ctx: &'a Ctx,
    agent: &'a str,
    task: String,
    /// The task's own expiry, as for a grant's.
    task_expiry: (Instant, Instant),
    ports: BTreeMap<u16, Known>,
}

const MARGIN: Duration = Duration::from_millis(700);

pub(crate) fn grants(ctx: &Ctx, rng: &mut Rng, agent: &str) {
    let ttl = rng.range(40, 120);
    let asked = Instant::now();
    let Some(o) = ctx.call(&[
        "task",
        "create",
        "--agent",
        agent,
        "--ttl",
        &format!("{ttl}s"),
        "--allow-exec",
        &ctx.probe,
    ]) else {
        return;
    };
    if !o.status.success() {
        add(&ctx.stats.run_refused, 1);
        return;
    }
    let answered = Instant::now();
    add(&ctx.stats.created, 1);
    let task = stdout(&o);
    let mut cmd = ctx.cli();
    cmd.args(["run", "--task", &task, "--"]).arg(&ctx.probe);
    let ttl = Duration::from_secs(ttl);
    let mut sc = Scenario {
        ctx,
        agent,
        task_expiry: (asked + ttl, answered + ttl),
        task,
        ports: ctx.pool.iter().map(|p| (*p, Known::Denied)).collect(),
    };
    let Some(mut s) = Session::spawn(cmd) else {
        sc.end();
        return;
    };
    if s.run("pid").parse::<u32>().is_err() {
        add(&ctx.stats.run_refused, 1);
        sc.end();
        return;
    }
    for _ in 0..rng.range(3, 8) {
        if !ctx.running() {
            break;
        }
        sc.step(rng);
        if !sc.verify(&mut s) {
            break;
        }
    }
    if rng.chance(75) && sc.end() {
        // Ended with an answer: nothing is allowed any more (under kill_on_end the
        // probe is gone).
        let port = ctx.pool[0];
        let got = s.run(&format!("connect tcp 127.0.0.1 {port}"));
        add(&ctx.stats.workload_checks, 1);
        if got != harness::EPERM && got != "eof" {
            ctx.miss(&format!("{agent} grants: connect after task end: {got}"));
        }
    }
    s.finish();
}

impl Scenario<'_> {
    /// Adds a grant (sometimes with a TTL, sometimes one the daemon must refuse) or
    /// revokes one.
    fn step(&mut self, rng: &mut Rng) {
        // One grant per port at most, so that a revoke leaves the port denied.
        let settled: Vec<u16> = self
            .ports
            .iter()
            .filter(|(_, k)| !matches!(k, Known::Unknown { .. }))
            .map(|(p, _)| *p)
            .collect();
        let Some(&port) = settled
            .get(usize::try_from(rng.range(0, settled.len().max(1) as u64 - 1)).unwrap_or(0))
        else {
            return;
        };
        let spec = format!("127.0.0.1:{port}/tcp");
        match self.ports[&port].clone() {
            Known::Granted { gid, expiry } => {
                let Some(o) = self.ctx.call(&["grant", "revoke", &self.task, &gid]) else {
                    self.ports.insert(port, Known::Unknown { expiry });
                    return;
                };
                if o.status.success() {
                    add(&self.ctx.stats.revokes_acked, 1);
                    self.ports.insert(port, Known::Denied);
                } else if !crate::util::refused(&o) {
                    self.ports.insert(port, Known::Unknown { expiry });
                } else if expiry.is_some() {
                    // Refused: it expired (and was revoked by the sweeper) already.
                    self.ports.insert(port, Known::Unknown { expiry });
                }
            }
            Known::Denied if rng.chance(20) => {
                // Beyond tasks.max_ttl: refused, and must not be enforced.
                let o = self.ctx.call(&[
                    "grant",
                    "add",
                    &self.task,
                    "--connect",
                    &spec,
                    "--ttl",
                    "48h",
                ]);
                match o {
                    Some(o) if crate::util::refused(&o) => {
                        add(&self.ctx.stats.grants_refused, 1);
                    }
                    Some(o) if o.status.success() => {
                        self.ctx.miss(&format!(
                            "{} grants: a grant beyond max_ttl was acknowledged",
                            self.agent
                        ));
                    }
                    _ => {
                        add(&self.ctx.stats.grants_unanswered, 1);
                        self.ports.insert(port, Known::Unknown { expiry: None });
                    }
                }
            }
            Known::Denied | Known::Unknown { .. } => {
                let ttl = rng.chance(30).then(|| rng.range(2, 15));
                let ttl_arg = ttl.map(|t| format!("{t}s"));
                let mut args = vec!["grant", "add", &self.task, "--connect", &spec];
                if let Some(t) = &ttl_arg {
                    args.extend(["--ttl", t.as_str()]);
                }
                let asked = Instant::now();
                let o = self.ctx.call(&args);
                let expiry = ttl.map(|t| {
                    let t = Duration::from_secs(t);
                    (asked + t, Instant::now() + t)
                });
                match o {
                    Some(o) if o.status.success() => {
                        add(&self.ctx.stats.grants_acked, 1);
                        self.ports.insert(
                            port,
                            Known::Granted {
                                gid: stdout(&o),
                                expiry,
                            },
                        );
                    }
                    // Refused (the task expired, say): what was known stays.
                    Some(o) if crate::util::refused(&o) => {}
                    _ => {
                        add(&self.ctx.stats.grants_unanswered, 1);
                        self.ports.insert(port, Known::Unknown { expiry });
                    }
                }
            }
        }
    }

    /// Settles unknown grants, then checks every port. False once the probe is gone.
    fn verify(&mut self, s: &mut Session) -> bool {
        if self
            .ports
            .values()
            .any(|k| matches!(k, Known::Unknown { .. }))
        {
            self.settle();
        }
        let now = Instant::now();
        if now + MARGIN > self.task_expiry.0 {
            // The task's end is near or past: nothing to tell apart any more.
            return false;
        }
        for (port, known) in &self.ports {
            let want = match known {
                Known::Denied => harness::EPERM,
                Known::Granted { expiry: None, .. } => "ok",
                Known::Granted {
                    expiry: Some((early, late)),
                    ..
                } => {
                    if now + MARGIN < *early {
                        "ok"
                    } else if now > *late + MARGIN {
                        harness::EPERM
                    } else {
                        continue;
                    }
                }
                Known::Unknown { .. } => continue,
            };
            let got = s.run(&format!("connect tcp 127.0.0.1 {port}"));
            if got == "eof" || got == "timeout" {
                self.ctx.miss(&format!(
                    "{} grants: the probe session died: {got}",
                    self.agent
                ));
                return false;
            }
            add(&self.ctx.stats.workload_checks, 1);
            if got != want {
                self.ctx.miss(&format!(
                    "{} grants: task {} port {port} ({known:?}): {got} (want {want})",
                    self.agent, self.task
                ));
            }
        }
        true
    }

    /// Asks the daemon (once it is back) which grants the task has.
    fn settle(&mut self) {
        let Some(o) = self
            .ctx
            .call_answered(&["task", "show", &self.task, "--json"])
        else {
            return;
        };
        let Ok(task) = serde_json::from_slice::<serde_json::Value>(&o.stdout) else {
            return;
        };
        let grants = task["grants"].as_array().cloned().unwrap_or_default();
        for (port, known) in &mut self.ports {
            let Known::Unknown { expiry } = known else {
                continue;
            };
            let spec = format!("127.0.0.1:{port}/tcp");
            *known = match grants.iter().find(|g| g["spec"] == spec.as_str()) {
                Some(g) => Known::Granted {
                    gid: g["id"].as_str().unwrap_or_default().to_owned(),
                    expiry: *expiry,
                },
                None => Known::Denied,
            };
        }
    }

    /// `task end`, retried while the daemon is down; whether it was answered.
    fn end(&self) -> bool {
        let ended = self
            .ctx
            .call_answered(&["task", "end", &self.task])
            .is_some_and(|o| o.status.success());
        if ended {
            add(&self.ctx.stats.ended, 1);
        }
        ended
    }
}
