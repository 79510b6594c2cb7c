//! The MCP server driven by the official MCP Python SDK (PyPI `mcp`, installed into a virtualenv
//! under target/ by scripts/install-mcp-sdk.sh): `agentbox mcp` over stdio, and `/mcp` over
//! streamable HTTP on an in-process server with bearer tokens. Each run lists the tools, creates
//! a sandbox, runs `python3 -c 'print(6*7)'`, writes, reads and lists a file, and destroys it.
//! Every sandbox a test creates is removed by a guard, whatever the test's outcome.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

const ALICE: &str = "mcp-alice-token-0123456789";
const BOB: &str = "mcp-bob-token-0123456789ab";

/// The MCP client: connects over stdio (`stdio BIN TENANT`) or streamable HTTP
/// (`http URL TOKEN`), runs the whole scenario and prints what each call returned as JSON.
const CLIENT: &str = r#"
import asyncio, json, sys
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

def dump(result):
    text = [c.text for c in result.content if getattr(c, "type", "") == "text"]
    return {"is_error": bool(result.is_error), "structured": result.structured_content, "text": text}

async def scenario(read, write):
    out = {}
    async with ClientSession(read, write) as s:
        init = await s.initialize()
        out["server"] = init.server_info.name
        tools = await s.list_tools()
        out["tools"] = {t.name: {"description": t.description, "input": t.input_schema,
                                 "output": t.output_schema} for t in tools.tools}
        created = await s.call_tool("sandbox_create", {"ttl_s": 600, "policy": {"network": {"mode": "allow:a.test"}}})
        out["create"] = dump(created)
        sid = (created.structured_content or {}).get("id")
        try:
            call = lambda name, args: s.call_tool(name, dict(args, id=sid))
            out["exec"] = dump(await call("sandbox_exec", {"command": ["python3", "-c", "print(6*7)"]}))
            out["exec_big"] = dump(await call("sandbox_exec", {"command": ["python3", "-c", "print('x' * 200000)"]}))
            out["exec_fail"] = dump(await call("sandbox_exec", {"command": ["sh", "-c", "echo oops >&2; exit 3"]}))
            out["write"] = dump(await call("file_write", {"path": "/tmp/hello.txt", "content": "hello from mcp\n"}))
            out["read"] = dump(await call("file_read", {"path": "/tmp/hello.txt"}))
            out["ls"] = dump(await call("file_list", {"path": "/tmp"}))
            out["cat"] = dump(await call("sandbox_exec", {"command": ["cat", "/tmp/hello.txt"]}))
            out["relative"] = dump(await call("file_read", {"path": "tmp/hello.txt"}))
            out["list"] = dump(await s.call_tool("sandbox_list", {}))
            out["net"] = dump(await call("sandbox_network", {"allow": ["*.b.test"], "deny": ["a.test"]}))
            out["net_bad"] = dump(await call("sandbox_network", {"allow": ["not a name"]}))
        finally:
            if sid:
                out["destroy"] = dump(await s.call_tool("sandbox_destroy", {"id": sid}))
        out["list_after"] = dump(await s.call_tool("sandbox_list", {}))
        out["exec_gone"] = dump(await s.call_tool("sandbox_exec", {"id": sid or "none", "command": ["true"]}))
    return out

async def main():
    if sys.argv[1] == "stdio":
        params = StdioServerParameters(command=sys.argv[2], args=["mcp", "--tenant", sys.argv[3]])
        async with stdio_client(params) as (read, write):
            out = await scenario(read, write)
    else:
        client = create_mcp_http_client(headers={"Authorization": "Bearer " + sys.argv[3]})
        async with client:
            async with streamable_http_client(sys.argv[2], http_client=client) as streams:
                out = await scenario(streams[0], streams[1])
    print(json.dumps(out))

asyncio.run(main())
"#;

/// The virtualenv's python with the MCP SDK, installed once per test binary. An SDK that cannot
/// be installed fails the tests (never a silent skip).
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mcp-venv");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-mcp-sdk.sh");
        let o = Command::new("bash")
            .arg(script)
            .arg(&venv)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "installing the MCP Python SDK failed: {}{}",
            stdout(&o),
            stderr(&o)
        );
        venv.join("bin/python")
    })
}

/// Runs the client scenario with these arguments and returns its JSON report.
fn client(args: &[&str]) -> Value {
    let dir = tempfile::Builder::new()
        .prefix("mcp-client-")
        .tempdir()
        .unwrap();
    let script = dir.path().join("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let o = Command::new("timeout")
        .arg("300")
        .arg(python())
        .arg(&script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "MCP client failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Removes every sandbox of the tenants starting with its prefix, whatever the test's outcome.
struct Cleanup(&'static str);

impl Cleanup {
    fn left(&self) -> Vec<String> {
        agentbox_runtime::persistent::state::list()
            .into_iter()
            .filter(|s| s.tenant.as_deref().is_some_and(|t| t.starts_with(self.0)))
            .map(|s| s.id)
            .collect()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in self.left() {
            let _ = agentbox(&["rm", &id]).output();
        }
    }
}

/// Asserts what every transport answers the same: the tools, their schemas, and each result.
fn assert_scenario(report: &Value) {
    assert_eq!(report["server"], "agentbox");
    let tools = report["tools"].as_object().unwrap();
    let mut names: Vec<&str> = tools.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "file_list",
            "file_read",
            "file_write",
            "sandbox_create",
            "sandbox_destroy",
            "sandbox_exec",
            "sandbox_list",
            "sandbox_network"
        ]
    );
    for (name, tool) in tools {
        assert!(
            tool["description"].as_str().unwrap().len() > 60,
            "{name}: {tool}"
        );
        assert_eq!(tool["input"]["type"], "object", "{name}");
        assert_eq!(tool["output"]["type"], "object", "{name}");
    }
    // The input schemas are the HTTP API's types: their fields and doc comments.
    let exec = &tools["sandbox_exec"]["input"];
    assert_eq!(
        exec["required"],
        serde_json::json!(["id", "command"]),
        "{exec}"
    );
    assert_eq!(exec["additionalProperties"], false, "{exec}");
    for field in ["stdin", "cwd", "env", "timeout_s"] {
        assert!(exec["properties"][field].is_object(), "{field}: {exec}");
    }
    let create = &tools["sandbox_create"]["input"]["properties"];
    for field in ["policy", "name", "ttl_s"] {
        assert!(
            create[field]["description"].is_string(),
            "{field}: {create}"
        );
    }

    let created = &report["create"];
    assert_eq!(created["is_error"], false, "{created}");
    let id = created["structured"]["id"].as_str().unwrap();
    assert_eq!(id.len(), 12, "{created}");
    // Structured content, and text for clients that read only text.
    assert!(
        created["text"][0].as_str().unwrap().contains(id),
        "{created}"
    );

    let exec = &report["exec"];
    assert_eq!(exec["is_error"], false, "{exec}");
    assert_eq!(exec["structured"]["exit_code"], 0, "{exec}");
    assert_eq!(exec["structured"]["stdout"], "42\n", "{exec}");
    assert_eq!(exec["structured"]["truncated"], false, "{exec}");
    assert!(exec["text"][0].as_str().unwrap().contains("42"), "{exec}");

    let big = &report["exec_big"]["structured"];
    assert_eq!(big["truncated"], true);
    let out = big["stdout"].as_str().unwrap();
    assert!(out.len() < 70_000, "{}", out.len());
    let dropped = 200_001 - agentbox_server::mcp::MAX_TEXT;
    assert!(
        out.ends_with(&format!(
            "[agentbox: output truncated: {dropped} more bytes not shown]\n"
        )),
        "{}",
        &out[out.len() - 100..]
    );

    let fail = &report["exec_fail"];
    assert_eq!(
        fail["is_error"], false,
        "a command's failure is not the tool's: {fail}"
    );
    assert_eq!(fail["structured"]["exit_code"], 3, "{fail}");
    assert_eq!(fail["structured"]["stderr"], "oops\n", "{fail}");

    assert_eq!(
        report["write"]["structured"]["bytes"], 15,
        "{}",
        report["write"]
    );
    let read = &report["read"]["structured"];
    assert_eq!(read["content"], "hello from mcp\n", "{read}");
    assert_eq!(read["size"], 15, "{read}");
    assert_eq!(read["truncated"], false, "{read}");
    let entries = &report["ls"]["structured"]["entries"];
    assert!(
        entries
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "hello.txt" && e["kind"] == "file" && e["size"] == 15),
        "{entries}"
    );
    assert_eq!(
        report["cat"]["structured"]["stdout"], "hello from mcp\n",
        "{}",
        report["cat"]
    );

    let relative = &report["relative"];
    assert_eq!(relative["is_error"], true, "{relative}");
    assert!(
        relative["text"][0]
            .as_str()
            .unwrap()
            .starts_with("invalid_request: "),
        "{relative}"
    );

    // The egress allowlist, changed at run time; a malformed name is a tool error.
    assert_eq!(
        report["net"]["structured"],
        serde_json::json!({"allow": ["*.b.test"], "deny": ["a.test"], "cidrs": []}),
        "{}",
        report["net"]
    );
    assert_eq!(report["net_bad"]["is_error"], true, "{}", report["net_bad"]);

    let listed = &report["list"]["structured"]["sandboxes"];
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == id && s["state"] == "running"),
        "{listed}"
    );
    assert_eq!(
        report["destroy"]["structured"]["destroyed"], true,
        "{}",
        report["destroy"]
    );
    let after = &report["list_after"]["structured"]["sandboxes"];
    assert!(
        !after.as_array().unwrap().iter().any(|s| s["id"] == id),
        "{after}"
    );
    let gone = &report["exec_gone"];
    assert_eq!(gone["is_error"], true, "{gone}");
    assert_eq!(
        gone["text"][0],
        format!("not_found: no sandbox {id}"),
        "{gone}"
    );
}

#[test]
fn stdio_tools_run_a_whole_sandbox_lifecycle() {
    let guard = Cleanup("mcp-test-stdio");
    let report = client(&["stdio", BIN, "mcp-test-stdio"]);
    assert_scenario(&report);
    assert_eq!(
        guard.left(),
        Vec::<String>::new(),
        "sandbox_destroy left some"
    );
}

/// The HTTP API and `/mcp`, in a thread of its own with its own tokio runtime; stopped when
/// dropped.
struct Server {
    server: InProcessServer,
}

impl Server {
    fn start() -> Server {
        let tenant = |token: &str, tenant: &str| {
            format!(
                "[[tokens]]\ntoken = \"{token}\"\ntenant = \"{tenant}\"\n\
                 max_sandboxes = 4\nmax_memory = 4294967296\n"
            )
        };
        let text = format!(
            "listen = \"127.0.0.1:0\"\nagentbox = \"{BIN}\"\n{}{}",
            tenant(ALICE, "mcp-test-http-alice"),
            tenant(BOB, "mcp-test-http-bob"),
        );
        let config = agentbox_server::Config::from_toml(&text).unwrap();
        Server {
            server: InProcessServer::start(config),
        }
    }

    /// `POST /v1/sandboxes` through the REST API; returns the id.
    fn rest_create(&self, token: &str, name: &str) -> String {
        let answer = reqwest::blocking::Client::new()
            .post(format!("http://{}/v1/sandboxes", self.server.addr))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(serde_json::json!({"name": name}).to_string())
            .send()
            .unwrap()
            .text()
            .unwrap();
        let answer: Value = serde_json::from_str(&answer).unwrap();
        answer["id"].as_str().unwrap().to_string()
    }
}

#[test]
fn streamable_http_tools_act_for_the_bearer_tokens_tenant() {
    let guard = Cleanup("mcp-test-http-");
    let server = Server::start();
    let url = format!("http://{}/mcp", server.server.addr);

    // Behind the same bearer auth as the rest of the API.
    let http = reqwest::blocking::Client::new();
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    for token in [None, Some("not-a-token-0123456789")] {
        let mut request = http
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(init);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let answer = request.send().unwrap();
        assert_eq!(answer.status().as_u16(), 401, "token {token:?}");
    }

    // One control plane: what the REST API made, MCP sees, for the same tenant only.
    let alices = server.rest_create(ALICE, "mcp-rest-alice");
    let bobs = server.rest_create(BOB, "mcp-rest-bob");
    let report = client(&["http", &url, ALICE]);
    assert_scenario(&report);
    let listed: Vec<&str> = report["list"]["structured"]["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&alices.as_str()), "{listed:?}");
    assert!(!listed.contains(&bobs.as_str()), "{listed:?}");
    let mcp_id = report["create"]["structured"]["id"].as_str().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.contains(&mcp_id));

    // Its sandbox was the bearer token's tenant's, and sandbox_destroy removed it.
    let mut left = guard.left();
    left.sort_unstable();
    let mut expected = vec![alices, bobs];
    expected.sort_unstable();
    assert_eq!(left, expected);
}
