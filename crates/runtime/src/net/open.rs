//! `open` mode: a veth pair between the sandbox's network namespace (`eth0`) and the host's
//! (`abv<slot>`), a /30 of 10.201.0.0/16 per uid slot, NAT to whatever route the host uses, and one
//! nftables table per sandbox (`inet agentbox_<slot>`) that drops, from the sandbox:
//! every packet to the host itself (its loopback, the agentbox API, any host address), private,
//! shared, link-local (cloud metadata included) and multicast destinations unless a policy CIDR
//! allows them, spoofed sources, and all IPv6; and every connection into the sandbox. The host's
//! non-loopback DNS servers (from /etc/resolv.conf) stay reachable on port 53.
//!
//! Configured with `ip` and `nft` (iproute2, nftables); the table and the veth are deleted when the
//! sandbox ends, and `agentbox gc` deletes those of a supervisor that died.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};

use agentbox_policy::net::Cidr;

use crate::RunError;

/// IPv4 forwarding switch: NAT needs it, and agentbox does not change it behind the host's back.
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Destinations dropped unless a CIDR of the policy allows them.
const DROPPED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/3",
];

/// The addresses of slot `index`: the host end (gateway) and the sandbox's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenAddresses {
    pub gateway: Ipv4Addr,
    pub sandbox: Ipv4Addr,
}

impl OpenAddresses {
    pub fn of_slot(index: u32) -> OpenAddresses {
        let base = u32::from(Ipv4Addr::new(10, 201, 0, 0)) + index * 4;
        OpenAddresses {
            gateway: Ipv4Addr::from(base + 1),
            sandbox: Ipv4Addr::from(base + 2),
        }
    }
}

fn host_interface(index: u32) -> String {
    format!("abv{index}")
}

fn table(index: u32) -> String {
    format!("agentbox_{index}")
}

pub(super) fn precheck(tier: &'static str) -> Result<(), RunError> {
    let unenforceable = |reason: String| RunError::Unenforceable {
        tier,
        field: "network.mode",
        reason,
    };
    let forwarding = std::fs::read_to_string(IP_FORWARD).unwrap_or_default();
    if forwarding.trim() != "1" {
        return Err(unenforceable(format!(
            "open needs NAT, and this host does not forward IPv4 ({IP_FORWARD} is {}); enable it \
             with `sysctl -w net.ipv4.ip_forward=1`, or use --net allow:NAME",
            forwarding.trim()
        )));
    }
    for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        if find_tool(tool).is_none() {
            return Err(unenforceable(format!(
                "open needs `{tool}`, which is not installed (apt-get install {package})"
            )));
        }
    }
    Ok(())
}

fn find_tool(name: &str) -> Option<std::path::PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|dir| std::path::Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// Starts `tool args...` with `input` on stdin (tools run side by side where they can).
fn spawn_tool(step: &str, tool: &str, args: &[&str], input: &str) -> Result<Child, RunError> {
    let path = find_tool(tool).ok_or_else(|| RunError::setup(step, format!("{tool} not found")))?;
    let mut child = Command::new(path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RunError::setup(step, format!("{tool}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| RunError::setup(step, format!("{tool}: {e}")))?;
    }
    Ok(child)
}

/// Waits for a tool started by `spawn_tool`; its stderr becomes the error.
fn finish_tool(step: &str, child: Child) -> Result<(), RunError> {
    let out = child
        .wait_with_output()
        .map_err(|e| RunError::setup(step, e))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(RunError::setup(
            step,
            err.split_whitespace().collect::<Vec<_>>().join(" "),
        ))
    }
}

fn run_tool(step: &str, tool: &str, args: &[&str], input: &str) -> Result<(), RunError> {
    finish_tool(step, spawn_tool(step, tool, args, input)?)
}

/// Marks a slot whose table exists: a supervisor killed with -9 leaves it behind, and the next
/// sandbox of the slot must replace that table rather than add to it.
fn marker(index: u32) -> std::path::PathBuf {
    std::path::Path::new(MARKERS).join(index.to_string())
}

const MARKERS: &str = "/run/agentbox/net";

/// The veth and nftables table of one sandbox.
#[derive(Debug)]
pub(crate) struct OpenNet {
    index: u32,
}

impl OpenNet {
    /// Deletes the table and the veth (deleting one end deletes the pair at once, instead of when
    /// the kernel gets round to destroying the namespace).
    pub(crate) fn remove(self) -> Result<(), RunError> {
        remove_slot(self.index)
    }
}

fn remove_slot(index: u32) -> Result<(), RunError> {
    let ifname = host_interface(index);
    // Deleting a table and a link each wait for the kernel's RCU grace period: side by side.
    let table = spawn_tool(
        "network: remove firewall table",
        "nft",
        &["-f", "-"],
        &format!(
            "add table inet {t}\ndelete table inet {t}\n",
            t = table(index)
        ),
    );
    let link = std::path::Path::new("/sys/class/net").join(&ifname);
    let mut result = Ok(());
    if link.exists() {
        // The kernel deletes the pair by itself once the sandbox's namespace is gone, which may
        // happen between the check and the delete.
        let deleted = run_tool("network: remove veth", "ip", &["link", "del", &ifname], "");
        if link.exists() {
            result = deleted;
        }
    }
    crate::timing::mark("network: veth removed");
    let table = table.and_then(|t| finish_tool("network: remove firewall table", t));
    crate::timing::mark("network: table removed");
    if table.is_ok() {
        let _ = std::fs::remove_file(marker(index));
    }
    result.and(table)
}

/// The ruleset of slot `index` (pure, so that tests can read it).
pub(crate) fn ruleset(
    index: u32,
    cidrs: &[Cidr],
    nameservers: &[Ipv4Addr],
    replace: bool,
) -> String {
    let ifname = host_interface(index);
    let addrs = OpenAddresses::of_slot(index);
    let allowed: Vec<String> = cidrs
        .iter()
        .filter(|c| c.addr.is_ipv4())
        .map(|c| c.to_string())
        .collect();
    let mut forward = vec![
        format!("iifname \"{ifname}\" meta nfproto ipv6 drop"),
        format!("iifname \"{ifname}\" ip saddr != {} drop", addrs.sandbox),
    ];
    if !allowed.is_empty() {
        forward.push(format!(
            "iifname \"{ifname}\" ip daddr {{ {} }} accept",
            allowed.join(", ")
        ));
    }
    if !nameservers.is_empty() {
        let list: Vec<String> = nameservers.iter().map(|n| n.to_string()).collect();
        forward.push(format!(
            "iifname \"{ifname}\" ip daddr {{ {} }} meta l4proto {{ tcp, udp }} th dport 53 accept",
            list.join(", ")
        ));
    }
    forward.push(format!(
        "iifname \"{ifname}\" ip daddr {{ {} }} drop",
        DROPPED.join(", ")
    ));
    forward.push(format!(
        "oifname \"{ifname}\" ct state established,related accept"
    ));
    forward.push(format!("oifname \"{ifname}\" drop"));
    let indent = |rules: &[String]| {
        rules
            .iter()
            .map(|r| format!("    {r}\n"))
            .collect::<String>()
    };
    // Replacing (a table left behind) costs a grace period; a fresh slot needs none.
    let replace = if replace {
        format!(
            "add table inet {t}\ndelete table inet {t}\n",
            t = table(index)
        )
    } else {
        String::new()
    };
    format!(
        "{replace}table inet {t} {{\n\
         chain input {{\n    type filter hook input priority -10; policy accept;\n\
         {input}  }}\n\
         chain forward {{\n    type filter hook forward priority -10; policy accept;\n\
         {forward}  }}\n\
         chain postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n\
         {nat}  }}\n}}\n",
        t = table(index),
        input = indent(&[format!("iifname \"{ifname}\" drop")]),
        forward = indent(&forward),
        nat = indent(&[format!(
            "ip saddr {} oifname != \"{ifname}\" masquerade",
            addrs.sandbox
        )]),
    )
}

/// The host's IPv4 DNS servers that are not loopback (a loopback resolver, such as
/// systemd-resolved's 127.0.0.53, is out of the sandbox's reach).
fn nameservers() -> Vec<Ipv4Addr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .filter(|a| !a.is_loopback())
        .collect()
}

pub(super) fn resolv_conf() -> Option<String> {
    let servers = nameservers();
    (!servers.is_empty()).then(|| {
        servers
            .iter()
            .map(|s| format!("nameserver {s}\n"))
            .collect()
    })
}

pub(super) fn attach(index: u32, child: i32, cidrs: &[Cidr]) -> Result<OpenNet, RunError> {
    let ifname = host_interface(index);
    let addrs = OpenAddresses::of_slot(index);
    // A supervisor killed with -9 leaves its table (and its veth, until the kernel has destroyed
    // the namespace): replace the table, delete the veth.
    let link = std::path::Path::new("/sys/class/net").join(&ifname);
    if link.exists() {
        let deleted = run_tool("network: stale veth", "ip", &["link", "del", &ifname], "");
        if link.exists() {
            deleted?;
        }
    }
    let replace = marker(index).exists();
    std::fs::create_dir_all(MARKERS)
        .and_then(|()| std::fs::write(marker(index), b""))
        .map_err(|e| RunError::setup(format!("network: {MARKERS}"), e))?;
    let net = OpenNet { index };
    let host_side = format!(
        "link add {ifname} type veth peer name eth0 netns {child}\n\
         addr add {gw}/30 dev {ifname}\n\
         link set {ifname} up\n",
        gw = addrs.gateway,
    );
    let sandbox_side = format!(
        "addr add {sb}/30 dev eth0\nlink set eth0 up\nroute add default via {gw}\n",
        sb = addrs.sandbox,
        gw = addrs.gateway,
    );
    let netns = format!("--net=/proc/{child}/ns/net");
    // The firewall loads while the link is made; nothing runs in the sandbox before both are done.
    let rules = ruleset(index, cidrs, &nameservers(), replace);
    let steps = spawn_tool("network: firewall", "nft", &["-f", "-"], &rules).and_then(|nft| {
        let link = run_tool("network: veth", "ip", &["-batch", "-"], &host_side).and_then(|()| {
            run_tool(
                "network: sandbox side",
                "nsenter",
                &[&netns, "ip", "-batch", "-"],
                &sandbox_side,
            )
        });
        let firewall = finish_tool("network: firewall", nft);
        link.and(firewall)
    });
    match steps {
        Ok(()) => Ok(net),
        Err(e) => {
            let _ = net.remove();
            Err(e)
        }
    }
}

/// `agentbox gc`: removes the tables and veths of slots nobody holds any more.
pub fn collect_orphans(held: &dyn Fn(u32) -> bool) -> Vec<String> {
    let mut removed = Vec::new();
    let output = find_tool("nft").and_then(|nft| {
        Command::new(nft)
            .args(["list", "tables"])
            .stderr(Stdio::null())
            .output()
            .ok()
    });
    let mut slots: Vec<u32> = output
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table inet agentbox_"))
        .filter_map(|n| n.parse().ok())
        .collect();
    if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
        slots.extend(entries.flatten().filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("abv"))
                .and_then(|n| n.parse::<u32>().ok())
        }));
    }
    if let Ok(entries) = std::fs::read_dir(MARKERS) {
        slots.extend(
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())),
        );
    }
    slots.sort_unstable();
    slots.dedup();
    for index in slots.into_iter().filter(|i| !held(*i)) {
        if remove_slot(index).is_ok() {
            removed.push(host_interface(index));
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_get_disjoint_subnets() {
        let a = OpenAddresses::of_slot(0);
        assert_eq!(a.gateway, Ipv4Addr::new(10, 201, 0, 1));
        assert_eq!(a.sandbox, Ipv4Addr::new(10, 201, 0, 2));
        let b = OpenAddresses::of_slot(4095);
        assert_eq!(b.gateway, Ipv4Addr::new(10, 201, 63, 253));
        assert_eq!(b.sandbox, Ipv4Addr::new(10, 201, 63, 254));
    }

    #[test]
    fn allowed_cidrs_and_dns_come_before_the_private_drop() {
        let cidr: Cidr = "10.99.0.0/24".parse().unwrap_or_else(|e| panic!("{e}"));
        let rules = ruleset(7, &[cidr], &[Ipv4Addr::new(10, 255, 255, 53)], true);
        let pos = |needle: &str| {
            rules
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} missing from\n{rules}"))
        };
        assert!(pos("ip daddr { 10.99.0.0/24 } accept") < pos("10.0.0.0/8"));
        assert!(pos("10.255.255.53") < pos("10.0.0.0/8"));
        assert!(rules.contains("iifname \"abv7\" drop"));
        assert!(rules.contains("ip saddr != 10.201.0.30 drop"));
        assert!(rules.contains("ip saddr 10.201.0.30 oifname != \"abv7\" masquerade"));
        assert!(rules.starts_with("add table inet agentbox_7\ndelete table inet agentbox_7\n"));
        let fresh = ruleset(7, &[], &[], false);
        assert!(fresh.starts_with("table inet agentbox_7 {"), "{fresh}");
        assert!(!fresh.contains("delete table"), "{fresh}");
    }
}
