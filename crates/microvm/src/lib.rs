//! agentbox's `microvm` tier: QEMU `-M microvm` boots agentbox's own guest kernel with the guest
//! agent (`agentbox-guest`) as PID 1 of an initramfs; the agent mounts the sandbox's root disk
//! (a per-VM qcow2 overlay over a cached read-only ext4 base) and serves the host over a
//! virtio-serial port that QEMU exposes as a unix socket.
//!
//! - [`initramfs`]: the cpio "newc" archive (`/init` = the agent), cached by the agent's sha256;
//! - [`disk`]: image directory → cached read-only ext4 base → per-VM overlay; the read-only tools
//!   disk holding `agentbox` for layered (`microvm+ns`) requests;
//! - [`qemu`]: the QEMU argv (pure);
//! - [`accel`]: KVM or TCG, probed once and cached;
//! - [`cgroup`]: the jailed QEMU's own cgroup (memory, pids, CPU limits), v1 or v2;
//! - [`vm`]: a running VM: boot, run commands, power off, cleanup on drop.

pub mod accel;
pub mod cgroup;
pub mod disk;
pub mod initramfs;
pub mod qemu;
pub mod vm;

pub use qemu::{Accel, Disk, VmConfig};
pub use vm::{Jail, Vm, VmError, VmSpec};

/// The guest kernel built by `scripts/build-guest-kernel.sh`.
pub const DEFAULT_KERNEL: &str = "/var/cache/agentbox/kernel/current/vmlinux";
