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
//! With `json` among the arguments (after N and SIZE, with or without `quiet`), it prints one
//! JSON object instead (for `bench/microvm.sh`): `{"takes":..,"size":..,"quiet":..,"accel":..,
//! "take_first_output":STAT,"take_alone":STAT,"second_same_vm":STAT}`, each STAT
//! `{"n":..,"median_ms":..,"p90_ms":..,"min_ms":..,"max_ms":..}` (nearest-rank percentiles).
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

/// `{"n":..,"median_ms":..,"p90_ms":..,"min_ms":..,"max_ms":..}` of sorted samples.
fn stat_json(sorted: &[Duration]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "{{\"n\":{},\"median_ms\":{:.3},\"p90_ms\":{:.3},\"min_ms\":{:.3},\"max_ms\":{:.3}}}",
        sorted.len(),
        ms(percentile(sorted, 50.0)),
        ms(percentile(sorted, 90.0)),
        ms(sorted[0]),
        ms(sorted[sorted.len() - 1])
    )
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let takes: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(50);
    let size: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2);
    let rest: Vec<String> = args.collect();
    let quiet = rest.iter().any(|a| a == "quiet");
    let json = rest.iter().any(|a| a == "json");
    let image = std::env::temp_dir().join(format!("pool-acquire-{}", std::process::id()));
    busybox_root(&image)?;
    let result = measure(&image, takes, size, quiet, json);
    std::fs::remove_dir_all(&image)?;
    result
}

fn measure(
    image: &Path,
    takes: usize,
    size: usize,
    quiet: bool,
    json: bool,
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
    let accel = agentbox_runtime::microvm::accel()?.0;
    if json {
        println!(
            "{{\"takes\":{takes},\"size\":{size},\"quiet\":{quiet},\"accel\":\"{accel:?}\",\"take_first_output\":{},\"take_alone\":{},\"second_same_vm\":{}}}",
            stat_json(&spans),
            stat_json(&take_only),
            stat_json(&settled)
        );
        return Ok(());
    }
    println!("takes: {takes}, pool size: {size}, refill delayed: {quiet}, accelerator: {accel:?}");
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
