//! `leash suggest`: the grants that would have allowed everything a task was refused
//! (in audit mode: everything it would have been), as `leash run` flags, task YAML or
//! the API's JSON. Sorted and deduplicated, each with how often it was needed and by
//! which programs.

use std::{collections::BTreeMap, fmt::Write as _, process::ExitCode};

use leash::{
    client::Client,
    grants::remedy::GrantList,
    protocol::{Refusal, Refusals},
};

use super::output;

#[derive(Debug, clap::Args)]
pub(crate) struct SuggestArgs {
    /// The task (a `leash run --learn` or `--audit` run says its id).
    #[arg(long, value_name = "ID")]
    pub task: String,
    /// `flags` for `leash run`, `yaml` for `--grants FILE`, `json` as the API answers.
    #[arg(long, value_enum, default_value = "flags")]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Flags,
    Yaml,
    Json,
}

pub(crate) fn run(client: &Client, args: &SuggestArgs) -> anyhow::Result<ExitCode> {
    let r = super::block_on(client.suggestion(&args.task))??;
    let text = match args.format {
        Format::Flags => flags_text(&r),
        Format::Yaml => yaml_text(&r),
        Format::Json => serde_json::to_string_pretty(&r)? + "\n",
    };
    output::print(text.trim_end_matches('\n'))?;
    Ok(ExitCode::SUCCESS)
}

/// Each suggested grant once, in list order then by spec, with the refusals it covers.
fn grants(r: &Refusals) -> BTreeMap<(GrantList, String), Vec<&Refusal>> {
    let mut out: BTreeMap<(GrantList, String), Vec<&Refusal>> = BTreeMap::new();
    for refusal in &r.refusals {
        if let Some(g) = &refusal.grant
            && let Some(list) = GrantList::from_name(&g.list)
        {
            out.entry((list, g.spec.clone())).or_default().push(refusal);
        }
    }
    out
}

/// `3× by curl, sh (not_granted)`.
fn usage(covered: &[&Refusal]) -> String {
    let count: u64 = covered.iter().map(|r| r.count).sum();
    let mut by: Vec<&str> = covered
        .iter()
        .flat_map(|r| r.by.iter().map(String::as_str))
        .collect();
    by.sort_unstable();
    by.dedup();
    let mut reasons: Vec<&str> = covered.iter().map(|r| r.reason.as_str()).collect();
    reasons.sort_unstable();
    reasons.dedup();
    let by = if by.is_empty() {
        String::new()
    } else {
        format!(" by {}", by.join(", "))
    };
    format!("{count}×{by} ({})", reasons.join(", "))
}

/// What no grant covers, as comment lines.
fn notes(r: &Refusals) -> String {
    let mut out = String::new();
    for refusal in r.refusals.iter().filter(|r| r.grant.is_none()) {
        let note = refusal.note.as_deref().unwrap_or("no grant allows it");
        let _ = writeln!(
            out,
            "# not covered: {} {} ({}): {note}",
            refusal.kind, refusal.what, refusal.reason
        );
    }
    if r.dropped > 0 {
        let _ = writeln!(
            out,
            "# {} more refusals were not kept (see leash events --task {})",
            r.dropped, r.task
        );
    }
    out
}

/// A comment per grant, then the flags on one line, ready for `leash run`.
pub(crate) fn flags_text(r: &Refusals) -> String {
    let grants = grants(r);
    let mut out = String::new();
    for ((list, spec), covered) in &grants {
        let _ = writeln!(out, "# {} {spec}: {}", list.run_flag(), usage(covered));
    }
    out.push_str(&notes(r));
    let flags: Vec<String> = grants
        .keys()
        .map(|(list, spec)| format!("{} {}", list.run_flag(), output::word(spec)))
        .collect();
    out.push_str(&flags.join(" "));
    out.push('\n');
    out
}

/// Task YAML for `--grants FILE`.
fn yaml_text(r: &Refusals) -> String {
    let grants = grants(r);
    let mut out = format!("# the grants task {} needed (leash suggest)\n", r.task);
    for (key, lists) in [
        ("exec", &[GrantList::Exec][..]),
        ("connect", &[GrantList::Connect][..]),
        ("files", &[GrantList::Read, GrantList::Write][..]),
    ] {
        let entries: Vec<_> = grants
            .iter()
            .filter(|((l, _), _)| lists.contains(l))
            .collect();
        if entries.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{key}:");
        for ((list, spec), covered) in entries {
            let spec = match list {
                GrantList::Read => format!("read:{spec}"),
                GrantList::Write => format!("write:{spec}"),
                _ => spec.clone(),
            };
            let quoted = serde_json::to_string(&spec).unwrap_or(spec);
            let _ = writeln!(out, "  - {quoted}  # {}", usage(covered));
        }
    }
    out.push_str(&notes(r));
    out
}

#[cfg(test)]
mod tests {
    use leash::protocol::SuggestedGrant;

    use super::*;

    fn refusal(kind: &str, list: Option<&str>, spec: &str, count: u64, by: &str) -> Refusal {
        Refusal {
            verdict: "audited".into(),
            kind: kind.into(),
            what: spec.into(),
            reason: "not_granted".into(),
            count,
            grant: list.map(|l| SuggestedGrant {
                list: l.into(),
                spec: spec.into(),
            }),
            note: list.is_none().then(|| "not grantable".into()),
            by: vec![by.into()],
        }
    }

    fn sample() -> Refusals {
        Refusals {
            task: "00ab".into(),
            refusals: vec![
                refusal("connect", Some("connect"), "10.0.0.1:443/tcp", 2, "curl"),
                refusal("exec", Some("exec"), "/usr/bin/curl", 1, "sh"),
                refusal("exec", Some("exec"), "/usr/bin/curl", 1, "bash"),
                refusal("file", Some("read"), "/srv/in", 1, "cat"),
                refusal("tamper", None, "bpf", 1, "x"),
            ],
            dropped: 0,
            synced: true,
        }
    }

    #[test]
    fn flags_are_sorted_deduplicated_and_commented() {
        let text = flags_text(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.last().copied(),
            Some(
                "--allow-exec /usr/bin/curl --allow-connect 10.0.0.1:443/tcp --allow-read /srv/in"
            ),
            "{text}"
        );
        assert!(
            lines.contains(&"# --allow-exec /usr/bin/curl: 2× by bash, sh (not_granted)"),
            "{text}"
        );
        assert!(text.contains("# not covered: tamper bpf"), "{text}");
    }

    #[test]
    fn yaml_is_a_grants_file() {
        let text = yaml_text(&sample());
        assert!(
            text.contains("exec:\n  - \"/usr/bin/curl\"  # 2×")
                && text.contains("connect:\n  - \"10.0.0.1:443/tcp\"")
                && text.contains("files:\n  - \"read:/srv/in\""),
            "{text}"
        );
        let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(parsed["exec"][0], "/usr/bin/curl");
    }
}
