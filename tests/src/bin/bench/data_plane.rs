//! The data plane: syscalls with and without leash, tagged and untagged, beside Landlock.

use std::{fmt::Write as _, process::Command};

use anyhow::bail;
use harness::{Harness, probe, spec};
use leash::kernel::AttachScope;

use super::{Kind, Targets, Work, median, range, run_probe};

/// Per-call cost in four states, interleaved.
pub(super) fn data_plane(t: &Targets, rounds: usize) -> anyhow::Result<String> {
    let works = [
        Work {
            name: "TCP connect (loopback, accepted)",
            kind: Kind::Connect,
            target: t.tcp_port.to_string(),
            n: 3000,
        },
        Work {
            name: "UDP unconnected sendto",
            kind: Kind::Udp,
            target: t.udp_port.to_string(),
            n: 100_000,
        },
        Work {
            name: "fork + exec + wait of /bin/true",
            kind: Kind::Exec,
            target: "/bin/true".into(),
            n: 300,
        },
        Work {
            name: "getppid (no leash program: the syscall floor)",
            kind: Kind::Syscall,
            target: "-".into(),
            n: 1_000_000,
        },
    ];
    // [work][state][round]; states: none, landlock, untagged, tagged (attach scope
    // root), untagged, tagged (attach scope task).
    let mut s = vec![std::array::from_fn::<Vec<f64>, 6, _>(|_| Vec::new()); works.len()];
    let mut backend = String::new();
    for round in 0..rounds {
        eprintln!("data plane round {}/{rounds}", round + 1);
        for (i, w) in works.iter().enumerate() {
            s[i][0].push(run_probe(Command::new(probe()).arg("bench"), &w.args())?);
            if !matches!(w.kind, Kind::Udp | Kind::Syscall) {
                // Landlock governs TCP connect and execute; it has no UDP rule.
                let mut ll = w.args().to_vec();
                ll.push(t.tcp_port.to_string());
                ll.push("/bin/true".into());
                s[i][1].push(run_probe(Command::new(probe()).arg("landlock-bench"), &ll)?);
            }
        }
        let h = Harness::load();
        backend = h.backend().to_string();
        let task = h.task(spec(
            &["/bin/true"],
            &[
                &format!("127.0.0.1:{}/tcp", t.tcp_port),
                &format!("127.0.0.1:{}/udp", t.udp_port),
            ],
        ));
        for (i, w) in works.iter().enumerate() {
            s[i][2].push(run_probe(Command::new(probe()).arg("bench"), &w.args())?);
            s[i][3].push(run_probe(task.command(probe()).arg("bench"), &w.args())?);
        }
        check_allowed(&task)?;
        drop(task);
        drop(h);
        let h = Harness::load_scoped(AttachScope::Task);
        let task = h.task(spec(
            &["/bin/true"],
            &[
                &format!("127.0.0.1:{}/tcp", t.tcp_port),
                &format!("127.0.0.1:{}/udp", t.udp_port),
            ],
        ));
        for (i, w) in works.iter().enumerate() {
            s[i][4].push(run_probe(Command::new(probe()).arg("bench"), &w.args())?);
            s[i][5].push(run_probe(task.command(probe()).arg("bench"), &w.args())?);
        }
        check_allowed(&task)?;
    }
    let mut md = String::new();
    writeln!(
        md,
        "## 1–2. Per-call cost: not loaded, Landlock, leash untagged, leash tagged (allowed path)\n"
    )?;
    writeln!(
        md,
        "Backend: {backend}. {rounds} rounds; in each, the four states run back to back. Medians of per-round values; ratio = state / not loaded in the same round (median, with min–max).\n"
    )?;
    writeln!(
        md,
        "| operation | not loaded | Landlock | leash untagged | leash tagged | Landlock ratio | untagged ratio | tagged ratio |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|")?;
    for (i, w) in works.iter().enumerate() {
        let ratio = |state: usize| -> String {
            if s[i][state].is_empty() {
                return "n/a".into();
            }
            let r: Vec<f64> = (0..s[i][0].len())
                .map(|k| s[i][state][k] / s[i][0][k])
                .collect();
            let (lo, hi) = range(&r);
            format!("{:.3}× ({lo:.2}–{hi:.2})", median(&r))
        };
        let ns = |state: usize| -> String {
            if s[i][state].is_empty() {
                "n/a".into()
            } else {
                format!("{:.0} ns", median(&s[i][state]))
            }
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            w.name,
            ns(0),
            ns(1),
            ns(2),
            ns(3),
            ratio(1),
            ratio(2),
            ratio(3)
        )?;
    }
    writeln!(
        md,
        "\nAttach scope (the same rounds): `root` attaches the network hooks at the cgroup2 root, `task` to a leash cgroup the tagged process is moved into (`attach_scope` in the config).\n"
    )?;
    writeln!(
        md,
        "| operation | untagged, root | untagged, task | tagged, root | tagged, task |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    for (i, w) in works.iter().enumerate() {
        let ratio = |state: usize| -> String {
            let r: Vec<f64> = (0..s[i][0].len())
                .map(|k| s[i][state][k] / s[i][0][k])
                .collect();
            let (lo, hi) = range(&r);
            format!("{:.3}× ({lo:.2}–{hi:.2})", median(&r))
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            w.name,
            ratio(2),
            ratio(4),
            ratio(3),
            ratio(5)
        )?;
    }
    md.push('\n');
    Ok(md)
}

/// Fails when a tagged run was denied: it would have measured the wrong path.
pub(super) fn check_allowed(task: &harness::Task<'_>) -> anyhow::Result<()> {
    let denied: u64 = task.decisions().iter().map(|a| a[1]).sum();
    if denied != 0 {
        bail!("the tagged runs hit {denied} denials: the benchmark would measure the wrong path");
    }
    Ok(())
}
