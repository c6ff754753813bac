use super::*;
use crate::cli::{Cli, Command};
use clap::Parser as _;
use leash::protocol::EndReason;
use std::path::Path;

fn spec(args: &[&str]) -> TaskSpec {
    match Cli::try_parse_from(["leash", "task", "create"].iter().chain(args))
        .unwrap()
        .command
    {
        Command::Task(TaskCommand::Create(c)) => c.spec,
        other => panic!("{other:?}"),
    }
}

#[test]
fn parses_task_commands() {
    let cli = Cli::try_parse_from(["leash", "task", "list", "--json"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::Task(TaskCommand::List(ListArgs {
            json: JsonFlag { json: true },
            ..
        }))
    ));
    let cli = Cli::try_parse_from([
        "leash", "task", "list", "--agent", "a", "--active", "--since", "1h", "--limit", "3",
    ])
    .unwrap();
    let Command::Task(TaskCommand::List(ListArgs { filter, .. })) = cli.command else {
        panic!("not a list");
    };
    assert_eq!(
        leash::protocol::TaskFilter::from(filter),
        leash::protocol::TaskFilter {
            agent: Some("a".into()),
            active: true,
            since: Some("1h".into()),
            limit: Some(3),
        }
    );
    assert!(Cli::try_parse_from(["leash", "task", "list", "--limit", "0"]).is_err());
    let cli = Cli::try_parse_from(["leash", "task", "show", "00ab"]).unwrap();
    assert!(
        matches!(cli.command, Command::Task(TaskCommand::Show { ref id, json: JsonFlag { json: false } }) if id == "00ab")
    );
    let cli = Cli::try_parse_from(["leash", "--socket", "/tmp/s", "task", "end", "00ab"]).unwrap();
    assert_eq!(cli.socket.as_deref(), Some(Path::new("/tmp/s")));
    assert!(matches!(cli.command, Command::Task(TaskCommand::End { ref id }) if id == "00ab"));
    assert!(Cli::try_parse_from(["leash", "task", "show"]).is_err());
    // --task and CMD belong to `leash run` only.
    assert!(Cli::try_parse_from(["leash", "task", "create", "--task", "00ab"]).is_err());
    assert!(Cli::try_parse_from(["leash", "task", "create", "--", "ls"]).is_err());
}

#[test]
fn create_flags_become_request() {
    let s = spec(&[
        "--agent",
        "claude",
        "--intent",
        "fix bug 12",
        "--allow-exec",
        "/usr/bin/git",
        "--allow-exec",
        "/opt/tools/",
        "--allow-connect",
        "10.0.0.0/8:443/tcp",
        "--ttl",
        "10m",
        "--audit",
        "--json",
    ]);
    let req = s.to_request().unwrap();
    assert_eq!(req.agent, "claude");
    assert_eq!(req.intent.as_deref(), Some("fix bug 12"));
    assert_eq!(req.grants.exec, ["/usr/bin/git", "/opt/tools/"]);
    assert_eq!(req.grants.connect, ["10.0.0.0/8:443/tcp"]);
    assert_eq!(req.ttl_seconds, Some(600));
    assert_eq!(req.mode, Some(Mode::Audit));
    let plain = spec(&[]).to_request().unwrap();
    assert_eq!(plain.mode, None);
    assert_eq!(plain.ttl_seconds, None);
    assert!(!plain.agent.is_empty());
}

#[test]
fn ttl_errors_name_the_flag() {
    for bad in ["soon", "10", "0s", "-5m"] {
        let err = Cli::try_parse_from(["leash", "task", "create", "--ttl", bad]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("--ttl"), "{bad}: {msg}");
        assert!(msg.contains(bad), "{bad}: {msg}");
    }
    assert_eq!(parse_ttl("90s"), Ok(90));
    assert_eq!(parse_ttl("1h"), Ok(3600));
    assert_eq!(parse_ttl("1h 30m"), Ok(5400));
    assert_eq!(parse_ttl("1500ms"), Ok(2));
}

#[test]
fn grants_file_merges_with_flags() {
    let dir = std::env::temp_dir().join(format!("leash-grants-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("grants.yaml");
    std::fs::write(
        &file,
        "# grants for the bug fix\nexec:\n  - /usr/bin/git\n  - /usr/bin/python3\nconnect:\n  - \"[::1]:5432\"\n",
    )
    .unwrap();
    let s = spec(&[
        "--grants",
        file.to_str().unwrap(),
        "--allow-exec",
        "/usr/bin/git",
        "--allow-exec",
        "/usr/bin/curl",
        "--allow-connect",
        "api.github.com:443",
    ]);
    let req = s.to_request().unwrap();
    assert_eq!(
        req.grants.exec,
        ["/usr/bin/git", "/usr/bin/python3", "/usr/bin/curl"]
    );
    assert_eq!(req.grants.connect, ["[::1]:5432", "api.github.com:443"]);

    std::fs::write(&file, "exec: [/bin/ls]\nconnect:\n").unwrap();
    let req = spec(&["--grants", file.to_str().unwrap()])
        .to_request()
        .unwrap();
    assert_eq!(req.grants.exec, ["/bin/ls"]);
    assert!(req.grants.connect.is_empty());

    std::fs::write(&file, "# nothing yet\n").unwrap();
    assert_eq!(
        read_grants_file(&file).unwrap(),
        grants_file::GrantsFile::default()
    );

    std::fs::write(&file, "exec: [/bin/ls]\nnetwork: [1.2.3.4:80]\n").unwrap();
    let err = format!("{:#}", read_grants_file(&file).unwrap_err());
    assert!(err.starts_with("bad --grants file"), "{err}");
    assert!(err.contains("network"), "{err}");

    // The mode and the grants in `files:`; the flag may repeat the mode, not contradict it.
    std::fs::write(&file, "files:\n  - restricted\n  - read:/srv/data\n").unwrap();
    let req = spec(&[
        "--grants",
        file.to_str().unwrap(),
        "--allow-write",
        "/srv/out",
    ])
    .to_request()
    .unwrap();
    assert_eq!(req.file_mode, Some(FileMode::Restricted));
    assert_eq!(req.grants.files, ["read:/srv/data", "write:/srv/out"]);
    let same = spec(&["--grants", file.to_str().unwrap(), "--files", "restricted"]);
    assert_eq!(
        same.to_request().unwrap().file_mode,
        Some(FileMode::Restricted)
    );
    let err = spec(&["--grants", file.to_str().unwrap(), "--files", "open"])
        .to_request()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--files open contradicts `files: restricted`"),
        "{err}"
    );
    std::fs::write(&file, "files: [read:/srv/data]\n").unwrap();
    let req = spec(&["--grants", file.to_str().unwrap(), "--files", "open"])
        .to_request()
        .unwrap();
    assert_eq!(req.file_mode, Some(FileMode::Open));
    std::fs::write(&file, "files: [restricted, write:srv]\n").unwrap();
    let err = format!("{:#}", read_grants_file(&file).unwrap_err());
    assert!(err.starts_with("bad --grants file"), "{err}");
    assert!(err.contains("\"write:srv\""), "{err}");

    let missing = dir.join("missing.yaml");
    let err = format!("{:#}", read_grants_file(&missing).unwrap_err());
    assert!(err.starts_with("cannot read --grants file"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn relative_exec_paths_become_absolute() {
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(absolute("/bin/ls"), "/bin/ls");
    assert_eq!(
        absolute("tools/run"),
        cwd.join("tools/run").display().to_string()
    );
    assert!(absolute("tools/").ends_with("/tools/"));
}

fn sample_task() -> Task {
    Task {
        id: "00000000000000ab".into(),
        agent: "cli".into(),
        spiffe_id: "spiffe://leash.local/agent/cli/task/00000000000000ab".into(),
        intent: Some("triage".into()),
        mode: Mode::Enforce,
        state: TaskState::Ended,
        end_when: EndWhen::CommandExits,
        end_reason: Some(EndReason::Expired),
        created_at: "2025-01-01T00:00:00Z".into(),
        expires_at: None,
        ended_at: Some("2025-01-01T00:10:00Z".into()),
        grants: vec![Grant {
            id: "g1".into(),
            kind: GrantKind::Exec,
            spec: "/usr/bin/git".into(),
            expires_at: None,
            pending_until: None,
            resolved: vec!["/usr/bin/git 8:1:42".into()],
            derived_from: Vec::new(),
        }],
        attached_pids: vec![41, 42],
        learned: Vec::new(),
        files: Some(leash::protocol::FileRules {
            read: vec!["/data".into()],
            ..leash::protocol::FileRules::default()
        }),
        file_enforcement: "writes: Landlock ABI 7".into(),
        parent: None,
        chain: Vec::new(),
        break_glass: None,
    }
}

#[test]
fn text_output() {
    let task = sample_task();
    let table = list_table(std::slice::from_ref(&task));
    let mut lines = table.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["ID", "AGENT", "STATE", "MODE", "GRANTS", "EXPIRES"]
    );
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        [
            "00000000000000ab",
            "cli",
            "ended(expired)",
            "enforce",
            "1",
            "-"
        ]
    );
    let show = show_text(&task);
    assert!(show.contains("state:"), "{show}");
    assert!(show.contains("ended(expired)"), "{show}");
    assert!(show.contains("attached_pids: 41 42"), "{show}");
    assert!(show.contains("end_when:      command_exits\n"), "{show}");
    assert!(show.contains("  g1   exec     /usr/bin/git\n"), "{show}");
    assert!(show.contains("-> /usr/bin/git 8:1:42"), "{show}");
    assert!(
        show.contains("files:         writes  read:/data\n"),
        "{show}"
    );
    assert!(
        show.contains("landlock:      writes: Landlock ABI 7\n"),
        "{show}"
    );
}

#[test]
fn a_bare_program_name_is_no_exec_grant() {
    let err = spec(&["--allow-exec", "sh"]).to_request().unwrap_err();
    let text = err.to_string();
    assert!(text.contains("did you mean --allow-exec /"), "{text}");
    assert!(text.ends_with("/sh?"), "{text}");
    let err = spec(&["--allow-exec", "leash-no-such-program"])
        .to_request()
        .unwrap_err();
    assert!(err.to_string().contains("nor a program"), "{err}");
    // Paths, relative ones included, are taken as paths.
    let req = spec(&["--allow-exec", "/usr/bin/env", "--allow-exec", "./x"])
        .to_request()
        .unwrap();
    assert_eq!(req.grants.exec[0], "/usr/bin/env");
    assert!(
        req.grants.exec[1].ends_with("/./x"),
        "{:?}",
        req.grants.exec
    );
}
