//! Resource exhaustion, always bounded by the context's `max_*` whether or not the sandbox limits
//! anything: processes, memory, disk space, inodes, CPU. Each probe kills every process and deletes
//! every file it made before it returns.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use agentbox_sys::process::{self, Exit, Fork};
use agentbox_sys::{attempt_fs, fd, signal};

use super::errno;
use super::fs::{no_scratch, scratch_path};
use crate::{Context, Outcome, Verdict};

const MIB: usize = 1 << 20;

/// `Some(outcome)` when the resource probes are off or the bound is 0.
fn skip(context: &Context, id: &str, attempted: &str, bound: u64, name: &str) -> Option<Outcome> {
    if !context.resources {
        return Some(Outcome::new(id, Verdict::NotApplicable, attempted).observed("resources off"));
    }
    (bound == 0).then(|| {
        Outcome::new(id, Verdict::NotApplicable, attempted)
            .observed(format!("no bound ({name} = 0)"))
    })
}

/// Becomes a child that only waits to be killed, and dies with its parent.
fn pause_forever(parent: i32) -> ! {
    let _ = process::set_parent_death_signal(signal::SIGKILL);
    if process::getppid() != parent {
        process::exit_now(0);
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

pub(super) fn fork_bomb(context: &Context) -> Outcome {
    const ID: &str = "fork_bomb";
    let bound = context.max_processes;
    let attempted = format!("fork children that sleep, up to {bound}; then SIGKILL and reap them");
    if let Some(outcome) = skip(context, ID, &attempted, bound.into(), "max_processes") {
        return outcome;
    }
    let me = process::getpid();
    let mut children = Vec::new();
    let mut failure = None;
    while children.len() < bound as usize {
        match process::fork_single_threaded_program() {
            Ok(Fork::Child) => pause_forever(me),
            Ok(Fork::Parent(pid)) => children.push(pid),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    for &pid in &children {
        let _ = attempt_fs::kill_one(pid, signal::SIGKILL);
    }
    for &pid in &children {
        let _ = process::wait(pid, false);
    }
    let made = children.len();
    match failure {
        None => Outcome::new(ID, Verdict::Escaped, attempted)
            .observed(format!("not limited up to {made} processes")),
        Some(e) if matches!(errno::of_sys(&e).as_deref(), Some("EAGAIN" | "ENOMEM")) => {
            Outcome::new(ID, Verdict::Blocked, attempted)
                .errno(errno::of_sys(&e))
                .observed(format!("contained at {made} processes"))
        }
        Some(e) => Outcome::new(ID, Verdict::Inconclusive, attempted)
            .errno(errno::of_sys(&e))
            .observed(format!("fork failed after {made} processes: {e}")),
    }
}

/// Exit code of the memory child when an allocation is refused.
const ALLOCATION_REFUSED: i32 = 12;

/// The memory child: allocates and touches `bound` MiB in 16 MiB steps, writing the total so far
/// (8 bytes, little endian) to `progress` after each step.
fn hog(bound: u64, progress: i32) -> ! {
    // Be the first choice of the OOM killer, before the runner or anything else in the sandbox.
    let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut total: u64 = 0;
    while total < bound {
        let step = (bound - total).min(16);
        let mut chunk: Vec<u8> = Vec::new();
        if chunk.try_reserve_exact(step as usize * MIB).is_err() {
            process::exit_now(ALLOCATION_REFUSED);
        }
        chunk.resize(step as usize * MIB, 0xa5);
        held.push(std::hint::black_box(chunk));
        total += step;
        if fd::write_all(progress, &total.to_le_bytes()).is_err() {
            process::exit_now(1);
        }
    }
    std::hint::black_box(&held);
    process::exit_now(0)
}

/// The memory verdict from how far the child got and how it ended.
fn memory_verdict(
    reached: u64,
    bound: u64,
    exit: Option<Exit>,
) -> (Verdict, Option<&'static str>, String) {
    match exit {
        Some(Exit::Code(0)) if reached >= bound => (
            Verdict::Escaped,
            None,
            format!("not limited up to {reached} MiB"),
        ),
        Some(Exit::Signal(9)) => (
            Verdict::Blocked,
            None,
            format!("killed by SIGKILL (the OOM killer) at {reached} MiB"),
        ),
        Some(Exit::Code(ALLOCATION_REFUSED)) => (
            Verdict::Blocked,
            Some("ENOMEM"),
            format!("allocation refused at {reached} MiB"),
        ),
        other => (
            Verdict::Inconclusive,
            None,
            format!("the child ended ({other:?}) at {reached} MiB"),
        ),
    }
}

pub(super) fn memory_hog(context: &Context) -> Outcome {
    const ID: &str = "memory_hog";
    let bound = context.max_memory_mib;
    let attempted =
        format!("a child allocates and touches memory in 16 MiB steps up to {bound} MiB");
    if let Some(outcome) = skip(context, ID, &attempted, bound, "max_memory_mib") {
        return outcome;
    }
    let (read, write) = match fd::pipe() {
        Ok(p) => p,
        Err(e) => {
            return Outcome::new(ID, Verdict::Inconclusive, attempted)
                .errno(errno::of_sys(&e))
                .observed("pipe failed");
        }
    };
    let me = process::getpid();
    let child = match process::fork_single_threaded_program() {
        Ok(Fork::Child) => {
            drop(read);
            let _ = process::set_parent_death_signal(signal::SIGKILL);
            if process::getppid() != me {
                process::exit_now(1);
            }
            hog(bound, write.as_raw_fd())
        }
        Ok(Fork::Parent(pid)) => pid,
        Err(e) => {
            return Outcome::new(ID, Verdict::Inconclusive, attempted)
                .errno(errno::of_sys(&e))
                .observed("fork failed");
        }
    };
    drop(write);
    let mut reached = 0u64;
    let mut buf = [0u8; 8];
    let mut filled = 0;
    loop {
        match fd::read(read.as_raw_fd(), &mut buf[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                filled += n;
                if filled == buf.len() {
                    reached = u64::from_le_bytes(buf);
                    filled = 0;
                }
            }
        }
    }
    // The pipe closed: the child has ended (or is ending); make sure, then reap it.
    let exit = process::wait(child, false).ok().flatten().map(|(_, e)| e);
    let (verdict, errno, observation) = memory_verdict(reached, bound, exit);
    Outcome::new(ID, verdict, attempted)
        .errno(errno.map(str::to_string))
        .observed(observation)
}

/// Whether a write error means a limit held (no space, quota, file size limit).
fn is_limit(errno: Option<&str>) -> bool {
    matches!(errno, Some("ENOSPC" | "EDQUOT" | "EFBIG"))
}

pub(super) fn disk_fill(context: &Context) -> Outcome {
    const ID: &str = "disk_fill";
    let bound = context.max_disk_mib;
    let attempted =
        format!("write 1 MiB chunks to a file under scratch up to {bound} MiB, fsync, delete it");
    if let Some(outcome) = skip(context, ID, &attempted, bound, "max_disk_mib") {
        return outcome;
    }
    let _ = attempt_fs::ignore_file_size_signal();
    let Some(path) = scratch_path(context, "disk-fill") else {
        return no_scratch(ID, &attempted);
    };
    let mut file = match File::create(&path) {
        Ok(f) => f,
        Err(e) => {
            return Outcome::new(ID, Verdict::Inconclusive, attempted)
                .errno(errno::of_io(&e))
                .observed(format!("cannot create {}", path.display()));
        }
    };
    let chunk = vec![0xa5u8; MIB];
    let mut written = 0u64;
    let mut failure = None;
    while written < bound {
        if let Err(e) = file.write_all(&chunk) {
            failure = Some(e);
            break;
        }
        written += 1;
    }
    if failure.is_none() {
        failure = file.sync_all().err();
    }
    drop(file);
    let removed = std::fs::remove_file(&path);
    let cleanup = match removed {
        Ok(()) => String::new(),
        Err(e) => format!("; could not delete {}: {e}", path.display()),
    };
    match failure {
        None => Outcome::new(ID, Verdict::Escaped, attempted)
            .observed(format!("not limited up to {written} MiB{cleanup}")),
        Some(e) => {
            let name = errno::of_io(&e);
            let verdict = if is_limit(name.as_deref()) {
                Verdict::Blocked
            } else {
                Verdict::Inconclusive
            };
            Outcome::new(ID, verdict, attempted)
                .errno(name)
                .observed(format!("contained at {written} MiB{cleanup}"))
        }
    }
}

pub(super) fn inode_fill(context: &Context) -> Outcome {
    const ID: &str = "inode_fill";
    let bound = context.max_inodes;
    let attempted =
        format!("create empty files in a scratch subdirectory up to {bound}, delete them");
    if let Some(outcome) = skip(context, ID, &attempted, bound, "max_inodes") {
        return outcome;
    }
    let Some(dir) = scratch_path(context, "inode-fill") else {
        return no_scratch(ID, &attempted);
    };
    if let Err(e) = std::fs::create_dir(&dir) {
        let name = errno::of_io(&e);
        let verdict = if is_limit(name.as_deref()) {
            Verdict::Blocked
        } else {
            Verdict::Inconclusive
        };
        return Outcome::new(ID, verdict, attempted)
            .errno(name)
            .observed(format!("cannot create {}", dir.display()));
    }
    let mut made = 0u64;
    let mut failure = None;
    while made < bound {
        if let Err(e) = File::create(dir.join(made.to_string())) {
            failure = Some(e);
            break;
        }
        made += 1;
    }
    let cleanup = match std::fs::remove_dir_all(&dir) {
        Ok(()) => String::new(),
        Err(e) => format!("; could not delete {}: {e}", dir.display()),
    };
    match failure {
        None => Outcome::new(ID, Verdict::Escaped, attempted)
            .observed(format!("not limited up to {made} files{cleanup}")),
        Some(e) => {
            let name = errno::of_io(&e);
            let verdict = if matches!(name.as_deref(), Some("ENOSPC" | "EDQUOT")) {
                Verdict::Blocked
            } else {
                Verdict::Inconclusive
            };
            Outcome::new(ID, verdict, attempted)
                .errno(name)
                .observed(format!("contained at {made} files{cleanup}"))
        }
    }
}

/// Parses a CPU list such as `0-3,5,7-8` (/sys/devices/system/cpu/online) into a count.
fn count_cpu_list(list: &str) -> Option<usize> {
    let mut count = 0;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        count += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                b.checked_sub(a)? + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    (count > 0).then_some(count)
}

/// The CPUs the machine has online (not the share this process may use, which is what is measured).
fn online_cpus() -> usize {
    let from_sys = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|l| count_cpu_list(&l));
    let from_stat = || {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let n = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count();
        (n > 0).then_some(n)
    };
    from_sys
        .or_else(from_stat)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
}

/// Machine-wide CPU counters of /proc/stat: (idle + iowait, total), in clock ticks.
fn cpu_counters(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    let total = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((idle, total))
}

fn read_cpu_counters() -> Option<(u64, u64)> {
    cpu_counters(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// CPUs left idle on the machine between two /proc/stat readings, of `online`.
fn idle_cpus(before: Option<(u64, u64)>, after: Option<(u64, u64)>, online: usize) -> Option<f64> {
    let ((idle0, total0), (idle1, total1)) = (before?, after?);
    let total = total1.checked_sub(total0).filter(|&t| t > 0)?;
    let idle = idle1.saturating_sub(idle0);
    Some(idle as f64 / total as f64 * online as f64)
}

/// The CPU verdict from the CPUs obtained, the CPUs the machine has, and how many stayed idle
/// meanwhile (a low share obtained while the machine was busy with others shows no limit).
fn cpu_verdict(used: f64, online: usize, idle: Option<f64>) -> Verdict {
    if online < 2 {
        Verdict::Inconclusive
    } else if used > 1.5 {
        Verdict::Escaped
    } else if used <= 1.2 && idle.is_none_or(|i| i >= 0.5) {
        Verdict::Blocked
    } else {
        Verdict::Inconclusive
    }
}

fn spin_until(end: Instant) {
    let mut n = 0u64;
    while Instant::now() < end {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

pub(super) fn cpu_hog(context: &Context) -> Outcome {
    const ID: &str = "cpu_hog";
    let online = online_cpus();
    let threads = online.clamp(1, 256);
    let attempted =
        format!("spin {threads} threads (one per online CPU) for 2 s; CPU time / wall time");
    if let Some(outcome) = skip(context, ID, &attempted, 1, "") {
        return outcome;
    }
    let before = attempt_fs::cpu_time_self();
    let machine_before = read_cpu_counters();
    let start = Instant::now();
    let end = start + Duration::from_secs(2);
    let mut spawned = Vec::new();
    let mut spawn_error = None;
    for _ in 1..threads {
        match std::thread::Builder::new().spawn(move || spin_until(end)) {
            Ok(handle) => spawned.push(handle),
            Err(e) => {
                spawn_error = Some(e);
                break;
            }
        }
    }
    spin_until(end);
    for handle in spawned.drain(..) {
        let _ = handle.join();
    }
    let wall = start.elapsed();
    let after = attempt_fs::cpu_time_self();
    let idle = idle_cpus(machine_before, read_cpu_counters(), online);
    let (Ok(before), Ok(after)) = (before, after) else {
        return Outcome::new(ID, Verdict::Inconclusive, attempted).observed("getrusage failed");
    };
    let used = after.saturating_sub(before).as_secs_f64() / wall.as_secs_f64().max(0.001);
    let mut observation = format!("{used:.1} CPUs used of {online} online");
    if let Some(idle) = idle {
        observation.push_str(&format!(", {idle:.1} left idle on the machine"));
    }
    if let Some(e) = &spawn_error {
        observation.push_str(&format!(" (thread spawn stopped: {e})"));
    }
    if online < 2 {
        observation.push_str("; one CPU cannot show a limit");
    }
    let verdict = cpu_verdict(used, online, idle);
    if verdict == Verdict::Inconclusive && idle.is_some_and(|i| i < 0.5) && online >= 2 {
        observation.push_str("; the machine was busy, so a low share shows no limit");
    }
    Outcome::new(ID, verdict, attempted).observed(observation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cpu_lists() {
        assert_eq!(count_cpu_list("0-1\n"), Some(2));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("0-3,5,7-8"), Some(7));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("x"), None);
    }

    #[test]
    fn cpu_verdicts() {
        assert_eq!(cpu_verdict(1.9, 2, Some(0.0)), Verdict::Escaped);
        assert_eq!(cpu_verdict(1.0, 8, Some(6.9)), Verdict::Blocked);
        assert_eq!(cpu_verdict(1.2, 8, None), Verdict::Blocked);
        assert_eq!(cpu_verdict(1.4, 8, Some(6.0)), Verdict::Inconclusive);
        assert_eq!(cpu_verdict(1.0, 1, Some(0.0)), Verdict::Inconclusive);
        // Contention, not a limit: the machine had no idle CPU left.
        assert_eq!(cpu_verdict(0.6, 2, Some(0.1)), Verdict::Inconclusive);
    }

    #[test]
    fn machine_cpu_counters() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n";
        assert_eq!(cpu_counters(stat), Some((850, 1000)));
        assert_eq!(cpu_counters("intr 1 2\n"), None);
        let idle = idle_cpus(Some((850, 1000)), Some((950, 1200)), 2);
        assert!(idle.is_some_and(|i| (i - 1.0).abs() < 1e-9));
        assert_eq!(idle_cpus(Some((1, 1)), Some((1, 1)), 2), None);
    }

    #[test]
    fn memory_verdicts() {
        assert_eq!(
            memory_verdict(512, 512, Some(Exit::Code(0))).0,
            Verdict::Escaped
        );
        let (v, e, o) = memory_verdict(240, 512, Some(Exit::Signal(9)));
        assert_eq!((v, e), (Verdict::Blocked, None));
        assert!(o.contains("240 MiB"));
        assert_eq!(
            memory_verdict(64, 512, Some(Exit::Code(ALLOCATION_REFUSED))).1,
            Some("ENOMEM")
        );
        assert_eq!(memory_verdict(64, 512, None).0, Verdict::Inconclusive);
        assert_eq!(
            memory_verdict(64, 512, Some(Exit::Code(0))).0,
            Verdict::Inconclusive
        );
    }

    #[test]
    fn write_limits() {
        assert!(is_limit(Some("ENOSPC")));
        assert!(is_limit(Some("EFBIG")));
        assert!(!is_limit(Some("EIO")));
        assert!(!is_limit(None));
    }

    #[test]
    fn resources_off_skips() {
        let context = Context::default();
        for probe in [fork_bomb, memory_hog, disk_fill, inode_fill, cpu_hog] {
            let outcome = probe(&context);
            assert_eq!(outcome.verdict, Verdict::NotApplicable);
            assert_eq!(outcome.observation, "resources off");
        }
    }
}
