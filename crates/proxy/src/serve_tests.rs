use std::io::{Read, Write};

use super::*;
use crate::resolve::Dns;
use crate::ProxyConfig;

/// A proxy whose DNS fallback always fails, so "unresolvable" needs no DNS query.
fn start_without_dns(allow: &[&str]) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ProxyConfig {
        sandbox: "sb-unit".into(),
        allow: allow.iter().map(|s| s.to_string()).collect(),
        deny: vec![],
        cidrs: vec![],
        hosts_file: None,
        audit: None,
        control: None,
    };
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let prepared = crate::prepare_with(listener, config, Dns::Unavailable).unwrap();
        let _ = runtime.block_on(prepared.serve_async(false));
    });
    addr
}

fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn an_unresolvable_name_gets_502() {
    let addr = start_without_dns(&["*.invalid"]);
    let response = exchange(addr, b"CONNECT nowhere.invalid:443 HTTP/1.1\r\n\r\n");
    assert!(
        response.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
        "{response:?}"
    );
    assert!(
        response
            .ends_with("\r\n\r\nagentbox proxy: cannot resolve nowhere.invalid: DNS disabled\n"),
        "{response:?}"
    );
    let response = exchange(addr, b"GET http://nowhere.invalid/ HTTP/1.1\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 502 "), "{response:?}");
}

#[test]
fn a_client_closing_mid_head_gets_no_response() {
    let addr = start_without_dns(&["*.invalid"]);
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"CONNECT nowhere.invalid:443 HTTP/1.1\r\n")
        .unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    assert_eq!(out, "");
}

#[test]
fn denial_response_format() {
    let response = String::from_utf8(denial_response(403, "x is not on the allowlist")).unwrap();
    assert_eq!(
        response,
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 42\r\n\
         X-Agentbox-Proxy: denied\r\nConnection: close\r\n\r\n\
         agentbox proxy: x is not on the allowlist\n"
    );
    for (status, phrase) in [
        (400, "Bad Request"),
        (431, "Request Header Fields Too Large"),
        (502, "Bad Gateway"),
    ] {
        let text = String::from_utf8(denial_response(status, "r")).unwrap();
        assert!(text.starts_with(&format!("HTTP/1.1 {status} {phrase}\r\n")));
    }
}

#[test]
fn transient_accept_errors() {
    assert!(is_transient(&std::io::Error::from_raw_os_error(24)));
    assert!(is_transient(&std::io::Error::from(
        std::io::ErrorKind::ConnectionAborted
    )));
    assert!(!is_transient(&std::io::Error::from_raw_os_error(9)));
}
