//! The `bank` demo's actors: accounts as durable, replicated cluster singletons, and a
//! singleton auditor.
//!
//! A transfer is two steps with a durable outbox in between, so no fault can create or destroy
//! money: the source account journals `Debited` (balance down, the credit queued in its outbox)
//! and only then acknowledges the transfer; it then delivers the credit to the destination
//! account (retrying until it is confirmed, across restarts and moves, since the outbox is part
//! of its journaled state), which journals `Credited` once per transfer id, and finally the
//! source journals `Delivered`. Money in flight sits in outboxes. Every journal write is on a
//! majority of the nodes before it counts (synchronous replication), so an acknowledged
//! transfer survives the loss of any one node of three.

use std::collections::BTreeSet;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use warden_checkpoint::{Checkpoint, Checkpointed, Checkpoints, EventSourced, SnapshotPolicy};
use warden_cluster::singleton::{locate, SingletonSpec};
use warden_core::ChildSpec;

/// Every account starts with this much.
pub const INITIAL_BALANCE: i64 = 1_000;

/// A handler running longer than this is hung (a persist waits at most ~1 s for replicas).
pub const HANDLER_DEADLINE: Duration = Duration::from_secs(2);

/// Sends `tick()` to `actor` every `period` until that incarnation is gone.
fn tick_every<M: ractor::Message>(actor: ActorRef<M>, period: Duration, tick: fn() -> M) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            if actor.cast(tick()).is_err() {
                return;
            }
        }
    });
}

/// The account named `i`.
pub fn account_name(i: usize) -> String {
    format!("acct-{i}")
}

/// A transfer request, as JSON on the wire.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Unique in the run.
    pub id: u64,
    /// The source account.
    pub from: String,
    /// The destination account.
    pub to: String,
    /// How much.
    pub amount: i64,
}

/// An account's messages (they cross nodes).
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum AccountMsg {
    /// Take money out for a transfer (JSON [`Transfer`]): `ok`, `insufficient` or `error: ...`.
    #[rpc]
    Debit(String, RpcReplyPort<String>),
    /// Put a transfer's money in (JSON [`Transfer`]), once per id: `ok` or `error: ...`.
    #[rpc]
    Credit(String, RpcReplyPort<String>),
    /// The account as JSON ([`Book`]).
    #[rpc]
    Inspect(RpcReplyPort<String>),
    /// The credit of this transfer id was confirmed.
    Delivered(u64),
    /// Delivering this transfer id failed; try again later.
    DeliveryFailed(u64),
    /// Time to retry deliveries.
    Tick,
    /// A fault: panic in the handler.
    Panic,
    /// A fault: a handler that never returns.
    Hang,
}

/// An account's journaled state.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Book {
    /// The account's name.
    pub name: String,
    /// What it holds.
    pub balance: i64,
    /// Credits owed to other accounts, oldest first.
    pub outbox: Vec<Transfer>,
    /// Transfer ids debited here.
    pub debited: BTreeSet<u64>,
    /// Transfer ids credited here.
    pub credited: BTreeSet<u64>,
    /// A delivery is under way (not saved).
    #[serde(skip)]
    pub delivering: bool,
}

/// A change of an account.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum AccountEvent {
    /// Money left for a transfer; the credit is queued.
    Debited(Transfer),
    /// Money arrived from a transfer.
    Credited(Transfer),
    /// The destination confirmed the credit of this transfer id.
    Delivered(u64),
}

/// One account.
#[derive(Clone)]
pub struct Account {
    name: String,
}

impl Account {
    fn deliver(&self, myself: &ActorRef<AccountMsg>, book: &mut Book) {
        if book.delivering {
            return;
        }
        let Some(t) = book.outbox.first().cloned() else { return };
        book.delivering = true;
        let myself = myself.clone();
        tokio::spawn(async move {
            let confirmed = match locate::<AccountMsg>(&t.to) {
                Some(dest) => {
                    let json = serde_json::to_string(&t).unwrap_or_default();
                    matches!(
                        dest.call(|port| AccountMsg::Credit(json, port), Some(Duration::from_secs(2))).await,
                        Ok(ractor::rpc::CallResult::Success(ref r)) if r == "ok"
                    )
                }
                None => false, // the destination is moving: next tick
            };
            let _ = myself.cast(if confirmed { AccountMsg::Delivered(t.id) } else { AccountMsg::DeliveryFailed(t.id) });
        });
    }
}

impl Actor for Account {
    type Msg = AccountMsg;
    type State = Book;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<AccountMsg>, _: ()) -> Result<Book, ActorProcessingErr> {
        tick_every(myself, Duration::from_millis(200), || AccountMsg::Tick);
        Ok(Book { name: self.name.clone(), balance: INITIAL_BALANCE, ..Book::default() })
    }

    async fn handle(
        &self,
        myself: ActorRef<AccountMsg>,
        msg: AccountMsg,
        book: &mut Book,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AccountMsg::Debit(json, reply) => {
                let answer = match serde_json::from_str::<Transfer>(&json) {
                    Err(e) => format!("error: bad transfer {json:?}: {e}"),
                    Ok(t) if t.from != self.name => format!("error: transfer {} is not from {}", t.id, self.name),
                    Ok(t) if t.amount <= 0 => format!("error: transfer {} has amount {}", t.id, t.amount),
                    Ok(t) if book.debited.contains(&t.id) => "ok".into(), // a retried request
                    Ok(t) if book.balance < t.amount => "insufficient".into(),
                    Ok(t) => match self.persist(book, AccountEvent::Debited(t)).await {
                        Ok(_) => "ok".into(),
                        Err(e) => format!("error: {e}"),
                    },
                };
                let _ = reply.send(answer);
                self.deliver(&myself, book);
            }
            AccountMsg::Credit(json, reply) => {
                let answer = match serde_json::from_str::<Transfer>(&json) {
                    Err(e) => format!("error: bad transfer {json:?}: {e}"),
                    Ok(t) if t.to != self.name => format!("error: transfer {} is not to {}", t.id, self.name),
                    Ok(t) if book.credited.contains(&t.id) => "ok".into(),
                    Ok(t) => match self.persist(book, AccountEvent::Credited(t)).await {
                        Ok(_) => "ok".into(),
                        Err(e) => format!("error: {e}"),
                    },
                };
                let _ = reply.send(answer);
            }
            AccountMsg::Inspect(reply) => {
                let _ = reply.send(serde_json::to_string(&*book).unwrap_or_default());
            }
            AccountMsg::Delivered(id) => {
                if book.outbox.first().is_some_and(|t| t.id == id) {
                    self.persist(book, AccountEvent::Delivered(id)).await?;
                }
                book.delivering = false;
                self.deliver(&myself, book);
            }
            AccountMsg::DeliveryFailed(_) => book.delivering = false,
            AccountMsg::Tick => self.deliver(&myself, book),
            AccountMsg::Panic => panic!("injected fault: panic in account {}", self.name),
            AccountMsg::Hang => std::future::pending::<()>().await,
        }
        Ok(())
    }
}

impl Checkpoint for Account {
    type Snapshot = Book;
    fn snapshot(&self, book: &Book) -> Book {
        book.clone()
    }
    fn restore(&self, book: &mut Book, saved: Book) {
        *book = Book { delivering: false, ..saved };
    }
}

impl EventSourced for Account {
    type Event = AccountEvent;
    fn apply(&self, book: &mut Book, event: &AccountEvent) {
        match event {
            AccountEvent::Debited(t) => {
                book.balance -= t.amount;
                book.debited.insert(t.id);
                book.outbox.push(t.clone());
            }
            AccountEvent::Credited(t) => {
                book.balance += t.amount;
                book.credited.insert(t.id);
            }
            AccountEvent::Delivered(id) => book.outbox.retain(|t| t.id != *id),
        }
    }
}

/// The auditor's messages (they cross nodes).
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum AuditorMsg {
    /// The auditor's state as JSON ([`Audits`]).
    #[rpc]
    Status(RpcReplyPort<String>),
    /// Time for an audit.
    Tick,
    /// An audit's outcome (JSON [`Audit`]).
    Done(String),
    /// A fault: panic in the handler.
    Panic,
    /// A fault: a handler that never returns.
    Hang,
}

/// One audit: the money counted over all accounts.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Audit {
    /// Balances plus credits not yet received.
    pub total: i64,
    /// Credits in outboxes not yet received.
    pub in_flight: i64,
    /// Outbox entries (received or not).
    pub outbox_entries: usize,
}

/// The auditor's journaled state.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Audits {
    /// Audits done, over the auditor's whole life (it survives moves).
    pub audits: u64,
    /// The last audit.
    pub last: Audit,
    /// Audits whose total differed from the expected one. Audits read accounts one after the
    /// other while transfers go on, so one may catch a credit in flight twice or not at all;
    /// the exact check is the quiescent one at the end of a run.
    pub off: u64,
    /// The node it runs on now (not saved).
    #[serde(skip)]
    pub node: String,
}

/// The ledger auditor: every second, counts the money of every account.
#[derive(Clone)]
pub struct Auditor {
    node: String,
    accounts: usize,
}

/// Counts the money of all accounts; `None` if one did not answer.
pub async fn audit(accounts: usize) -> Option<(Audit, Vec<Book>)> {
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..accounts {
        let acct = locate::<AccountMsg>(&account_name(i))?;
        calls.spawn(async move { acct.call(AccountMsg::Inspect, Some(Duration::from_secs(1))).await });
    }
    let mut books = Vec::new();
    while let Some(done) = calls.join_next().await {
        match done {
            Ok(Ok(ractor::rpc::CallResult::Success(json))) => books.push(serde_json::from_str::<Book>(&json).ok()?),
            _ => return None,
        }
    }
    books.sort_by(|a, b| a.name.cmp(&b.name));
    let credited: BTreeSet<u64> = books.iter().flat_map(|b| b.credited.iter().copied()).collect();
    let mut a = Audit::default();
    for b in &books {
        a.total += b.balance;
        a.outbox_entries += b.outbox.len();
        for t in b.outbox.iter().filter(|t| !credited.contains(&t.id)) {
            a.in_flight += t.amount;
        }
    }
    a.total += a.in_flight;
    Some((a, books))
}

impl Actor for Auditor {
    type Msg = AuditorMsg;
    type State = Audits;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<AuditorMsg>, _: ()) -> Result<Audits, ActorProcessingErr> {
        tick_every(myself, Duration::from_secs(1), || AuditorMsg::Tick);
        Ok(Audits { node: self.node.clone(), ..Audits::default() })
    }

    async fn handle(
        &self,
        myself: ActorRef<AuditorMsg>,
        msg: AuditorMsg,
        st: &mut Audits,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AuditorMsg::Status(reply) => {
                let _ = reply.send(
                    serde_json::to_string(&serde_json::json!({
                        "audits": st.audits, "last": st.last, "off": st.off, "node": self.node,
                    }))
                    .unwrap_or_default(),
                );
            }
            AuditorMsg::Tick => {
                // The accounts answer from other nodes: count off the auditor's task.
                let accounts = self.accounts;
                tokio::spawn(async move {
                    if let Some((a, _)) = audit(accounts).await {
                        let _ = myself.cast(AuditorMsg::Done(serde_json::to_string(&a).unwrap_or_default()));
                    }
                });
            }
            AuditorMsg::Done(json) => {
                if let Ok(a) = serde_json::from_str::<Audit>(&json) {
                    // A persist that fails (no majority reachable) is simply not counted.
                    let _ = self.persist(st, a).await;
                }
            }
            AuditorMsg::Panic => panic!("injected fault: panic in the auditor"),
            AuditorMsg::Hang => std::future::pending::<()>().await,
        }
        Ok(())
    }
}

impl Checkpoint for Auditor {
    type Snapshot = Audits;
    fn snapshot(&self, st: &Audits) -> Audits {
        st.clone()
    }
    fn restore(&self, st: &mut Audits, saved: Audits) {
        *st = Audits { node: self.node.clone(), ..saved };
    }
}

impl EventSourced for Auditor {
    type Event = Audit;
    fn apply(&self, st: &mut Audits, a: &Audit) {
        st.audits += 1;
        if a.total != INITIAL_BALANCE * self.accounts as i64 {
            st.off += 1;
        }
        st.last = a.clone();
    }
}

/// The bank's singletons: `accounts` accounts and the auditor, all durable.
pub fn singletons(checkpoints: &Checkpoints, node: &str, accounts: usize) -> Vec<SingletonSpec> {
    let mut specs = Vec::new();
    for i in 0..accounts {
        let name = account_name(i);
        let (cp, key) = (checkpoints.clone(), format!("bank/{name}"));
        let n = name.clone();
        specs.push(
            SingletonSpec::new::<AccountMsg>(name.clone(), move || {
                let policy = SnapshotPolicy::new().every_messages(200).retain(2);
                ChildSpec::worker(
                    n.clone(),
                    Checkpointed::durable(Account { name: n.clone() }, &cp, key.clone(), policy),
                    (),
                )
                .deadline(HANDLER_DEADLINE)
            })
            .checkpoint_key(format!("bank/{name}")),
        );
    }
    let (cp, node) = (checkpoints.clone(), node.to_string());
    specs.push(
        SingletonSpec::new::<AuditorMsg>("auditor", move || {
            let policy = SnapshotPolicy::new().every_messages(50).retain(2);
            ChildSpec::worker(
                "auditor",
                Checkpointed::durable(Auditor { node: node.clone(), accounts }, &cp, "bank/auditor", policy),
                (),
            )
            .deadline(HANDLER_DEADLINE)
        })
        .checkpoint_key("bank/auditor"),
    );
    specs
}
