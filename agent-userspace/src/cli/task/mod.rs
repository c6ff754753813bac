//! `leash task create|list|show|end`, and the task flags shared with `leash run`.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use leash::{
    client::Client,
    protocol::{CreateTask, EndWhen, FileMode, Grant, GrantKind, Grants, Mode, Task, TaskState},
};

use super::output;

pub(crate) mod grants_file;
mod tree;
pub(crate) use grants_file::read_grants_file;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TaskCommand {
    /// Create a task and print its id.
    ///
    /// It lives until its TTL, `leash task end` or revocation, whatever its processes
    /// do (`end_when: ended_or_expired`): join it any number of times with
    /// `leash run --task ID`.
    Create(CreateArgs),
    /// List the tasks, newest first.
    List(ListArgs),
    /// Show one task and its grants.
    Show {
        /// Task id.
        id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// End a task now: its processes lose every grant.
    End {
        /// Task id.
        id: String,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct JsonFlag {
    /// Print JSON (the API's objects) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    #[command(flatten)]
    pub spec: TaskSpec,
    /// When the task ends on its own: `ended_or_expired` (only by its TTL, `leash task
    /// end` or revocation) or `command_exits` (when the first process that joins it
    /// exits; no other may join).
    #[arg(
        long,
        value_name = "WHEN",
        value_enum,
        default_value = "ended_or_expired"
    )]
    pub end_when: EndWhenArg,
    /// Print the task object as JSON instead of its id.
    #[arg(long)]
    pub json: bool,
}

/// `--end-when`, with the API's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EndWhenArg {
    #[value(name = "ended_or_expired")]
    EndedOrExpired,
    #[value(name = "command_exits")]
    CommandExits,
}

impl From<EndWhenArg> for EndWhen {
    fn from(a: EndWhenArg) -> Self {
        match a {
            EndWhenArg::EndedOrExpired => Self::EndedOrExpired,
            EndWhenArg::CommandExits => Self::CommandExits,
        }
    }
}

/// `--files`, with the API's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FileModeArg {
    Open,
    Writes,
    Restricted,
}

impl From<FileModeArg> for FileMode {
    fn from(a: FileModeArg) -> Self {
        match a {
            FileModeArg::Open => Self::Open,
            FileModeArg::Writes => Self::Writes,
            FileModeArg::Restricted => Self::Restricted,
        }
    }
}

/// What a new task is: agent, intent, grants, TTL and mode (`leash task create`, `leash run`).
#[derive(Debug, clap::Args)]
pub(crate) struct TaskSpec {
    /// Agent name, part of the task's identity and of every event [default: cli; with
    /// --delegate, the parent task's].
    #[arg(long, value_name = "NAME", env = "LEASH_AGENT")]
    pub agent: Option<String>,
    /// What the task is for (free text, logged with every event).
    #[arg(long, value_name = "TEXT")]
    pub intent: Option<String>,
    /// Allow executing this file (absolute path; `DIR/` allows every file directly inside;
    /// `DIR/**` any file below DIR, also those written later).
    #[arg(long = "allow-exec", value_name = "PATH")]
    pub allow_exec: Vec<String>,
    /// Allow connecting to ADDR[/PREFIX]:PORTS[/PROTO], e.g. 10.0.0.0/8:443/tcp or api.github.com:443.
    #[arg(long = "allow-connect", value_name = "SPEC")]
    pub allow_connect: Vec<String>,
    /// Allow reading PATH and everything beneath it (in `--files restricted`).
    #[arg(long = "allow-read", value_name = "PATH")]
    pub allow_read: Vec<String>,
    /// Allow writing (and reading) PATH and everything beneath it.
    #[arg(long = "allow-write", value_name = "PATH")]
    pub allow_write: Vec<String>,
    /// File mode: open (no file rules), writes (reads open, writes only to the
    /// workspace, the task's tmp directory and write grants) or restricted (reads too
    /// limited to a base set and read grants) [default: writes].
    #[arg(long, value_name = "MODE", value_enum)]
    pub files: Option<FileModeArg>,
    /// Add the grants of a named profile (`leash profile list`): the tool's programs
    /// where this machine has them. Repeatable.
    #[arg(long = "profile", value_name = "NAME")]
    pub profile: Vec<String>,
    /// YAML file with `exec:`, `connect:` and `files:` lists, merged with the flags;
    /// `files:` may also name the file mode (`files: restricted`, or `restricted` as
    /// an entry of the list).
    #[arg(long, value_name = "FILE")]
    pub grants: Option<PathBuf>,
    /// Lifetime of the task, e.g. 90s, 10m, 1h [default: the daemon's].
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl, allow_hyphen_values = true)]
    pub ttl: Option<u64>,
    /// Log decisions as `audited` but allow them (dry run).
    #[arg(long)]
    pub audit: bool,
    /// From inside a task: create a child task of it (a sub-agent's), which may hold
    /// only what the parent holds, for no longer (docs/identity.md).
    #[arg(long)]
    pub delegate: bool,
    /// An emergency task outside the node policy's ceilings (approvers of the agent's
    /// rule only; its grants are still enforced, its TTL capped, and it is logged as
    /// `break_glass`). Needs --justification.
    #[arg(long, requires = "justification", conflicts_with = "delegate")]
    pub break_glass: bool,
    /// Why the emergency (with --break-glass): in the task and its records.
    #[arg(long, value_name = "TEXT", requires = "break_glass")]
    pub justification: Option<String>,
}

impl TaskSpec {
    /// The `POST /v1/tasks` body: the grants file first, then the profiles and the flags,
    /// without repeats.
    pub(crate) fn to_request(&self) -> anyhow::Result<CreateTask> {
        let (mut grants, file_mode) = match &self.grants {
            Some(file) => {
                let read = read_grants_file(file)?;
                let flag = self.files.map(FileMode::from);
                if let (Some(flag), Some(written)) = (flag, read.file_mode)
                    && flag != written
                {
                    anyhow::bail!(
                        "--files {flag} contradicts `files: {written}` in --grants file {}; keep one",
                        file.display()
                    );
                }
                (read.grants, flag.or(read.file_mode))
            }
            None => (Grants::default(), self.files.map(FileMode::from)),
        };
        for name in &self.profile {
            let p = super::profile::grants_here(&super::profile::load(name)?);
            grants.exec.extend(p.exec);
            grants.connect.extend(p.connect);
            grants.files.extend(p.files);
        }
        for p in &self.allow_exec {
            grants.exec.push(exec_flag(p)?);
        }
        grants.connect.extend(self.allow_connect.iter().cloned());
        grants.files.extend(
            self.allow_read
                .iter()
                .map(|p| format!("read:{}", absolute(p)))
                .chain(
                    self.allow_write
                        .iter()
                        .map(|p| format!("write:{}", absolute(p))),
                ),
        );
        dedup(&mut grants.exec);
        dedup(&mut grants.connect);
        dedup(&mut grants.files);
        let agent = match (&self.agent, self.delegate) {
            (Some(a), _) => a.clone(),
            // The daemon gives a child its parent's agent.
            (None, true) => String::new(),
            (None, false) => "cli".to_owned(),
        };
        Ok(CreateTask {
            agent,
            intent: self.intent.clone(),
            grants,
            ttl_seconds: self.ttl,
            mode: self.audit.then_some(Mode::Audit),
            end_when: None,
            file_mode,
            delegate: self.delegate,
            break_glass: self
                .justification
                .clone()
                .filter(|_| self.break_glass)
                .map(|justification| leash::protocol::BreakGlass { justification }),
        })
    }
}

/// Parses a DURATION flag (`90s`, `10m`, `1h`, `1h 30m`) into whole seconds, rounding up.
pub(crate) fn parse_ttl(s: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e}; expected a duration like 90s, 10m or 1h"))?;
    if d.is_zero() {
        return Err("a duration must be longer than zero".to_owned());
    }
    Ok(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// An `--allow-exec` value made absolute; a bare name (`curl`) that is no file here is
/// an error that names the program `$PATH` finds, rather than a grant of a path that
/// does not exist.
fn exec_flag(p: &str) -> anyhow::Result<String> {
    if !p.contains('/') && !Path::new(p).exists() {
        let path_var = std::env::var_os("PATH");
        return Err(
            match super::run_command::resolve_command(p.as_ref(), path_var.as_deref()) {
                Ok(found) => anyhow::anyhow!(
                    "--allow-exec {p}: there is no file {p} in this directory; exec grants are \
                 paths: did you mean --allow-exec {}?",
                    found.display()
                ),
                Err(_) => anyhow::anyhow!(
                    "--allow-exec {p}: there is no file {p} in this directory, nor a program \
                 {p} on $PATH; exec grants are absolute paths"
                ),
            },
        );
    }
    Ok(absolute(p))
}

/// Makes a relative exec path absolute against the current directory: the daemon
/// resolves paths in its own working directory, not ours. Keeps a trailing `/`.
pub(crate) fn absolute(path: &str) -> String {
    if path.starts_with('/') {
        return path.to_owned();
    }
    match std::env::current_dir() {
        Ok(cwd) => {
            let joined = cwd.join(path).display().to_string();
            if path.ends_with('/') && !joined.ends_with('/') {
                joined + "/"
            } else {
                joined
            }
        }
        Err(_) => path.to_owned(),
    }
}

fn dedup(items: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    items.retain(|i| seen.insert(i.clone()));
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    filter: ListFilter,
    /// Show delegated tasks under their parents.
    #[arg(long, conflicts_with = "json")]
    tree: bool,
    #[command(flatten)]
    json: JsonFlag,
}

#[derive(Debug, clap::Args)]
struct ListFilter {
    /// Only this agent's tasks.
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// Only tasks that have not ended.
    #[arg(long)]
    active: bool,
    /// Only tasks created at or after this time: RFC 3339, or a duration back from now
    /// (10m, 2h).
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// At most N tasks (the newest).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
}

impl From<ListFilter> for leash::protocol::TaskFilter {
    fn from(f: ListFilter) -> Self {
        Self {
            agent: f.agent,
            active: f.active,
            since: f.since,
            limit: f.limit.and_then(|n| usize::try_from(n).ok()),
        }
    }
}

pub(crate) fn run(client: &Client, cmd: TaskCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TaskCommand::Create(args) => {
            let mut req = args.spec.to_request()?;
            req.end_when = Some(args.end_when.into());
            let task = super::block_on(client.create_task(&req))??;
            if args.json {
                output::print_json(&task)?;
            } else {
                output::print(&task.id)?;
            }
        }
        TaskCommand::List(ListArgs {
            filter,
            tree,
            json: JsonFlag { json },
        }) => {
            let tasks = super::block_on(client.list_tasks(&filter.into()))??;
            if json {
                output::print_json(&tasks)?;
            } else if tree {
                output::print(&tree::tree_text(&tasks))?;
            } else {
                output::print(&list_table(&tasks))?;
            }
        }
        TaskCommand::Show {
            id,
            json: JsonFlag { json },
        } => {
            let task = super::block_on(client.get_task(&id))??;
            if json {
                output::print_json(&task)?;
            } else {
                output::print(&show_text(&task))?;
            }
        }
        TaskCommand::End { id } => {
            let task = super::block_on(client.end_task(&id))??;
            output::print(&format!("ended {}", task.id))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ended(expired)` for an ended task, else the state's name.
pub(super) fn state_text(task: &Task) -> String {
    match (task.state, task.end_reason) {
        (TaskState::Ended, Some(reason)) => format!("ended({})", output::name(&reason)),
        (state, _) => output::name(&state),
    }
}

pub(super) fn list_table(tasks: &[Task]) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.agent.clone(),
                state_text(t),
                output::name(&t.mode),
                t.grants.len().to_string(),
                t.expires_at.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    output::table(
        &["ID", "AGENT", "STATE", "MODE", "GRANTS", "EXPIRES"],
        &rows,
    )
}

fn show_text(task: &Task) -> String {
    let mut pairs = vec![
        ("id", task.id.clone()),
        ("agent", task.agent.clone()),
        ("spiffe_id", task.spiffe_id.clone()),
    ];
    if let Some(bg) = &task.break_glass {
        pairs.push((
            "break_glass",
            format!("by {}: {}", bg.approver, bg.justification),
        ));
    }
    if !task.chain.is_empty() {
        pairs.push(("parent", task.parent.clone().unwrap_or_default()));
        pairs.push(("chain", task.chain.join(" > ")));
    }
    if let Some(intent) = &task.intent {
        pairs.push(("intent", intent.clone()));
    }
    pairs.push(("mode", output::name(&task.mode)));
    pairs.push(("state", state_text(task)));
    pairs.push(("end_when", output::name(&task.end_when)));
    pairs.push(("created_at", task.created_at.clone()));
    pairs.push((
        "expires_at",
        task.expires_at
            .clone()
            .unwrap_or_else(|| "never".to_owned()),
    ));
    if let Some(ended) = &task.ended_at {
        pairs.push(("ended_at", ended.clone()));
    }
    let pids: Vec<String> = task.attached_pids.iter().map(u32::to_string).collect();
    pairs.push((
        "attached_pids",
        if pids.is_empty() {
            "-".to_owned()
        } else {
            pids.join(" ")
        },
    ));
    pairs.push(("files", files_text(task)));
    if !task.file_enforcement.is_empty() {
        pairs.push(("landlock", task.file_enforcement.clone()));
    }
    pairs.push(("grants", task.grants.len().to_string()));
    let mut text = output::fields(&pairs);
    for grant in &task.grants {
        text.push_str(&grant_text(grant));
    }
    for l in &task.learned {
        let _ = writeln!(
            text,
            "  learned {}{} (from {}) until {}",
            l.address, l.ports, l.name, l.expires_at
        );
    }
    text
}

/// `writes  read:/data write:/srv/out`: the file mode and the file grants.
fn files_text(task: &Task) -> String {
    let Some(files) = &task.files else {
        return "open (a task from before file rules)".to_owned();
    };
    let mut text = files.mode.to_string();
    for (kind, paths) in [("read", &files.read), ("write", &files.write)] {
        for p in paths {
            text.push_str("  ");
            text.push_str(kind);
            text.push(':');
            text.push_str(p);
        }
    }
    text
}

/// `  g1  exec     /usr/bin/git  expires_at=...` then one indented line per resolved entry.
fn grant_text(grant: &Grant) -> String {
    let kind = match grant.kind {
        GrantKind::Exec => "exec",
        GrantKind::Connect => "connect",
    };
    let mut line = format!(
        "  {:<4} {kind:<8} {}",
        output::clean(&grant.id),
        output::clean(&grant.spec)
    );
    if let Some(expires) = &grant.expires_at {
        line.push_str("  expires_at=");
        line.push_str(&output::clean(expires));
    }
    if !grant.derived_from.is_empty() {
        line.push_str("  derived_from=");
        line.push_str(&output::clean(&grant.derived_from.join(",")));
    }
    if let Some(until) = &grant.pending_until {
        line.push_str("  PENDING approval until ");
        line.push_str(&output::clean(until));
    }
    line.push('\n');
    for resolved in &grant.resolved {
        line.push_str("         -> ");
        line.push_str(&output::clean(resolved));
        line.push('\n');
    }
    line
}

#[cfg(test)]
mod tests;
