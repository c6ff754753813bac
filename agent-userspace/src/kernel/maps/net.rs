//! The network grants: full addresses in the host hash, shorter prefixes in each
//! task's trie from the pool.

use leash_common::{NetKey, NetRules, maps as names};

use super::{FULL_ADDRESS, Maps, MapsError, config_key, net_pool, op_err, removed};

impl Maps {
    /// Replaces the network entries of a task. New entries go in before stale ones
    /// leave, so a destination granted before and after is never denied in between.
    pub fn set_net(
        &mut self,
        task: u64,
        entries: &[(u32, NetKey, NetRules)],
    ) -> Result<(), MapsError> {
        self.insert_net(entries)?;
        let wanted = |prefix: u32, key: &NetKey| {
            entries
                .iter()
                .any(|(p, k, _)| *p == prefix && k.addr == key.addr)
        };
        let prefixes = if entries.iter().any(|(p, ..)| *p != FULL_ADDRESS) {
            self.prefix_keys_of(task)?
        } else {
            // No prefix left: the whole trie goes at once.
            self.remove_net_task(task)?;
            Vec::new()
        };
        let stale: Vec<(u32, NetKey)> = self
            .hosts
            .keys()
            .filter_map(Result::ok)
            .map(|k| (FULL_ADDRESS, k))
            .chain(prefixes)
            .filter(|(p, k)| k.task == task && !wanted(*p, k))
            .collect();
        for (prefix, key) in stale {
            self.remove_net(prefix, key)?;
        }
        Ok(())
    }

    /// Removes every prefix entry of a task: its slot is unlinked, emptied and freed.
    pub fn remove_net_task(&mut self, task: u64) -> Result<(), MapsError> {
        self.net.release(task)
    }

    /// Inserts (or replaces) network entries: full addresses in the host hash, shorter
    /// prefixes in their task's trie (the task takes a slot with its first prefix).
    pub fn insert_net(&mut self, entries: &[(u32, NetKey, NetRules)]) -> Result<(), MapsError> {
        let mut prefixes: std::collections::BTreeMap<u64, Vec<_>> =
            std::collections::BTreeMap::new();
        for entry @ (prefix, key, rules) in entries {
            if *prefix == FULL_ADDRESS {
                self.hosts
                    .insert(key, rules, 0)
                    .map_err(op_err("insert", names::NET_HOSTS))?;
            } else {
                prefixes.entry(key.task).or_default().push(entry);
            }
        }
        for (task, group) in prefixes {
            let (slot, mut trie, new) = self.net.slot_for(task)?;
            let filled = group.iter().try_for_each(|(prefix, key, rules)| {
                trie.insert(&net_pool::key(*prefix, *key), rules, 0)
                    .map_err(|e| match op_err("insert", names::NET_PREFIXES)(e) {
                        MapsError::Full { map, .. } => MapsError::Full {
                            map: names::NET_GRANTS,
                            config_key: config_key(map),
                        },
                        e => e,
                    })
            });
            match (filled, new) {
                // The kernel finds the trie only once it is filled.
                (Ok(()), true) => self.net.publish(task, slot)?,
                (Ok(()), false) => {}
                (Err(e), true) => {
                    net_pool::clear(&mut trie)?;
                    self.net.put_back(slot);
                    return Err(e);
                }
                (Err(e), false) => return Err(e),
            }
        }
        Ok(())
    }

    /// Removes one network entry. A task's trie left empty gives its slot back.
    pub fn remove_net(&mut self, prefix: u32, key: NetKey) -> Result<(), MapsError> {
        if prefix == FULL_ADDRESS {
            return removed(self.hosts.remove(&key), names::NET_HOSTS);
        }
        let Some(slot) = self.net.slot_of(key.task) else {
            return Ok(());
        };
        let mut trie = self.net.trie(slot)?;
        removed(
            trie.remove(&net_pool::key(prefix, key)),
            names::NET_PREFIXES,
        )?;
        if net_pool::is_empty(&trie) {
            self.net.release(key.task)?;
        }
        Ok(())
    }

    /// The prefix entries of a task, as (prefix length, key).
    pub(super) fn prefix_keys_of(&self, task: u64) -> Result<Vec<(u32, NetKey)>, MapsError> {
        let Some(slot) = self.net.slot_of(task) else {
            return Ok(Vec::new());
        };
        Ok(self
            .net
            .trie(slot)?
            .keys()
            .filter_map(Result::ok)
            .map(|k| (k.prefix_len(), k.data()))
            // Only the owner's: a slot never answers for another task.
            .filter(|(_, k)| k.task == task)
            .collect())
    }

    /// Every network entry in the kernel, as (prefix length, key).
    pub(super) fn net_keys(&self) -> Vec<(u32, NetKey)> {
        let mut out: Vec<(u32, NetKey)> = self
            .hosts
            .keys()
            .filter_map(Result::ok)
            .map(|k| (FULL_ADDRESS, k))
            .collect();
        for (task, _) in self.net.owned() {
            out.extend(self.prefix_keys_of(task).unwrap_or_default());
        }
        out
    }

    /// Prefix-trie slots: (in use, filled with a trie).
    #[must_use]
    pub fn net_slots(&self) -> (u32, u32) {
        self.net.slots()
    }

    /// The prefix-trie slot of a task, if it has prefix grants.
    #[must_use]
    pub fn net_slot_of(&self, task: u64) -> Option<u32> {
        self.net.slot_of(task)
    }

    /// Entries in a slot's trie, whichever task they name.
    pub fn net_slot_len(&self, slot: u32) -> Result<usize, MapsError> {
        Ok(self.net.trie(slot)?.keys().count())
    }
}
