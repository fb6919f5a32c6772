//! The actors measured: one tiny "generation" actor per framework, with the same behaviour.
//!
//! Each incarnation takes a fresh number from one global counter when it starts; a `Gen`
//! request answers it; a `Poison` message panics. Restart latency is then "poison sent until
//! a higher generation answers", the method of `performance.md`.

use std::sync::atomic::{AtomicU64, Ordering};

use ractor::{ActorProcessingErr, ActorRef, RpcReplyPort};

pub static GENERATION: AtomicU64 = AtomicU64::new(1);

pub fn next_generation() -> u64 {
    GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// Messages of the ractor-based generation actor (used by warden, bare ractor and
/// ractor-supervisor alike).
pub enum GenMsg {
    Gen(RpcReplyPort<u64>),
    Poison,
    Ping,
    /// Awaits forever: a hung handler.
    Stuck,
}

#[derive(Clone)]
pub struct GenActor;

impl ractor::Actor for GenActor {
    type Msg = GenMsg;
    type State = (u64, u64);
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<GenMsg>, _: ()) -> Result<(u64, u64), ActorProcessingErr> {
        Ok((next_generation(), 0))
    }

    async fn handle(&self, _: ActorRef<GenMsg>, msg: GenMsg, st: &mut (u64, u64)) -> Result<(), ActorProcessingErr> {
        match msg {
            GenMsg::Gen(r) => {
                let _ = r.send(st.0);
            }
            GenMsg::Poison => panic!("poison"),
            GenMsg::Ping => st.1 += 1,
            GenMsg::Stuck => std::future::pending::<()>().await,
        }
        Ok(())
    }
}

/// An idle ractor actor, for spawn and memory figures.
#[derive(Clone)]
pub struct Idle;

impl ractor::Actor for Idle {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

pub mod kameo_subjects {
    //! The same actors for kameo.
    use kameo::actor::{Actor, ActorRef};
    use kameo::error::Infallible;
    use kameo::message::{Context, Message};

    pub struct KGen {
        generation: u64,
    }

    impl Actor for KGen {
        type Args = ();
        type Error = Infallible;
        async fn on_start(_: (), _: ActorRef<Self>) -> Result<Self, Infallible> {
            Ok(KGen { generation: super::next_generation() })
        }
    }

    pub struct Gen;
    pub struct Poison;

    impl Message<Gen> for KGen {
        type Reply = u64;
        async fn handle(&mut self, _: Gen, _: &mut Context<Self, u64>) -> u64 {
            self.generation
        }
    }

    impl Message<Poison> for KGen {
        type Reply = ();
        async fn handle(&mut self, _: Poison, _: &mut Context<Self, ()>) {
            panic!("poison");
        }
    }

    pub struct KIdle;

    impl Actor for KIdle {
        type Args = ();
        type Error = Infallible;
        async fn on_start(_: (), _: ActorRef<Self>) -> Result<Self, Infallible> {
            Ok(KIdle)
        }
    }
}
