//! The audit log file: created mode 0640 (group configurable), rotated by size, and
//! hash-chained (`crate::audit_chain`).
//!
//! The sink hands over runs of whole lines, and a rotation happens only between two
//! runs: before a run that would take the file past `max_bytes`, `audit.jsonl` becomes
//! `audit.jsonl.1` (older files shift up to `.keep`, the oldest is removed) and a new
//! file starts. No record is ever split across files, and the chain runs on across
//! them. Each line gets its `seq` and `prev` here, under the sink's lock, so the
//! chain's order is the file's order.

use std::{
    fs::{File, OpenOptions, Permissions},
    io::{self, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use crate::{
    audit_chain::{self, Chain, HEAD_KIND, HeadSigner},
    protocol::AuditEvent,
};

/// Mode of the audit log and its rotated files: the owner writes, its group reads.
pub const AUDIT_MODE: u32 = 0o640;

/// When to rotate, and the group that may read.
#[derive(Clone, Copy, Debug)]
pub struct Rotation {
    /// 0: never rotate.
    pub max_bytes: u64,
    pub keep: u32,
    pub gid: Option<u32>,
}

/// As `audit:` in the default config: 100 MiB, five files, no group.
impl Default for Rotation {
    fn default() -> Self {
        Self {
            max_bytes: 100 * 1024 * 1024,
            keep: 5,
            gid: None,
        }
    }
}

pub struct AuditFile {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
    chain: Chain,
    signer: Option<HeadSigner>,
    /// The `seq` of the last head record written: nothing new to sign after it.
    head_at: Option<u64>,
}

impl AuditFile {
    /// Opens (creating) the log and resumes its chain; `signer` signs its heads.
    pub fn open(path: &Path, rotation: Rotation, signer: Option<HeadSigner>) -> io::Result<Self> {
        let mut resumed = Chain::resume(path)?;
        let file = open_log(path, rotation.gid)?;
        // A write cut short by a crash (a kill between two pages of one write): the
        // partial line goes from the log's end and comes back as a record of its own,
        // so the log holds whole records only and loses nothing.
        let fragment = if resumed.torn {
            let fragment = cut_torn_tail(path, &file)?;
            resumed = Chain::resume(path)?;
            Some(fragment)
        } else {
            None
        };
        let size = file.metadata()?.len();
        let mut log = Self {
            path: path.to_owned(),
            file,
            size,
            rotation,
            chain: resumed.chain,
            signer,
            head_at: None,
        };
        if let Some(fragment) = fragment {
            log.append(&torn_record(&fragment)?)?;
            log.file.flush()?;
        }
        Ok(log)
    }

    /// Appends `bytes` (whole lines, each one JSON object), chained, rotating first if
    /// they would not fit.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 4);
        let mut chain = self.chain;
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            chain.link(line, &mut out).map_err(io::Error::other)?;
        }
        let max = self.rotation.max_bytes;
        if max != 0 && self.size > 0 && self.size + out.len() as u64 > max {
            self.rotate()?;
        }
        self.file.write_all(&out)?;
        self.size += out.len() as u64;
        self.chain = chain;
        Ok(())
    }

    /// Signs the chain's last record, when there is one and it is not signed yet: an
    /// `audit_head` record in the log and the signer's head file.
    pub fn sign_head(&mut self, ts: String) -> io::Result<()> {
        let Some(signer) = &self.signer else {
            return Ok(());
        };
        let Some(seq) = self.chain.next_seq.checked_sub(1) else {
            return Ok(());
        };
        if self.head_at == Some(seq) {
            return Ok(());
        }
        let head = signer
            .sign(seq, &self.chain.prev)
            .map_err(io::Error::other)?;
        let line = own_record(
            ts,
            HEAD_KIND,
            "signed",
            serde_json::json!({
                "seq": head.seq, "head": head.head, "sig": head.sig, "key_id": head.key_id,
            }),
            "",
        )?;
        self.append(&line)?;
        self.head_at = self.chain.next_seq.checked_sub(1);
        Ok(())
    }

    fn rotated(&self, n: u32) -> PathBuf {
        audit_chain::rotated(&self.path, n)
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.rotation.keep.max(1);
        match std::fs::remove_file(self.rotated(keep)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (1..keep).rev() {
            match std::fs::rename(self.rotated(n), self.rotated(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        self.file = open_log(&self.path, self.rotation.gid)?;
        self.size = 0;
        Ok(())
    }
}

/// Opens for append, creating with [`AUDIT_MODE`]; an existing file (a log from an older
/// daemon was 0644) is brought to that mode and group too.
fn open_log(path: &Path, gid: Option<u32>) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(AUDIT_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(AUDIT_MODE))?;
    if let Some(gid) = gid {
        std::os::unix::fs::fchown(&file, None, Some(gid))?;
    }
    Ok(file)
}

/// The kind of the record that keeps a line a crash cut short.
pub const TORN_KIND: &str = "audit_torn_tail";

/// Cuts the partial last line off the log at `path` (open as `file`); its bytes.
fn cut_torn_tail(path: &Path, file: &File) -> io::Result<Vec<u8>> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let len = file.metadata()?.len();
    let mut f = File::open(path)?;
    let from = len.saturating_sub(TORN_MAX);
    f.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail)?;
    let keep = tail
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(from, |i| from + i as u64 + 1);
    let start = usize::try_from(keep - from).unwrap_or(0);
    let fragment = tail.get(start..).unwrap_or_default().to_vec();
    file.set_len(keep)?;
    Ok(fragment)
}

/// How far back a torn line is looked for: a record is far smaller.
const TORN_MAX: u64 = 4 * 1024 * 1024;

/// The record of a cut line: its length and its text (lossy), chained like any other.
fn torn_record(fragment: &[u8]) -> io::Result<Vec<u8>> {
    own_record(
        super::audit::now_rfc3339(),
        TORN_KIND,
        crate::daemon::LIFECYCLE_VERDICT,
        serde_json::json!({
            "bytes": fragment.len(),
            "fragment": String::from_utf8_lossy(fragment),
        }),
        "a write cut short when the daemon was killed",
    )
}

/// A record the log writes about itself (no task), as one JSON line.
fn own_record(
    ts: String,
    kind: &str,
    verdict: &str,
    target: serde_json::Value,
    reason: &str,
) -> io::Result<Vec<u8>> {
    let record = AuditEvent {
        ts,
        task: String::new(),
        agent: String::new(),
        spiffe_id: String::new(),
        intent: None,
        pid: Some(std::process::id()),
        comm: "leash".into(),
        kind: kind.into(),
        verdict: verdict.into(),
        target,
        reason: reason.into(),
        chain: Vec::new(),
    };
    serde_json::to_vec(&record).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("leash-audit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_line_a_crash_cut_short_becomes_a_record_and_the_log_verifies() {
        let d = dir("torn");
        let path = d.join("audit.jsonl");
        let mut f = AuditFile::open(&path, Rotation::default(), None).unwrap();
        f.append(b"{\"n\":1}\n{\"n\":2}\n").unwrap();
        drop(f);
        let mut text = std::fs::read(&path).unwrap();
        text.extend_from_slice(b"{\"kind\":\"ex");
        std::fs::write(&path, &text).unwrap();
        let mut f = AuditFile::open(&path, Rotation::default(), None).unwrap();
        f.append(b"{\"n\":3}\n").unwrap();
        let log = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 4, "{log}");
        assert!(log.ends_with('\n'));
        let torn: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(torn["kind"], TORN_KIND);
        assert_eq!(torn["target"]["fragment"], "{\"kind\":\"ex");
        let found = audit_chain::verify(&audit_chain::log_files(&path), None, None)
            .unwrap()
            .findings;
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn created_0640_with_its_group_and_an_old_0644_log_is_fixed() {
        let d = dir("mode");
        let path = d.join("audit.jsonl");
        std::fs::write(&path, "{\"old\":1}\n").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let gid = nix::unistd::getegid().as_raw();
        let mut f = AuditFile::open(
            &path,
            Rotation {
                gid: Some(gid),
                ..Rotation::default()
            },
            None,
        )
        .unwrap();
        f.append(b"{\"new\":2}\n").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o640);
        assert_eq!(meta.gid(), gid);
        // The old log's last line is linked: the first chained record's `prev`.
        let prev = hex::encode(audit_chain::line_hash(b"{\"old\":1}"));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{{\"old\":1}}\n{{\"new\":2,\"seq\":0,\"prev\":\"{prev}\"}}\n")
        );
        std::fs::remove_file(&path).unwrap();
        let _f = AuditFile::open(&path, Rotation::default(), None).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().mode() & 0o777,
            0o640,
            "a new log is created 0640, whatever the umask"
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn rotation_keeps_records_whole_and_at_most_keep_files() {
        let d = dir("rotate");
        let path = d.join("audit.jsonl");
        let rotation = Rotation {
            max_bytes: 100,
            keep: 2,
            gid: None,
        };
        let mut f = AuditFile::open(&path, rotation, None).unwrap();
        let mut written = Vec::new();
        for i in 0..40 {
            // Runs of one to three lines, of varying length, as the sink writes them.
            let mut run = String::new();
            for j in 0..=(i % 3) {
                let line = format!(
                    "{{\"n\":{i},\"j\":{j},\"pad\":\"{}\"}}\n",
                    "x".repeat(i % 7)
                );
                written.push(line.trim_end().to_owned());
                run.push_str(&line);
            }
            f.append(run.as_bytes()).unwrap();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let files = [f.rotated(2), f.rotated(1), path.clone()];
        assert!(!f.rotated(3).exists(), "only `keep` rotated files");
        let mut lines = Vec::new();
        for p in &files {
            let text = read(p);
            assert!(text.ends_with('\n'), "{}: {text:?}", p.display());
            // At most one run (three chained lines) past `max_bytes`.
            assert!(text.len() as u64 <= 100 + 3 * 140, "{}", p.display());
            assert_eq!(
                std::fs::metadata(p).unwrap().mode() & 0o777,
                0o640,
                "{}",
                p.display()
            );
            for l in text.lines() {
                let mut v = serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|e| panic!("split record {l:?}: {e}"));
                let o = v.as_object_mut().unwrap();
                assert!(
                    o.remove("seq").is_some() && o.remove("prev").is_some(),
                    "{l}"
                );
                lines.push(v.to_string());
            }
        }
        // The newest records, in order, with nothing lost between the kept files, and
        // the chain unbroken across them.
        assert_eq!(lines, written[written.len() - lines.len()..]);
        let report = audit_chain::verify(&audit_chain::log_files(&path), None, None).unwrap();
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert!(report.begins_mid_chain, "older files were rotated away");
        std::fs::remove_dir_all(d).unwrap();
    }
}
