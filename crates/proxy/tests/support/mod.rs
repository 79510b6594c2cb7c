//! Test harness: a proxy on 127.0.0.1:0 in a background thread, loopback upstream servers, and a
//! raw client. Only loopback addresses are ever used.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use agentbox_proxy::ProxyConfig;

/// Generous bound on any single wait, so a broken test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A running proxy and the directory holding its files.
pub struct Proxy {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub audit: PathBuf,
    pub control: PathBuf,
}

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Starts a proxy with `allow`, `deny`, `cidrs` and a hosts file of `hosts` lines, auditing and
/// listening for control requests in a temporary directory.
pub fn start(allow: &[&str], deny: &[&str], cidrs: &[&str], hosts: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let hosts_file = dir.path().join("hosts");
    std::fs::write(&hosts_file, hosts).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let control = dir.path().join("control.sock");
    let config = ProxyConfig {
        sandbox: "sb-test".into(),
        allow: strings(allow),
        deny: strings(deny),
        cidrs: strings(cidrs),
        hosts_file: Some(hosts_file),
        audit: Some(audit.clone()),
        control: Some(control.clone()),
    };
    config.validate().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        if let Err(e) = agentbox_proxy::run(listener, config) {
            eprintln!("proxy stopped: {e}");
        }
    });
    // The listener already accepts; the control socket appears once the runtime is up.
    let deadline = Instant::now() + PATIENCE;
    while !control.exists() {
        assert!(Instant::now() < deadline, "control socket never appeared");
        thread::sleep(Duration::from_millis(10));
    }
    Proxy {
        addr,
        dir,
        audit,
        control,
    }
}

/// An upstream TCP server that echoes every connection until the peer closes.
pub fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = stream.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

/// An upstream HTTP server for one request: sends the head it received (and `body_len` body
/// bytes) to the returned channel, answers 200 "ok" and closes.
pub fn http_server(body_len: usize) -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                if received.len() >= end + 4 + body_len {
                    break;
                }
            }
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
        tx.send(String::from_utf8_lossy(&received).into_owned())
            .unwrap();
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .unwrap();
    });
    (port, rx)
}

/// A client connection to the proxy, with a read timeout so tests cannot hang.
pub fn client(proxy: &Proxy) -> TcpStream {
    let stream = TcpStream::connect(proxy.addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Sends `request`, then reads everything until the proxy closes.
pub fn exchange(proxy: &Proxy, request: &[u8]) -> String {
    let mut stream = client(proxy);
    stream.write_all(request).unwrap();
    read_to_close(&mut stream)
}

pub fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading from proxy: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads exactly `n` bytes.
pub fn read_exact(stream: &mut TcpStream, n: usize) -> String {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// Asserts `response` is a refusal with `status` whose body contains `reason`.
pub fn assert_denied(response: &str, status: u16, reason: &str) {
    assert!(
        response.starts_with(&format!("HTTP/1.1 {status} ")),
        "expected {status}: {response:?}"
    );
    assert!(
        response.contains("\r\nContent-Type: text/plain\r\n"),
        "{response:?}"
    );
    assert!(
        response.contains("\r\nX-Agentbox-Proxy: denied\r\n"),
        "{response:?}"
    );
    assert!(
        response.contains("\r\nConnection: close\r\n"),
        "{response:?}"
    );
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(body.starts_with("agentbox proxy: "), "{response:?}");
    assert!(body.contains(reason), "expected {reason:?} in {body:?}");
    assert_eq!(body.lines().count(), 1, "{body:?}");
}

/// The audit log's lines, parsed, once it has at least `n` of them.
pub fn audit_lines(proxy: &Proxy, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(&proxy.audit).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "audit has {} of {n} lines",
            lines.len()
        );
        thread::sleep(Duration::from_millis(10));
    }
}
