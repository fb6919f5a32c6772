//! A first supervision tree: a counter and a flaky worker under a one-for-one supervisor.
//!
//! Shows: declaring a tree in code, a stable `ChildRef` that keeps working while its child
//! is restarted, messages queued behind a crash surviving it (only the poison message is
//! lost), the typed supervision events, and an orderly shutdown.
//!
//! Run: `cargo run --release --example first_tree`

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use warden::prelude::*;

/// The counter's messages.
enum CounterMsg {
    Add(u64),
    Total(RpcReplyPort<u64>),
    /// A message whose handling panics: the "poison".
    Poison,
}

#[derive(Clone)]
struct Counter;

impl Actor for Counter {
    type Msg = CounterMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _me: ActorRef<CounterMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _me: ActorRef<CounterMsg>,
        msg: CounterMsg,
        total: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CounterMsg::Add(n) => *total += n,
            CounterMsg::Total(reply) => {
                let _ = reply.send(*total);
            }
            CounterMsg::Poison => panic!("the counter swallowed poison"),
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").with_ansi(false).init();
    // Panics inside warden-hosted handlers are not printed raw: each failure becomes one
    // structured crash report (the WARN/ERROR lines below, and `app.crash_reports()`).

    let counter = ChildSpec::worker("counter", Counter, ());
    let handle = counter.handle();
    let spec = SupervisorSpec::one_for_one().intensity(5, Duration::from_secs(10)).child(counter);
    let app = Supervisor::start("app", spec).await?;
    let mut events = app.subscribe();
    let printer = tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            println!("  event: {e:?}");
        }
    });

    println!("tree started: {:?}", warden::testkit::tree(&app).await?.paths());
    for round in 1..=3 {
        handle.cast(CounterMsg::Add(10))?;
        handle.cast(CounterMsg::Poison)?;
        handle.cast(CounterMsg::Add(1))?; // queued behind the poison: survives the crash
        let total = handle.call(CounterMsg::Total, Some(Duration::from_secs(5))).await?;
        // The 10 was in the state that died with the crash; the 1 queued behind the poison
        // was kept in the mailbox and counted by the new incarnation.
        println!("round {round}: the restarted counter answers through the same handle, total = {total}");
    }
    let kids = app.which_children().await?;
    println!("which_children: {} restarted {} times, status {:?}", kids[0].path, kids[0].restarts, kids[0].status);
    if let Some(last) = app.crash_reports().last() {
        println!("last crash report: {} at {:?}, decision {:?}", last.reason, last.panic_location, last.decision);
    }
    app.shutdown().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    printer.abort();
    println!("tree shut down");
    Ok(())
}
