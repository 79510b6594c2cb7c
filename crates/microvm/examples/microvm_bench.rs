//! The microvm tier against plain QEMU, measured in one run (driven by `bench/microvm.sh`, which
//! builds the inputs and writes `docs/benchmarks-microvm.md` from the JSON this prints):
//!
//! - cold boot to first output: `agentbox run --tier microvm --image IMG -- echo MARKER` against
//!   plain `qemu-system-x86_64` with the same kernel, machine and flags (this crate's
//!   [`VmConfig::args`], no disk) and a trivial initramfs whose `/init` prints a marker and
//!   reboots; runs interleaved, timed to the marker on stdout and to the process's exit;
//! - `Vm::boot` to the agent's hello, through the library (jailed, with its cgroup, as the tier);
//! - exec round trip: `/bin/true` (and `echo`, its output streamed back) in a booted VM through
//!   `Vm::run`, against the transport floor:
//!   one line echoed by the trivial `/init` over the same virtio-serial port (`bench=echo`);
//! - host memory of an idle VM: QEMU's `smaps_rollup` (RSS, PSS) and how much of it is guest
//!   RAM, for both.
//!
//! Root only (jail, cgroups, caches). Usage:
//! `microvm_bench KERNEL AGENT PLAIN_INITRAMFS AGENTBOX_BIN IMAGE_DIR [RUNS] [EXECS]`, or
//! `microvm_bench plain-argv KERNEL PLAIN_INITRAMFS SOCKET` (the plain QEMU's argv, one per line),
//! or `microvm_bench exec-ab KERNEL IMAGE_DIR ROUNDS AGENT...`: one VM per agent binary, the
//! same commands interleaved between them (`echo` and `/bin/true`), each split on the host into
//! request → `started` → first output → `exited`; with `TRACE=1` the agents also get
//! `agentbox.trace` and their per-command timestamps (from the console) are summarised.

use std::error::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agentbox_microvm::qemu::QEMU;
use agentbox_microvm::{disk, initramfs, Accel, Jail, Vm, VmConfig, VmSpec};
use agentbox_protocol::RunRequest;

type Res<T> = Result<T, Box<dyn Error>>;

const MARKER: &str = "AGENTBOX-BENCH-MARKER";
const MEMORY_MIB: u32 = 256;
/// A jail uid far from the runtime's slots (which count up from 0).
const JAIL: u16 = 0xfff0;

struct Inputs {
    kernel: PathBuf,
    agent: PathBuf,
    plain_initramfs: PathBuf,
    agentbox: PathBuf,
    image: PathBuf,
    runs: usize,
    execs: usize,
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [mode, kernel, initramfs, socket] = args.as_slice() {
        if mode == "plain-argv" {
            // For hyperfine: the plain QEMU's argv, one per line.
            println!("{QEMU}");
            let config = plain_config(Path::new(kernel), Path::new(initramfs), socket, false);
            config.args().iter().for_each(|a| println!("{a}"));
            return Ok(());
        }
    }
    if args.first().map(String::as_str) == Some("exec-ab") {
        return exec_ab(&args[1..]);
    }
    if args.len() < 5 {
        return Err("usage: microvm_bench KERNEL AGENT PLAIN_INITRAMFS AGENTBOX_BIN IMAGE_DIR [RUNS] [EXECS]".into());
    }
    let inputs = Inputs {
        kernel: PathBuf::from(&args[0]),
        agent: PathBuf::from(&args[1]),
        plain_initramfs: PathBuf::from(&args[2]),
        agentbox: PathBuf::from(&args[3]),
        image: PathBuf::from(&args[4]),
        runs: args.get(5).map_or(Ok(20), |s| s.parse())?,
        execs: args.get(6).map_or(Ok(200), |s| s.parse())?,
    };
    let work = tempfile::tempdir()?;
    let mut json = Vec::new();

    // Cold boot, interleaved (2 warm-up rounds, not recorded).
    let (mut ab_first, mut ab_exit, mut q_first, mut q_exit) = (vec![], vec![], vec![], vec![]);
    for round in 0..inputs.runs + 2 {
        let (first, exit) = time_to_marker(&mut agentbox_run(&inputs)?)?;
        let (qf, qe) = time_to_marker(&mut plain_qemu(&inputs, work.path(), false)?.0)?;
        if round >= 2 {
            ab_first.push(first);
            ab_exit.push(exit);
            q_first.push(qf);
            q_exit.push(qe);
        }
    }
    json.push(stat("cold_agentbox_first_output", &ab_first));
    json.push(stat("cold_agentbox_exit", &ab_exit));
    json.push(stat("cold_plain_marker", &q_first));
    json.push(stat("cold_plain_exit", &q_exit));

    // The library: boot to hello (jailed, cgroup, overlay), then the exec loop and memory.
    let initrd = initramfs::cached_initramfs(&inputs.agent, Path::new(initramfs::DEFAULT_CACHE))?;
    let base = disk::base_disk(&inputs.image, None, Path::new(disk::DEFAULT_CACHE))?;
    let spec = |n: usize| {
        let mut spec = VmSpec::new(
            &format!("bench-{}-{n}", std::process::id()),
            &inputs.kernel,
            &initrd,
        );
        spec.base_disk = Some(base.clone());
        spec.memory_mib = MEMORY_MIB;
        spec.accel = Accel::Tcg;
        spec.jail = Some(Jail::nth(JAIL));
        spec
    };
    let mut hello = Vec::new();
    for n in 0..inputs.runs.min(10) {
        let mut vm = Vm::boot(spec(n))?;
        hello.push(vm.boot_to_hello());
        let _ = vm.power_off(Duration::from_secs(5));
    }
    json.push(stat("lib_boot_to_hello", &hello));

    let mut vm = Vm::boot(spec(100))?;
    // `/bin/true` and `echo` (its output streamed back) alternate.
    let (mut round_trips, mut echoes) = (Vec::new(), Vec::new());
    for i in 0..inputs.execs + 5 {
        for (argv, samples) in [
            (&["/bin/true"][..], &mut round_trips),
            (&["echo", "hi"][..], &mut echoes),
        ] {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let t = Instant::now();
            let exit = vm.run(request(argv), None, &mut out, &mut err)?;
            let took = t.elapsed();
            if exit.code != Some(0) {
                return Err(format!("{argv:?} in the guest: {exit:?}").into());
            }
            if i >= 5 {
                samples.push(took);
            }
        }
    }
    json.push(stat("exec_agentbox_true", &round_trips));
    json.push(stat("exec_agentbox_echo", &echoes));
    std::thread::sleep(Duration::from_secs(2));
    let pid = vm.qemu_pid().ok_or("QEMU is gone")?;
    json.push(memory("mem_agentbox", pid)?);
    let _ = vm.power_off(Duration::from_secs(5));
    drop(vm);

    // The transport floor: the trivial /init echoes lines on the same port.
    let (mut qemu, socket) = plain_qemu(&inputs, work.path(), true)?;
    let echo = echo_round_trips(&mut qemu, &socket, inputs.execs);
    let idle_memory = echo.as_ref().ok().map(|_| {
        std::thread::sleep(Duration::from_secs(2));
        memory("mem_plain", qemu.id())
    });
    let _ = qemu.kill();
    let _ = qemu.wait();
    json.push(stat("exec_plain_echo", &echo?));
    json.push(idle_memory.ok_or("no memory sample")??);

    println!("{{{}}}", json.join(","));
    Ok(())
}

fn request(argv: &[&str]) -> RunRequest {
    RunRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        cwd: "/".to_string(),
        stdin: false,
        timeout_ms: None,
        uid: None,
        gid: None,
        layered_spec: None,
    }
}

fn agentbox_run(inputs: &Inputs) -> Res<Child> {
    Ok(Command::new(&inputs.agentbox)
        .args(["run", "--tier", "microvm", "--image"])
        .arg(&inputs.image)
        .args(["--", "echo", MARKER])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?)
}

/// Plain QEMU with agentbox's own machine, CPU and flags, the same kernel and command line, no
/// disk, the trivial initramfs, and the serial console on stdout.
fn plain_qemu(inputs: &Inputs, work: &Path, echo: bool) -> Res<(Child, PathBuf)> {
    let socket = work.join(if echo { "echo.sock" } else { "boot.sock" });
    let _ = std::fs::remove_file(&socket);
    let config = plain_config(&inputs.kernel, &inputs.plain_initramfs, &socket, echo);
    let child = Command::new(QEMU)
        .args(config.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    Ok((child, socket))
}

fn plain_config(kernel: &Path, initramfs: &Path, socket: impl AsRef<Path>, echo: bool) -> VmConfig {
    VmConfig {
        kernel: kernel.to_path_buf(),
        initramfs: initramfs.to_path_buf(),
        disk: None,
        tools_disk: None,
        memory_mib: MEMORY_MIB,
        vcpus: 1,
        accel: Accel::Tcg,
        socket: socket.as_ref().to_path_buf(),
        console_log: PathBuf::from("/dev/stdout"),
        extra_cmdline: if echo {
            "bench=echo".into()
        } else {
            String::new()
        },
    }
}

/// (start → the marker on stdout, start → exit). Fails when the marker never comes.
fn time_to_marker(child: &mut Child) -> Res<(Duration, Duration)> {
    let t = Instant::now();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut first = None;
    for line in BufReader::new(stdout).lines() {
        if line?.contains(MARKER) && first.is_none() {
            first = Some(t.elapsed());
        }
    }
    let status = child.wait()?;
    let exit = t.elapsed();
    match first {
        Some(first) if status.success() => Ok((first, exit)),
        _ => Err(format!("no marker (exit status {status})").into()),
    }
}

fn echo_round_trips(qemu: &mut Child, socket: &Path, n: usize) -> Res<Vec<Duration>> {
    // Wait for /init's marker: from then on the guest reads the port.
    let stdout = qemu.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = lines.next().ok_or("the plain guest printed no marker")??;
        if line.contains(MARKER) {
            break;
        }
        if Instant::now() > deadline {
            return Err("the plain guest printed no marker in time".into());
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    // Lines sent before the guest reads may be lost: ping until one comes back.
    let mut line = String::new();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        stream.write_all(b"ping\n")?;
        line.clear();
        if reader.read_line(&mut line).is_ok() && line == "ping\n" {
            break;
        }
        if Instant::now() > until {
            return Err("the plain guest does not echo".into());
        }
    }
    // Drain late duplicates of the pings.
    stream.set_read_timeout(Some(Duration::from_millis(300)))?;
    let mut sink = [0u8; 4096];
    while reader.get_mut().read(&mut sink).is_ok_and(|n| n > 0) {}
    let mut reader = BufReader::new(stream.try_clone()?);
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut times = Vec::new();
    for i in 0..n + 5 {
        let t = Instant::now();
        stream.write_all(b"x\n")?;
        line.clear();
        reader.read_line(&mut line)?;
        if line != "x\n" {
            return Err(format!("echo answered {line:?}").into());
        }
        if i >= 5 {
            times.push(t.elapsed());
        }
    }
    Ok(times)
}

/// `"name":{"n":..,"median_ms":..,"p90_ms":..,"min_ms":..,"max_ms":..}`
fn stat(name: &str, samples: &[Duration]) -> String {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len().max(1));
        ms.get(rank - 1).copied().unwrap_or(f64::NAN)
    };
    let median = if ms.len().is_multiple_of(2) && !ms.is_empty() {
        (ms[ms.len() / 2 - 1] + ms[ms.len() / 2]) / 2.0
    } else {
        at(0.5)
    };
    format!(
        "\"{name}\":{{\"n\":{},\"median_ms\":{median:.3},\"p90_ms\":{:.3},\"min_ms\":{:.3},\"max_ms\":{:.3}}}",
        ms.len(),
        at(0.9),
        at(0.0),
        at(1.0)
    )
}

/// `"name":{"rss_kib":..,"pss_kib":..,"pss_anon_kib":..,"pss_file_kib":..,"guest_ram_rss_kib":..,"guest_ram_kib":..}`:
/// QEMU's `smaps_rollup`, and the resident part of the guest RAM mapping (the anonymous mapping
/// of exactly the guest's size) from `smaps`.
fn memory(name: &str, pid: u32) -> Res<String> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let field = |key: &str| -> u64 {
        rollup
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let guest_kib = u64::from(MEMORY_MIB) * 1024;
    let (mut size, mut guest_rss) = (0, 0);
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        match (
            words.next(),
            words.next().and_then(|v| v.parse::<u64>().ok()),
        ) {
            (Some("Size:"), Some(kib)) => size = kib,
            (Some("Rss:"), Some(kib)) if size == guest_kib => guest_rss += kib,
            _ => {}
        }
    }
    Ok(format!(
        "\"{name}\":{{\"rss_kib\":{},\"pss_kib\":{},\"pss_anon_kib\":{},\"pss_file_kib\":{},\"guest_ram_rss_kib\":{guest_rss},\"guest_ram_kib\":{guest_kib}}}",
        field("Rss:"),
        field("Pss:"),
        field("Pss_Anon:"),
        field("Pss_File:"),
    ))
}

/// `exec-ab KERNEL IMAGE_DIR ROUNDS AGENT...`: see the module doc.
fn exec_ab(args: &[String]) -> Res<()> {
    let [kernel, image, rounds, agents @ ..] = args else {
        return Err("usage: microvm_bench exec-ab KERNEL IMAGE_DIR ROUNDS AGENT...".into());
    };
    let rounds: usize = rounds.parse()?;
    let trace = std::env::var_os("TRACE").is_some_and(|v| v == "1");
    let base = disk::base_disk(Path::new(image), None, Path::new(disk::DEFAULT_CACHE))?;
    let mut vms = Vec::new();
    for (n, agent) in agents.iter().enumerate() {
        let initrd =
            initramfs::cached_initramfs(Path::new(agent), Path::new(initramfs::DEFAULT_CACHE))?;
        let mut spec = VmSpec::new(
            &format!("bench-ab-{}-{n}", std::process::id()),
            Path::new(kernel),
            &initrd,
        );
        spec.base_disk = Some(base.clone());
        spec.memory_mib = MEMORY_MIB;
        spec.accel = Accel::Tcg;
        spec.jail = Some(Jail::nth(JAIL + n as u16));
        if trace {
            spec.extra_cmdline = "agentbox.trace".into();
        }
        vms.push(Vm::boot(spec)?);
    }
    // Per agent: [echo started, echo first output, echo exited, true exited].
    let mut samples = vec![[const { Vec::new() }; 4]; vms.len()];
    for round in 0..rounds + 5 {
        for (vm, samples) in vms.iter_mut().zip(samples.iter_mut()) {
            let split = split_round_trip(vm, &["echo", "hi"])?;
            let t = Instant::now();
            let exit = vm.run(
                request(&["/bin/true"]),
                None,
                &mut Vec::new(),
                &mut Vec::new(),
            )?;
            let took = t.elapsed();
            if exit.code != Some(0) {
                return Err(format!("/bin/true in the guest: {exit:?}").into());
            }
            if round >= 5 {
                for (i, d) in split.into_iter().chain([took]).enumerate() {
                    samples[i].push(d);
                }
            }
        }
    }
    let names = [
        "echo: started",
        "echo: first output",
        "echo: exited",
        "true: exited",
    ];
    for ((agent, samples), vm) in agents.iter().zip(&samples).zip(&mut vms) {
        println!("{agent}");
        for (name, s) in names.iter().zip(samples) {
            println!("  {}", stat(name, s));
        }
        if trace {
            let log = std::fs::read_to_string(vm.state_dir().join("console.log"))?;
            summarise_trace(&log);
        }
        let _ = vm.power_off(Duration::from_secs(5));
    }
    Ok(())
}

/// Runs `argv` and times, from sending the request: `started`, the first stdout, `exited`.
fn split_round_trip(vm: &mut Vm, argv: &[&str]) -> Res<[Duration; 3]> {
    use agentbox_protocol::{DataKind, Frame, Reply};
    let t = Instant::now();
    let client = vm.client()?;
    let id = client.spawn(request(argv))?;
    let (mut started, mut first) = (None, None);
    loop {
        match client.next_frame()? {
            Frame::Control(Reply::Started { id: i, .. }) if i == id => {
                started = Some(t.elapsed());
            }
            Frame::Data {
                kind: DataKind::Stdout,
                id: i,
                ..
            } if i == id => {
                first.get_or_insert(t.elapsed());
            }
            Frame::Control(Reply::Exited { id: i, exit }) if i == id => {
                let exited = t.elapsed();
                if exit.code != Some(0) {
                    return Err(format!("{argv:?} in the guest: {exit:?}").into());
                }
                return Ok([
                    started.ok_or("no started")?,
                    first.ok_or("no output")?,
                    exited,
                ]);
            }
            other => return Err(format!("unexpected frame {other:?}").into()),
        }
    }
}

/// Medians of the agent's `trace` lines (`agentbox-guest: trace KEY=US ...`) from its console.
fn summarise_trace(log: &str) {
    let mut keys: Vec<(String, Vec<Duration>)> = Vec::new();
    for line in log.lines() {
        let Some(rest) = line.split("agentbox-guest: trace ").nth(1) else {
            continue;
        };
        for word in rest.split_whitespace() {
            let Some((key, us)) = word.split_once('=') else {
                continue;
            };
            let Ok(us) = us.parse::<u64>() else { continue };
            let d = Duration::from_micros(us);
            match keys.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => v.push(d),
                None => keys.push((key.to_string(), vec![d])),
            }
        }
    }
    for (key, samples) in &keys {
        println!("  guest {}", stat(key, samples));
    }
}
