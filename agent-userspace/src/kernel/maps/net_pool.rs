//! The pool of per-task prefix tries (`NET_PREFIXES`, `NET_SLOTS`).
//!
//! A task with prefix grants owns one slot of the `NET_PREFIXES` array, which holds
//! its own LPM trie: a connect looks up only that task's prefixes, whatever the number
//! of tasks. Writing a slot of a map-in-map makes the `bpf()` syscall wait for an RCU
//! grace period (~10 ms), once per syscall: slots are filled ahead of need, many per
//! `BPF_MAP_UPDATE_BATCH`, and reused. Taking, filling and emptying a slot's trie are
//! plain trie updates. Everything is in pinned maps, so a restarted daemon rebuilds
//! the pool from them.
//!
//! The first prefix grant fills the first slots itself. Later growth runs on a thread
//! of its own as soon as fewer than a quarter of the filled slots are free, so grants
//! do not wait for its grace periods; a grant finds it done (or, outpaced, waits for it).

use std::{
    collections::HashMap as StdHashMap,
    ops::Range,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    sync::Arc,
    thread::JoinHandle,
};

use aya::maps::{
    ArrayOfMaps, HashMap, IterableMap as _, LpmTrie, MapData, MapError, lpm_trie::Key,
};
use leash_common::{NetKey, NetRules, maps as names};

use super::{MapsError, op_err, removed, trie_btf::TrieBtf};
use crate::kernel::sys;

/// One task's prefix trie.
pub(crate) type NetTrie = LpmTrie<MapData, NetKey, NetRules>;

/// New tries per batch update: each holds an fd until the batch is in, and the fd limit
/// may be as low as 1024.
const CHUNK: u32 = 256;
/// Slots filled by the first prefix grant (~1.2 KiB of kernel memory each while
/// empty); each later growth doubles the pool, so growing to 10 000 tasks stalls a
/// grant apply for one grace period 6 times in all. Not at start: a daemon (or a slow
/// emulated machine) with no prefix grants pays nothing.
const PREFILL: u32 = 256;

/// The slots and who owns them; the kernel maps are the truth, this mirrors them.
pub(crate) struct NetPool {
    tries: ArrayOfMaps<MapData, NetTrie>,
    /// A second handle on `tries`, for its fd and info (the typed handle hides its
    /// `MapData`).
    tries_meta: MapData,
    owners: HashMap<MapData, u64, u32>,
    /// `max_entries` of each new trie (`maps.net_grants`).
    trie_capacity: u32,
    /// Types for the new tries, so they match the kernel's template (see [`TrieBtf`]).
    btf: Option<Arc<TrieBtf>>,
    /// A batch update went in with the current `btf` choice: growth may then run in
    /// the background (it has no fallback of its own).
    proven: bool,
    /// Slots `0..filled` hold a trie.
    filled: u32,
    /// Emptied slots, lowest last.
    free: Vec<u32>,
    of_task: StdHashMap<u64, u32>,
    /// The growth running in the background, filling the slots from `filled` on.
    growing: Option<Growth>,
}

/// A background growth: the first slot it fills, and its thread.
struct Growth {
    start: u32,
    thread: JoinHandle<Grown>,
}

/// Slots filled from the start of a growth's range (always a prefix of it: a batch
/// update goes in key order), and why it stopped short, if it did.
type Grown = (u32, Option<MapsError>);

impl NetPool {
    /// Takes over the pool as the maps hold it (empty, or pinned by a previous daemon).
    pub(crate) fn take(ebpf: &mut aya::Ebpf, trie_capacity: u32) -> Result<Self, MapsError> {
        let name = names::NET_PREFIXES;
        let map = ebpf.take_map(name).ok_or(MapsError::Missing(name))?;
        let meta = match &map {
            aya::maps::Map::ArrayOfMaps(data) => {
                Some(data.info().and_then(|i| MapData::from_id(i.id())))
            }
            _ => None,
        };
        // A map of another type fails here, with the type error.
        let tries =
            ArrayOfMaps::try_from(map).map_err(|source| MapsError::Type { map: name, source })?;
        let meta = meta
            .ok_or(MapsError::Missing(name))?
            .map_err(op_err("open", name))?;
        Ok(Self::adopt(
            tries,
            meta,
            super::take(ebpf, names::NET_SLOTS)?,
            trie_capacity,
        ))
    }

    fn adopt(
        tries: ArrayOfMaps<MapData, NetTrie>,
        tries_meta: MapData,
        owners: HashMap<MapData, u64, u32>,
        trie_capacity: u32,
    ) -> Self {
        // Slots are filled in order from 0: the first empty one ends the pool.
        let filled = (0..tries.len())
            .find(|i| tries.get(i, 0).is_err())
            .unwrap_or(tries.len());
        let of_task: StdHashMap<u64, u32> = owners
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, slot)| *slot < filled)
            .collect();
        let btf = TrieBtf::load(size_of::<Key<NetKey>>(), size_of::<NetRules>())
            .inspect_err(|e| tracing::debug!("prefix tries without BTF: {e}"))
            .ok()
            .map(Arc::new);
        let mut pool = Self {
            tries,
            tries_meta,
            owners,
            trie_capacity,
            btf,
            proven: false,
            filled,
            free: Vec::new(),
            of_task,
            growing: None,
        };
        let owned: std::collections::HashSet<u32> = pool.of_task.values().copied().collect();
        // A slot is emptied again when taken, so one a crash left half-emptied is safe.
        pool.free = (0..filled).rev().filter(|s| !owned.contains(s)).collect();
        pool
    }

    /// The slot of a task with prefix grants.
    #[must_use]
    pub(crate) fn slot_of(&self, task: u64) -> Option<u32> {
        self.of_task.get(&task).copied()
    }

    /// Tasks holding a slot, with it.
    pub(crate) fn owned(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.of_task.iter().map(|(t, s)| (*t, *s))
    }

    /// Slots in use and slots filled with a trie.
    #[must_use]
    pub(crate) fn slots(&self) -> (u32, u32) {
        (self.of_task.len() as u32, self.filled)
    }

    /// The trie in a slot (a new fd on it, closed on drop).
    pub(crate) fn trie(&self, slot: u32) -> Result<NetTrie, MapsError> {
        self.tries.get(&slot, 0).map_err(|source| MapsError::Op {
            op: "lookup",
            map: names::NET_PREFIXES,
            source,
        })
    }

    /// The task's trie, taking an emptied slot if it has none (published only by
    /// [`Self::publish`], once filled).
    pub(crate) fn slot_for(&mut self, task: u64) -> Result<(u32, NetTrie, bool), MapsError> {
        if let Some(slot) = self.slot_of(task) {
            return Ok((slot, self.trie(slot)?, false));
        }
        self.settle(self.free.is_empty());
        if self.free.is_empty() {
            self.grow()?;
        }
        let slot = self.free.pop().ok_or(MapsError::PoolFull {
            capacity: self.tries.len(),
        })?;
        let mut trie = self.trie(slot)?;
        if let Err(e) = clear(&mut trie) {
            self.free.push(slot);
            return Err(e);
        }
        self.grow_ahead();
        Ok((slot, trie, true))
    }

    /// Starts a background growth once fewer than a quarter of the filled slots are
    /// free (and none runs): it doubles the pool, up to its capacity.
    fn grow_ahead(&mut self) {
        let capacity = self.tries.len();
        if self.growing.is_some()
            || !self.proven
            || self.free.len() as u32 >= self.filled / 4
            || self.filled >= capacity
        {
            return;
        }
        let slots = self.filled..self.filled + self.filled.min(capacity - self.filled);
        let outer = match self.tries_meta.fd().as_fd().try_clone_to_owned() {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!("cannot grow the prefix-trie pool ahead of need: {e}");
                return;
            }
        };
        let start = slots.start;
        let job = Job {
            outer,
            btf: self.btf.clone(),
            trie_capacity: self.trie_capacity,
            slots,
        };
        match std::thread::Builder::new()
            .name("leash-net-pool".into())
            .spawn(move || job.run())
        {
            Ok(thread) => self.growing = Some(Growth { start, thread }),
            Err(e) => tracing::warn!("cannot grow the prefix-trie pool ahead of need: {e}"),
        }
    }

    /// Takes in the slots a background growth filled, once it is over; with `wait`,
    /// waits for it to be.
    fn settle(&mut self, wait: bool) {
        let Some(Growth { start, thread }) =
            self.growing.take_if(|g| wait || g.thread.is_finished())
        else {
            return;
        };
        // A growth that panicked is redone in place; its slots are refilled then.
        let (n, error) = thread.join().unwrap_or((0, None));
        if let Some(e) = error {
            // The next growth is done in place, where its error reaches the grant.
            tracing::warn!("growing the prefix-trie pool in the background stopped: {e}");
        }
        // Nothing else fills slots while a growth runs, so they follow `filled`.
        debug_assert_eq!(start, self.filled);
        let end = start + n;
        // Lowest last: the new slots are above every free one.
        self.free.splice(0..0, (start..end).rev());
        self.filled = end;
    }

    /// Makes `slot` the task's, for the kernel too.
    pub(crate) fn publish(&mut self, task: u64, slot: u32) -> Result<(), MapsError> {
        self.owners
            .insert(task, slot, 0)
            .map_err(op_err("insert", names::NET_SLOTS))?;
        self.of_task.insert(task, slot);
        Ok(())
    }

    /// Gives back an unpublished slot.
    pub(crate) fn put_back(&mut self, slot: u32) {
        self.free.push(slot);
    }

    /// Frees the task's slot: unlinked first (its lookups find nothing from then on),
    /// then emptied, then free for another task.
    pub(crate) fn release(&mut self, task: u64) -> Result<(), MapsError> {
        let Some(slot) = self.slot_of(task) else {
            return Ok(());
        };
        removed(self.owners.remove(&task), names::NET_SLOTS)?;
        self.of_task.remove(&task);
        clear(&mut self.trie(slot)?)?;
        self.free.push(slot);
        Ok(())
    }

    /// Fills more slots with new tries in one batch update (one RCU wait).
    fn grow(&mut self) -> Result<(), MapsError> {
        let capacity = self.tries.len();
        let n = self.filled.max(PREFILL).min(capacity - self.filled);
        if n == 0 {
            return Err(MapsError::PoolFull { capacity });
        }
        let last = self.filled + n;
        while self.filled < last {
            let end = (self.filled + CHUNK).min(last);
            self.fill(self.filled..end)?;
            self.free.extend((self.filled..end).rev());
            self.filled = end;
        }
        Ok(())
    }

    /// Puts new tries in `slots`, in one batch update (one RCU wait).
    fn fill(&mut self, slots: Range<u32>) -> Result<(), MapsError> {
        match self.fill_with(slots.clone()) {
            // The kernel takes a trie into the array only if it matches the template
            // the loader created, BTF included (6.1). That template has no BTF when the
            // object's BTF could not be loaded: then tries without it.
            Err(MapsError::Op { source, .. }) if self.btf.is_some() && is_einval(&source) => {
                tracing::debug!("prefix tries refused with BTF ({source}): created without");
                self.btf = None;
                self.fill_with(slots)
            }
            r => r,
        }
    }

    fn fill_with(&mut self, slots: Range<u32>) -> Result<(), MapsError> {
        let new: Vec<NetTrie> = slots
            .clone()
            .map(|_| new_trie(self.btf.as_deref(), self.trie_capacity))
            .collect::<Result<_, _>>()?;
        let keys: Vec<u32> = slots.collect();
        let fds = trie_fds(&new);
        let batch = sys::update_batch(self.tries_meta.fd().as_fd(), &keys, &fds);
        self.proven = batch.is_ok();
        batch.or_else(|(done, _)| {
            // A kernel without batch updates of this map type: one at a time.
            for (k, t) in keys.iter().zip(&new).skip(done) {
                self.tries
                    .set(*k, t, 0)
                    .map_err(op_err("insert", names::NET_PREFIXES))?;
            }
            Ok(())
        })
    }

    /// Kernel memory of every filled slot's trie, by `read` on each.
    pub(crate) fn tries_memlock(&self, read: impl Fn(&MapData) -> u64) -> u64 {
        (0..self.filled)
            .filter_map(|s| self.trie(s).ok())
            .map(|t| read(t.map()))
            .sum()
    }

    /// The outer array and the owner map (for map info and memory).
    #[must_use]
    pub(crate) fn maps(&self) -> [&MapData; 2] {
        [&self.tries_meta, self.owners.map()]
    }
}

/// What a background growth needs, apart from the pool.
struct Job {
    /// `NET_PREFIXES`, its own descriptor.
    outer: OwnedFd,
    btf: Option<Arc<TrieBtf>>,
    trie_capacity: u32,
    slots: Range<u32>,
}

impl Job {
    fn run(self) -> Grown {
        let mut done = 0;
        for start in self.slots.clone().step_by(CHUNK as usize) {
            let end = (start + CHUNK).min(self.slots.end);
            let new: Vec<NetTrie> = match (start..end)
                .map(|_| new_trie(self.btf.as_deref(), self.trie_capacity))
                .collect()
            {
                Ok(new) => new,
                Err(e) => return (done, Some(e)),
            };
            let keys: Vec<u32> = (start..end).collect();
            if let Err((n, io_error)) =
                sys::update_batch(self.outer.as_fd(), &keys, &trie_fds(&new))
            {
                let source = MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_update_batch",
                    io_error,
                });
                return (
                    done + n as u32,
                    Some(MapsError::Op {
                        op: "insert",
                        map: names::NET_PREFIXES,
                        source,
                    }),
                );
            }
            done += end - start;
        }
        (done, None)
    }
}

fn new_trie(btf: Option<&TrieBtf>, capacity: u32) -> Result<NetTrie, MapsError> {
    let trie = match btf {
        Some(btf) => btf
            .create_trie(capacity)
            .map_err(|io_error| {
                MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_create",
                    io_error,
                })
            })
            .and_then(MapData::from_fd)
            .and_then(|data| NetTrie::try_from(aya::maps::Map::LpmTrie(data))),
        None => NetTrie::create(capacity, sys::BPF_F_NO_PREALLOC),
    };
    trie.map_err(op_err("create", names::NET_PREFIXES))
}

fn trie_fds(tries: &[NetTrie]) -> Vec<u32> {
    tries
        .iter()
        .map(|t| t.map().fd().as_fd().as_raw_fd() as u32)
        .collect()
}

fn is_einval(e: &MapError) -> bool {
    matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EINVAL))
}

/// Removes every entry of a trie.
pub(crate) fn clear(trie: &mut NetTrie) -> Result<(), MapsError> {
    let keys: Vec<Key<NetKey>> = trie.keys().filter_map(Result::ok).collect();
    for k in keys {
        removed(trie.remove(&k), names::NET_PREFIXES)?;
    }
    Ok(())
}

/// Whether a trie has no entry.
pub(crate) fn is_empty(trie: &NetTrie) -> bool {
    trie.keys().next().is_none()
}

/// Key of a trie entry.
#[must_use]
pub(crate) fn key(prefix: u32, key: NetKey) -> Key<NetKey> {
    Key::new(prefix, key)
}
