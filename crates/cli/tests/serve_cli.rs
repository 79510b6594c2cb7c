//! `agentbox serve` as a process: it reads its config, listens, answers, stops on SIGTERM, and a
//! `kill -9` of it loses no sandbox.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::*;

#[test]
fn serve_answers_health_and_refuses_a_bad_config() {
    let mut server = ServeProcess::start("0123456789abcdef-serve", "t", 1, 1 << 30);
    let body = reqwest::blocking::get(format!("{}/health", server.base))
        .unwrap()
        .text()
        .unwrap();
    assert!(body.contains("ok"), "{body}");
    let unauthorized = reqwest::blocking::get(format!("{}/v1/sandboxes", server.base)).unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);
    let status = server.stop("-TERM");
    assert!(
        status.success(),
        "serve did not stop cleanly on SIGTERM: {status:?}"
    );
    std::fs::write(&server.config, "listen = \"127.0.0.1:1\"\nbogus = 1\n").unwrap();
    let o = agentbox(&["serve", "--config", server.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

#[test]
fn killing_the_server_loses_no_sandbox() {
    let token = "0123456789abcdef-killtest";
    let mut server = ServeProcess::start(token, "kill-test", 2, 4 << 30);
    let client = reqwest::blocking::Client::new();
    let call = |base: &str, method: reqwest::Method, path: &str, body: &str| {
        client
            .request(method, format!("{base}{path}"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let created: serde_json::Value = serde_json::from_reader(call(
        &server.base,
        reqwest::Method::POST,
        "/v1/sandboxes",
        "{}",
    ))
    .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    server.stop("-KILL");
    server.restart();
    let listed = call(&server.base, reqwest::Method::GET, "/v1/sandboxes", "")
        .text()
        .unwrap();
    let exec: serde_json::Value = serde_json::from_reader(call(
        &server.base,
        reqwest::Method::POST,
        &format!("/v1/sandboxes/{id}/exec"),
        r#"{"command":["echo","alive"]}"#,
    ))
    .unwrap();
    let deleted = call(
        &server.base,
        reqwest::Method::DELETE,
        &format!("/v1/sandboxes/{id}"),
        "",
    )
    .status()
    .as_u16();
    assert!(listed.contains(&id), "{listed}");
    assert_eq!(exec["stdout"], "alive\n", "{exec}");
    assert_eq!(deleted, 204);
}
