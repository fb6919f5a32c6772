//! Restart figures: one-for-one restart latency, and a one-for-all restart of 1,000 children.
//!
//! Each framework gets the same generation actor and the same driver loop: read the current
//! generation, start the clock, send the poison, then poll (find the child, ask its
//! generation, yield) until a higher generation answers.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use kameo::actor::{Actor as KActor, ActorRef as KRef, Spawn};
use kameo::error::Infallible;
use kameo::supervision::SupervisionStrategy;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::mpsc;

use crate::stats::Samples;
use crate::subjects::kameo_subjects::{Gen, KGen, Poison};
use crate::subjects::{GenActor, GenMsg};
use warden_core::{ChildRef, ChildSpec, Supervisor, SupervisorSpec};

pub(crate) const BIG_INTENSITY: u32 = 1_000_000;

async fn ractor_gen(a: &ActorRef<GenMsg>) -> Option<u64> {
    match a.call(GenMsg::Gen, None).await {
        Ok(ractor::rpc::CallResult::Success(g)) => Some(g),
        _ => None,
    }
}

pub(crate) async fn warden_gen(h: &ChildRef<GenMsg>) -> Option<u64> {
    h.call(GenMsg::Gen, None).await.ok()
}

pub(crate) async fn until_higher<F, Fut>(g0: u64, mut ask: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<u64>>,
{
    loop {
        if let Some(g) = ask().await {
            if g > g0 {
                return;
            }
        }
        tokio::task::yield_now().await;
    }
}

pub async fn one_for_one_warden(iterations: usize) -> anyhow::Result<Samples> {
    one_for_one_warden_recording(iterations, true).await
}

/// The same, with the supervisor's crash reports, reliability figures and metrics on or off.
pub async fn one_for_one_warden_recording(iterations: usize, record: bool) -> anyhow::Result<Samples> {
    let spec = ChildSpec::worker("gen", GenActor, ());
    let h = spec.handle();
    let app = Supervisor::start(
        "bench-ofo",
        SupervisorSpec::one_for_one()
            .intensity(BIG_INTENSITY, Duration::from_secs(1))
            .record_failures(record)
            .child(spec),
    )
    .await?;
    let mut s = Samples::new();
    for i in 0..iterations + 50 {
        let g0 = warden_gen(&h).await.ok_or_else(|| anyhow::anyhow!("warden child silent"))?;
        let t = Instant::now();
        let _ = h.cast(GenMsg::Poison);
        until_higher(g0, || warden_gen(&h)).await;
        if i >= 50 {
            s.record(t.elapsed());
        }
    }
    app.shutdown().await;
    Ok(s)
}

/// Bare ractor: a parent that re-spawns its child by hand in `handle_supervisor_evt`.
struct Respawner {
    current: Arc<RwLock<Option<ActorRef<GenMsg>>>>,
}

impl Actor for Respawner {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, me: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        let (child, _) = Actor::spawn_linked(None, GenActor, (), me.get_cell()).await?;
        *self.current.write().map_err(|_| "poisoned lock")? = Some(child);
        Ok(())
    }
    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<()>,
        evt: SupervisionEvent,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(..) | SupervisionEvent::ActorTerminated(..) = evt {
            let (child, _) = Actor::spawn_linked(None, GenActor, (), me.get_cell()).await?;
            *self.current.write().map_err(|_| "poisoned lock")? = Some(child);
        }
        Ok(())
    }
}

pub async fn one_for_one_ractor(iterations: usize) -> anyhow::Result<Samples> {
    let current = Arc::new(RwLock::new(None));
    let (parent, _) = Actor::spawn(None, Respawner { current: current.clone() }, ()).await?;
    let get = || current.read().ok().and_then(|c| c.clone());
    let mut s = Samples::new();
    for i in 0..iterations + 50 {
        let child = get().ok_or_else(|| anyhow::anyhow!("no child"))?;
        let g0 = ractor_gen(&child).await.ok_or_else(|| anyhow::anyhow!("ractor child silent"))?;
        let t = Instant::now();
        let _ = child.cast(GenMsg::Poison);
        until_higher(g0, || async {
            match get() {
                Some(c) => ractor_gen(&c).await,
                None => None,
            }
        })
        .await;
        if i >= 50 {
            s.record(t.elapsed());
        }
    }
    parent.stop(None);
    Ok(s)
}

/// The floor under any in-place restart, with no supervisor at all: a bare ractor actor that
/// catches its own handler's panic (as ractor does around every handler) and takes a new
/// generation on the spot. What remains is the poison's delivery, the panic and its unwinding,
/// and the driver's poll. With `ask`, it first makes one round trip to that second actor: the
/// least a supervisor's report and directive can add, with no decision taken.
struct SelfHealing {
    ask: Option<ActorRef<ractor::RpcReplyPort<()>>>,
}

impl Actor for SelfHealing {
    type Msg = GenMsg;
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<GenMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(crate::subjects::next_generation())
    }
    async fn handle(&self, _: ActorRef<GenMsg>, msg: GenMsg, generation: &mut u64) -> Result<(), ActorProcessingErr> {
        match msg {
            GenMsg::Gen(r) => {
                let _ = r.send(*generation);
            }
            GenMsg::Poison => {
                if std::panic::catch_unwind(|| panic!("poison")).is_err() {
                    if let Some(ask) = &self.ask {
                        ask.call(|port| port, None).await?;
                    }
                    *generation = crate::subjects::next_generation();
                }
            }
            GenMsg::Ping | GenMsg::Stuck => {}
        }
        Ok(())
    }
}

/// Answers every call at once: the second actor of [`SelfHealing`]'s round trip.
struct Echo;

impl Actor for Echo {
    type Msg = ractor::RpcReplyPort<()>;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(&self, _: ActorRef<Self::Msg>, reply: Self::Msg, _: &mut ()) -> Result<(), ActorProcessingErr> {
        let _ = reply.send(());
        Ok(())
    }
}

/// The restart figure's driver loop against [`SelfHealing`], with or without the round trip:
/// the measured floors of the restart figure.
pub async fn in_place_floor(iterations: usize, round_trip: bool) -> anyhow::Result<Samples> {
    let echo = match round_trip {
        true => Some(Actor::spawn(None, Echo, ()).await?.0),
        false => None,
    };
    let (actor, _) = Actor::spawn(None, SelfHealing { ask: echo.clone() }, ()).await?;
    let s = poll_restarts(&actor, iterations).await;
    actor.stop(None);
    if let Some(echo) = echo {
        echo.stop(None);
    }
    s
}

async fn poll_restarts(actor: &ActorRef<GenMsg>, iterations: usize) -> anyhow::Result<Samples> {
    let mut s = Samples::new();
    for i in 0..iterations + 50 {
        let g0 = ractor_gen(actor).await.ok_or_else(|| anyhow::anyhow!("floor actor silent"))?;
        let t = Instant::now();
        let _ = actor.cast(GenMsg::Poison);
        until_higher(g0, || ractor_gen(actor)).await;
        if i >= 50 {
            s.record(t.elapsed());
        }
    }
    Ok(s)
}

/// A permanent ractor-supervisor child running `actor`, registered under `name` (that crate
/// requires registered names).
pub fn rs_spec<A: Actor<Arguments = ()> + Clone>(name: String, actor: A) -> ractor_supervisor::ChildSpec {
    ractor_supervisor::ChildSpec {
        id: name,
        restart: ractor_supervisor::Restart::Permanent,
        spawn_fn: ractor_supervisor::SpawnFn::new(move |cell, id| {
            let actor = actor.clone();
            async move {
                let (r, _) = Actor::spawn_linked(Some(id), actor, (), cell).await?;
                Ok(r.get_cell())
            }
        }),
        backoff_fn: None,
        reset_after: None,
    }
}

fn rs_child(name: String) -> ractor_supervisor::ChildSpec {
    rs_spec(name, GenActor)
}

async fn rs_gen(name: &str) -> Option<u64> {
    let a = ActorRef::<GenMsg>::where_is(name)?;
    ractor_gen(&a).await
}

pub async fn one_for_one_ractor_supervisor(iterations: usize) -> anyhow::Result<Samples> {
    let name = "bench-rs-ofo-child".to_string();
    let args = ractor_supervisor::SupervisorArguments {
        child_specs: vec![rs_child(name.clone())],
        options: ractor_supervisor::SupervisorOptions {
            strategy: ractor_supervisor::SupervisorStrategy::OneForOne,
            max_restarts: BIG_INTENSITY as usize,
            max_window: Duration::from_secs(1),
            reset_after: None,
        },
    };
    let (sup, _) = ractor_supervisor::Supervisor::spawn("bench-rs-ofo".into(), args).await?;
    let mut s = Samples::new();
    // Its children start in post_start: wait for the first one.
    until_higher(0, || rs_gen(&name)).await;
    for i in 0..iterations + 50 {
        let g0 = rs_gen(&name).await.unwrap_or(0);
        let t = Instant::now();
        if let Some(a) = ActorRef::<GenMsg>::where_is(name.clone()) {
            let _ = a.cast(GenMsg::Poison);
        }
        until_higher(g0, || rs_gen(&name)).await;
        if i >= 50 {
            s.record(t.elapsed());
        }
    }
    sup.stop(None);
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(s)
}

/// A kameo parent supervising `n` generation actors with strategy `S`.
struct KParent<const ALL: bool>;

impl<const ALL: bool> KActor for KParent<ALL> {
    type Args = (usize, mpsc::UnboundedSender<KRef<KGen>>);
    type Error = Infallible;
    fn supervision_strategy() -> SupervisionStrategy {
        if ALL {
            SupervisionStrategy::OneForAll
        } else {
            SupervisionStrategy::OneForOne
        }
    }
    async fn on_start((n, tx): Self::Args, me: KRef<Self>) -> Result<Self, Infallible> {
        for _ in 0..n {
            let c = KGen::supervise(&me, ()).restart_limit(BIG_INTENSITY, Duration::from_secs(1)).spawn().await;
            let _ = tx.send(c);
        }
        Ok(KParent)
    }
}

async fn kameo_children<const ALL: bool>(n: usize) -> anyhow::Result<(KRef<KParent<ALL>>, Vec<KRef<KGen>>)> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let parent = KParent::<ALL>::spawn((n, tx));
    parent.wait_for_startup().await;
    let mut kids = Vec::with_capacity(n);
    while kids.len() < n {
        kids.push(rx.recv().await.ok_or_else(|| anyhow::anyhow!("kameo parent stopped"))?);
    }
    Ok((parent, kids))
}

pub async fn one_for_one_kameo(iterations: usize) -> anyhow::Result<Samples> {
    let (parent, kids) = kameo_children::<false>(1).await?;
    let child = &kids[0];
    let mut s = Samples::new();
    for i in 0..iterations + 50 {
        let g0 = child.ask(Gen).await.map_err(|e| anyhow::anyhow!("kameo child silent: {e}"))?;
        let t = Instant::now();
        let _ = child.tell(Poison).await;
        until_higher(g0, || async { child.ask(Gen).await.ok() }).await;
        if i >= 50 {
            s.record(t.elapsed());
        }
    }
    parent.kill();
    Ok(s)
}

/// One of `n` children under one-for-all panics; the time until every child answers from a
/// new incarnation, in ms.
pub async fn one_for_all_warden(n: usize, rep: usize) -> anyhow::Result<f64> {
    let mut spec = SupervisorSpec::one_for_all().intensity(BIG_INTENSITY, Duration::from_secs(1));
    let mut hs = Vec::with_capacity(n);
    for i in 0..n {
        let c = ChildSpec::worker(format!("c{i}"), GenActor, ());
        hs.push(c.handle());
        spec = spec.child(c);
    }
    let app = Supervisor::start(&format!("bench-ofa-{rep}"), spec).await?;
    let mut g0 = Vec::with_capacity(n);
    for h in &hs {
        g0.push(warden_gen(h).await.ok_or_else(|| anyhow::anyhow!("silent"))?);
    }
    let t = Instant::now();
    let _ = hs[n / 2].cast(GenMsg::Poison);
    for (h, g) in hs.iter().zip(g0) {
        until_higher(g, || warden_gen(h)).await;
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    app.shutdown().await;
    Ok(ms)
}

pub async fn one_for_all_ractor_supervisor(n: usize, rep: usize) -> anyhow::Result<f64> {
    let names: Vec<String> = (0..n).map(|i| format!("bench-rs-ofa-{rep}-{i}")).collect();
    let args = ractor_supervisor::SupervisorArguments {
        child_specs: names.iter().cloned().map(rs_child).collect(),
        options: ractor_supervisor::SupervisorOptions {
            strategy: ractor_supervisor::SupervisorStrategy::OneForAll,
            max_restarts: BIG_INTENSITY as usize,
            max_window: Duration::from_secs(1),
            reset_after: None,
        },
    };
    let (sup, _) = ractor_supervisor::Supervisor::spawn(format!("bench-rs-ofa-{rep}"), args).await?;
    let mut g0 = Vec::with_capacity(n);
    for name in &names {
        until_higher(0, || rs_gen(name)).await;
        g0.push(rs_gen(name).await.unwrap_or(0));
    }
    let t = Instant::now();
    if let Some(a) = ActorRef::<GenMsg>::where_is(names[n / 2].clone()) {
        let _ = a.cast(GenMsg::Poison);
    }
    for (name, g) in names.iter().zip(g0) {
        until_higher(g, || rs_gen(name)).await;
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    sup.stop(None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(ms)
}

pub async fn one_for_all_kameo(n: usize) -> anyhow::Result<f64> {
    let (parent, kids) = kameo_children::<true>(n).await?;
    let mut g0 = Vec::with_capacity(n);
    for k in &kids {
        g0.push(k.ask(Gen).await.map_err(|e| anyhow::anyhow!("kameo child silent: {e}"))?);
    }
    let t = Instant::now();
    let _ = kids[n / 2].tell(Poison).await;
    for (k, g) in kids.iter().zip(g0) {
        until_higher(g, || async { k.ask(Gen).await.ok() }).await;
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    parent.kill();
    parent.wait_for_shutdown().await;
    Ok(ms)
}

/// Hangs of a watched child: for each, the time from sending a message whose handler never
/// returns until the `ChildExited { Hung }` event, divided by the deadline.
pub async fn hang_detection_ratios(deadline: Duration, hangs: usize) -> anyhow::Result<Vec<f64>> {
    let spec = ChildSpec::worker("hangs", GenActor, ()).deadline(deadline);
    let h = spec.handle();
    let app = Supervisor::start(
        "bench-hang",
        SupervisorSpec::one_for_one().intensity(BIG_INTENSITY, Duration::from_secs(1)).child(spec),
    )
    .await?;
    let mut events = app.subscribe();
    let mut ratios = Vec::with_capacity(hangs);
    for _ in 0..hangs {
        // The child is idle (it answered), so the stuck handler starts at once.
        warden_gen(&h).await.ok_or_else(|| anyhow::anyhow!("watched child silent"))?;
        let t = Instant::now();
        let _ = h.cast(GenMsg::Stuck);
        loop {
            match tokio::time::timeout(deadline * 20, events.recv()).await {
                Ok(Ok(warden_core::SupervisorEvent::ChildExited {
                    reason: warden_core::ExitReason::Hung { .. },
                    ..
                })) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => anyhow::bail!("event bus: {e}"),
                Err(_) => anyhow::bail!("no hang reported within 20x the deadline"),
            }
        }
        ratios.push(t.elapsed().as_secs_f64() / deadline.as_secs_f64());
    }
    app.shutdown().await;
    Ok(ratios)
}
