//! Where the demo's nodes live on the network, and how packets between them are dropped.
//!
//! Without root, every node listens on 127.0.0.1 (its own port) and partitions are not
//! available. With root, every node process starts in a network namespace of its own (made
//! by the process itself, before it runs: `unshare(CLONE_NEWNET)`), joined by a veth pair to
//! a bridge in a hub namespace (a `sleep` process of the launcher in a namespace of its own).
//! Node `i` gets the address 10.77.0.`i`, and a partition is a set of nftables rules in the
//! nodes' namespaces that drop real packets, in one or both directions: TCP sees a silent
//! peer, as on a real cut network, not a closed connection. The namespaces live as long as
//! their processes: nothing is left behind when the launcher goes, even by SIGKILL (the hub
//! and the nodes have a parent-death signal).
//!
//! Why namespaces rather than a proxy per pair of nodes: the packets really are dropped by the
//! kernel, between real sockets, so the nodes run exactly as they would on separate hosts
//! (addresses included), and a one-way cut behaves like one.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// The subnet of the demo's nodes.
pub const SUBNET: &str = "10.77.0";

/// How nodes are reached.
pub enum Net {
    /// Loopback: 127.0.0.1, no partitions.
    Loopback,
    /// Network namespaces (root).
    Namespaces(Hub),
}

/// The hub namespace and its bridge.
pub struct Hub {
    /// The hub process (its namespace lives as long as it does).
    process: std::process::Child,
    /// A tag unique to this run, in interface names.
    tag: String,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn tools_present() -> bool {
    ["ip", "nft", "nsenter", "unshare"].iter().all(|tool| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Runs a command, naming it if it fails.
fn sh(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("{} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Runs `args` inside the network namespace of process `pid`.
fn in_ns(pid: u32, args: &[&str]) -> anyhow::Result<()> {
    let target = pid.to_string();
    let mut full = vec!["nsenter", "-t", &target, "-n", "--"];
    full.extend_from_slice(args);
    sh(&full)
}

/// Runs nft inside `pid`'s namespace with `script` on stdin.
fn nft(pid: u32, script: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "--", "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    child.stdin.take().context("nft's stdin")?.write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl Net {
    /// Namespaces when running as root with `ip`, `nft`, `nsenter` and `unshare` installed;
    /// loopback otherwise (`why` says which and why).
    pub fn choose(want_partitions: bool) -> (Net, String) {
        if !want_partitions {
            return (Net::Loopback, "loopback (no partition in the plan)".into());
        }
        if !is_root() {
            return (Net::Loopback, "loopback (partitions need network namespaces, which need root)".into());
        }
        if !tools_present() {
            return (Net::Loopback, "loopback (partitions need ip, nft, nsenter and unshare)".into());
        }
        match Hub::start() {
            Ok(hub) => (
                Net::Namespaces(hub),
                "network namespaces joined by a bridge; partitions drop packets with nftables".into(),
            ),
            Err(e) => (Net::Loopback, format!("loopback (network namespaces failed: {e:#})")),
        }
    }

    /// Whether partitions are available.
    pub fn partitions(&self) -> bool {
        matches!(self, Net::Namespaces(_))
    }

    /// The address node number `i` (from 1) listens on.
    pub fn ip(&self, i: usize) -> IpAddr {
        match self {
            Net::Loopback => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Net::Namespaces(_) => format!("{SUBNET}.{i}").parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        }
    }

    /// Whether node processes must start in a namespace of their own.
    pub fn isolates(&self) -> bool {
        self.partitions()
    }

    /// Wires node `i`'s fresh namespace (process `pid`) to the hub, and installs the (empty)
    /// partition rules. Loopback: nothing to do.
    pub fn attach(&self, i: usize, pid: u32) -> anyhow::Result<()> {
        let Net::Namespaces(hub) = self else { return Ok(()) };
        let (a, b) = (format!("wd{}n{i}a", hub.tag), format!("wd{}n{i}b", hub.tag));
        // A pair left by this node's previous process (its namespace is gone, so is its end).
        let _ = Command::new("ip").args(["link", "del", &b]).stderr(Stdio::null()).status();
        sh(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
        sh(&["ip", "link", "set", &a, "netns", &pid.to_string()])?;
        sh(&["ip", "link", "set", &b, "netns", &hub.process.id().to_string()])?;
        in_ns(hub.process.id(), &["ip", "link", "set", &b, "master", "br0"])?;
        in_ns(hub.process.id(), &["ip", "link", "set", &b, "up"])?;
        let addr = format!("{SUBNET}.{i}/24");
        in_ns(pid, &["ip", "link", "set", "lo", "up"])?;
        in_ns(pid, &["ip", "addr", "add", &addr, "dev", &a])?;
        in_ns(pid, &["ip", "link", "set", &a, "up"])?;
        nft(
            pid,
            "table inet warden {\n  chain out { type filter hook output priority 0; policy accept; }\n  chain in { type filter hook input priority 0; policy accept; }\n}\n",
        )
    }

    /// Drops the packets of process `pid` (node address `from`) to `to`, and, if `both`, the
    /// ones it receives from them.
    pub fn block(&self, pid: u32, to: &[IpAddr], both: bool) -> anyhow::Result<()> {
        if !self.partitions() || to.is_empty() {
            return Ok(());
        }
        let set = to.iter().map(|ip| ip.to_string()).collect::<Vec<_>>().join(", ");
        let mut script = format!("add rule inet warden out ip daddr {{ {set} }} drop\n");
        if both {
            script.push_str(&format!("add rule inet warden in ip saddr {{ {set} }} drop\n"));
        }
        nft(pid, &script)
    }

    /// Removes every drop rule of process `pid`.
    pub fn unblock(&self, pid: u32) -> anyhow::Result<()> {
        if !self.partitions() {
            return Ok(());
        }
        nft(pid, "flush chain inet warden out\nflush chain inet warden in\n")
    }
}

impl Hub {
    fn start() -> anyhow::Result<Hub> {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as i32;
        let mut cmd = Command::new("sleep");
        cmd.arg("infinity").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (prctl, getppid, unshare), no allocation.
        unsafe {
            cmd.pre_exec(move || {
                if libc_prctl_pdeathsig() != 0 || nix::unistd::getppid().as_raw() != parent {
                    return Err(std::io::Error::other("the launcher is gone"));
                }
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
        let process = cmd.spawn().context("starting the hub namespace")?;
        let tag = (std::process::id() % 100_000).to_string();
        let hub = Hub { process, tag };
        in_ns(hub.process.id(), &["ip", "link", "add", "br0", "type", "bridge"])?;
        in_ns(hub.process.id(), &["ip", "link", "set", "br0", "up"])?;
        Ok(hub)
    }
}

/// `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the child dies with the launcher.
pub fn libc_prctl_pdeathsig() -> i32 {
    match nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        Ok(()) => 0,
        Err(_) => -1,
    }
}
