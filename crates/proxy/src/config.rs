//! The proxy's start-up configuration: plain serde data handed over by agentbox, checked once by
//! [`ProxyConfig::validate`] before anything listens or connects.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::allowlist::Rules;

/// Everything the egress proxy of one sandbox needs to know.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Sandbox id, written into every audit line.
    pub sandbox: String,
    /// Allowed names: [`agentbox_policy::net::DomainRule`] strings (`pypi.org`, `*.example.com`).
    pub allow: Vec<String>,
    /// Refused names, same syntax; deny wins over allow.
    #[serde(default)]
    pub deny: Vec<String>,
    /// [`agentbox_policy::net::Cidr`] strings: IP literals inside them are allowed, and names
    /// resolving inside them are allowed even if `forbidden_reason()` says otherwise.
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// `/etc/hosts`-format file consulted before DNS; names listed there resolve only to the
    /// addresses listed for them.
    #[serde(default)]
    pub hosts_file: Option<PathBuf>,
    /// JSON-lines audit log, appended to, created with mode 0600.
    #[serde(default)]
    pub audit: Option<PathBuf>,
    /// Unix socket for run-time allowlist changes; created by the proxy (mode 0600) and removed
    /// when it exits.
    #[serde(default)]
    pub control: Option<PathBuf>,
}

impl ProxyConfig {
    /// Checks that every rule and CIDR parses; the error names the first bad value and why.
    pub fn validate(&self) -> Result<(), String> {
        Rules::compile(&self.allow, &self.deny, &self.cidrs).map(|_| ())
    }
}
