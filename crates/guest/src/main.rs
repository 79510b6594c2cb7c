//! `agentbox-guest`: the microVM guest agent. As PID 1 (`/init` of the guest's initramfs) it
//! mounts the pseudo-filesystems, switches into the root disk when the kernel command line names
//! one, opens the virtio-serial channel and serves the host forever; it must never exit, so every
//! failure ends in a reboot (which ends QEMU, started with `-no-reboot`). As any other process it
//! serves `--channel PATH` (a unix socket to connect to, or a character device or FIFO) without
//! touching the system, for tests; `--tools DIR` names the directory holding `agentbox` for
//! layered requests (as PID 1: the tools disk).

mod boot;
mod commands;
mod files;
mod launch;
mod serve;
mod sink;
mod trace;

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use commands::Commands;
use serve::{Agent, Stopped};
use sink::Sink;

const USAGE: &str = "usage: agentbox-guest --channel PATH [--tools DIR]   (as PID 1: configured by the kernel command line)";

type Channel = (Box<dyn Read + Send>, Sink);

/// Opens the channel: a unix socket is connected to; anything else (a virtio-serial port, a
/// FIFO) is opened read-write.
fn open_channel(path: &Path) -> std::io::Result<Channel> {
    let meta = std::fs::metadata(path)?;
    if meta.file_type().is_socket() {
        let stream = UnixStream::connect(path)?;
        let writer = stream.try_clone()?;
        Ok((Box::new(stream), Sink::new(Box::new(writer))))
    } else {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let writer = file.try_clone()?;
        Ok((Box::new(file), Sink::new(Box::new(writer))))
    }
}

fn main() {
    if std::process::id() == 1 {
        run_as_init();
    }
    if std::env::var_os("AGENTBOX_GUEST_TRACE").is_some_and(|v| v == "1") {
        trace::enable();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (channel, tools) = match args.as_slice() {
        [flag, path] if flag == "--channel" => (PathBuf::from(path), None),
        [flag, path, tools_flag, tools] if flag == "--channel" && tools_flag == "--tools" => {
            (PathBuf::from(path), Some(PathBuf::from(tools)))
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let commands = Commands::new(tools).unwrap_or_else(|e| {
        eprintln!("agentbox-guest: starting the command threads: {e}");
        std::process::exit(1);
    });
    let agent = Agent {
        pid1: false,
        commands,
    };
    let code = match open_channel(&channel) {
        Ok((mut reader, sink)) => match agent.serve(&mut reader, &sink, true) {
            Ok(_) => 0,
            Err(e) => {
                eprintln!("agentbox-guest: reading {}: {e}", channel.display());
                1
            }
        },
        Err(e) => {
            eprintln!("agentbox-guest: opening {}: {e}", channel.display());
            1
        }
    };
    agent.commands.kill_all();
    std::process::exit(code);
}

/// PID 1: set up, then serve until power-off. Never returns.
fn run_as_init() -> ! {
    if let Err(e) = boot::mount_pseudo_filesystems() {
        eprintln!("agentbox-guest: mounting the pseudo-filesystems: {e}");
        power_off();
    }
    // Without cgroup v2 the agent still serves; layered commands then fail in the ns tier's own
    // cgroup detection (fail closed there).
    if let Err(e) = boot::mount_cgroup2() {
        eprintln!("agentbox-guest: mounting cgroup2: {e}");
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let config = boot::parse_cmdline(&cmdline);
    if cmdline.split_whitespace().any(|w| w == "agentbox.trace") {
        trace::enable();
    }
    if let Some(device) = &config.root {
        if let Err(e) = boot::switch_to_root_disk(&config, device) {
            eprintln!(
                "agentbox-guest: switching to the root disk {}: {e}",
                device.display()
            );
            power_off();
        }
    }
    // A tools disk that fails to mount only disables layered mode (its requests are refused).
    let tools = config
        .tools
        .as_deref()
        .and_then(|device| match boot::mount_tools(device) {
            Ok(dir) => Some(dir),
            Err(e) => {
                eprintln!(
                    "agentbox-guest: mounting the tools disk {}: {e}",
                    device.display()
                );
                None
            }
        });
    std::env::set_var(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    let commands = Commands::new(tools).unwrap_or_else(|e| {
        eprintln!("agentbox-guest: starting the command threads: {e}");
        power_off();
    });
    let agent = Agent {
        pid1: true,
        commands,
    };
    // The port appears when the virtio-serial driver has probed it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut reader, sink) = loop {
        match open_channel(&config.channel) {
            Ok(channel) => break channel,
            Err(e) if Instant::now() > deadline => {
                eprintln!("agentbox-guest: opening {}: {e}", config.channel.display());
                power_off();
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let mut hello = true;
    loop {
        let served = agent.serve(&mut reader, &sink, hello);
        hello = false;
        match served {
            Ok(Stopped::PowerOff) => {
                agent.commands.kill_all();
                power_off();
            }
            // No host connected (a virtio-serial port reads as ended): wait for one. A host
            // that connects sends a sync frame and gets a fresh hello.
            Ok(Stopped::ChannelClosed) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => {
                eprintln!("agentbox-guest: reading {}: {e}", config.channel.display());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Syncs and reboots: with `reboot=t` and QEMU's `-no-reboot`, the VM ends.
fn power_off() -> ! {
    agentbox_sys::guest::sync_all();
    let e = agentbox_sys::guest::reboot_now();
    eprintln!("agentbox-guest: {e}");
    // PID 1 must not exit (the kernel would panic); wait for the host to kill the VM.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
