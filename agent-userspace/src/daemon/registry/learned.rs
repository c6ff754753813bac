//! DNS slots and learned addresses of tasks: what the responder installs from an
//! answer, refreshed by later answers and dropped at their expiry.

use super::{LearnedRecord, RegistryError, Tasks};
use crate::{
    dns::{Learned, NameGrant, TaskDns},
    grants::mapped,
    kernel::maps::Maps,
    protocol::{GrantKind, Mode},
};

impl Tasks {
    /// The task's DNS slot, given one now if it has none (the lowest slot no task holds).
    pub fn dns_slot(&mut self, id: u64) -> Result<u32, RegistryError> {
        let task = self
            .tasks
            .get_mut(&id)
            .ok_or_else(|| RegistryError::NoTask(crate::protocol::TaskId(id).to_string()))?;
        if task.dns_slot == 0 {
            // Slots stay held by ended tasks until their records go (`prune`).
            let slots = &self.dns_slots;
            task.dns_slot = (1..leash_common::dns::SLOTS)
                .find(|s| !slots.contains_key(s))
                .unwrap_or(0);
            if task.dns_slot != 0 {
                self.dns_slots.insert(task.dns_slot, id);
            }
        }
        Ok(task.dns_slot)
    }

    /// Tasks not ended (nor pending an end).
    #[must_use]
    pub fn live_ids(&self) -> std::collections::BTreeSet<u64> {
        self.tasks
            .values()
            .filter(|t| t.is_live())
            .map(|t| t.id)
            .collect()
    }

    /// Rebuilds the slot index from the records (after loading them).
    pub fn index_dns_slots(&mut self) {
        self.dns_slots = self
            .tasks
            .values()
            .filter(|t| t.dns_slot != 0)
            .map(|t| (t.dns_slot, t.id))
            .collect();
    }

    /// The live task holding DNS slot `slot`: one hash lookup (the responder asks
    /// for every query).
    #[must_use]
    pub fn by_dns_slot(&self, slot: u32) -> Option<u64> {
        let &id = self.dns_slots.get(&slot)?;
        self.tasks
            .get(&id)
            .filter(|t| t.dns_slot == slot && slot != 0 && t.is_live())
            .map(|t| t.id)
    }

    /// What the responder needs of task `id`: its name grants (not pending), its
    /// resolvers and mode.
    #[must_use]
    pub fn dns_view(&self, id: u64) -> Option<TaskDns> {
        let t = self.tasks.get(&id).filter(|t| t.is_live())?;
        Some(TaskDns {
            id,
            grants: t
                .grants
                .iter()
                .filter(|g| g.kind == GrantKind::Connect && g.pending_ns == 0)
                .filter_map(|g| NameGrant::parse(&g.spec, g.expires_ns))
                .collect(),
            upstreams: t.dns_upstreams.clone(),
            audit: t.mode == Mode::Audit,
        })
    }

    /// Installs learned addresses as host grants of task `id`: an address already
    /// learned with the same ports is refreshed (its entry rewritten in place, never
    /// removed and added again). Returns whether an address is new (a refresh only
    /// moves expiries).
    pub fn learn(
        &mut self,
        maps: &mut Maps,
        id: u64,
        learned: &[Learned],
    ) -> Result<bool, RegistryError> {
        let task = self.get_mut(id)?;
        if !task.is_live() {
            return Err(RegistryError::Ended(task.id_string()));
        }
        let mut new = false;
        // Addresses whose host entry changes: new ones and those a later expiry moved.
        let mut changed = std::collections::HashSet::new();
        for l in learned {
            let addr = mapped(l.addr);
            if let Some(r) = task.learned.iter_mut().find(|r| {
                (r.addr, r.port_lo, r.port_hi, r.protos) == (addr, l.port_lo, l.port_hi, l.protos)
            }) {
                if l.expires_ns > r.expires_ns {
                    r.expires_ns = l.expires_ns;
                    changed.insert(addr);
                }
                r.name.clone_from(&l.name);
            } else {
                new = true;
                changed.insert(addr);
                task.learned.push(LearnedRecord {
                    addr,
                    port_lo: l.port_lo,
                    port_hi: l.port_hi,
                    protos: l.protos,
                    expires_ns: l.expires_ns,
                    name: l.name.clone(),
                });
            }
        }
        if !changed.is_empty() {
            self.sync_hosts(maps, id, &changed)?;
        }
        Ok(new)
    }

    /// Live tasks with a learned address past its expiry (the kernel denies it
    /// already); drops those addresses and re-syncs each task. Returns the tasks.
    pub fn expire_learned(&mut self, maps: &mut Maps, now_ns: u64) -> Vec<u64> {
        let ids: Vec<u64> = self
            .tasks
            .values()
            .filter(|t| t.is_live() && t.learned.iter().any(|l| l.expires_ns <= now_ns))
            .map(|t| t.id)
            .collect();
        for &id in &ids {
            if let Some(t) = self.tasks.get_mut(&id) {
                t.learned.retain(|l| l.expires_ns > now_ns);
            }
            if let Err(e) = self.sync(maps, id) {
                tracing::error!(task = %crate::protocol::TaskId(id), "cannot remove expired DNS addresses: {e}");
            }
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{daemon::registry::TaskRecord, protocol};

    fn tasks(n: u64) -> Tasks {
        let mut t = Tasks::default();
        for id in 1..=n {
            let rec = TaskRecord::new(
                id,
                &protocol::CreateTask::default(),
                Vec::new(),
                0,
                1,
                protocol::FileRules::default(),
            );
            t.tasks.insert(id, rec);
        }
        t
    }

    #[test]
    fn slots_are_found_through_the_index_and_survive_a_reload() {
        let mut t = tasks(3);
        assert_eq!(t.dns_slot(2).unwrap(), 1);
        assert_eq!(t.dns_slot(3).unwrap(), 2);
        assert_eq!(t.dns_slot(2).unwrap(), 1, "a task keeps its slot");
        assert_eq!(t.by_dns_slot(1), Some(2));
        assert_eq!(t.by_dns_slot(2), Some(3));
        assert_eq!(t.by_dns_slot(3), None, "no task holds it");
        assert_eq!(t.by_dns_slot(0), None);
        // Records loaded from the state file: found once the index is rebuilt.
        let mut loaded = Tasks {
            tasks: t.tasks.clone(),
            ..Tasks::default()
        };
        assert_eq!(loaded.by_dns_slot(1), None, "not indexed yet");
        loaded.index_dns_slots();
        assert_eq!(loaded.by_dns_slot(1), Some(2));
        assert_eq!(
            loaded.dns_slot(1).unwrap(),
            3,
            "held slots are not given again"
        );
        // An ended task's slot answers no query, and stays held until its record goes.
        loaded.tasks.get_mut(&2).unwrap().state = protocol::TaskState::Ended;
        assert_eq!(loaded.by_dns_slot(1), None);
        assert_eq!(loaded.live_ids().into_iter().collect::<Vec<_>>(), [1, 3]);
    }
}

#[cfg(test)]
mod agent_rows {
    use super::super::{AGENT_ROWS, OTHER_AGENTS};
    use super::*;

    #[test]
    fn agents_beyond_the_rows_share_one_labelled_other() {
        let mut t = Tasks::default();
        for n in 0..AGENT_ROWS {
            assert_eq!(t.slot_for(&format!("a{n}")), n + 1);
        }
        assert_eq!(t.slot_for("a0"), 1, "a known agent keeps its row");
        let shared = t.slot_for("late-1");
        assert_eq!(shared, AGENT_ROWS + 1);
        assert_eq!(t.slot_for("late-2"), shared);
        assert!(shared < leash_common::event::COUNTER_SLOTS);
        assert_eq!(
            t.agents.len(),
            AGENT_ROWS as usize,
            "no name kept beyond the rows"
        );
        assert_eq!(t.agent_label("late-2"), OTHER_AGENTS);
        assert_eq!(t.agent_label("a7"), "a7");
        let rows = t.agent_rows();
        assert_eq!(rows.len(), AGENT_ROWS as usize + 1);
        assert!(rows.contains(&(OTHER_AGENTS.to_owned(), shared)));
        assert_eq!(Tasks::default().agent_rows(), []);
    }
}
