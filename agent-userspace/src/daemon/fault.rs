//! Test-only fault injection for the kill -9 soak (`cargo xtask soak`): aborts the daemon
//! at one chosen point, so the soak can prove a crash there loses no acknowledged grant
//! and enforces no unrecorded one.
//!
//! Off unless the daemon's environment sets [`ABORT_AFTER_GRANT_MAP_WRITE`] to exactly
//! [`CONFIRM`]: no config field, flag or default turns it on, and a daemon started with
//! it says so in its log at start.

use std::sync::OnceLock;

/// The variable that arms the abort right after a grant add's map write, before the
/// grant is journaled and answered.
pub const ABORT_AFTER_GRANT_MAP_WRITE: &str = "LEASH_TEST_FAULT_ABORT_AFTER_GRANT_MAP_WRITE";

/// The only value that arms it.
pub const CONFIRM: &str = "abort-the-daemon";

fn armed() -> bool {
    static ARMED: OnceLock<bool> = OnceLock::new();
    *ARMED.get_or_init(|| std::env::var(ABORT_AFTER_GRANT_MAP_WRITE).is_ok_and(|v| v == CONFIRM))
}

/// Logs, at start, that the fault is armed.
pub(super) fn announce() {
    if armed() {
        tracing::warn!(
            "{ABORT_AFTER_GRANT_MAP_WRITE} is set: this daemon aborts at its first grant add, a test fault"
        );
    }
}

/// Called once a grant is in the kernel's maps and before it is journaled or answered.
pub(super) fn after_grant_map_write(task: u64, grant: &str) {
    if armed() {
        eprintln!(
            "fault injection: aborting after the map write of grant {grant} of task {}",
            crate::protocol::TaskId(task)
        );
        std::process::abort();
    }
}
