use super::*;
use crate::PolicySpec;

fn spec(mode: &str) -> NetworkSpec {
    NetworkSpec {
        mode: mode.into(),
        ..Default::default()
    }
}

fn refused(network: NetworkSpec) -> PolicyError {
    match validate(Some(&network)) {
        Ok(n) => panic!("accepted: {n:?}"),
        Err(e) => e,
    }
}

#[test]
fn allow_shorthand_and_lists_merge_without_duplicates() {
    let mut s = spec("allow:pypi.org, *.github.com,pypi.org");
    s.allow = vec!["files.pythonhosted.org".into()];
    s.deny = vec!["gist.github.com".into()];
    s.cidrs = vec!["10.1.0.0/16".into()];
    let n = validate(Some(&s)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n.mode, NetMode::Allow);
    let allow: Vec<String> = n.allow.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        allow,
        ["files.pythonhosted.org", "pypi.org", "*.github.com"]
    );
    assert_eq!(n.deny.len(), 1);
    assert_eq!(n.cidrs.len(), 1);
}

#[test]
fn bad_input_names_the_field_and_the_value() {
    let cases = [
        (spec("allow:"), "network.mode", "allow:"),
        (spec("allow"), "network.allow", ""),
        (spec("wide"), "network.mode", "wide"),
        (spec("allow:exa mple.com"), "network.allow", "exa mple.com"),
        (spec("allow:a.*.com"), "network.allow", "a.*.com"),
        (
            NetworkSpec {
                cidrs: vec!["10.0.0.1/8".into()],
                ..spec("open")
            },
            "network.cidrs",
            "10.0.0.1/8",
        ),
        (
            NetworkSpec {
                cidrs: vec!["300.1.1.1/32".into()],
                ..spec("open")
            },
            "network.cidrs",
            "300.1.1.1/32",
        ),
        (
            NetworkSpec {
                allow: vec!["pypi.org".into()],
                ..spec("open")
            },
            "network.allow",
            "open",
        ),
        (
            NetworkSpec {
                cidrs: vec!["10.0.0.0/8".into()],
                ..spec("none")
            },
            "network.cidrs",
            "10.0.0.0/8",
        ),
        (
            NetworkSpec {
                audit: Some("relative.jsonl".into()),
                ..spec("allow:a.com")
            },
            "network.audit",
            "relative.jsonl",
        ),
    ];
    for (network, field, value) in cases {
        let e = refused(network);
        assert_eq!((e.field.as_str(), e.value.as_str()), (field, value), "{e}");
        assert!(!e.reason.is_empty());
    }
}

#[test]
fn allow_mode_points_the_proxy_variables_at_the_proxy_and_user_values_win() {
    let text = "[network]\nmode = \"allow:pypi.org\"\n[env]\nhttps_proxy = \"http://mine:1\"\n";
    let policy = PolicySpec::from_toml("p.toml", text)
        .and_then(|s| s.validate(None))
        .unwrap_or_else(|e| panic!("{e}"));
    let get = |k: &str| {
        policy
            .env
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("HTTP_PROXY").as_deref(), Some("http://127.0.0.1:3128"));
    assert_eq!(get("https_proxy").as_deref(), Some("http://mine:1"));
    assert_eq!(get("NO_PROXY").as_deref(), Some("localhost,127.0.0.1,::1"));
    let none = PolicySpec::default()
        .validate(None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(none.env.iter().all(|(k, _)| !k.contains("proxy")));
    assert_eq!(none.network, Network::NONE);
}
