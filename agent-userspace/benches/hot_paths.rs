//! Userspace hot paths: grant parsing and compilation, event decoding, metrics
//! rendering and the audit log's hash chain.
//!
//! `cargo bench -p agent-userspace --bench hot_paths` runs it in a few minutes;
//! append `-- --quick` for the smoke run CI does (it checks that this runs, not the
//! numbers).

use std::{hint::black_box, net::Ipv4Addr, time::Duration};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use leash::{
    audit_chain::Chain,
    grants::{self, ConnectSpec, NetGrant},
    kernel::events,
    metrics::{EndedLabels, Recorded, Snapshot},
};
use leash_common::{
    Action, Event, Reason, Verdict,
    event::{COMM_LEN, PATH_LEN},
    maps::{self, programs},
};

const SPEC: &str = "10.0.0.0/8:443/tcp";

/// `n` IPv4 grants nested as a tree of fan-out 5, filled breadth first: `10.0.0.0/8`,
/// then `10.a.0.0/16`, `10.a.b.0/24` and `10.a.b.c/32` below it, each with a port of its
/// own. A prefix carries its own rule and those of its ancestors, at most 4, well
/// within the kernel's 16 per prefix.
fn nested_grants(n: usize) -> Vec<NetGrant> {
    let mut nodes: Vec<Vec<u8>> = vec![Vec::new()];
    let mut next = 0;
    while nodes.len() < n {
        let parent = nodes[next].clone();
        next += 1;
        assert!(parent.len() < 3, "at most 156 grants fit a 4-level tree");
        for child in 1..=5 {
            let mut path = parent.clone();
            path.push(child);
            nodes.push(path);
        }
    }
    nodes.truncate(n);
    nodes
        .iter()
        .enumerate()
        .flat_map(|(i, path)| {
            let mut octets = [10, 0, 0, 0];
            octets[1..=path.len()].copy_from_slice(path);
            let spec = format!(
                "{}/{}:{}/tcp",
                Ipv4Addr::from(octets),
                8 * (path.len() + 1),
                1000 + i
            );
            let parsed: ConnectSpec = spec.parse().expect("a valid generated spec");
            parsed.to_net_grants(0)
        })
        .collect()
}

fn bench_grants(c: &mut Criterion) {
    let mut g = c.benchmark_group("grants");
    g.bench_function("parse_connect", |b| {
        b.iter(|| black_box(SPEC).parse::<ConnectSpec>());
    });
    let spec: ConnectSpec = SPEC.parse().expect("a valid spec");
    g.bench_function("to_net_grants", |b| {
        b.iter(|| black_box(&spec).to_net_grants(0));
    });
    for n in [1, 16, 100] {
        let grants = nested_grants(n);
        let entries = grants::compile_net(7, &grants).expect("nested grants compile");
        assert_eq!(entries.len(), n, "one LPM entry per distinct prefix");
        g.bench_with_input(BenchmarkId::new("compile_net", n), &grants, |b, grants| {
            b.iter(|| grants::compile_net(black_box(7), black_box(grants)));
        });
    }
    // Lists the directory, stats and opens every entry: milliseconds, dominated by the
    // file system and by how many files the machine has there (printed).
    let files = grants::resolve_exec("/usr/bin/").expect("/usr/bin/ holds executables");
    println!(
        "grants/resolve_exec_dir: /usr/bin/ holds {} executables",
        files.len()
    );
    g.sample_size(20);
    g.bench_function("resolve_exec_dir", |b| {
        b.iter(|| grants::resolve_exec(black_box("/usr/bin/")));
    });
    g.finish();
}

fn cbytes<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    out[..s.len()].copy_from_slice(s.as_bytes());
    out
}

const fn event(action: Action) -> Event {
    Event {
        ts_ns: 1_234_567_890_123,
        task: 42,
        ino: 0,
        tid: 4242,
        pid: 4241,
        dev: 0,
        action: action as u8,
        verdict: Verdict::Denied as u8,
        reason: Reason::NotGranted as u8,
        family: 0,
        port: 0,
        _pad: [0; 2],
        proto: 0,
        addr: [0; 16],
        comm: [0; COMM_LEN],
        path: [0; PATH_LEN],
    }
}

/// The record as the kernel writes it into the ring buffer.
fn record(e: &Event) -> Vec<u8> {
    // SAFETY: Event is repr(C) plain integers without padding (agent-common asserts
    // its size), so all of its bytes are initialised.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(e).cast::<u8>(), size_of::<Event>()) }
        .to_vec()
}

fn bench_events(c: &mut Criterion) {
    let exec = Event {
        ino: 1_048_577,
        dev: (259 << 20) | 2,
        comm: cbytes("bash"),
        path: cbytes("/usr/bin/curl"),
        ..event(Action::Exec)
    };
    let connect = Event {
        proto: 6,
        port: 443,
        family: 4,
        addr: Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().octets(),
        comm: cbytes("curl"),
        ..event(Action::Connect)
    };
    let mut g = c.benchmark_group("events");
    for (name, e) in [("exec", exec), ("connect", connect)] {
        let bytes = record(&e);
        let decoded = events::decode(&bytes).expect("a whole record decodes");
        assert_eq!(decoded.kind.as_str(), name);
        g.bench_with_input(BenchmarkId::new("decode", name), &bytes, |b, bytes| {
            b.iter(|| events::decode(black_box(bytes)));
        });
    }
    g.finish();
}

fn snapshot(agents: usize) -> (Snapshot, Recorded) {
    let names: Vec<String> = (0..agents).map(|i| format!("agent-{i:03}")).collect();
    let mut counts: leash::kernel::maps::DecisionCounts = Default::default();
    for (i, row) in counts.iter_mut().enumerate() {
        for (j, c) in row.iter_mut().enumerate() {
            *c = (i as u64 + 1) * 1000 + j as u64 * 7;
        }
    }
    let snap = Snapshot {
        decisions: names.iter().map(|a| (a.clone(), counts)).collect(),
        tasks_active: names.iter().map(|a| (a.clone(), 3)).collect(),
        grants_active: [("exec", 40 * agents as i64), ("connect", 8 * agents as i64)],
        maps: maps::ALL.iter().map(|&m| (m, 100, 65_536)).collect(),
        events_lost: 0,
        tag_failures: 1,
        killed: 2,
        escapes: 0,
        programs: [
            programs::PROCESS_NEWTASK,
            programs::EXEC_BPRM_CHECK,
            programs::NET_CONNECT4,
        ]
        .iter()
        .map(|&p| (p, Duration::from_millis(12), 5_000))
        .collect(),
        connections: vec![("api", [3, 0, 0, 0]), ("metrics", [1, 0, 0, 0])],
        dns_learned: names.iter().map(|a| (a.clone(), 5)).collect(),
        dns_responders: 3,
    };
    let recorded = Recorded::default();
    for i in 0..100 {
        recorded.grant_apply.observe(f64::from(i) * 1e-5);
    }
    for a in &names {
        for reason in ["exited", "expired"] {
            recorded
                .tasks_ended
                .get_or_create(&EndedLabels {
                    agent: a.clone(),
                    reason: reason.to_owned(),
                })
                .inc();
        }
    }
    (snap, recorded)
}

fn bench_metrics(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics");
    for agents in [1, 10, 100] {
        let (snap, recorded) = snapshot(agents);
        g.bench_function(BenchmarkId::new("render", agents), |b| {
            b.iter(|| leash::metrics::render(black_box(&snap), black_box(&recorded)));
        });
    }
    g.finish();
}

/// Chaining one audit record (a typical 300-byte connect decision): the SHA-256 and the
/// two fields each line gets.
fn bench_audit_chain(c: &mut Criterion) {
    let record = br#"{"ts":"2026-12-02T17:00:00.123456789Z","task":"t-5f3a9c1e","agent":"builder","spiffe_id":"spiffe://example.org/agent/builder","pid":41234,"comm":"curl","kind":"connect","verdict":"denied","target":{"addr":"10.1.2.3","port":443,"proto":"tcp"},"reason":"no_grant"}"#;
    let mut g = c.benchmark_group("audit");
    let mut chain = Chain::default();
    let mut out = Vec::with_capacity(4096);
    g.bench_function("chain_link", |b| {
        b.iter(|| {
            out.clear();
            chain.link(black_box(record), &mut out)
        });
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_grants,
    bench_events,
    bench_metrics,
    bench_audit_chain
);
criterion_main!(benches);
