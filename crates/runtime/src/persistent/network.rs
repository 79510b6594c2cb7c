//! Changing a running sandbox's egress allowlist (`agentbox net`, the API): a request to its proxy's
//! control socket, which applies it to the next connection.

use agentbox_policy::net::DomainRule;
pub use agentbox_proxy::Allowlist;

use super::state;
use crate::RunError;

/// Adds `allow` and `deny` rules to sandbox `target`'s allowlist (an allowed name leaves the deny
/// list and the other way round) and returns the lists now in force; with neither, only returns them.
pub fn network(target: &str, allow: &[String], deny: &[String]) -> Result<Allowlist, RunError> {
    for (field, names) in [("network.allow", allow), ("network.deny", deny)] {
        for name in names {
            name.parse::<DomainRule>()
                .map_err(|reason| RunError::invalid(field, name, reason))?;
        }
    }
    let sandbox = state::find(target)?;
    let socket = crate::net::control_socket(&sandbox.dir());
    if !socket.exists() {
        return Err(RunError::invalid(
            "network",
            target,
            "this sandbox has no egress proxy: only network mode allow has an allowlist",
        ));
    }
    let answer = if allow.is_empty() && deny.is_empty() {
        agentbox_proxy::control_show(&socket)
    } else {
        agentbox_proxy::control_update(&socket, allow, deny)
    };
    answer.map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidInput => RunError::invalid("network", target, e),
        _ => RunError::setup("network: proxy control", e),
    })
}
