use super::*;
use crate::{LimitsSpec, NetworkSpec};

fn err(spec: PolicySpec) -> PolicyError {
    match spec.validate(None) {
        Err(e) => e,
        Ok(p) => panic!("accepted: {p:?}"),
    }
}

#[test]
fn defaults_deny_and_limit() {
    let p = PolicySpec::default()
        .validate(Some("xterm-256color"))
        .unwrap();
    assert_eq!(p.tier, Tier::Ns);
    assert_eq!(p.image, Image::Host);
    assert_eq!(p.network, Network::NONE);
    assert_eq!(p.limits.memory, GIB);
    assert_eq!(p.limits.pids, 1024);
    assert!(p.mounts.is_empty());
    assert_eq!(p.cwd, PathBuf::from("/workspace"));
    let keys: Vec<_> = p.env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["PATH", "HOME", "LANG", "TERM"]);
    assert!(p.env.contains(&("TERM".into(), "xterm-256color".into())));
}

#[test]
fn unknown_field_is_refused_with_its_name() {
    let e = PolicySpec::from_toml("p.toml", "tier = \"ns\"\nmemroy = \"1G\"\n").unwrap_err();
    assert!(e.to_string().contains("memroy"), "{e}");
    let e = PolicySpec::from_toml("p.toml", "[limits]\nmemroy = \"1G\"\n").unwrap_err();
    assert!(e.to_string().contains("memroy"), "{e}");
}

#[test]
fn full_file_parses() {
    let text = r#"
tier = "chroot"
image = "/srv/rootfs"
workspace = "/srv/ws"
cwd = "/tmp"
user = 1000
[network]
mode = "none"
[limits]
memory = "512M"
cpus = "1.5"
pids = 256
timeout = "30s"
[env]
FOO = "bar"
[[mounts]]
type = "bind"
source = "/data"
target = "/data"
[[mounts]]
type = "tmpfs"
target = "/scratch"
size = "16M"
"#;
    let p = PolicySpec::from_toml("p.toml", text)
        .unwrap()
        .validate(None)
        .unwrap();
    assert_eq!(p.tier, Tier::Chroot);
    assert_eq!(p.image, Image::Dir("/srv/rootfs".into()));
    assert_eq!(p.limits.memory, 512 * MIB);
    assert_eq!(p.limits.cpus, Some(Cpus(1500)));
    assert_eq!(p.limits.timeout, Some(Duration::from_secs(30)));
    assert_eq!(p.mounts.len(), 3);
    assert_eq!(p.mounts[0].target, PathBuf::from("/workspace"));
    assert_eq!(p.mounts[2].kind, MountKind::Tmpfs { size: 16 * MIB });
    assert!(p.env.contains(&("FOO".into(), "bar".into())));
    assert!(p.env.contains(&("HOME".into(), "/tmp".into())));
}

#[test]
fn bad_values_name_field_and_value() {
    let cases: Vec<(PolicySpec, &str, &str)> = vec![
        (
            PolicySpec {
                tier: Some("vm".into()),
                ..Default::default()
            },
            "tier",
            "vm",
        ),
        (
            PolicySpec {
                image: Some("./rootfs".into()),
                ..Default::default()
            },
            "image",
            "./rootfs",
        ),
        (
            PolicySpec {
                image: Some("sha256:abc".into()),
                ..Default::default()
            },
            "image",
            "sha256:abc",
        ),
        (
            PolicySpec {
                tier: Some("ns".into()),
                runtime: Some("crun".into()),
                ..Default::default()
            },
            "runtime",
            "crun",
        ),
        (
            PolicySpec {
                tier: Some("oci".into()),
                runtime: Some("youki".into()),
                ..Default::default()
            },
            "runtime",
            "youki",
        ),
        (
            PolicySpec {
                workspace: Some("../x".into()),
                ..Default::default()
            },
            "workspace",
            "../x",
        ),
        (
            PolicySpec {
                cwd: Some("/a/../b".into()),
                ..Default::default()
            },
            "cwd",
            "/a/../b",
        ),
        (
            PolicySpec {
                network: Some(NetworkSpec {
                    mode: "wide-open".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "network.mode",
            "wide-open",
        ),
        (
            PolicySpec {
                limits: LimitsSpec {
                    memory: Some("12XB".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
            "limits.memory",
            "12XB",
        ),
        (
            PolicySpec {
                limits: LimitsSpec {
                    memory: Some("1K".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
            "limits.memory",
            "1K",
        ),
        (
            PolicySpec {
                limits: LimitsSpec {
                    memory: Some("5000T".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
            "limits.memory",
            "5000T",
        ),
        (
            PolicySpec {
                limits: LimitsSpec {
                    pids: Some(0),
                    ..Default::default()
                },
                ..Default::default()
            },
            "limits.pids",
            "0",
        ),
        (
            PolicySpec {
                limits: LimitsSpec {
                    cpus: Some("0".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
            "limits.cpus",
            "0",
        ),
        (
            PolicySpec {
                limits: LimitsSpec {
                    cpus: Some("lots".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
            "limits.cpus",
            "lots",
        ),
        (
            PolicySpec {
                limits: LimitsSpec {
                    timeout: Some("0s".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
            "limits.timeout",
            "0s",
        ),
        (
            PolicySpec {
                limits: LimitsSpec {
                    timeout: Some("soon".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
            "limits.timeout",
            "soon",
        ),
        (
            PolicySpec {
                user: Some(70000),
                ..Default::default()
            },
            "user",
            "70000",
        ),
        (
            PolicySpec {
                mounts: vec![MountSpec::Bind {
                    source: "rel".into(),
                    target: "/x".into(),
                    writable: false,
                }],
                ..Default::default()
            },
            "mounts[0].source",
            "rel",
        ),
        (
            PolicySpec {
                mounts: vec![MountSpec::Bind {
                    source: "/x".into(),
                    target: "/proc/self".into(),
                    writable: false,
                }],
                ..Default::default()
            },
            "mounts[0].target",
            "/proc/self",
        ),
        (
            PolicySpec {
                mounts: vec![MountSpec::Tmpfs {
                    target: "/".into(),
                    size: None,
                }],
                ..Default::default()
            },
            "mounts[0].target",
            "/",
        ),
    ];
    for (spec, field, value) in cases {
        let e = err(spec);
        assert_eq!(e.field, field, "{e}");
        assert_eq!(e.value, value, "{e}");
        assert!(!e.to_string().contains('\n'));
    }
}

#[test]
fn env_keys_are_checked_and_override_defaults() {
    let mut spec = PolicySpec::default();
    spec.env.insert("PATH".into(), "/bin".into());
    let p = spec.validate(None).unwrap();
    assert_eq!(p.env[0], ("PATH".into(), "/bin".into()));
    let mut spec = PolicySpec::default();
    spec.env.insert("A=B".into(), "x".into());
    assert_eq!(err(spec).field, "env");
}

#[test]
fn duplicate_targets_are_refused() {
    let spec = PolicySpec {
        workspace: Some("/srv".into()),
        mounts: vec![MountSpec::Tmpfs {
            target: "/workspace/".into(),
            size: None,
        }],
        ..Default::default()
    };
    assert_eq!(err(spec).field, "mounts.target");
}

#[test]
fn image_names_tiers_and_runtimes() {
    let v = |spec: PolicySpec| spec.validate(None).unwrap_or_else(|e| panic!("{e}"));
    let p = v(PolicySpec {
        image: Some("bookworm:minbase".into()),
        tier: Some("oci".into()),
        runtime: Some("runc".into()),
        ..Default::default()
    });
    assert_eq!(p.image, Image::Named("bookworm:minbase".into()));
    assert_eq!(p.tier, Tier::Oci);
    assert_eq!(p.runtime, Some(crate::OciRuntime::Runc));
    let p = v(PolicySpec {
        image: Some("sha256:0123456789ABCDEF".into()),
        ..Default::default()
    });
    assert_eq!(p.image, Image::Named("sha256:0123456789abcdef".into()));
    for tier in Tier::ALL {
        assert_eq!(Tier::from_name(tier.name()), Some(tier));
    }
    let auto = PolicySpec {
        tier: Some("auto".into()),
        ..Default::default()
    }
    .validate(None)
    .unwrap_err();
    assert!(
        auto.to_string().contains("resolved before validation"),
        "{auto}"
    );
}
