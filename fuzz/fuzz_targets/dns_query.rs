//! The DNS responder's decision on one query (`dns::answer_query`: parse, match the
//! task's name grants, forward, check the answer, learn), with a real upstream on
//! loopback. A reply keeps the query's ID and question; only a granted name of an
//! allowed type, stripped to its question and a bare OPT record, ever reaches the
//! upstream; only addresses the upstream gave, for a granted name, are learned.
//!
//! Input: a flags byte (bit 0: TCP; bit 1: the upstream answers with the bytes that
//! follow, after a 2-byte big-endian length), then the query.
#![no_main]

use std::{
    net::IpAddr,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType},
    rr::RecordType,
};
use leash::dns::{Learned, Limits, NameGrant, Report, TaskDns, TaskLookup, answer_query};
use leash_fuzz::upstream::{ANSWER, Upstream};
use libfuzzer_sys::fuzz_target;

const SLOT: u32 = 3;
const GRANTS: [&str; 3] = [
    "granted.example:443/tcp",
    "*.svc.test:80",
    "Bücher.example:443",
];
const ALLOWED: [RecordType; 5] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::CNAME,
    RecordType::HTTPS,
    RecordType::SVCB,
];

/// The daemon's side as the responder sees it: one task on one slot.
struct Tasks {
    task: TaskDns,
    learned: Mutex<Vec<Learned>>,
}

impl TaskLookup for Tasks {
    fn task(&self, slot: u32) -> Option<TaskDns> {
        (slot == SLOT).then(|| self.task.clone())
    }
    fn learn(&self, slot: u32, learned: &[Learned]) -> Result<(), String> {
        assert_eq!(slot, SLOT);
        self.learned.lock().unwrap().extend_from_slice(learned);
        Ok(())
    }
    fn report(&self, slot: u32, _report: Report) {
        assert_eq!(slot, SLOT);
    }
    fn upstream_answered(&self, _took: Duration) {}
    fn relayed(&self, _took: Duration) {}
}

struct State {
    rt: tokio::runtime::Runtime,
    upstream: Upstream,
    tasks: Arc<Tasks>,
}

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let upstream = Upstream::start();
        let grants = GRANTS
            .iter()
            .map(|g| NameGrant::parse(g, 0).unwrap())
            .collect();
        let tasks = Arc::new(Tasks {
            task: TaskDns {
                id: 1,
                grants,
                upstreams: vec![upstream.addr],
                audit: false,
            },
            learned: Mutex::new(Vec::new()),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        State {
            rt,
            upstream,
            tasks,
        }
    })
}

fn granted(name: &str) -> bool {
    state().tasks.task.grants.iter().any(|g| g.covers(name))
}

fn name_of(m: &Message) -> String {
    let text = m.queries[0].name().to_lowercase().to_ascii();
    text.strip_suffix('.').unwrap_or(&text).to_owned()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let tcp = flags & 1 != 0;
    let (canned, query) = if flags & 2 != 0 {
        let Some((len, rest)) = rest.split_first_chunk::<2>() else {
            return;
        };
        let n = usize::from(u16::from_be_bytes(*len)).min(rest.len());
        (Some(rest[..n].to_vec()), &rest[n..])
    } else {
        (None, rest)
    };
    let s = state();
    s.upstream.canned(canned.clone());
    // The upstream is on loopback: 50 ms is ample for its answers, and an input whose
    // lying answer the responder refuses waits this long for a better one (at 500 ms
    // such inputs held the run to 370 executions a second; at 50 ms it makes 1 360).
    let limits = Limits {
        upstream_timeout: Duration::from_millis(50),
        ..Limits::default()
    };
    let tasks: Arc<dyn TaskLookup> = s.tasks.clone();
    let reply = s.rt.block_on(answer_query(tasks, limits, SLOT, query, tcp));
    s.upstream.settle();
    let forwarded = s.upstream.take();
    let learned = std::mem::take(&mut *s.tasks.learned.lock().unwrap());

    // What reached the upstream: granted names of allowed types, nothing else.
    for f in &forwarded {
        let m = Message::from_vec(f).expect("the responder forwards what parses");
        assert_eq!(m.queries.len(), 1, "{m:?}");
        let name = name_of(&m);
        assert!(granted(&name), "forwarded an ungranted name {name:?}");
        assert!(ALLOWED.contains(&m.queries[0].query_type()), "{m:?}");
        assert!(m.answers.is_empty() && m.authorities.is_empty() && m.additionals.is_empty());
        assert!(m.signature.is_none());
        if let Some(e) = &m.edns {
            assert!(
                e.options().as_ref().is_empty(),
                "EDNS options forwarded: {e:?}"
            );
            assert!(e.max_payload() <= 4096);
        }
    }
    assert!(forwarded.len() <= 1);
    // What was learned: the upstream's address, for the name asked, if granted.
    for l in &learned {
        assert!(granted(&l.name), "learned {l:?} for an ungranted name");
        if canned.is_none() {
            assert_eq!(l.addr, IpAddr::V4(ANSWER));
        }
    }
    if !learned.is_empty() {
        assert_eq!(forwarded.len(), 1, "learned without asking");
    }

    let Some(reply) = reply else {
        return;
    };
    assert!(!reply.is_empty(), "an empty reply");
    let parsed_query = Message::from_vec(query);
    if canned.is_some() && !forwarded.is_empty() {
        // A lying upstream's answer is relayed only if it matches the query.
        if let Ok(q) = &parsed_query {
            let r = Message::from_vec(&reply).expect("a relayed answer parses");
            assert_eq!(r.metadata.id, q.metadata.id);
        }
        return;
    }
    let r = Message::from_vec(&reply).expect("the responder's reply parses");
    assert_eq!(r.metadata.message_type, MessageType::Response);
    if let Ok(q) = &parsed_query {
        assert_eq!(r.metadata.id, q.metadata.id, "the reply has another ID");
        assert_eq!(r.queries, q.queries, "the reply has another question");
    } else if query.len() >= 2 {
        assert_eq!(r.metadata.id, u16::from_be_bytes([query[0], query[1]]));
    }
});
