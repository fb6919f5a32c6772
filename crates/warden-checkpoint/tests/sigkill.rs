//! Crash consistency with a real process: a child process runs many durable actors that
//! journal deposits and take snapshots into a redb store; the test kills it with SIGKILL at
//! random moments, 50 times, and after each kill opens the store and checks that every actor
//! recovers at least the balance it last acknowledged.
//!
//! The child is this same test binary, run with `--ignored --exact child_writer` and the
//! store's directory in `WARDEN_SIGKILL_DIR`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use warden_checkpoint::{Checkpoint, CheckpointConfig, Checkpointed, Checkpoints, EventSourced, SnapshotPolicy};
use warden_core::{ChildRef, ChildSpec, Supervisor, SupervisorSpec};

const ACCOUNTS: usize = 16;
const KILLS: usize = 50;
const DIR_VAR: &str = "WARDEN_SIGKILL_DIR";

#[derive(Clone)]
struct Account;

enum Msg {
    Deposit(u64, RpcReplyPort<u64>),
    Balance(RpcReplyPort<u64>),
}

#[derive(Serialize, Deserialize)]
struct Deposited(u64);

impl Actor for Account {
    type Msg = Msg;
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Msg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }
    async fn handle(&self, _: ActorRef<Msg>, msg: Msg, balance: &mut u64) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Deposit(n, reply) => {
                self.persist(balance, Deposited(n)).await?;
                let _ = reply.send(*balance);
            }
            Msg::Balance(reply) => {
                let _ = reply.send(*balance);
            }
        }
        Ok(())
    }
}

impl Checkpoint for Account {
    type Snapshot = u64;
    fn snapshot(&self, b: &u64) -> u64 {
        *b
    }
    fn restore(&self, b: &mut u64, s: u64) {
        *b = s;
    }
}

impl EventSourced for Account {
    type Event = Deposited;
    fn apply(&self, b: &mut u64, e: &Deposited) {
        *b += e.0;
    }
}

/// Starts every account under one supervisor; returns their handles.
async fn start_accounts(ck: &Checkpoints, name: &str) -> (warden_core::SupervisorRef, Vec<ChildRef<Msg>>) {
    let mut spec = SupervisorSpec::one_for_one();
    let mut handles = Vec::new();
    for i in 0..ACCOUNTS {
        // Snapshots every few events, keeping two: the store sees snapshots, journal entries
        // and retention deletes, all under the kills.
        let policy = SnapshotPolicy::new().every_messages(3 + i as u64 % 4).retain(2);
        let child =
            ChildSpec::worker(format!("acct-{i}"), Checkpointed::durable(Account, ck, format!("acct-{i}"), policy), ());
        handles.push(child.handle());
        spec = spec.child(child);
    }
    let sup = Supervisor::start(name, spec).await.expect("accounts start");
    (sup, handles)
}

/// The child process: deposits forever, printing each acknowledged balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of kill_at_random_moments_loses_no_acknowledged_deposit"]
async fn child_writer() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        panic!("run by kill_at_random_moments_loses_no_acknowledged_deposit only ({DIR_VAR} unset)");
    };
    let ck = Checkpoints::open_dir(&dir, CheckpointConfig::default()).await.expect("store opens in the child");
    let (_sup, handles) = start_accounts(&ck, "child").await;
    let mut tasks = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut n = 1u64;
            loop {
                let balance = h.call(|r| Msg::Deposit(n, r), Some(Duration::from_secs(30))).await.expect("deposit");
                // One write per line, so a kill can only cut the last line short.
                use std::io::Write;
                let line = format!("ack acct-{i} {balance}\n");
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(line.as_bytes());
                let _ = out.flush();
                n = n % 97 + 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// A small seeded generator (xorshift64*), so a failing run can be replayed from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

async fn recovered_balances(dir: &std::path::Path, round: usize) -> HashMap<String, u64> {
    let ck = Checkpoints::open_dir(dir, CheckpointConfig::default()).await.expect("the store opens after a SIGKILL");
    let (sup, handles) = start_accounts(&ck, &format!("check-{round}")).await;
    let mut out = HashMap::new();
    for (i, h) in handles.iter().enumerate() {
        let b = h.call(Msg::Balance, Some(Duration::from_secs(30))).await.expect("balance");
        out.insert(format!("acct-{i}"), b);
    }
    sup.shutdown().await;
    ck.close().await.expect("close");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_at_random_moments_loses_no_acknowledged_deposit() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let mut rng = Rng(seed);
    let exe = std::env::current_exe().unwrap();
    let mut floor: HashMap<String, u64> = HashMap::new(); // what must survive
    let mut total_acks = 0usize;
    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .args(["--ignored", "--exact", "child_writer", "--nocapture", "--test-threads", "1"])
            .env(DIR_VAR, dir.path())
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                if tx.send(String::from_utf8_lossy(&line).into_owned()).is_err() {
                    break;
                }
            }
        });
        // Wait for the first acknowledgement, then let it run a random 0-120 ms more.
        let started = Instant::now();
        let mut acks: Vec<String> = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(l) if l.starts_with("ack ") => {
                    acks.push(l);
                    break;
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    assert!(started.elapsed() < Duration::from_secs(60), "round {round}: the child never acknowledged");
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!("round {round}: the child exited (seed {seed})"),
            }
        }
        std::thread::sleep(Duration::from_millis(rng.next() % 121));
        child.kill().expect("SIGKILL"); // std sends SIGKILL on Unix
        let _ = child.wait();
        reader.join().unwrap();
        // Only whole lines count: `split` yields a cut last line too, which fails to parse.
        acks.extend(rx.try_iter());
        for l in acks.iter().filter(|l| l.starts_with("ack ")) {
            let mut parts = l.split(' ').skip(1);
            let (Some(key), Some(bal)) = (parts.next(), parts.next()) else { continue };
            let Ok(bal) = bal.parse::<u64>() else { continue };
            total_acks += 1;
            let f = floor.entry(key.to_string()).or_insert(0);
            *f = (*f).max(bal);
        }
        let recovered = recovered_balances(dir.path(), round).await;
        for (key, must) in &floor {
            let got = recovered.get(key).copied().unwrap_or(0);
            assert!(got >= *must, "round {round} (seed {seed}): {key} recovered {got} < acknowledged {must}");
        }
        // What was recovered is now acknowledged state too: it must never go back.
        for (key, got) in recovered {
            let f = floor.entry(key).or_insert(0);
            *f = (*f).max(got);
        }
    }
    assert!(total_acks > KILLS, "the children acknowledged only {total_acks} deposits");
}
