//! Whose token it is: an approver's (by the config's explicit mapping,
//! `auth.tokens.approvers`) or an agent's (by `auth.tokens.agent_claim`). A token that is
//! neither is refused: a plain `sub` (a person's OIDC token from the same issuer) never
//! silently becomes an agent name.

use super::jwt::{TokenError, Verified, agent_of};
use crate::config::ApproverTokens;

/// What a verified token makes its bearer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Acts for this agent.
    Agent(String),
    /// May approve grants where the policy names its subject; acts for no agent.
    Approver,
}

/// Classifies a verified token. Approver mapping first: an approver's token is never
/// read for an agent name.
pub fn classify(
    verified: &Verified,
    approvers: &ApproverTokens,
    agent_claim: &str,
    trust_domain: &str,
) -> Result<Role, TokenError> {
    if is_approver(verified, approvers) {
        return Ok(Role::Approver);
    }
    let neither = |why: String| TokenError::Claim {
        claim: agent_claim.to_owned(),
        message: format!(
            "{why}; the token of subject {:?} is neither an agent's nor an approver's \
             (auth.tokens.approvers in the daemon config lists approvers)",
            verified.subject
        ),
    };
    let Some(value) = &verified.agent_claim else {
        return Err(neither("missing or not a string".into()));
    };
    // `sub` names an agent only as a SPIFFE ID under /agent/; a dedicated claim was put
    // there to name one, so its plain value is the name.
    if agent_claim == "sub" && !value.starts_with("spiffe://") {
        return Err(neither(format!(
            "{value:?} is not spiffe://{trust_domain}/agent/NAME"
        )));
    }
    agent_of(value, trust_domain).map(Role::Agent)
}

fn is_approver(verified: &Verified, approvers: &ApproverTokens) -> bool {
    let by_subject = approvers
        .subjects
        .iter()
        .any(|s| match s.strip_suffix('*') {
            Some(prefix) => verified.subject.starts_with(prefix),
            None => verified.subject == *s,
        });
    let by_claim = approvers
        .claim
        .as_ref()
        .is_some_and(|c| match verified.claims.get(&c.name) {
            Some(serde_json::Value::String(v)) => *v == c.value,
            Some(serde_json::Value::Array(vs)) => vs.iter().any(|v| v.as_str() == Some(&c.value)),
            _ => false,
        });
    by_subject || by_claim
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::ClaimMatch;

    fn token(sub: &str, claims: serde_json::Value, agent_claim: &str) -> Verified {
        let mut all = claims;
        all["sub"] = sub.into();
        Verified {
            subject: sub.to_owned(),
            agent_claim: all
                .get(agent_claim)
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            claims: all,
        }
    }

    #[test]
    fn approvers_by_subject_or_claim_agents_only_as_mapped() {
        let map = ApproverTokens {
            subjects: vec![
                "spiffe://example.org/human/*".into(),
                "alice@example.org".into(),
            ],
            claim: Some(ClaimMatch {
                name: "groups".into(),
                value: "leash-approvers".into(),
            }),
        };
        let td = "leash.local";
        let c = |sub: &str, claims| classify(&token(sub, claims, "sub"), &map, "sub", td);
        assert_eq!(
            c("spiffe://example.org/human/oncall", json!({})).unwrap(),
            Role::Approver
        );
        assert_eq!(c("alice@example.org", json!({})).unwrap(), Role::Approver);
        assert_eq!(
            c(
                "bob@example.org",
                json!({"groups": ["dev", "leash-approvers"]})
            )
            .unwrap(),
            Role::Approver
        );
        assert_eq!(
            c("spiffe://leash.local/agent/ci-1", json!({})).unwrap(),
            Role::Agent("ci-1".into())
        );
        // A person's plain subject is no agent name, and says what to configure.
        let e = c("bob@example.org", json!({"groups": ["dev"]}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither an agent's nor an approver's"), "{e}");
        assert!(e.contains("auth.tokens.approvers"), "{e}");
        // An approver mapping never matches by accident: exact subjects are exact.
        assert!(c("alice@example.org.evil", json!({})).is_err());
        assert!(c("spiffe://evil.org/agent/x", json!({})).is_err());

        // A dedicated agent claim names the agent by its plain value.
        let t = token(
            "bob@example.org",
            json!({"leash_agent": "dev-1"}),
            "leash_agent",
        );
        assert_eq!(
            classify(&t, &map, "leash_agent", td).unwrap(),
            Role::Agent("dev-1".into())
        );
        let t = token("bob@example.org", json!({}), "leash_agent");
        assert!(classify(&t, &map, "leash_agent", td).is_err());
    }
}
