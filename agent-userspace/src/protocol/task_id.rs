//! A task's id: 64 random bits, written as exactly 16 lowercase hex digits in the API,
//! the CLI, the audit log and SPIFFE IDs.

use std::{fmt, str::FromStr};

/// A task's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u64);

/// Text that is not 16 hex digits; it names no task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a task id (16 hex digits)")]
pub struct BadTaskId(pub String);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for TaskId {
    type Err = BadTaskId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // from_str_radix alone takes a sign and fewer digits.
        if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            u64::from_str_radix(s, 16)
                .map(Self)
                .map_err(|_| BadTaskId(s.to_owned()))
        } else {
            Err(BadTaskId(s.to_owned()))
        }
    }
}

impl From<u64> for TaskId {
    fn from(id: u64) -> Self {
        Self(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_hex_digits_both_ways() {
        let id = TaskId(0x00ab_cdef_0123_4567);
        assert_eq!(id.to_string(), "00abcdef01234567");
        assert_eq!("00abcdef01234567".parse(), Ok(id));
        assert_eq!("00ABCDEF01234567".parse(), Ok(id));
        for bad in [
            "",
            "abc",
            "+0abcdef01234567",
            "00abcdef012345678",
            "00abcdef0123456g",
        ] {
            assert_eq!(bad.parse::<TaskId>(), Err(BadTaskId(bad.into())), "{bad}");
        }
    }
}
