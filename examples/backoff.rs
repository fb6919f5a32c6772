//! Restart backoff against a failing dependency: a client whose `pre_start` fails while its
//! server is down is retried with growing, jittered delays instead of being hammered, and
//! shows as `Restarting` while the supervisor keeps answering.
//!
//! Shows: `Backoff::exponential`, `RestartScheduled` / `RestartFailed` events, failed
//! restarts counted by intensity, and recovery once the dependency is back.
//!
//! Run: `cargo run --example backoff`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use warden::prelude::*;

#[derive(Clone)]
struct Client {
    server_up: Arc<AtomicBool>,
}

impl Actor for Client {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        if self.server_up.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("connection refused".into())
        }
    }
    async fn handle(&self, _: ActorRef<()>, _: (), _: &mut ()) -> Result<(), ActorProcessingErr> {
        Err("server went away".into())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server_up = Arc::new(AtomicBool::new(true));
    let client = ChildSpec::worker("client", Client { server_up: server_up.clone() }, ())
        .backoff(Backoff::exponential(Duration::from_millis(20), Duration::from_millis(500)).seed(7));
    let handle = client.handle();
    let app =
        Supervisor::start("app", SupervisorSpec::one_for_one().intensity(20, Duration::from_secs(10)).child(client))
            .await?;
    let mut events = app.subscribe();
    let t0 = Instant::now();
    server_up.store(false, Ordering::SeqCst);
    handle.cast(())?; // the client fails; every restart now fails until the server is back
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
            Ok(Ok(SupervisorEvent::RestartScheduled { delay, .. })) => {
                let status = app.which_children().await?[0].status;
                println!(
                    "{:>6} ms  next attempt in {:>4} ms  (child {status:?})",
                    t0.elapsed().as_millis(),
                    delay.as_millis()
                );
                if t0.elapsed() > Duration::from_millis(1200) {
                    server_up.store(true, Ordering::SeqCst);
                }
            }
            Ok(Ok(SupervisorEvent::RestartFailed { error, .. })) => {
                println!("{:>6} ms  restart failed: {error}", t0.elapsed().as_millis())
            }
            Ok(Ok(SupervisorEvent::ChildRestarted { .. })) => {
                println!("{:>6} ms  the server is back and the client is running again", t0.elapsed().as_millis());
                break;
            }
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    app.shutdown().await;
    Ok(())
}
