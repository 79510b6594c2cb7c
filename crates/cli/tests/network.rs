//! Network modes against a test internet the tests build (common/testnet.rs): `allow` reaches only
//! allowlisted names through the proxy, `open` reaches the test internet but no private range and
//! not the host, and nothing in any mode reaches a host loopback service. After every sandbox the
//! host's nftables ruleset, links, network namespaces and routes are exactly as before.
//! Traffic goes only to loopback and to the test's own network namespace.

// Test code: a failed spawn or read is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::net::TcpListener;

use common::testnet::{net_state, Forwarding, TestNet, LINK_LOCAL, PRIVATE, PUBLIC};
use common::*;

/// A host service on loopback (and one on every address) that the sandbox must never reach.
struct HostService {
    loopback: TcpListener,
    any: TcpListener,
}

impl HostService {
    fn start() -> HostService {
        let loopback = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let any = TcpListener::bind("0.0.0.0:0").expect("bind any");
        loopback.set_nonblocking(true).expect("nonblocking");
        any.set_nonblocking(true).expect("nonblocking");
        HostService { loopback, any }
    }
    fn loopback_port(&self) -> u16 {
        self.loopback.local_addr().expect("addr").port()
    }
    fn any_port(&self) -> u16 {
        self.any.local_addr().expect("addr").port()
    }
    fn assert_untouched(&self) {
        for l in [&self.loopback, &self.any] {
            if let Ok((mut conn, peer)) = l.accept() {
                let mut buf = [0u8; 256];
                let n = conn.read(&mut buf).unwrap_or(0);
                panic!(
                    "the host service got a connection from {peer}: {:?}",
                    String::from_utf8_lossy(&buf[..n])
                );
            }
        }
    }
}

/// Runs `sh -c script` with `flags`, asserting success; returns stdout.
fn sandbox(flags: &[&str], script: &str) -> String {
    let out = sh(flags, script);
    assert!(
        out.status.success(),
        "{flags:?} {script}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// A python3 probe: tries `what`, prints `ok` or the error's class.
const CONNECT: &str = r#"
import socket, sys
kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if kind == "tcp":
        s = socket.create_connection((host, port), timeout=3); s.close(); print("ok")
    elif kind == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
        s.sendto(b"ping", (host, port)); s.recvfrom(64); print("ok")
    elif kind == "tcp6":
        s = socket.create_connection((host, port), timeout=3); s.close(); print("ok")
    elif kind == "dns":
        socket.getaddrinfo(host, port); print("ok")
except Exception as e:
    print(type(e).__name__)
"#;

fn probe(flags: &[&str], kind: &str, host: &str, port: u16) -> String {
    let mut args: Vec<&str> = flags.to_vec();
    let port = port.to_string();
    args.extend_from_slice(&["--", "python3", "-c", CONNECT, kind, host, &port]);
    let out = run(&args);
    assert!(out.status.success(), "probe: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

#[test]
fn allow_mode_reaches_allowed_names_only_through_the_proxy() {
    let _guard = serial();
    let net = TestNet::start();
    let before = net_state();
    let audit = net.dir.path().join("audit.jsonl");
    let hosts = net.hosts_flag();
    let audit_flag = audit.display().to_string();
    let flags = [
        "--net",
        "allow:allowed.test,*.wild.test",
        "--net-hosts",
        &hosts,
        "--net-audit",
        &audit_flag,
    ];
    let out = sandbox(
        &flags,
        "curl -sS http://allowed.test/plain; curl -sSk https://allowed.test/tls; \
         curl -sS http://a.wild.test/wild; \
         curl -s -o /dev/null -w '%{http_code}\\n' http://other.test/; \
         curl -s http://other.test/; echo; \
         curl -s -o /dev/null -w '%{http_connect}\\n' https://other.test/; echo end",
    );
    assert!(
        out.contains("hello from the test internet /plain host=allowed.test"),
        "{out}"
    );
    assert!(out.contains("hello from the test internet /tls"), "{out}");
    assert!(out.contains("hello from the test internet /wild"), "{out}");
    assert!(out.contains("403"), "a denied name gets 403: {out}");
    assert!(
        out.contains("agentbox proxy: ") && out.contains("other.test"),
        "the proxy says why: {out}"
    );
    // HTTPS to a denied name: the CONNECT itself gets the 403.
    assert!(out.ends_with("403\nend\n"), "{out}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let verdicts = |host: &str, verdict: &str| {
        lines
            .iter()
            .filter(|l| l["host"] == host && l["verdict"] == verdict)
            .count()
    };
    assert_eq!(verdicts("allowed.test", "allow"), 2, "{lines:?}");
    assert_eq!(verdicts("other.test", "deny"), 3, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l["host"] == "allowed.test" && l["bytes_down"].as_u64() > Some(40)),
        "byte counts: {lines:?}"
    );
    assert_eq!(net_state(), before, "host network state changed");
}

#[test]
fn allow_mode_has_no_other_way_out() {
    let _guard = serial();
    let net = TestNet::start();
    let before = net_state();
    let hosts = net.hosts_flag();
    let flags = ["--net", "allow:allowed.test", "--net-hosts", &hosts];
    // No route: direct TCP to the server's address, UDP and DNS, IPv6.
    assert_eq!(probe(&flags, "tcp", PUBLIC, 80), "OSError");
    assert_eq!(probe(&flags, "udp", PUBLIC, 53), "OSError");
    assert_eq!(probe(&flags, "dns", "allowed.test", 80), "gaierror");
    assert_eq!(probe(&flags, "tcp6", "2001:db8::1", 80), "OSError");
    // An allowed name resolving to a private address, and an IP literal, are refused by the proxy.
    let out = sandbox(
        &["--net", "allow:private.test", "--net-hosts", &hosts],
        "curl -s http://private.test/; echo; curl -s http://198.51.100.2/",
    );
    assert!(out.contains("private"), "{out}");
    assert!(out.contains("agentbox proxy: "), "{out}");
    assert!(!out.contains("hello from the test internet"), "{out}");
    // ...unless the policy allows the CIDR.
    let out = sandbox(
        &[
            "--net",
            "allow:private.test",
            "--net-hosts",
            &hosts,
            "--allow-cidr",
            "10.99.0.0/24",
            "--allow-cidr",
            "198.51.100.2",
        ],
        "curl -sS http://private.test/p; curl -sS http://198.51.100.2/lit",
    );
    assert!(out.contains("hello from the test internet /p"), "{out}");
    assert!(out.contains("hello from the test internet /lit"), "{out}");
    assert_eq!(net_state(), before, "host network state changed");
}

#[test]
fn a_host_loopback_service_is_unreachable_in_every_mode() {
    let _guard = serial();
    let net = TestNet::start();
    let _forwarding = Forwarding::on();
    let service = HostService::start();
    let before = net_state();
    let hosts = net.hosts_flag();
    let (lo, any) = (service.loopback_port(), service.any_port());
    // none: the sandbox's loopback is its own.
    assert_eq!(probe(&[], "tcp", "127.0.0.1", lo), "ConnectionRefusedError");
    // allow: the proxy refuses loopback, by literal and by a name that resolves there.
    let out = sandbox(
        &["--net", "allow:loopback.test", "--net-hosts", &hosts],
        &format!(
            "curl -s http://loopback.test:{lo}/; echo; \
             curl -s --noproxy '' http://127.0.0.1:{lo}/; echo; \
             curl -s --noproxy '' http://localhost:{lo}/; echo"
        ),
    );
    assert_eq!(out.matches("agentbox proxy: ").count(), 3, "{out}");
    assert!(out.contains("loopback"), "{out}");
    // open: not the host's loopback, nor the host's own address on the sandbox's link.
    let open = ["--net", "open"];
    assert_eq!(
        probe(&open, "tcp", "127.0.0.1", lo),
        "ConnectionRefusedError"
    );
    let gateway = sandbox(&open, "ip -4 route show default | cut -d' ' -f3");
    assert!(gateway.trim().starts_with("10.201."), "{gateway}");
    assert_eq!(probe(&open, "tcp", gateway.trim(), any), "TimeoutError");
    assert_eq!(probe(&open, "tcp", "198.51.100.1", any), "TimeoutError");
    service.assert_untouched();
    assert_eq!(net_state(), before, "host network state changed");
}

#[test]
fn open_mode_reaches_the_test_internet_but_no_private_range() {
    let _guard = serial();
    let _net = TestNet::start();
    let _forwarding = Forwarding::on();
    let before = net_state();
    let open = ["--net", "open"];
    let out = sandbox(&open, &format!("curl -sS http://{PUBLIC}/direct"));
    assert!(
        out.contains("hello from the test internet /direct"),
        "{out}"
    );
    assert_eq!(probe(&open, "udp", PUBLIC, 53), "ok");
    assert_eq!(probe(&open, "tcp", PRIVATE, 80), "TimeoutError");
    assert_eq!(probe(&open, "tcp", LINK_LOCAL, 80), "TimeoutError");
    assert_eq!(probe(&open, "tcp6", "2001:db8::1", 80), "OSError");
    // The host's reachable resolvers (never contacted by this test).
    let resolvers: String = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .map(str::trim)
        .filter(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| !a.is_loopback())
        })
        .map(|a| format!("nameserver {a}\n"))
        .collect();
    let script = "cat /etc/resolv.conf 2>/dev/null || echo none";
    let expected = if resolvers.is_empty() {
        "none\n"
    } else {
        resolvers.as_str()
    };
    assert_eq!(sandbox(&open, script), expected);
    assert_eq!(sandbox(&[], script), "none\n");
    let allowed = ["--net", "open", "--allow-cidr", "10.99.0.0/24"];
    let out = sandbox(&allowed, &format!("curl -sS http://{PRIVATE}/private"));
    assert!(
        out.contains("hello from the test internet /private"),
        "{out}"
    );
    assert_eq!(net_state(), before, "host network state changed");
}

#[test]
fn open_mode_without_forwarding_is_refused_naming_the_field() {
    let _guard = serial();
    let old = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("ip_forward");
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "0").expect("disable forwarding");
    let before = host_state();
    let out = sh(&["--net", "open"], "true");
    std::fs::write("/proc/sys/net/ipv4/ip_forward", old.trim()).expect("restore forwarding");
    assert_eq!(out.status.code(), Some(123), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("network.mode") && err.contains("ip_forward"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_nothing_left(&before);
}

#[test]
fn the_chroot_tier_enforces_allow_mode_too() {
    let _guard = serial();
    let net = TestNet::start();
    let before = net_state();
    let hosts = net.hosts_flag();
    let flags = [
        "--tier",
        "chroot",
        "--net",
        "allow:allowed.test",
        "--net-hosts",
        &hosts,
    ];
    let out = sandbox(
        &flags,
        "curl -sS http://allowed.test/c; curl -s http://other.test/",
    );
    assert!(out.contains("hello from the test internet /c"), "{out}");
    assert!(out.contains("agentbox proxy: "), "{out}");
    assert_eq!(probe(&flags, "tcp", PUBLIC, 80), "OSError");
    assert_eq!(net_state(), before, "host network state changed");
}

#[test]
fn a_persistent_sandbox_allowlist_changes_at_run_time() {
    let _guard = serial();
    let net = TestNet::start();
    let before = net_state();
    let hosts = net.hosts_flag();
    let id = ok(agentbox(&[
        "create",
        "--net",
        "allow:allowed.test",
        "--net-hosts",
        &hosts,
    ])
    .output()
    .expect("create"));
    let id = id.trim();
    let code = |host: &str| {
        let out = agentbox(&[
            "exec",
            id,
            "--",
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{host}/"),
        ])
        .output()
        .expect("exec");
        stdout(&out)
    };
    assert_eq!(code("allowed.test"), "200");
    assert_eq!(code("other.test"), "403");
    let shown = ok(
        agentbox(&["net", id, "--allow", "other.test", "--deny", "allowed.test"])
            .output()
            .expect("net"),
    );
    assert!(shown.contains("allow  other.test"), "{shown}");
    assert!(shown.contains("deny   allowed.test"), "{shown}");
    assert_eq!(code("other.test"), "200");
    assert_eq!(code("allowed.test"), "403");
    let bad = agentbox(&["net", id, "--allow", "bad..name"])
        .output()
        .expect("net");
    assert_eq!(bad.status.code(), Some(125), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("bad..name"), "{}", stderr(&bad));
    let audit = std::fs::read_to_string(format!("/run/agentbox/{id}/net-audit.jsonl"))
        .expect("a persistent sandbox audits into its state dir");
    assert_eq!(audit.lines().count(), 4, "{audit}");
    ok(agentbox(&["rm", id]).output().expect("rm"));
    assert_eq!(net_state(), before, "host network state changed");
}

#[test]
fn gc_removes_the_firewall_table_of_a_killed_supervisor() {
    let _guard = serial();
    let _forwarding = Forwarding::on();
    let before = net_state();
    let id = ok(agentbox(&["create", "--net", "open"])
        .output()
        .expect("create"));
    let id = id.trim();
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("/run/agentbox/{id}/state.json")).expect("state"),
    )
    .expect("state json");
    let supervisor = state["supervisor"].as_u64().expect("supervisor");
    let init = state["init"].as_u64().expect("init");
    let tables = || {
        let out = std::process::Command::new("nft")
            .args(["list", "tables"])
            .output()
            .expect("nft");
        stdout(&out)
    };
    assert!(tables().contains("table inet agentbox_"), "{}", tables());
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &supervisor.to_string()])
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{init}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sandbox outlived its supervisor"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The supervisor could not delete its table; gc does.
    assert!(tables().contains("table inet agentbox_"), "{}", tables());
    let gc = ok(agentbox(&["gc"]).output().expect("gc"));
    assert!(gc.contains("removed network abv"), "{gc}");
    assert!(!tables().contains("table inet agentbox_"), "{}", tables());
    assert_eq!(net_state(), before, "host network state changed");
}
