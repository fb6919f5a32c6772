//! Spawn latency, memory per idle child, and the cast-throughput ratio.

use std::time::{Duration, Instant};

use kameo::actor::Spawn;
use ractor::Actor;

use crate::stats::Samples;
use crate::subjects::kameo_subjects::KIdle;
use crate::subjects::{GenActor, GenMsg, Idle};
use warden_core::{ChildSpec, Supervisor, SupervisorSpec};

/// Which framework a figure is taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Subject {
    Warden,
    Ractor,
    RactorSupervisor,
    Kameo,
}

/// Median time of one spawn of an idle child, in microseconds.
pub async fn spawn_us(subject: Subject, n: usize) -> anyhow::Result<f64> {
    let mut s = Samples::new();
    match subject {
        Subject::Warden => {
            let sup = Supervisor::start("bench-spawn", SupervisorSpec::dynamic(None)).await?;
            for _ in 0..n {
                let t = Instant::now();
                sup.start_child(ChildSpec::worker("idle", Idle, ())).await?;
                s.record(t.elapsed());
            }
            sup.shutdown().await;
        }
        Subject::Ractor => {
            let mut keep = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let (a, _) = Actor::spawn(None, Idle, ()).await?;
                s.record(t.elapsed());
                keep.push(a);
            }
            for a in keep {
                a.stop(None);
            }
        }
        Subject::RactorSupervisor => {
            let sup = rs_dynamic_supervisor("bench-rs-spawn").await?;
            for i in 0..n {
                let spec = crate::restart::rs_spec(format!("bench-rs-spawn-{i}"), Idle);
                let t = Instant::now();
                ractor_supervisor::DynamicSupervisor::spawn_child(sup.clone(), spec)
                    .await
                    .map_err(|e| anyhow::anyhow!("ractor-supervisor spawn_child: {e}"))?;
                s.record(t.elapsed());
            }
            sup.stop(None);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Subject::Kameo => {
            let mut keep = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let a = KIdle::spawn(());
                a.wait_for_startup().await;
                s.record(t.elapsed());
                keep.push(a);
            }
            for a in keep {
                a.kill();
            }
        }
    }
    Ok(s.percentile_us(0.5))
}

/// The floor under a synchronous `start_child`: a bare ractor actor that spawns a linked idle
/// child when called and answers its reference, with no spec, record or supervision. Any
/// start-and-register through a supervisor's mailbox pays this call round trip plus the spawn.
struct CallSpawner;

impl Actor for CallSpawner {
    type Msg = ractor::RpcReplyPort<ractor::ActorRef<()>>;
    type State = Vec<ractor::ActorRef<()>>;
    type Arguments = ();
    async fn pre_start(
        &self,
        _: ractor::ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ractor::ActorProcessingErr> {
        Ok(Vec::new())
    }
    async fn handle(
        &self,
        me: ractor::ActorRef<Self::Msg>,
        reply: Self::Msg,
        children: &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        let (child, _) = Actor::spawn_linked(None, Idle, (), me.get_cell()).await?;
        children.push(child.clone());
        let _ = reply.send(child);
        Ok(())
    }
    async fn post_stop(
        &self,
        _: ractor::ActorRef<Self::Msg>,
        children: &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        for c in children.drain(..) {
            c.stop(None);
        }
        Ok(())
    }
}

/// Median time of one spawn through [`CallSpawner`], in microseconds.
pub async fn spawn_floor_us(n: usize) -> anyhow::Result<f64> {
    let (spawner, _) = Actor::spawn(None, CallSpawner, ()).await?;
    let mut s = Samples::new();
    for _ in 0..n {
        let t = Instant::now();
        match spawner.call(|port| port, None).await? {
            ractor::rpc::CallResult::Success(_) => s.record(t.elapsed()),
            _ => anyhow::bail!("the floor's spawner did not answer"),
        }
    }
    spawner.stop(None);
    Ok(s.percentile_us(0.5))
}

async fn rs_dynamic_supervisor(
    name: &str,
) -> anyhow::Result<ractor::ActorRef<ractor_supervisor::DynamicSupervisorMsg>> {
    let options = ractor_supervisor::DynamicSupervisorOptions {
        max_children: None,
        max_restarts: 1000,
        max_window: Duration::from_secs(1),
        reset_after: None,
    };
    Ok(ractor_supervisor::DynamicSupervisor::spawn(name.into(), options).await?.0)
}

fn rss_bytes() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 =
        statm.split_whitespace().nth(1).ok_or_else(|| anyhow::anyhow!("statm has no RSS field"))?.parse()?;
    Ok(pages * 4096)
}

/// RSS growth per idle child over `n` children, measured in this (fresh) process.
pub async fn memory_per_child(subject: Subject, n: usize) -> anyhow::Result<f64> {
    // Warm the runtime and allocator first.
    spawn_us(subject, 100).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = rss_bytes()?;
    let mut ractor_keep = Vec::new();
    let mut kameo_keep = Vec::new();
    let mut warden_keep = None;
    let mut rs_keep = None;
    match subject {
        Subject::Warden => {
            let sup = Supervisor::start("bench-mem", SupervisorSpec::dynamic(None)).await?;
            for _ in 0..n {
                sup.start_child(ChildSpec::worker("idle", Idle, ())).await?;
            }
            warden_keep = Some(sup);
        }
        Subject::Ractor => {
            for _ in 0..n {
                ractor_keep.push(Actor::spawn(None, Idle, ()).await?.0);
            }
        }
        Subject::RactorSupervisor => {
            let sup = rs_dynamic_supervisor("bench-rs-mem").await?;
            for i in 0..n {
                let spec = crate::restart::rs_spec(format!("bench-rs-mem-{i}"), Idle);
                ractor_supervisor::DynamicSupervisor::spawn_child(sup.clone(), spec)
                    .await
                    .map_err(|e| anyhow::anyhow!("ractor-supervisor spawn_child: {e}"))?;
            }
            rs_keep = Some(sup);
        }
        Subject::Kameo => {
            for _ in 0..n {
                let a = KIdle::spawn(());
                a.wait_for_startup().await;
                kameo_keep.push(a);
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_bytes()?;
    drop((ractor_keep, kameo_keep, warden_keep, rs_keep));
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

/// How a cast-throughput subject is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CastSubject {
    /// An unsupervised ractor actor, through its `ActorRef`.
    Bare,
    /// A warden child, through its `ChildRef`.
    Supervised,
    /// A warden child with a hang deadline (watched by the watchdog), through its `ChildRef`.
    Watched,
}

/// Casts per second: `n` casts then one call.
pub async fn cast_rate(subject: CastSubject, n: usize) -> anyhow::Result<f64> {
    if subject != CastSubject::Bare {
        let mut spec = ChildSpec::worker("cast", GenActor, ());
        if subject == CastSubject::Watched {
            spec = spec.deadline(Duration::from_secs(1));
        }
        let h = spec.handle();
        let app = Supervisor::start("bench-cast", SupervisorSpec::one_for_one().child(spec)).await?;
        let t = Instant::now();
        for _ in 0..n {
            h.cast(GenMsg::Ping).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        h.call(GenMsg::Gen, None).await?;
        let rate = n as f64 / t.elapsed().as_secs_f64();
        app.shutdown().await;
        Ok(rate)
    } else {
        let (a, _) = Actor::spawn(None, GenActor, ()).await?;
        let t = Instant::now();
        for _ in 0..n {
            a.cast(GenMsg::Ping)?;
        }
        let _ = a.call(GenMsg::Gen, None).await?;
        let rate = n as f64 / t.elapsed().as_secs_f64();
        a.stop(None);
        Ok(rate)
    }
}
