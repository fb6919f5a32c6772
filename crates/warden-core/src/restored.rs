//! How a state-restoring layer (warden's checkpoints) tells the supervision core which saved
//! state a child resumed from.
//!
//! While warden runs a child's `pre_start` (first start or restart in place), a task-local slot
//! is open; [`note_restored`] fills it. The host actor then tells its supervisor, which
//! publishes [`SupervisorEvent::StateRestored`](crate::SupervisorEvent::StateRestored) and adds
//! the note to the child's latest crash report. The core knows nothing about stores: this
//! note is the whole interface.
//!
//! ```
//! use warden_core::{note_restored, RestoredFrom};
//!
//! // Outside a start run by a warden supervisor there is nobody to tell.
//! let from = RestoredFrom { seq: 42, age_ms: 1_500, replayed: 3, skipped: 0 };
//! assert!(!note_restored(from));
//! ```

use std::cell::RefCell;
use std::future::Future;

/// Which saved state a (re)started child resumed from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RestoredFrom {
    /// The snapshot's sequence number (0: no snapshot, state rebuilt from the journal alone).
    pub seq: u64,
    /// How old the snapshot was when it was restored, in ms.
    pub age_ms: u64,
    /// Journal entries replayed on top of it (durable mode).
    pub replayed: u64,
    /// Damaged snapshots skipped to get there.
    pub skipped: u32,
}

tokio::task_local! {
    static NOTE: RefCell<Option<RestoredFrom>>;
}

/// Records that the child being started resumed from `from`. Returns `false` (and records
/// nothing) outside a start run by a warden supervisor.
pub fn note_restored(from: RestoredFrom) -> bool {
    NOTE.try_with(|n| *n.borrow_mut() = Some(from)).is_ok()
}

/// Runs a start callback with the slot open, and returns what was noted.
pub(crate) async fn collect<F: Future>(f: F) -> (F::Output, Option<RestoredFrom>) {
    NOTE.scope(RefCell::new(None), async move {
        let out = f.await;
        (out, NOTE.with(|n| n.borrow_mut().take()))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_note_is_seen_only_inside_a_start() {
        let from = RestoredFrom { seq: 3, age_ms: 10, replayed: 2, skipped: 0 };
        assert!(!note_restored(from.clone()), "no slot outside a start");
        let ((), got) = collect(async { assert!(note_restored(from.clone())) }).await;
        assert_eq!(got, Some(from));
        let ((), none) = collect(async {}).await;
        assert_eq!(none, None);
    }
}
