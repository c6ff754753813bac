//! `leash status`: what the daemon enforces with, and how full its maps are.

use std::{fmt::Write as _, process::ExitCode};

use leash::{client::Client, protocol::Status};

use super::output;

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// Print the status object as JSON.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn run(client: &Client, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let status = super::block_on(client.status())??;
    if args.json {
        output::print_json(&status)?;
    } else {
        output::print(&status_text(&status))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn status_text(s: &Status) -> String {
    let backend = if s.backend_reason.is_empty() {
        s.backend.clone()
    } else {
        format!("{} ({})", s.backend, s.backend_reason)
    };
    let mut text = output::fields(&[
        ("version", s.version.clone()),
        ("backend", backend),
        ("cgroup", s.cgroup.clone()),
        (
            "attach scope",
            format!("{} ({})", s.attach_scope, s.attach_scope_reason),
        ),
        ("kill at a cgroup move", s.kill_at_move.clone()),
        ("tasks active", s.tasks_active.to_string()),
        ("events lost", s.events_lost.to_string()),
        ("tag failures", s.tag_failures.to_string()),
        ("policy", s.policy.clone()),
        (
            "bpf stats",
            if s.bpf_stats_enabled {
                "on (program run time in /metrics)".to_owned()
            } else {
                "off (sysctl kernel.bpf_stats_enabled=1 to measure program run time)".to_owned()
            },
        ),
        ("ia32", format!("emulation {}", s.ia32_emulation)),
        ("landlock", s.landlock.clone()),
    ]);
    if let Some(scope) = &s.scope {
        let _ = writeln!(text, "scope: {scope}");
    }
    for g in &s.guarantees {
        let _ = writeln!(text, "guarantee: {}", output::clean(g));
    }
    let programs: Vec<Vec<String>> = s
        .programs
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                match (p.attached, p.applies) {
                    (true, _) => "yes".to_owned(),
                    (false, true) => "no".to_owned(),
                    (false, false) => format!("n/a (not the {} backend's)", s.backend),
                },
            ]
        })
        .collect();
    text.push('\n');
    text.push_str(&output::table(&["PROGRAM", "ATTACHED"], &programs));
    let maps: Vec<Vec<String>> = s
        .maps
        .iter()
        .map(|m| {
            let used = m
                .entries
                .saturating_mul(100)
                .checked_div(m.capacity)
                .map_or_else(|| "-".to_owned(), |p| format!("{p}%"));
            vec![
                m.name.clone(),
                m.entries.to_string(),
                m.capacity.to_string(),
                used,
            ]
        })
        .collect();
    text.push('\n');
    text.push_str(&output::table(
        &["MAP", "ENTRIES", "CAPACITY", "USED"],
        &maps,
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;
    use leash::protocol::{MapStatus, ProgramStatus};

    #[test]
    fn parses_status() {
        let cli = Cli::try_parse_from(["leash", "status", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Status(StatusArgs { json: true })
        ));
        let cli = Cli::try_parse_from(["leash", "status", "--socket", "/x.sock"]).unwrap();
        assert_eq!(cli.socket.as_deref(), Some(std::path::Path::new("/x.sock")));
    }

    #[test]
    fn formats_status() {
        let text = status_text(&Status {
            version: "0.1.0".into(),
            backend: "lsm".into(),
            backend_reason: "bpf is in the active LSMs".into(),
            attach_scope: "task".into(),
            attach_scope_reason: "auto: bpf_send_signal_task kills a process moved out at the move"
                .into(),
            kill_at_move: "kernel".into(),
            cgroup: "/sys/fs/cgroup".into(),
            programs: vec![
                ProgramStatus {
                    name: "leash_bprm_check".into(),
                    attached: true,
                    applies: true,
                },
                ProgramStatus {
                    name: "leash_sendmsg4".into(),
                    attached: false,
                    applies: true,
                },
                ProgramStatus {
                    name: "exec_sched_process_exec".into(),
                    attached: false,
                    applies: false,
                },
            ],
            maps: vec![MapStatus {
                name: "TASKS".into(),
                entries: 3,
                capacity: 1024,
            }],
            tasks_active: 3,
            events_lost: 0,
            tag_failures: 1,
            bpf_stats_enabled: false,
            guarantees: vec!["exec: EPERM".into()],
            policy: "policy /etc/leash/policy.yaml (2 rules)".into(),
            ia32_emulation: "disabled (ia32_emulation=0 on the kernel command line)".into(),
            landlock: "ABI 7".into(),
            scope: None,
        });
        // A `key: value` line, whatever the column width.
        let line = |key: &str, value: &str| {
            text.lines().any(|l| {
                l.strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with(value))
            })
        };
        assert!(
            line("policy:", "policy /etc/leash/policy.yaml (2 rules)"),
            "{text}"
        );
        assert!(
            line("backend:", "lsm (bpf is in the active LSMs)"),
            "{text}"
        );
        assert!(line("tag failures:", "1"), "{text}");
        assert!(
            line("ia32:", "emulation disabled (ia32_emulation=0"),
            "{text}"
        );
        assert!(text.contains("leash_bprm_check         yes\n"), "{text}");
        assert!(text.contains("leash_sendmsg4           no\n"), "{text}");
        assert!(
            text.contains("exec_sched_process_exec  n/a (not the lsm backend's)\n"),
            "{text}"
        );
        assert!(text.contains("TASKS  3        1024      0%\n"), "{text}");
    }
}
