//! End-to-end behaviour of the proxy over loopback: tunnels, plain HTTP, and every refusal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::net::Shutdown;

use support::*;

const CONNECTED: &str = "HTTP/1.1 200 Connection established\r\n\r\n";

#[test]
fn connect_to_an_allowed_name_relays_both_ways() {
    let port = echo_server();
    let proxy = start(
        &["echo.test"],
        &[],
        &["127.0.0.1/32"],
        "127.0.0.1 echo.test\n",
    );
    let mut stream = client(&proxy);
    write!(
        stream,
        "CONNECT echo.test:{port} HTTP/1.1\r\nHost: echo.test:{port}\r\n\r\n"
    )
    .unwrap();
    assert_eq!(read_exact(&mut stream, CONNECTED.len()), CONNECTED);
    stream.write_all(b"ping").unwrap();
    assert_eq!(read_exact(&mut stream, 4), "ping");
    stream.write_all(b"second message").unwrap();
    assert_eq!(read_exact(&mut stream, 14), "second message");
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut stream), "");
}

#[test]
fn bytes_pipelined_after_the_connect_head_are_delivered() {
    let port = echo_server();
    let proxy = start(
        &["echo.test"],
        &[],
        &["127.0.0.1/32"],
        "127.0.0.1 echo.test\n",
    );
    let mut stream = client(&proxy);
    let request = format!("CONNECT echo.test:{port} HTTP/1.1\r\n\r\nearly bytes");
    stream.write_all(request.as_bytes()).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        read_to_close(&mut stream),
        format!("{CONNECTED}early bytes")
    );
}

#[test]
fn absolute_form_get_is_rewritten_to_origin_form() {
    let (port, received) = http_server(0);
    let proxy = start(
        &["web.test"],
        &[],
        &["127.0.0.1/32"],
        "127.0.0.1 web.test\n",
    );
    let request = format!(
        "GET http://WEB.test:{port}/path?q=1 HTTP/1.1\r\n\
         Host: elsewhere.example\r\n\
         User-Agent: agentbox-test\r\n\
         Proxy-Connection: keep-alive\r\n\
         Proxy-Authorization: Basic c2VjcmV0\r\n\
         Connection: keep-alive\r\n\r\n"
    );
    let response = exchange(&proxy, request.as_bytes());
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response:?}");
    assert!(response.ends_with("\r\n\r\nok"), "{response:?}");
    let head = received.recv_timeout(PATIENCE).unwrap();
    assert!(head.starts_with("GET /path?q=1 HTTP/1.1\r\n"), "{head:?}");
    assert!(
        head.contains(&format!("\r\nHost: web.test:{port}\r\n")),
        "{head:?}"
    );
    assert!(
        head.contains("\r\nUser-Agent: agentbox-test\r\n"),
        "{head:?}"
    );
    assert!(head.contains("\r\nConnection: close\r\n"), "{head:?}");
    assert!(!head.to_ascii_lowercase().contains("proxy-"), "{head:?}");
    assert!(!head.contains("keep-alive"), "{head:?}");
    assert!(!head.contains("elsewhere"), "{head:?}");
}

#[test]
fn request_body_after_the_head_is_forwarded() {
    let (port, received) = http_server(11);
    let proxy = start(
        &["web.test"],
        &[],
        &["127.0.0.1/32"],
        "127.0.0.1 web.test\n",
    );
    let request = format!(
        "POST http://web.test:{port}/upload HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world"
    );
    let response = exchange(&proxy, request.as_bytes());
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response:?}");
    let got = received.recv_timeout(PATIENCE).unwrap();
    assert!(got.starts_with("POST /upload HTTP/1.1\r\n"), "{got:?}");
    assert!(got.ends_with("\r\n\r\nhello world"), "{got:?}");
}

#[test]
fn a_name_not_on_the_list_is_refused() {
    let proxy = start(&["pypi.org"], &[], &[], "");
    let response = exchange(&proxy, b"CONNECT other.test:443 HTTP/1.1\r\n\r\n");
    assert_denied(&response, 403, "other.test is not on the allowlist");
    let response = exchange(&proxy, b"GET http://other.test/ HTTP/1.1\r\n\r\n");
    assert_denied(&response, 403, "other.test is not on the allowlist");
}

#[test]
fn a_deny_rule_beats_a_wildcard_allow() {
    let port = echo_server();
    let proxy = start(
        &["*.test"],
        &["blocked.test"],
        &["127.0.0.1/32"],
        "127.0.0.1 blocked.test open.test\n",
    );
    let response = exchange(
        &proxy,
        format!("CONNECT blocked.test:{port} HTTP/1.1\r\n\r\n").as_bytes(),
    );
    assert_denied(
        &response,
        403,
        "blocked.test is denied by rule blocked.test",
    );
    let mut stream = client(&proxy);
    write!(stream, "CONNECT open.test:{port} HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_exact(&mut stream, CONNECTED.len()), CONNECTED);
}

#[test]
fn an_allowed_name_resolving_to_loopback_is_refused_without_a_cidr() {
    let port = echo_server();
    let proxy = start(&["sneaky.test"], &[], &[], "127.0.0.1 sneaky.test\n");
    let response = exchange(
        &proxy,
        format!("CONNECT sneaky.test:{port} HTTP/1.1\r\n\r\n").as_bytes(),
    );
    assert_denied(
        &response,
        403,
        "sneaky.test resolves to 127.0.0.1 (loopback)",
    );
    let response = exchange(
        &proxy,
        format!("GET http://sneaky.test:{port}/ HTTP/1.1\r\n\r\n").as_bytes(),
    );
    assert_denied(&response, 403, "(loopback)");
}

#[test]
fn ip_literals_need_a_cidr() {
    let port = echo_server();
    let closed = start(&["pypi.org"], &[], &[], "");
    let response = exchange(
        &closed,
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n").as_bytes(),
    );
    assert_denied(&response, 403, "IP addresses are refused; allow a CIDR");
    let response = exchange(
        &closed,
        format!("CONNECT [::1]:{port} HTTP/1.1\r\n\r\n").as_bytes(),
    );
    assert_denied(&response, 403, "IP addresses are refused; allow a CIDR");
    let response = exchange(
        &closed,
        format!("GET http://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n").as_bytes(),
    );
    assert_denied(&response, 403, "IP addresses are refused; allow a CIDR");

    let open = start(&[], &[], &["127.0.0.1/32"], "");
    let mut stream = client(&open);
    write!(stream, "CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_exact(&mut stream, CONNECTED.len()), CONNECTED);
    stream.write_all(b"x").unwrap();
    assert_eq!(read_exact(&mut stream, 1), "x");
}

#[test]
fn an_oversized_head_gets_431() {
    let proxy = start(&["pypi.org"], &[], &[], "");
    let request = format!(
        "CONNECT pypi.org:443 HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let response = exchange(&proxy, request.as_bytes());
    assert_denied(&response, 431, "larger than 16384 bytes");
}

#[test]
fn origin_form_and_malformed_requests_get_400() {
    let proxy = start(&["pypi.org"], &[], &[], "");
    let response = exchange(&proxy, b"GET / HTTP/1.1\r\nHost: pypi.org\r\n\r\n");
    assert_denied(&response, 400, "this is an HTTP proxy");
    let response = exchange(&proxy, b"CONNECT pypi.org:0 HTTP/1.1\r\n\r\n");
    assert_denied(&response, 400, "port 0");
    let response = exchange(&proxy, b"CONNECT pypi.org:https HTTP/1.1\r\n\r\n");
    assert_denied(&response, 400, "invalid port");
    let response = exchange(&proxy, b"GET https://pypi.org/ HTTP/1.1\r\n\r\n");
    assert_denied(&response, 400, "use CONNECT");
    let response = exchange(
        &proxy,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    );
    assert_denied(&response, 400, "");
    let response = exchange(&proxy, b"CONNECT bad_host-.test:443 HTTP/1.1\r\n\r\n");
    assert_denied(&response, 400, "not a valid host name");
}

#[test]
fn an_unreachable_upstream_gets_502() {
    // Bind and drop a listener: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = start(
        &["down.test"],
        &[],
        &["127.0.0.1/32"],
        "127.0.0.1 down.test\n",
    );
    let response = exchange(
        &proxy,
        format!("CONNECT down.test:{port} HTTP/1.1\r\n\r\n").as_bytes(),
    );
    assert_denied(
        &response,
        502,
        &format!("cannot connect to down.test:{port}"),
    );
}
