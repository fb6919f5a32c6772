//! The actor hosting one replica: it runs the user's worker, lets a job through only if the
//! pool still wants this replica to run it, and tells the pool when the replica goes down or
//! comes back.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::job::Job;
use crate::pool::PoolInner;

/// Wraps the user's worker `W` as replica `index` of a pool.
pub(crate) struct Replica<W, Req: Send + Sync + 'static, Rep: Send + 'static> {
    pub inner: W,
    pub pool: Weak<PoolInner<Req, Rep>>,
    pub index: usize,
}

impl<W: Clone, Req: Send + Sync + 'static, Rep: Send + 'static> Clone for Replica<W, Req, Rep> {
    fn clone(&self) -> Self {
        Replica { inner: self.inner.clone(), pool: self.pool.clone(), index: self.index }
    }
}

/// Marks the replica down if the handler does not come back normally: on a panic (unwinding),
/// an error, or a kill (the task is dropped mid-handler).
struct DownOnFailure<Req: Send + Sync + 'static, Rep: Send + 'static> {
    pool: Option<Arc<PoolInner<Req, Rep>>>,
    index: usize,
}

impl<Req: Send + Sync + 'static, Rep: Send + 'static> Drop for DownOnFailure<Req, Rep> {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.replica_down(self.index);
        }
    }
}

impl<W, Req, Rep> Actor for Replica<W, Req, Rep>
where
    W: Actor<Msg = Job<Req, Rep>>,
    Req: Send + Sync + 'static,
    Rep: Send + 'static,
{
    type Msg = Job<Req, Rep>;
    type State = W::State;
    type Arguments = W::Arguments;

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, args: W::Arguments) -> Result<W::State, ActorProcessingErr> {
        self.inner.pre_start(myself, args).await
    }

    async fn post_start(&self, myself: ActorRef<Self::Msg>, st: &mut W::State) -> Result<(), ActorProcessingErr> {
        self.inner.post_start(myself, st).await?;
        if let Some(slot) = self.pool.upgrade().and_then(|p| p.slot(self.index)) {
            slot.up.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        job: Job<Req, Rep>,
        st: &mut W::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(pool) = self.pool.upgrade() else {
            job.defuse();
            return Ok(());
        };
        if !pool.claim(&job) {
            // Moved elsewhere, shed or answered meanwhile: not ours to run.
            job.defuse();
            return Ok(());
        }
        if let Some(slot) = pool.slot(self.index) {
            pool.prune(&slot);
        }
        let mut guard = DownOnFailure { pool: Some(pool), index: self.index };
        let result = self.inner.handle(myself, job, st).await;
        if result.is_ok() {
            guard.pool = None;
        }
        result
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        st: &mut W::State,
    ) -> Result<(), ActorProcessingErr> {
        self.inner.handle_supervisor_evt(myself, evt, st).await
    }

    async fn post_stop(&self, myself: ActorRef<Self::Msg>, st: &mut W::State) -> Result<(), ActorProcessingErr> {
        if let Some(slot) = self.pool.upgrade().and_then(|p| p.slot(self.index)) {
            slot.up.store(false, Ordering::Relaxed);
        }
        self.inner.post_stop(myself, st).await
    }
}
