//! How a message reaches a singleton on another node: through that node's one router actor,
//! not through a proxy per singleton.
//!
//! ractor_cluster mirrors every member of a process group on every connected node: one
//! `RemoteActor` (a task and a mailbox) per remote member, created one at a time inside the
//! node session that also carries Raft's heartbeats. With a process group per singleton,
//! 10,000 singletons on 5 nodes meant about 8,000 proxies on every node, created while Raft's
//! RPCs queued behind them (the group lost its leader during a mass start). Instead each node
//! runs one [`Router`] in the process group [`ROUTER_GROUP`] and keeps a [`Directory`] of the
//! instances it runs. A caller on another node serialises its message
//! (`ractor_cluster::RactorClusterMessage`), wraps it in a [`Routed`] addressed by name and
//! sends it to the owner's router, which hands it to the local instance unchanged (a call's
//! reply port crosses the session as ractor_cluster carries any call's). So the number of
//! proxies on a node is a small constant per peer, whatever the number of singletons.
//!
//! A message for a name the node does not run (it moved, is restarting or has not started
//! yet) is dropped at the router. For a call, the router cannot give a typed answer, and
//! ractor_cluster sends nothing back for a dropped reply port: the caller's call ends at its
//! timeout (a remote call without one waits at most [`MAX_REMOTE_CALL_WAIT`]). A caller on the
//! owner's own node gets `None` from the lookup instead, or an at once failing call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::rpc::CallResult;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus, Message, MessagingErr, RpcReplyPort,
};
use serde::{Deserialize, Serialize};

/// The process group of every node's router.
pub const ROUTER_GROUP: &str = "warden.route";

/// The `variant` a routed message crosses with (its own variant travels in the header).
const ROUTED_VARIANT: &str = "warden.routed";

/// The longest a call to another node's instance waits when its caller gave no timeout: a
/// call the owner's router dropped would otherwise wait until the session ends.
pub const MAX_REMOTE_CALL_WAIT: Duration = Duration::from_secs(60);

/// The instances this node runs, by singleton name: at most one entry per singleton spec the
/// node was started with (an instance replaces its predecessor's entry when it starts, and
/// removes its own when it stops).
#[derive(Clone, Default)]
pub struct Directory {
    cells: Arc<Mutex<HashMap<String, Entry>>>,
}

/// A running instance and its revocation flag (set by the host when the grant is gone).
struct Entry {
    cell: ActorCell,
    revoked: Arc<AtomicBool>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").field("entries", &self.len()).finish()
    }
}

impl Directory {
    fn cells(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.cells.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `cell` as the running instance of `name`, unless `revoked` is already set (an
    /// instance killed while it was still starting must not replace its successor's entry).
    pub(crate) fn insert(&self, name: &str, cell: ActorCell, revoked: &Arc<AtomicBool>) {
        let mut cells = self.cells();
        // Checked under the lock, so a revocation before the insert is always seen.
        if !revoked.load(Ordering::Acquire) {
            cells.insert(name.to_string(), Entry { cell, revoked: revoked.clone() });
        }
    }

    /// Forgets `name`'s entry if it is still the actor `id` (a newer instance's entry stays).
    pub(crate) fn remove(&self, name: &str, id: ActorId) {
        let mut cells = self.cells();
        if cells.get(name).is_some_and(|e| e.cell.get_id() == id) {
            cells.remove(name);
        }
    }

    /// The running instance of `name` on this node, if any. An entry whose actor stopped
    /// without removing it (a kill, a panic) or whose grant was revoked is dropped here.
    pub fn get(&self, name: &str) -> Option<ActorCell> {
        let mut cells = self.cells();
        let entry = cells.get(name)?;
        if entry.cell.get_status() >= ActorStatus::Stopping || entry.revoked.load(Ordering::Acquire) {
            cells.remove(name);
            return None;
        }
        Some(entry.cell.clone())
    }

    /// How many instances are recorded.
    pub fn len(&self) -> usize {
        self.cells().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What travels beside a routed message's payload.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    /// The singleton it is for.
    name: String,
    /// The variant the message's own serialisation gave.
    variant: String,
    /// The message's own metadata.
    metadata: Option<Vec<u8>>,
}

/// A serialised message for the singleton `name`, on its way to the router of the node that
/// runs it.
#[derive(Debug)]
pub struct Routed {
    name: String,
    msg: SerializedMessage,
}

impl Routed {
    /// Wraps `msg` for the singleton `name`. A call reply (which only node sessions make) is
    /// refused.
    pub fn new(name: &str, msg: SerializedMessage) -> Result<Routed, BoxedDowncastErr> {
        match msg {
            SerializedMessage::CallReply(..) => Err(BoxedDowncastErr),
            msg => Ok(Routed { name: name.to_string(), msg }),
        }
    }

    fn header(name: String, variant: String, metadata: Option<Vec<u8>>) -> Option<Vec<u8>> {
        // Encoding a struct of strings and bytes cannot fail; `None` decodes as an error there.
        rmp_serde::to_vec(&Header { name, variant, metadata }).ok()
    }
}

// Hand-written: ractor_cluster's derive makes one payload per variant, while a routed message
// carries another message's payload untouched (no second copy) and its header beside it.
impl Message for Routed {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        let variant = ROUTED_VARIANT.to_string();
        match self.msg {
            SerializedMessage::Cast { variant: inner, args, metadata } => {
                Ok(SerializedMessage::Cast { variant, args, metadata: Routed::header(self.name, inner, metadata) })
            }
            SerializedMessage::Call { variant: inner, args, reply, metadata } => Ok(SerializedMessage::Call {
                variant,
                args,
                reply,
                metadata: Routed::header(self.name, inner, metadata),
            }),
            SerializedMessage::CallReply(..) => Err(BoxedDowncastErr),
        }
    }

    fn deserialize(msg: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        let decode = |metadata: Option<Vec<u8>>| -> Result<Header, BoxedDowncastErr> {
            let bytes = metadata.ok_or(BoxedDowncastErr)?;
            rmp_serde::from_slice(&bytes).map_err(|_| BoxedDowncastErr)
        };
        match msg {
            SerializedMessage::Cast { variant, args, metadata } if variant == ROUTED_VARIANT => {
                let h = decode(metadata)?;
                Ok(Routed {
                    name: h.name,
                    msg: SerializedMessage::Cast { variant: h.variant, args, metadata: h.metadata },
                })
            }
            SerializedMessage::Call { variant, args, reply, metadata } if variant == ROUTED_VARIANT => {
                let h = decode(metadata)?;
                let msg = SerializedMessage::Call { variant: h.variant, args, reply, metadata: h.metadata };
                Ok(Routed { name: h.name, msg })
            }
            _ => Err(BoxedDowncastErr),
        }
    }
}

/// A node's router: hands each [`Routed`] message to the local instance it names. Its work per
/// message is a map lookup and a send, so its mailbox drains as fast as the node sessions
/// fill it.
pub struct Router;

impl Actor for Router {
    type Msg = Routed;
    type State = Directory;
    type Arguments = Directory;

    async fn pre_start(&self, _: ActorRef<Routed>, directory: Directory) -> Result<Directory, ActorProcessingErr> {
        Ok(directory)
    }

    async fn post_start(&self, me: ActorRef<Routed>, _: &mut Directory) -> Result<(), ActorProcessingErr> {
        ractor::pg::join(ROUTER_GROUP.to_string(), vec![me.get_cell()]);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<Routed>,
        routed: Routed,
        directory: &mut Directory,
    ) -> Result<(), ActorProcessingErr> {
        match directory.get(&routed.name) {
            // A stopped instance refuses it. Either way a call's reply port is dropped here; a
            // caller on another node then waits its timeout (nothing crosses back).
            Some(cell) => {
                if cell.send_serialized(routed.msg).is_err() {
                    tracing::debug!(target: "warden::cluster", name = %routed.name, "routed message for a stopped instance dropped");
                }
            }
            None => {
                tracing::debug!(target: "warden::cluster", name = %routed.name, "routed message for an instance not here dropped")
            }
        }
        Ok(())
    }
}

enum To<M: Message> {
    Local(ActorRef<M>),
    Remote(ActorRef<Routed>),
}

/// The running instance of a singleton, on this node or another: cast to it and call it as
/// to an [`ActorRef`]. From another node, its messages must cross nodes
/// (`ractor_cluster::RactorClusterMessage`); a message that cannot fails with
/// [`MessagingErr::InvalidActorType`].
pub struct SingletonRef<M: Message> {
    name: String,
    to: To<M>,
}

impl<M: Message> Clone for SingletonRef<M> {
    fn clone(&self) -> Self {
        let to = match &self.to {
            To::Local(a) => To::Local(a.clone()),
            To::Remote(r) => To::Remote(r.clone()),
        };
        SingletonRef { name: self.name.clone(), to }
    }
}

impl<M: Message> std::fmt::Debug for SingletonRef<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingletonRef").field("name", &self.name).field("local", &self.is_local()).finish()
    }
}

impl<M: Message> SingletonRef<M> {
    pub(crate) fn local(name: &str, actor: ActorRef<M>) -> Self {
        SingletonRef { name: name.to_string(), to: To::Local(actor) }
    }

    pub(crate) fn remote(name: &str, router: ActorRef<Routed>) -> Self {
        SingletonRef { name: name.to_string(), to: To::Remote(router) }
    }

    /// The singleton's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the instance runs on this node.
    pub fn is_local(&self) -> bool {
        matches!(self.to, To::Local(_))
    }

    /// Sends `msg` without waiting. `Ok` means it was handed on (to the local actor, or to the
    /// session towards the owner's router), not that it arrived.
    pub fn cast(&self, msg: M) -> Result<(), MessagingErr<M>> {
        match &self.to {
            To::Local(actor) => actor.cast(msg),
            To::Remote(router) => self.send_remote(router, msg),
        }
    }

    /// Serialises `msg` and sends it, addressed to this singleton, to the owner's router.
    fn send_remote(&self, router: &ActorRef<Routed>, msg: M) -> Result<(), MessagingErr<M>> {
        let serialized = msg.serialize().map_err(|_| MessagingErr::InvalidActorType)?;
        let routed = Routed::new(&self.name, serialized).map_err(|_| MessagingErr::InvalidActorType)?;
        router.cast(routed).map_err(|_| MessagingErr::ChannelClosed)
    }

    /// Calls the instance: `build` makes the message around the reply port, and the answer
    /// is awaited for at most `timeout` (none: until the port closes, or, to another node,
    /// at most [`MAX_REMOTE_CALL_WAIT`]). A call to another node that its router dropped (the
    /// instance is not there) ends only at the timeout, with [`CallResult::Timeout`].
    pub async fn call<R, F>(&self, build: F, timeout: Option<Duration>) -> Result<CallResult<R>, MessagingErr<M>>
    where
        R: Send + 'static,
        F: FnOnce(RpcReplyPort<R>) -> M,
    {
        let router = match &self.to {
            To::Local(actor) => return actor.call(build, timeout).await,
            To::Remote(router) => router,
        };
        let wait = timeout.unwrap_or(MAX_REMOTE_CALL_WAIT);
        let (tx, rx) = ractor::concurrency::oneshot();
        let port: RpcReplyPort<R> = (tx, wait).into();
        self.send_remote(router, build(port))?;
        Ok(match tokio::time::timeout(wait, rx).await {
            Ok(answer) => answer.map_or(CallResult::SenderError, CallResult::Success),
            Err(_) => CallResult::Timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(ractor_cluster::RactorClusterMessage)]
    enum EchoMsg {
        Note(String),
        #[rpc]
        Double(u64, RpcReplyPort<u64>),
    }

    struct Echo;

    impl Actor for Echo {
        type Msg = EchoMsg;
        type State = Vec<String>;
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<EchoMsg>, _: ()) -> Result<Vec<String>, ActorProcessingErr> {
            Ok(Vec::new())
        }
        async fn handle(
            &self,
            _: ActorRef<EchoMsg>,
            msg: EchoMsg,
            _: &mut Vec<String>,
        ) -> Result<(), ActorProcessingErr> {
            match msg {
                EchoMsg::Note(s) => NOTES.lock().unwrap_or_else(PoisonError::into_inner).push(s),
                EchoMsg::Double(n, reply) => {
                    let _ = reply.send(n * 2);
                }
            }
            Ok(())
        }
    }

    static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// What a node session does with a routed message: serialise it, and on the other side
    /// deserialise it into the router's mailbox.
    fn across(routed: Routed) -> Routed {
        Routed::deserialize(routed.serialize().expect("serialises")).expect("deserialises")
    }

    #[tokio::test]
    async fn a_routed_cast_and_call_reach_the_named_instance_through_the_serialised_form() {
        let (echo, _) = Actor::spawn(None, Echo, ()).await.expect("echo starts");
        let directory = Directory::default();
        directory.insert("echo", echo.get_cell(), &Arc::default());
        let (router, _) = Actor::spawn(None, Router, directory.clone()).await.expect("router starts");

        // The caller's half, then the wire, then the router.
        let note = EchoMsg::Note("hello".into()).serialize().expect("a cast serialises");
        let routed = across(Routed::new("echo", note).expect("wraps"));
        assert_eq!(routed.name, "echo");
        router.cast(routed).expect("router takes it");

        let (ptx, prx) = ractor::concurrency::oneshot();
        let port: RpcReplyPort<u64> = (ptx, Duration::from_secs(5)).into();
        let call = EchoMsg::Double(21, port).serialize().expect("a call serialises");
        router.cast(across(Routed::new("echo", call).expect("wraps"))).expect("router takes it");
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), prx).await.expect("answered").expect("a reply"), 42);
        assert_eq!(*NOTES.lock().unwrap_or_else(PoisonError::into_inner), vec!["hello".to_string()]);

        // A name the node does not run: the call's port closes instead of hanging.
        let (ptx, prx) = ractor::concurrency::oneshot();
        let call = EchoMsg::Double(1, ptx.into()).serialize().expect("a call serialises");
        router.cast(across(Routed::new("elsewhere", call).expect("wraps"))).expect("router takes it");
        assert!(tokio::time::timeout(Duration::from_secs(5), prx).await.expect("settled").is_err());

        // An instance that stopped: the same.
        echo.stop_and_wait(None, None).await.expect("echo stops");
        let (ptx, prx) = ractor::concurrency::oneshot();
        let call = EchoMsg::Double(1, ptx.into()).serialize().expect("a call serialises");
        router.cast(across(Routed::new("echo", call).expect("wraps"))).expect("router takes it");
        assert!(tokio::time::timeout(Duration::from_secs(5), prx).await.expect("settled").is_err());
        router.stop(None);
    }

    #[test]
    fn only_routed_messages_decode_as_routed() {
        let plain = SerializedMessage::Cast { variant: "Note".into(), args: vec![1], metadata: None };
        assert!(Routed::deserialize(plain).is_err());
        let no_header = SerializedMessage::Cast { variant: ROUTED_VARIANT.into(), args: vec![], metadata: None };
        assert!(Routed::deserialize(no_header).is_err());
        let bad_header =
            SerializedMessage::Cast { variant: ROUTED_VARIANT.into(), args: vec![], metadata: Some(vec![0xc1]) };
        assert!(Routed::deserialize(bad_header).is_err());
        assert!(Routed::new("x", SerializedMessage::CallReply(1, vec![])).is_err());
    }

    #[test]
    fn a_directory_entry_is_replaced_only_by_a_live_instance_and_removed_only_by_its_own() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let (old, _) = Actor::spawn(None, Echo, ()).await.expect("starts");
            let (new, _) = Actor::spawn(None, Echo, ()).await.expect("starts");
            let d = Directory::default();
            let (old_revoked, new_revoked) = (Arc::new(AtomicBool::new(false)), Arc::default());
            d.insert("a", old.get_cell(), &old_revoked);
            d.insert("a", new.get_cell(), &new_revoked);
            d.remove("a", old.get_id());
            assert_eq!(d.get("a").map(|c| c.get_id()), Some(new.get_id()), "the newer entry stays");
            // The old instance, killed while still starting, reaches its post_start last.
            old_revoked.store(true, Ordering::Release);
            d.insert("a", old.get_cell(), &old_revoked);
            assert_eq!(d.get("a").map(|c| c.get_id()), Some(new.get_id()), "a revoked instance replaces nothing");
            // Once the running one's grant is revoked, the lookup no longer answers it.
            new_revoked.store(true, Ordering::Release);
            assert!(d.get("a").is_none());
            assert!(d.is_empty());
            old.stop(None);
            new.stop(None);
        });
    }

    /// Stands in for a node session that holds a routed call's reply port and never answers
    /// (what a real session does for a call its peer's router dropped): it keeps every message.
    struct Silent;

    impl Actor for Silent {
        type Msg = Routed;
        type State = Vec<Routed>;
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<Routed>, _: ()) -> Result<Vec<Routed>, ActorProcessingErr> {
            Ok(Vec::new())
        }
        async fn handle(
            &self,
            _: ActorRef<Routed>,
            msg: Routed,
            kept: &mut Vec<Routed>,
        ) -> Result<(), ActorProcessingErr> {
            kept.push(msg);
            Ok(())
        }
    }

    #[test]
    fn a_remote_call_without_a_timeout_ends_at_max_remote_call_wait() {
        // Paused time: the 60 s pass at once, and the measured wait is exact.
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("runtime");
        rt.block_on(async {
            let (silent, _) = Actor::spawn(None, Silent, ()).await.expect("starts");
            let remote: SingletonRef<EchoMsg> = SingletonRef::remote("echo", silent.clone());
            let started = tokio::time::Instant::now();
            let outcome =
                tokio::time::timeout(MAX_REMOTE_CALL_WAIT * 2, remote.call(|port| EchoMsg::Double(1, port), None))
                    .await
                    .expect("the call ended by itself");
            assert!(matches!(outcome, Ok(CallResult::Timeout)), "{:?}", outcome.map(|r| r.is_success()));
            assert_eq!(started.elapsed(), MAX_REMOTE_CALL_WAIT, "ended at the bound, neither sooner nor later");
            // A caller's own timeout wins.
            let started = tokio::time::Instant::now();
            let short = Duration::from_secs(3);
            let outcome = remote.call(|port| EchoMsg::Double(1, port), Some(short)).await;
            assert!(matches!(outcome, Ok(CallResult::Timeout)));
            assert_eq!(started.elapsed(), short);
            silent.stop(None);
        });
    }
}
