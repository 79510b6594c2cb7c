//! The server's warm pools (`[[pool]]` in the configuration): persistent microVM sandboxes
//! created ahead, so that a create whose policy is exactly a pool's takes one (a rewrite of its
//! state.json) instead of booting a VM. Pooled sandboxes are created like any other, by the
//! `agentbox __create` helper (this process never forks), under the reserved tenant
//! `(pool:<server pid>)`, which no token can name (the configuration refuses tenants starting
//! with `(`), so no tenant sees them until one is claimed. Each pool has one task that keeps it
//! full, one create at a time; a failed create is logged and retried after a backoff.
//!
//! The idle list is the one piece of state the server keeps: a sandbox leaves it (under its
//! mutex) before it is claimed, so it is handed out once. At start the sandboxes of pools whose
//! server is gone are removed; at shutdown this server's idle ones are.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentbox_policy::{LimitsSpec, Policy, PolicySpec};
use agentbox_runtime::persistent::protocol::ExecRequest;
use agentbox_runtime::persistent::{self, state, CreateOptions, Health};
use agentbox_runtime::RunError;

use crate::config::PoolConfig;

/// Tenants starting with this are the server's own (`(pool:<pid>)`); tokens cannot name them.
pub const RESERVED_TENANT_PREFIX: char = '(';

const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The tenant this server's pooled sandboxes are created under.
fn own_tenant() -> String {
    format!("(pool:{})", std::process::id())
}

/// The pid of the server that made a pooled sandbox's tenant, if it is one.
fn pool_server(tenant: &str) -> Option<u32> {
    tenant
        .strip_prefix("(pool:")?
        .strip_suffix(')')?
        .parse()
        .ok()
}

/// The policy a pool's sandboxes are created with: a microVM of the image, with the pool's
/// memory and CPUs, every other field at its default.
pub fn pool_spec(config: &PoolConfig) -> PolicySpec {
    PolicySpec {
        tier: Some("microvm".into()),
        image: Some(config.image.clone()),
        limits: LimitsSpec {
            memory: config.memory.clone(),
            cpus: config.cpus.clone(),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A pooled sandbox waiting for its owner, with the validated policy it was created with (its
/// image resolved to the store's directory then: a renamed image no longer matches it).
struct Idle {
    id: String,
    policy: Policy,
}

/// One `[[pool]]` entry at run time.
struct Pool {
    config: PoolConfig,
    tenant: String,
    idle: Mutex<Vec<Idle>>,
    wake: tokio::sync::Notify,
    warm: AtomicU64,
    cold: AtomicU64,
    refills: AtomicU64,
    refill_failures: AtomicU64,
}

impl Pool {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every pool of the server.
#[derive(Default)]
pub struct Pools {
    pools: Vec<Arc<Pool>>,
    stopping: Arc<AtomicBool>,
    keepers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// A pool's counters, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    pub image: String,
    pub size: u32,
    pub ready: usize,
    /// Creates served by a pooled sandbox.
    pub warm: u64,
    /// Creates of the pool's policy that found it empty and booted.
    pub cold: u64,
    pub refills: u64,
    pub refill_failures: u64,
}

impl Pools {
    pub fn new(configs: &[PoolConfig]) -> Pools {
        let tenant = own_tenant();
        Pools {
            pools: configs
                .iter()
                .map(|config| {
                    Arc::new(Pool {
                        config: config.clone(),
                        tenant: tenant.clone(),
                        idle: Mutex::default(),
                        wake: tokio::sync::Notify::new(),
                        warm: AtomicU64::new(0),
                        cold: AtomicU64::new(0),
                        refills: AtomicU64::new(0),
                        refill_failures: AtomicU64::new(0),
                    })
                })
                .collect(),
            stopping: Arc::default(),
            keepers: Mutex::default(),
        }
    }

    /// Removes what pools of dead servers left, then starts one task per pool that keeps it
    /// full. Must run inside the tokio runtime.
    pub async fn start(&self, agentbox: PathBuf) {
        if self.pools.is_empty() {
            return;
        }
        let _ = tokio::task::spawn_blocking(remove_orphans).await;
        let mut keepers = self.keepers.lock().unwrap_or_else(|e| e.into_inner());
        for (index, pool) in self.pools.iter().enumerate() {
            keepers.push(tokio::spawn(keep_full(
                index,
                Arc::clone(pool),
                agentbox.clone(),
                Arc::clone(&self.stopping),
            )));
        }
    }

    /// Claims a pooled sandbox created with exactly `policy` for `tenant` (with `name`), or
    /// None: no pool has that policy, or it has no idle sandbox (then the create boots one).
    /// Blocking: call it on the blocking pool, under the tenant's create lock.
    pub fn claim(
        &self,
        policy: &Policy,
        tenant: &str,
        name: Option<&str>,
    ) -> Result<Option<String>, RunError> {
        for pool in &self.pools {
            let mut serves = false;
            loop {
                let taken = {
                    let mut idle = pool.idle();
                    let at = idle.iter().position(|i| i.policy == *policy);
                    serves |= at.is_some();
                    at.map(|at| idle.remove(at))
                };
                let Some(entry) = taken else { break };
                pool.wake.notify_one();
                match state::claim(&entry.id, &pool.tenant, tenant, name) {
                    Ok(_) => {
                        pool.warm.fetch_add(1, Ordering::Relaxed);
                        return Ok(Some(entry.id));
                    }
                    // The name is taken: the caller's error; the sandbox goes back.
                    Err(e @ RunError::InvalidInput { .. }) if name_error(&e) => {
                        pool.idle().push(entry);
                        return Err(e);
                    }
                    // It died while idle: remove it and try the next one.
                    Err(e) => {
                        eprintln!(
                            "agentbox serve: pool {}: pooled sandbox {} unusable ({e}); removing it",
                            pool.config.image, entry.id
                        );
                        let _ = persistent::stop(&entry.id);
                    }
                }
            }
            if serves || pool_spec_matches(&pool.config, policy) {
                pool.cold.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Stops the keepers (waiting for a create in flight) and removes every idle sandbox.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for pool in &self.pools {
            pool.wake.notify_one();
        }
        let keepers: Vec<_> = self
            .keepers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for keeper in keepers {
            let _ = keeper.await;
        }
        let ids: Vec<String> = self
            .pools
            .iter()
            .flat_map(|p| p.idle().drain(..).map(|i| i.id).collect::<Vec<_>>())
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for id in ids {
                if let Err(e) = persistent::stop(&id) {
                    eprintln!("agentbox serve: removing pooled sandbox {id}: {e}");
                }
            }
        })
        .await;
    }

    pub fn stats(&self) -> Vec<PoolStats> {
        self.pools
            .iter()
            .map(|p| PoolStats {
                image: p.config.image.clone(),
                size: p.config.size,
                ready: p.idle().len(),
                warm: p.warm.load(Ordering::Relaxed),
                cold: p.cold.load(Ordering::Relaxed),
                refills: p.refills.load(Ordering::Relaxed),
                refill_failures: p.refill_failures.load(Ordering::Relaxed),
            })
            .collect()
    }
}

fn name_error(e: &RunError) -> bool {
    matches!(e, RunError::InvalidInput { field, .. } if field == "name")
}

/// Whether `policy` is the pool's (checked when the pool is empty, to count the miss).
fn pool_spec_matches(config: &PoolConfig, policy: &Policy) -> bool {
    agentbox_runtime::select::validate(&pool_spec(config), None).is_ok_and(|p| p == *policy)
}

/// Validates the pool's policy (resolving its image now) and creates one pooled sandbox with
/// that image's directory, so that the recorded policy is exactly the one booted.
fn create_one(
    agentbox: &std::path::Path,
    config: &PoolConfig,
    tenant: &str,
) -> Result<Idle, RunError> {
    let spec = pool_spec(config);
    let policy = agentbox_runtime::select::validate(&spec, None)?;
    let mut pinned = spec;
    if let agentbox_policy::Image::Dir(dir) = &policy.image {
        pinned.image = Some(dir.display().to_string());
    }
    let options = CreateOptions {
        tenant: Some(tenant.to_string()),
        ..Default::default()
    };
    let id = persistent::create_with_helper(agentbox, &pinned, &options)?;
    warm_up(&id);
    Ok(Idle { id, policy })
}

/// Runs two throwaway commands (`echo`, whatever their outcome) in a new pooled sandbox through
/// the path a tenant's exec takes (captured output), so that the guest's first process start
/// (kernel paths TCG translates on first use, the agent's spawn and output paths) is paid here
/// and not by the owner's first command, as the library's pool does. They write nothing.
fn warm_up(id: &str) {
    for _ in 0..2 {
        let request = ExecRequest {
            argv: vec!["echo".into(), "warm".into()],
            env: Vec::new(),
            cwd: Some("/".into()),
            timeout_ms: Some(10_000),
            tty: false,
            tty_size: None,
            stdin: false,
        };
        let _ = persistent::exec_captured(id, request, b"", 64);
    }
}

/// How long a refill waits after a claim.
const REFILL_DELAY: Duration = Duration::from_millis(300);

/// Keeps one pool at its size until the server stops.
async fn keep_full(index: usize, pool: Arc<Pool>, agentbox: PathBuf, stopping: Arc<AtomicBool>) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        if pool.idle().len() >= pool.config.size as usize {
            pool.wake.notified().await;
            // A claim woke us: let the claimant's first commands run before a boot competes
            // with them for the CPUs (a TCG boot takes a whole one for half a second).
            tokio::time::sleep(REFILL_DELAY).await;
            continue;
        }
        let (config, tenant, binary) = (pool.config.clone(), pool.tenant.clone(), agentbox.clone());
        let made = tokio::task::spawn_blocking(move || create_one(&binary, &config, &tenant)).await;
        let why = match made {
            Ok(Ok(idle)) => {
                backoff = BACKOFF_FIRST;
                if stopping.load(Ordering::SeqCst) {
                    let id = idle.id;
                    let _ = tokio::task::spawn_blocking(move || persistent::stop(&id)).await;
                    return;
                }
                pool.idle().push(idle);
                pool.refills.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        pool.refill_failures.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "agentbox serve: pool[{index}] ({}): creating a pooled sandbox failed, retrying in \
             {backoff:?}: {}",
            pool.config.image,
            why.replace('\n', " ")
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = pool.wake.notified() => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Removes the pooled sandboxes of servers that are gone (killed before their shutdown).
fn remove_orphans() {
    for sandbox in state::list() {
        let Some(pid) = sandbox.tenant.as_deref().and_then(pool_server) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let result = match sandbox.health() {
            Health::Failed => state::reclaim(&sandbox),
            Health::Running => persistent::stop(&sandbox.id),
        };
        if let Err(e) = result {
            eprintln!(
                "agentbox serve: removing the orphaned pooled sandbox {}: {e}",
                sandbox.id
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pool_tenants_name_their_server() {
        assert_eq!(pool_server(&own_tenant()), Some(std::process::id()));
        assert_eq!(pool_server("(pool:12)"), Some(12));
        assert_eq!(pool_server("acme"), None);
        assert_eq!(pool_server("(pool:x)"), None);
        assert!(own_tenant().starts_with(RESERVED_TENANT_PREFIX));
    }

    #[test]
    fn a_pool_spec_is_a_microvm_of_the_image_with_its_limits() {
        let config = PoolConfig {
            image: "busybox".into(),
            size: 2,
            memory: Some("256M".into()),
            cpus: None,
        };
        let spec = pool_spec(&config);
        assert_eq!(spec.tier.as_deref(), Some("microvm"));
        assert_eq!(spec.image.as_deref(), Some("busybox"));
        let policy = spec.validate(None).unwrap();
        assert_eq!(policy.limits.memory, 256 << 20);
    }

    #[test]
    fn an_empty_server_claims_nothing() {
        let pools = Pools::new(&[]);
        let policy = PolicySpec::default().validate(None).unwrap();
        assert_eq!(pools.claim(&policy, "t", None).unwrap(), None);
        assert!(pools.stats().is_empty());
    }
}
