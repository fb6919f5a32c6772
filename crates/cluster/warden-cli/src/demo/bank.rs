//! The `bank` demo's actors: accounts as durable cluster singletons, a singleton auditor, and
//! a `register` singleton whose reads are linearizable (the checker tests them).
//!
//! A transfer is two steps with a durable outbox in between, so no fault can create or destroy
//! money: the source account journals `Debited` (balance down, the credit queued in its outbox)
//! and only then acknowledges the transfer; it then delivers the credit to the destination
//! account (retrying until it is confirmed, across restarts and moves, since the outbox is part
//! of its journaled state), which journals `Credited` once per transfer id, and finally the
//! source journals `Delivered`. Money in flight sits in outboxes. Every journal write goes
//! through the group's Raft log under the account's fencing token, so an acknowledged transfer
//! is on a majority of the nodes, and a stale instance of an account can write nothing.
//!
//! Messages between nodes carry MessagePack-encoded typed values ([`wire`]); every answer
//! names the node and the grant token of the instance that gave it, which is how the checker
//! measures how long two instances of one singleton ever answered at once.

use std::collections::BTreeSet;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use warden_checkpoint::{Checkpoint, Checkpointed, EventSourced, SnapshotPolicy};
use warden_cluster::{SingletonContext, SingletonSpec};

use super::wire::{self, CallExt};

/// Every account starts with this much.
pub const INITIAL_BALANCE: i64 = 1_000;
/// A handler running longer than this is hung (a persist waits at most 1.5 s for the log).
pub const HANDLER_DEADLINE: Duration = Duration::from_secs(2);
/// How long an account waits for a credit to be confirmed before it tries again.
pub const CREDIT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an account retries its deliveries.
pub const DELIVERY_RETRY: Duration = Duration::from_millis(200);
/// A warning every this many failed attempts at one credit in a row (10 s at one attempt per
/// [`DELIVERY_RETRY`]).
pub const FAILURES_BEFORE_WARNING: u32 = 50;
/// A snapshot of an account every this many events (bounds its journal replay).
pub const ACCOUNT_SNAPSHOT_EVERY: u64 = 200;

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

/// The checkpoint key of a bank singleton.
pub fn key_of(name: &str) -> String {
    format!("bank/{name}")
}

/// A transfer.
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

/// Which instance answered: its node and its grant's token.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The node's name.
    pub node: String,
    /// The grant's token.
    pub token: u64,
}

/// An account's answer to a debit or credit.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum AccountReply {
    /// Done (or done before: a retried request).
    Ok(Served),
    /// Not enough money: nothing happened.
    Insufficient(Served),
    /// Refused, and why (a bad request, or the journal write failed).
    Refused(String),
}

/// A balance read: linearizable (the register's reads are; accounts answer from state).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum RegisterReply {
    /// A write was committed.
    Written(Served),
    /// The value, read linearizably.
    Value(u64, Served),
    /// Refused, and why.
    Refused(String),
}

/// An account's messages (they cross nodes; payloads are [`wire`]-encoded).
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum AccountMsg {
    /// Take money out for a transfer ([`Transfer`]); the answer is an [`AccountReply`].
    #[rpc]
    Debit(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// Put a transfer's money in ([`Transfer`]), once per id; an [`AccountReply`].
    #[rpc]
    Credit(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// The account ([`Book`]).
    #[rpc]
    Inspect(RpcReplyPort<Vec<u8>>),
    /// The credit of this transfer id was confirmed.
    Delivered(u64),
    /// Delivering this transfer id failed, and why; try again later.
    DeliveryFailed(u64, String),
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
    /// When the delivery under way started, if one is (not saved).
    #[serde(skip)]
    pub delivering: Option<std::time::Instant>,
    /// Failed attempts at the oldest credit since the last confirmed one (not saved).
    #[serde(skip)]
    pub failed_deliveries: u32,
}

/// A change of an account.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum AccountEvent {
    /// Money left for a transfer; the credit is queued.
    Debited(Transfer),
    /// Money arrived from a transfer.
    Credited(Transfer),
    /// The destination confirmed the credit of this transfer id.
    Delivered(u64),
}

/// Applies one event to a book (the account's rule, also the checker's replay).
pub fn apply_account(book: &mut Book, event: &AccountEvent) {
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

/// One account.
#[derive(Clone)]
pub struct Account {
    name: String,
    ctx: SingletonContext,
}

/// Whether a delivery under way since `since` is taken for lost at `now`: its report has not
/// come three credit timeouts after it began (the call itself ends within one). The account
/// then clears its flag and tries the credit again.
fn delivery_lost(since: Option<std::time::Instant>, now: std::time::Instant) -> bool {
    since.is_some_and(|t| now.saturating_duration_since(t) > CREDIT_TIMEOUT * 3)
}

impl Account {
    fn served(&self) -> Served {
        Served { node: self.ctx.node_name().to_string(), token: self.ctx.token() }
    }

    fn deliver(&self, myself: &ActorRef<AccountMsg>, book: &mut Book) {
        if book.delivering.is_some() {
            return;
        }
        let Some(t) = book.outbox.first().cloned() else { return };
        book.delivering = Some(std::time::Instant::now());
        let (myself, locator) = (myself.clone(), self.ctx.locator().clone());
        tokio::spawn(async move {
            let failed = match locator.find::<AccountMsg>(&t.to) {
                Some(dest) => {
                    let call = dest.call(|port| AccountMsg::Credit(wire::encode(&t), port), Some(CREDIT_TIMEOUT)).await;
                    match call {
                        Ok(ractor::rpc::CallResult::Success(bytes)) => match wire::decode::<AccountReply>(&bytes) {
                            Ok(AccountReply::Ok(_)) => None,
                            Ok(other) => Some(format!("{other:?}")),
                            Err(e) => Some(format!("an answer that does not decode: {e}")),
                        },
                        Ok(ractor::rpc::CallResult::Timeout) => {
                            Some(format!("no answer within {CREDIT_TIMEOUT:?} (local: {})", dest.is_local()))
                        }
                        Ok(ractor::rpc::CallResult::SenderError) => Some("the reply port closed".into()),
                        Err(e) => Some(format!("not sent: {e}")),
                    }
                }
                None => Some("not located (moving)".into()), // next tick
            };
            let _ = myself.cast(match failed {
                None => AccountMsg::Delivered(t.id),
                Some(why) => AccountMsg::DeliveryFailed(t.id, why),
            });
        });
    }

    /// Debits a transfer; `restart` is set when this incarnation can write no more.
    async fn debit(&self, bytes: &[u8], book: &mut Book, restart: &mut bool) -> AccountReply {
        let t = match wire::decode::<Transfer>(bytes) {
            Ok(t) => t,
            Err(e) => return AccountReply::Refused(format!("bad transfer: {e}")),
        };
        if t.from != self.name {
            return AccountReply::Refused(format!("transfer {} is not from {}", t.id, self.name));
        }
        if t.amount <= 0 {
            return AccountReply::Refused(format!("transfer {} has amount {}", t.id, t.amount));
        }
        if book.debited.contains(&t.id) {
            return AccountReply::Ok(self.served()); // a retried request
        }
        if book.balance < t.amount {
            return AccountReply::Insufficient(self.served());
        }
        match self.persist(book, AccountEvent::Debited(t)).await {
            Ok(_) => AccountReply::Ok(self.served()),
            Err(e) => {
                *restart = e.restart_required();
                AccountReply::Refused(e.to_string())
            }
        }
    }

    /// Credits a transfer; `restart` is set when this incarnation can write no more.
    async fn credit(&self, bytes: &[u8], book: &mut Book, restart: &mut bool) -> AccountReply {
        let t = match wire::decode::<Transfer>(bytes) {
            Ok(t) => t,
            Err(e) => return AccountReply::Refused(format!("bad transfer: {e}")),
        };
        if t.to != self.name {
            return AccountReply::Refused(format!("transfer {} is not to {}", t.id, self.name));
        }
        if book.credited.contains(&t.id) {
            return AccountReply::Ok(self.served());
        }
        match self.persist(book, AccountEvent::Credited(t)).await {
            Ok(_) => AccountReply::Ok(self.served()),
            Err(e) => {
                *restart = e.restart_required();
                AccountReply::Refused(e.to_string())
            }
        }
    }
}

impl Actor for Account {
    type Msg = AccountMsg;
    type State = Book;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<AccountMsg>, _: ()) -> Result<Book, ActorProcessingErr> {
        tick_every(myself, DELIVERY_RETRY, || AccountMsg::Tick);
        Ok(Book { name: self.name.clone(), balance: INITIAL_BALANCE, ..Book::default() })
    }

    async fn handle(
        &self,
        myself: ActorRef<AccountMsg>,
        msg: AccountMsg,
        book: &mut Book,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AccountMsg::Debit(bytes, reply) => {
                let mut restart = false;
                let answer = self.debit(&bytes, book, &mut restart).await;
                let refused = matches!(answer, AccountReply::Refused(_));
                let _ = reply.send(wire::encode(&answer));
                self.deliver(&myself, book);
                if refused && !self.ctx.serving() {
                    return Err("the account lost its grant".into());
                }
                if restart {
                    return Err("a refused or doubtful write: restart to reopen the key".into());
                }
            }
            AccountMsg::Credit(bytes, reply) => {
                // A credit's answer goes first; then a write that can never succeed again in
                // this incarnation restarts it (an account that only answered would refuse
                // every credit from then on, and money would stay in flight).
                let mut restart = false;
                let answer = self.credit(&bytes, book, &mut restart).await;
                let _ = reply.send(wire::encode(&answer));
                if restart {
                    return Err("a refused or doubtful write: restart to reopen the key".into());
                }
            }
            AccountMsg::Inspect(reply) => {
                let _ = reply.send(wire::encode(&*book));
            }
            AccountMsg::Delivered(id) => {
                if book.outbox.first().is_some_and(|t| t.id == id) {
                    self.persist(book, AccountEvent::Delivered(id)).await?;
                }
                book.delivering = None;
                book.failed_deliveries = 0;
                self.deliver(&myself, book);
            }
            AccountMsg::DeliveryFailed(id, why) => {
                book.delivering = None;
                book.failed_deliveries += 1;
                if book.failed_deliveries.is_multiple_of(FAILURES_BEFORE_WARNING) {
                    tracing::warn!(
                        target: "warden::demo::bank",
                        account = %self.name,
                        transfer = id,
                        failures = book.failed_deliveries,
                        %why,
                        "a credit keeps failing"
                    );
                }
            }
            AccountMsg::Tick => {
                let silent = book.delivering.map(|t| t.elapsed());
                if delivery_lost(book.delivering, std::time::Instant::now()) {
                    // Its report is lost: try again (a credit delivered twice is credited once).
                    // Re-arming the flag instead would stop this account's deliveries for good.
                    tracing::warn!(target: "warden::demo::bank", account = %self.name, ?silent, "a delivery never reported back; trying again");
                    book.delivering = None;
                }
                self.deliver(&myself, book)
            }
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
        *book = Book { delivering: None, failed_deliveries: 0, ..saved };
    }
}

impl EventSourced for Account {
    type Event = AccountEvent;
    fn apply(&self, book: &mut Book, event: &AccountEvent) {
        apply_account(book, event);
    }
}

/// The auditor's messages.
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum AuditorMsg {
    /// The auditor's state ([`AuditorStatus`]).
    #[rpc]
    Status(RpcReplyPort<Vec<u8>>),
    /// Time for an audit.
    Tick,
    /// An audit's outcome ([`Audit`]).
    Done(Vec<u8>),
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
    /// Audits whose total differed from the expected one (audits read accounts one after the
    /// other while transfers go on; the exact check is the quiescent one at the end).
    pub off: u64,
}

/// What the auditor answers to a status request.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AuditorStatus {
    /// Its state.
    pub audits: Audits,
    /// Which instance answered.
    pub served: Served,
}

/// The ledger auditor: every [`audit_every`], counts the money of every account.
#[derive(Clone)]
pub struct Auditor {
    accounts: usize,
    ctx: SingletonContext,
}

/// How often the auditor audits: every second, and no more than 2,000 accounts a second.
pub fn audit_every(accounts: usize) -> Duration {
    Duration::from_millis(1000.max(accounts as u64 / 2))
}

/// How many accounts an audit inspects at once: a bound on its fan-out (at 10,000 accounts an
/// unbounded one put 10,000 calls, most of them through other nodes' routers, in flight at
/// once from one node). The rest wait for a free slot.
pub const AUDIT_CONCURRENCY: usize = 256;

/// Counts the money of all accounts; `None` if one did not answer.
pub async fn audit(locator: &warden_cluster::singleton::Locator, accounts: usize) -> Option<(Audit, Vec<Book>)> {
    let mut refs = Vec::with_capacity(accounts);
    for i in 0..accounts {
        refs.push(locator.find::<AccountMsg>(&account_name(i))?);
    }
    let mut books = all_bounded(refs, AUDIT_CONCURRENCY, |acct| async move {
        let bytes = acct.call(AccountMsg::Inspect, Some(Duration::from_secs(2))).await.ok()?.success()?;
        wire::decode::<Book>(&bytes).ok()
    })
    .await?;
    books.sort_by(|a, b| a.name.cmp(&b.name));
    Some((count(&books), books))
}

/// Runs `each` over `items`, at most `limit` at once; every answer (in completion order), or
/// `None` as soon as one answers `None` (the others are dropped).
async fn all_bounded<I, T, F, Fut>(items: Vec<I>, limit: usize, each: F) -> Option<Vec<T>>
where
    F: FnMut(I) -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    use futures::stream::{self, StreamExt};
    let mut answers = stream::iter(items).map(each).buffer_unordered(limit.max(1));
    let mut out = Vec::new();
    while let Some(answer) = answers.next().await {
        out.push(answer?);
    }
    Some(out)
}

/// The money in `books`: balances plus credits owed and not yet received.
pub fn count(books: &[Book]) -> Audit {
    let credited: BTreeSet<u64> = books.iter().flat_map(|b| b.credited.iter().copied()).collect();
    let mut a = Audit::default();
    for b in books {
        a.total += b.balance;
        a.outbox_entries += b.outbox.len();
        for t in b.outbox.iter().filter(|t| !credited.contains(&t.id)) {
            a.in_flight += t.amount;
        }
    }
    a.total += a.in_flight;
    a
}

impl Actor for Auditor {
    type Msg = AuditorMsg;
    type State = Audits;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<AuditorMsg>, _: ()) -> Result<Audits, ActorProcessingErr> {
        let every = audit_every(self.accounts);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if myself.cast(AuditorMsg::Tick).is_err() {
                    return;
                }
            }
        });
        Ok(Audits::default())
    }

    async fn handle(
        &self,
        myself: ActorRef<AuditorMsg>,
        msg: AuditorMsg,
        st: &mut Audits,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AuditorMsg::Status(reply) => {
                let served = Served { node: self.ctx.node_name().to_string(), token: self.ctx.token() };
                let _ = reply.send(wire::encode(&AuditorStatus { audits: st.clone(), served }));
            }
            AuditorMsg::Tick => {
                // The accounts answer from other nodes: count off the auditor's task.
                let (accounts, locator) = (self.accounts, self.ctx.locator().clone());
                tokio::spawn(async move {
                    if let Some((a, _)) = audit(&locator, accounts).await {
                        let _ = myself.cast(AuditorMsg::Done(wire::encode(&a)));
                    }
                });
            }
            AuditorMsg::Done(bytes) => {
                if let Ok(a) = wire::decode::<Audit>(&bytes) {
                    // An audit whose write fails (no majority reachable) is simply not counted.
                    self.persist(st, a).await?;
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
        *st = saved;
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

/// The register's messages.
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum RegisterMsg {
    /// Sets the value (journaled before the answer); a [`RegisterReply`].
    #[rpc]
    Write(u64, RpcReplyPort<Vec<u8>>),
    /// The value, read linearizably; a [`RegisterReply`].
    #[rpc]
    Read(RpcReplyPort<Vec<u8>>),
    /// A fault: panic in the handler.
    Panic,
    /// A fault: a handler that never returns.
    Hang,
}

/// A register: one durable value, written by clients and read linearizably.
#[derive(Clone)]
pub struct Register {
    ctx: SingletonContext,
}

impl Actor for Register {
    type Msg = RegisterMsg;
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<RegisterMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }
    async fn handle(
        &self,
        _: ActorRef<RegisterMsg>,
        msg: RegisterMsg,
        value: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        let served = Served { node: self.ctx.node_name().to_string(), token: self.ctx.token() };
        match msg {
            RegisterMsg::Write(v, reply) => {
                let (answer, restart) = match self.persist(value, v).await {
                    Ok(_) => (RegisterReply::Written(served), None),
                    Err(e) => (RegisterReply::Refused(e.to_string()), e.restart_required().then_some(e)),
                };
                let _ = reply.send(wire::encode(&answer));
                if let Some(e) = restart {
                    return Err(e.into()); // restart to reopen the key
                }
            }
            RegisterMsg::Read(reply) => {
                let answer = match self.ctx.linearizable().await {
                    Ok(()) => RegisterReply::Value(*value, served),
                    Err(e) => RegisterReply::Refused(e.to_string()),
                };
                let _ = reply.send(wire::encode(&answer));
            }
            RegisterMsg::Panic => panic!("injected fault: panic in the register"),
            RegisterMsg::Hang => std::future::pending::<()>().await,
        }
        Ok(())
    }
}

impl Checkpoint for Register {
    type Snapshot = u64;
    fn snapshot(&self, v: &u64) -> u64 {
        *v
    }
    fn restore(&self, v: &mut u64, saved: u64) {
        *v = saved;
    }
}

impl EventSourced for Register {
    type Event = u64;
    fn apply(&self, v: &mut u64, new: &u64) {
        *v = *new;
    }
}

/// The bank's singletons: `accounts` accounts, the auditor and the register, all durable.
pub fn singletons(accounts: usize) -> Vec<SingletonSpec> {
    let mut specs = Vec::with_capacity(accounts + 2);
    for i in 0..accounts {
        let name = account_name(i);
        let (n, key) = (name.clone(), key_of(&name));
        specs.push(
            SingletonSpec::new(name.clone(), move |ctx: &SingletonContext| {
                let policy = SnapshotPolicy::new().every_messages(ACCOUNT_SNAPSHOT_EVERY).retain(2);
                let account = Account { name: n.clone(), ctx: ctx.clone() };
                (Checkpointed::durable(account, ctx.checkpoints(), key.clone(), policy), ())
            })
            .checkpoint_key(key_of(&name))
            .deadline(HANDLER_DEADLINE),
        );
    }
    specs.push(
        SingletonSpec::new("auditor", move |ctx: &SingletonContext| {
            let policy = SnapshotPolicy::new().every_messages(50).retain(2);
            let auditor = Auditor { accounts, ctx: ctx.clone() };
            (Checkpointed::durable(auditor, ctx.checkpoints(), key_of("auditor"), policy), ())
        })
        .checkpoint_key(key_of("auditor"))
        .deadline(HANDLER_DEADLINE),
    );
    specs.push(
        SingletonSpec::new("register", move |ctx: &SingletonContext| {
            let policy = SnapshotPolicy::new().every_messages(100).retain(2);
            (Checkpointed::durable(Register { ctx: ctx.clone() }, ctx.checkpoints(), key_of("register"), policy), ())
        })
        .checkpoint_key(key_of("register"))
        .deadline(HANDLER_DEADLINE),
    );
    specs
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_delivery_is_taken_for_lost_only_after_three_credit_timeouts() {
        let now = std::time::Instant::now();
        assert!(!delivery_lost(None, now), "nothing under way");
        assert!(!delivery_lost(Some(now), now));
        assert!(!delivery_lost(Some(now - CREDIT_TIMEOUT * 2), now), "its call may still be running");
        assert!(delivery_lost(Some(now - CREDIT_TIMEOUT * 3 - Duration::from_millis(1)), now));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_audit_has_at_most_its_bound_in_flight_and_stops_at_the_first_silent_account() {
        const LIMIT: usize = 8;
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let inspect = |fail_at: Option<usize>| {
            let (running, most) = (running.clone(), most.clone());
            move |i: usize| {
                let (running, most) = (running.clone(), most.clone());
                async move {
                    most.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    (Some(i) != fail_at).then_some(i)
                }
            }
        };
        let mut all = all_bounded((0..100).collect(), LIMIT, inspect(None)).await.expect("every one answers");
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), LIMIT, "the bound is reached and never passed");
        assert_eq!(all_bounded((0..100).collect(), LIMIT, inspect(Some(3))).await, None);
    }
}
