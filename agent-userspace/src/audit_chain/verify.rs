//! `leash audit verify`: walks the log's files oldest first and reports where the chain
//! breaks: a record edited (the next record's `prev` is not its hash), records removed
//! (a gap in `seq`), records reordered (a `seq` that belongs to an earlier gap), a line
//! that is not a record, a signed head that does not verify, and a tail cut after the
//! last signed head (`audit.head` names a record the log no longer has).

use std::{
    collections::BTreeMap,
    fmt,
    fs::File,
    io::{self, BufRead as _, BufReader},
    path::PathBuf,
};

use ed25519_dalek::VerifyingKey;
use serde_json::Value;

use super::{GENESIS, HEAD_KIND, Hash, HeadFile, head::check, line_hash};

/// Hashes kept per `seq` to check `prev` and the head file: enough for any reordering
/// a writer could cause, bounded for a log of any size.
const WINDOW: u64 = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FindingKind {
    /// The record's content changed: the next record's `prev` (or the signed head) is
    /// not its hash.
    Edited,
    /// Records `from..=to` are missing before this line.
    Removed { from: u64, to: u64 },
    /// This record comes before one that it should follow.
    Reordered { expected: u64 },
    /// Not a JSON record, or a chained record without its `seq` or `prev`.
    NotARecord(String),
    /// An `audit_head` record whose signature or content does not hold.
    BadHead(String),
    /// The signed head in `audit.head` names `signed`, beyond the log's last record.
    TailCut { signed: u64, last: Option<u64> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub file: PathBuf,
    /// 1-based; 0 for a finding about the whole log.
    pub line: u64,
    pub seq: Option<u64>,
    pub kind: FindingKind,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = format!("{}:{}", self.file.display(), self.line);
        let seq = self.seq.map(|s| format!("record {s}")).unwrap_or_default();
        match &self.kind {
            FindingKind::Edited => write!(f, "{at}: {seq} was edited"),
            FindingKind::Removed { from, to } if from == to => {
                write!(f, "{at}: record {from} was removed before this line")
            }
            FindingKind::Removed { from, to } => {
                write!(
                    f,
                    "{at}: records {from} to {to} were removed before this line"
                )
            }
            FindingKind::Reordered { expected } => {
                write!(f, "{at}: {seq} is out of order (record {expected} was due)")
            }
            FindingKind::NotARecord(why) => write!(f, "{at}: not a chained record: {why}"),
            FindingKind::BadHead(why) => write!(f, "{at}: signed head {seq}: {why}"),
            FindingKind::TailCut { signed, last } => match last {
                Some(last) => write!(
                    f,
                    "the log ends at record {last}, but record {signed} was signed: \
                     the tail after record {last} was cut"
                ),
                None => write!(
                    f,
                    "the log has no chained record, but record {signed} was signed: it was cut"
                ),
            },
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Chained records read.
    pub records: u64,
    /// Lines before the first chained record (a log from before the chain).
    pub unchained: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The first record links to one that is not in these files (rotated away).
    pub begins_mid_chain: bool,
    /// Signed heads in the log that verified.
    pub heads: u64,
    /// The last record covered by a verified signature (the log's or `audit.head`).
    pub last_signed: Option<u64>,
    /// Records after `last_signed`, not counting head records.
    pub unsigned_tail: u64,
    /// In log order: the first is where tampering starts.
    pub findings: Vec<Finding>,
}

/// What came before a line.
#[derive(Clone, Copy)]
enum Before {
    Nothing,
    Line(Hash),
}

struct Seen {
    hash: Hash,
    file: usize,
    line: u64,
}

struct Walk<'a> {
    files: &'a [PathBuf],
    key: Option<&'a VerifyingKey>,
    report: Report,
    seen: BTreeMap<u64, Seen>,
    /// Open gaps: (from, to, index of its finding).
    gaps: Vec<(u64, u64, usize)>,
    expected: Option<u64>,
    prev_line: Option<Hash>,
    /// Findings with a sort key (file, line).
    found: Vec<((usize, u64), Finding)>,
}

/// Verifies `files` (oldest first); `key` checks the signatures, `head` is the last
/// signed head kept beside the key.
pub fn verify(
    files: &[PathBuf],
    key: Option<&VerifyingKey>,
    head: Option<&HeadFile>,
) -> io::Result<Report> {
    let mut w = Walk {
        files,
        key,
        report: Report::default(),
        seen: BTreeMap::new(),
        gaps: Vec::new(),
        expected: None,
        prev_line: None,
        found: Vec::new(),
    };
    for (i, path) in files.iter().enumerate() {
        let reader = BufReader::new(File::open(path)?);
        for (n, line) in reader.split(b'\n').enumerate() {
            w.line(i, n as u64 + 1, &line?);
        }
    }
    if let Some(h) = head {
        w.head_file(h);
    }
    w.found.sort_by_key(|(k, _)| *k);
    let mut report = w.report;
    report.findings = w.found.into_iter().map(|(_, f)| f).collect();
    Ok(report)
}

impl Walk<'_> {
    fn finding(&mut self, file: usize, line: u64, seq: Option<u64>, kind: FindingKind) -> usize {
        self.found.push((
            (file, line),
            Finding {
                file: self.files[file].clone(),
                line,
                seq,
                kind,
            },
        ));
        self.found.len() - 1
    }

    fn line(&mut self, file: usize, line: u64, bytes: &[u8]) {
        let hash = line_hash(bytes);
        let prev_line = self.prev_line.replace(hash);
        let value: Option<Value> = serde_json::from_slice(bytes).ok();
        let Some(value) = value.filter(Value::is_object) else {
            self.finding(
                file,
                line,
                None,
                FindingKind::NotARecord("not a JSON object".into()),
            );
            return;
        };
        let seq = value.get("seq").and_then(Value::as_u64);
        let prev = value
            .get("prev")
            .and_then(Value::as_str)
            .and_then(|p| hex::decode(p).ok())
            .and_then(|p| Hash::try_from(p).ok());
        let (Some(seq), Some(prev)) = (seq, prev) else {
            if self.expected.is_none() && self.found.is_empty() {
                self.report.unchained += 1;
            } else {
                let why = "it has no `seq` or `prev`".to_owned();
                self.finding(file, line, seq, FindingKind::NotARecord(why));
            }
            return;
        };
        self.report.records += 1;
        self.report.first_seq.get_or_insert(seq);
        self.seen.insert(seq, Seen { hash, file, line });
        let floor = seq.saturating_sub(WINDOW);
        while self.seen.first_key_value().is_some_and(|(&s, _)| s < floor) {
            self.seen.pop_first();
        }
        self.check_order(file, line, seq);
        let before = prev_line.map_or(Before::Nothing, Before::Line);
        self.check_prev((file, line), seq, prev, before);
        if value.get("kind").and_then(Value::as_str) == Some(HEAD_KIND) {
            self.head_record(file, line, seq, prev, &value);
        } else if self.report.last_signed.is_some() {
            self.report.unsigned_tail += 1;
        }
        self.report.last_seq = Some(self.report.last_seq.map_or(seq, |l| l.max(seq)));
    }

    fn check_order(&mut self, file: usize, line: u64, seq: u64) {
        let Some(expected) = self.expected else {
            self.expected = Some(seq + 1);
            return;
        };
        if seq == expected {
            self.expected = Some(seq + 1);
        } else if seq > expected {
            let i = self.finding(
                file,
                line,
                Some(seq),
                FindingKind::Removed {
                    from: expected,
                    to: seq - 1,
                },
            );
            self.gaps.push((expected, seq - 1, i));
            self.expected = Some(seq + 1);
        } else if let Some(&(from, _, i)) = self.gaps.iter().find(|g| (g.0..=g.1).contains(&seq)) {
            // It belongs in a gap seen earlier: what looked removed came late.
            let first = &mut self.found[i].1;
            first.kind = FindingKind::Reordered { expected: from };
        } else {
            self.finding(file, line, Some(seq), FindingKind::Reordered { expected });
        }
    }

    /// `prev` must be the hash of record `seq - 1`; of the line before for the first.
    fn check_prev(&mut self, (file, line): (usize, u64), seq: u64, prev: Hash, before: Before) {
        match seq.checked_sub(1).and_then(|s| self.seen.get(&s)) {
            // A line cut short by a crash (reported as not a record) sits between them:
            // the writer linked to it.
            Some(b) if b.hash != prev && !matches!(before, Before::Line(h) if h == prev) => {
                let (bf, bl) = (b.file, b.line);
                self.finding(bf, bl, Some(seq - 1), FindingKind::Edited);
            }
            // The first chained record links to the line before it (a log from before
            // the chain), to nothing (a new log), or to a file rotated away.
            None if self.report.records == 1 => match before {
                Before::Nothing if prev != GENESIS => self.report.begins_mid_chain = true,
                Before::Line(h) if h != prev => {
                    let kind = FindingKind::NotARecord(
                        "the first chained record does not link to the line before it".into(),
                    );
                    self.finding(file, line, Some(seq), kind);
                }
                _ => {}
            },
            // Linked as it should be; or record `seq - 1` is missing: a gap, already
            // reported.
            Some(_) | None => {}
        }
    }

    fn head_record(&mut self, file: usize, line: u64, seq: u64, prev: Hash, value: &Value) {
        let target = &value["target"];
        let signed = target.get("seq").and_then(Value::as_u64);
        let head = target
            .get("head")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let sig = target
            .get("sig")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let bad = |why: &str| FindingKind::BadHead(why.to_owned());
        if signed != seq.checked_sub(1) || hex::encode(prev) != head {
            self.finding(
                file,
                line,
                Some(seq),
                bad("it does not sign the record before it"),
            );
            return;
        }
        let Some(key) = self.key else {
            return;
        };
        if check(key, seq - 1, head, sig).is_none() {
            self.finding(
                file,
                line,
                Some(seq),
                bad("the signature does not verify with this key"),
            );
            return;
        }
        self.report.heads += 1;
        self.report.last_signed = Some(seq - 1);
        self.report.unsigned_tail = 0;
    }

    fn head_file(&mut self, h: &HeadFile) {
        let whole = |kind| Finding {
            file: self.files.last().cloned().unwrap_or_default(),
            line: 0,
            seq: Some(h.seq),
            kind,
        };
        if let Some(key) = self.key
            && h.check(key).is_none()
        {
            let f = whole(FindingKind::BadHead(
                "audit.head: the signature does not verify".into(),
            ));
            self.found.push(((usize::MAX, 0), f));
            return;
        }
        let last = self.report.last_seq;
        if last.is_none_or(|l| h.seq > l) {
            let f = whole(FindingKind::TailCut {
                signed: h.seq,
                last,
            });
            self.found.push(((usize::MAX, 0), f));
            return;
        }
        if let Some(s) = self.seen.get(&h.seq) {
            if hex::encode(s.hash) == h.head {
                if self.report.last_signed.is_none_or(|l| l < h.seq) {
                    self.report.last_signed = Some(h.seq);
                    self.report.unsigned_tail = self.report.last_seq.map_or(0, |l| l - h.seq);
                }
            } else {
                let (file, line) = (s.file, s.line);
                self.finding(file, line, Some(h.seq), FindingKind::Edited);
            }
        }
    }
}
