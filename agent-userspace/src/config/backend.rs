//! `backend:` the exec enforcement backend, as `auto`, `lsm` or `portable`.

use std::fmt;

use serde::{Deserializer, Serializer, de};

use crate::protocol::BackendChoice;

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's `with` passes a reference"
)]
pub(super) fn serialize<S: Serializer>(
    choice: &BackendChoice,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(match choice {
        BackendChoice::Auto => "auto",
        BackendChoice::Lsm => "lsm",
        BackendChoice::Portable => "portable",
    })
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BackendChoice, D::Error> {
    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = BackendChoice;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("auto, lsm or portable")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<BackendChoice, E> {
            v.parse().map_err(E::custom)
        }
    }
    deserializer.deserialize_str(Visitor)
}

#[cfg(test)]
mod tests {
    use super::{
        super::{Config, tests::parse_err},
        BackendChoice,
    };

    #[test]
    fn backend_is_parsed() {
        let backend = |yaml: &str| Config::from_yaml(yaml).unwrap().backend;
        assert_eq!(backend("backend: lsm"), BackendChoice::Lsm);
        assert_eq!(backend("backend: portable"), BackendChoice::Portable);
        assert_eq!(backend("backend: auto"), BackendChoice::Auto);
        let msg = parse_err("backend: bogus");
        assert!(msg.contains("backend"), "{msg}");
        assert!(msg.contains("\"bogus\""), "{msg}");
        assert!(msg.contains("auto, lsm, portable"), "{msg}");
    }
}
