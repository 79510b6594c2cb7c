//! The streaming form of exec over HTTP: output arrives as server-sent events while the command
//! runs, then its exit code.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::*;

use std::io::BufRead;
use std::time::{Duration, Instant};

const TOKEN: &str = "0123456789abcdef-stream";

struct Server {
    process: ServeProcess,
    client: reqwest::blocking::Client,
    created: Vec<String>,
}

impl Server {
    fn start() -> Server {
        let process = ServeProcess::start(TOKEN, "stream-test", 4, 16 << 30);
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Server {
            process,
            client,
            created: Vec::new(),
        }
    }

    fn post(&self, path: &str, body: serde_json::Value) -> reqwest::blocking::Response {
        self.client
            .post(format!("{}{path}", self.process.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for id in &self.created {
            let _ = self
                .client
                .delete(format!("{}/v1/sandboxes/{id}", self.process.base))
                .bearer_auth(TOKEN)
                .send();
        }
    }
}

#[test]
fn exec_stream_delivers_output_while_the_command_runs() {
    let _g = serial();
    let mut server = Server::start();
    let created: serde_json::Value =
        serde_json::from_reader(server.post("/v1/sandboxes", serde_json::json!({}))).unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    server.created.push(id.clone());
    let started = Instant::now();
    let response = server.post(
        &format!("/v1/sandboxes/{id}/exec/stream"),
        serde_json::json!({"command": ["sh", "-c", "echo one; echo warn >&2; sleep 1; echo two; exit 5"]}),
    );
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut events: Vec<(String, serde_json::Value, Duration)> = Vec::new();
    let mut name = String::new();
    for line in std::io::BufReader::new(response).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            events.push((
                name.clone(),
                serde_json::from_str(data).unwrap(),
                started.elapsed(),
            ));
            if name == "exit" || name == "error" {
                break;
            }
        }
    }
    let names: Vec<&str> = events.iter().map(|(n, _, _)| n.as_str()).collect();
    let stdout: String = events
        .iter()
        .filter(|(n, _, _)| n == "stdout")
        .map(|(_, d, _)| d["data"].as_str().unwrap())
        .collect();
    assert_eq!(stdout, "one\ntwo\n", "{names:?}");
    assert!(names.contains(&"stderr"), "{names:?}");
    let (last, exit, at_exit) = events.last().unwrap();
    assert_eq!(last, "exit");
    assert_eq!(exit["exit_code"], 5);
    let first_out = events.iter().find(|(n, _, _)| n == "stdout").unwrap().2;
    assert!(
        *at_exit >= Duration::from_secs(1),
        "the command sleeps a second: {at_exit:?}"
    );
    assert!(
        first_out + Duration::from_millis(500) < *at_exit,
        "output was not streamed: first at {first_out:?}, exit at {at_exit:?}"
    );
    // An unknown sandbox is an HTTP error, not a stream.
    let missing = server.post(
        "/v1/sandboxes/nosuchsandbox/exec/stream",
        serde_json::json!({"command": ["true"]}),
    );
    assert_eq!(missing.status().as_u16(), 404);
}
