//! Measures the warm pool: the time from `Pool::take` to the first command's output (`echo`
//! through the guest agent), over N takes from a pool of SIZE microVMs. Each take waits first
//! for the pool to be full again, so the background boot of the replacement (which competes for
//! the CPUs, under TCG above all) is not inside the measured span.
//!
//! ```sh
//! cargo build --release -p agentbox-guest
//! cargo run --release -p agentbox-runtime --example pool_acquire -- 50 2
//! ```
//!
//! With a third argument `quiet`, each background boot waits 3 s before it starts, so that the
//! replacement's boot does not compete with the measured first command (it does by default, as
//! in real use: the refill starts at the take).
//!
//! The image is a throwaway directory with the host's static busybox (`/bin/busybox`, Debian's
//! busybox-static), removed at the end.

use std::path::Path;
use std::time::{Duration, Instant};

use agentbox_policy::PolicySpec;
use agentbox_runtime::microvm::pool::{Pool, Source};

fn busybox_root(dir: &Path) -> std::io::Result<()> {
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox"))?;
    for applet in ["sh", "echo", "cat", "true"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet))?;
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let takes: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(50);
    let size: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2);
    let quiet = args.next().as_deref() == Some("quiet");
    let image = std::env::temp_dir().join(format!("pool-acquire-{}", std::process::id()));
    busybox_root(&image)?;
    let result = measure(&image, takes, size, quiet);
    std::fs::remove_dir_all(&image)?;
    result
}

fn measure(
    image: &Path,
    takes: usize,
    size: usize,
    quiet: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let spec = PolicySpec {
        tier: Some("microvm".into()),
        image: Some(image.display().to_string()),
        ..Default::default()
    };
    let policy = agentbox_runtime::select::validate(&spec, None)?;
    let pool = if quiet {
        let delayed = |policy: &agentbox_policy::Policy| {
            std::thread::sleep(Duration::from_secs(3));
            agentbox_runtime::microvm::pool::boot_warmed(policy)
        };
        Pool::with_boot(policy, size, Box::new(delayed))
    } else {
        Pool::new(policy, size)?
    };
    let argv = vec!["echo".to_string(), "warm".to_string()];
    let mut spans = Vec::with_capacity(takes);
    let mut take_only = Vec::with_capacity(takes);
    let mut refill_waits = Vec::with_capacity(takes);
    let mut settled = Vec::with_capacity(takes);
    for i in 0..takes {
        let waited = Instant::now();
        if !pool.wait_ready(size, Duration::from_secs(120)) {
            return Err(format!("the pool did not refill: {:?}", pool.stats()).into());
        }
        if i > 0 {
            refill_waits.push(waited.elapsed());
        }
        let started = Instant::now();
        let (mut booted, source) = pool.take_with_source()?;
        let taken = started.elapsed();
        let mut out = Vec::new();
        let mut err = Vec::new();
        let record = booted
            .vm
            .run(pool.request(&argv), None, &mut out, &mut err)?;
        let span = started.elapsed();
        if source != Source::Warm || out != b"warm\n" || record.code != Some(0) {
            return Err(format!("take {i}: {source:?}, {record:?}, {out:?} {err:?}").into());
        }
        spans.push(span);
        take_only.push(taken);
        // The same VM again, once the refill boot no longer competes for the CPUs: what a
        // command costs on a booted guest.
        if !pool.wait_ready(size, Duration::from_secs(120)) {
            return Err(format!("the pool did not refill: {:?}", pool.stats()).into());
        }
        let again = Instant::now();
        out.clear();
        booted
            .vm
            .run(pool.request(&argv), None, &mut out, &mut err)?;
        settled.push(again.elapsed());
        drop(booted);
    }
    spans.sort();
    take_only.sort();
    refill_waits.sort();
    settled.sort();
    let stats = pool.stats();
    drop(pool);
    println!(
        "takes: {takes}, pool size: {size}, refill delayed: {quiet}, accelerator: {:?}",
        agentbox_runtime::microvm::accel()?.0
    );
    println!(
        "take + first output: p50 {} p90 {} min {} max {}",
        ms(percentile(&spans, 50.0)),
        ms(percentile(&spans, 90.0)),
        ms(spans[0]),
        ms(spans[spans.len() - 1])
    );
    println!(
        "take alone:          p50 {} p90 {}",
        ms(percentile(&take_only, 50.0)),
        ms(percentile(&take_only, 90.0))
    );
    println!(
        "second command, same VM, refill done: p50 {} p90 {}",
        ms(percentile(&settled, 50.0)),
        ms(percentile(&settled, 90.0))
    );
    if !refill_waits.is_empty() {
        println!(
            "wait for the refill before the next take: p50 {} p90 {}",
            ms(percentile(&refill_waits, 50.0)),
            ms(percentile(&refill_waits, 90.0))
        );
    }
    println!("stats: {stats:?}");
    Ok(())
}
