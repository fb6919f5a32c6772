//! One-for-all for tightly coupled children: a producer feeds a consumer that caches the
//! producer's address, so when either fails both must start again together.
//!
//! Shows: `SupervisorSpec::one_for_all()`, children of two actor types under one supervisor,
//! the stop-in-reverse / start-in-order sequence, and handles that keep working afterwards.
//!
//! Run: `cargo run --example one_for_all`

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use warden::prelude::*;

enum ConsumerMsg {
    Item(u64),
    Seen(RpcReplyPort<Vec<u64>>),
    Corrupt,
}

#[derive(Clone)]
struct Consumer;

impl Actor for Consumer {
    type Msg = ConsumerMsg;
    type State = Vec<u64>;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<ConsumerMsg>, _: ()) -> Result<Vec<u64>, ActorProcessingErr> {
        println!("  consumer starts (empty)");
        Ok(Vec::new())
    }
    async fn handle(
        &self,
        _: ActorRef<ConsumerMsg>,
        msg: ConsumerMsg,
        seen: &mut Vec<u64>,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ConsumerMsg::Item(n) => seen.push(n),
            ConsumerMsg::Seen(r) => {
                let _ = r.send(seen.clone());
            }
            ConsumerMsg::Corrupt => return Err("consumer state corrupted".into()),
        }
        Ok(())
    }
    async fn post_stop(&self, _: ActorRef<ConsumerMsg>, _: &mut Vec<u64>) -> Result<(), ActorProcessingErr> {
        println!("  consumer stops");
        Ok(())
    }
}

/// Sends the next number to the consumer on every tick.
#[derive(Clone)]
struct Producer {
    consumer: ChildRef<ConsumerMsg>,
}

impl Actor for Producer {
    type Msg = ();
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, me: ActorRef<()>, _: ()) -> Result<u64, ActorProcessingErr> {
        println!("  producer starts from 0");
        me.send_interval(Duration::from_millis(5), || ());
        Ok(0)
    }
    async fn handle(&self, _: ActorRef<()>, _: (), next: &mut u64) -> Result<(), ActorProcessingErr> {
        let _ = self.consumer.cast(ConsumerMsg::Item(*next));
        *next += 1;
        Ok(())
    }
    async fn post_stop(&self, _: ActorRef<()>, _: &mut u64) -> Result<(), ActorProcessingErr> {
        println!("  producer stops");
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let consumer = ChildSpec::worker("consumer", Consumer, ());
    let ch = consumer.handle();
    let producer = ChildSpec::worker("producer", Producer { consumer: ch.clone() }, ());
    let app = Supervisor::start("pipeline", SupervisorSpec::one_for_all().child(consumer).child(producer)).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    println!("consumer has seen {} items; corrupting it", ch.call(ConsumerMsg::Seen, None).await?.len());
    ch.cast(ConsumerMsg::Corrupt)?;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let seen = ch.call(ConsumerMsg::Seen, None).await?;
    println!(
        "after the group restart the consumer has seen {:?}... (the producer restarted from 0 too)",
        &seen[..seen.len().min(3)]
    );
    app.shutdown().await;
    Ok(())
}
