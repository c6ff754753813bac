//! Break-glass tasks: started by an approver in an emergency, outside the policy's
//! ceilings but with explicit grants the kernel enforces (docs/policy.md).

use serde::{Deserialize, Serialize};

/// `"break_glass"` in `POST /v1/tasks`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlass {
    /// Why the policy's ceilings are set aside: logged with the task and its records.
    pub justification: String,
}

/// A break-glass task's origin, as the task shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassInfo {
    pub justification: String,
    /// The approver who started it (`uid N[, sub S]`).
    pub approver: String,
}
