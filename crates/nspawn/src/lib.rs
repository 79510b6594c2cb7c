//! agentbox's `nspawn` tier: a [`Sandbox`](agentbox_oci::Sandbox) description translated into
//! systemd-nspawn's flags ([`args`], pure) and run ([`run`]). It owns the translation, the start,
//! the timeout and the clean-up of what nspawn leaves behind; it never prepares the root file
//! system (the runtime's job), never creates cgroups (the caller places nspawn in one) and never
//! weakens a field: what it cannot enforce is refused by [`check`] or by [`run`].
//!
//! nspawn runs here without a systemd manager (PID 1 is not systemd, no system bus), which it
//! accepts only with `--keep-unit --register=no`: it then stays in the caller's cgroup and registers
//! no machine.
//!
//! # Field by field
//!
//! | policy field | how |
//! |---|---|
//! | `image`, `mounts` | the prepared `rootfs` as `--directory` (writable: the runtime's ephemeral overlay, so no `--read-only`/`--ephemeral`), its ownership shifted by an idmapped mount (`--private-users-ownership=map`); binds as `--bind`/`--bind-ro` with `:idmap` (host uid 0 is uid 0 inside, as in the `ns` tier); tmpfs as `--tmpfs=PATH:mode=..,size=..`. `:` and `\` in paths are escaped as nspawn parses them. |
//! | `network.mode` | `none`: `--private-network` (loopback only). `allow` and `open`: **refused** (no veth or proxy plumbing for nspawn without networkd). |
//! | `limits.memory`, `limits.cpus`, `limits.pids` | **the caller** ([`caller_enforces`]): `--property=` needs a systemd manager; with `--keep-unit` nspawn and the container stay in the cgroup the caller made. |
//! | `limits.disk` | the caller (the size of the rootfs overlay's upper layer). |
//! | `limits.nofile` | `--rlimit=NOFILE=n` (soft and hard). |
//! | `limits.timeout` | [`run`]: SIGKILL of the container's init (the whole PID namespace dies), then of nspawn. |
//! | `limits.fuel` | refused when insisted on (a wasm-only budget). |
//! | `user` | uid 0: nspawn's default. Another uid: `--user=<uid>`, which nspawn resolves with `getent` *inside* the container, so [`run`] refuses (`user`) a uid that the sandbox's `/etc/passwd` does not list. The gid is the passwd entry's, not necessarily equal to the uid. |
//! | `cwd`, `env` | `--chdir`, `--setenv`; see [`Launch`] for nspawn's own variables. |
//!
//! Always: a private user namespace on `sandbox.uid_range` (`--private-users=start:count`),
//! no capabilities at all (`--drop-capability=all`: CapEff, CapPrm and CapBnd are 0 inside),
//! `--no-new-privileges=yes`, a PID namespace with nspawn's stub init as PID 1 (`--as-pid2`), the
//! caller's stdio as the payload's (`--console=pipe`), no journal link, no resolv.conf or timezone
//! copied in, and agentbox's seccomp allowlist narrowed into nspawn's filter (see [`seccomp`]).
//!
//! What nspawn needs from the root and leaves behind: it refuses a directory without `/usr`
//! ("not an OS tree"; no os-release is needed without `--boot`), so [`run`] creates an empty
//! `/usr` when the root has none (the `host` image's comes from a bind). It creates its mount
//! points (`/dev`, `/proc`, `/run`, `/sys`, `/tmp`, `/var`, `/root`, bind targets) in the root,
//! which is the caller's ephemeral overlay. Under `/run/systemd/nspawn/` it removes its own lock
//! and propagation directory, but prints "Attempted to remove disk file system under
//! /run/systemd/nspawn/propagate/..." on every exit because `/run` is not a tmpfs here (harmless).
//! In the name=systemd and unified cgroup hierarchies it makes `payload` and `supervisor` under
//! its own cgroup; [`run`] removes them unless that cgroup is the root (shared by every nspawn
//! started there, so removing could race with another start).

mod base_filter;
mod check;
mod command;
mod launch;
pub mod seccomp;
mod view;

#[cfg(test)]
mod command_tests;
#[cfg(test)]
mod view_tests;

pub use check::{caller_enforces, check, probe};
pub use command::{args, Launch};
pub use launch::{run, survivors};

/// The engine's name in errors and reports.
pub const ENGINE: &str = "nspawn";
/// The binary this crate drives.
pub const BINARY: &str = "systemd-nspawn";
