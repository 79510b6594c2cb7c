//! Starting a sandbox from a process that holds threads (the HTTP server, an embedding program):
//! such a process must not fork itself to set a sandbox up, so it executes the agentbox binary's
//! hidden `__sandbox` subcommand, a fresh single-threaded process, with the policy spec as JSON in
//! its environment (not on its command line, which every user of the host can read).

use std::path::Path;
use std::process::Command;

use agentbox_policy::{PolicyError, PolicySpec};

/// The hidden subcommand of the `agentbox` binary that runs one sandbox.
pub const HELPER_SUBCOMMAND: &str = "__sandbox";
/// The environment variable that carries the spec to the helper.
pub const SPEC_VARIABLE: &str = "AGENTBOX_SPEC_JSON";

/// A `Command` that runs `argv` in a sandbox made from `spec` by the `agentbox` binary at
/// `agentbox`. Its exit status follows `agentbox run`'s exit codes; stdio is the caller's to set.
pub fn helper_command(agentbox: &Path, spec: &PolicySpec, argv: &[String]) -> Command {
    let mut command = Command::new(agentbox);
    command
        .env_clear()
        .env(SPEC_VARIABLE, spec_json(spec))
        .arg(HELPER_SUBCOMMAND)
        .arg("--")
        .args(argv);
    command
}

fn spec_json(spec: &PolicySpec) -> String {
    serde_json::to_string(spec).unwrap_or_else(|_| "{}".into())
}

/// Reads a spec written by [`helper_command`]. Unknown fields are refused, as in a policy file.
pub fn parse_spec(json: &str) -> Result<PolicySpec, PolicyError> {
    serde_json::from_str(json).map_err(|e| PolicyError::parse(SPEC_VARIABLE, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_survives_the_trip_and_unknown_fields_do_not() {
        let mut spec = PolicySpec {
            tier: Some("chroot".into()),
            ..Default::default()
        };
        spec.env.insert("K".into(), "V".into());
        assert_eq!(parse_spec(&spec_json(&spec)).unwrap(), spec);
        let e = parse_spec(r#"{"tier":"ns","memroy":"1G"}"#).unwrap_err();
        assert!(e.to_string().contains("memroy"), "{e}");
    }
}
