//! Actors shared by the behaviour tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

/// A generous deadline for events that should arrive within milliseconds.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Messages of the test worker.
pub enum Msg {
    /// Adds to the counter.
    Add(u64),
    /// Answers with the counter.
    Get(RpcReplyPort<u64>),
    /// Answers with the incarnation number.
    Incarnation(RpcReplyPort<u64>),
    /// Panics in the handler.
    Panic,
    /// Returns an error from the handler.
    Fail,
    /// Stops itself with this reason (`None`: normal).
    Exit(Option<String>),
    /// Sleeps (async) for so long.
    Sleep(Duration),
}

/// A worker that counts, reports its incarnation, and fails on request. Its `started`
/// counter is shared by all incarnations; `fail_starts` makes the next N starts fail.
#[derive(Clone, Default)]
pub struct Worker {
    pub started: Arc<AtomicU64>,
    pub stopped: Arc<AtomicU64>,
    pub fail_starts: Arc<AtomicU64>,
    pub log: Option<Arc<std::sync::Mutex<Vec<String>>>>,
    pub name: &'static str,
    pub ignore_stop: bool,
}

impl Worker {
    pub fn named(name: &'static str) -> Self {
        Worker { name, ..Default::default() }
    }

    pub fn logging(name: &'static str, log: &Arc<std::sync::Mutex<Vec<String>>>) -> Self {
        Worker { name, log: Some(log.clone()), ..Default::default() }
    }

    fn note(&self, what: &str) {
        if let Some(log) = &self.log {
            log.lock().unwrap().push(format!("{what} {}", self.name));
        }
    }
}

pub struct WorkerState {
    pub total: u64,
    pub incarnation: u64,
}

impl Actor for Worker {
    type Msg = Msg;
    type State = WorkerState;
    type Arguments = ();

    async fn pre_start(&self, _me: ActorRef<Msg>, _: ()) -> Result<WorkerState, ActorProcessingErr> {
        if self.fail_starts.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(format!("{} refuses to start", self.name).into());
        }
        let incarnation = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        self.note("start");
        Ok(WorkerState { total: 0, incarnation })
    }

    async fn handle(&self, me: ActorRef<Msg>, msg: Msg, st: &mut WorkerState) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Add(n) => st.total += n,
            Msg::Get(r) => {
                let _ = r.send(st.total);
            }
            Msg::Incarnation(r) => {
                let _ = r.send(st.incarnation);
            }
            Msg::Panic => panic!("{} was told to panic", self.name),
            Msg::Fail => return Err(format!("{} was told to fail", self.name).into()),
            Msg::Exit(reason) => me.stop(reason),
            Msg::Sleep(d) => tokio::time::sleep(d).await,
        }
        Ok(())
    }

    async fn post_stop(&self, _me: ActorRef<Msg>, _st: &mut WorkerState) -> Result<(), ActorProcessingErr> {
        if self.ignore_stop {
            // Ignores the stop request: hangs until killed.
            std::future::pending::<()>().await;
        }
        self.stopped.fetch_add(1, Ordering::SeqCst);
        self.note("stop");
        Ok(())
    }
}

/// Asks a worker for its incarnation.
pub async fn incarnation(h: &warden::ChildRef<Msg>) -> u64 {
    h.call(Msg::Incarnation, Some(DEADLINE)).await.expect("worker answers")
}

/// Asks a worker for its total.
pub async fn total(h: &warden::ChildRef<Msg>) -> u64 {
    h.call(Msg::Get, Some(DEADLINE)).await.expect("worker answers")
}
