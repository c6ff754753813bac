//! `leash task list --tree`: delegated tasks under their parents.

use std::collections::{BTreeMap, HashSet};

use leash::protocol::Task;

use super::{output, state_text};

/// One line per task, each child indented under its parent. A task whose parent is
/// not in the list (filtered out, or pruned) starts a tree of its own.
pub(super) fn tree_text(tasks: &[Task]) -> String {
    let ids: HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    let mut children: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    let mut roots = Vec::new();
    for t in tasks {
        match t.parent.as_deref().filter(|p| ids.contains(p)) {
            Some(p) => children.entry(p).or_default().push(t),
            None => roots.push(t),
        }
    }
    let mut rows = Vec::new();
    let mut stack: Vec<(&Task, usize)> = roots.iter().rev().map(|t| (*t, 0)).collect();
    while let Some((t, depth)) = stack.pop() {
        let mut label = "  ".repeat(depth);
        if depth > 0 {
            label.push_str("└ ");
        }
        label.push_str(&t.id);
        rows.push(vec![
            label,
            t.agent.clone(),
            state_text(t),
            output::name(&t.mode),
            t.grants.len().to_string(),
            t.expires_at.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
        if let Some(kids) = children.get(t.id.as_str()) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    output::table(
        &["ID", "AGENT", "STATE", "MODE", "GRANTS", "EXPIRES"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, parent: Option<&str>) -> Task {
        serde_json::from_value(serde_json::json!({
            "id": id, "agent": "a", "spiffe_id": "", "mode": "enforce", "state": "active",
            "created_at": "", "grants": [], "parent": parent,
        }))
        .unwrap()
    }

    #[test]
    fn children_sit_under_their_parents() {
        let tasks = [
            task("c1", Some("p")),
            task("p", None),
            task("g", Some("c1")),
            task("o", Some("gone")),
            task("c2", Some("p")),
        ];
        let text = tree_text(&tasks);
        let ids: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| l.split("  a ").next().unwrap().trim_end())
            .collect();
        assert_eq!(ids, ["p", "  └ c1", "    └ g", "  └ c2", "o"], "{text}");
    }
}
