//! Scale: the data plane with many other tasks and grants in the maps.

use std::{fmt::Write as _, time::Duration};

use harness::{Harness, probe, spec};

use super::{Targets, median, range, run_probe, with_bpf_stats};

/// Tagged allowed-connect cost with the maps populated by many tasks and grants.
///
/// One loaded harness per kind (host or prefix grants) and one measured task in it; in
/// every round the other tasks are put in, measured with, and taken out again, so each
/// ratio compares the same task, programs and maps a few hundred ms apart.
pub(super) fn scale(t: &Targets, rounds: usize) -> anyhow::Result<String> {
    // (other tasks + 1, grants each): full addresses go to the host hash, prefixes
    // (here /24s, and 127.0.0.0/8 for the measured task) to each task's own trie.
    const SIZES: [(bool, &[(u32, u32)]); 2] = [
        (false, &[(100, 1), (100, 100), (10_000, 1)]),
        (true, &[(100, 1), (10_000, 1)]),
    ];
    let connect = [
        "connect".to_owned(),
        t.tcp_port.to_string(),
        "3000".to_owned(),
    ];
    let mut rows = Vec::new();
    with_bpf_stats(|| {
        for (cidr, sizes) in SIZES {
            let h = Harness::load();
            let own = if cidr { "127.0.0.0/8" } else { "127.0.0.1" };
            let task = h.task(spec(
                &["/bin/true"],
                &[&format!("{own}:{}/tcp", t.tcp_port)],
            ));
            let measure = || -> anyhow::Result<(f64, f64)> {
                let before = connect_stats(&h);
                let ns = run_probe(task.command(probe()).arg("bench"), &connect)?;
                let after = connect_stats(&h);
                let prog = after.0.saturating_sub(before.0).as_nanos() as f64
                    / (after.1 - before.1).max(1) as f64;
                Ok((prog, ns))
            };
            let first = rows.len();
            let base = measure()?;
            let mut base_row = (vec![base.0], vec![base.1]);
            for &(tasks, grants) in sizes {
                let (mut prog, mut whole) = (Vec::new(), Vec::new());
                let (mut usage, mut mem) = (Vec::new(), 0);
                for _ in 0..rounds {
                    let (p0, w0) = measure()?;
                    base_row.0.push(p0);
                    base_row.1.push(w0);
                    let others = populate(&h, tasks, grants, cidr)?;
                    let (p1, w1) = measure()?;
                    prog.push(p1 / p0);
                    whole.push(w1 / w0);
                    let enf = h.enforcer.lock().unwrap();
                    usage = enf.maps().usage();
                    mem = enf.maps().memlock().iter().map(|(_, b)| b).sum::<u64>();
                    drop(enf);
                    depopulate(&h, &others)?;
                }
                rows.push((tasks, grants, cidr, prog, whole, usage, mem));
            }
            let alone = vec![median(&base_row.0)];
            rows.insert(first, (1, 1, cidr, alone, base_row.1, Vec::new(), 0));
        }
        Ok(())
    })?;
    let mut md = String::new();
    writeln!(
        md,
        "## 3. Scale: tagged allowed TCP connect with the maps populated\n"
    )?;
    writeln!(
        md,
        "One tagged task connects (3000 connects per run) while the other tasks get one exec grant and `grants` network entries each: /32 (hosts, in the NET_HOSTS hash) or, in the \"prefix\" rows, /24 (in each task's own trie of the NET_PREFIXES pool; the measured task's grant is a /8). Interleaved: in each of {rounds} rounds the connects run with the measured task alone, then with the others put into the maps, which are then taken out again; ratio = with / alone in the same round (median, min–max). The connect4 program's own run time (bpf_stats) is the precise figure; the whole connect carries the machine's noise. Memory: the maps' `memlock` from fdinfo with the others in (PROCS, TASKS and EXEC_GRANTS are preallocated at their capacity; the network maps allocate per entry).\n"
    )?;
    writeln!(
        md,
        "| live tasks | grants each | kind | connect4 program vs 1 task | whole connect vs 1 task | TASKS / EXEC_GRANTS / NET_HOSTS / NET_GRANTS entries | map memory |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    let ratio = |v: &[f64]| {
        let (lo, hi) = range(v);
        format!("{:.3}× ({lo:.2}–{hi:.2})", median(v))
    };
    for (tasks, grants, cidr, prog, whole, usage, mem) in rows {
        let kind = if cidr { "prefix" } else { "host" };
        if tasks == 1 {
            writeln!(
                md,
                "| 1 | 1 | {kind} | {:.0} ns/run | {:.0} ns | | |",
                prog[0],
                median(&whole)
            )?;
            continue;
        }
        let e = |name: &str| usage.iter().find(|u| u.0 == name).map_or(0, |u| u.1);
        writeln!(
            md,
            "| {tasks} | {grants} | {kind} | {} | {} | {} / {} / {} / {} | {:.1} MiB |",
            ratio(&prog),
            ratio(&whole),
            e("TASKS"),
            e("EXEC_GRANTS"),
            e("NET_HOSTS"),
            e("NET_GRANTS"),
            mem as f64 / 1_048_576.0
        )?;
    }
    writeln!(
        md,
        "\n10 000 tasks × 100 grants (1 M network entries) exceeds the default `maps.net_grants` (65 536) and is not run.\n"
    )?;
    Ok(md)
}

/// A task [`populate`] put in: its id and network entries (prefix length, key).
type Other = (u64, Vec<(u32, leash_common::NetKey)>);

/// Puts `tasks - 1` other live tasks into the harness's maps, with one exec grant and
/// `grants` network entries each; returns what to take out again.
pub(super) fn populate(
    h: &Harness,
    tasks: u32,
    grants: u32,
    cidr: bool,
) -> anyhow::Result<Vec<Other>> {
    use leash_common::{NetKey, NetRules, PortRule, TaskInfo, grant::PROTO_TCP};
    let mut enf = h.enforcer.lock().unwrap();
    let maps = enf.maps_mut();
    let mut rules = NetRules::EMPTY;
    rules.len = 1;
    rules.rules[0] = PortRule {
        expires_ns: 0,
        port_lo: 443,
        port_hi: 443,
        protos: PROTO_TCP,
        _pad: [0; 3],
    };
    let mut out = Vec::new();
    for id in 1..tasks {
        let id = u64::from(id) | (1 << 48);
        maps.put_task(
            id,
            &TaskInfo {
                expires_ns: 0,
                state: 1,
                mode: 0,
                counter_slot: 0,
                families: 0,
            },
        )?;
        maps.grant_exec(&exec_key(id), leash::grants::file_state::unchecked(0))?;
        let entries: Vec<_> = (0..grants)
            .map(|g| {
                let mut addr = [0u8; 16];
                addr[10] = 0xff;
                addr[11] = 0xff;
                let host = if cidr { g << 8 } else { g };
                addr[12..].copy_from_slice(&(0x0a00_0000u32 + host).to_be_bytes());
                let prefix = if cidr { 64 + 120 } else { 64 + 128 };
                (prefix, NetKey { task: id, addr }, rules)
            })
            .collect();
        maps.insert_net(&entries)?;
        out.push((id, entries.iter().map(|(p, k, _)| (*p, *k)).collect()));
    }
    Ok(out)
}

pub(super) fn exec_key(id: u64) -> leash_common::ExecKey {
    leash_common::ExecKey {
        task: id,
        ino: u64::from(id as u32),
        dev: 1,
        _pad: 0,
    }
}

/// Takes the tasks [`populate`] put in out again, entry by entry.
pub(super) fn depopulate(h: &Harness, others: &[Other]) -> anyhow::Result<()> {
    let mut enf = h.enforcer.lock().unwrap();
    let maps = enf.maps_mut();
    for (id, net) in others {
        for (prefix, key) in net {
            maps.remove_net(*prefix, *key)?;
        }
        maps.revoke_exec(&exec_key(*id))?;
        maps.remove_task_entry(*id)?;
    }
    Ok(())
}

/// Cumulative run time and count of the connect4 program of a harness.
pub(super) fn connect_stats(h: &Harness) -> (Duration, u64) {
    h.enforcer
        .lock()
        .unwrap()
        .program_stats()
        .into_iter()
        .find(|(name, ..)| *name == leash_common::maps::programs::NET_CONNECT4)
        .map_or((Duration::ZERO, 0), |(_, t, n)| (t, n))
}
