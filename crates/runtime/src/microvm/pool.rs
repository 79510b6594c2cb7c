//! A warm pool of microVMs: `size` VMs booted ahead for one policy, so that taking one costs a
//! queue pop instead of a boot (about a second under TCG). A thread of the pool boots the
//! replacements in the background (QEMU is spawned with `std::process::Command` through the jail
//! wrapper: nothing is set up in a forked child, so a threaded caller is fine).
//!
//! A pool serves exactly one validated [`Policy`]: everything a VM is booted from (image, memory,
//! vCPUs, disk) and everything its commands run with (env, user, cwd, timeout) comes from it, and
//! callers check [`Pool::serves`] before they take. Each VM is handed out at most once: `take`
//! moves it out of the queue, and the caller's `Booted` is the only handle left (it is not
//! `Clone`), so a used VM can never return to the pool. It never keeps a VM it handed out, and
//! never hands out one whose QEMU has died.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use agentbox_policy::Policy;
use agentbox_protocol::RunRequest;

use super::Booted;
use crate::RunError;

/// What a pool holds: a booted thing that can tell whether it still runs.
pub trait Warm: Send + 'static {
    /// False once it can no longer serve (its QEMU died): the pool drops it instead of handing
    /// it out.
    fn alive(&mut self) -> bool;
}

impl Warm for Booted {
    fn alive(&mut self) -> bool {
        self.vm.alive()
    }
}

/// Boots one item for the policy (for VMs: [`super::boot`]).
pub type BootFn<T> = dyn Fn(&Policy) -> Result<T, RunError> + Send + Sync;

/// Where a taken VM came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Booted ahead, waiting in the pool.
    Warm,
    /// The pool was empty: booted for this take, in the caller's thread.
    Cold,
}

/// The pool's counters since it was made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Booted and waiting now.
    pub ready: usize,
    /// Takes served from the pool.
    pub warm_takes: u64,
    /// Takes that found the pool empty and booted on demand.
    pub cold_takes: u64,
    /// Background boots that succeeded.
    pub refills: u64,
    /// Background boots that failed (each logged in `last_error`; the thread backs off).
    pub refill_failures: u64,
    /// Waiting VMs found dead at a take and dropped.
    pub discarded: u64,
    pub last_error: Option<String>,
}

/// First and longest wait after a failed background boot.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

struct Queue<T> {
    ready: VecDeque<T>,
    stopping: bool,
    last_error: Option<String>,
}

struct Shared<T> {
    policy: Policy,
    size: usize,
    boot: Box<BootFn<T>>,
    queue: Mutex<Queue<T>>,
    /// Wakes the refill thread: a take, or the pool's drop.
    wake: Condvar,
    warm_takes: AtomicU64,
    cold_takes: AtomicU64,
    refills: AtomicU64,
    refill_failures: AtomicU64,
    discarded: AtomicU64,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        // A panic while holding the lock leaves the queue consistent (push/pop only).
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `size` VMs (or `T`s) kept booted for one policy; see the module documentation. Dropping the
/// pool stops the refill thread (after the boot in flight, if any) and kills every waiting VM.
pub struct Pool<T: Warm = Booted> {
    shared: Arc<Shared<T>>,
    refill: Option<JoinHandle<()>>,
}

impl Pool<Booted> {
    /// A pool of `size` microVMs for `policy` (checked now: a policy the tier cannot run is an
    /// error here, not a refill failure later). The first VMs boot in the background.
    pub fn new(policy: Policy, size: usize) -> Result<Pool<Booted>, RunError> {
        crate::tier::check_enforceable(&policy)?;
        Ok(Pool::with_boot(policy, size, Box::new(boot_warmed)))
    }
}

/// Boots a VM and runs two throwaway commands in it (`echo`, whatever its outcome: an image
/// without it still spawns and fails an exec), so that the guest's first process starts (the
/// kernel's clone, exec, pipe and exit paths, which TCG translates on first use, and the agent's
/// spawn, output and reaping paths) are paid in the background rather than by the caller's first
/// command: 75 ms instead of 10 on the reference host under TCG. `echo` with its output streamed
/// back takes exactly the path of a typical first command (a data frame, then `exited`); the
/// second run catches what the first one only warmed half-way. The commands run as the policy's
/// user in `/` and write nothing but their output, which is dropped.
pub fn boot_warmed(policy: &Policy) -> Result<Booted, RunError> {
    let mut booted = super::boot(policy)?;
    for _ in 0..2 {
        let warm_up = super::host::run_request(
            policy,
            &crate::persistent::protocol::ExecRequest {
                argv: vec!["echo".into(), "warm".into()],
                cwd: Some("/".into()),
                timeout_ms: Some(10_000),
                ..Default::default()
            },
        );
        let _ = booted
            .vm
            .run(warm_up, None, &mut std::io::sink(), &mut std::io::sink());
    }
    if !booted.vm.alive() {
        return Err(RunError::setup(
            "microvm",
            "the VM died during its warm-up commands",
        ));
    }
    Ok(booted)
}

impl<T: Warm> Pool<T> {
    /// A pool whose items `boot` makes (tests give a fake).
    pub fn with_boot(policy: Policy, size: usize, boot: Box<BootFn<T>>) -> Pool<T> {
        let shared = Arc::new(Shared {
            policy,
            size,
            boot,
            queue: Mutex::new(Queue {
                ready: VecDeque::with_capacity(size),
                stopping: false,
                last_error: None,
            }),
            wake: Condvar::new(),
            warm_takes: AtomicU64::new(0),
            cold_takes: AtomicU64::new(0),
            refills: AtomicU64::new(0),
            refill_failures: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
        });
        let refill = (size > 0).then(|| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || refill(&shared))
        });
        Pool { shared, refill }
    }

    /// The policy every VM of the pool was booted for.
    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// Whether a run under `policy` may take from this pool: exactly the pool's policy.
    pub fn serves(&self, policy: &Policy) -> bool {
        self.shared.policy == *policy
    }

    /// A ready VM, or (the pool empty) one booted now in this thread. The VM is the caller's:
    /// it never returns to the pool, and the pool boots a replacement in the background.
    ///
    /// A VM's QEMU dies with the thread that spawned it (a parent-death signal, so that a killed
    /// process leaves no VM behind): a warm VM lives at most as long as the pool (its refill
    /// thread), a cold one as long as the calling thread. Keep the pool while its VMs are used.
    pub fn take(&self) -> Result<T, RunError> {
        self.take_with_source().map(|(item, _)| item)
    }

    /// [`Pool::take`], saying whether the VM was waiting or booted for this take.
    pub fn take_with_source(&self) -> Result<(T, Source), RunError> {
        let shared = &self.shared;
        let mut queue = shared.lock();
        while let Some(mut item) = queue.ready.pop_front() {
            if item.alive() {
                drop(queue);
                shared.wake.notify_all();
                shared.warm_takes.fetch_add(1, Ordering::Relaxed);
                return Ok((item, Source::Warm));
            }
            shared.discarded.fetch_add(1, Ordering::Relaxed);
        }
        drop(queue);
        shared.wake.notify_all();
        shared.cold_takes.fetch_add(1, Ordering::Relaxed);
        (shared.boot)(&shared.policy).map(|item| (item, Source::Cold))
    }

    /// Blocks until `n` VMs wait in the pool (at most `size`) or `timeout` passes; true if they
    /// do. For benchmarks and tests, which measure takes from a full pool.
    pub fn wait_ready(&self, n: usize, timeout: Duration) -> bool {
        let n = n.min(self.shared.size);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.shared.lock().ready.len() >= n {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stats(&self) -> PoolStats {
        let shared = &self.shared;
        let queue = shared.lock();
        PoolStats {
            ready: queue.ready.len(),
            warm_takes: shared.warm_takes.load(Ordering::Relaxed),
            cold_takes: shared.cold_takes.load(Ordering::Relaxed),
            refills: shared.refills.load(Ordering::Relaxed),
            refill_failures: shared.refill_failures.load(Ordering::Relaxed),
            discarded: shared.discarded.load(Ordering::Relaxed),
            last_error: queue.last_error.clone(),
        }
    }

    /// The request that runs `argv` under the pool's policy, as [`super::run`] makes it (the
    /// caller's stdin is passed; the policy's env, cwd, user and timeout; layered, the inner
    /// `ns` policy).
    pub fn request(&self, argv: &[String]) -> RunRequest {
        super::host::run_request(
            &self.shared.policy,
            &crate::persistent::protocol::ExecRequest {
                argv: argv.to_vec(),
                stdin: true,
                ..Default::default()
            },
        )
    }
}

/// The refill thread: boots one item at a time while fewer than `size` wait, backs off after a
/// failure, and ends when the pool is dropped (an item booted meanwhile is dropped, not queued).
fn refill<T: Warm>(shared: &Shared<T>) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        {
            let mut queue = shared.lock();
            while !queue.stopping && queue.ready.len() >= shared.size {
                queue = shared.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
            if queue.stopping {
                return;
            }
        }
        match (shared.boot)(&shared.policy) {
            Ok(item) => {
                backoff = BACKOFF_FIRST;
                let mut queue = shared.lock();
                if queue.stopping {
                    drop(queue);
                    drop(item);
                    return;
                }
                queue.ready.push_back(item);
                shared.refills.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                shared.refill_failures.fetch_add(1, Ordering::Relaxed);
                let mut queue = shared.lock();
                queue.last_error = Some(e.to_string());
                // Wait out the backoff unless the pool is dropped meanwhile.
                let (queue, _) = shared
                    .wake
                    .wait_timeout_while(queue, backoff, |q| !q.stopping)
                    .unwrap_or_else(|e| e.into_inner());
                if queue.stopping {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

impl<T: Warm> Drop for Pool<T> {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.refill.take() {
            let _ = thread.join();
        }
        // The waiting VMs: dropping a `Booted` kills its QEMU, removes its state directory and
        // cgroup, then frees its uid slot. Their disks are throwaway overlays: nothing to flush.
        let idle: Vec<T> = self.shared.lock().ready.drain(..).collect();
        drop(idle);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A fake VM: a serial number, whether it is alive, and a flag set when it is dropped.
    struct Fake {
        serial: u64,
        alive: Arc<AtomicBool>,
        dropped: Arc<AtomicU64>,
    }

    impl Warm for Fake {
        fn alive(&mut self) -> bool {
            self.alive.load(Ordering::SeqCst)
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn policy() -> Policy {
        agentbox_policy::PolicySpec::default()
            .validate(None)
            .unwrap()
    }

    struct Counters {
        booted: Arc<AtomicU64>,
        dropped: Arc<AtomicU64>,
        alive: Arc<AtomicBool>,
        fail: Arc<AtomicBool>,
    }

    fn fake_pool(size: usize) -> (Pool<Fake>, Counters) {
        let c = Counters {
            booted: Arc::default(),
            dropped: Arc::default(),
            alive: Arc::new(AtomicBool::new(true)),
            fail: Arc::default(),
        };
        let (booted, dropped, alive, fail) = (
            Arc::clone(&c.booted),
            Arc::clone(&c.dropped),
            Arc::clone(&c.alive),
            Arc::clone(&c.fail),
        );
        let boot = move |_: &Policy| {
            if fail.load(Ordering::SeqCst) {
                return Err(RunError::setup("fake boot", "refused"));
            }
            std::thread::sleep(Duration::from_millis(5));
            Ok(Fake {
                serial: booted.fetch_add(1, Ordering::SeqCst),
                alive: Arc::clone(&alive),
                dropped: Arc::clone(&dropped),
            })
        };
        (Pool::with_boot(policy(), size, Box::new(boot)), c)
    }

    #[test]
    fn takes_are_warm_from_a_full_pool_each_item_once_and_the_pool_refills() {
        let (pool, c) = fake_pool(2);
        assert!(pool.wait_ready(2, Duration::from_secs(5)));
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..6 {
            assert!(pool.wait_ready(2, Duration::from_secs(5)));
            let (item, source) = pool.take_with_source().unwrap();
            assert_eq!(source, Source::Warm);
            assert!(
                seen.insert(item.serial),
                "item {} handed out twice",
                item.serial
            );
        }
        assert!(pool.wait_ready(2, Duration::from_secs(5)));
        let stats = pool.stats();
        assert_eq!((stats.warm_takes, stats.cold_takes, stats.ready), (6, 0, 2));
        assert_eq!(stats.refills, 8);
        assert!(pool.serves(&policy()));
        drop(pool);
        // Every item ever booted is dropped: the 6 taken and the 2 waiting.
        assert_eq!(c.dropped.load(Ordering::SeqCst), 8);
        assert_eq!(c.booted.load(Ordering::SeqCst), 8);
    }

    #[test]
    fn an_empty_pool_boots_on_demand_and_dead_items_are_never_handed_out() {
        let (pool, c) = fake_pool(1);
        assert!(pool.wait_ready(1, Duration::from_secs(5)));
        c.alive.store(false, Ordering::SeqCst);
        // The waiting item is dead: dropped, and this take boots one (dead too, as the fake
        // shares the flag, but a cold boot is handed out as booted).
        let (_, source) = pool.take_with_source().unwrap();
        assert_eq!(source, Source::Cold);
        let stats = pool.stats();
        assert_eq!((stats.discarded, stats.cold_takes), (1, 1));
    }

    #[test]
    fn refill_failures_are_counted_and_the_drop_ends_the_backoff() {
        let (pool, c) = fake_pool(1);
        assert!(pool.wait_ready(1, Duration::from_secs(5)));
        c.fail.store(true, Ordering::SeqCst);
        let (_, source) = pool.take_with_source().unwrap();
        assert_eq!(source, Source::Warm);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.stats().refill_failures == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let stats = pool.stats();
        assert!(stats.refill_failures >= 1, "{stats:?}");
        assert!(stats.last_error.unwrap().contains("refused"));
        let started = std::time::Instant::now();
        drop(pool);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
