//! The audit log and the control socket of a running proxy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt;

use agentbox_proxy::{control_show, control_update, Allowlist};
use support::*;

#[test]
fn every_decision_is_audited_with_byte_counts() {
    let port = echo_server();
    let proxy = start(
        &["echo.test"],
        &[],
        &["127.0.0.1/32"],
        "127.0.0.1 echo.test\n",
    );

    let mut stream = client(&proxy);
    write!(stream, "CONNECT echo.test:{port} HTTP/1.1\r\n\r\nhello").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    read_to_close(&mut stream);
    let first = audit_lines(&proxy, 1);

    let denied = exchange(&proxy, b"CONNECT nope.test:443 HTTP/1.1\r\n\r\n");
    assert!(denied.starts_with("HTTP/1.1 403 "));
    let lines = audit_lines(&proxy, 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], first[0]);

    let allow = &lines[0];
    assert_eq!(allow["sandbox"], "sb-test");
    assert_eq!(allow["host"], "echo.test");
    assert_eq!(allow["port"], port);
    assert_eq!(allow["method"], "CONNECT");
    assert_eq!(allow["verdict"], "allow");
    assert_eq!(allow["reason"], "allowed by rule echo.test");
    assert_eq!(allow["address"], format!("127.0.0.1:{port}"));
    assert_eq!(allow["bytes_up"], 5);
    assert_eq!(allow["bytes_down"], 5);
    assert!(allow["ms"].is_u64());
    let time = allow["time"].as_str().unwrap();
    assert_eq!(time.len(), "2026-11-26T22:53:49.123Z".len(), "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");

    let deny = &lines[1];
    assert_eq!(deny["host"], "nope.test");
    assert_eq!(deny["port"], 443);
    assert_eq!(deny["verdict"], "deny");
    assert_eq!(deny["reason"], "nope.test is not on the allowlist");
    assert!(deny.get("address").is_none());
    assert_eq!(deny["bytes_up"], 0);

    let mode = std::fs::metadata(&proxy.audit)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn control_show_reports_the_lists() {
    let proxy = start(
        &["pypi.org", "*.Example.com."],
        &["bad.example.com"],
        &["127.0.0.1"],
        "",
    );
    let mode = std::fs::metadata(&proxy.control)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        control_show(&proxy.control).unwrap(),
        Allowlist {
            allow: strings(&["pypi.org", "*.example.com"]),
            deny: strings(&["bad.example.com"]),
            cidrs: strings(&["127.0.0.1/32"]),
        }
    );
}

#[test]
fn control_update_changes_the_next_decision() {
    let port = echo_server();
    let proxy = start(
        &["a.test"],
        &[],
        &["127.0.0.1/32"],
        "127.0.0.1 a.test b.test\n",
    );
    let connect_b = format!("CONNECT b.test:{port} HTTP/1.1\r\n\r\n");
    let response = exchange(&proxy, connect_b.as_bytes());
    assert!(response.starts_with("HTTP/1.1 403 "), "{response:?}");

    let list =
        control_update(&proxy.control, &strings(&["b.test"]), &strings(&["a.test"])).unwrap();
    assert_eq!(list.allow, strings(&["b.test"]));
    assert_eq!(list.deny, strings(&["a.test"]));

    let mut stream = client(&proxy);
    stream.write_all(connect_b.as_bytes()).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_close(&mut stream).starts_with("HTTP/1.1 200 "));
    let response = exchange(
        &proxy,
        format!("CONNECT a.test:{port} HTTP/1.1\r\n\r\n").as_bytes(),
    );
    assert_denied(&response, 403, "a.test is denied by rule a.test");

    // Moving it back to allow removes it from deny.
    let list = control_update(&proxy.control, &strings(&["a.test"]), &[]).unwrap();
    assert_eq!(list.allow, strings(&["b.test", "a.test"]));
    assert!(list.deny.is_empty());
}

#[test]
fn control_update_refuses_an_invalid_rule_and_changes_nothing() {
    let proxy = start(&["a.test"], &[], &[], "");
    let before = control_show(&proxy.control).unwrap();
    let err = control_update(
        &proxy.control,
        &strings(&["good.test", "bad..test"]),
        &strings(&["c.test"]),
    )
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("\"bad..test\""), "{err}");
    let err = control_update(&proxy.control, &[], &strings(&["10.0.0.1"])).unwrap_err();
    assert!(err.to_string().contains("allow it as a CIDR"), "{err}");
    assert_eq!(control_show(&proxy.control).unwrap(), before);
}

#[test]
fn a_missing_control_socket_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.sock");
    let err = control_show(&path).unwrap_err();
    assert!(err.to_string().contains("absent.sock"), "{err}");
}
