//! The hang watchdog: notices a child whose handler has run past its deadline.
//!
//! A child given a deadline ([`ChildSpec::deadline`](crate::ChildSpec::deadline)) shares a
//! [`Beat`] with one process-wide watchdog thread. The child's host actor marks the beat busy
//! when a handler starts and idle when it returns: two relaxed stores of a word it alone
//! writes, so the message path pays almost nothing. The thread samples every beat each tick;
//! a beat that stays busy with the same count for longer than its deadline is reported to the
//! child's supervisor, which kills the child and restarts it like any failed child.
//!
//! The watchdog runs on its own OS thread, fed by a crossbeam channel, so it keeps working
//! when a handler blocks a tokio worker thread. What it cannot do is pre-empt that handler:
//! tokio can only cancel a task at an `.await`. A handler stuck on an await is cancelled by the
//! kill at once; a handler spinning synchronously keeps its thread until it returns, and only
//! then does the kill take effect. warden does not wait for it: the supervisor starts a new
//! incarnation right away, so service resumes on the remaining worker threads while the old
//! one finishes its spin and is dropped. If every worker is blocked, nothing async can run
//! until one returns; the watchdog still reports.
//!
//! An idle actor is never hung: only a handler in progress counts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use ractor::{ActorId, ActorRef};

use crate::failure_detector::Deadline;

/// The shortest and longest sampling period of the watchdog thread.
const MIN_TICK: Duration = Duration::from_millis(1);
const MAX_TICK: Duration = Duration::from_millis(100);
/// Registrations waiting for the thread; past this, `watch` reports the watchdog as busy.
const COMMAND_CAPACITY: usize = 65_536;

/// A child's sign of life: `(handled << 1) | busy`, written only by the child's host actor.
#[derive(Debug, Default)]
pub(crate) struct Beat {
    word: AtomicU64,
}

impl Beat {
    /// A beat for an application-level heartbeat: always "in progress", its count moved by
    /// each call-in, so that the handler rule reads "no call-in for longer than the interval".
    pub(crate) fn calling_in() -> Self {
        Beat { word: AtomicU64::new(1) }
    }

    /// The actor called in.
    #[inline]
    pub(crate) fn call_in(&self) {
        self.word.fetch_add(2, Ordering::Relaxed);
    }

    /// A handler starts.
    #[inline]
    pub(crate) fn enter(&self) {
        let handled = self.word.load(Ordering::Relaxed) >> 1;
        self.word.store(((handled + 1) << 1) | 1, Ordering::Relaxed);
    }

    /// The handler returned.
    #[inline]
    pub(crate) fn exit(&self) {
        let w = self.word.load(Ordering::Relaxed);
        self.word.store(w & !1, Ordering::Relaxed);
    }
}

/// A hung handler (or a missed heartbeat), as the watchdog reports it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hang {
    /// The actor.
    pub actor: ActorId,
    /// How long its handler has run (or since it last called in).
    pub stuck_for: Duration,
    /// The type of the message being handled, or [`MISSED_HEARTBEAT`].
    pub message_type: &'static str,
}

/// Where the watchdog reports a hang: whoever registered the watch decides (the child's host
/// passes one that tells its supervisor). Called on the watchdog thread: it must not block.
pub(crate) type Report = Arc<dyn Fn(Hang) + Send + Sync>;

/// One watched child.
struct Watch {
    actor: ActorId,
    beat: Arc<Beat>,
    deadline: Deadline,
    report: Report,
    message_type: &'static str,
    /// The busy word last sampled, and when that busy word was first seen.
    seen: Option<(u64, Instant)>,
    reported: bool,
}

enum Command {
    Add(Box<Watch>),
    Remove(ActorId),
}

/// Removes its watch when dropped (the host actor's state is dropped when the actor ends,
/// killed or not).
pub(crate) struct WatchGuard {
    actor: ActorId,
    tx: Sender<Command>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let _ = self.tx.try_send(Command::Remove(self.actor));
        heartbeats().lock().unwrap_or_else(|e| e.into_inner()).remove(&self.actor);
    }
}

/// The heartbeat beats of the actors that must call in, by actor.
fn heartbeats() -> &'static Mutex<HashMap<ActorId, Arc<Beat>>> {
    static MAP: OnceLock<Mutex<HashMap<ActorId, Arc<Beat>>>> = OnceLock::new();
    MAP.get_or_init(Mutex::default)
}

/// What a missed application-level heartbeat is reported as, in place of a message type.
pub const MISSED_HEARTBEAT: &str = "(missed heartbeat)";

/// Calls in for an actor whose spec asks for an application-level heartbeat
/// ([`ChildSpec::heartbeat`](crate::ChildSpec::heartbeat)): an actor that does not call in
/// within its interval is reported hung, killed and restarted. Returns `false` if the actor
/// has no heartbeat to keep (a call-in costs a lock and a map lookup; call it every interval
/// or so, not per message).
pub fn heartbeat<M: ractor::Message>(myself: &ActorRef<M>) -> bool {
    match heartbeats().lock().unwrap_or_else(|e| e.into_inner()).get(&myself.get_id()) {
        Some(beat) => {
            beat.call_in();
            true
        }
        None => false,
    }
}

/// Registers an application-level heartbeat for `actor`: it must call [`heartbeat`] at least
/// every `interval`.
pub(crate) fn watch_heartbeat(actor: ActorId, interval: Duration, report: Report) -> Option<WatchGuard> {
    let beat = Arc::new(Beat::calling_in());
    heartbeats().lock().unwrap_or_else(|e| e.into_inner()).insert(actor, beat.clone());
    watch(actor, beat, interval, report, MISSED_HEARTBEAT)
}

fn commands() -> &'static Sender<Command> {
    static TX: OnceLock<Sender<Command>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::bounded(COMMAND_CAPACITY);
        let spawned = std::thread::Builder::new().name("warden-watchdog".into()).spawn(move || run(rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the watchdog thread; hang detection is off");
        }
        tx
    })
}

/// Watches `beat` of the actor `actor`: calls `report` when a handler runs past
/// `deadline`. `None` if the watchdog cannot take more registrations (logged).
pub(crate) fn watch(
    actor: ActorId,
    beat: Arc<Beat>,
    deadline: Duration,
    report: Report,
    message_type: &'static str,
) -> Option<WatchGuard> {
    let tx = commands();
    let w = Watch { actor, beat, deadline: Deadline { deadline }, report, message_type, seen: None, reported: false };
    match tx.try_send(Command::Add(Box::new(w))) {
        Ok(()) => Some(WatchGuard { actor, tx: tx.clone() }),
        Err(e) => {
            tracing::error!(error = %e, "watchdog registration refused; this child is not watched for hangs");
            None
        }
    }
}

fn run(rx: Receiver<Command>) {
    let mut watches: Vec<Watch> = Vec::new();
    let mut tick = MAX_TICK;
    let mut next = Instant::now() + tick;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Command::Add(w)) => {
                // An eighth of the shortest deadline keeps detection within 1.125x of it
                // (a handler is first seen at most one tick after it starts, and reported at
                // the first tick past the deadline after that).
                tick = tick.min((w.deadline.deadline / 8).clamp(MIN_TICK, MAX_TICK));
                next = next.min(Instant::now() + tick);
                watches.push(*w);
            }
            Ok(Command::Remove(actor)) => watches.retain(|w| w.actor != actor),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Sample on time even while registrations keep arriving.
        let now = Instant::now();
        if now >= next {
            next = now + tick;
            for w in &mut watches {
                sample(w, now);
            }
        }
    }
}

fn sample(w: &mut Watch, now: Instant) {
    let word = w.beat.word.load(Ordering::Relaxed);
    if word & 1 == 0 {
        w.seen = None;
        w.reported = false;
        return;
    }
    let since = match w.seen {
        Some((seen_word, since)) if seen_word == word => since,
        _ => {
            // A new handler (or the first sample of this one): it started at the latest now.
            w.seen = Some((word, now));
            w.reported = false;
            now
        }
    };
    let stuck_for = now.saturating_duration_since(since);
    if !w.reported && w.deadline.is_suspect(stuck_for) {
        w.reported = true;
        (w.report)(Hang { actor: w.actor, stuck_for, message_type: w.message_type });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_beat_counts_handlers_and_flags_the_busy_one() {
        let b = Beat::default();
        b.enter();
        let first = b.word.load(Ordering::Relaxed);
        assert_eq!(first & 1, 1);
        b.exit();
        assert_eq!(b.word.load(Ordering::Relaxed) & 1, 0);
        b.enter();
        let second = b.word.load(Ordering::Relaxed);
        assert_ne!(first, second, "each handler has its own busy word");
    }
}
