//! `maps:` BPF map capacities, applied before the maps are created.

use leash_common::maps;
use serde::{Deserialize, Serialize};

use super::{ConfigError, error::invalid};

/// Largest capacity accepted for any map (and largest `maps.events_bytes`).
pub const MAX_MAP_ENTRIES: u32 = 16_777_216;
/// Smallest event ring buffer accepted (it must also be at least one page).
pub const MIN_EVENTS_BYTES: u32 = 4096;

/// `maps:` BPF map capacities, applied before the maps are created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MapsConfig {
    /// Entries of [`maps::PROCS`] (tagged threads).
    pub procs: u32,
    /// Entries of [`maps::TASKS`].
    pub tasks: u32,
    /// Entries of [`maps::EXEC_GRANTS`].
    pub exec_grants: u32,
    /// Entries of [`maps::SCRIPT_GRANTS`].
    pub script_grants: u32,
    /// Entries of [`maps::NET_HOSTS`], and of each task's prefix trie ([`maps::NET_GRANTS`]).
    pub net_grants: u32,
    /// Size in bytes of the [`maps::EVENTS`] ring buffer.
    pub events_bytes: u32,
}

/// Default: the capacities the kernel object declares ([`maps::PROCS_CAPACITY`] etc.).
impl Default for MapsConfig {
    fn default() -> Self {
        Self {
            procs: maps::PROCS_CAPACITY,
            tasks: maps::TASKS_CAPACITY,
            exec_grants: maps::EXEC_GRANTS_CAPACITY,
            script_grants: maps::SCRIPT_GRANTS_CAPACITY,
            net_grants: maps::NET_GRANTS_CAPACITY,
            events_bytes: maps::EVENTS_BYTES,
        }
    }
}

/// The system page size.
fn page_size() -> u32 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| u32::try_from(size).ok())
        .unwrap_or(4096)
}

impl MapsConfig {
    /// Map names of [`leash_common::maps`] with their capacities (`EVENTS`: bytes).
    pub(super) fn capacities(&self) -> [(&'static str, u32); 6] {
        [
            (maps::PROCS, self.procs),
            (maps::TASKS, self.tasks),
            (maps::EXEC_GRANTS, self.exec_grants),
            (maps::SCRIPT_GRANTS, self.script_grants),
            (maps::NET_GRANTS, self.net_grants),
            (maps::EVENTS, self.events_bytes),
        ]
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("maps.procs", self.procs),
            ("maps.tasks", self.tasks),
            ("maps.exec_grants", self.exec_grants),
            ("maps.script_grants", self.script_grants),
            ("maps.net_grants", self.net_grants),
        ] {
            if value == 0 || value > MAX_MAP_ENTRIES {
                return Err(invalid(
                    field,
                    format!("{value} is out of range: use 1 to {MAX_MAP_ENTRIES} entries"),
                ));
            }
        }
        Self::check_events_bytes(self.events_bytes, page_size())
    }

    fn check_events_bytes(value: u32, page: u32) -> Result<(), ConfigError> {
        const FIELD: &str = "maps.events_bytes";
        let min = MIN_EVENTS_BYTES.max(page);
        if value < min || value > MAX_MAP_ENTRIES {
            return Err(invalid(
                FIELD,
                format!(
                    "{value} is out of range: use a power of two from {min} to \
                     {MAX_MAP_ENTRIES} bytes, like {}",
                    maps::EVENTS_BYTES
                ),
            ));
        }
        if !value.is_power_of_two() {
            return Err(invalid(
                FIELD,
                format!(
                    "{value} is not a power of two (a BPF ring buffer must be): use {} or {}",
                    value.next_power_of_two() / 2,
                    value.next_power_of_two()
                ),
            ));
        }
        if !value.is_multiple_of(page) {
            return Err(invalid(
                FIELD,
                format!(
                    "{value} is not a multiple of the page size ({page} bytes): use a power \
                     of two of at least {page}"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use leash_common::maps;

    use super::{
        super::{
            Config,
            tests::{invalid_field, parse_err},
        },
        MapsConfig,
    };

    #[test]
    fn map_capacities_are_checked() {
        let (field, message) = invalid_field("maps: {events_bytes: 5000000}");
        assert_eq!(field, "maps.events_bytes");
        assert!(message.contains("power of two"), "{message}");
        assert!(message.contains("4194304"), "{message}");
        assert_eq!(
            invalid_field("maps: {events_bytes: 2048}").0,
            "maps.events_bytes"
        );
        assert_eq!(
            invalid_field("maps: {events_bytes: 33554432}").0,
            "maps.events_bytes"
        );
        assert_eq!(invalid_field("maps: {procs: 0}").0, "maps.procs");
        assert_eq!(
            invalid_field("maps: {net_grants: 16777217}").0,
            "maps.net_grants"
        );
        assert!(parse_err("maps: {tasks: -1}").contains("maps.tasks"));
        Config::from_yaml("maps: {procs: 16777216, events_bytes: 16777216}").unwrap();
        // On a 64 KiB-page machine 32 KiB is a power of two but not a whole page.
        assert!(MapsConfig::check_events_bytes(32_768, 65_536).is_err());
        MapsConfig::check_events_bytes(65_536, 65_536).unwrap();
    }

    #[test]
    fn capacities_pair_map_names() {
        let mut c = Config::default();
        c.maps.script_grants = 8;
        let caps = c.expose_capacities();
        assert_eq!(caps[0], (maps::PROCS, maps::PROCS_CAPACITY));
        assert_eq!(caps[3], (maps::SCRIPT_GRANTS, 8));
        assert_eq!(caps[5], (maps::EVENTS, maps::EVENTS_BYTES));
        let names: Vec<_> = caps.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                maps::PROCS,
                maps::TASKS,
                maps::EXEC_GRANTS,
                maps::SCRIPT_GRANTS,
                maps::NET_GRANTS,
                maps::EVENTS
            ]
        );
    }
}
