//! The library's warm pool of microVMs (`agentbox_runtime::microvm::pool`) with real QEMU, on a
//! busybox image made by the test: a take from a full pool is warm and runs a command, each VM
//! is handed out once, an empty pool boots on demand, and dropping the pool leaves no QEMU, no
//! VM state directory and no uid slot behind. A pool of one: each boot costs about a second
//! under TCG.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use agentbox_policy::PolicySpec;
use agentbox_runtime::microvm::pool::{Pool, Source};
use common::busybox::busybox_root;
use common::*;

/// The uid slots this process holds (a slot file records its holder's pid): the VMs it booted
/// are named `vm-<slot>`.
fn our_slots() -> BTreeSet<String> {
    let me = std::process::id().to_string();
    fs::read_dir("/run/agentbox/slots")
        .map(|d| {
            d.flatten()
                .filter(|e| fs::read_to_string(e.path()).is_ok_and(|p| p.trim() == me))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// QEMU processes whose command line mentions the state directory of VM `vm-<slot>`.
fn qemu_of(slot: &str) -> Vec<u32> {
    let dir = format!("/run/agentbox/vms/vm-{slot}/");
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("qemu-system"))
                && fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&dir))
        })
        .collect()
}

/// Whether `pid` is gone (or a zombie about to be reaped: a jailed QEMU is reaped by whoever
/// inherits it once its `unshare` is killed), waiting up to 5 s.
fn gone(pid: u32) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let state = fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        let zombie = state
            .as_deref()
            .and_then(|s| s.rsplit_once(')'))
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if state.is_none() || zombie {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn echo(pool: &Pool, booted: &mut agentbox_runtime::microvm::Booted, word: &str) -> String {
    let argv = vec!["echo".to_string(), word.to_string()];
    let mut out = Vec::new();
    let mut err = Vec::new();
    let record = booted
        .vm
        .run(pool.request(&argv), None, &mut out, &mut err)
        .unwrap();
    assert_eq!(record.code, Some(0), "{}", String::from_utf8_lossy(&err));
    String::from_utf8(out).unwrap()
}

#[test]
fn a_warm_pool_hands_each_vm_out_once_and_leaves_nothing_when_dropped() {
    let _guard = serial();
    if let Some(why) = agentbox_runtime::microvm::unavailable() {
        panic!("the microvm tier is not available here: {why}");
    }
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("root");
    busybox_root(&image);
    let spec = PolicySpec {
        tier: Some("microvm".into()),
        image: Some(image.display().to_string()),
        ..Default::default()
    };
    let policy = agentbox_runtime::select::validate(&spec, None).unwrap();
    let before = host_state();
    let mut seen_slots = BTreeSet::new();
    {
        let pool = Pool::new(policy.clone(), 1).unwrap();
        assert!(pool.serves(&policy));
        assert!(
            pool.wait_ready(1, Duration::from_secs(60)),
            "{:?}",
            pool.stats()
        );
        let waiting = our_slots();
        assert_eq!(waiting.len(), 1, "one VM booted ahead: {waiting:?}");
        seen_slots.extend(waiting);

        // A take from the full pool is warm, and its VM runs commands.
        let (mut first, source) = pool.take_with_source().unwrap();
        assert_eq!(source, Source::Warm);
        let first_name = first.vm.name().to_string();
        assert_eq!(echo(&pool, &mut first, "warm"), "warm\n");
        assert_eq!(echo(&pool, &mut first, "again"), "again\n");

        // The pool refills in the background with another VM; the taken one is never handed
        // out again.
        assert!(
            pool.wait_ready(1, Duration::from_secs(60)),
            "{:?}",
            pool.stats()
        );
        seen_slots.extend(our_slots());
        let (mut second, source) = pool.take_with_source().unwrap();
        assert_eq!(source, Source::Warm);
        assert_ne!(second.vm.name(), first_name);
        assert_eq!(echo(&pool, &mut second, "second"), "second\n");

        // The pool is empty (its refill has just started): this take boots on demand.
        let (mut third, source) = pool.take_with_source().unwrap();
        assert_eq!(source, Source::Cold);
        assert_eq!(echo(&pool, &mut third, "cold"), "cold\n");
        seen_slots.extend(our_slots());
        let stats = pool.stats();
        assert_eq!((stats.warm_takes, stats.cold_takes), (2, 1), "{stats:?}");

        let first_qemu = first.vm.qemu_pid().unwrap();
        drop(first);
        assert!(gone(first_qemu), "QEMU {first_qemu} still runs");
        assert!(!Path::new("/run/agentbox/vms").join(&first_name).exists());
        drop((second, third));
        // Dropped with a VM waiting or booting: both are killed.
        assert!(
            pool.wait_ready(1, Duration::from_secs(60)),
            "{:?}",
            pool.stats()
        );
        seen_slots.extend(our_slots());
    }
    assert!(
        our_slots().is_empty(),
        "slots still held: {:?}",
        our_slots()
    );
    for slot in &seen_slots {
        assert!(
            qemu_of(slot).into_iter().all(gone),
            "QEMU of vm-{slot} still runs"
        );
        assert!(
            !Path::new(&format!("/run/agentbox/vms/vm-{slot}")).exists(),
            "vm-{slot} left"
        );
    }
    assert_nothing_left(&before);
}
