//! The control channel of an actor: typed signals that overtake its mailbox (an injected
//! fault, a request for a snapshot now), delivered and read in one place.
//!
//! ractor gives a message no priority over the mailbox except on its supervision port, where
//! a linked child reports to its supervisor. A control signal travels there, as a
//! [`SupervisionEvent::ActorFailed`] carrying a [`Control`] whose payload is the signal's own
//! type; no layer builds that event itself. The receiver reads it with [`read`] in its
//! `handle_supervisor_evt` (warden's child host reads the core's own signals before anything
//! else, and hands the rest on to the actor it hosts, as ractor does for any supervision
//! event).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
//! use warden_core::control;
//!
//! struct Poked(u32);
//!
//! struct Target;
//! impl Actor for Target {
//!     type Msg = ();
//!     type State = Option<tokio::sync::oneshot::Sender<u32>>;
//!     type Arguments = tokio::sync::oneshot::Sender<u32>;
//!     async fn pre_start(&self, _: ActorRef<()>, tx: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
//!         Ok(Some(tx))
//!     }
//!     async fn handle_supervisor_evt(
//!         &self,
//!         _: ActorRef<()>,
//!         evt: SupervisionEvent,
//!         tx: &mut Self::State,
//!     ) -> Result<(), ActorProcessingErr> {
//!         if let (Some(Poked(n)), Some(tx)) = (control::read::<Poked>(&evt), tx.take()) {
//!             let _ = tx.send(*n);
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let (tx, rx) = tokio::sync::oneshot::channel();
//! let (target, _) = Actor::spawn(None, Target, tx).await.unwrap();
//! control::signal(&target.get_cell(), Poked(7)).await.unwrap();
//! assert_eq!(rx.await.unwrap(), 7);
//! target.stop(None);
//! # }
//! ```

use std::any::Any;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};

/// A control signal on its way: the payload, boxed. It is an error type only because that is
/// what ractor's supervision port carries; it never reports a failure.
pub struct Control {
    payload: Box<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Control(..)")
    }
}

impl std::fmt::Display for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a warden control signal (not a failure)")
    }
}

impl std::error::Error for Control {}

/// Why a signal could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The helper actor that carries the signal could not be spawned.
    #[error("could not spawn the actor that carries a control signal: {0}")]
    Spawn(String),
}

/// The signal of type `T` that `evt` carries, if it is one.
pub fn read<T: 'static>(evt: &SupervisionEvent) -> Option<&T> {
    match evt {
        SupervisionEvent::ActorFailed(_, err) => err.downcast_ref::<Control>()?.payload.downcast_ref::<T>(),
        _ => None,
    }
}

/// Sends `payload` from `child` to the actor it is linked under (its supervisor in ractor's
/// sense), ahead of that actor's queued messages. For a helper actor the receiver spawned
/// linked to itself (a ticker, say).
pub fn signal_parent(child: &ActorCell, payload: impl Any + Send + Sync) {
    child.notify_supervisor(SupervisionEvent::ActorFailed(
        child.clone(),
        Box::new(Control { payload: Box::new(payload) }),
    ));
}

/// Sends `payload` to `target`, ahead of its queued messages, through a short-lived helper
/// actor linked under it for the moment of sending.
pub async fn signal(target: &ActorCell, payload: impl Any + Send + Sync) -> Result<(), ControlError> {
    let (carrier, _join) = Actor::spawn(None, Carrier, ()).await.map_err(|e| ControlError::Spawn(e.to_string()))?;
    let cell = carrier.get_cell();
    cell.link(target.clone());
    signal_parent(&cell, payload);
    cell.unlink(target.clone());
    cell.stop(None);
    Ok(())
}

/// The helper of [`signal`]: it does nothing but exist while it sends.
struct Carrier;

impl Actor for Carrier {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}
