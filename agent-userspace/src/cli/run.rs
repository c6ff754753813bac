//! `leash run`: create (or join) a task, have the daemon tag this process, exec the command.
//!
//! The daemon tags the process that connected to its socket (`SO_PEERCRED`), so the
//! attach request is made from the main thread of a single-threaded process, which then
//! `execve`s the command in place. The command inherits the tag, and so does the whole
//! tree below it; stdin/stdout/stderr, signals and the exit status pass through as if
//! leash were not there. A task created here ends when the command exits
//! (`end_when: command_exits`): the daemon watches this very process (which becomes the
//! command) through a pidfd, so the task ends even if `leash run` is killed before the
//! exec. A task joined with `--task` lives on (`leash task create` made it
//! `ended_or_expired`).
//!
//! Note: the command itself must be granted (`--allow-exec`), or the kernel stops the
//! very exec below. The same holds for a shebang script's interpreter. We warn when the
//! command is not among the exec grants of an enforcing task, but do not refuse: the
//! daemon resolves grants to files, and its view may differ from ours.

use std::{
    ffi::{CString, OsStr, OsString},
    io::IsTerminal as _,
    os::unix::ffi::{OsStrExt as _, OsStringExt as _},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use leash::{
    client::Client,
    protocol::{EndWhen, GrantKind, Mode, Refusals, Task},
};
use nix::{
    errno::Errno,
    sys::signal::{SigHandler, Signal, signal},
};

use super::{
    run_command::{
        EXIT_CANNOT_EXEC, EXIT_NOT_FOUND, is_granted, resolve_command, ungranted_interpreter,
    },
    run_report::Reporter,
    task::TaskSpec,
};

/// Environment variable that tells the command which task it runs in.
const TASK_ENV: &str = "LEASH_TASK";

#[derive(Debug, clap::Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "command-line switches, each independent"
)]
#[command(override_usage = "leash run [OPTIONS] [--task ID] -- CMD [ARG]...")]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub spec: TaskSpec,
    /// Join this existing task instead of creating one: a task from `leash task create`
    /// lives until its TTL or `leash task end`, so CMD's exit does not end it and it can
    /// be joined any number of times (change its grants with `leash grant`).
    #[arg(
        long,
        value_name = "ID",
        conflicts_with_all = [
            "intent", "allow_exec", "allow_connect", "allow_read", "allow_write", "files", "profile",
            "grants", "ttl", "audit", "learn", "delegate", "break_glass", "justification"
        ]
    )]
    pub task: Option<String>,
    /// The directory the task may write (in the writes and restricted file modes)
    /// [default: the current directory]. `/`, system directories and the home
    /// directory itself are refused.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Print the task's id (and whether it was created or joined) on stderr.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// When the command exits, print on stderr each distinct action the task was
    /// refused, with the grant that allows it, and a notice if its TTL ran out
    /// [default: when stdin and stderr are a terminal, i.e. run by hand].
    #[arg(long, conflicts_with = "quiet")]
    pub report: bool,
    /// Learn the grants CMD needs: run it in a new task in audit mode (nothing is
    /// refused, every decision is recorded) and print, when it exits, the grants that
    /// cover what it did (`leash suggest` prints them again).
    #[arg(long)]
    pub learn: bool,
    /// No denial report, even on a terminal.
    #[arg(long, short = 'q', conflicts_with = "learn")]
    pub quiet: bool,
    /// The command and its arguments (after `--`).
    #[arg(
        value_name = "CMD",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<OsString>,
}

pub(crate) fn run(client: &Client, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let cmd = &args.command[0];
    let path = match resolve_command(cmd, std::env::var_os("PATH").as_deref()) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("leash: {e}");
            return Ok(ExitCode::from(e.exit_code()));
        }
    };
    // Built before the task exists, so that nothing can fail between attach and exec
    // except the exec itself.
    let c_args = args
        .command
        .iter()
        .map(|a| cstring(a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let c_path = cstring(path.as_os_str())?;

    // Forked first, while this process is single-threaded and in no task.
    // Someone at a terminal: not a program reading the output, nor a test harness.
    let on_terminal =
        !args.quiet && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let mut reporter = if args.report || args.learn || on_terminal {
        Reporter::start(client)
            .inspect_err(|e| eprintln!("leash: warning: no denial report for this run: {e}"))
            .ok()
    } else {
        None
    };

    // A current-thread runtime: no worker threads, so the process the daemon tags is the
    // one that execs, and nothing else is running when it does.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (task, created) = runtime.block_on(find_task(client, args, &path))?;
    // The file rules' domain is built before the process joins the task ...
    let sandbox = match super::sandbox::prepare(&task, args.workspace.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            if created {
                // Nothing joined the task: do not leave it waiting for its TTL.
                let _ = runtime.block_on(client.end_task(&task.id));
            }
            return Err(e);
        }
    };
    // A joined task's refusals so far are not this run's.
    let before = match (&reporter, created) {
        (Some(_), false) => runtime
            .block_on(client.suggestion(&task.id))
            .unwrap_or_default(),
        _ => Refusals::default(),
    };
    runtime.block_on(join_task(client, &task, created))?;
    if let Some(r) = &mut reporter {
        r.send(&task, created, before, args.learn);
    }
    drop(runtime);
    if args.verbose {
        eprintln!(
            "leash: task {} ({} agent {}; leash events --task {})",
            task.id,
            if created { "created for" } else { "joined," },
            task.agent,
            task.id
        );
    }

    let envp = environment(&task.id, sandbox.tmpdir.as_deref(), client.socket())?;
    // Tagged from here on: no compat system call may run in this tree.
    if let Err(e) = super::compat_filter::install() {
        tracing::debug!(error = %e, "no compat seccomp filter; the kernel guard alone stops compat calls");
    }
    // Rust's runtime ignores SIGPIPE, and an ignored signal stays ignored across exec:
    // give the command the default disposition, as a shell would.
    // SAFETY: single-threaded here, and SIG_DFL installs no handler code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    // ... and applied last: single-threaded, so the whole process is in it.
    if let Err(e) = sandbox.enforce() {
        eprintln!("leash: cannot run {}: {e}", path.display());
        return Ok(ExitCode::from(EXIT_CANNOT_EXEC));
    }
    let Err(errno) = nix::unistd::execve(&c_path, &c_args, &envp);
    let hint = match errno {
        Errno::EPERM | Errno::EACCES => {
            " (is it in the task's exec grants? add --allow-exec with its path; in --files restricted it must be readable too)"
        }
        _ => "",
    };
    eprintln!(
        "leash: cannot run {}: {}{hint}",
        path.display(),
        errno.desc()
    );
    Ok(ExitCode::from(if errno == Errno::ENOENT {
        EXIT_NOT_FOUND
    } else {
        EXIT_CANNOT_EXEC
    }))
}

/// Creates the task (or looks up `--task`) and warns about an ungranted command.
/// Returns the task and whether it was created here.
async fn find_task(client: &Client, args: &RunArgs, cmd: &Path) -> anyhow::Result<(Task, bool)> {
    let (task, created) = if let Some(id) = &args.task {
        (client.get_task(id).await?, false)
    } else {
        let mut req = args.spec.to_request()?;
        req.end_when = Some(EndWhen::CommandExits);
        if args.learn {
            // Nothing refused, everything recorded: the report is the grant list.
            req.mode = Some(Mode::Audit);
            req.intent
                .get_or_insert_with(|| "learning the grants it needs (leash run --learn)".into());
        }
        (client.create_task(&req).await?, true)
    };
    for tree in task
        .grants
        .iter()
        .filter(|g| g.kind == GrantKind::Exec && g.spec.ends_with("/**"))
    {
        eprintln!(
            "leash: warning: the task may run any file below {} (--allow-exec {}), \
             including what it writes there",
            tree.spec.trim_end_matches("/**"),
            tree.spec,
        );
    }
    // In audit mode the kernel logs the exec as `audited` and lets it run.
    if task.mode == Mode::Enforce && !is_granted(cmd, &task) {
        // A joined task takes no grant flags: its grants change with `leash grant`.
        let fix = if created {
            format!("add --allow-exec {}", cmd.display())
        } else {
            format!("leash grant add {} --exec {}", task.id, cmd.display())
        };
        eprintln!(
            "leash: warning: {} is not in the task's exec grants; the kernel will stop it \
             ({fix})",
            cmd.display(),
        );
    }
    if task.mode == Mode::Enforce
        && let Some(interp) = ungranted_interpreter(cmd, &task)
    {
        let fix = if created {
            format!("add --allow-exec {}", interp.display())
        } else {
            format!("leash grant add {} --exec {}", task.id, interp.display())
        };
        eprintln!(
            "leash: warning: {} is a script run by {}, which is not in the task's exec \
             grants; the kernel will stop it ({fix})",
            cmd.display(),
            interp.display(),
        );
    }
    Ok((task, created))
}

/// Attaches this process to the task; a task created here is ended when that fails.
async fn join_task(client: &Client, task: &Task, created: bool) -> anyhow::Result<()> {
    if let Err(e) = client.attach(&task.id).await {
        if created {
            // Nothing joined the task: do not leave it waiting for its TTL.
            let _ = client.end_task(&task.id).await;
        }
        return Err(anyhow::Error::new(e).context(format!("cannot join task {}", task.id)));
    }
    Ok(())
}

fn cstring(s: &OsStr) -> anyhow::Result<CString> {
    CString::new(s.as_bytes())
        .with_context(|| format!("argument {} contains a NUL byte", s.to_string_lossy()))
}

/// This process's environment with `LEASH_TASK` set to the task id, and `TMPDIR` to the
/// task's tmp directory when it has one.
/// The Workload API's endpoint variable, which SPIFFE client libraries read.
const SPIFFE_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";

/// The command's environment: the task's id, its private TMPDIR, and (unless one is set
/// already) the daemon's socket as the SPIFFE Workload API endpoint.
fn environment(
    task_id: &str,
    tmpdir: Option<&Path>,
    socket: &Path,
) -> anyhow::Result<Vec<CString>> {
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != TASK_ENV && !(tmpdir.is_some() && k == "TMPDIR"))
        .filter_map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    env.push(CString::new(format!("{TASK_ENV}={task_id}")).context("bad task id")?);
    if let Some(dir) = tmpdir {
        let mut kv = b"TMPDIR=".to_vec();
        kv.extend_from_slice(dir.as_os_str().as_bytes());
        env.push(CString::new(kv).context("bad tmp directory")?);
    }
    if std::env::var_os(SPIFFE_ENV).is_none() {
        let socket = std::path::absolute(socket).unwrap_or_else(|_| socket.to_owned());
        let mut kv = format!("{SPIFFE_ENV}=unix:").into_bytes();
        kv.extend_from_slice(socket.as_os_str().as_bytes());
        env.push(CString::new(kv).context("bad socket path")?);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    fn parse(args: &[&str]) -> RunArgs {
        match Cli::try_parse_from(["leash", "run"].iter().chain(args))
            .unwrap()
            .command
        {
            Command::Run(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_run() {
        let r = parse(&[
            "--agent",
            "claude",
            "--allow-exec",
            "/usr/bin/curl",
            "--allow-connect",
            "127.0.0.1:8080",
            "--ttl",
            "90s",
            "--",
            "curl",
            "-s",
            "--audit",
            "http://127.0.0.1:8080/",
        ]);
        assert_eq!(r.spec.agent.as_deref(), Some("claude"));
        assert!(!r.spec.audit, "--audit after CMD belongs to CMD");
        assert_eq!(r.spec.ttl, Some(90));
        assert_eq!(r.task, None);
        assert_eq!(
            r.command,
            ["curl", "-s", "--audit", "http://127.0.0.1:8080/"]
        );

        let r = parse(&["--task", "00ab", "ls", "-l"]);
        assert_eq!(r.task.as_deref(), Some("00ab"));
        assert_eq!(r.command, ["ls", "-l"]);
        // Joining a task cannot change its grants.
        let err = Cli::try_parse_from([
            "leash",
            "run",
            "--task",
            "00ab",
            "--allow-exec",
            "/bin/ls",
            "ls",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--allow-exec") && err.contains("--task"),
            "{err}"
        );

        // File grants and mode; relative paths are made absolute against the cwd.
        let r = parse(&[
            "--files",
            "restricted",
            "--allow-read",
            "/srv/data",
            "--allow-write",
            "out",
            "--workspace",
            "/srv/ws",
            "--",
            "ls",
        ]);
        let req = r.spec.to_request().unwrap();
        assert_eq!(req.file_mode, Some(leash::protocol::FileMode::Restricted));
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            req.grants.files,
            [
                "read:/srv/data".to_owned(),
                format!("write:{}", cwd.join("out").display())
            ]
        );
        assert_eq!(r.workspace.as_deref(), Some(Path::new("/srv/ws")));
        assert_eq!(parse(&["ls"]).spec.to_request().unwrap().file_mode, None);
        assert!(Cli::try_parse_from(["leash", "run", "--files", "all", "--", "ls"]).is_err());
        assert!(
            Cli::try_parse_from(["leash", "run", "--task", "00ab", "--files", "open", "ls"])
                .is_err(),
            "joining a task cannot change its file rules"
        );

        let r = parse(&["--", "--weird-name"]);
        assert_eq!(r.command, ["--weird-name"]);

        assert!(Cli::try_parse_from(["leash", "run"]).is_err());
        assert!(Cli::try_parse_from(["leash", "run", "--allow-exec", "/bin/ls", "--"]).is_err());
        let err = Cli::try_parse_from(["leash", "run", "--ttl", "forever", "--", "ls"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--ttl"), "{err}");
    }

    #[test]
    fn environment_sets_task() {
        let env = environment(
            "00ab",
            Some(Path::new("/tmp/leash-00ab-1")),
            Path::new("/run/leash/leash.sock"),
        )
        .unwrap();
        if std::env::var_os(SPIFFE_ENV).is_none() {
            assert!(
                env.iter()
                    .any(|kv| kv.as_bytes() == b"SPIFFE_ENDPOINT_SOCKET=unix:/run/leash/leash.sock")
            );
        }
        assert!(
            env.iter()
                .any(|kv| kv.as_bytes() == b"TMPDIR=/tmp/leash-00ab-1")
        );
        assert_eq!(
            env.iter()
                .filter(|kv| kv.as_bytes().starts_with(b"TMPDIR="))
                .count(),
            1
        );
        let task_vars: Vec<_> = env
            .iter()
            .filter(|kv| kv.as_bytes().starts_with(b"LEASH_TASK="))
            .collect();
        assert_eq!(task_vars.len(), 1);
        assert_eq!(task_vars[0].as_bytes(), b"LEASH_TASK=00ab");
    }
}
