//! `agentbox serve` as a process: it reads its config, listens, answers, and stops on SIGTERM.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::*;

use std::time::{Duration, Instant};

#[test]
fn serve_answers_health_and_refuses_a_bad_config() {
    let dir = tempfile::Builder::new().prefix("serve-").tempdir().unwrap();
    let config = dir.path().join("server.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{port}\"\nagentbox = \"{BIN}\"\n[[tokens]]\ntoken = \"0123456789abcdef-serve\"\ntenant = \"t\"\nmax_sandboxes = 1\nmax_memory = 1073741824\n"),
    )
    .unwrap();
    let mut server = agentbox(&["serve", "--config", config.to_str().unwrap()])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        match reqwest::blocking::get(format!("http://127.0.0.1:{port}/health")) {
            Ok(r) => break r.text().unwrap(),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the server never answered: {e}"),
        }
    };
    assert!(body.contains("ok"), "{body}");
    let unauthorized =
        reqwest::blocking::get(format!("http://127.0.0.1:{port}/v1/sandboxes")).unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);
    let _ = std::process::Command::new("kill")
        .arg(server.id().to_string())
        .status();
    let status = server.wait().unwrap();
    assert!(
        status.success(),
        "serve did not stop cleanly on SIGTERM: {status:?}"
    );
    std::fs::write(&config, "listen = \"127.0.0.1:1\"\nbogus = 1\n").unwrap();
    let o = agentbox(&["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

#[test]
fn killing_the_server_loses_no_sandbox() {
    let dir = tempfile::Builder::new()
        .prefix("serve-kill-")
        .tempdir()
        .unwrap();
    let config = dir.path().join("server.toml");
    let token = "0123456789abcdef-killtest";
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{port}\"\nagentbox = \"{BIN}\"\n[[tokens]]\ntoken = \"{token}\"\ntenant = \"kill-test\"\nmax_sandboxes = 2\nmax_memory = 4294967296\n"),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let start = || {
        let child = agentbox(&["serve", "--config", config.to_str().unwrap()])
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while reqwest::blocking::get(format!("{base}/health")).is_err() {
            assert!(Instant::now() < deadline, "the server never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    };
    let client = reqwest::blocking::Client::new();
    let call = |method: reqwest::Method, path: &str, body: &str| {
        client
            .request(method, format!("{base}{path}"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let mut first = start();
    let created: serde_json::Value =
        serde_json::from_reader(call(reqwest::Method::POST, "/v1/sandboxes", "{}")).unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &first.id().to_string()])
        .status();
    let _ = first.wait();
    let mut second = start();
    let listed = call(reqwest::Method::GET, "/v1/sandboxes", "")
        .text()
        .unwrap();
    let exec: serde_json::Value = serde_json::from_reader(call(
        reqwest::Method::POST,
        &format!("/v1/sandboxes/{id}/exec"),
        r#"{"command":["echo","alive"]}"#,
    ))
    .unwrap();
    let deleted = call(reqwest::Method::DELETE, &format!("/v1/sandboxes/{id}"), "")
        .status()
        .as_u16();
    let _ = std::process::Command::new("kill")
        .arg(second.id().to_string())
        .status();
    let _ = second.wait();
    assert!(listed.contains(&id), "{listed}");
    assert_eq!(exec["stdout"], "alive\n", "{exec}");
    assert_eq!(deleted, 204);
}
