//! `agentbox serve`'s HTTP API against real sandboxes: the server runs in-process on 127.0.0.1
//! (port 0) with a temporary config and creates sandboxes with the built `agentbox` binary.
//! Every sandbox a test creates is removed by a guard, whatever the test's outcome.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::*;

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789ab";
const SOLO: &str = "solo-token-0123456789";
const MAX_BODY: usize = 64 * 1024;
/// Every tenant of these tests; `Cleanup` removes their sandboxes.
const TENANT_PREFIX: &str = "http-test-";

/// The server, in a thread of its own with its own tokio runtime; stopped when dropped.
struct Server {
    server: InProcessServer,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.toml");
        let tenant = |token: &str, tenant: &str, max: u32, memory: &str| {
            format!(
                "[[tokens]]\ntoken = \"{token}\"\ntenant = \"{tenant}\"\n\
                 max_sandboxes = {max}\nmax_memory = {memory}\n"
            )
        };
        let text = format!(
            "listen = \"127.0.0.1:0\"\nagentbox = \"{BIN}\"\nmax_body = {MAX_BODY}\n{}{}{}",
            tenant(ALICE, "http-test-alice", 4, "4294967296"),
            tenant(BOB, "http-test-bob", 4, "4294967296"),
            tenant(SOLO, "http-test-solo", 1, "805306368"),
        );
        std::fs::write(&path, text).unwrap();
        let config = agentbox_server::Config::from_toml_file(&path).unwrap();
        Server {
            server: InProcessServer::start(config),
        }
    }

    fn client(&self, token: Option<&str>) -> Api {
        Api {
            base: format!("http://{}", self.server.addr),
            token: token.map(str::to_string),
            // A fresh connection per request: after a 413 the server closes a connection whose
            // body it did not read, and a pooled one would fail the next request.
            http: Client::builder().pool_max_idle_per_host(0).build().unwrap(),
        }
    }
}

/// A client acting with one token (or none).
struct Api {
    base: String,
    token: Option<String>,
    http: Client,
}

impl Api {
    fn send(&self, method: Method, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .body(body);
        if let Some(t) = &self.token {
            request = request.bearer_auth(t);
        }
        let response = request.send().unwrap();
        (response.status(), response.bytes().unwrap().to_vec())
    }

    fn json(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let (status, body) = self.send(method, path, bytes);
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Creates a sandbox (the test's `Cleanup` removes it); returns its id.
    fn create(&self, body: Value) -> String {
        let (status, created) = self.json(Method::POST, "/v1/sandboxes", Some(body));
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["id"].as_str().unwrap().to_string();
        assert_eq!(id.len(), 12, "{id}");
        id
    }

    fn get(&self, path: &str) -> (StatusCode, Value) {
        self.json(Method::GET, path, None)
    }

    fn exec(&self, target: &str, body: Value) -> (StatusCode, Value) {
        self.json(Method::POST, &at(target, "/exec"), Some(body))
    }

    /// Runs argv to its end (200) and returns the result.
    fn run(&self, target: &str, argv: &[&str]) -> Value {
        let (status, out) = self.exec(target, json!({ "command": argv }));
        assert_eq!(status, StatusCode::OK, "{out}");
        out
    }

    fn ids(&self) -> Vec<String> {
        let (status, list) = self.get("/v1/sandboxes");
        assert_eq!(status, StatusCode::OK, "{list}");
        let list = list.as_array().unwrap().iter();
        list.map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Holds the lock of this binary's tests; when dropped, removes every sandbox of the test
/// tenants with `agentbox rm` (even when the server is gone or the test failed).
struct Cleanup {
    _lock: std::sync::MutexGuard<'static, ()>,
}

fn begin() -> Cleanup {
    Cleanup { _lock: serial() }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for s in agentbox_runtime::persistent::state::list() {
            if s.tenant.is_some_and(|t| t.starts_with(TENANT_PREFIX)) {
                let _ = agentbox(&["rm", &s.id]).output();
            }
        }
    }
}

/// The API path of sandbox `target`, then `suffix`.
fn at(target: &str, suffix: &str) -> String {
    format!("/v1/sandboxes/{target}{suffix}")
}

/// Asserts an error answer: its status and its stable code.
fn assert_error(answer: &(StatusCode, Value), status: StatusCode, code: &str) {
    let (got, body) = answer;
    let got_code = body["error"]["code"].as_str();
    assert_eq!((*got, got_code), (status, Some(code)), "{body}");
}

#[test]
fn create_exec_files_delete() {
    let _g = begin();
    let before = host_state();
    let server = Server::start();
    let api = server.client(Some(ALICE));
    let b = api.create(json!({"policy": {"limits": {"memory": "256M"}}, "name": "http-life"}));
    let out = api.run(&b, &["python3", "-c", "print(6*7)"]);
    assert_eq!(out["stdout"], "42\n", "{out}");
    assert_eq!(out["exit_code"], 0);
    assert!(out["duration_ms"].is_u64(), "{out}");
    assert_eq!(out["truncated"], false);
    // stdin, env, cwd; by name as well as by id.
    let body = json!({"command": ["sh", "-c", "cat; echo \"$K\"; pwd"], "stdin": "in\n",
                      "env": {"K": "v"}, "cwd": "/tmp"});
    let (_, out) = api.exec("http-life", body);
    assert_eq!(out["stdout"], "in\nv\n/tmp\n", "{out}");
    // Command outcomes are answers, not API errors.
    assert_eq!(api.run(&b, &["no-such-command"])["exit_code"], 127);
    assert_eq!(api.run(&b, &["sh", "-c", "exit 3"])["exit_code"], 3);
    let (_, out) = api.exec(&b, json!({"command": ["sleep", "30"], "timeout_s": 1}));
    assert_eq!(out["exit_code"], 124, "{out}");
    let answer = api.exec(&b, json!({"command": ["true"], "cwd": "/nonexistent"}));
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    // Files: bytes in, the same bytes out (owned by the sandbox's user), listed with their size.
    let contents: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let file = at(&b, "/files?path=/tmp/blob.bin");
    let (status, _) = api.send(Method::PUT, &file, contents.clone());
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, back) = api.send(Method::GET, &file, Vec::new());
    assert_eq!((status, back == contents), (StatusCode::OK, true));
    let out = api.run(&b, &["stat", "-c", "%s %u", "/tmp/blob.bin"]);
    assert_eq!(out["stdout"], "5000 0\n", "{out}");
    let (status, dir) = api.get(&at(&b, "/dir?path=/tmp"));
    assert_eq!(status, StatusCode::OK, "{dir}");
    let entries = dir.as_array().unwrap();
    let entry = entries.iter().find(|e| e["name"] == "blob.bin").unwrap();
    assert_eq!(entry["kind"], "file");
    assert_eq!(entry["size"], 5000);
    let answer = api.get(&at(&b, "/files?path=/nope"));
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    api.run(&b, &["sh", "-c", "head -c 65537 /dev/zero >/tmp/big"]); // MAX_BODY + 1
    let answer = api.get(&at(&b, "/files?path=/tmp/big"));
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Shown, then deleted, then gone.
    let (status, shown) = api.get(&at(&b, ""));
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["state"], "running");
    assert_eq!(shown["name"], "http-life");
    assert!(api.ids().contains(&b));
    let (status, _) = api.send(Method::DELETE, &at(&b, ""), Vec::new());
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(&api.get(&at(&b, "")), StatusCode::NOT_FOUND, "not_found");
    assert!(!api.ids().contains(&b));
    assert!(!Path::new("/run/agentbox").join(&b).exists());
    drop(server);
    assert_nothing_left(&before);
}

#[test]
fn another_tenant_sees_nothing() {
    let _g = begin();
    let server = Server::start();
    let (alice, bob) = (server.client(Some(ALICE)), server.client(Some(BOB)));
    let b = alice.create(json!({"name": "alice-only"}));
    let bob_box = bob.create(json!({}));
    assert_eq!(bob.ids(), vec![bob_box.clone()]);
    assert!(!alice.ids().contains(&bob_box));
    for target in [b.as_str(), "alice-only"] {
        let answer = bob.get(&at(target, ""));
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
        let answer = bob.exec(target, json!({"command": ["true"]}));
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
        for (method, suffix) in [
            (Method::GET, "/files?path=/etc/hostname"),
            (Method::PUT, "/files?path=/tmp/planted"),
            (Method::GET, "/dir?path=/"),
            (Method::DELETE, ""),
        ] {
            let answer = bob.json(method.clone(), &at(target, suffix), Some(json!("x")));
            assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
        }
    }
    // Alice's sandbox is untouched by all of that.
    let out = alice.run(&b, &["sh", "-c", "ls /tmp | wc -l"]);
    assert_eq!(out["stdout"], "0\n", "{out}");
}

#[test]
fn tokens_bodies_and_policies_are_checked() {
    let _g = begin();
    let server = Server::start();
    for token in [None, Some("wrong-token-0123456789")] {
        let answer = server.client(token).get("/v1/sandboxes");
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let answer = server.client(None).get("/health");
    assert_eq!(answer, (StatusCode::OK, json!({"status": "ok"})));
    let api = server.client(Some(ALICE));
    for body in [
        json!({"policy": {"limits": {"memroy": "1G"}}}),
        json!({"policy": {}, "ttl": 5}),
        json!({"policy": {"workspace": "/etc"}}),
        json!({"policy": {"mounts": [{"type": "bind", "source": "/", "target": "/host"}]}}),
        json!({"policy": {"network": {"mode": "allow:a.test", "hosts_file": "/etc/hosts"}}}),
        json!({"policy": {"network": {"mode": "allow:a.test", "audit": "/etc/passwd"}}}),
        json!({"policy": {"network": {"mode": "allow:"}}}),
    ] {
        let answer = api.json(Method::POST, "/v1/sandboxes", Some(body));
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    }
    let (status, out) = api.send(Method::POST, "/v1/sandboxes", b"{\"policy\": ".to_vec());
    let answer = (status, serde_json::from_slice(&out).unwrap());
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    let path = at("000000000000", "/files?path=/tmp/big");
    let (status, out) = api.send(Method::PUT, &path, vec![b'x'; MAX_BODY + 1]);
    let answer = (status, serde_json::from_slice(&out).unwrap());
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert!(api.ids().is_empty());
}

#[test]
fn quotas_refuse_with_429() {
    let _g = begin();
    let server = Server::start();
    let solo = server.client(Some(SOLO));
    // max_memory is 768M: a sandbox of the default 1G never fits.
    let answer = solo.json(Method::POST, "/v1/sandboxes", Some(json!({})));
    assert_error(&answer, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    // Two creates at once with max_sandboxes = 1: exactly one is made.
    let body = json!({"policy": {"limits": {"memory": "256M"}}});
    let results: Vec<(StatusCode, Value)> = std::thread::scope(|s| {
        let create = || solo.json(Method::POST, "/v1/sandboxes", Some(body.clone()));
        let calls: Vec<_> = (0..2).map(|_| s.spawn(create)).collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let mut statuses: Vec<u16> = results.iter().map(|(s, _)| s.as_u16()).collect();
    statuses.sort();
    assert_eq!(statuses, vec![201, 429], "{results:?}");
    assert_eq!(solo.ids().len(), 1);
    // The memory limits of existing sandboxes count (read from their cgroups): 1G + 3.5G > 4G.
    let alice = server.client(Some(ALICE));
    let _b = alice.create(json!({"policy": {"limits": {"memory": "1G"}}}));
    let body = json!({"policy": {"limits": {"memory": "3584M"}}});
    let answer = alice.json(Method::POST, "/v1/sandboxes", Some(body));
    assert_error(&answer, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
}

#[test]
fn openapi_metrics_and_a_restart() {
    let _g = begin();
    let server = Server::start();
    let api = server.client(Some(ALICE));
    let b = api.create(json!({}));
    assert_eq!(api.run(&b, &["true"])["exit_code"], 0);
    let (status, doc) = api.get("/openapi.json");
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    let mut wanted = vec![
        "/v1/sandboxes".to_string(),
        "/health".into(),
        "/metrics".into(),
    ];
    wanted.extend(["", "/exec", "/files", "/dir"].map(|s| at("{id}", s)));
    for path in wanted {
        assert!(
            paths.contains_key(&path),
            "{path} not in {:?}",
            paths.keys()
        );
    }
    let (status, text) = api.send(Method::GET, "/metrics", Vec::new());
    let text = String::from_utf8(text).unwrap();
    assert_eq!(status, StatusCode::OK);
    for needle in [
        "agentbox_sandboxes{state=\"running\"}",
        "agentbox_sandboxes{state=\"failed\"}",
        "agentbox_exec_total 1",
        "agentbox_exec_duration_seconds_bucket{le=\"+Inf\"} 1",
        "agentbox_errors_total{code=\"not_found\"}",
    ] {
        assert!(text.contains(needle), "{needle} not in\n{text}");
    }
    // A new server finds the sandbox again: it keeps nothing but what /run/agentbox holds.
    drop(server);
    let server = Server::start();
    let api = server.client(Some(ALICE));
    assert!(api.ids().contains(&b));
    assert_eq!(api.run(&b, &["echo", "again"])["stdout"], "again\n");
}

#[test]
fn a_sandbox_whose_supervisor_died_is_failed_and_deletable() {
    let _g = begin();
    let server = Server::start();
    let api = server.client(Some(ALICE));
    let b = api.create(json!({}));
    let state = std::fs::read(format!("/run/agentbox/{}/state.json", b)).unwrap();
    let state: Value = serde_json::from_slice(&state).unwrap();
    assert_eq!(state["tenant"], "http-test-alice");
    let supervisor = state["supervisor"].to_string();
    let init = format!("/proc/{}", state["init"]);
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &supervisor])
        .status();
    assert!(killed.unwrap().success());
    // The init's parent-death signal takes the sandbox down with its supervisor.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&init).exists() {
        assert!(
            Instant::now() < deadline,
            "the sandbox outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(api.get(&at(&b, "")).1["state"], "failed");
    let answer = api.exec(&b, json!({"command": ["true"]}));
    assert_error(&answer, StatusCode::CONFLICT, "sandbox_failed");
    let (status, _) = api.send(Method::DELETE, &at(&b, ""), Vec::new());
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!Path::new("/run/agentbox").join(&b).exists());
}

#[test]
fn the_allowlist_of_a_sandbox_changes_over_the_api() {
    let _g = begin();
    let before = host_state();
    let server = Server::start();
    let api = server.client(Some(ALICE));
    let b = api.create(json!({"policy": {"network": {"mode": "allow:a.test"}}}));
    let (status, lists) = api.get(&at(&b, "/network"));
    assert_eq!(status, StatusCode::OK, "{lists}");
    assert_eq!(lists, json!({"allow": ["a.test"], "deny": [], "cidrs": []}));
    let change = json!({"allow": ["*.b.test"], "deny": ["a.test"]});
    let (status, lists) = api.json(Method::POST, &at(&b, "/network"), Some(change));
    assert_eq!(status, StatusCode::OK, "{lists}");
    assert_eq!(
        lists,
        json!({"allow": ["*.b.test"], "deny": ["a.test"], "cidrs": []})
    );
    // The proxy answers the sandbox with the new lists: a.test is refused now (before any DNS).
    let out = api.run(&b, &["curl", "-s", "http://a.test/"]);
    assert!(
        out["stdout"]
            .as_str()
            .unwrap()
            .contains("agentbox proxy: a.test"),
        "{out}"
    );
    let bad = json!({"allow": ["not a name"]});
    let answer = api.json(Method::POST, &at(&b, "/network"), Some(bad));
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    // A sandbox without a proxy has no allowlist to change.
    let plain = api.create(json!({}));
    let answer = api.get(&at(&plain, "/network"));
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    for id in [&b, &plain] {
        let (status, _) = api.send(Method::DELETE, &at(id, ""), Vec::new());
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    drop(server);
    assert_nothing_left(&before);
}

#[test]
fn a_wasm_sandbox_is_driven_like_any_other() {
    let _g = begin();
    let before = host_state();
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("tiny.c");
    std::fs::write(
        &c,
        "#include <unistd.h>\nint main(void){ write(1, \"hi from wasm\\n\", 13); return 5; }\n",
    )
    .unwrap();
    let wasm = dir.path().join("tiny.wasm");
    let built = std::process::Command::new("clang")
        .args(["--target=wasm32-wasi", "-Oz", "-Wl,--strip-all", "-o"])
        .arg(&wasm)
        .arg(&c)
        .status()
        .unwrap();
    assert!(built.success());
    let server = Server::start();
    let api = server.client(Some(ALICE));
    let b = api.create(json!({"policy": {"tier": "wasm", "limits": {"fuel": 10000000}}}));
    let (status, shown) = api.get(&at(&b, ""));
    assert_eq!(
        (status, shown["tier"].as_str()),
        (StatusCode::OK, Some("wasm")),
        "{shown}"
    );
    let (status, _) = api.send(
        Method::PUT,
        &at(&b, "/files?path=/workspace/tiny.wasm"),
        std::fs::read(&wasm).unwrap(),
    );
    assert_eq!(status, StatusCode::NO_CONTENT);
    let out = api.run(&b, &["/workspace/tiny.wasm"]);
    assert_eq!(out["stdout"], "hi from wasm\n", "{out}");
    assert_eq!(out["exit_code"], 5, "{out}");
    let (status, _) = api.send(Method::DELETE, &at(&b, ""), Vec::new());
    assert_eq!(status, StatusCode::NO_CONTENT);
    drop(server);
    assert_nothing_left(&before);
}
