//! Network policy vocabulary: allowlist entries ([`DomainRule`]), networks ([`Cidr`]), host-name
//! normalisation and the classification of addresses a sandbox must never reach
//! ([`forbidden_reason`]). Pure functions and plain data: no I/O, no DNS, no sockets.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Longest DNS name accepted, in characters, without the trailing dot.
const MAX_NAME_LEN: usize = 253;
/// Longest DNS label accepted, in characters.
const MAX_LABEL_LEN: usize = 63;

/// One allowlist entry: an exact host name (`pypi.org`) or a wildcard `*.example.com`
/// which matches every subdomain at any depth (`a.example.com`, `a.b.example.com`) but NOT
/// `example.com` itself.
///
/// Names are stored normalised (lowercase, no trailing dot); a wildcard is stored without its `*.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DomainRule {
    /// Matches this one name only.
    Exact(String),
    /// Matches every name strictly below this one (stored without the leading `*.`).
    Suffix(String),
}

impl FromStr for DomainRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty host name".to_string());
        }
        if s.trim() != s || s.contains(char::is_whitespace) {
            return Err("host name contains white space".to_string());
        }
        if looks_like_ip(s) {
            return Err("not a host name (an IP address? allow it as a CIDR)".to_string());
        }
        let (wildcard, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if name.contains('*') {
            return Err("wildcards are only allowed as a leading \"*.\"".to_string());
        }
        let name = check_host(name)?;
        let last = name.rsplit('.').next().unwrap_or_default();
        if last.bytes().all(|b| b.is_ascii_digit()) {
            return Err("not a host name (an IP address? allow it as a CIDR)".to_string());
        }
        Ok(if wildcard {
            Self::Suffix(name)
        } else {
            Self::Exact(name)
        })
    }
}

impl fmt::Display for DomainRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Suffix(name) => write!(f, "*.{name}"),
        }
    }
}

impl DomainRule {
    /// Whether `host` (as received, any case, optional trailing dot) is covered by this rule.
    /// An invalid host name matches nothing.
    pub fn matches(&self, host: &str) -> bool {
        let Some(host) = normalize_host(host) else {
            return false;
        };
        match self {
            Self::Exact(name) => host == *name,
            Self::Suffix(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

/// Normalises a host name as the proxy receives it: lowercase, one trailing dot removed; `None` if it
/// is not a valid DNS name (LDH labels 1-63 chars, total <= 253, no leading/trailing hyphen in a
/// label; underscores allowed in labels because real names use them).
pub fn normalize_host(host: &str) -> Option<String> {
    check_host(host).ok()
}

/// [`normalize_host`] with a reason for refusal.
fn check_host(host: &str) -> Result<String, String> {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() {
        return Err("empty host name".to_string());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("name longer than {MAX_NAME_LEN} characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (two dots in a row?)".to_string());
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!("label longer than {MAX_LABEL_LEN} characters"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with a hyphen"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(match c {
                '*' => "wildcards are only allowed as a leading \"*.\"".to_string(),
                _ => format!("character {c:?} is not allowed in a host name"),
            });
        }
    }
    Ok(name.to_ascii_lowercase())
}

/// Whether `s` is an IP literal, bare or bracketed, or an IP network.
fn looks_like_ip(s: &str) -> bool {
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    let addr = bare.split_once('/').map_or(bare, |(a, _)| a);
    addr.parse::<IpAddr>().is_ok()
}

/// An IPv4 or IPv6 network. Parsing accepts `10.0.0.0/8`, `2001:db8::/32`, and a bare address
/// (= `/32` or `/128`). Host bits must be clear; [`fmt::Display`] always writes the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address (host bits clear).
    pub addr: IpAddr,
    /// Prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| "not an IP address or network (like 10.0.0.0/8)".to_string())?;
        let max = max_prefix(addr);
        let prefix = match prefix_text {
            None => max,
            Some(p) => {
                let n: u8 = p
                    .parse()
                    .ok()
                    .filter(|_| p.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| format!("prefix {p:?} is not a number"))?;
                if n > max {
                    return Err(format!("prefix /{n} is out of range (0-{max})"));
                }
                n
            }
        };
        let network = mask(addr, prefix);
        if network != addr {
            return Err(format!(
                "host bits are set (did you mean {network}/{prefix}?)"
            ));
        }
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` lies in this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is treated
    /// as its IPv4 address (and also still matches an IPv6 network written in mapped form).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.contains_exact(ip) || self.contains_exact(ip.to_canonical())
    }

    fn contains_exact(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `addr` with every bit after the first `prefix` cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX
                .checked_shl(32u32.saturating_sub(u32::from(prefix)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX
                .checked_shl(128u32.saturating_sub(u32::from(prefix)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// Why an address must never be reached from a sandbox unless a CIDR allows it explicitly; `None`
/// for globally routable addresses.
///
/// Reasons: `"unspecified"`, `"loopback"`, `"private"`, `"shared address space"`, `"link-local"`
/// (including the cloud metadata service 169.254.169.254), `"multicast"`, `"reserved"` (240/4,
/// broadcast, IETF protocol assignments, deprecated or special-purpose IPv6 blocks) and
/// `"benchmarking"`.
///
/// IPv6 forms that embed an IPv4 address (IPv4-mapped `::ffff:0:0/96`, IPv4-compatible `::/96`,
/// IPv4-translated `::ffff:0:0:0/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`, Teredo `2001::/32`)
/// are judged by the IPv4 address they carry, so a name cannot reach 127.0.0.1 by resolving to
/// `::ffff:127.0.0.1` or `2002:7f00:1::`. The deprecated IPv4-compatible and IPv4-translated forms
/// are refused as `"reserved"` even when the address they carry is global.
///
/// Documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32,
/// 3fff::/20) are deliberately NOT forbidden: they are not routed on the internet, so allowing them
/// costs nothing, and agentbox's tests use 198.51.100.0/24 as their test internet.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

/// Whether the top `prefix` bits of `bits` equal those of `net`.
fn in_v4(bits: u32, net: [u8; 4], prefix: u32) -> bool {
    let m = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    bits & m == u32::from_be_bytes(net) & m
}

fn in_v6(bits: u128, net: Ipv6Addr, prefix: u32) -> bool {
    let m = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    bits & m == u128::from(net) & m
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let b = u32::from(ip);
    const TABLE: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "unspecified"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([10, 0, 0, 0], 8, "private"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 168, 0, 0], 16, "private"),
        ([100, 64, 0, 0], 10, "shared address space"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved"), // includes broadcast 255.255.255.255
        ([192, 0, 0, 0], 24, "reserved"), // IETF protocol assignments
        ([198, 18, 0, 0], 15, "benchmarking"),
    ];
    TABLE
        .iter()
        .find(|(net, prefix, _)| in_v4(b, *net, *prefix))
        .map(|(_, _, reason)| *reason)
}

fn v6(segments: [u16; 8]) -> Ipv6Addr {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Addr::new(a, b, c, d, e, f, g, h)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let b = u128::from(ip);
    // The low 32 bits, for forms that carry an IPv4 address at the end.
    let low_v4 = Ipv4Addr::from((b & 0xffff_ffff) as u32);
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // IPv4-mapped ::ffff:a.b.c.d: the kernel connects to the IPv4 address itself.
    if in_v6(b, v6([0, 0, 0, 0, 0, 0xffff, 0, 0]), 96) {
        return forbidden_v4(low_v4);
    }
    // IPv4-compatible ::a.b.c.d and IPv4-translated ::ffff:0:a.b.c.d (both deprecated).
    if in_v6(b, Ipv6Addr::UNSPECIFIED, 96) || in_v6(b, v6([0, 0, 0, 0, 0xffff, 0, 0, 0]), 96) {
        return Some(forbidden_v4(low_v4).unwrap_or("reserved"));
    }
    // NAT64 well-known prefix: a gateway translates to the embedded IPv4 address.
    if in_v6(b, v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0]), 96) {
        return forbidden_v4(low_v4);
    }
    // Local-use NAT64 (RFC 8215): translated by a local gateway into local networks.
    if in_v6(b, v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0]), 48) {
        return Some("private");
    }
    // 6to4: 2002:AABB:CCDD::/48 tunnels to a.b.c.d.
    if in_v6(b, v6([0x2002, 0, 0, 0, 0, 0, 0, 0]), 16) {
        let embedded = Ipv4Addr::from(((b >> 80) & 0xffff_ffff) as u32);
        return forbidden_v4(embedded);
    }
    // Teredo 2001:0:SSSS:SSSS:flags:port:CCCC:CCCC, client address stored inverted.
    if in_v6(b, v6([0x2001, 0, 0, 0, 0, 0, 0, 0]), 32) {
        let server = Ipv4Addr::from(((b >> 64) & 0xffff_ffff) as u32);
        let client = Ipv4Addr::from(!((b & 0xffff_ffff) as u32));
        return forbidden_v4(server).or_else(|| forbidden_v4(client));
    }
    const TABLE: &[([u16; 8], u32, &str)] = &[
        ([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48, "benchmarking"),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, ""), // documentation: allowed
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, "reserved"), // IETF protocol assignments
        ([0, 0, 0, 0, 0, 0, 0, 0], 8, "reserved"),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "reserved"), // discard-only
        ([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, "reserved"), // SRv6 SIDs
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "private"),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "private"), // deprecated site-local
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local"),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast"),
    ];
    TABLE
        .iter()
        .find(|(net, prefix, _)| in_v6(b, v6(*net), *prefix))
        .map(|(_, _, reason)| *reason)
        .filter(|reason| !reason.is_empty())
}

#[cfg(test)]
#[path = "net_tests.rs"]
mod tests;
