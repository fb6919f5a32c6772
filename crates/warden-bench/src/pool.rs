//! Pool figures: requests per second through a 4-replica warden pool next to a
//! `ractor::factory` with 4 workers doing the same work, and request latency and lost requests
//! while one replica crashes every 100 ms.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::factory::queues::DefaultQueue;
use ractor::factory::routing::RoundRobinRouting;
use ractor::factory::{
    DiscardSettings, Factory, FactoryArguments, FactoryMessage, Job as FactoryJob, JobOptions, Worker, WorkerBuilder,
    WorkerId,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use warden_core::{Supervisor, SupervisorSpec};
use warden_pool::{Job, PoolSpec};

use crate::stats::Samples;

/// The work: a little arithmetic, the same in both pools.
fn work(x: u64) -> u64 {
    (0..16u64).fold(x, |a, i| a.wrapping_mul(6364136223846793005).wrapping_add(i))
}

/// A warden pool worker; replica 0 panics on its next request whenever `crash` is raised.
#[derive(Clone)]
struct PoolWorker {
    crash: Arc<AtomicBool>,
}

impl Actor for PoolWorker {
    type Msg = Job<u64, u64>;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(&self, _: ActorRef<Self::Msg>, job: Self::Msg, _: &mut ()) -> Result<(), ActorProcessingErr> {
        if job.replica() == 0 && self.crash.swap(false, Ordering::Relaxed) {
            panic!("benchmark crash");
        }
        let x = *job.request();
        job.reply(work(x));
        Ok(())
    }
}

struct FactoryMsg(u64, RpcReplyPort<u64>);

struct FactoryWorker;

impl Worker for FactoryWorker {
    type Key = ();
    type Message = FactoryMsg;
    type State = ();
    type Arguments = ();
    async fn pre_start(
        &self,
        _: WorkerId,
        _: &ActorRef<FactoryMessage<(), FactoryMsg>>,
        _: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(
        &self,
        _: WorkerId,
        _: &ActorRef<FactoryMessage<(), FactoryMsg>>,
        job: FactoryJob<(), FactoryMsg>,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let FactoryMsg(x, reply) = job.msg;
        let _ = reply.send(work(x));
        Ok(())
    }
}

struct Builder;
impl WorkerBuilder<FactoryWorker, ()> for Builder {
    fn build(&mut self, _: usize) -> (FactoryWorker, ()) {
        (FactoryWorker, ())
    }
}

/// Requests per second through a 4-replica warden pool, `callers` concurrent callers.
pub async fn warden_rate(n: usize, callers: usize) -> anyhow::Result<f64> {
    let spec = PoolSpec::new("bench-pool", PoolWorker { crash: Arc::new(AtomicBool::new(false)) }, (), 4);
    let (pool_child, pool) = spec.build();
    let app = Supervisor::start("bench-pool-app", SupervisorSpec::one_for_one().child(pool_child)).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..callers {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..n / callers {
                pool.call((c * n + i) as u64).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    app.shutdown().await;
    Ok(rate)
}

/// Requests per second through a `ractor::factory` with 4 workers, same callers.
pub async fn factory_rate(n: usize, callers: usize) -> anyhow::Result<f64> {
    let factory_def = Factory::<
        (),
        FactoryMsg,
        (),
        FactoryWorker,
        RoundRobinRouting<(), FactoryMsg>,
        DefaultQueue<(), FactoryMsg>,
    >::default();
    let args = FactoryArguments {
        num_initial_workers: 4,
        queue: DefaultQueue::default(),
        router: Default::default(),
        capacity_controller: None,
        dead_mans_switch: None,
        discard_handler: None,
        discard_settings: DiscardSettings::None,
        lifecycle_hooks: None,
        worker_builder: Box::new(Builder),
        stats: None,
    };
    let (factory, handle) = Actor::spawn(None, factory_def, args).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..callers {
        let factory = factory.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..n / callers {
                let x = (c * n + i) as u64;
                let (tx, rx) = ractor::concurrency::oneshot();
                factory.cast(FactoryMessage::Dispatch(FactoryJob {
                    key: (),
                    msg: FactoryMsg(x, tx.into()),
                    options: JobOptions::default(),
                    accepted: None,
                }))?;
                rx.await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    factory.stop(None);
    let _ = handle.await;
    Ok(rate)
}

/// Request latency with replica 0 crashing every 100 ms and without crashes (µs), and the
/// requests neither answered nor returned with an error within 10 s.
pub struct Failover {
    pub p99_crashing: f64,
    pub p99_calm: f64,
    pub max_crashing: f64,
    pub max_calm: f64,
    pub lost: u64,
}

/// Runs the same pool for `run` with crashes, then for `run` without, `callers` concurrent
/// callers each time.
pub async fn failover(run: Duration, callers: usize) -> anyhow::Result<Failover> {
    let crash = Arc::new(AtomicBool::new(false));
    let spec = PoolSpec::new("bench-failover", PoolWorker { crash: crash.clone() }, (), 4)
        .intensity(1_000_000, Duration::from_secs(1));
    let (pool_child, pool) = spec.build();
    let app = Supervisor::start("bench-failover-app", SupervisorSpec::one_for_one().child(pool_child)).await?;
    let mut out = Vec::new();
    for crashing in [true, false] {
        let stop = Arc::new(AtomicBool::new(false));
        let crasher = crashing.then(|| {
            let (crash, stop) = (crash.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    crash.store(true, Ordering::Relaxed);
                }
            })
        });
        let lost = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..callers {
            let (pool, lost) = (pool.clone(), lost.clone());
            tasks.push(tokio::spawn(async move {
                let mut s = Samples::new();
                let mut i = 0u64;
                while started.elapsed() < run {
                    let t = Instant::now();
                    // Answered or returned with an error counts; silence for 10 s is a loss.
                    match tokio::time::timeout(Duration::from_secs(10), pool.call(c as u64 * 1_000_000 + i)).await {
                        Ok(_) => s.record(t.elapsed()),
                        Err(_) => {
                            lost.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += 1;
                }
                s
            }));
        }
        let mut all = Samples::new();
        for t in tasks {
            all.merge(&t.await?);
        }
        stop.store(true, Ordering::Relaxed);
        if let Some(c) = crasher {
            let _ = c.await;
        }
        crash.store(false, Ordering::Relaxed); // a raise after the run must not leak into the next
        out.push((all.percentile_us(0.99), all.percentile_us(1.0), lost.load(Ordering::Relaxed)));
    }
    app.shutdown().await;
    Ok(Failover {
        p99_crashing: out[0].0,
        p99_calm: out[1].0,
        max_crashing: out[0].1,
        max_calm: out[1].1,
        lost: out[0].2 + out[1].2,
    })
}
