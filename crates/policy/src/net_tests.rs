use super::*;

fn rule(s: &str) -> DomainRule {
    s.parse().unwrap()
}

fn rule_err(s: &str) -> String {
    match s.parse::<DomainRule>() {
        Err(e) => e,
        Ok(r) => panic!("{s:?} accepted as {r:?}"),
    }
}

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn cidr_err(s: &str) -> String {
    match s.parse::<Cidr>() {
        Err(e) => e,
        Ok(c) => panic!("{s:?} accepted as {c:?}"),
    }
}

fn reason(s: &str) -> Option<&'static str> {
    forbidden_reason(s.parse().unwrap())
}

#[test]
fn rules_parse_and_round_trip() {
    assert_eq!(rule("pypi.org"), DomainRule::Exact("pypi.org".into()));
    assert_eq!(
        rule("*.example.com"),
        DomainRule::Suffix("example.com".into())
    );
    assert_eq!(rule("PyPI.Org."), DomainRule::Exact("pypi.org".into()));
    assert_eq!(rule("localhost"), DomainRule::Exact("localhost".into()));
    assert_eq!(rule("_dmarc.example.com").to_string(), "_dmarc.example.com");
    for text in ["pypi.org", "*.example.com", "a-b.c_d.io", "*.x.y.z"] {
        assert_eq!(rule(text).to_string(), text);
        assert_eq!(rule(&rule(text).to_string()), rule(text));
    }
}

#[test]
fn rules_refuse_bad_names() {
    assert!(rule_err(&format!("{}.com", "a".repeat(64))).contains("label longer than 63"));
    assert!(rule_err(&["abc"; 70].join(".")).contains("longer than 253"));
    assert!(rule_err("10.0.0.1").contains("allow it as a CIDR"));
    assert!(rule_err("::1").contains("allow it as a CIDR"));
    assert!(rule_err("[::1]").contains("allow it as a CIDR"));
    assert!(rule_err("10.0.0.0/8").contains("allow it as a CIDR"));
    assert!(rule_err("1.2.3").contains("allow it as a CIDR"));
    for bad in [
        "a.*.com",
        "*example.com",
        "*",
        "**.a.com",
        "*.*.a.com",
        "ex*.com",
    ] {
        assert!(
            rule_err(bad).contains("wildcards are only allowed as a leading"),
            "{bad}"
        );
    }
    assert!(rule_err("").contains("empty"));
    assert!(rule_err("*.").contains("empty"));
    assert!(rule_err(".").contains("empty"));
    assert!(rule_err("a..b").contains("empty label"));
    assert!(rule_err(".a.b").contains("empty label"));
    assert!(rule_err("a.b..").contains("empty label"));
    assert!(rule_err("-a.com").contains("hyphen"));
    assert!(rule_err("a-.com").contains("hyphen"));
    assert!(rule_err("a b.com").contains("white space"));
    assert!(rule_err(" a.com").contains("white space"));
    assert!(rule_err("a.com:443").contains("':'"));
    assert!(rule_err("a/b.com").contains("'/'"));
    assert!(rule_err("bücher.de").contains("not allowed"));
    for err in [rule_err("a..b"), rule_err("x:y")] {
        assert!(!err.contains('\n'));
    }
}

#[test]
fn exact_rule_matches_only_that_name() {
    let r = rule("example.com");
    assert!(r.matches("example.com"));
    assert!(r.matches("EXAMPLE.com"));
    assert!(r.matches("example.com."));
    assert!(!r.matches("example.com.."));
    assert!(!r.matches("a.example.com"));
    assert!(!r.matches("badexample.com"));
    assert!(!r.matches("example.co"));
    assert!(!r.matches(""));
}

#[test]
fn wildcard_matches_subdomains_at_any_depth_but_not_the_apex() {
    let r = rule("*.example.com");
    assert!(r.matches("a.example.com"));
    assert!(r.matches("a.b.example.com"));
    assert!(r.matches("A.Example.COM."));
    assert!(r.matches("_x.example.com"));
    assert!(!r.matches("example.com"));
    assert!(!r.matches("example.com."));
    assert!(!r.matches("badexample.com"));
    assert!(!r.matches("a.badexample.com"));
    assert!(!r.matches(".example.com"));
    assert!(!r.matches("a..example.com"));
    assert!(!r.matches("example.com.evil.net"));
    assert!(!r.matches("*.example.com"));
}

#[test]
fn normalize_host_cases() {
    assert_eq!(normalize_host("PyPI.org.").as_deref(), Some("pypi.org"));
    assert_eq!(
        normalize_host("a_b.example").as_deref(),
        Some("a_b.example")
    );
    assert_eq!(normalize_host("x").as_deref(), Some("x"));
    assert_eq!(normalize_host("1.2.3.4").as_deref(), Some("1.2.3.4"));
    let longest_label = "a".repeat(63);
    assert!(normalize_host(&format!("{longest_label}.com")).is_some());
    assert!(normalize_host(&format!("a{longest_label}.com")).is_none());
    let name_253 = format!("{}.{}", vec!["a".repeat(63); 3].join("."), "a".repeat(61));
    assert_eq!(name_253.len(), 253);
    assert!(normalize_host(&name_253).is_some());
    assert!(normalize_host(&format!("{name_253}.")).is_some());
    assert!(normalize_host(&format!("a{name_253}")).is_none());
    for bad in [
        "",
        ".",
        "a..b",
        "a.b..",
        "-a",
        "a-",
        "a.-b",
        "a b",
        "a:b",
        "[::1]",
        "::1",
        "a/b",
        "a*b",
        "ex\u{e4}mple.com",
        "a\0b",
    ] {
        assert_eq!(normalize_host(bad), None, "{bad:?}");
    }
}

#[test]
fn cidr_parses_networks_and_bare_addresses() {
    let c = cidr("10.0.0.0/8");
    assert_eq!((c.addr, c.prefix), ("10.0.0.0".parse().unwrap(), 8));
    assert_eq!(cidr("2001:db8::/32").to_string(), "2001:db8::/32");
    assert_eq!(cidr("127.0.0.1").to_string(), "127.0.0.1/32");
    assert_eq!(cidr("::1").to_string(), "::1/128");
    assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
    assert_eq!(cidr("::/0").to_string(), "::/0");
    for text in ["10.0.0.0/8", "198.51.100.0/24", "fe80::/10", "1.2.3.4/32"] {
        assert_eq!(cidr(&cidr(text).to_string()), cidr(text));
    }
}

#[test]
fn cidr_refuses_bad_networks() {
    assert_eq!(
        cidr_err("10.0.0.1/8"),
        "host bits are set (did you mean 10.0.0.0/8?)"
    );
    assert!(cidr_err("2001:db8::1/32").contains("did you mean 2001:db8::/32?"));
    assert!(cidr_err("10.0.0.0/33").contains("out of range (0-32)"));
    assert!(cidr_err("::/129").contains("out of range (0-128)"));
    assert!(cidr_err("10.0.0.0/+8").contains("not a number"));
    assert!(cidr_err("10.0.0.0/").contains("not a number"));
    assert!(cidr_err("10.0.0.0/8/8").contains("not a number"));
    assert!(cidr_err("10.0.0.0/999").contains("not a number"));
    assert!(cidr_err("example.com/8").contains("not an IP"));
    assert!(cidr_err("").contains("not an IP"));
    assert!(cidr_err("10.0.0/8").contains("not an IP"));
    assert!(cidr_err("[::1]/128").contains("not an IP"));
}

#[test]
fn cidr_contains() {
    let net = cidr("10.0.0.0/8");
    assert!(net.contains("10.1.2.3".parse().unwrap()));
    assert!(!net.contains("11.0.0.0".parse().unwrap()));
    assert!(!net.contains("::a00:1".parse().unwrap()));
    assert!(net.contains("::ffff:10.9.9.9".parse().unwrap()));
    let all = cidr("0.0.0.0/0");
    assert!(all.contains("255.255.255.255".parse().unwrap()));
    assert!(!all.contains("::1".parse().unwrap()));
    let one = cidr("127.0.0.1");
    assert!(one.contains("127.0.0.1".parse().unwrap()));
    assert!(!one.contains("127.0.0.2".parse().unwrap()));
    assert!(one.contains("::ffff:127.0.0.1".parse().unwrap()));
    let v6 = cidr("2001:db8::/32");
    assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
    assert!(!v6.contains("2001:db9::".parse().unwrap()));
    assert!(!v6.contains("32.1.13.184".parse().unwrap()));
    let mapped = cidr("::ffff:0:0/96");
    assert!(mapped.contains("::ffff:1.2.3.4".parse().unwrap()));
    // Out-of-range prefix built by hand: no panic, compares whole address.
    let odd = Cidr {
        addr: "1.2.3.4".parse().unwrap(),
        prefix: 200,
    };
    assert!(odd.contains("1.2.3.4".parse().unwrap()));
}

#[test]
fn forbidden_ipv4() {
    let cases = [
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.0.0.5", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "shared address space"),
        ("100.127.255.255", "shared address space"),
        ("169.254.169.254", "link-local"),
        ("169.254.0.1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.0.8", "reserved"),
        ("198.18.0.1", "benchmarking"),
        ("198.19.255.255", "benchmarking"),
    ];
    for (ip, why) in cases {
        assert_eq!(reason(ip), Some(why), "{ip}");
    }
    for ip in [
        "1.1.1.1",
        "8.8.8.8",
        "172.15.255.255",
        "172.32.0.0",
        "100.63.255.255",
        "100.128.0.0",
        "192.0.1.1",
        "198.17.255.255",
        "198.20.0.0",
        "223.255.255.255",
        "192.0.2.1",
        "198.51.100.2",
        "203.0.113.9",
        "11.0.0.0",
        "126.255.255.255",
        "128.0.0.0",
    ] {
        assert_eq!(reason(ip), None, "{ip}");
    }
}

#[test]
fn forbidden_ipv6() {
    let cases = [
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fec0::1", "private"),
        ("fe80::1", "link-local"),
        ("febf::1", "link-local"),
        ("ff02::1", "multicast"),
        ("ff0e::1", "multicast"),
        ("2001:2::1", "benchmarking"),
        ("2001:10::1", "reserved"),
        ("100::1", "reserved"),
        ("5f00::1", "reserved"),
        ("64:ff9b:1::a00:1", "private"),
    ];
    for (ip, why) in cases {
        assert_eq!(reason(ip), Some(why), "{ip}");
    }
    for ip in [
        "2606:4700::1111",
        "2a00:1450:4001::200e",
        "2001:db8::1",
        "3fff::1",
        "2001:200::1",
        "fbff::1",
        "fe00::1",
    ] {
        assert_eq!(reason(ip), None, "{ip}");
    }
}

#[test]
fn forbidden_ipv6_embedding_ipv4_is_judged_by_the_ipv4() {
    let cases = [
        // IPv4-mapped
        ("::ffff:127.0.0.1", Some("loopback")),
        ("::ffff:10.0.0.1", Some("private")),
        ("::ffff:169.254.169.254", Some("link-local")),
        ("::ffff:0.0.0.0", Some("unspecified")),
        ("::ffff:8.8.8.8", None),
        ("::ffff:198.51.100.2", None),
        // IPv4-compatible (deprecated): forbidden even when global
        ("::127.0.0.1", Some("loopback")),
        ("::192.168.0.1", Some("private")),
        ("::8.8.8.8", Some("reserved")),
        // IPv4-translated (deprecated)
        ("::ffff:0:127.0.0.1", Some("loopback")),
        ("::ffff:0:8.8.8.8", Some("reserved")),
        // NAT64 well-known prefix
        ("64:ff9b::127.0.0.1", Some("loopback")),
        ("64:ff9b::a9fe:a9fe", Some("link-local")),
        ("64:ff9b::8.8.8.8", None),
        // 6to4
        ("2002:7f00:1::", Some("loopback")),
        ("2002:a00:1::1", Some("private")),
        ("2002:a9fe:a9fe::", Some("link-local")),
        ("2002:808:808::1", None),
        // Teredo: server 127.0.0.1, or client 10.0.0.1 stored inverted
        ("2001:0:7f00:1::", Some("loopback")),
        ("2001:0:808:808::f5ff:fffe", Some("private")),
        ("2001:0:808:808:0:0:f7f7:f7f7", None),
        // other ::/8 addresses
        ("::1:0:0:1", Some("reserved")),
    ];
    for (ip, want) in cases {
        assert_eq!(reason(ip), want, "{ip}");
    }
}
