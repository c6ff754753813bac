//! `policy:` and `auth:`: who may call the API and what policy bounds their tasks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, checks::check_path, error::invalid};

/// `policy:` the node policy (docs/policy.md).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Policy file (YAML, compiled to Cedar); `None`: no policy.
    pub file: Option<PathBuf>,
    /// Resolve exec grants for callers whose mount namespace belongs to a user
    /// namespace other than the daemon's (which the caller may have arranged).
    pub trust_userns_mounts: bool,
}

/// `auth:` how callers are authenticated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Caller uids allowed (socket peer credentials).
    pub uids: Vec<u32>,
    /// Caller gids allowed (primary or supplementary); the socket's group is added.
    pub gids: Vec<u32>,
    /// Bearer tokens; `None`: off.
    pub tokens: Option<TokensConfig>,
}

/// Default: root only, no tokens.
impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            uids: vec![0],
            gids: Vec::new(),
            tokens: None,
        }
    }
}

/// `auth.tokens:` JWT-SVIDs or OIDC ID tokens in `Authorization: Bearer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    /// A JWKS file, or a directory of `*.json` JWKS files.
    pub jwks: PathBuf,
    /// Required `iss`.
    pub issuer: String,
    /// Required in `aud`.
    pub audience: String,
    /// Claim naming the agent: `sub` (only a SPIFFE ID `spiffe://<trust_domain>/agent/NAME`
    /// names one, NAME: any other subject is no agent) or another string claim (its
    /// value is the name, or a SPIFFE ID as for `sub`).
    #[serde(default = "default_claim")]
    pub agent_claim: String,
    /// Which tokens are approvers' (people who approve grants), never agents'.
    #[serde(default)]
    pub approvers: ApproverTokens,
}

/// `auth.tokens.approvers:` tokens matching any entry are approvers' tokens: they carry no
/// agent, and the policy's `approvers.subjects` decide what they may approve.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApproverTokens {
    /// Subjects (`sub`): exact, or a prefix ending in `*` (`spiffe://example.org/human/*`).
    pub subjects: Vec<String>,
    /// A claim and value: a string claim equal to `value`, or an array claim holding it
    /// (`{name: groups, value: leash-approvers}`).
    pub claim: Option<ClaimMatch>,
}

/// A claim that must hold a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimMatch {
    pub name: String,
    pub value: String,
}

fn default_claim() -> String {
    "sub".to_owned()
}

impl PolicyConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        match &self.file {
            Some(f) => check_path("policy.file", f, "/etc/leash/policy.yaml"),
            None => Ok(()),
        }
    }
}

impl AuthConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.uids.is_empty() && self.gids.is_empty() {
            return Err(invalid(
                "auth.uids",
                "no uid or gid is allowed, so no one could call the API: list at least one (root is 0)",
            ));
        }
        if let Some(t) = &self.tokens {
            check_path("auth.tokens.jwks", &t.jwks, "/etc/leash/jwks.json")?;
            if t.issuer.is_empty() || t.audience.is_empty() || t.agent_claim.is_empty() {
                return Err(invalid(
                    "auth.tokens",
                    "issuer, audience and agent_claim must not be empty",
                ));
            }
            if t.approvers
                .subjects
                .iter()
                .any(|s| s.is_empty() || s == "*")
                || t.approvers
                    .claim
                    .as_ref()
                    .is_some_and(|c| c.name.is_empty() || c.value.is_empty())
            {
                return Err(invalid(
                    "auth.tokens.approvers",
                    "an empty or bare `*` subject, or an empty claim name or value, would make \
                     every token an approver's: name the approvers' subjects or claim",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn the_example_config_loads() {
        let c = Config::from_yaml(include_str!("../../../examples/policy/config.yaml")).unwrap();
        c.validate().unwrap();
        let t = c.auth.tokens.unwrap();
        assert_eq!(
            (t.audience.as_str(), t.agent_claim.as_str()),
            ("leash", "sub")
        );
        assert_eq!(c.auth.gids, [990]);
        assert_eq!(t.approvers.subjects, ["spiffe://example.org/human/*"]);
    }

    #[test]
    fn bad_identity_settings_are_refused() {
        for (yaml, field) in [
            ("auth: {uids: [], gids: []}", "auth.uids"),
            ("policy: {file: policy.yaml}", "policy.file"),
            (
                "auth: {tokens: {jwks: jwks.json, issuer: i, audience: a}}",
                "auth.tokens.jwks",
            ),
            (
                "auth: {tokens: {jwks: /j.json, issuer: \"\", audience: a}}",
                "auth.tokens",
            ),
        ] {
            let e = Config::from_yaml(yaml)
                .and_then(|c| c.validate())
                .unwrap_err();
            assert!(e.to_string().contains(field), "{yaml}: {e}");
        }
        assert!(Config::from_yaml("auth: {tokens: {jwks: /j.json}}").is_err());
    }
}
