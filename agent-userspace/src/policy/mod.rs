//! Node policy: per agent, the most a task may be granted (ceilings), its longest TTL,
//! its modes, whether it must state an intent, which grants wait for an approver, and
//! who may approve. The YAML file is compiled to Cedar policies, validated against
//! leash's Cedar schema at load, and every decision is Cedar's (see `cedar.rs`).

mod cedar;
mod ceiling;
pub(crate) use ceiling::normalized_path;
mod mapped;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

pub use cedar::SCHEMA;
pub use ceiling::{GrantSpec, Kind};

/// Why a policy file cannot be used. Each message names the file and the rule.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse policy {origin}: {source}")]
    Parse {
        origin: String,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("policy {origin}, rule {rule:?}: {message}")]
    Rule {
        origin: String,
        rule: String,
        message: String,
    },
    #[error("policy {origin}, rule {rule:?}: {field} {value:?}: {source}")]
    Duration {
        origin: String,
        rule: String,
        field: &'static str,
        value: String,
        /// Boxed: it is large, and errors are returned by value.
        #[source]
        source: Box<humantime::DurationError>,
    },
    #[error("policy {origin}: Cedar rejected the policies: {message}")]
    Cedar { origin: String, message: String },
}

/// The policy file as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Who may approve pending grants of any rule (besides each rule's own approvers).
    #[serde(default)]
    pub approvers: Approvers,
    /// First rule whose `agents` match an agent governs it; an agent no rule matches
    /// may not start tasks.
    #[serde(default)]
    pub rules: Vec<RuleFile>,
    /// Extra Cedar policies (typically `forbid`s) checked against the schema.
    #[serde(default)]
    pub cedar: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approvers {
    /// Caller uids (from the socket's peer credentials).
    #[serde(default)]
    pub uids: Vec<u32>,
    /// Token subjects (`sub`, e.g. a SPIFFE ID), when callers present tokens.
    #[serde(default)]
    pub subjects: Vec<String>,
}

impl Approvers {
    fn is_empty(&self) -> bool {
        self.uids.is_empty() && self.subjects.is_empty()
    }
}

/// Ceilings per grant kind.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ceilings {
    #[serde(default)]
    pub exec: Vec<String>,
    #[serde(default)]
    pub connect: Vec<String>,
    #[serde(default)]
    pub unix: Vec<String>,
    /// `read:` file grants: paths whose hierarchy a task may be granted to read.
    #[serde(default)]
    pub read: Vec<String>,
    /// `write:` file grants (each also covers `read:` grants inside it).
    #[serde(default)]
    pub write: Vec<String>,
}

impl Ceilings {
    #[must_use]
    pub fn of(&self, kind: Kind) -> &[String] {
        match kind {
            Kind::Exec => &self.exec,
            Kind::Connect => &self.connect,
            Kind::Unix => &self.unix,
            Kind::Read => &self.read,
            Kind::Write => &self.write,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub name: String,
    /// Agent names: exact, or with `*` matching any run of characters.
    pub agents: Vec<String>,
    /// Longest task TTL (`10m`, `1h`); absent: the daemon's `tasks.max_ttl`.
    #[serde(default)]
    pub max_ttl: Option<String>,
    /// Allowed modes; absent: both.
    #[serde(default)]
    pub modes: Option<Vec<crate::protocol::Mode>>,
    /// Tasks must state an intent.
    #[serde(default)]
    pub require_intent: bool,
    /// Allowed file modes (`open`, `writes`, `restricted`); absent: all three.
    /// `[restricted]` requires restricted tasks for these agents.
    #[serde(default)]
    pub file_modes: Option<Vec<crate::protocol::FileMode>>,
    #[serde(flatten)]
    pub allow: Ceilings,
    /// Grants allowed only once an approver approves them (they are within the
    /// ceiling, but pending until then). Takes precedence over the plain ceilings.
    #[serde(default)]
    pub approval: Ceilings,
    /// How long a grant may wait for approval (default 10m).
    #[serde(default)]
    pub pending_ttl: Option<String>,
    /// Approvers of this rule's grants, in addition to the top-level ones.
    #[serde(default)]
    pub approvers: Approvers,
}

/// A rule after checking.
#[derive(Clone, Debug)]
pub struct Rule {
    pub file: RuleFile,
    pub max_ttl: Option<Duration>,
    pub pending_ttl: Duration,
}

/// Default wait for an approval.
pub const PENDING_TTL: Duration = Duration::from_mins(10);

/// A loaded, validated policy.
pub struct Policy {
    pub origin: String,
    pub rules: Vec<Rule>,
    pub approvers: Approvers,
    engine: cedar::Engine,
}

/// The answer for a task request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Allowed once approved.
    Pending,
    /// Refused; the message names the grant and the rule.
    Deny(String),
}

/// Who is asking to approve.
#[derive(Clone, Debug, Default)]
pub struct Approver {
    pub uid: u32,
    pub subject: Option<String>,
}

impl Policy {
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile =
            serde_yaml_ng::from_str(text).map_err(|source| PolicyError::Parse {
                origin: origin.to_owned(),
                source,
            })?;
        let rule_err = |rule: &str, message: String| PolicyError::Rule {
            origin: origin.to_owned(),
            rule: rule.to_owned(),
            message,
        };
        let mut rules = Vec::new();
        let mut names = std::collections::HashSet::new();
        for r in &file.rules {
            if !valid_rule_name(&r.name) {
                return Err(rule_err(
                    &r.name,
                    "a rule name is 1-64 letters, digits, '-', '_' or '.'".into(),
                ));
            }
            if !names.insert(r.name.clone()) {
                return Err(rule_err(&r.name, "two rules have this name".into()));
            }
            if r.agents.is_empty() {
                return Err(rule_err(&r.name, "`agents` lists no agent".into()));
            }
            if !r.approval.read.is_empty() || !r.approval.write.is_empty() {
                return Err(rule_err(
                    &r.name,
                    "`approval` cannot hold read or write ceilings: file grants are fixed \
                     when the task is created (a Landlock domain cannot be widened later), \
                     so they cannot wait for an approver; list them under `read`/`write`"
                        .into(),
                ));
            }
            let dur = |field: &'static str, v: &Option<String>| {
                v.as_deref()
                    .map(|s| {
                        humantime::parse_duration(s.trim()).map_err(|source| {
                            PolicyError::Duration {
                                origin: origin.to_owned(),
                                rule: r.name.clone(),
                                field,
                                value: s.to_owned(),
                                source: Box::new(source),
                            }
                        })
                    })
                    .transpose()
            };
            rules.push(Rule {
                max_ttl: dur("max_ttl", &r.max_ttl)?,
                pending_ttl: dur("pending_ttl", &r.pending_ttl)?.unwrap_or(PENDING_TTL),
                file: r.clone(),
            });
        }
        let engine = cedar::Engine::compile(&file, &rules).map_err(|e| match e {
            cedar::CompileError::Rule { rule, message } => rule_err(&rule, message),
            cedar::CompileError::Cedar(message) => PolicyError::Cedar {
                origin: origin.to_owned(),
                message,
            },
        })?;
        Ok(Self {
            origin: origin.to_owned(),
            rules,
            approvers: file.approvers,
            engine,
        })
    }

    /// The rule governing `agent`: the first whose patterns match it.
    #[must_use]
    pub fn rule_for(&self, agent: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.file.agents.iter().any(|p| glob_match(p, agent)))
    }

    fn no_rule(&self, agent: &str) -> String {
        format!(
            "agent {agent:?} matches no rule of the policy {}: it may not start tasks or hold grants",
            self.origin
        )
    }

    /// May `agent` start a task with this TTL, mode and intent?
    #[must_use]
    pub fn check_task(
        &self,
        agent: &str,
        ttl: Duration,
        mode: crate::protocol::Mode,
        has_intent: bool,
    ) -> Verdict {
        let Some(rule) = self.rule_for(agent) else {
            return Verdict::Deny(self.no_rule(agent));
        };
        self.engine.check_task(rule, agent, ttl, mode, has_intent)
    }

    /// May `agent` hold a task with this file mode and these `read:`/`write:` grants?
    /// The first refusal, naming the grant and the rule. File grants are never pending:
    /// a rule's `approval` cannot hold file ceilings.
    #[must_use]
    pub fn check_files<'a>(
        &self,
        agent: &str,
        mode: crate::protocol::FileMode,
        grants: impl IntoIterator<Item = &'a str>,
    ) -> Verdict {
        if let v @ Verdict::Deny(_) = self.check_file_mode(agent, mode) {
            return v;
        }
        for spec in grants {
            let grant = match spec.parse::<GrantSpec>() {
                Ok(g) if g.kind.is_file() => g,
                _ => {
                    return Verdict::Deny(format!(
                        "file grant {spec:?}: expected read:PATH or write:PATH"
                    ));
                }
            };
            match self.check_grant(agent, &grant) {
                Verdict::Allow => {}
                Verdict::Deny(m) => return Verdict::Deny(m),
                Verdict::Pending => {
                    return Verdict::Deny(format!("{grant} cannot wait for approval"));
                }
            }
        }
        Verdict::Allow
    }

    /// May `agent` start a task in this file mode?
    #[must_use]
    pub fn check_file_mode(&self, agent: &str, mode: crate::protocol::FileMode) -> Verdict {
        let Some(rule) = self.rule_for(agent) else {
            return Verdict::Deny(self.no_rule(agent));
        };
        match &rule.file.file_modes {
            Some(modes) if !modes.contains(&mode) => {
                let list: Vec<String> = modes.iter().map(|m| format!("{:?}", m.as_str())).collect();
                Verdict::Deny(format!(
                    "file mode {mode} is not among the file_modes [{}] of rule {:?}; ask for one of them (--files)",
                    list.join(", "),
                    rule.file.name
                ))
            }
            _ => Verdict::Allow,
        }
    }

    /// May `agent` hold this grant (now, or once approved)?
    #[must_use]
    pub fn check_grant(&self, agent: &str, grant: &GrantSpec) -> Verdict {
        let Some(rule) = self.rule_for(agent) else {
            return Verdict::Deny(self.no_rule(agent));
        };
        self.engine.check_grant(rule, agent, grant)
    }

    /// May this caller approve or reject grants of `agent`'s tasks?
    #[must_use]
    pub fn may_approve(&self, approver: &Approver, agent: &str) -> bool {
        self.rule_for(agent)
            .is_some_and(|rule| self.engine.may_approve(rule, agent, approver))
    }

    /// The generated Cedar text (for `leash policy check --cedar`).
    #[must_use]
    pub fn cedar_text(&self) -> String {
        self.engine.text()
    }

    /// Rules matching no one reachable: a later rule all of whose patterns an earlier
    /// rule's patterns already cover exactly. Warnings for `leash policy check`.
    #[must_use]
    pub fn warnings(&self) -> Vec<String> {
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        let mut out = Vec::new();
        for r in &self.rules {
            if r.file.agents.iter().all(|a| seen.contains_key(a.as_str())) {
                out.push(format!(
                    "rule {:?} is never used: earlier rules list all its agents",
                    r.file.name
                ));
            }
            for a in &r.file.agents {
                seen.entry(a).or_insert(&r.file.name);
            }
            let needs_approval = Kind::ALL.iter().any(|k| !r.file.approval.of(*k).is_empty());
            if needs_approval && r.file.approvers.is_empty() && self.approvers.is_empty() {
                out.push(format!(
                    "rule {:?} needs approvals but names no approver",
                    r.file.name
                ));
            }
        }
        out
    }
}

fn valid_rule_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `*` matches any run of characters; everything else itself.
#[must_use]
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests;
