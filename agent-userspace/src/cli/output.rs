//! Printing helpers shared by the client commands: tables, JSON, `key=value` fields.

use std::{
    borrow::Cow,
    fmt::Write as _,
    io::{self, Write as _},
};

use serde::Serialize;

/// Writes `text` (plus a newline) to stdout. A closed pipe (`leash events | head`)
/// comes back as an `io::Error` that [`is_broken_pipe`] recognizes.
pub fn print(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Pretty JSON of an API object, for `--json`.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    print(&serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// True when `e` is stdout having been closed by its reader.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// Left-aligned columns separated by two spaces, no trailing blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
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

/// `key: value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let key = format!("{key}:");
        let _ = writeln!(out, "{}", format!("{key:<width$} {value}").trim_end());
    }
    out
}

/// The serde name of a unit enum value (`enforce`, `active`, ...), so the text output
/// says exactly what the JSON says.
pub fn name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_owned(),
    }
}

/// A value for a `key=value` field: as is when it is one plain word, else quoted.
pub fn word(s: &str) -> Cow<'_, str> {
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
    fn words_are_quoted_when_needed() {
        assert_eq!(word("curl"), "curl");
        assert_eq!(word("my tool"), "\"my tool\"");
        assert_eq!(word(""), "\"\"");
    }
}
