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
