//! A pool of flaky HTTP-like workers that keeps serving.
//!
//! Shows: a supervised pool of 4 replicas declared as one child of a tree; least-loaded
//! routing; workers that fail 1 request in 10 (a panic), hang on 1 in 50 (killed by the hang
//! watchdog after 300 ms) and are slow now and then; retried requests (`call`) and at-most-once
//! requests (`call_once`); a bounded queue; and the pool's counters at the end: every request
//! answered or returned with an error, none lost.
//!
//! Run: `cargo run --example flaky_pool`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use warden::pool::{Job, OnFull, PoolError, PoolSpec, Routing};
use warden::prelude::*;

/// A request like `GET /items/42`.
struct Get {
    path: String,
}

/// The response: a status and a body.
struct Response {
    status: u16,
    body: String,
}

#[derive(Clone)]
struct Backend {
    /// Decides which requests misbehave (shared by every replica).
    counter: Arc<AtomicU64>,
}

impl Actor for Backend {
    type Msg = Job<Get, Response>;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(&self, _: ActorRef<Self::Msg>, job: Self::Msg, _: &mut ()) -> Result<(), ActorProcessingErr> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        if n % 10 == 3 {
            panic!("backend bug while serving {}", job.request().path);
        }
        if n % 50 == 7 {
            std::future::pending::<()>().await; // a dependency that never answers
        }
        if n.is_multiple_of(7) {
            tokio::time::sleep(Duration::from_millis(5)).await; // slow now and then
        }
        let body = format!("item {} served by replica {}", job.request().path, job.replica());
        job.reply(Response { status: 200, body });
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Crash reports are logged as errors; keep the output to the summary.
    tracing_subscriber::fmt().with_env_filter("off").init();
    let spec = PoolSpec::new("backend", Backend { counter: Arc::new(AtomicU64::new(0)) }, (), 4)
        .routing(Routing::LeastLoaded)
        .deadline(Duration::from_millis(300))
        .capacity(64)
        .on_full(OnFull::Reject)
        .max_attempts(3)
        .intensity(1000, Duration::from_secs(1));
    let (pool_child, pool) = spec.build();
    let app = Supervisor::start("web", SupervisorSpec::one_for_one().child(pool_child)).await?;

    // 40 clients at a time (the pool holds up to 4 x 64).
    let clients = Arc::new(tokio::sync::Semaphore::new(40));
    let mut tasks = Vec::new();
    for i in 0..500u32 {
        let pool = pool.clone();
        let permit = clients.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let request = Get { path: format!("/items/{i}") };
            // Every fifth request has side effects: at most once.
            if i % 5 == 0 {
                pool.call_once(request).await
            } else {
                pool.call(request).await
            }
        }));
    }
    let (mut ok, mut failed, mut other) = (0, 0, 0);
    let mut sample = None;
    for t in tasks {
        match t.await? {
            Ok(resp) => {
                ok += 1;
                sample.get_or_insert(format!("{} {}", resp.status, resp.body));
            }
            Err(PoolError::Failed { .. }) => failed += 1,
            Err(_) => other += 1,
        }
    }
    let stats = pool.stats();
    println!("a response: {}", sample.unwrap_or_default());
    println!("500 requests: {ok} answered, {failed} failed after their attempts, {other} refused");
    println!(
        "retries {}, moved {}, shed {}, rejected {}; crash reports: {}",
        stats.retries,
        stats.moved,
        stats.shed,
        stats.rejected,
        app.crash_reports().len()
    );
    for r in &stats.replicas {
        println!("replica {}: {:?}, handled {}", r.index, r.state, r.handled);
    }
    anyhow::ensure!(ok + failed + other == 500, "a request was lost");
    app.shutdown().await;
    Ok(())
}
