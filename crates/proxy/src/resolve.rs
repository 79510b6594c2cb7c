//! Name resolution for the proxy: an optional `/etc/hosts`-format override, consulted first and
//! exclusively for the names it lists, then the system resolver. Returns addresses only; whether
//! they may be reached is decided by the caller, which then connects to exactly these addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use agentbox_policy::net::normalize_host;

/// How long one DNS lookup may take.
const DNS_TIMEOUT: Duration = Duration::from_secs(10);

/// Where names not in the hosts override are looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dns {
    /// The system resolver (`getaddrinfo`, through tokio).
    System,
    /// Every lookup fails: lets tests exercise "unresolvable" without sending a DNS query.
    #[cfg(test)]
    Unavailable,
}

/// Resolves host names to addresses.
#[derive(Debug, Clone)]
pub(crate) struct Resolver {
    hosts: HashMap<String, Vec<IpAddr>>,
    dns: Dns,
}

impl Resolver {
    /// A resolver using `hosts_file` (read now, once) before `dns`.
    pub(crate) fn load(hosts_file: Option<&Path>, dns: Dns) -> std::io::Result<Self> {
        let hosts = match hosts_file {
            None => HashMap::new(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("reading {}: {e}", path.display()))
                })?;
                parse_hosts(&text)
            }
        };
        Ok(Self { hosts, dns })
    }

    /// Addresses of a normalised `host`, in preference order, without duplicates. The error is a
    /// one-line reason.
    pub(crate) async fn resolve(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, String> {
        if let Some(addrs) = self.hosts.get(host) {
            return Ok(addrs.clone());
        }
        match self.dns {
            Dns::System => {}
            #[cfg(test)]
            Dns::Unavailable => return Err(format!("cannot resolve {host}: DNS disabled")),
        }
        let lookup = tokio::net::lookup_host((host, port));
        let found = match tokio::time::timeout(DNS_TIMEOUT, lookup).await {
            Err(_) => return Err(format!("cannot resolve {host}: DNS timed out")),
            Ok(Err(e)) => return Err(format!("cannot resolve {host}: {e}")),
            Ok(Ok(found)) => found,
        };
        let mut addrs = Vec::new();
        for sa in found {
            if !addrs.contains(&sa.ip()) {
                addrs.push(sa.ip());
            }
        }
        if addrs.is_empty() {
            return Err(format!("cannot resolve {host}: no addresses"));
        }
        Ok(addrs)
    }
}

/// `address name [name...]` lines; `#` starts a comment; lines whose address does not parse are
/// ignored, as the C library does. Names are normalised; a name on several lines gets every
/// address, in file order.
fn parse_hosts(text: &str) -> HashMap<String, Vec<IpAddr>> {
    let mut hosts: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let Some(Ok(addr)) = fields.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        for name in fields.filter_map(normalize_host) {
            let addrs = hosts.entry(name).or_default();
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_format() {
        let hosts = parse_hosts(
            "# comment\n127.0.0.1 localhost Test.Example. # trailing\n\n\
             ::1\ttest.example other\nnot-an-ip bad.example\n198.51.100.2 other\n",
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(hosts["test.example"], vec![ip("127.0.0.1"), ip("::1")]);
        assert_eq!(hosts["other"], vec![ip("::1"), ip("198.51.100.2")]);
        assert_eq!(hosts["localhost"], vec![ip("127.0.0.1")]);
        assert!(!hosts.contains_key("bad.example"));
        assert!(!hosts.contains_key("not-an-ip"));
    }

    #[tokio::test]
    async fn hosts_entries_come_first_and_dns_can_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(&path, "198.51.100.7 pkg.test\n").unwrap();
        let r = Resolver::load(Some(&path), Dns::Unavailable).unwrap();
        assert_eq!(
            r.resolve("pkg.test", 443).await.unwrap(),
            vec!["198.51.100.7".parse::<IpAddr>().unwrap()]
        );
        let err = r.resolve("missing.test", 443).await.unwrap_err();
        assert!(err.starts_with("cannot resolve missing.test"), "{err}");
        let missing = Resolver::load(Some(&dir.path().join("nope")), Dns::System).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }
}
