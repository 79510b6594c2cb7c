//! The decision for one destination: may this sandbox reach `host:port`, and at which checked
//! addresses. Name rules first, then resolution, then every address is checked against
//! `forbidden_reason` unless a CIDR allows it. The caller connects to the returned socket
//! addresses only and never resolves the name again, which is what defeats DNS rebinding.

use std::net::{IpAddr, SocketAddr};

use agentbox_policy::net::{forbidden_reason, normalize_host};

use crate::allowlist::Rules;
use crate::resolve::Resolver;

/// A refusal: the HTTP status to answer with and a one-line reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denial {
    pub(crate) status: u16,
    pub(crate) reason: String,
}

impl Denial {
    pub(crate) fn new(status: u16, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }
}

/// Permission to connect: the checked addresses, in the order to try them, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Allowed {
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) reason: String,
}

/// Decides whether `host` (as received, IPv6 literals without brackets) on `port` may be reached.
pub(crate) async fn decide(
    host: &str,
    port: u16,
    rules: &Rules,
    resolver: &Resolver,
) -> Result<Allowed, Denial> {
    if port == 0 {
        return Err(Denial::new(400, "port 0 is not a destination"));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return match rules.cidr_for(ip) {
            Some(cidr) => Ok(Allowed {
                addrs: vec![SocketAddr::new(ip, port)],
                reason: format!("allowed by CIDR {cidr}"),
            }),
            None => Err(Denial::new(
                403,
                format!("{host}: IP addresses are refused; allow a CIDR"),
            )),
        };
    }
    let Some(name) = normalize_host(host) else {
        return Err(Denial::new(
            400,
            format!("{host:?} is not a valid host name"),
        ));
    };
    let rule_reason = rules
        .name_verdict(&name)
        .map_err(|reason| Denial::new(403, reason))?;
    let resolved = resolver
        .resolve(&name, port)
        .await
        .map_err(|reason| Denial::new(502, reason))?;
    let mut first_refused = None;
    let mut addrs = Vec::new();
    for ip in resolved {
        match forbidden_reason(ip) {
            Some(why) if rules.cidr_for(ip).is_none() => {
                first_refused.get_or_insert((ip, why));
            }
            _ => addrs.push(SocketAddr::new(ip, port)),
        }
    }
    if addrs.is_empty() {
        let reason = match first_refused {
            Some((ip, why)) => format!("{name} resolves to {ip} ({why})"),
            None => format!("cannot resolve {name}: no addresses"),
        };
        let status = if first_refused.is_some() { 403 } else { 502 };
        return Err(Denial::new(status, reason));
    }
    Ok(Allowed {
        addrs,
        reason: rule_reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::Dns;

    fn rules(allow: &[&str], deny: &[&str], cidrs: &[&str]) -> Rules {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Rules::compile(&s(allow), &s(deny), &s(cidrs)).unwrap()
    }

    async fn run(host: &str, rules: &Rules) -> Result<Allowed, Denial> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(
            &path,
            "198.51.100.2 pkg.test\n10.0.0.5 inner.test\n127.0.0.1 loop.test\n\
             10.0.0.6 mixed.test\n::ffff:127.0.0.1 mixed.test\n198.51.100.3 mixed.test\n\
             ::ffff:169.254.169.254 meta.test\n2002:7f00:1:: sixtofour.test\n",
        )
        .unwrap();
        let resolver = Resolver::load(Some(&path), Dns::Unavailable).unwrap();
        decide(host, 443, rules, &resolver).await
    }

    fn denial(r: Result<Allowed, Denial>) -> (u16, String) {
        let d = r.unwrap_err();
        (d.status, d.reason)
    }

    #[tokio::test]
    async fn names_and_addresses() {
        let r = rules(&["*.test"], &["inner.test"], &[]);
        let ok = run("PKG.test.", &r).await.unwrap();
        assert_eq!(ok.addrs, vec!["198.51.100.2:443".parse().unwrap()]);
        assert_eq!(ok.reason, "allowed by rule *.test");
        assert_eq!(
            denial(run("inner.test", &r).await),
            (403, "inner.test is denied by rule inner.test".into())
        );
        assert_eq!(
            denial(run("loop.test", &r).await),
            (403, "loop.test resolves to 127.0.0.1 (loopback)".into())
        );
        assert_eq!(
            denial(run("meta.test", &r).await),
            (
                403,
                "meta.test resolves to ::ffff:169.254.169.254 (link-local)".into()
            )
        );
        assert_eq!(
            denial(run("sixtofour.test", &r).await),
            (
                403,
                "sixtofour.test resolves to 2002:7f00:1:: (loopback)".into()
            )
        );
        // Forbidden addresses are dropped, the rest kept in order.
        let mixed = run("mixed.test", &r).await.unwrap();
        assert_eq!(mixed.addrs, vec!["198.51.100.3:443".parse().unwrap()]);
        assert_eq!(
            denial(run("other.example", &r).await),
            (403, "other.example is not on the allowlist".into())
        );
        assert_eq!(denial(run("nowhere.test", &r).await).0, 502);
        assert_eq!(denial(run("bad..name", &r).await).0, 400);
    }

    #[tokio::test]
    async fn cidrs_allow_literals_and_forbidden_resolutions() {
        let r = rules(
            &["loop.test", "mixed.test"],
            &[],
            &["127.0.0.1/32", "10.0.0.0/8"],
        );
        let ok = run("loop.test", &r).await.unwrap();
        assert_eq!(ok.addrs, vec!["127.0.0.1:443".parse().unwrap()]);
        let mixed = run("mixed.test", &r).await.unwrap();
        assert_eq!(mixed.addrs.len(), 3);
        let lit = run("10.1.2.3", &r).await.unwrap();
        assert_eq!(lit.reason, "allowed by CIDR 10.0.0.0/8");
        assert!(run("::ffff:127.0.0.1", &r).await.is_ok());
        let (status, reason) = denial(run("198.51.100.2", &r).await);
        assert_eq!(status, 403);
        assert!(reason.contains("IP addresses are refused; allow a CIDR"));
        assert_eq!(denial(run("::1", &r).await).0, 403);
    }
}
