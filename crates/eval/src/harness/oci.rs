//! The OCI rows' container specs: the default spec of `runc spec` (or the row's runtime's), and
//! the `config.json` of one command made from it. Making a config is pure; only reading the
//! default spec runs a tool, in the row's work directory.

use std::process::{Command, Stdio};

use serde_json::{json, Map, Value};

use super::rows::{EVAL_MEMORY_BYTES, EVAL_PIDS};

/// The `config.json` of one command: `runc spec`'s default container (its namespaces,
/// capabilities, masked and read-only paths, no-new-privileges, device rules) running `argv`
/// without a terminal in /tmp, on the cell's prepared root, with a network namespace of its own,
/// under agentbox's eval limits. Pure.
pub fn oci_config(template: &Value, root: &str, argv: &[&str]) -> Result<Value, String> {
    fn object<'a>(
        map: &'a mut Map<String, Value>,
        key: &str,
    ) -> Result<&'a mut Map<String, Value>, String> {
        map.entry(key)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or_else(|| format!("the OCI spec's {key} is not an object"))
    }
    let mut config = template.clone();
    let top = config
        .as_object_mut()
        .ok_or("the OCI spec is not an object")?;
    let process = object(top, "process")?;
    process.insert("args".into(), json!(argv));
    process.insert("terminal".into(), json!(false));
    process.insert("cwd".into(), json!("/tmp"));
    top.insert("root".into(), json!({ "path": root, "readonly": false }));
    let linux = object(top, "linux")?;
    let namespaces = linux
        .entry("namespaces")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or("the OCI spec's namespaces are not a list")?;
    if !namespaces.iter().any(|n| n["type"] == "network") {
        namespaces.push(json!({ "type": "network" }));
    }
    let resources = object(linux, "resources")?;
    resources.insert("pids".into(), json!({ "limit": EVAL_PIDS }));
    resources.insert("memory".into(), json!({ "limit": EVAL_MEMORY_BYTES }));
    Ok(config)
}

/// The default container spec, from `runc spec` (the same as crun's), else the row's own runtime's.
pub(super) fn spec_template(runtime: &str, workdir: &str) -> Result<Value, String> {
    let dir = format!("{workdir}/bundles/spec");
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {dir}: {e}"))?;
    let mut tried = Vec::new();
    for tool in ["runc", runtime] {
        let _ = std::fs::remove_file(format!("{dir}/config.json"));
        let made = Command::new(tool)
            .arg("spec")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if made {
            let text = std::fs::read_to_string(format!("{dir}/config.json"))
                .map_err(|e| format!("{tool} spec: {e}"))?;
            return serde_json::from_str(&text).map_err(|e| format!("{tool} spec: {e}"));
        }
        tried.push(tool);
    }
    Err(format!(
        "no default OCI spec: {} spec failed",
        tried.join(" spec and ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::rows::PROBE_IN_SANDBOX;

    fn runc_spec() -> Value {
        json!({
            "ociVersion": "1.0.2-dev",
            "process": {
                "terminal": true,
                "args": ["sh"],
                "cwd": "/",
                "noNewPrivileges": true,
                "capabilities": { "bounding": ["CAP_KILL"] }
            },
            "root": { "path": "rootfs", "readonly": true },
            "linux": {
                "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
                "namespaces": [{ "type": "pid" }, { "type": "mount" }],
                "maskedPaths": ["/proc/kcore"],
                "readonlyPaths": ["/proc/sys"]
            }
        })
    }

    #[test]
    fn an_oci_config_runs_the_command_on_the_prepared_root_under_the_eval_limits() {
        let argv = [PROBE_IN_SANDBOX, "__probe", "--list"];
        let config = oci_config(&runc_spec(), "/w/root", &argv).unwrap();
        assert_eq!(config["process"]["args"], json!(argv));
        assert_eq!(config["process"]["terminal"], false);
        assert_eq!(config["process"]["cwd"], "/tmp");
        assert_eq!(
            config["root"],
            json!({ "path": "/w/root", "readonly": false })
        );
        assert_eq!(config["linux"]["resources"]["pids"]["limit"], 256);
        assert_eq!(config["linux"]["resources"]["memory"]["limit"], 536_870_912);
        let namespaces: Vec<&str> = config["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["type"].as_str())
            .collect();
        assert_eq!(namespaces, ["pid", "mount", "network"]);
        // The defaults stay: no user namespace added, capabilities and paths as runc gives them.
        let spec = runc_spec();
        assert_eq!(
            config["process"]["capabilities"],
            spec["process"]["capabilities"]
        );
        assert_eq!(config["process"]["noNewPrivileges"], true);
        assert_eq!(config["linux"]["maskedPaths"], spec["linux"]["maskedPaths"]);
        assert_eq!(
            config["linux"]["readonlyPaths"],
            spec["linux"]["readonlyPaths"]
        );
        assert_eq!(
            config["linux"]["resources"]["devices"],
            spec["linux"]["resources"]["devices"]
        );
        // A network namespace already there is not doubled.
        let again = oci_config(&config, "/w/root", &argv).unwrap();
        assert_eq!(again["linux"]["namespaces"], config["linux"]["namespaces"]);
    }

    #[test]
    fn a_malformed_spec_is_refused_naming_the_field() {
        let err = oci_config(&json!({ "process": [] }), "/r", &["/bin/true"]).unwrap_err();
        assert!(err.contains("process"), "{err}");
        assert!(oci_config(&json!([]), "/r", &["/bin/true"]).is_err());
    }
}
