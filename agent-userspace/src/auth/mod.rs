//! Who is calling: the socket's peer credentials checked against the uid/gid
//! allow-list, and optionally a verified bearer token naming the agent, or an approver.

pub mod classify;
pub mod jwt;
pub mod keys;

use std::collections::HashSet;

use crate::config::{ApproverTokens, AuthConfig};

/// Where the caller's connecting process stands, checked again on every request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Standing {
    /// A live process outside every task.
    Host,
    /// A process inside this task, now or when it connected.
    InTask(u64),
    /// The connecting process has exited, or its pid names another process now: the
    /// most restricted caller (no change, reads of nothing).
    #[default]
    Gone,
}

/// An authenticated caller.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// The connecting process, while it is alive (`None` once it is [`Standing::Gone`]).
    pub pid: Option<u32>,
    pub uid: u32,
    pub standing: Standing,
    /// Token `sub`, when a token was presented.
    pub subject: Option<String>,
    /// The agent the token names; `None` for an approver's token (`auth.tokens.approvers`).
    pub agent: Option<String>,
}

impl Caller {
    /// `uid 0` or `uid 0, sub spiffe://...`, for audit events.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.subject {
            Some(s) => format!("uid {}, sub {s}", self.uid),
            None => format!("uid {}", self.uid),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("uid {uid} is not allowed to call leash (auth.uids / auth.gids in the daemon config)")]
    NotAllowed { uid: u32 },
    #[error("the caller's credentials could not be read")]
    NoCredentials,
    #[error("{0}")]
    Token(#[from] jwt::TokenError),
    #[error("the Authorization header must be `Bearer <token>`")]
    BadHeader,
}

pub struct Authenticator {
    uids: HashSet<u32>,
    gids: HashSet<u32>,
    tokens: Option<jwt::Verifier>,
    /// With tokens on: which are approvers', and the claim naming agents.
    approvers: ApproverTokens,
    agent_claim: String,
    trust_domain: String,
}

impl Authenticator {
    /// `socket_gid`: the socket's group, whose members may always call.
    pub fn new(
        config: &AuthConfig,
        socket_gid: Option<u32>,
        trust_domain: &str,
    ) -> Result<Self, jwt::TokenError> {
        let tokens = config
            .tokens
            .as_ref()
            .map(|t| jwt::Verifier::load(&t.jwks, &t.issuer, &t.audience, &t.agent_claim))
            .transpose()?;
        Ok(Self {
            uids: config.uids.iter().copied().collect(),
            gids: config.gids.iter().copied().chain(socket_gid).collect(),
            tokens,
            approvers: config
                .tokens
                .as_ref()
                .map(|t| t.approvers.clone())
                .unwrap_or_default(),
            agent_claim: config
                .tokens
                .as_ref()
                .map_or_else(|| "sub".to_owned(), |t| t.agent_claim.clone()),
            trust_domain: trust_domain.to_owned(),
        })
    }

    #[must_use]
    pub fn tokens_on(&self) -> bool {
        self.tokens.is_some()
    }

    /// Checks the peer and, when tokens are on and one is given, the token.
    pub fn authenticate(
        &self,
        pid: Option<u32>,
        uid: u32,
        gid: u32,
        authorization: Option<&str>,
    ) -> Result<Caller, AuthError> {
        if uid == u32::MAX {
            return Err(AuthError::NoCredentials);
        }
        let allowed = self.uids.contains(&uid)
            || self.gids.contains(&gid)
            || pid.is_some_and(|p| groups_of(p).iter().any(|g| self.gids.contains(g)));
        if !allowed {
            return Err(AuthError::NotAllowed { uid });
        }
        let mut caller = Caller {
            pid,
            uid,
            ..Caller::default()
        };
        if let (Some(v), Some(h)) = (&self.tokens, authorization) {
            let token = h
                .strip_prefix("Bearer ")
                .ok_or(AuthError::BadHeader)?
                .trim();
            let verified = v.verify(token)?;
            let role = classify::classify(
                &verified,
                &self.approvers,
                &self.agent_claim,
                &self.trust_domain,
            )?;
            if let classify::Role::Agent(agent) = role {
                caller.agent = Some(agent);
            }
            caller.subject = Some(verified.subject);
        }
        Ok(caller)
    }
}

/// Supplementary groups of a process, from `/proc/<pid>/status`.
fn groups_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}
