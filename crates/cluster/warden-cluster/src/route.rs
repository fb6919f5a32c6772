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
//! yet) is dropped at the router. A call can end the same way: the instance stops (a crash, a
//! fence) with the call in its mailbox or its handler. ractor_cluster sends nothing back for a
//! dropped reply port, and the router cannot forge a typed answer, so a caller would wait its
//! whole timeout. Instead each remote call carries its origin (the calling node's name and a
//! call id the caller keeps in its [`PendingCalls`]); the owner's router watches the reply port
//! it hands on, and when the call is dropped it tells the caller's router, which ends the call
//! at once with [`CallResult::SenderError`], as a local call to a stopped actor ends. Only a
//! lost notice (the caller's node unreachable, its registry full, or the owner's router
//! watching [`MAX_WATCHED_CALLS`] calls already) leaves the call to its timeout (a remote call
//! without one waits at most [`MAX_REMOTE_CALL_WAIT`]). A caller on the
//! owner's own node gets `None` from the lookup instead, or an at once failing call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// The most remote calls a node tracks for "dropped" notices at once. A call past the bound is
/// still sent; it only ends at its timeout if it is dropped.
pub const MAX_PENDING_REMOTE_CALLS: usize = 65_536;

/// The most calls a node's router watches at once for their callers (see [`Watches`]). A call
/// past the bound is handed to the instance with its caller's own port: it is still answered,
/// but should the instance drop it, it ends only at its caller's timeout.
pub const MAX_WATCHED_CALLS: usize = 65_536;

/// The `variant` of a notice that a call was dropped.
const DROPPED_VARIANT: &str = "warden.dropped";

/// The remote calls this node waits on, by call id: each one's way to be ended early when
/// the owner's router reports it dropped. Bounded by [`MAX_PENDING_REMOTE_CALLS`]; an entry goes
/// when its call ends, however it ends.
#[derive(Clone)]
pub struct PendingCalls {
    inner: Arc<Mutex<Pending>>,
}

impl Default for PendingCalls {
    /// Call ids start at a random number, so a late notice for a call of an earlier process
    /// under the same node name is unlikely to name a call of this one (it would only end that
    /// call early, as dropped).
    fn default() -> Self {
        use std::hash::BuildHasher;
        let start = std::collections::hash_map::RandomState::new().hash_one(std::process::id()) >> 1;
        PendingCalls { inner: Arc::new(Mutex::new(Pending { next: start, waiting: HashMap::new() })) }
    }
}

struct Pending {
    next: u64,
    waiting: HashMap<u64, tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for PendingCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCalls").field("waiting", &self.len()).finish()
    }
}

impl PendingCalls {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new call's id and the signal that it was dropped; `None` when
    /// [`MAX_PENDING_REMOTE_CALLS`] are tracked already.
    fn register(&self) -> Option<(u64, tokio::sync::oneshot::Receiver<()>)> {
        let mut p = self.lock();
        if p.waiting.len() >= MAX_PENDING_REMOTE_CALLS {
            return None;
        }
        p.next = p.next.wrapping_add(1);
        let id = p.next;
        let (tx, rx) = tokio::sync::oneshot::channel();
        p.waiting.insert(id, tx);
        Some((id, rx))
    }

    fn forget(&self, id: u64) {
        self.lock().waiting.remove(&id);
    }

    /// Ends call `id` early, if it still waits.
    fn dropped(&self, id: u64) {
        if let Some(tx) = self.lock().waiting.remove(&id) {
            let _ = tx.send(());
        }
    }

    /// How many calls are tracked.
    pub fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A tracked call's entry in its node's [`PendingCalls`], forgotten when this is dropped.
struct Tracked<'a> {
    pending: &'a PendingCalls,
    call: u64,
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.pending.forget(self.call);
    }
}

/// The calls from other nodes a router watches (each watch is a task and a oneshot that live
/// until the call is answered, dropped or timed out), bounded by [`MAX_WATCHED_CALLS`].
#[derive(Clone, Debug)]
pub struct Watches {
    running: Arc<AtomicUsize>,
    limit: usize,
}

impl Default for Watches {
    fn default() -> Self {
        Watches::with_limit(MAX_WATCHED_CALLS)
    }
}

impl Watches {
    fn with_limit(limit: usize) -> Self {
        Watches { running: Arc::default(), limit }
    }

    /// A new watch, or `None` when the bound is reached.
    fn start(&self) -> Option<Watch> {
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.limit).then_some(n + 1))
            .ok()
            .map(|_| Watch(self.running.clone()))
    }

    /// How many calls are watched.
    pub fn len(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One watched call's place in its router's [`Watches`], given back when this is dropped.
struct Watch(Arc<AtomicUsize>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a remote call came from: the calling node and its id for the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Origin {
    node: String,
    call: u64,
}

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
    /// For a call, where it came from (older nodes sent none).
    #[serde(default)]
    origin: Option<Origin>,
}

/// A serialised message for the singleton `name`, on its way to the router of the node that
/// runs it.
#[derive(Debug)]
pub struct Routed {
    name: String,
    msg: SerializedMessage,
    origin: Option<Origin>,
}

impl Routed {
    /// Wraps `msg` for the singleton `name`. A call reply (which only node sessions make) is
    /// refused.
    pub fn new(name: &str, msg: SerializedMessage) -> Result<Routed, BoxedDowncastErr> {
        match msg {
            SerializedMessage::CallReply(..) => Err(BoxedDowncastErr),
            msg => Ok(Routed { name: name.to_string(), msg, origin: None }),
        }
    }

    /// The notice, for the caller's router, that call `call` of that node was dropped.
    fn dropped(call: u64) -> Routed {
        let msg = SerializedMessage::Cast { variant: DROPPED_VARIANT.into(), args: Vec::new(), metadata: None };
        Routed { name: String::new(), msg, origin: Some(Origin { node: String::new(), call }) }
    }

    fn header(name: String, variant: String, metadata: Option<Vec<u8>>, origin: Option<Origin>) -> Option<Vec<u8>> {
        // Encoding a struct of strings and bytes cannot fail; `None` decodes as an error there.
        rmp_serde::to_vec(&Header { name, variant, metadata, origin }).ok()
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
            SerializedMessage::Cast { variant: inner, args, metadata } => Ok(SerializedMessage::Cast {
                variant,
                args,
                metadata: Routed::header(self.name, inner, metadata, self.origin),
            }),
            SerializedMessage::Call { variant: inner, args, reply, metadata } => Ok(SerializedMessage::Call {
                variant,
                args,
                reply,
                metadata: Routed::header(self.name, inner, metadata, self.origin),
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
                    origin: h.origin,
                })
            }
            SerializedMessage::Call { variant, args, reply, metadata } if variant == ROUTED_VARIANT => {
                let h = decode(metadata)?;
                let msg = SerializedMessage::Call { variant: h.variant, args, reply, metadata: h.metadata };
                Ok(Routed { name: h.name, msg, origin: h.origin })
            }
            _ => Err(BoxedDowncastErr),
        }
    }
}

/// How a router finds the router of another node, by the node's name (for "dropped" notices).
pub type RouterOf = Arc<dyn Fn(&str) -> Option<ActorRef<Routed>> + Send + Sync>;

/// What a [`Router`] works with.
#[derive(Clone)]
pub struct RouterParts {
    /// The instances this node runs.
    pub directory: Directory,
    /// The calls this node waits on (ended early by notices from other routers).
    pub pending: PendingCalls,
    /// Finds another node's router.
    pub router_of: RouterOf,
    /// The calls from other nodes this router watches for their callers.
    pub watches: Watches,
}

/// A node's router: hands each [`Routed`] message to the local instance it names, and tells
/// a remote caller when its call was dropped (see the module documentation). Its work per
/// message is a map lookup and a send (and, for a call, a task that watches the reply port),
/// so its mailbox drains as fast as the node sessions fill it.
pub struct Router;

impl Router {
    /// Tells the caller's router that its call was dropped here.
    fn notify(parts: &RouterParts, origin: &Origin) {
        match (parts.router_of)(&origin.node) {
            Some(router) => {
                let _ = router.cast(Routed::dropped(origin.call));
            }
            None => {
                tracing::debug!(target: "warden::cluster", node = %origin.node, "a dropped call's caller is not reachable")
            }
        }
    }
}

impl Actor for Router {
    type Msg = Routed;
    type State = RouterParts;
    type Arguments = RouterParts;

    async fn pre_start(&self, _: ActorRef<Routed>, parts: RouterParts) -> Result<RouterParts, ActorProcessingErr> {
        Ok(parts)
    }

    async fn post_start(&self, me: ActorRef<Routed>, _: &mut RouterParts) -> Result<(), ActorProcessingErr> {
        ractor::pg::join(ROUTER_GROUP.to_string(), vec![me.get_cell()]);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<Routed>,
        routed: Routed,
        parts: &mut RouterParts,
    ) -> Result<(), ActorProcessingErr> {
        let Routed { name, msg, origin } = routed;
        if matches!(&msg, SerializedMessage::Cast { variant, .. } if variant == DROPPED_VARIANT) {
            if let Some(o) = origin {
                parts.pending.dropped(o.call);
            }
            return Ok(());
        }
        let Some(cell) = parts.directory.get(&name) else {
            tracing::debug!(target: "warden::cluster", %name, "routed message for an instance not here dropped");
            if let (Some(o), SerializedMessage::Call { .. }) = (&origin, &msg) {
                Router::notify(parts, o);
            }
            return Ok(());
        };
        let watch = match (&msg, &origin) {
            (SerializedMessage::Call { .. }, Some(_)) => {
                let watch = parts.watches.start();
                if watch.is_none() {
                    tracing::debug!(target: "warden::cluster", %name, limit = parts.watches.limit, "call not watched: the router watches as many as it may");
                }
                watch
            }
            _ => None,
        };
        let msg = match (msg, origin, watch) {
            // Hand the instance a port of our own, and watch it: a reply goes on to the
            // caller, a drop is reported to the caller's router.
            (SerializedMessage::Call { variant, args, reply, metadata }, Some(origin), Some(watch)) => {
                let wait = reply.get_timeout().unwrap_or(MAX_REMOTE_CALL_WAIT);
                let (tx, rx) = ractor::concurrency::oneshot();
                let parts = parts.clone();
                tokio::spawn(async move {
                    let _watch = watch;
                    match tokio::time::timeout(wait, rx).await {
                        Ok(Ok(answer)) => {
                            let _ = reply.send(answer);
                        }
                        Ok(Err(_)) => Router::notify(&parts, &origin),
                        Err(_) => {} // the caller's own timeout ends it
                    }
                });
                SerializedMessage::Call { variant, args, reply: (tx, wait).into(), metadata }
            }
            (msg, _, _) => msg,
        };
        // A stopped instance refuses it (the port it held is dropped, and reported).
        if cell.send_serialized(msg).is_err() {
            tracing::debug!(target: "warden::cluster", %name, "routed message for a stopped instance dropped");
        }
        Ok(())
    }
}

enum To<M: Message> {
    Local(ActorRef<M>),
    Remote(ActorRef<Routed>, Option<Caller>),
}

/// A remote caller's side of "dropped" notices: its node's name and its pending calls.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) node: String,
    pub(crate) pending: PendingCalls,
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
            To::Remote(r, c) => To::Remote(r.clone(), c.clone()),
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

    pub(crate) fn remote(name: &str, router: ActorRef<Routed>, caller: Option<Caller>) -> Self {
        SingletonRef { name: name.to_string(), to: To::Remote(router, caller) }
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
            To::Remote(router, _) => self.send_remote(router, msg, None),
        }
    }

    /// Serialises `msg` and sends it, addressed to this singleton, to the owner's router.
    fn send_remote(&self, router: &ActorRef<Routed>, msg: M, origin: Option<Origin>) -> Result<(), MessagingErr<M>> {
        let serialized = msg.serialize().map_err(|_| MessagingErr::InvalidActorType)?;
        let mut routed = Routed::new(&self.name, serialized).map_err(|_| MessagingErr::InvalidActorType)?;
        routed.origin = origin;
        router.cast(routed).map_err(|_| MessagingErr::ChannelClosed)
    }

    /// Calls the instance: `build` makes the message around the reply port, and the answer
    /// is awaited for at most `timeout` (none: until the port closes, or, to another node,
    /// at most [`MAX_REMOTE_CALL_WAIT`]). A call to another node that was dropped there (the
    /// instance is not there, or stopped before it answered) ends with
    /// [`CallResult::SenderError`] as soon as that node's notice arrives, as a local call to a
    /// stopped actor does; without a notice it ends at the timeout, with
    /// [`CallResult::Timeout`].
    pub async fn call<R, F>(&self, build: F, timeout: Option<Duration>) -> Result<CallResult<R>, MessagingErr<M>>
    where
        R: Send + 'static,
        F: FnOnce(RpcReplyPort<R>) -> M,
    {
        let (router, caller) = match &self.to {
            To::Local(actor) => return actor.call(build, timeout).await,
            To::Remote(router, caller) => (router, caller),
        };
        let wait = timeout.unwrap_or(MAX_REMOTE_CALL_WAIT);
        let (tx, rx) = ractor::concurrency::oneshot();
        let port: RpcReplyPort<R> = (tx, wait).into();
        // The entry goes when the call ends, or when its future is dropped (a caller's own
        // timeout around this call, a cancelled task).
        let tracked = caller.as_ref().and_then(|c| {
            c.pending.register().map(|(call, dropped)| (Tracked { pending: &c.pending, call }, c, dropped))
        });
        let origin = tracked.as_ref().map(|(t, c, _)| Origin { node: c.node.clone(), call: t.call });
        self.send_remote(router, build(port), origin)?;
        let outcome = match tracked {
            Some((_entry, _, dropped)) => tokio::select! {
                answer = rx => answer.map_or(CallResult::SenderError, CallResult::Success),
                _ = dropped => CallResult::SenderError,
                _ = tokio::time::sleep(wait) => CallResult::Timeout,
            },
            None => match tokio::time::timeout(wait, rx).await {
                Ok(answer) => answer.map_or(CallResult::SenderError, CallResult::Success),
                Err(_) => CallResult::Timeout,
            },
        };
        Ok(outcome)
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

    /// A router's parts; `back` stands in for the caller's router, found by any name.
    fn parts(directory: Directory, pending: PendingCalls, back: Option<ActorRef<Routed>>) -> RouterParts {
        RouterParts {
            directory,
            pending,
            router_of: Arc::new(move |_: &str| back.clone()),
            watches: Watches::default(),
        }
    }

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
        let (router, _) = Actor::spawn(None, Router, parts(directory.clone(), PendingCalls::default(), None))
            .await
            .expect("router starts");

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
            let remote: SingletonRef<EchoMsg> = SingletonRef::remote("echo", silent.clone(), None);
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

    /// Stands in for a node session towards `to`: each message crosses in its serialised form,
    /// and a call's reply port is replaced as a session replaces it: an answer is carried
    /// back, while a dropped port is not (the caller's port stays open, kept here).
    struct Wire;

    type Kept = Arc<Mutex<Vec<RpcReplyPort<Vec<u8>>>>>;

    impl Actor for Wire {
        type Msg = Routed;
        type State = (ActorRef<Routed>, Kept);
        type Arguments = ActorRef<Routed>;
        async fn pre_start(
            &self,
            _: ActorRef<Routed>,
            to: ActorRef<Routed>,
        ) -> Result<(ActorRef<Routed>, Kept), ActorProcessingErr> {
            Ok((to, Kept::default()))
        }
        async fn handle(
            &self,
            _: ActorRef<Routed>,
            msg: Routed,
            (to, kept): &mut (ActorRef<Routed>, Kept),
        ) -> Result<(), ActorProcessingErr> {
            let Routed { name, msg, origin } = across(msg);
            let msg = match msg {
                SerializedMessage::Call { variant, args, reply, metadata } => {
                    let (tx, rx) = ractor::concurrency::oneshot();
                    let kept = kept.clone();
                    tokio::spawn(async move {
                        match rx.await {
                            Ok(answer) => {
                                let _ = reply.send(answer);
                            }
                            Err(_) => kept.lock().unwrap_or_else(PoisonError::into_inner).push(reply),
                        }
                    });
                    SerializedMessage::Call { variant, args, reply: tx.into(), metadata }
                }
                other => other,
            };
            let _ = to.cast(Routed { name, msg, origin });
            Ok(())
        }
    }

    /// An instance that drops every call it gets (as one that crashes in its handler).
    struct Dropper;

    impl Actor for Dropper {
        type Msg = EchoMsg;
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<EchoMsg>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
        async fn handle(&self, _: ActorRef<EchoMsg>, msg: EchoMsg, _: &mut ()) -> Result<(), ActorProcessingErr> {
            drop(msg);
            Ok(())
        }
    }

    /// Two nodes joined by session stand-ins: the caller's (its router, which takes the
    /// notices, and its pending calls) and the owner's (a router over `owner`, watching with
    /// `watches`).
    struct TwoNodes {
        calls: PendingCalls,
        caller_router: ActorRef<Routed>,
        back: ActorRef<Routed>,
        owner_router: ActorRef<Routed>,
        to_owner: ActorRef<Routed>,
    }

    impl TwoNodes {
        async fn start(owner: Directory, watches: Watches) -> TwoNodes {
            let calls = PendingCalls::default();
            let (caller_router, _) =
                Actor::spawn(None, Router, parts(Directory::default(), calls.clone(), None)).await.expect("starts");
            let (back, _) = Actor::spawn(None, Wire, caller_router.clone()).await.expect("starts");
            let mut owner_parts = parts(owner, PendingCalls::default(), Some(back.clone()));
            owner_parts.watches = watches;
            let (owner_router, _) = Actor::spawn(None, Router, owner_parts).await.expect("starts");
            let (to_owner, _) = Actor::spawn(None, Wire, owner_router.clone()).await.expect("starts");
            TwoNodes { calls, caller_router, back, owner_router, to_owner }
        }

        /// A reference, from the caller's node, to the owner's instance `name`.
        fn remote(&self, name: &str) -> SingletonRef<EchoMsg> {
            let caller = Caller { node: "caller".into(), pending: self.calls.clone() };
            SingletonRef::remote(name, self.to_owner.clone(), Some(caller))
        }

        fn stop(&self) {
            for a in [&self.caller_router, &self.back, &self.owner_router, &self.to_owner] {
                a.stop(None);
            }
        }
    }

    #[tokio::test]
    async fn a_remote_call_dropped_at_the_owner_ends_at_once_and_an_answered_one_still_answers() {
        // The owner's node: one instance that answers, one that drops what it gets.
        let owner = Directory::default();
        let (echo, _) = Actor::spawn(None, Echo, ()).await.expect("starts");
        let (dropper, _) = Actor::spawn(None, Dropper, ()).await.expect("starts");
        owner.insert("echo", echo.get_cell(), &Arc::default());
        owner.insert("dropper", dropper.get_cell(), &Arc::default());
        let nodes = TwoNodes::start(owner, Watches::default()).await;
        let calls = nodes.calls.clone();
        let caller = || Some(Caller { node: "caller".into(), pending: calls.clone() });
        // Long timeouts: each call must end well before them.
        let long = Some(Duration::from_secs(60));
        let quick = Duration::from_secs(10);

        let echo_ref = nodes.remote("echo");
        let answered = tokio::time::timeout(quick, echo_ref.call(|p| EchoMsg::Double(21, p), long)).await;
        assert!(
            matches!(answered, Ok(Ok(CallResult::Success(42)))),
            "{:?}",
            answered.map(|r| r.map(|c| c.is_success()))
        );

        for name in ["dropper", "not-here"] {
            let r = nodes.remote(name);
            let ended = tokio::time::timeout(quick, r.call(|p| EchoMsg::Double(1, p), long))
                .await
                .unwrap_or_else(|_| panic!("a call dropped at {name} waited for its timeout"));
            assert!(matches!(ended, Ok(CallResult::SenderError)), "{name}");
        }
        // A call given up by its caller (its future dropped) forgets its entry too.
        // (To a router that never answers nor sends a notice.)
        let (silent, _) = Actor::spawn(None, Silent, ()).await.expect("starts");
        let r: SingletonRef<EchoMsg> = SingletonRef::remote("echo", silent.clone(), caller());
        let given_up = tokio::time::timeout(Duration::from_millis(50), r.call(|p| EchoMsg::Double(1, p), long)).await;
        assert!(given_up.is_err(), "nobody answers there");
        silent.stop(None);
        // Every call's entry went when it ended.
        assert!(calls.is_empty(), "{calls:?}");
        echo.stop(None);
        dropper.stop(None);
        nodes.stop();
    }

    /// An instance that keeps every call it gets, unanswered, until it stops, and counts them.
    struct Holder;

    impl Actor for Holder {
        type Msg = EchoMsg;
        type State = (Vec<EchoMsg>, Arc<AtomicUsize>);
        type Arguments = Arc<AtomicUsize>;
        async fn pre_start(
            &self,
            _: ActorRef<EchoMsg>,
            count: Arc<AtomicUsize>,
        ) -> Result<(Vec<EchoMsg>, Arc<AtomicUsize>), ActorProcessingErr> {
            Ok((Vec::new(), count))
        }
        async fn handle(
            &self,
            _: ActorRef<EchoMsg>,
            msg: EchoMsg,
            (kept, count): &mut (Vec<EchoMsg>, Arc<AtomicUsize>),
        ) -> Result<(), ActorProcessingErr> {
            kept.push(msg);
            count.fetch_add(1, Ordering::AcqRel);
            Ok(())
        }
    }

    /// Waits (at most 10 s) until `done` holds.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn the_router_watches_at_most_its_bound_of_calls_and_a_call_past_it_is_still_delivered() {
        let owner = Directory::default();
        let held_calls = Arc::new(AtomicUsize::new(0));
        let (holder, _) = Actor::spawn(None, Holder, held_calls.clone()).await.expect("starts");
        let (echo, _) = Actor::spawn(None, Echo, ()).await.expect("starts");
        owner.insert("holder", holder.get_cell(), &Arc::default());
        owner.insert("echo", echo.get_cell(), &Arc::default());
        let watches = Watches::with_limit(1);
        let nodes = TwoNodes::start(owner, watches.clone()).await;
        let held = nodes.remote("holder");

        // The first call takes the one watch; the second is past the bound.
        let first = tokio::spawn({
            let held = held.clone();
            async move { held.call(|p| EchoMsg::Double(1, p), Some(Duration::from_secs(60))).await }
        });
        until("the first call was never held", || held_calls.load(Ordering::Acquire) == 1).await;
        assert_eq!(watches.len(), 1, "the first call is watched");
        // A call past the bound still reaches its instance, and is answered.
        let echo_ref = nodes.remote("echo");
        let answered = echo_ref.call(|p| EchoMsg::Double(21, p), Some(Duration::from_secs(10))).await;
        assert!(matches!(answered, Ok(CallResult::Success(42))), "{:?}", answered.map(|c| c.is_success()));
        assert_eq!(watches.len(), 1, "the bound held");
        let second = tokio::spawn({
            let held = held.clone();
            async move { held.call(|p| EchoMsg::Double(2, p), Some(Duration::from_secs(2))).await }
        });
        until("the second call was never held", || held_calls.load(Ordering::Acquire) == 2).await;
        assert_eq!(watches.len(), 1, "the second call is not watched");
        // The holder stops: both calls are dropped. Only the watched one is told at once; the
        // other ends at its own timeout.
        holder.stop(None);
        let first = tokio::time::timeout(Duration::from_secs(10), first).await.expect("ended").expect("joined");
        assert!(matches!(first, Ok(CallResult::SenderError)), "{:?}", first.map(|c| c.is_success()));
        let second = tokio::time::timeout(Duration::from_secs(10), second).await.expect("ended").expect("joined");
        assert!(matches!(second, Ok(CallResult::Timeout)), "{:?}", second.map(|c| c.is_success()));
        assert!(watches.is_empty(), "a watch goes when its call ends");
        echo.stop(None);
        nodes.stop();
    }

    #[test]
    fn pending_calls_are_bounded_and_a_notice_ends_only_its_own_call() {
        let calls = PendingCalls::default();
        let (a, mut a_dropped) = calls.register().expect("room");
        let (b, mut b_dropped) = calls.register().expect("room");
        assert_ne!(a, b);
        calls.dropped(a);
        assert!(a_dropped.try_recv().is_ok(), "a's notice arrived");
        assert!(b_dropped.try_recv().is_err(), "b still waits");
        calls.forget(b);
        assert!(calls.is_empty());
        for _ in 0..MAX_PENDING_REMOTE_CALLS {
            calls.register().expect("room up to the bound");
        }
        assert!(calls.register().is_none(), "the bound holds");
    }
}
