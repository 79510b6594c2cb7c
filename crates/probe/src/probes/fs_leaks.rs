//! What the sandbox shows of its host: hostname, boot id, host paths in the mount table; and
//! whether the host's loopback listener is reachable. Nothing is sent but one TCP connect to the
//! listener the harness named, and only to a loopback address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use agentbox_sys::attempt_fs;

use super::errno;
use super::kernel_env::unescape;
use crate::{Context, Outcome, Verdict};

pub(super) fn leak_hostname(context: &Context) -> Outcome {
    const ID: &str = "leak_hostname";
    let attempted = "uname() nodename compared with the host's hostname";
    if context.host_hostname.is_empty() {
        return Outcome::new(ID, Verdict::NotApplicable, attempted)
            .observed("no host_hostname given");
    }
    match attempt_fs::nodename() {
        Err(e) => Outcome::new(ID, Verdict::Blocked, attempted)
            .errno(errno::of_sys(&e))
            .observed("uname failed"),
        Ok(name) if name == context.host_hostname => Outcome::new(ID, Verdict::Escaped, attempted)
            .observed("the sandbox's hostname is the host's")
            .evidence(name),
        Ok(name) => Outcome::new(ID, Verdict::Blocked, attempted)
            .observed(format!("hostname {name:?} differs from the host's")),
    }
}

pub(super) fn leak_boot_id(context: &Context) -> Outcome {
    const ID: &str = "leak_boot_id";
    let attempted = "read /proc/sys/kernel/random/boot_id and compare with the host's";
    if context.host_boot_id.is_empty() {
        return Outcome::new(ID, Verdict::NotApplicable, attempted)
            .observed("no host_boot_id given");
    }
    match std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        Err(e) => Outcome::new(ID, Verdict::Blocked, attempted)
            .errno(errno::of_io(&e))
            .observed("the boot id is not readable"),
        Ok(id) if id.trim() == context.host_boot_id.trim() => {
            Outcome::new(ID, Verdict::Escaped, attempted)
                .observed("the boot id is the host's (a shared kernel)")
                .evidence(id.trim())
        }
        Ok(id) => Outcome::new(ID, Verdict::Blocked, attempted)
            .observed(format!("boot id {} differs from the host's", id.trim())),
    }
}

/// Whether `path` is `host` or lies under it.
fn under(path: &str, host: &str) -> bool {
    let host = host.trim_end_matches('/');
    !host.is_empty()
        && (path == host
            || path
                .strip_prefix(host)
                .is_some_and(|rest| rest.starts_with('/')))
}

/// The mountinfo lines whose root (field 4) or mount point (field 5) is one of `host_paths` or
/// lies under one.
fn leaking_lines<'a>(mountinfo: &'a str, host_paths: &[String]) -> Vec<&'a str> {
    mountinfo
        .lines()
        .filter(|line| {
            let mut fields = line.split(' ').skip(3);
            let (Some(root), Some(point)) = (fields.next(), fields.next()) else {
                return false;
            };
            let (root, point) = (unescape(root), unescape(point));
            host_paths
                .iter()
                .any(|host| under(&root, host) || under(&point, host))
        })
        .collect()
}

pub(super) fn leak_mounts(context: &Context) -> Outcome {
    const ID: &str = "leak_mounts";
    let attempted = "look for host_paths as mount roots or mount points in /proc/self/mountinfo";
    if context
        .host_paths
        .iter()
        .all(|p| p.trim_end_matches('/').is_empty())
    {
        return Outcome::new(ID, Verdict::NotApplicable, attempted).observed("no host_paths given");
    }
    let mountinfo = match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(m) => m,
        Err(e) => {
            return Outcome::new(ID, Verdict::Blocked, attempted)
                .errno(errno::of_io(&e))
                .observed("/proc/self/mountinfo is not readable");
        }
    };
    let lines = leaking_lines(&mountinfo, &context.host_paths);
    if lines.is_empty() {
        return Outcome::new(ID, Verdict::Blocked, attempted).observed(format!(
            "no host path among {} mounts",
            mountinfo.lines().count()
        ));
    }
    Outcome::new(ID, Verdict::Escaped, attempted)
        .observed(format!("{} mount(s) show host paths", lines.len()))
        .evidence(lines.join("\n"))
}

/// The listener's address, if it is a loopback one (`127.0.0.1:9`, `[::1]:9`, `localhost:9`).
fn loopback_address(listener: &str) -> Option<SocketAddr> {
    let address = match listener.strip_prefix("localhost:") {
        Some(port) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port.parse().ok()?),
        None => listener.parse().ok()?,
    };
    address.ip().is_loopback().then_some(address)
}

pub(super) fn net_loopback(context: &Context) -> Outcome {
    const ID: &str = "net_loopback";
    let attempted = "TCP connect to the host's loopback listener (1 s timeout), nothing sent";
    let Some(listener) = context.listener.as_deref().filter(|l| !l.is_empty()) else {
        return Outcome::new(ID, Verdict::NotApplicable, attempted).observed("no listener given");
    };
    let Some(address) = loopback_address(listener) else {
        return Outcome::new(ID, Verdict::NotApplicable, attempted).observed(format!(
            "listener {listener:?} is not a loopback address: not tried"
        ));
    };
    match TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
        Ok(stream) => {
            drop(stream);
            Outcome::new(ID, Verdict::Escaped, attempted)
                .observed(format!("connected to {address}"))
        }
        Err(e) => Outcome::new(ID, Verdict::Blocked, attempted)
            .errno(errno::of_io(&e))
            .observed(format!("cannot connect to {address}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_fields() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/end\"), r"/end\");
        assert_eq!(unescape(r"/x\04"), r"/x\04");
    }

    #[test]
    fn paths_under_host_paths() {
        assert!(under("/work", "/work"));
        assert!(under("/work/main", "/work/"));
        assert!(!under("/workshop", "/work"));
        assert!(!under("/anything", "/"));
        assert!(!under("/anything", ""));
    }

    #[test]
    fn finds_leaking_mount_lines() {
        let mountinfo = "\
22 1 0:21 / / rw - tmpfs tmpfs rw
23 22 254:0 /work/main/target/agentbox /opt/probe ro - ext4 /dev/vda ro
24 22 0:22 / /proc rw - proc proc rw
25 22 254:0 /srv /work\\040dir rw - ext4 /dev/vda rw
";
        let hosts = vec!["/work".to_string()];
        let lines = leaking_lines(mountinfo, &hosts);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("23 "));
        let hosts = vec!["/work dir".to_string()];
        assert_eq!(leaking_lines(mountinfo, &hosts).len(), 1);
        assert!(leaking_lines(mountinfo, &["/".to_string()]).is_empty());
    }

    #[test]
    fn only_loopback_listeners() {
        assert_eq!(
            loopback_address("127.0.0.1:8080"),
            Some(SocketAddr::from(([127, 0, 0, 1], 8080)))
        );
        assert!(loopback_address("[::1]:80").is_some());
        assert!(loopback_address("localhost:9").is_some());
        assert_eq!(loopback_address("10.0.0.1:80"), None);
        assert_eq!(loopback_address("example.com:80"), None);
        assert_eq!(loopback_address("127.0.0.1"), None);
    }
}
