use std::path::{Path, PathBuf};

use super::*;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("leash-chain-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `n` chained records to `path`, a signed head after record `sign_at`.
fn write_log(path: &Path, n: u64, signer: Option<(&HeadSigner, u64)>, tag: &str) {
    let mut chain = Chain::default();
    let mut out = Vec::new();
    for i in 0..n {
        chain
            .link(
                format!("{{\"kind\":\"exec\",\"n\":{i},\"by\":\"{tag}\"}}").as_bytes(),
                &mut out,
            )
            .unwrap();
        if let Some((s, at)) = signer
            && at == i
        {
            let seq = chain.next_seq - 1;
            let h = s.sign(seq, &chain.prev).unwrap();
            let rec = serde_json::json!({
                "kind": HEAD_KIND,
                "target": {"seq": h.seq, "head": h.head, "sig": h.sig, "key_id": h.key_id},
            });
            chain.link(rec.to_string().as_bytes(), &mut out).unwrap();
        }
    }
    std::fs::write(path, out).unwrap();
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn put(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn first(
    path: &Path,
    key: Option<&ed25519_dalek::VerifyingKey>,
    head: Option<&HeadFile>,
) -> Option<Finding> {
    verify(&log_files(path), key, head)
        .unwrap()
        .findings
        .into_iter()
        .next()
}

#[test]
fn link_adds_seq_and_prev_and_refuses_what_is_not_an_object() {
    let mut c = Chain::default();
    let mut out = Vec::new();
    c.link(b"{\"a\":1}", &mut out).unwrap();
    c.link(b"{}", &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let l: Vec<&str> = text.lines().collect();
    assert_eq!(
        l[0],
        format!("{{\"a\":1,\"seq\":0,\"prev\":\"{}\"}}", "0".repeat(64))
    );
    let h = hex::encode(line_hash(l[0].as_bytes()));
    assert_eq!(l[1], format!("{{\"seq\":1,\"prev\":\"{h}\"}}"));
    assert_eq!(c.next_seq, 2);
    for bad in [&b"[1]"[..], b"", b"{\"a\":1", b"x"] {
        assert!(c.link(bad, &mut Vec::new()).is_err(), "{bad:?}");
    }
    assert_eq!(c.next_seq, 2, "a refused record takes no seq");
}

#[test]
fn an_intact_log_verifies_and_each_kind_of_tampering_is_found_at_its_record() {
    let d = Dir::new("tamper");
    let path = d.0.join("audit.jsonl");
    write_log(&path, 10, None, "a");
    let report = verify(&log_files(&path), None, None).unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(
        (report.records, report.first_seq, report.last_seq),
        (10, Some(0), Some(9))
    );
    assert!(!report.begins_mid_chain);
    let good = lines(&path);

    // Edited: record 4's content; found at record 4, line 5.
    let mut l = good.clone();
    l[4] = l[4].replace("\"n\":4", "\"n\":44");
    put(&path, &l);
    let f = first(&path, None, None).unwrap();
    assert_eq!(
        (f.kind.clone(), f.line, f.seq),
        (FindingKind::Edited, 5, Some(4)),
        "{f}"
    );

    // Removed: record 6; found before line 7 (record 7, now on line 7).
    let mut l = good.clone();
    l.remove(6);
    put(&path, &l);
    let f = first(&path, None, None).unwrap();
    assert_eq!(f.kind, FindingKind::Removed { from: 6, to: 6 }, "{f}");
    assert_eq!(f.line, 7);

    // Reordered: records 2 and 3 swapped; found at line 3.
    let mut l = good.clone();
    l.swap(2, 3);
    put(&path, &l);
    let f = first(&path, None, None).unwrap();
    assert_eq!(f.kind, FindingKind::Reordered { expected: 2 }, "{f}");
    assert_eq!(f.line, 3);

    // A line that is not a record.
    let mut l = good;
    l.insert(8, "garbage".into());
    put(&path, &l);
    let f = first(&path, None, None).unwrap();
    assert!(matches!(f.kind, FindingKind::NotARecord(_)), "{f}");
    assert_eq!(f.line, 9);
}

#[test]
fn signed_heads_catch_a_rewritten_chain_and_a_cut_tail() {
    let d = Dir::new("heads");
    let state = d.0.join("state");
    let signer = HeadSigner::load_or_create(&state).unwrap();
    let key = load_public_key(&state.join(PUB_FILE)).unwrap();
    let path = d.0.join("audit.jsonl");
    write_log(&path, 8, Some((&signer, 5)), "a");
    let head = HeadFile::read(&state.join(HEAD_FILE)).unwrap();
    assert_eq!(head.seq, 5);
    let report = verify(&log_files(&path), Some(&key), Some(&head)).unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!((report.heads, report.last_signed), (1, Some(5)));
    assert_eq!(
        report.unsigned_tail, 2,
        "records 7 and 8 come after the head record"
    );

    // The tail cut back to record 3, chain intact: the head file still says 5.
    let l = lines(&path);
    put(&path, &l[..4]);
    let f = first(&path, Some(&key), Some(&head)).unwrap();
    assert_eq!(
        f.kind,
        FindingKind::TailCut {
            signed: 5,
            last: Some(3)
        },
        "{f}"
    );

    // The whole chain rewritten without the key: the in-log head no longer verifies.
    let other = HeadSigner::load_or_create(&d.0.join("forger")).unwrap();
    write_log(&path, 8, Some((&other, 5)), "forged");
    let f = first(&path, Some(&key), None).unwrap();
    assert!(matches!(f.kind, FindingKind::BadHead(_)), "{f}");
    // And the forger's log does not contain the genuine head's record.
    let f = verify(&log_files(&path), Some(&key), Some(&head))
        .unwrap()
        .findings;
    assert!(
        f.iter()
            .any(|f| f.kind == FindingKind::Edited && f.seq == Some(5)),
        "{f:?}"
    );
}

#[test]
fn a_key_others_can_read_is_refused_and_a_bad_one_named() {
    use std::os::unix::fs::PermissionsExt as _;
    let d = Dir::new("key");
    let _ = HeadSigner::load_or_create(&d.0).unwrap();
    let key = d.0.join(KEY_FILE);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = HeadSigner::load_or_create(&d.0).err().unwrap().to_string();
    assert!(e.contains("0644") && e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&key, b"short").unwrap();
    let e = HeadSigner::load_or_create(&d.0).err().unwrap().to_string();
    assert!(e.contains("5 bytes, not 32"), "{e}");
}

#[test]
fn resume_continues_the_chain_after_a_torn_line_and_an_older_log() {
    let d = Dir::new("resume");
    let path = d.0.join("audit.jsonl");
    assert_eq!(Chain::resume(&path).unwrap().chain, Chain::default());
    write_log(&path, 3, None, "a");
    let r = Chain::resume(&path).unwrap();
    assert!(!r.torn);
    assert_eq!(r.chain.next_seq, 3);
    assert_eq!(r.chain.prev, line_hash(lines(&path)[2].as_bytes()));

    // A crash cut the last write: the next record links to the torn line.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"kind\":\"ex");
    std::fs::write(&path, &text).unwrap();
    let r = Chain::resume(&path).unwrap();
    assert!(r.torn);
    assert_eq!(r.chain.next_seq, 3);
    assert_eq!(r.chain.prev, line_hash(b"{\"kind\":\"ex"));
    let mut out = b"\n".to_vec();
    let mut c = r.chain;
    c.link(b"{\"n\":3}", &mut out).unwrap();
    text.push_str(std::str::from_utf8(&out).unwrap());
    std::fs::write(&path, &text).unwrap();
    let f = verify(&log_files(&path), None, None).unwrap().findings;
    assert_eq!(f.len(), 1, "only the torn line: {f:?}");
    assert!(matches!(f[0].kind, FindingKind::NotARecord(_)) && f[0].line == 4);

    // A log from before the chain: its last line is linked, and not a finding.
    std::fs::write(&path, "{\"old\":1}\n{\"old\":2}\n").unwrap();
    let r = Chain::resume(&path).unwrap();
    assert_eq!(r.chain.next_seq, 0);
    let mut out = Vec::new();
    let mut c = r.chain;
    c.link(b"{\"n\":0}", &mut out).unwrap();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(std::str::from_utf8(&out).unwrap());
    std::fs::write(&path, &text).unwrap();
    let report = verify(&log_files(&path), None, None).unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!((report.unchained, report.records), (2, 1));
}
