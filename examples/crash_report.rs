//! A crash report rendered as JSON.
//!
//! Shows: what warden records about a failure (path, ancestors, spec, incarnation, reason,
//! panic location, message type, restarts in the intensity window, the supervisor's decision),
//! the same report as one structured `tracing` event in JSON log output, and the tree's
//! flight recorder exported as JSON.
//!
//! Run: `cargo run --example crash_report`

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use warden::prelude::*;

#[derive(Clone)]
struct Parser;

impl Actor for Parser {
    type Msg = String;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<String>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(&self, _: ActorRef<String>, line: String, _: &mut ()) -> Result<(), ActorProcessingErr> {
        let n: u32 = line.parse().expect("the input is a number");
        tracing::info!(n, "parsed");
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // JSON logs: the crash report arrives as one event whose fields are all there.
    tracing_subscriber::fmt().json().with_env_filter("warn").init();
    let parser = ChildSpec::worker("parser", Parser, ()).shutdown(Shutdown::Timeout(Duration::from_secs(1)));
    let handle = parser.handle();
    let ingest = SupervisorSpec::one_for_one().child(parser);
    let app =
        Supervisor::start("etl", SupervisorSpec::one_for_all().child(ChildSpec::supervisor("ingest", ingest))).await?;
    handle.cast("42".into())?;
    handle.cast("forty-two".into())?; // panics: not a number
    handle.cast("7".into())?; // queued behind it: handled by the next incarnation
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("flight recorder:\n{}", app.events().recorder().to_json());
    app.shutdown().await;
    Ok(())
}
