//! The lists the proxy decides by: allowed and denied names, allowed networks. [`Rules`] is the
//! parsed, trusted form; [`Allowlist`] is its wire form (control socket, `agentbox net`).
//! Pure: no I/O.

use std::net::IpAddr;

use agentbox_policy::net::{Cidr, DomainRule};
use serde::{Deserialize, Serialize};

/// The lists as text, in the order they were given: what the control socket reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowlist {
    /// Allowed names (`pypi.org`, `*.example.com`).
    pub allow: Vec<String>,
    /// Refused names; deny wins over allow.
    pub deny: Vec<String>,
    /// Allowed networks (`10.0.0.0/8`); fixed at start-up.
    pub cidrs: Vec<String>,
}

/// Parsed lists. Immutable: a change builds a new value that replaces the old one for new
/// connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rules {
    allow: Vec<DomainRule>,
    deny: Vec<DomainRule>,
    cidrs: Vec<Cidr>,
}

impl Rules {
    /// Parses every entry; the error names the list, the value and why it is refused.
    pub(crate) fn compile(
        allow: &[String],
        deny: &[String],
        cidrs: &[String],
    ) -> Result<Self, String> {
        let mut rules = Self::default();
        for text in allow {
            push_unique(&mut rules.allow, parse_rule("allow", text)?);
        }
        for text in deny {
            push_unique(&mut rules.deny, parse_rule("deny", text)?);
        }
        for text in cidrs {
            let cidr: Cidr = text.parse().map_err(|e| format!("cidrs: {text:?}: {e}"))?;
            push_unique(&mut rules.cidrs, cidr);
        }
        Ok(rules)
    }

    /// The lists as text, each entry in its canonical spelling.
    pub(crate) fn to_allowlist(&self) -> Allowlist {
        let text = |rules: &[DomainRule]| rules.iter().map(ToString::to_string).collect();
        Allowlist {
            allow: text(&self.allow),
            deny: text(&self.deny),
            cidrs: self.cidrs.iter().map(ToString::to_string).collect(),
        }
    }

    /// A copy with `allow` entries added to the allow list (and removed from deny) and `deny`
    /// entries added to the deny list (and removed from allow). If any value is invalid, nothing
    /// changes and the error names it.
    pub(crate) fn updated(&self, allow: &[String], deny: &[String]) -> Result<Self, String> {
        let allow = allow
            .iter()
            .map(|t| parse_rule("allow", t))
            .collect::<Result<Vec<_>, _>>()?;
        let deny = deny
            .iter()
            .map(|t| parse_rule("deny", t))
            .collect::<Result<Vec<_>, _>>()?;
        let mut next = self.clone();
        for rule in allow {
            next.deny.retain(|r| *r != rule);
            push_unique(&mut next.allow, rule);
        }
        for rule in deny {
            next.allow.retain(|r| *r != rule);
            push_unique(&mut next.deny, rule);
        }
        Ok(next)
    }

    /// Whether a (normalised) host name may be connected to by name: `Ok` with the allowing rule,
    /// or `Err` with the reason it is refused. Deny rules are checked first.
    pub(crate) fn name_verdict(&self, host: &str) -> Result<String, String> {
        if let Some(rule) = self.deny.iter().find(|r| r.matches(host)) {
            return Err(format!("{host} is denied by rule {rule}"));
        }
        match self.allow.iter().find(|r| r.matches(host)) {
            Some(rule) => Ok(format!("allowed by rule {rule}")),
            None => Err(format!("{host} is not on the allowlist")),
        }
    }

    /// The first allowed network containing `ip`, if any.
    pub(crate) fn cidr_for(&self, ip: IpAddr) -> Option<&Cidr> {
        self.cidrs.iter().find(|c| c.contains(ip))
    }
}

fn parse_rule(list: &str, text: &str) -> Result<DomainRule, String> {
    text.parse()
        .map_err(|e| format!("{list}: invalid rule {text:?}: {e}"))
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn rules(allow: &[&str], deny: &[&str]) -> Rules {
        Rules::compile(&strings(allow), &strings(deny), &strings(&["10.0.0.0/8"])).unwrap()
    }

    #[test]
    fn deny_beats_wildcard_allow() {
        let r = rules(&["*.example.com", "pypi.org"], &["evil.example.com"]);
        assert_eq!(
            r.name_verdict("a.example.com").unwrap(),
            "allowed by rule *.example.com"
        );
        assert_eq!(
            r.name_verdict("evil.example.com").unwrap_err(),
            "evil.example.com is denied by rule evil.example.com"
        );
        assert_eq!(
            r.name_verdict("example.com").unwrap_err(),
            "example.com is not on the allowlist"
        );
        assert!(r.name_verdict("pypi.org").is_ok());
    }

    #[test]
    fn compile_names_the_bad_value() {
        let err = Rules::compile(&strings(&["ok.com", "a..b"]), &[], &[]).unwrap_err();
        assert!(err.starts_with("allow: invalid rule \"a..b\": "), "{err}");
        let err = Rules::compile(&[], &strings(&["1.2.3.4"]), &[]).unwrap_err();
        assert!(err.starts_with("deny: invalid rule \"1.2.3.4\": "), "{err}");
        let err = Rules::compile(&[], &[], &strings(&["10.0.0.1/8"])).unwrap_err();
        assert!(err.contains("host bits are set"), "{err}");
    }

    #[test]
    fn update_moves_entries_between_lists() {
        let r = rules(&["a.com", "b.com"], &["c.com"]);
        let next = r
            .updated(&strings(&["C.com.", "d.com"]), &strings(&["a.com"]))
            .unwrap();
        let list = next.to_allowlist();
        assert_eq!(list.allow, strings(&["b.com", "c.com", "d.com"]));
        assert_eq!(list.deny, strings(&["a.com"]));
        assert_eq!(list.cidrs, strings(&["10.0.0.0/8"]));
        // Same value in both: deny is applied last and wins.
        let both = r
            .updated(&strings(&["x.com"]), &strings(&["x.com"]))
            .unwrap();
        assert_eq!(both.to_allowlist().deny, strings(&["c.com", "x.com"]));
        assert!(!both.to_allowlist().allow.contains(&"x.com".to_string()));
    }

    #[test]
    fn update_with_an_invalid_value_changes_nothing() {
        let r = rules(&["a.com"], &[]);
        let err = r
            .updated(&strings(&["ok.com", "bad*.com"]), &[])
            .unwrap_err();
        assert!(err.contains("\"bad*.com\""), "{err}");
        assert_eq!(r.to_allowlist().allow, strings(&["a.com"]));
    }

    #[test]
    fn cidr_lookup() {
        let r = rules(&[], &[]);
        assert!(r.cidr_for("10.1.1.1".parse().unwrap()).is_some());
        assert!(r.cidr_for("::ffff:10.1.1.1".parse().unwrap()).is_some());
        assert!(r.cidr_for("11.1.1.1".parse().unwrap()).is_none());
    }
}
