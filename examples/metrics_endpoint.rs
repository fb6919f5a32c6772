//! A small app exposing its metrics: the `warden_*` series in Prometheus text on a loopback
//! `/metrics` endpoint, plus MTBF, MTTR and availability from the supervisor.
//!
//! Shows: `warden::observe::install_prometheus` (before starting trees),
//! `MetricsEndpoint::serve` bound to 127.0.0.1, the series a failing child produces, and
//! `SupervisorRef::stats` / `subtree_stats`.
//!
//! Run: `cargo run --example metrics_endpoint` (add `-- --serve 30` to keep the endpoint up for
//! 30 s and scrape it with `curl`).

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use warden::observe::{install_prometheus, MetricsEndpoint};
use warden::prelude::*;

#[derive(Clone)]
struct Flaky;

impl Actor for Flaky {
    type Msg = u32;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<u32>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(&self, _: ActorRef<u32>, n: u32, _: &mut ()) -> Result<(), ActorProcessingErr> {
        if n.is_multiple_of(3) {
            return Err(format!("request {n} failed").into());
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let serve_for: u64 =
        std::env::args().skip_while(|a| a != "--serve").nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let prometheus = install_prometheus()?;
    let flaky = ChildSpec::worker("flaky", Flaky, ());
    let handle = flaky.handle();
    let api = SupervisorSpec::one_for_one().intensity(100, Duration::from_secs(10)).child(flaky);
    let app = Supervisor::start("shop", SupervisorSpec::one_for_one().child(ChildSpec::supervisor("api", api))).await?;
    for n in 1..=9 {
        handle.cast(n)?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let endpoint = MetricsEndpoint::serve(prometheus.clone(), None).await?;
    println!("metrics at http://{}/metrics\n", endpoint.addr());
    for line in
        warden::observe::render(&prometheus).lines().filter(|l| l.starts_with("warden_") && !l.contains("_bucket"))
    {
        println!("{line}");
    }
    if let Some(f) = app.stats("/shop/api/flaky") {
        println!(
            "\n/shop/api/flaky: {} failures, MTBF {:.3} s, MTTR {:.6} s, availability {:.5}",
            f.failures,
            f.mtbf_s.unwrap_or(0.0),
            f.mttr_s.unwrap_or(0.0),
            f.availability
        );
    }
    if serve_for > 0 {
        tokio::time::sleep(Duration::from_secs(serve_for)).await;
    }
    endpoint.stop().await;
    app.shutdown().await;
    Ok(())
}
