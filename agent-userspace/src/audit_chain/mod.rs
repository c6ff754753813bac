//! The audit log's hash chain (docs/audit.md). Every record carries its sequence
//! number (`seq`) and the SHA-256 of the line before it (`prev`), so an edited, removed
//! or reordered record breaks the chain where it happened. The daemon signs the chain's
//! head from time to time (`head`): a chain rewritten by someone without the key, or a
//! tail cut after a signed head, is detected too (`verify`).

mod head;
mod verify;

use std::{
    fs::File,
    io::{self, Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
};

pub use head::{HEAD_FILE, HeadError, HeadFile, HeadSigner, KEY_FILE, PUB_FILE, load_public_key};
use sha2::{Digest as _, Sha256};
pub use verify::{Finding, FindingKind, Report, verify};

/// The SHA-256 of one line, without its newline.
pub type Hash = [u8; 32];

/// `prev` of the very first record of a log.
pub const GENESIS: Hash = [0; 32];

/// The `kind` of the records that carry a signed head.
pub const HEAD_KIND: &str = "audit_head";

#[must_use]
pub fn line_hash(line: &[u8]) -> Hash {
    Sha256::digest(line).into()
}

/// A record handed to [`Chain::link`] is not one JSON object.
#[derive(Debug, thiserror::Error)]
#[error("an audit record must be one JSON object: {0:?}")]
pub struct NotAnObject(String);

/// Where the chain stands: the next record's `seq` and `prev`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chain {
    pub next_seq: u64,
    pub prev: Hash,
}

impl Default for Chain {
    fn default() -> Self {
        Self {
            next_seq: 0,
            prev: GENESIS,
        }
    }
}

impl Chain {
    /// Appends `record` (one serialized JSON object, no newline) to `out` with `seq`
    /// and `prev` added as its last fields, then a newline.
    pub fn link(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<(), NotAnObject> {
        let not = || NotAnObject(String::from_utf8_lossy(record).chars().take(80).collect());
        let body = record.trim_ascii();
        let body = body
            .strip_prefix(b"{")
            .and_then(|b| b.strip_suffix(b"}"))
            .ok_or_else(not)?;
        let start = out.len();
        out.push(b'{');
        out.extend_from_slice(body);
        if !body.trim_ascii().is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(
            format!(
                "\"seq\":{},\"prev\":\"{}\"}}",
                self.next_seq,
                hex::encode(self.prev)
            )
            .as_bytes(),
        );
        self.prev = line_hash(&out[start..]);
        self.next_seq += 1;
        out.push(b'\n');
        Ok(())
    }

    /// The chain after the last line of the log at `path` (or, when that file is empty
    /// or missing, of its newest rotated file), so that a restarted daemon continues it.
    /// A last line without `seq` (a log from before the chain) or cut short by a crash
    /// is linked all the same: the next record's `prev` is its hash.
    pub fn resume(path: &Path) -> io::Result<Resumed> {
        for candidate in [path.to_owned(), rotated(path, 1)] {
            if let Some(r) = resume_from(&candidate)? {
                return Ok(r);
            }
        }
        Ok(Resumed {
            chain: Self::default(),
            torn: false,
        })
    }
}

/// What [`Chain::resume`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resumed {
    pub chain: Chain,
    /// The file does not end with a newline: the writer must end that line first.
    pub torn: bool,
}

/// `path.N`, as rotation names it.
#[must_use]
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The log's files, oldest first: `path.N` ... `path.1`, `path` (those that exist).
#[must_use]
pub fn log_files(path: &Path) -> Vec<PathBuf> {
    // Rotation keeps at most `audit.keep` files, far below this bound.
    let mut files: Vec<PathBuf> = (1..=u32::from(u16::MAX))
        .map(|n| rotated(path, n))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    if path.exists() {
        files.push(path.to_owned());
    }
    files
}

/// The most a record may take: the tail read to resume is twice this.
const TAIL: u64 = 1024 * 1024;

fn resume_from(path: &Path) -> io::Result<Option<Resumed>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let from = len.saturating_sub(2 * TAIL);
    f.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::with_capacity(usize::try_from(len - from).unwrap_or(0));
    f.read_to_end(&mut tail)?;
    let torn = !tail.ends_with(b"\n");
    let text = tail.strip_suffix(b"\n").unwrap_or(&tail);
    // The first line of a tail read from the middle of the file may be partial: only
    // lines after it count, unless the tail is the whole file.
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    let last = lines.last().copied().unwrap_or_default();
    let whole = |i: usize| from == 0 || i > 0;
    // After the last record that says its `seq`; lines after it without one (torn)
    // take none.
    let next_seq = lines
        .iter()
        .enumerate()
        .rev()
        .filter(|&(i, _)| whole(i))
        .find_map(|(_, l)| seq_of(l))
        .map_or(0, |seq| seq + 1);
    Ok(Some(Resumed {
        chain: Chain {
            next_seq,
            prev: line_hash(last),
        },
        torn,
    }))
}

/// The `seq` of a chained record.
fn seq_of(line: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()?
        .get("seq")?
        .as_u64()
}

#[cfg(test)]
mod tests;
