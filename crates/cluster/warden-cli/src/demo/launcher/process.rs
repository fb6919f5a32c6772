//! The node processes: this binary in `demo-node` mode, one per node, each in its own process
//! group (so a terminal's Ctrl-C reaches only the launcher, which then stops them in order),
//! with a parent-death signal (SIGKILL) set before it runs, and in a network namespace of its
//! own when partitions are on. tokio runs them (`kill_on_drop`): a writer task feeds each
//! one's stdin from a bounded queue ([`QUEUE`] lines; a node that stops reading makes
//! requests fail instead of piling up), and a reader task turns its stdout into [`Report`]s,
//! line by line, each at most [`MAX_LINE`] bytes.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec};

use super::net::{libc_prctl_pdeathsig, Net};
use crate::demo::protocol::{next_line, Report, MAX_LINE};
use crate::demo::Demo;

/// The bound of the queue of lines to each node's stdin.
pub const QUEUE: usize = 4096;

/// What every node of a run is started with.
pub struct Spawner {
    /// This binary.
    pub exe: PathBuf,
    /// The demo.
    pub demo: Demo,
    /// The cluster cookie.
    pub cookie: String,
    /// Accounts (bank).
    pub accounts: usize,
    /// How many nodes the group's first placement waits for (the nodes of the run).
    pub min_members: usize,
    /// Show the nodes' logs.
    pub node_logs: bool,
    /// Where the reports go: (node name, report).
    pub reports: mpsc::Sender<(String, Report)>,
    /// The nodes' last warnings and errors, when their logs are not shown.
    pub warnings: NodeWarnings,
}

/// The longest line of a node's log kept (bytes); a longer one is skipped (logged at debug).
pub const MAX_LOG_LINE: usize = 8 << 10;
/// The most warning and error lines of the nodes' logs kept for the report; the oldest goes.
pub const NODE_WARNINGS: usize = 200;

/// The last [`NODE_WARNINGS`] warning and error lines of every node's log, each prefixed with
/// its node's name: what the report shows of the nodes' logs when they are not on stderr, so
/// that a failed run says why (a credit that kept failing, a store error) without a rerun.
#[derive(Clone, Default, Debug)]
pub struct NodeWarnings(std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>);

impl NodeWarnings {
    /// Keeps `line` of `node`'s log if it is an error, or a warning of warden's own (tracing's
    /// level field, then its target; openraft warns of every ignored stale message).
    pub fn offer(&self, node: &str, line: &str) {
        if !(line.contains(" WARN warden") || line.contains(" ERROR ")) {
            return;
        }
        let mut kept = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.len() == NODE_WARNINGS {
            kept.pop_front();
        }
        kept.push_back(format!("{node}: {line}"));
    }

    /// The lines kept, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect()
    }
}

/// A running node process.
pub struct Running {
    /// Its process.
    pub child: tokio::process::Child,
    /// Its pid.
    pub pid: u32,
    /// Lines to its stdin.
    pub stdin: mpsc::Sender<String>,
}

/// Where and how node number `index` (from 1) runs.
pub struct Placement {
    /// Its name.
    pub name: String,
    /// Its number (its address in namespace mode).
    pub index: usize,
    /// Its address.
    pub ip: IpAddr,
    /// Its port.
    pub port: u16,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Members to join through, if it has no past.
    pub join: Vec<SocketAddr>,
    /// Found the group if it has no past (the run's first start only).
    pub found: bool,
}

impl Spawner {
    /// Starts one node.
    pub fn spawn(&self, p: &Placement, net: &Net) -> anyhow::Result<Running> {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.arg("demo-node")
            .arg(self.demo.name())
            .args(["--name", &p.name, "--bind", &p.ip.to_string(), "--port", &p.port.to_string()])
            .args(["--accounts", &self.accounts.to_string()])
            .args(["--min-members", &self.min_members.to_string()])
            .arg("--data-dir")
            .arg(&p.data_dir)
            .env("WARDEN_COOKIE", &self.cookie)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if self.node_logs { Stdio::inherit() } else { Stdio::piped() })
            .process_group(0);
        for addr in &p.join {
            cmd.args(["--join", &addr.to_string()]);
        }
        if p.found {
            cmd.arg("--found");
        }
        let parent = std::process::id() as i32;
        let isolate = net.isolates();
        // SAFETY: only async-signal-safe calls (prctl, getppid, unshare), no allocation.
        unsafe {
            cmd.pre_exec(move || {
                if libc_prctl_pdeathsig() != 0 || nix::unistd::getppid().as_raw() != parent {
                    return Err(std::io::Error::other("the launcher is gone"));
                }
                if isolate {
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                }
                Ok(())
            });
        }
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("starting node {}", p.name))?;
        let pid = child.id().context("the node has no pid")?;
        net.attach(p.index, pid).with_context(|| format!("wiring node {}'s network", p.name))?;
        let mut stdin = child.stdin.take().context("the node's stdin")?;
        let stdout = child.stdout.take().context("the node's stdout")?;
        if let Some(stderr) = child.stderr.take() {
            let (name, warnings) = (p.name.clone(), self.warnings.clone());
            tokio::spawn(async move {
                let mut lines = FramedRead::new(stderr, LinesCodec::new_with_max_length(MAX_LOG_LINE));
                let mut errored = false;
                while let Some(line) = next_line(&mut lines, &mut errored).await {
                    match line {
                        Ok(l) => warnings.offer(&name, &l),
                        Err(e) => {
                            tracing::debug!(target: "warden::demo", node = %name, error = %e, "a log line skipped")
                        }
                    }
                }
            });
        }
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        tokio::spawn(async move {
            while let Some(mut line) = rx.recv().await {
                line.push('\n');
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    return;
                }
            }
        });
        let (name, reports) = (p.name.clone(), self.reports.clone());
        tokio::spawn(async move {
            let mut lines = FramedRead::new(stdout, LinesCodec::new_with_max_length(MAX_LINE));
            let mut errored = false;
            while let Some(line) = next_line(&mut lines, &mut errored).await {
                let line = match line {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(target: "warden::demo", node = %name, error = %e, "an unreadable line from a node");
                        continue;
                    }
                };
                match serde_json::from_str::<Report>(&line) {
                    Ok(report) => {
                        if reports.send((name.clone(), report)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(target: "warden::demo", node = %name, error = %e, "an unknown report"),
                }
            }
        });
        Ok(Running { child, pid, stdin: tx })
    }
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_warnings_and_errors_are_kept_and_the_oldest_goes_past_the_bound() {
        let w = NodeWarnings::default();
        w.offer("n1", "2026-12-04T01:00:00.000000Z  INFO warden::demo: started");
        w.offer("n1", "2026-12-04T01:00:00.000000Z  WARN warden::demo::bank: a credit keeps failing");
        w.offer("n1", "2026-12-04T01:00:00.000000Z  WARN openraft::core::raft_core: a stale message ignored");
        w.offer("n2", "2026-12-04T01:00:00.000000Z ERROR warden::cluster: the store failed");
        assert_eq!(
            w.lines(),
            vec![
                "n1: 2026-12-04T01:00:00.000000Z  WARN warden::demo::bank: a credit keeps failing".to_string(),
                "n2: 2026-12-04T01:00:00.000000Z ERROR warden::cluster: the store failed".to_string(),
            ]
        );
        for i in 0..NODE_WARNINGS {
            w.offer("n3", &format!("t  WARN warden::x: line {i}"));
        }
        let lines = w.lines();
        assert_eq!(lines.len(), NODE_WARNINGS, "the bound holds");
        assert_eq!(lines.first().map(String::as_str), Some("n3: t  WARN warden::x: line 0"), "the oldest went first");
        assert_eq!(
            lines.last().map(String::as_str),
            Some(format!("n3: t  WARN warden::x: line {}", NODE_WARNINGS - 1).as_str())
        );
    }
}
