//! The network section of a policy: which mode, and for `allow` the proxy's rules.

use std::path::PathBuf;

use crate::net::{Cidr, DomainRule};
use crate::{Env, NetworkSpec, PolicyError};

/// The port of the egress proxy inside an `allow` sandbox (on its loopback).
pub const PROXY_PORT: u16 = 3128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetMode {
    /// An empty network namespace: loopback only.
    None,
    /// Loopback only, plus agentbox's egress proxy on 127.0.0.1:3128, which admits only the
    /// allowlisted names.
    Allow,
    /// A veth with NAT to the host's network; private, link-local and host addresses dropped.
    Open,
}

impl NetMode {
    pub fn name(self) -> &'static str {
        match self {
            NetMode::None => "none",
            NetMode::Allow => "allow",
            NetMode::Open => "open",
        }
    }
}

/// A validated network policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub mode: NetMode,
    pub allow: Vec<DomainRule>,
    pub deny: Vec<DomainRule>,
    pub cidrs: Vec<Cidr>,
    pub audit: Option<PathBuf>,
    pub hosts_file: Option<PathBuf>,
}

impl Network {
    pub const NONE: Network = Network {
        mode: NetMode::None,
        allow: Vec::new(),
        deny: Vec::new(),
        cidrs: Vec::new(),
        audit: None,
        hosts_file: None,
    };
}

pub(crate) fn validate(spec: Option<&NetworkSpec>) -> Result<Network, PolicyError> {
    let Some(spec) = spec else {
        return Ok(Network::NONE);
    };
    let mut allow_names: Vec<&str> = spec.allow.iter().map(String::as_str).collect();
    let mode = match spec.mode.split_once(':') {
        Some(("allow", list)) => {
            if list.trim().is_empty() {
                return Err(PolicyError::new(
                    "network.mode",
                    &spec.mode,
                    "empty allowlist: give at least one host name (allow:pypi.org,*.github.com)",
                ));
            }
            allow_names.extend(list.split(',').map(str::trim));
            NetMode::Allow
        }
        None if spec.mode == "none" => NetMode::None,
        None if spec.mode == "allow" => NetMode::Allow,
        None if spec.mode == "open" => NetMode::Open,
        _ => {
            return Err(PolicyError::new(
                "network.mode",
                &spec.mode,
                "unknown network mode (known: none, allow:NAME[,NAME...], open)",
            ))
        }
    };
    let rules = |field: &str, names: &[&str]| -> Result<Vec<DomainRule>, PolicyError> {
        let mut rules: Vec<DomainRule> = Vec::new();
        for name in names {
            let rule: DomainRule = name
                .parse()
                .map_err(|reason: String| PolicyError::new(field, *name, reason))?;
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
        Ok(rules)
    };
    let allow = rules("network.allow", &allow_names)?;
    let deny_names: Vec<&str> = spec.deny.iter().map(String::as_str).collect();
    let deny = rules("network.deny", &deny_names)?;
    let mut cidrs = Vec::new();
    for text in &spec.cidrs {
        let cidr: Cidr = text
            .parse()
            .map_err(|reason: String| PolicyError::new("network.cidrs", text, reason))?;
        cidrs.push(cidr);
    }
    let path = |field: &str, value: &Option<String>| -> Result<Option<PathBuf>, PolicyError> {
        match value {
            None => Ok(None),
            Some(p) if p.starts_with('/') && !p.contains('\0') => Ok(Some(PathBuf::from(p))),
            Some(p) => Err(PolicyError::new(field, p, "must be an absolute host path")),
        }
    };
    let audit = path("network.audit", &spec.audit)?;
    let hosts_file = path("network.hosts_file", &spec.hosts_file)?;
    match mode {
        NetMode::Allow if allow.is_empty() => {
            return Err(PolicyError::new(
                "network.allow",
                "",
                "empty allowlist: give at least one host name (allow:pypi.org,*.github.com)",
            ))
        }
        NetMode::Allow => {}
        _ => {
            let only_allow = [
                ("network.allow", !allow.is_empty()),
                ("network.deny", !deny.is_empty()),
                ("network.audit", audit.is_some()),
                ("network.hosts_file", hosts_file.is_some()),
            ];
            if let Some((field, _)) = only_allow.iter().find(|(_, set)| *set) {
                return Err(PolicyError::new(
                    *field,
                    mode.name(),
                    "only means something with network mode allow (the egress proxy)",
                ));
            }
            if mode == NetMode::None && !cidrs.is_empty() {
                return Err(PolicyError::new(
                    "network.cidrs",
                    spec.cidrs.join(","),
                    "network mode none reaches nothing: use allow or open",
                ));
            }
        }
    }
    Ok(Network {
        mode,
        allow,
        deny,
        cidrs,
        audit,
        hosts_file,
    })
}

/// In `allow` mode, points the usual proxy variables at the egress proxy (the user's own values
/// win) and keeps loopback direct.
pub(crate) fn add_proxy_env(network: &Network, env: &mut Env) {
    if network.mode != NetMode::Allow {
        return;
    }
    let url = format!("http://127.0.0.1:{PROXY_PORT}");
    let no_proxy = "localhost,127.0.0.1,::1".to_string();
    for (key, value) in [
        ("http_proxy", &url),
        ("https_proxy", &url),
        ("HTTP_PROXY", &url),
        ("HTTPS_PROXY", &url),
        ("no_proxy", &no_proxy),
        ("NO_PROXY", &no_proxy),
    ] {
        if !env.iter().any(|(k, _)| k == key) {
            env.push((key.to_string(), value.clone()));
        }
    }
}

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
