//! The server's configuration file: where it listens, which `agentbox` binary creates sandboxes,
//! and the bearer tokens, each naming its tenant and the tenant's quotas. Parsed once at start
//! (unknown fields refused); it never holds sandbox state, which lives under /run/agentbox.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ServerError;

/// Largest request body (a file written with `PUT .../files`, or a JSON body) by default.
pub const DEFAULT_MAX_BODY: u64 = 16 << 20;

/// The whole configuration of `agentbox serve`:
///
/// ```toml
/// listen = "127.0.0.1:8080"
/// agentbox = "/usr/local/bin/agentbox"
/// max_body = 16777216              # optional, bytes
///
/// [[tokens]]
/// token = "a-long-random-secret"   # at least 16 characters
/// tenant = "acme"
/// max_sandboxes = 10
/// max_memory = 10737418240         # bytes: the sum of its sandboxes' memory limits
///
/// [[pool]]                         # optional: microVM sandboxes kept booted ahead
/// image = "bookworm"               # an image of the store
/// size = 2
/// memory = "512M"                  # optional, as the policy's limits.memory
/// cpus = "1"                       # optional, as the policy's limits.cpus
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address and port to listen on (`127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// The `agentbox` binary whose hidden helper creates sandboxes (the server never forks).
    pub agentbox: PathBuf,
    /// Largest request body in bytes; also the largest file `GET .../files` returns.
    #[serde(default = "default_max_body")]
    pub max_body: u64,
    /// Who may call the API; at least one.
    pub tokens: Vec<Token>,
    /// Warm pools of microVM sandboxes (see `pool`).
    #[serde(default)]
    pub pool: Vec<PoolConfig>,
}

/// One warm pool: `size` persistent microVM sandboxes of `image` kept booted, handed to the
/// creates whose policy is exactly `tier = "microvm"`, this image, memory and cpus, and every
/// other field left at its default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// An image of the store (a name or digest: what an API policy can name).
    pub image: String,
    /// Sandboxes kept ready (1-64).
    pub size: u32,
    /// The policy's `limits.memory` (`512M`); default the policy's default.
    #[serde(default)]
    pub memory: Option<String>,
    /// The policy's `limits.cpus` (`2`); default the policy's default.
    #[serde(default)]
    pub cpus: Option<String>,
}

/// Largest pool: each pooled sandbox is a running VM.
const MAX_POOL_SIZE: u32 = 64;

/// One bearer token: the tenant it acts for and that tenant's quotas. Several tokens may name
/// the same tenant; the quotas of the first one listed apply.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    pub token: String,
    pub tenant: String,
    /// Sandboxes the tenant may hold at once (failed ones count until deleted).
    pub max_sandboxes: u32,
    /// Bytes: the sum of the memory limits of the tenant's sandboxes.
    pub max_memory: u64,
}

fn default_max_body() -> u64 {
    DEFAULT_MAX_BODY
}

/// Shortest token accepted: a guessable token is no authentication.
const MIN_TOKEN_LEN: usize = 16;

impl Config {
    /// Reads and checks a TOML configuration file.
    pub fn from_toml_file(path: &Path) -> Result<Config, ServerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServerError::ReadConfig(path.to_path_buf(), e))?;
        Config::from_toml(&text)
            .map_err(|reason| ServerError::InvalidConfig(path.to_path_buf(), reason))
    }

    /// Parses and checks configuration text; the error says which field is wrong.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.message().to_string())?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if self.tokens.is_empty() {
            return Err("no [[tokens]]: nobody could call the API".into());
        }
        if !self.agentbox.is_absolute() {
            return Err(format!(
                "agentbox {}: must be an absolute path",
                self.agentbox.display()
            ));
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.token.len() < MIN_TOKEN_LEN || t.token.chars().any(|c| c.is_whitespace()) {
                return Err(format!(
                    "tokens[{i}].token: use at least {MIN_TOKEN_LEN} characters, no spaces"
                ));
            }
            if t.tenant.is_empty() {
                return Err(format!("tokens[{i}].tenant: empty"));
            }
            if t.tenant.starts_with(crate::pool::RESERVED_TENANT_PREFIX) {
                return Err(format!(
                    "tokens[{i}].tenant {:?}: tenants starting with '(' are reserved (the warm \
                     pools' sandboxes belong to \"(pool:<pid>)\")",
                    t.tenant
                ));
            }
            if self.tokens[..i].iter().any(|o| o.token == t.token) {
                return Err(format!("tokens[{i}].token: listed twice"));
            }
        }
        for (i, p) in self.pool.iter().enumerate() {
            p.check().map_err(|e| format!("pool[{i}].{e}"))?;
            if self.pool[..i].contains(p) {
                return Err(format!("pool[{i}]: listed twice"));
            }
        }
        Ok(())
    }

    /// The token entry whose secret is `presented`, compared in constant time.
    pub fn token(&self, presented: &str) -> Option<&Token> {
        self.tokens.iter().fold(None, |found, t| {
            match constant_time_eq(&t.token, presented) {
                true => Some(t),
                false => found,
            }
        })
    }

    /// The quotas of `tenant`: those of its first token.
    pub fn quotas(&self, tenant: &str) -> Option<&Token> {
        self.tokens.iter().find(|t| t.tenant == tenant)
    }
}

impl PoolConfig {
    fn check(&self) -> Result<(), String> {
        if self.size == 0 || self.size > MAX_POOL_SIZE {
            return Err(format!("size {}: give 1 to {MAX_POOL_SIZE}", self.size));
        }
        if self.image.is_empty() || self.image == "host" {
            return Err(format!(
                "image {:?}: a microVM needs an image of the store",
                self.image
            ));
        }
        if self.image.starts_with('/') {
            return Err(format!(
                "image {}: the API cannot name a directory, so no create could take from this \
                 pool; import it into the store (agentbox image import) and give its name",
                self.image
            ));
        }
        // The fields' syntax now; the image is resolved when the pool fills.
        crate::pool::pool_spec(self)
            .validate(None)
            .map(|_| ())
            .map_err(|e| format!("{}: {}", e.field, e.reason))
    }
}

/// Equality whose time depends only on the lengths, not on where the strings differ.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let diff = a
        .iter()
        .zip(b)
        .fold(a.len() ^ b.len(), |acc, (x, y)| acc | usize::from(x ^ y));
    diff == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:8080"
agentbox = "/usr/local/bin/agentbox"

[[tokens]]
token = "0123456789abcdef0123"
tenant = "acme"
max_sandboxes = 4
max_memory = 4294967296
"#;

    #[test]
    fn a_config_parses_and_finds_its_token() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.max_body, DEFAULT_MAX_BODY);
        assert_eq!(c.token("0123456789abcdef0123").unwrap().tenant, "acme");
        assert!(c.token("0123456789abcdef0124").is_none());
        assert!(c.token("0123456789abcdef012").is_none());
        assert!(c.token("").is_none());
    }

    #[test]
    fn pools_parse_and_reserved_tenants_bad_sizes_and_directories_are_refused() {
        let pool = "\n[[pool]]\nimage = \"busybox\"\nsize = 2\nmemory = \"256M\"\n";
        let c = Config::from_toml(&format!("{GOOD}{pool}")).unwrap();
        assert_eq!(c.pool.len(), 1);
        assert_eq!(c.pool[0].memory.as_deref(), Some("256M"));
        assert!(Config::from_toml(GOOD).unwrap().pool.is_empty());
        let e = Config::from_toml(&GOOD.replace("\"acme\"", "\"(pool:1)\"")).unwrap_err();
        assert!(e.contains("reserved"), "{e}");
        let e = Config::from_toml(&format!("{GOOD}{}", pool.replace("size = 2", "size = 0")))
            .unwrap_err();
        assert!(e.contains("pool[0].size"), "{e}");
        let e = Config::from_toml(&format!("{GOOD}{}", pool.replace("busybox", "/srv/root")))
            .unwrap_err();
        assert!(e.contains("pool[0].image"), "{e}");
        let e = Config::from_toml(&format!("{GOOD}{}", pool.replace("256M", "lots"))).unwrap_err();
        assert!(e.contains("pool[0].limits.memory"), "{e}");
        let e = Config::from_toml(&format!("{GOOD}{pool}{pool}")).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = Config::from_toml(&format!("{GOOD}{pool}disk = \"1G\"\n")).unwrap_err();
        assert!(e.contains("disk"), "{e}");
    }

    #[test]
    fn unknown_fields_short_tokens_and_relative_binaries_are_refused() {
        let e = Config::from_toml(&format!("{GOOD}\nlisten_port = 1")).unwrap_err();
        assert!(e.contains("listen_port"), "{e}");
        let e = Config::from_toml(&GOOD.replace("0123456789abcdef0123", "short")).unwrap_err();
        assert!(e.contains("tokens[0].token"), "{e}");
        let e = Config::from_toml(&GOOD.replace("/usr/local/bin/", "")).unwrap_err();
        assert!(e.contains("absolute"), "{e}");
        let e = Config::from_toml(&GOOD[..GOOD.find("[[tokens]]").unwrap()]).unwrap_err();
        assert!(e.contains("token"), "{e}");
    }
}
