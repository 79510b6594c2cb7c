#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use super::*;
use crate::{Bind, Limits, Tmpfs};

fn sandbox() -> Sandbox {
    Sandbox {
        id: "agentbox-0123456789ab".into(),
        rootfs: "/run/root".into(),
        image: None,
        symlinks: vec![("/bin".into(), "usr/bin".into())],
        binds: vec![
            Bind {
                source: "/usr".into(),
                target: "/usr".into(),
                writable: false,
            },
            Bind {
                source: "/work".into(),
                target: "/workspace".into(),
                writable: true,
            },
        ],
        tmpfs: vec![Tmpfs {
            target: "/tmp".into(),
            size: 1 << 20,
            mode: 0o1777,
        }],
        argv: vec!["/bin/true".into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: "/".into(),
        uid: 0,
        uid_range: Some((1_000_000_000, 65536)),
        hostname: "agentbox".into(),
        limits: Limits {
            memory: Some(256 << 20),
            cpus_milli: Some(1500),
            pids: Some(64),
            nofile: Some(1024),
            disk: None,
            timeout: None,
        },
        seccomp: agentbox_seccomp::parse_allowlist(agentbox_seccomp::DEFAULT_ALLOWLIST).unwrap(),
        state_dir: PathBuf::from("/run/state"),
        oci_runtime: None,
    }
}

fn json(runtime: &Runtime) -> serde_json::Value {
    serde_json::to_value(spec(&sandbox(), runtime).unwrap()).unwrap()
}

#[test]
fn confinement_of_runc() {
    let j = json(&Runtime::Runc);
    let p = &j["process"];
    assert_eq!(p["terminal"], false);
    assert_eq!(p["noNewPrivileges"], true);
    for set in [
        "bounding",
        "effective",
        "inheritable",
        "permitted",
        "ambient",
    ] {
        assert_eq!(p["capabilities"][set], serde_json::json!([]), "{set}");
    }
    assert_eq!(p["args"], serde_json::json!(["/bin/true"]));
    assert_eq!(p["env"], serde_json::json!(["PATH=/usr/bin:/bin"]));
    let rl = p["rlimits"].as_array().unwrap();
    assert!(rl
        .iter()
        .any(|r| r["type"] == "RLIMIT_NOFILE" && r["hard"] == 1024));
    assert!(rl
        .iter()
        .any(|r| r["type"] == "RLIMIT_CORE" && r["hard"] == 0));
    let l = &j["linux"];
    assert_eq!(
        l["uidMappings"],
        serde_json::json!([{"containerID": 0, "hostID": 1_000_000_000u32, "size": 65536}])
    );
    assert_eq!(l["gidMappings"], l["uidMappings"]);
    let ns: Vec<&str> = l["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    for t in ["pid", "ipc", "uts", "mount", "network", "cgroup", "user"] {
        assert!(ns.contains(&t), "{t} in {ns:?}");
    }
    assert!(l["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n.get("path").is_none()));
    assert_eq!(l["resources"]["memory"]["limit"], 256 << 20);
    assert_eq!(l["resources"]["memory"]["swap"], 256 << 20);
    assert_eq!(l["resources"]["cpu"]["quota"], 150_000);
    assert_eq!(l["resources"]["cpu"]["period"], 100_000);
    assert_eq!(l["resources"]["pids"]["limit"], 64);
    assert_eq!(l["resources"]["devices"][0]["allow"], false);
    assert!(l["maskedPaths"]
        .as_array()
        .unwrap()
        .contains(&"/proc/kcore".into()));
    assert!(l["readonlyPaths"]
        .as_array()
        .unwrap()
        .contains(&"/proc/sys".into()));
    assert_eq!(l["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(l["cgroupsPath"], "/agentbox-oci/agentbox-0123456789ab");
    assert_eq!(j["root"]["readonly"], false);
    assert_eq!(j["hostname"], "agentbox");
}

#[test]
fn mounts_binds_and_tmpfs() {
    let j = json(&Runtime::Crun);
    let mounts = j["mounts"].as_array().unwrap();
    let find = |d: &str| mounts.iter().find(|m| m["destination"] == d).unwrap();
    let usr = find("/usr");
    assert_eq!(usr["type"], "bind");
    for o in ["rbind", "nosuid", "nodev", "ro"] {
        assert!(
            usr["options"].as_array().unwrap().contains(&o.into()),
            "{o}"
        );
    }
    let ws = find("/workspace");
    assert!(!ws["options"].as_array().unwrap().contains(&"ro".into()));
    let tmp = find("/tmp");
    assert_eq!(tmp["type"], "tmpfs");
    assert!(tmp["options"]
        .as_array()
        .unwrap()
        .contains(&"size=1048576".into()));
    assert!(tmp["options"]
        .as_array()
        .unwrap()
        .contains(&"mode=1777".into()));
    assert!(find("/sys")["options"]
        .as_array()
        .unwrap()
        .contains(&"ro".into()));
    for d in ["/proc", "/dev", "/dev/pts", "/dev/shm"] {
        find(d);
    }
}

#[test]
fn gvisor_has_no_user_namespace_and_no_device_rules() {
    let j = json(&Runtime::Runsc {
        platform: "ptrace".into(),
    });
    let l = &j["linux"];
    assert!(l.get("uidMappings").is_none());
    assert!(!l["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["type"] == "user"));
    assert!(l["resources"].get("devices").is_none());
    assert_eq!(l["resources"]["pids"]["limit"], 64 + GVISOR_PIDS_OVERHEAD);
    assert_eq!(j["process"]["noNewPrivileges"], true);
}

#[test]
fn refuses_without_a_uid_range_or_outside_it() {
    let mut s = sandbox();
    s.uid_range = None;
    assert!(matches!(
        spec(&s, &Runtime::Runc),
        Err(EngineError::Unenforceable {
            field: "uid_range",
            ..
        })
    ));
    let mut s = sandbox();
    s.uid = 70000;
    assert!(spec(&s, &Runtime::Runc).is_err());
    let mut s = sandbox();
    s.argv.clear();
    assert!(spec(&s, &Runtime::Runc).is_err());
}

#[test]
fn unlimited_fields_are_absent() {
    let mut s = sandbox();
    s.limits = Limits::default();
    let j = serde_json::to_value(spec(&s, &Runtime::Runc).unwrap()).unwrap();
    let r = &j["linux"]["resources"];
    assert!(r.get("memory").is_none() && r.get("cpu").is_none() && r.get("pids").is_none());
    let rl = j["process"]["rlimits"].as_array().unwrap();
    assert!(!rl.iter().any(|r| r["type"] == "RLIMIT_NOFILE"));
}
