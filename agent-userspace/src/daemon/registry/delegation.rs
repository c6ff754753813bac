//! Delegation: a child task holds at most what its parent holds, for no longer
//! (docs/identity.md). Every check runs under the registry's lock, against the
//! parent's grants as they are when the child or its grant is made.

use super::{GrantRecord, RegistryError, TaskRecord, Tasks, min_expiry, records::wall_of_boot_ns};
use crate::{
    clock,
    files::within::{file_within, mode_within},
    grants::{ConnectSpec, within::connect_within},
    protocol::{self, FileMode, GrantKind, Mode, TaskId},
};

/// Where a new task comes from: a parent (delegation), an emergency (break-glass), or
/// neither.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub delegation: Option<Delegation>,
    pub break_glass: Option<protocol::BreakGlassInfo>,
}

/// A new task's place under its parent.
#[derive(Clone, Copy, Debug)]
pub struct Delegation {
    pub parent: u64,
    /// The caller asked for a TTL (else the default is cut to the parent's).
    pub ttl_asked: bool,
}

/// Live delegated tasks below one root task, at most.
pub(super) const MAX_DESCENDANTS: usize = 256;

/// The code of every refusal for exceeding the parent.
pub const EXCEEDS_PARENT: &str = "exceeds_parent";

fn exceeds(message: String) -> RegistryError {
    RegistryError::Refused {
        code: EXCEEDS_PARENT,
        message,
    }
}

impl Tasks {
    /// The parent of a child about to be made: live, unexpired, and not at the depth
    /// limit (`tasks.max_delegation_depth`).
    pub(super) fn delegator(
        &self,
        parent: u64,
        max_depth: u32,
    ) -> Result<&TaskRecord, RegistryError> {
        let p = self
            .get(parent)
            .ok_or_else(|| RegistryError::NoTask(TaskId(parent).to_string()))?;
        if !p.is_live() || (p.expires_ns != 0 && clock::boottime_ns() >= p.expires_ns) {
            return Err(RegistryError::Ended(p.id_string()));
        }
        if max_depth == 0 {
            return Err(exceeds(
                "delegation is off on this node (tasks.max_delegation_depth is 0)".into(),
            ));
        }
        let depth = p.chain.len() + 1;
        if depth > max_depth as usize {
            return Err(exceeds(format!(
                "task {} is a delegated task {} levels deep, and tasks.max_delegation_depth is {max_depth}: a child of it would be {} deep",
                p.id_string(),
                depth - 1,
                depth
            )));
        }
        // Every delegated task takes a kernel task entry: a task may not exhaust the
        // node's by delegating.
        let root = p.chain.first().copied().unwrap_or(parent);
        let live = self
            .tasks
            .values()
            .filter(|t| t.is_live() && t.chain.contains(&root))
            .count();
        if live >= MAX_DESCENDANTS {
            return Err(exceeds(format!(
                "task {} already has {live} live delegated tasks below it, the most a task may have",
                TaskId(root)
            )));
        }
        Ok(p)
    }

    /// The live tasks `id` delegated to directly.
    #[must_use]
    pub fn children_of(&self, id: u64) -> Vec<u64> {
        self.tasks
            .values()
            .filter(|t| t.chain.last() == Some(&id) && t.is_live())
            .map(|t| t.id)
            .collect()
    }

    /// Live children whose parent is no longer live.
    #[must_use]
    pub fn orphans(&self) -> Vec<u64> {
        self.tasks
            .values()
            .filter(|t| t.is_live())
            .filter(|t| {
                t.chain
                    .last()
                    .is_some_and(|p| self.get(*p).is_none_or(|p| !p.is_live()))
            })
            .map(|t| t.id)
            .collect()
    }

    /// Whether `id` descends from `ancestor` (a task is not its own descendant).
    #[must_use]
    pub fn descends_from(&self, id: u64, ancestor: u64) -> bool {
        self.get(id).is_some_and(|t| t.chain.contains(&ancestor))
    }

    /// The grants of `parent`'s children derived from its grant `gid`.
    #[must_use]
    pub fn derived_from(&self, parent: u64, gid: &str) -> Vec<(u64, String)> {
        self.tasks
            .values()
            .filter(|t| t.chain.last() == Some(&parent) && t.is_live())
            .flat_map(|t| {
                t.grants
                    .iter()
                    .filter(|g| g.derived_from.iter().any(|d| d == gid))
                    .map(|g| (t.id, g.id.clone()))
            })
            .collect()
    }
}

/// A child's kernel expiry: never after its parent's. With no TTL asked for, the
/// default shortened to the parent's; a TTL asked for beyond it is refused.
pub(super) fn bound_expiry(
    parent: &TaskRecord,
    asked: bool,
    expires_ns: u64,
) -> Result<u64, RegistryError> {
    if parent.expires_ns == 0 || expires_ns <= parent.expires_ns {
        return Ok(expires_ns);
    }
    if !asked {
        return Ok(parent.expires_ns);
    }
    let left = parent.expires_ns.saturating_sub(clock::boottime_ns()) / 1_000_000_000;
    Err(exceeds(format!(
        "ttl_seconds outlives the parent task {}, which expires in {left} s: ask for at most that, or omit ttl_seconds",
        parent.id_string()
    )))
}

/// A child of an enforcing task enforces too.
pub(super) fn check_mode(parent: &TaskRecord, mode: Mode) -> Result<(), RegistryError> {
    if parent.mode == Mode::Enforce && mode == Mode::Audit {
        return Err(exceeds(format!(
            "mode audit: the parent task {} enforces, so its children enforce too",
            parent.id_string()
        )));
    }
    Ok(())
}

/// A child's file mode limits at least as much as its parent's, and each of its file
/// grants lies within what the parent may read or write.
pub(super) fn check_files(
    parent: &TaskRecord,
    child: &protocol::FileRules,
) -> Result<(), RegistryError> {
    let open = protocol::FileRules::default();
    let p = parent.files.as_ref().unwrap_or(&open);
    let p_mode = parent.files.as_ref().map_or(FileMode::Open, |f| f.mode);
    if !mode_within(child.mode, p_mode) {
        return Err(exceeds(format!(
            "file mode {}: the parent task {} has file mode {p_mode}; a child's may only limit more (open, writes, restricted)",
            child.mode,
            parent.id_string()
        )));
    }
    let grant = |write: bool, path: &str| crate::files::FileGrant {
        write,
        path: path.to_owned(),
    };
    let held: Vec<_> = (p.read.iter().chain(&p.base_read).map(|r| grant(false, r)))
        .chain(p.write.iter().chain(&p.base_write).map(|w| grant(true, w)))
        .collect();
    let asked = (child.read.iter().map(|r| grant(false, r)))
        .chain(child.write.iter().map(|w| grant(true, w)));
    for g in asked {
        // Reads are open in `open` and `writes`, writes only in `open`.
        let free = match p_mode {
            FileMode::Open => true,
            FileMode::Writes => !g.write,
            FileMode::Restricted => false,
        };
        let spec = format!("{}:{}", if g.write { "write" } else { "read" }, g.path);
        match file_within(&g, &held) {
            Err(why) => return Err(exceeds(format!("file grant {spec}: {why}"))),
            Ok(false) if !free => {
                return Err(exceeds(format!(
                    "file grant {spec} is not within the file grants of the parent task {} (file mode {p_mode})",
                    parent.id_string()
                )));
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Whether a parent's grant holds now: approved and unexpired.
fn holds(g: &GrantRecord, now: u64) -> bool {
    g.pending_ns == 0 && (g.expires_ns == 0 || g.expires_ns > now)
}

/// Ties a child's grant to the parent's grants it is within (`derived_from`), and ends
/// it no later than they end; refuses a grant beyond them, naming it.
pub(super) fn attenuate(parent: &TaskRecord, rec: &mut GrantRecord) -> Result<(), RegistryError> {
    let now = clock::boottime_ns();
    let live: Vec<&GrantRecord> = parent.grants.iter().filter(|g| holds(g, now)).collect();
    let pid = parent.id_string();
    let mut from: Vec<&GrantRecord> = Vec::new();
    match rec.kind {
        GrantKind::Exec => {
            for f in &rec.files {
                let by = live.iter().find(|g| {
                    g.kind == GrantKind::Exec
                        && g.files.iter().any(|p| {
                            p.dev == f.dev
                                && p.ino == f.ino
                                && p.tree == f.tree
                                && (p.state.is_none() || f.state.is_none() || p.state == f.state)
                        })
                });
                let Some(by) = by else {
                    return Err(exceeds(format!(
                        "exec grant {}: {} is not a file the parent task {pid} may run (exec grants are compared by device and inode, as the parent's were granted; a DIR/** grant needs the same DIR/** grant in the parent)",
                        rec.spec, f.path
                    )));
                };
                from.push(by);
            }
        }
        GrantKind::Connect if !rec.unix.is_empty() => {
            let by = live
                .iter()
                .find(|g| g.unix == rec.unix && g.unix_view == rec.unix_view);
            from.push(by.copied().ok_or_else(|| {
                exceeds(format!(
                    "connect grant {}: the parent task {pid} has no grant of this unix socket (in the same mount namespace and root)",
                    rec.spec
                ))
            })?);
        }
        GrantKind::Connect if rec.families != 0 => {
            let by: Vec<_> = live
                .iter()
                .filter(|g| g.families & rec.families != 0)
                .copied()
                .collect();
            let held = by.iter().fold(0, |a, g| a | g.families);
            if rec.families & !held != 0 {
                return Err(exceeds(format!(
                    "connect grant {}: the parent task {pid} has no such socket grant",
                    rec.spec
                )));
            }
            from = by;
        }
        GrantKind::Connect => {
            let asked: ConnectSpec = rec.spec.parse()?;
            let by = live.iter().find(|g| {
                g.kind == GrantKind::Connect
                    && g.unix.is_empty()
                    && g.families == 0
                    && g.spec
                        .parse::<ConnectSpec>()
                        .is_ok_and(|p| connect_within(&asked, &p))
            });
            from.push(by.copied().ok_or_else(|| {
                exceeds(format!(
                    "connect grant {}: not within any connect grant of the parent task {pid} (each child grant must lie inside one parent grant: prefix, ports, protocol, name or wildcard)",
                    rec.spec
                ))
            })?);
        }
    }
    let mut ids: Vec<String> = from.iter().map(|g| g.id.clone()).collect();
    ids.sort();
    ids.dedup();
    let ends = from
        .iter()
        .fold(rec.expires_ns, |e, g| min_expiry(e, g.expires_ns));
    if ends != rec.expires_ns {
        rec.expires_ns = ends;
        rec.expires_at = Some(wall_of_boot_ns(ends));
    }
    rec.derived_from = ids;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: u64, chain: &[u64]) -> TaskRecord {
        let req = protocol::CreateTask {
            agent: "a".into(),
            ..protocol::CreateTask::default()
        };
        let mut t = TaskRecord::new(id, &req, Vec::new(), 0, 1, protocol::FileRules::default());
        t.chain = chain.to_vec();
        t
    }

    fn tasks(list: impl IntoIterator<Item = TaskRecord>) -> Tasks {
        let mut t = Tasks::default();
        for r in list {
            t.tasks.insert(r.id, r);
        }
        t
    }

    fn code(r: &Result<&TaskRecord, RegistryError>) -> Option<&'static str> {
        match r {
            Err(RegistryError::Refused { code, .. }) => Some(*code),
            Err(_) => Some("other"),
            Ok(_) => None,
        }
    }

    #[test]
    fn depth_count_and_orphans() {
        // Depth: a task 2 levels down may delegate under a limit of 3, not of 2.
        let t = tasks([task(1, &[]), task(2, &[1]), task(3, &[1, 2])]);
        assert_eq!(code(&t.delegator(3, 3)), None);
        assert_eq!(code(&t.delegator(3, 2)), Some(EXCEEDS_PARENT));
        assert_eq!(code(&t.delegator(1, 0)), Some(EXCEEDS_PARENT), "off");
        assert!(t.descends_from(3, 1) && t.descends_from(3, 2));
        assert!(!t.descends_from(1, 3) && !t.descends_from(2, 2));
        assert_eq!(t.children_of(1), [2]);

        // Count: the live tasks below one root, wherever they hang.
        let max = MAX_DESCENDANTS as u64;
        let mut list = vec![task(1, &[])];
        list.extend((2..=max + 1).map(|id| task(id, &[1])));
        let full = tasks(list);
        assert_eq!(code(&full.delegator(1, 4)), Some(EXCEEDS_PARENT));
        assert_eq!(
            code(&full.delegator(2, 4)),
            Some(EXCEEDS_PARENT),
            "below a child too"
        );

        // A live child of an ended parent is an orphan.
        let mut ended = task(1, &[]);
        ended.state = protocol::TaskState::Ended;
        let t = tasks([ended, task(2, &[1]), task(3, &[2])]);
        assert_eq!(t.orphans(), [2]);
        assert!(matches!(t.delegator(1, 4), Err(RegistryError::Ended(_))));
    }
}
