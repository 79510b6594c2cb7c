//! The QEMU command line for one microVM (pure: builds argv, runs nothing).

use std::path::PathBuf;

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// The kernel command line every guest gets (before `agentbox.*` words and `extra_cmdline`).
pub const BASE_CMDLINE: &str = "console=ttyS0 quiet panic=-1 reboot=t tsc=reliable no_timer_check \
noapictimer lpj=8400000 8250.nr_uarts=1 random.trust_cpu=1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The root disk as QEMU sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disk {
    /// A qcow2 overlay (its backing file is the read-only base).
    Qcow2(PathBuf),
    /// A raw image opened with `snapshot=on`: QEMU keeps the writes in a temporary qcow2 of its
    /// own (in `$TMPDIR`), the image itself is never written. Used when `qemu-img` is missing.
    RawSnapshot(PathBuf),
    /// A raw image opened read-only (the guest mounts it read-only anyway).
    RawReadOnly(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// The root disk; `None` runs from the initramfs only.
    pub disk: Option<Disk>,
    /// The tools disk (see [`crate::disk::tools_disk`]): attached read-only after the root disk,
    /// named to the agent by `agentbox.tools=` (layered mode).
    pub tools_disk: Option<PathBuf>,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub accel: Accel,
    /// The agent channel's unix socket (QEMU is the server).
    pub socket: PathBuf,
    /// The guest's serial console goes here.
    pub console_log: PathBuf,
    /// Appended to the kernel command line.
    pub extra_cmdline: String,
}

impl VmConfig {
    /// The kernel command line.
    pub fn cmdline(&self) -> String {
        let mut line = BASE_CMDLINE.to_string();
        if self.disk.is_some() {
            line.push_str(" agentbox.root=/dev/vda");
        }
        if self.tools_disk.is_some() {
            // virtio-blk disks are named in the order of their -device arguments (checked by
            // tests/layered.rs with a root disk: the tools disk is /dev/vdb).
            let name = if self.disk.is_some() { "vdb" } else { "vda" };
            line.push_str(&format!(" agentbox.tools=/dev/{name}"));
        }
        if !self.extra_cmdline.trim().is_empty() {
            line.push(' ');
            line.push_str(self.extra_cmdline.trim());
        }
        line
    }

    /// QEMU's arguments (without the program name).
    pub fn args(&self) -> Vec<String> {
        let machine = "microvm,x-option-roms=off,isa-serial=on,acpi=off,rtc=on";
        let mut args: Vec<String> = [
            "-M",
            machine,
            "-accel",
            match self.accel {
                Accel::Kvm => "kvm",
                // TCG's translation cache: QEMU's default on a large host is a 1 GiB mapping,
                // flushed only when full; 128 MiB bounds it (see cgroup::QEMU_OVERHEAD_MIB).
                Accel::Tcg => "tcg,tb-size=128",
            },
            "-cpu",
            match self.accel {
                Accel::Kvm => "host",
                Accel::Tcg => "max",
            },
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut push = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));
        let mem = format!("{}M", self.memory_mib);
        let smp = self.vcpus.max(1).to_string();
        push(&["-m", &mem, "-smp", &smp]);
        push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
        push(&["-kernel", &path(&self.kernel)]);
        push(&["-initrd", &path(&self.initramfs)]);
        push(&["-append", &self.cmdline()]);
        push(&["-serial", &format!("file:{}", path(&self.console_log))]);
        push(&["-device", "virtio-serial-device"]);
        push(&[
            "-chardev",
            &format!(
                "socket,id=agent,path={},server=on,wait=off",
                opt_escape(&path(&self.socket))
            ),
        ]);
        push(&["-device", "virtserialport,chardev=agent,name=agent"]);
        if let Some(disk) = &self.disk {
            let drive = match disk {
                Disk::Qcow2(p) => format!(
                    "id=root,file={},format=qcow2,if=none,discard=unmap",
                    opt_escape(&path(p))
                ),
                Disk::RawSnapshot(p) => format!(
                    "id=root,file={},format=raw,if=none,snapshot=on",
                    opt_escape(&path(p))
                ),
                Disk::RawReadOnly(p) => format!(
                    "id=root,file={},format=raw,if=none,read-only=on",
                    opt_escape(&path(p))
                ),
            };
            push(&["-drive", &drive]);
            push(&["-device", "virtio-blk-device,drive=root"]);
        }
        if let Some(tools) = &self.tools_disk {
            let drive = format!(
                "id=tools,file={},format=raw,if=none,read-only=on",
                opt_escape(&path(tools))
            );
            push(&["-drive", &drive]);
            push(&["-device", "virtio-blk-device,drive=tools"]);
        }
        push(&[
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        ]);
        args
    }
}

fn path(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

/// QEMU option values escape `,` by doubling it.
fn opt_escape(s: &str) -> String {
    s.replace(',', ",,")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn config() -> VmConfig {
        VmConfig {
            kernel: "/k/vmlinux".into(),
            initramfs: "/c/init.cpio".into(),
            disk: Some(Disk::Qcow2("/run/vm/overlay.qcow2".into())),
            tools_disk: None,
            memory_mib: 256,
            vcpus: 1,
            accel: Accel::Tcg,
            socket: "/run/vm/agent.sock".into(),
            console_log: "/run/vm/console.log".into(),
            extra_cmdline: "agentbox.disk=1000".into(),
        }
    }

    fn value_of(args: &[String], flag: &str) -> Vec<String> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }

    #[test]
    fn builds_the_measured_recipe() {
        let args = config().args();
        assert_eq!(
            value_of(&args, "-M"),
            ["microvm,x-option-roms=off,isa-serial=on,acpi=off,rtc=on"]
        );
        assert_eq!(value_of(&args, "-accel"), ["tcg,tb-size=128"]);
        assert_eq!(value_of(&args, "-cpu"), ["max"]);
        assert_eq!(value_of(&args, "-m"), ["256M"]);
        assert_eq!(value_of(&args, "-smp"), ["1"]);
        for flag in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
            assert!(args.iter().any(|a| a == flag), "{flag}");
        }
        assert_eq!(value_of(&args, "-kernel"), ["/k/vmlinux"]);
        assert_eq!(value_of(&args, "-initrd"), ["/c/init.cpio"]);
        assert_eq!(
            value_of(&args, "-append"),
            [format!(
                "{BASE_CMDLINE} agentbox.root=/dev/vda agentbox.disk=1000"
            )]
        );
        assert_eq!(value_of(&args, "-serial"), ["file:/run/vm/console.log"]);
        assert_eq!(
            value_of(&args, "-chardev"),
            ["socket,id=agent,path=/run/vm/agent.sock,server=on,wait=off"]
        );
        assert_eq!(
            value_of(&args, "-device"),
            [
                "virtio-serial-device",
                "virtserialport,chardev=agent,name=agent",
                "virtio-blk-device,drive=root"
            ]
        );
        assert_eq!(
            value_of(&args, "-drive"),
            ["id=root,file=/run/vm/overlay.qcow2,format=qcow2,if=none,discard=unmap"]
        );
        assert_eq!(
            value_of(&args, "-sandbox"),
            ["on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]
        );
    }

    #[test]
    fn kvm_uses_the_host_cpu_and_no_disk_means_no_root() {
        let mut c = config();
        c.accel = Accel::Kvm;
        c.disk = None;
        c.extra_cmdline = String::new();
        let args = c.args();
        assert_eq!(value_of(&args, "-accel"), ["kvm"]);
        assert_eq!(value_of(&args, "-cpu"), ["host"]);
        assert!(value_of(&args, "-drive").is_empty());
        assert_eq!(value_of(&args, "-append"), [BASE_CMDLINE]);
    }

    #[test]
    fn tools_disk_is_read_only_after_the_root_and_named_on_the_cmdline() {
        let mut c = config();
        c.tools_disk = Some("/c/tools-1,2.ext4".into());
        let args = c.args();
        assert_eq!(
            value_of(&args, "-drive"),
            [
                "id=root,file=/run/vm/overlay.qcow2,format=qcow2,if=none,discard=unmap",
                "id=tools,file=/c/tools-1,,2.ext4,format=raw,if=none,read-only=on"
            ]
        );
        assert_eq!(
            value_of(&args, "-device")[2..],
            [
                "virtio-blk-device,drive=root",
                "virtio-blk-device,drive=tools"
            ]
        );
        assert_eq!(
            value_of(&args, "-append"),
            [format!(
                "{BASE_CMDLINE} agentbox.root=/dev/vda agentbox.tools=/dev/vdb agentbox.disk=1000"
            )]
        );
        c.disk = None;
        assert!(c.cmdline().contains(" agentbox.tools=/dev/vda"));
        assert!(!c.cmdline().contains("agentbox.root"));
    }

    #[test]
    fn commas_in_paths_are_escaped_and_snapshot_disks_work() {
        let mut c = config();
        c.socket = "/run/a,b/agent.sock".into();
        c.disk = Some(Disk::RawSnapshot("/d/base.ext4".into()));
        let args = c.args();
        assert_eq!(
            value_of(&args, "-chardev"),
            ["socket,id=agent,path=/run/a,,b/agent.sock,server=on,wait=off"]
        );
        assert_eq!(
            value_of(&args, "-drive"),
            ["id=root,file=/d/base.ext4,format=raw,if=none,snapshot=on"]
        );
    }
}
