//! Raft's messages between nodes, carried in the nodes' own ractor_cluster sessions.
//!
//! Every node runs one RPC actor ([`RpcActor`]) in the process group `warden.raft/<id>`; the
//! network openraft uses ([`Network`]) finds a peer's actor in its group and calls it with an
//! encoded [`Request`], under the deadline openraft gives. The actor answers each request from
//! a task of its own (so a slow proposal never holds up a heartbeat), at most
//! [`MAX_CONCURRENT_REQUESTS`] at a time; past that it answers [`Reply::Busy`].
//!
//! Besides openraft's three RPCs, nodes send each other proposals (a follower's batch goes to
//! the leader), read-index requests (for linearizable reads) and join requests. Requests and
//! replies are enums encoded with MessagePack; nothing crosses as a string to be parsed.
//!
//! Every payload starts with a three-byte header, `0xC1` and the sender's [`WIRE_VERSION`]
//! (big-endian). `0xC1` is the one byte MessagePack never uses, so a payload from a node that
//! predates the header is told apart (version 0). A node answers a request of another version
//! with a bare header of its own and does not decode it; the caller then fails the call with
//! [`CallError::Version`], naming both versions, instead of timing out on a request the other
//! side could not read. So nodes whose wire formats differ never act on each other's messages:
//! a rolling upgrade works between builds of one wire version, and a build that changes it
//! must replace every node of a group at once (docs/cluster.md).
//!
//! A request of this version that does not decode (a damaged payload) is answered with this
//! version's header and no body, which no encoded value is: the caller fails the call at once
//! ([`CallError::Failed`] with [`CallFailure::NotUnderstood`]) instead of waiting out its
//! deadline. The RPC actor logs refused and undecodable requests at most once per
//! [`WARN_EVERY`] each, with the number it did not log ([`WarnGate`]): a peer of another
//! version sends heartbeats and votes many times a second.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    ChangeMembershipError, CheckIsLeaderError, ClientWriteError, Fatal, InstallSnapshotError, NetworkError,
    QuorumNotEnough, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::standing::LastContact;
use super::{Answers, Batch, Member, Raft, TypeConfig};
use crate::ledger::NodeId;

/// The process group of node `id`'s RPC actor.
pub fn group_of(id: NodeId) -> String {
    format!("warden.raft/{id}")
}

/// The process group of every node's RPC actor (a new node asks any of them to join).
pub const ALL_GROUP: &str = "warden.raft";

/// The version of the encoding of [`Request`] and [`Reply`] (and of everything inside them).
/// Raise it with any change an older node could not decode, or would decode differently: a
/// new variant, a field added, removed or retyped.
///
/// 2 (2026-12-04): [`CallError::Failed`] carries a [`CallFailure`] instead of text (it crosses
/// inside [`Declined::LeaderUnreachable`]).
pub const WIRE_VERSION: u16 = 2;

/// The first byte of every payload's header: one MessagePack never uses.
const WIRE_MAGIC: u8 = 0xC1;

/// How often the RPC actor logs a refused (other version) or undecodable request, at most,
/// each kind on its own; the ones in between are counted and the count logged with the next.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Whether a repeated warning may be logged now: at most one per [`WARN_EVERY`]. A pure rule
/// over the times it is asked (a unit test drives it with made-up instants).
#[derive(Debug, Default)]
pub struct WarnGate {
    last: Option<std::time::Instant>,
    held: u64,
}

impl WarnGate {
    /// Called once per occurrence at `now`: `Some(n)` to log it now, `n` being how many
    /// occurrences since the last logged one were not logged; `None` to count it silently.
    pub fn admit(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < WARN_EVERY => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

/// The [`RpcState`] warning gate of requests of another wire version.
const OTHER_VERSION: usize = 0;
/// The [`RpcState`] warning gate of undecodable requests.
const UNDECODABLE: usize = 1;

/// `body` behind this node's header.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(3 + body.len());
    bytes.push(WIRE_MAGIC);
    bytes.extend_from_slice(&WIRE_VERSION.to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

/// A payload's wire version and body: version 0 and the whole payload for one without a
/// header (a node from before the header), and `None` for a header cut short.
pub fn unframe(bytes: &[u8]) -> Option<(u16, &[u8])> {
    match bytes {
        [WIRE_MAGIC, hi, lo, body @ ..] => Some((u16::from_be_bytes([*hi, *lo]), body)),
        [WIRE_MAGIC, ..] => None,
        _ => Some((0, bytes)),
    }
}

/// How many requests one node answers at once.
pub const MAX_CONCURRENT_REQUESTS: usize = 1024;

/// The RPC actor's one message: an encoded [`Request`], answered with an encoded [`Reply`].
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum RpcMsg {
    /// A request.
    #[rpc]
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

/// What a node asks another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// openraft: replicate entries (and heartbeat).
    Append(AppendEntriesRequest<TypeConfig>),
    /// openraft: a vote.
    Vote(VoteRequest<NodeId>),
    /// openraft: one chunk of a snapshot.
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// Commit this batch (sent to the leader).
    Propose(Batch),
    /// The leader's commit index once it confirmed it still leads (linearizable reads).
    ReadIndex,
    /// Whether the group has forgotten node `id` (it left): answered by any node from what
    /// it applied, once that reaches past log index `after` (one the leaving node applied).
    Forgotten {
        /// The node that leaves.
        id: NodeId,
        /// An index the leaving node applied (so it was known there).
        after: u64,
    },
    /// Add this node to the group as a learner (sent to the leader).
    Join {
        /// The new node's id.
        id: NodeId,
        /// Its name and address.
        member: Member,
    },
}

/// Why a proposal or request to the leader was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NotDone {
    /// The node asked is not the leader; the leader it knows, if any.
    NotLeader(Option<NodeId>),
    /// The leader declined it before it reached the log.
    Failed(Declined),
    /// The leader's Raft failed (stopped, panicked, a storage error) after perhaps appending
    /// it: it may still be committed.
    Unknown(Box<Fatal<NodeId>>),
    /// The leader's Raft gave no answer within the appender's hold (`appender::SLOT_HOLD`,
    /// in ms): it may still be committed.
    NoAnswer(u64),
}

/// Why the leader declined a request; nothing of it reached the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Declined {
    /// openraft refused a membership change: one is already in progress, it would leave no
    /// voter, or it names a learner the group does not have.
    #[error(transparent)]
    Membership(ChangeMembershipError<NodeId>),
    /// The leader could not confirm that it still leads: too few voters answered.
    #[error(transparent)]
    NoQuorum(QuorumNotEnough<NodeId>),
    /// The member asked passes join requests on to the leader, which did not answer it.
    #[error("the leader, node {leader}, did not answer the member that passed the request on: {error}")]
    LeaderUnreachable {
        /// The leader the member knows.
        leader: NodeId,
        /// What the call got.
        error: CallError,
    },
    /// The leader answered a request of another kind.
    #[error("node {0} answered with a reply of another kind")]
    WrongReply(NodeId),
}

impl NotDone {
    /// The answer for a failed `client_write` or `add_learner`.
    pub fn of_write(e: RaftError<NodeId, ClientWriteError<NodeId, Member>>) -> NotDone {
        match e {
            RaftError::Fatal(f) => NotDone::Unknown(Box::new(f)),
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => NotDone::NotLeader(f.leader_id),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => NotDone::Failed(Declined::Membership(c)),
        }
    }

    /// The answer for a failed `ensure_linearizable`.
    pub fn of_read(e: RaftError<NodeId, CheckIsLeaderError<NodeId, Member>>) -> NotDone {
        match e {
            RaftError::Fatal(f) => NotDone::Unknown(Box::new(f)),
            RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => NotDone::NotLeader(f.leader_id),
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => NotDone::Failed(Declined::NoQuorum(q)),
        }
    }
}

/// An answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// To [`Request::Append`].
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// To [`Request::Vote`].
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// To [`Request::Snapshot`].
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// To [`Request::Propose`]: the entry's log index and the answers.
    Proposed(Result<(u64, Answers), NotDone>),
    /// To [`Request::ReadIndex`].
    ReadIndex(Result<u64, NotDone>),
    /// To [`Request::Join`].
    Joined(Result<(), NotDone>),
    /// To [`Request::Forgotten`]: `Some(true)` forgotten, `Some(false)` still known, `None`
    /// this node has not applied that far yet.
    Forgotten(Option<bool>),
    /// Too many requests at once: try again.
    Busy,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding our own enums cannot fail; an empty body decodes as an error on the other side.
    framed(&rmp_serde::to_vec(value).unwrap_or_default())
}

/// What the RPC actor makes of a request's payload.
#[derive(Debug)]
enum Incoming {
    /// A request of this version.
    Request(Request),
    /// A payload of another version: answer a bare header, do not decode it.
    OtherVersion(u16),
    /// Not a request (a damaged or foreign payload): drop it.
    Undecodable(String),
}

fn incoming(bytes: &[u8]) -> Incoming {
    match unframe(bytes) {
        None => Incoming::Undecodable("a wire header cut short".into()),
        Some((WIRE_VERSION, body)) => match rmp_serde::from_slice::<Request>(body) {
            Ok(request) => Incoming::Request(request),
            Err(e) => Incoming::Undecodable(e.to_string()),
        },
        Some((other, _)) => Incoming::OtherVersion(other),
    }
}

/// What a caller makes of a reply's payload from node `target`.
fn reply_of(target: NodeId, bytes: &[u8]) -> Result<Reply, CallError> {
    match unframe(bytes) {
        None => {
            Err(CallError::Failed(target, CallFailure::UndecodableReply { detail: "a wire header cut short".into() }))
        }
        Some((WIRE_VERSION, [])) => Err(CallError::Failed(target, CallFailure::NotUnderstood)),
        Some((WIRE_VERSION, body)) => match rmp_serde::from_slice::<Reply>(body) {
            Ok(Reply::Busy) => Err(CallError::Busy(target)),
            Ok(reply) => Ok(reply),
            Err(e) => Err(CallError::Failed(target, CallFailure::UndecodableReply { detail: e.to_string() })),
        },
        Some((theirs, _)) => Err(CallError::Version { node: target, theirs, ours: WIRE_VERSION }),
    }
}

/// How the RPC actor carries out the requests that need more than openraft.
pub trait Handler: Send + Sync + 'static {
    /// Commits `batch` if this node leads.
    fn propose(&self, batch: Batch) -> futures::future::BoxFuture<'static, Result<(u64, Answers), NotDone>>;
    /// Confirms leadership and answers the index a linearizable read must wait for.
    fn read_index(&self) -> futures::future::BoxFuture<'static, Result<u64, NotDone>>;
    /// Adds a learner if this node leads.
    fn join(&self, id: NodeId, member: Member) -> futures::future::BoxFuture<'static, Result<(), NotDone>>;
    /// See [`Request::Forgotten`].
    fn forgotten(&self, id: NodeId, after: u64) -> Option<bool>;
}

/// A node's RPC actor.
pub struct RpcActor;

/// Its state.
pub struct RpcState {
    raft: Raft,
    handler: Arc<dyn Handler>,
    /// Where each append taken from a leader is recorded ([`standing`](super::standing)).
    contact: LastContact,
    slots: Arc<Semaphore>,
    /// The warnings for requests of another version ([`OTHER_VERSION`]) and for undecodable
    /// ones ([`UNDECODABLE`]).
    gates: Arc<std::sync::Mutex<[WarnGate; 2]>>,
}

impl Actor for RpcActor {
    type Msg = RpcMsg;
    type State = RpcState;
    type Arguments = (NodeId, Raft, Arc<dyn Handler>, LastContact);

    async fn pre_start(
        &self,
        me: ActorRef<RpcMsg>,
        (id, raft, handler, contact): Self::Arguments,
    ) -> Result<RpcState, ActorProcessingErr> {
        ractor::pg::join(group_of(id), vec![me.get_cell()]);
        ractor::pg::join(ALL_GROUP.to_string(), vec![me.get_cell()]);
        Ok(RpcState {
            raft,
            handler,
            contact,
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS)),
            gates: Arc::default(),
        })
    }

    async fn handle(&self, _: ActorRef<RpcMsg>, msg: RpcMsg, st: &mut RpcState) -> Result<(), ActorProcessingErr> {
        let RpcMsg::Call(bytes, reply) = msg;
        let Ok(permit) = st.slots.clone().try_acquire_owned() else {
            let _ = reply.send(encode(&Reply::Busy));
            return Ok(());
        };
        let (raft, handler, contact, gates) =
            (st.raft.clone(), st.handler.clone(), st.contact.clone(), st.gates.clone());
        let admit = move |kind: usize| {
            gates.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[kind].admit(std::time::Instant::now())
        };
        tokio::spawn(async move {
            let answer = match incoming(&bytes) {
                Incoming::Request(request) => serve(raft, handler, &contact, request).await,
                Incoming::OtherVersion(theirs) => {
                    if let Some(unlogged) = admit(OTHER_VERSION) {
                        tracing::warn!(target: "warden::cluster", theirs, ours = WIRE_VERSION, unlogged,
                            "a request of another wire version refused: run one wire version in a group");
                    }
                    let _ = reply.send(framed(&[]));
                    drop(permit);
                    return;
                }
                Incoming::Undecodable(error) => {
                    if let Some(unlogged) = admit(UNDECODABLE) {
                        tracing::warn!(target: "warden::cluster", %error, unlogged, "undecodable Raft request refused");
                    }
                    // This version's header and no body: "not understood" (see the module).
                    let _ = reply.send(framed(&[]));
                    drop(permit);
                    return;
                }
            };
            let _ = reply.send(encode(&answer));
            drop(permit);
        });
        Ok(())
    }
}

async fn serve(raft: Raft, handler: Arc<dyn Handler>, contact: &LastContact, request: Request) -> Reply {
    match request {
        Request::Append(r) => {
            let leader = r.vote.committed.then_some(r.vote.leader_id.node_id);
            let answer = raft.append_entries(r).await;
            // Taken as from the leader (openraft accepted its vote): recorded after openraft
            // handled it, so never earlier than openraft's own record of it.
            if let (Some(leader), Ok(resp)) = (leader, &answer) {
                if !matches!(resp, AppendEntriesResponse::HigherVote(_)) {
                    contact.heard(leader);
                }
            }
            Reply::Append(answer)
        }
        Request::Vote(r) => Reply::Vote(raft.vote(r).await),
        Request::Snapshot(r) => {
            let vote = r.vote;
            let answer = raft.install_snapshot(r).await;
            // A snapshot chunk is a leader's contact as much as an append is (accepted when
            // this node's vote is now the leader's).
            if let Ok(resp) = &answer {
                if vote.committed && resp.vote == vote {
                    contact.heard(vote.leader_id.node_id);
                }
            }
            Reply::Snapshot(answer)
        }
        Request::Propose(batch) => Reply::Proposed(handler.propose(batch).await),
        Request::ReadIndex => Reply::ReadIndex(handler.read_index().await),
        Request::Join { id, member } => Reply::Joined(handler.join(id, member).await),
        Request::Forgotten { id, after } => Reply::Forgotten(handler.forgotten(id, after)),
    }
}

/// Why a call to another node did not get an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CallError {
    /// Its RPC actor is not known here (not connected, or down).
    #[error("node {0} is not reachable")]
    Unreachable(NodeId),
    /// No answer in time.
    #[error("node {0} did not answer within {1:?}")]
    Timeout(NodeId, Duration),
    /// The call failed on the way, or its answer could not be read.
    #[error("the call to node {0} failed: {1}")]
    Failed(NodeId, CallFailure),
    /// The node is answering too many requests.
    #[error("node {0} is busy")]
    Busy(NodeId),
    /// The node speaks another wire version ([`WIRE_VERSION`]): neither reads the other's
    /// messages. Every node of a group must run builds of one wire version.
    #[error("node {node} speaks wire version {theirs} and this node {ours}: run one wire version in a group (see WIRE_VERSION)")]
    Version {
        /// The node called (0: any).
        node: NodeId,
        /// Its version (0: from before versions were sent).
        theirs: u16,
        /// This node's.
        ours: u16,
    },
}

/// How a call failed on the way ([`CallError::Failed`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CallFailure {
    /// The session to the node ended before its answer came.
    #[error("the session ended")]
    SessionEnded,
    /// The node's RPC actor was gone when the request was sent to it.
    #[error("its RPC actor was gone")]
    ActorGone,
    /// The actor called is not an RPC actor (another program's actor in warden's group).
    #[error("the actor called is not an RPC actor")]
    NotRpcActor,
    /// The node answered "not understood": it could not decode the request (or encode its
    /// answer).
    #[error("the node could not decode the request (or encode its answer)")]
    NotUnderstood,
    /// The answer did not decode.
    #[error("undecodable reply: {detail}")]
    UndecodableReply {
        /// What the decoder said.
        detail: String,
    },
    /// An answer of another kind than the request asks for.
    #[error("an answer of the wrong kind")]
    WrongKind,
}

/// Calls node `target` with `request`, waiting at most `timeout`.
pub async fn call(target: NodeId, request: &Request, timeout: Duration) -> Result<Reply, CallError> {
    let Some(cell) = ractor::pg::get_members(&group_of(target)).into_iter().next() else {
        return Err(CallError::Unreachable(target));
    };
    call_cell(cell, target, request, timeout).await
}

/// Calls some other node's RPC actor (any: for a new node that knows no id yet).
///
/// `attempt` picks which: successive attempts go round the reachable nodes (in the order of
/// their actor ids), so that one that cannot help (a node that is itself still joining and
/// knows no leader) is not asked again and again.
pub async fn call_any(request: &Request, timeout: Duration, attempt: usize) -> Result<Reply, CallError> {
    let mut cells: Vec<ractor::ActorCell> =
        ractor::pg::get_members(&ALL_GROUP.to_string()).into_iter().filter(|c| !c.get_id().is_local()).collect();
    if cells.is_empty() {
        return Err(CallError::Unreachable(0));
    }
    cells.sort_by_key(|c| c.get_id().to_string());
    let cell = cells.swap_remove(attempt % cells.len());
    call_cell(cell, 0, request, timeout).await
}

async fn call_cell(
    cell: ractor::ActorCell,
    target: NodeId,
    request: &Request,
    timeout: Duration,
) -> Result<Reply, CallError> {
    let actor = ActorRef::<RpcMsg>::from(cell);
    let payload = encode(request);
    match actor.call(|port| RpcMsg::Call(payload, port), Some(timeout)).await {
        Ok(ractor::rpc::CallResult::Success(bytes)) => reply_of(target, &bytes),
        Ok(ractor::rpc::CallResult::Timeout) => Err(CallError::Timeout(target, timeout)),
        Ok(ractor::rpc::CallResult::SenderError) => Err(CallError::Failed(target, CallFailure::SessionEnded)),
        Err(ractor::MessagingErr::InvalidActorType) => Err(CallError::Failed(target, CallFailure::NotRpcActor)),
        Err(ractor::MessagingErr::SendErr(_) | ractor::MessagingErr::ChannelClosed) => {
            Err(CallError::Failed(target, CallFailure::ActorGone))
        }
    }
}

/// The network openraft uses: one [`Connection`] per peer, made on demand (cheap: nothing is
/// opened; the ractor_cluster session to the peer is the transport's business).
#[derive(Clone)]
pub struct Network {
    /// Asks the transport to connect to a member's address it has no session with.
    pub connect: Arc<dyn Fn(&Member) + Send + Sync>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Connection {
        if ractor::pg::get_members(&group_of(target)).is_empty() {
            (self.connect)(node);
        }
        Connection { target }
    }
}

/// openraft's client for one peer.
pub struct Connection {
    target: NodeId,
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, Member, RaftError<NodeId, E>>>;

impl Connection {
    async fn rpc(&self, request: Request, option: &RPCOption) -> Result<Reply, CallError> {
        call(self.target, &request, option.hard_ttl()).await
    }

    fn failure<E: std::error::Error>(&self, e: CallError) -> RPCError<NodeId, Member, RaftError<NodeId, E>> {
        match e {
            // A node of another wire version is as good as absent (openraft backs off).
            CallError::Unreachable(_) | CallError::Version { .. } => RPCError::Unreachable(Unreachable::new(&e)),
            _ => RPCError::Network(NetworkError::new(&e)),
        }
    }
}

fn unexpected(target: NodeId) -> CallError {
    CallError::Failed(target, CallFailure::WrongKind)
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        match self.rpc(Request::Append(rpc), &option).await {
            Ok(Reply::Append(Ok(r))) => Ok(r),
            Ok(Reply::Append(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(_) => Err(self.failure(unexpected(self.target))),
            Err(e) => Err(self.failure(e)),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        match self.rpc(Request::Vote(rpc), &option).await {
            Ok(Reply::Vote(Ok(r))) => Ok(r),
            Ok(Reply::Vote(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(_) => Err(self.failure(unexpected(self.target))),
            Err(e) => Err(self.failure(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.rpc(Request::Snapshot(rpc), &option).await {
            Ok(Reply::Snapshot(Ok(r))) => Ok(r),
            Ok(Reply::Snapshot(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(_) => Err(self.failure(unexpected(self.target))),
            Err(e) => Err(self.failure(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::error::{ForwardToLeader, LearnerNotFound};

    use super::*;

    /// One warning per `WARN_EVERY`, and the next one counts those not logged.
    #[test]
    fn a_repeated_warning_is_logged_once_per_period_with_the_count_it_held() {
        let t0 = std::time::Instant::now();
        let mut gate = WarnGate::default();
        assert_eq!(gate.admit(t0), Some(0));
        for ms in [1, 50, 9_999] {
            assert_eq!(gate.admit(t0 + Duration::from_millis(ms)), None, "at {ms} ms");
        }
        assert_eq!(gate.admit(t0 + WARN_EVERY), Some(3), "the period is over: logged with the 3 held");
        assert_eq!(gate.admit(t0 + WARN_EVERY + Duration::from_millis(1)), None);
        assert_eq!(gate.admit(t0 + WARN_EVERY * 5), Some(1));
        // A clock read out of order (another task's earlier instant) is inside the period.
        assert_eq!(gate.admit(t0), None);
    }

    fn round_trip(reply: &Reply) -> Reply {
        reply_of(1, &encode(reply)).expect("a reply decodes")
    }

    #[test]
    fn payloads_carry_the_wire_version_and_another_version_is_refused_undecoded() {
        let request = encode(&Request::ReadIndex);
        assert_eq!(unframe(&request).map(|(v, _)| v), Some(WIRE_VERSION));
        assert!(matches!(incoming(&request), Incoming::Request(Request::ReadIndex)));
        // A newer node's request, whatever its body: refused without decoding.
        let mut newer = request.clone();
        newer[1..3].copy_from_slice(&(WIRE_VERSION + 1).to_be_bytes());
        assert!(matches!(incoming(&newer), Incoming::OtherVersion(v) if v == WIRE_VERSION + 1));
        // A node from before the header sends bare MessagePack: version 0.
        let bare = rmp_serde::to_vec(&Request::ReadIndex).unwrap();
        assert!(matches!(incoming(&bare), Incoming::OtherVersion(0)));
        assert!(matches!(incoming(&[WIRE_MAGIC, 0]), Incoming::Undecodable(_)));
        // The refusal is a bare header of the answering node's version; the caller names both.
        let mut refusal = framed(&[]);
        refusal[1..3].copy_from_slice(&(WIRE_VERSION + 1).to_be_bytes());
        let err = reply_of(4, &refusal).unwrap_err();
        assert_eq!(err, CallError::Version { node: 4, theirs: WIRE_VERSION + 1, ours: WIRE_VERSION });
        assert!(err.to_string().contains("wire version"), "{err}");
        // An answer of this version decodes; a bare one from an older node is refused.
        assert!(matches!(reply_of(4, &encode(&Reply::ReadIndex(Ok(7)))), Ok(Reply::ReadIndex(Ok(7)))));
        let old = rmp_serde::to_vec(&Reply::ReadIndex(Ok(7))).unwrap();
        assert!(matches!(reply_of(4, &old), Err(CallError::Version { theirs: 0, .. })));
        assert!(matches!(reply_of(4, &encode(&Reply::Busy)), Err(CallError::Busy(4))));
        // This version's header alone: the request was not understood.
        assert!(matches!(reply_of(4, &framed(&[])), Err(CallError::Failed(4, CallFailure::NotUnderstood))));
        assert!(matches!(
            reply_of(4, &framed(&[0xC1])),
            Err(CallError::Failed(4, CallFailure::UndecodableReply { .. }))
        ));
    }

    #[test]
    fn a_declined_join_crosses_as_its_type_and_names_the_leader() {
        let declined = Declined::LeaderUnreachable { leader: 3, error: CallError::Timeout(3, Duration::from_secs(5)) };
        match round_trip(&Reply::Joined(Err(NotDone::Failed(declined.clone())))) {
            Reply::Joined(Err(NotDone::Failed(d))) => {
                assert_eq!(d, declined);
                assert!(d.to_string().contains("node 3"), "{d}");
            }
            other => panic!("decoded as {other:?}"),
        }
        // A call that failed on the way crosses as its type too.
        for failure in [CallFailure::SessionEnded, CallFailure::UndecodableReply { detail: "eof".into() }] {
            let declined = Declined::LeaderUnreachable { leader: 3, error: CallError::Failed(3, failure) };
            match round_trip(&Reply::Joined(Err(NotDone::Failed(declined.clone())))) {
                Reply::Joined(Err(NotDone::Failed(d))) => assert_eq!(d, declined),
                other => panic!("decoded as {other:?}"),
            }
        }
    }

    #[test]
    fn raft_errors_map_to_typed_answers() {
        let forward: RaftError<NodeId, ClientWriteError<NodeId, Member>> =
            RaftError::APIError(ClientWriteError::ForwardToLeader(ForwardToLeader::new(2, Member::default())));
        assert_eq!(NotDone::of_write(forward), NotDone::NotLeader(Some(2)));
        let membership = ChangeMembershipError::LearnerNotFound(LearnerNotFound { node_id: 9 });
        let refused: RaftError<NodeId, ClientWriteError<NodeId, Member>> =
            RaftError::APIError(ClientWriteError::ChangeMembershipError(membership.clone()));
        assert_eq!(NotDone::of_write(refused), NotDone::Failed(Declined::Membership(membership)));
        let stopped: RaftError<NodeId, CheckIsLeaderError<NodeId, Member>> = RaftError::Fatal(Fatal::Stopped);
        let answer = NotDone::of_read(stopped);
        assert_eq!(answer, NotDone::Unknown(Box::new(Fatal::Stopped)));
        match round_trip(&Reply::ReadIndex(Err(answer))) {
            Reply::ReadIndex(Err(NotDone::Unknown(f))) => assert_eq!(*f, Fatal::Stopped),
            other => panic!("decoded as {other:?}"),
        }
    }
}
