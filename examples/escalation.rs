//! Escalation through nested supervisors: when a subtree restarts too often, its supervisor
//! gives up and its parent restarts the whole subtree; when the root gives up, the tree ends.
//!
//! Shows: `ChildSpec::supervisor`, per-level intensity, the `IntensityExceeded` and
//! `SupervisorShutdown` events, and a worker handle that survives its supervisor's restart.
//!
//! Run: `cargo run --example escalation`

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use warden::prelude::*;

#[derive(Clone)]
struct Flaky;

impl Actor for Flaky {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(&self, _: ActorRef<()>, _: (), _: &mut ()) -> Result<(), ActorProcessingErr> {
        Err("the database connection dropped".into())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flaky = ChildSpec::worker("conn", Flaky, ());
    let conn = flaky.handle();
    // The db subtree tolerates 1 restart in 5 s; the root tolerates 2.
    let db = SupervisorSpec::one_for_one().intensity(1, Duration::from_secs(5)).child(flaky);
    let root =
        SupervisorSpec::one_for_one().intensity(2, Duration::from_secs(5)).child(ChildSpec::supervisor("db", db));
    let app = Supervisor::start("shop", root).await?;
    let mut events = app.subscribe();
    let mut failures = 0;
    while app.is_running() && failures < 20 {
        if conn.cast(()).is_ok() {
            failures += 1;
        }
        while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(20), events.recv()).await {
            match e {
                SupervisorEvent::IntensityExceeded { path, intensity, .. } => {
                    println!("{path} exceeded {intensity} restarts: gives up, its parent decides")
                }
                SupervisorEvent::ChildRestarted { path, .. } => println!("{path} restarted"),
                SupervisorEvent::SupervisorShutdown { path, reason } => println!("{path} shut down ({reason})"),
                _ => {}
            }
        }
    }
    app.wait().await;
    println!("the root gave up after {failures} failures; the tree has ended");
    Ok(())
}
