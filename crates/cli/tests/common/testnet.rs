//! A small test "internet" for the network tests: a network namespace the test creates, joined to
//! the host by a veth, with an HTTP server (port 80), an HTTPS server (443, self-signed) and a UDP
//! echo (53) on the documentation address 198.51.100.2, the private 10.99.0.2 and the link-local
//! 169.254.99.2 (host routes lead the last two into the namespace too). The proxy
//! finds test names through a hosts file. Traffic never leaves this machine. Dropped: the
//! namespace, the veth (its host route with it) and the temp dir.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub const PUBLIC: &str = "198.51.100.2";
pub const PRIVATE: &str = "10.99.0.2";
/// A link-local address (the range of cloud metadata services), also in the test namespace.
pub const LINK_LOCAL: &str = "169.254.99.2";

/// The server: HTTP echoes the path, `/big?N` sends N bytes; HTTPS the same; UDP echoes.
const SERVER: &str = r#"
import http.server, socketserver, ssl, sys, threading, socket
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        if self.path.startswith("/big"):
            n = int(self.path.split("?")[1]); self.send_response(200)
            self.send_header("Content-Length", str(n)); self.end_headers()
            chunk = b"x" * 65536
            while n > 0:
                self.wfile.write(chunk[:min(n, 65536)]); n -= 65536
            return
        body = ("hello from the test internet %s host=%s\n" % (self.path, self.headers.get("Host"))).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True; allow_reuse_address = True
plain = S(("0.0.0.0", 80), H)
tls = S(("0.0.0.0", 443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])
tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 53))
    while True:
        d, a = u.recvfrom(2048); u.sendto(d, a)
for f in (plain.serve_forever, tls.serve_forever, udp):
    threading.Thread(target=f, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"#;

pub struct TestNet {
    pub ns: String,
    host_if: String,
    server: Child,
    pub dir: tempfile::TempDir,
    /// A hosts file: allowed.test, other.test, a.wild.test → PUBLIC; private.test → PRIVATE;
    /// loopback.test → 127.0.0.1.
    pub hosts: PathBuf,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestNet {
    pub fn start() -> TestNet {
        let id = std::process::id() % 100_000;
        let ns = format!("abtest-inet-{id}");
        let host_if = format!("abti{id}");
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=allowed.test", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(
            made.success(),
            "openssl could not make the test certificate"
        );
        let hosts = dir.path().join("hosts");
        std::fs::write(
            &hosts,
            format!(
                "{PUBLIC} allowed.test other.test a.wild.test\n{PRIVATE} private.test\n\
                 127.0.0.1 loopback.test\n"
            ),
        )
        .expect("hosts");
        // Everything the test makes is undone by Drop, so build the struct before the first step.
        ip(&["netns", "add", &ns]);
        let mut net = TestNet {
            ns: ns.clone(),
            host_if: host_if.clone(),
            server: Command::new("true").spawn().expect("true"),
            dir,
            hosts,
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "inet0", "netns", &ns,
        ]);
        ip(&["addr", "add", "198.51.100.1/24", "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{PUBLIC}/24"),
            "dev",
            "inet0",
        ]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{PRIVATE}/24"),
            "dev",
            "inet0",
        ]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{LINK_LOCAL}/24"),
            "dev",
            "inet0",
        ]);
        ip(&["-n", &ns, "link", "set", "inet0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "route", "add", "default", "via", "198.51.100.1"]);
        ip(&["route", "add", "10.99.0.0/24", "via", PUBLIC]);
        ip(&["route", "add", "169.254.99.0/24", "via", PUBLIC]);
        let _ = net.server.wait();
        net.server = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c", SERVER])
            .arg(&cert)
            .arg(&key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("test server");
        let mut line = String::new();
        let stdout = net.server.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("server ready");
        assert_eq!(line.trim(), "ready", "the test server did not start");
        net
    }

    pub fn hosts_flag(&self) -> String {
        self.hosts.display().to_string()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        drop(self.server.stdin.take());
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// What a sandbox's network could leave on the host: nftables, links, network namespaces, routes.
#[derive(Debug, PartialEq, Eq)]
pub struct NetState {
    pub ruleset: String,
    pub links: Vec<String>,
    pub netns: String,
    pub routes: String,
}

fn output(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .expect("spawn");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn net_state() -> NetState {
    NetState {
        ruleset: output(&["nft", "list", "ruleset"]),
        // Names only: counters and flags of the test's own veth change with traffic.
        links: output(&["ip", "-o", "link"])
            .lines()
            .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
            .collect(),
        netns: output(&["ip", "netns", "list"]),
        routes: output(&["ip", "route"]),
    }
}

/// Sets net.ipv4.ip_forward for open mode and restores the old value on drop.
pub struct Forwarding(String);

impl Forwarding {
    pub fn on() -> Forwarding {
        let path = "/proc/sys/net/ipv4/ip_forward";
        let old = std::fs::read_to_string(path).expect("ip_forward");
        std::fs::write(path, "1").expect("enable forwarding");
        Forwarding(old.trim().to_string())
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", &self.0);
    }
}
