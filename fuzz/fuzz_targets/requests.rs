//! Everything agentbox parses from an untrusted party, fed the same bytes: the HTTP API's bodies
//! (create, exec) and the policy inside them, the supervisor's wire messages (from any local
//! client of a sandbox's socket, and between supervisor and init), and policy files. None may
//! panic, whatever the input; a parsed policy is validated too.

#![no_main]

use agentbox_runtime::persistent::protocol::{decode, InitEvent, InitRequest, Reply, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(create) = serde_json::from_slice::<agentbox_server::CreateRequest>(data) {
        if let Some(policy) = create.policy {
            let _ = policy.validate(None);
        }
    }
    let _ = serde_json::from_slice::<agentbox_server::ExecBody>(data);
    let _ = decode::<Request>(data);
    let _ = decode::<Reply>(data);
    let _ = decode::<InitRequest>(data);
    let _ = decode::<InitEvent>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(spec) = agentbox_policy::PolicySpec::from_toml("fuzz.toml", text) {
            let _ = spec.validate(Some("xterm"));
        }
    }
});
