//! A dynamic supervisor holding many children: what one restart and one normal exit cost
//! with 100 children and with 100,000 (warden against itself; the peers have no figure for
//! it). Flat means the 100,000-child value stays within 1.5x of the 100-child one.

use std::time::{Duration, Instant};

use ractor::{ActorProcessingErr, ActorRef};
use warden_core::{ChildSpec, RestartType, Supervisor, SupervisorEvent, SupervisorSpec};

use crate::restart::{until_higher, warden_gen, BIG_INTENSITY};
use crate::stats::Samples;
use crate::subjects::{GenActor, Idle};

/// A child that ends normally when told to.
#[derive(Clone)]
struct Quitter;

impl ractor::Actor for Quitter {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(&self, me: ActorRef<()>, _: (), _: &mut ()) -> Result<(), ActorProcessingErr> {
        me.stop(None);
        Ok(())
    }
}

async fn filled(name: &str, children: usize) -> anyhow::Result<warden_core::SupervisorRef> {
    let spec = SupervisorSpec::dynamic(None).intensity(BIG_INTENSITY, Duration::from_secs(1)).record_failures(false);
    let sup = Supervisor::start(name, spec).await?;
    for _ in 0..children {
        sup.start_child(ChildSpec::worker("idle", Idle, ()).restart(RestartType::Transient)).await?;
    }
    Ok(sup)
}

/// p50 of one restart, in microseconds, of a child among `children` idle siblings: it
/// panics in a handler, the driver polls until a higher generation answers.
pub async fn restart_p50_us(children: usize, iterations: usize) -> anyhow::Result<f64> {
    let sup = filled("bench-dyn-restart", children.saturating_sub(1)).await?;
    let spec = ChildSpec::worker("gen", GenActor, ());
    let h = spec.handle();
    sup.start_child(spec).await?;
    let mut s = Samples::new();
    for i in 0..iterations + 20 {
        let g0 = warden_gen(&h).await.ok_or_else(|| anyhow::anyhow!("child silent"))?;
        let t = Instant::now();
        let _ = h.cast(crate::subjects::GenMsg::Poison);
        until_higher(g0, || warden_gen(&h)).await;
        if i >= 20 {
            s.record(t.elapsed());
        }
    }
    sup.shutdown().await;
    Ok(s.percentile_us(0.5))
}

/// Median cost of one normal exit of a transient child (not restarted, so removed), in
/// microseconds, with `children` children: exits one at a time, each timed from the message
/// that ends it to the supervisor's `ChildExited`; the supervisor removes a child in the same
/// handler, before it can handle the next exit, so each timing includes the previous removal.
pub async fn exit_us(children: usize, exits: usize) -> anyhow::Result<f64> {
    let sup = filled("bench-dyn-exit", children.saturating_sub(exits)).await?;
    let mut quitters = Vec::with_capacity(exits);
    for _ in 0..exits {
        let spec = ChildSpec::worker("quit", Quitter, ()).restart(RestartType::Transient);
        let h = spec.handle();
        sup.start_child(spec).await?;
        quitters.push(h);
    }
    let mut events = sup.subscribe();
    let mut s = Samples::new();
    for h in &quitters {
        let path = h.path();
        let t = Instant::now();
        h.cast(())?;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                Ok(Ok(SupervisorEvent::ChildExited { path: p, .. })) if p == path => break,
                Ok(Ok(_)) => {}
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(e)) => anyhow::bail!("event bus: {e}"),
                Err(_) => anyhow::bail!("no exit of {path} within 10 s"),
            }
        }
        s.record(t.elapsed());
    }
    sup.shutdown().await;
    Ok(s.percentile_us(0.5))
}
