//! Printing helpers shared by the client commands: tables, JSON, `key=value` fields.

use std::{
    borrow::Cow,
    fmt::Write as _,
    io::{self, Write as _},
};

use serde::Serialize;

/// Writes `text` (plus a newline) to stdout. A closed pipe (`leash events | head`)
/// comes back as an `io::Error` that [`is_broken_pipe`] recognizes.
pub(crate) fn print(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Pretty JSON of an API object, for `--json`.
pub(crate) fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    print(&serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// True when `e` is stdout having been closed by its reader.
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// `s` with every control character (newlines, escape sequences, C1 codes) and every
/// bidirectional override written as a Rust escape (`\n`, `\u{1b}`), so text from a
/// task (an intent, a spec) cannot forge, reorder or hide lines of what a human reads.
pub(crate) fn clean(s: &str) -> Cow<'_, str> {
    let bad =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(bad) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Left-aligned columns separated by two spaces, no trailing blanks; cells [`clean`]ed.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| clean(c).into_owned()).collect())
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `key: value` lines with the values aligned and [`clean`]ed.
pub(crate) fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let value = clean(value);
        let key = format!("{key}:");
        let _ = writeln!(out, "{}", format!("{key:<width$} {value}").trim_end());
    }
    out
}

/// The serde name of a unit enum value (`enforce`, `active`, ...), so the text output
/// says exactly what the JSON says.
pub(crate) fn name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_owned(),
    }
}

/// A value for a `key=value` field: as is when it is one plain word, else quoted.
pub(crate) fn word(s: &str) -> Cow<'_, str> {
    if !s.is_empty()
        && s.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '\\')
    {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("{s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["ID", "AGENT", "STATE"],
            &[
                vec!["a".into(), "claude-code".into(), "active".into()],
                vec!["bbbb".into(), "x".into(), String::new()],
            ],
        );
        assert_eq!(
            t,
            "ID    AGENT        STATE\na     claude-code  active\nbbbb  x\n"
        );
    }

    #[test]
    fn fields_align_values() {
        let f = fields(&[("id", "1".into()), ("agent", "cli".into())]);
        assert_eq!(f, "id:    1\nagent: cli\n");
    }

    #[test]
    fn control_characters_cannot_forge_or_hide_lines() {
        let intent = "fix bug\nstate:       active\r\u{1b}[2Kapproved\u{202e}txt.exe\u{7}";
        let f = fields(&[("intent", intent.into()), ("agent", "cli".into())]);
        assert_eq!(f.lines().count(), 2, "{f}");
        assert!(!f.chars().any(|c| c.is_control() && c != '\n'), "{f:?}");
        assert!(f.contains(r"fix bug\nstate:"), "{f}");
        assert!(
            f.contains(r"\r\u{1b}[2Kapproved\u{202e}txt.exe\u{7}"),
            "{f}"
        );
        let t = table(&["ID", "AGENT"], &[vec!["a\nb".into(), "\u{9b}31m".into()]]);
        assert_eq!(t, "ID    AGENT\na\\nb  \\u{9b}31m\n");
        // Plain text, tabs aside, is left alone (and not copied).
        assert!(matches!(clean("héllo wörld"), Cow::Borrowed(_)));
        assert_eq!(clean("a\tb"), r"a\tb");
    }

    #[test]
    fn words_are_quoted_when_needed() {
        assert_eq!(word("curl"), "curl");
        assert_eq!(word("my tool"), "\"my tool\"");
        assert_eq!(word(""), "\"\"");
    }
}
