//! BPF run time per program, from the kernel's `bpf_stats`.

use std::{fmt::Write as _, process::Command, time::Duration};

use harness::{Harness, probe, spec};
use leash::kernel::AttachScope;

use super::{BPF_STATS, Targets, run_probe, with_bpf_stats};

/// Run time per program from `kernel.bpf_stats_enabled`, restored afterwards.
pub(super) fn program_stats(t: &Targets) -> anyhow::Result<String> {
    let before = std::fs::read_to_string(BPF_STATS).unwrap_or_else(|_| "0".into());
    with_bpf_stats(|| {
        let h = Harness::load();
        let task = h.task(spec(
            &["/bin/true"],
            &[
                &format!("127.0.0.1:{}/tcp", t.tcp_port),
                &format!("127.0.0.1:{}/udp", t.udp_port),
            ],
        ));
        let untagged = |kind: &str, target: &str, n: &str| {
            run_probe(
                Command::new(probe()).arg("bench"),
                &[kind.into(), target.into(), n.into()],
            )
        };
        let stats = |h: &Harness| h.enforcer.lock().unwrap().program_stats();
        let s0 = stats(&h);
        untagged("udp", &t.udp_port.to_string(), "100000")?;
        untagged("connect", &t.tcp_port.to_string(), "2000")?;
        untagged("exec", "/bin/true", "200")?;
        let s1 = stats(&h);
        run_probe(
            task.command(probe()).arg("bench"),
            &["udp".into(), t.udp_port.to_string(), "100000".into()],
        )?;
        run_probe(
            task.command(probe()).arg("bench"),
            &["connect".into(), t.tcp_port.to_string(), "2000".into()],
        )?;
        run_probe(
            task.command(probe()).arg("bench"),
            &["exec".into(), "/bin/true".into(), "200".into()],
        )?;
        let s2 = stats(&h);
        drop(task);
        drop(h);
        // Attach scope `task`: the same workloads, the leash cgroup (and its hooks) in
        // place before the untagged phase.
        let h = Harness::load_scoped(AttachScope::Task);
        let task = h.task(spec(
            &[],
            &[
                &format!("127.0.0.1:{}/tcp", t.tcp_port),
                &format!("127.0.0.1:{}/udp", t.udp_port),
            ],
        ));
        h.enforcer
            .lock()
            .unwrap()
            .scope_cgroup(std::process::id())?;
        let s3 = stats(&h);
        untagged("udp", &t.udp_port.to_string(), "100000")?;
        untagged("connect", &t.tcp_port.to_string(), "2000")?;
        let s4 = stats(&h);
        for (kind, port, n) in [
            ("udp", t.udp_port, "100000"),
            ("connect", t.tcp_port, "2000"),
        ] {
            run_probe(
                task.command(probe()).arg("bench"),
                &[kind.into(), port.to_string(), n.into()],
            )?;
        }
        let s5 = stats(&h);
        let mut md = String::new();
        writeln!(
            md,
            "## 7. BPF program run time (`kernel.bpf_stats_enabled=1`, restored to {} afterwards)\n",
            before.trim()
        )?;
        writeln!(
            md,
            "Same workloads as above, first untagged, then tagged (allowed). ns per run = run_time / run_cnt over each phase; the machine's other processes also trigger the hooks.\n"
        )?;
        stats_table(&mut md, &s0, &s1, &s2)?;
        writeln!(
            md,
            "With `attach_scope: task` (UDP and TCP workloads only): the untagged processes, outside the leash cgroup, run no network program at all.\n"
        )?;
        stats_table(&mut md, &s3, &s4, &s5)?;
        Ok(md)
    })
}

type ProgramStats = [(&'static str, Duration, u64)];

/// One row per program: runs and ns per run between `s0`→`s1` and `s1`→`s2`.
pub(super) fn stats_table(
    md: &mut String,
    s0: &ProgramStats,
    s1: &ProgramStats,
    s2: &ProgramStats,
) -> anyhow::Result<()> {
    writeln!(
        md,
        "| program | untagged: runs | ns/run | tagged: runs | ns/run |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    for ((name, t0, c0), ((_, t1, c1), (_, t2, c2))) in s0.iter().zip(s1.iter().zip(s2.iter())) {
        let per = |dt: Duration, dc: u64| {
            if dc == 0 {
                "-".into()
            } else {
                format!("{:.0}", dt.as_nanos() as f64 / dc as f64)
            }
        };
        writeln!(
            md,
            "| {name} | {} | {} | {} | {} |",
            c1 - c0,
            per(t1.saturating_sub(*t0), c1 - c0),
            c2 - c1,
            per(t2.saturating_sub(*t1), c2 - c1)
        )?;
    }
    md.push('\n');
    Ok(())
}
