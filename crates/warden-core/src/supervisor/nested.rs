//! A supervisor as the child of another: the spec that nests one ([`ChildSpec::supervisor`],
//! [`SupervisorChildSpec`]) and the starter that spawns it linked under its parent. Here and
//! not in `spec.rs`, so that the specs name no supervisor code.

use super::*;
use crate::protocol::Spawned;
use crate::spec::TypedChildSpec;

/// The spec of a nested supervisor child.
pub type SupervisorChildSpec = TypedChildSpec<SupervisorControl>;

impl SupervisorChildSpec {
    /// The nested supervisor's runtime API (usable once it runs; follows its restarts).
    pub fn control(&self) -> SupervisorControl {
        self.handle.clone()
    }
}

impl ChildSpec {
    /// A nested supervisor child: permanent, shutdown `Infinity`. The returned
    /// [`SupervisorChildSpec`] hands out the nested supervisor's runtime API
    /// ([`control`](SupervisorChildSpec::control)) before it starts.
    pub fn supervisor(id: impl Into<String>, spec: SupervisorSpec) -> SupervisorChildSpec {
        let id = id.into();
        let starter = SupervisorStarter::new(spec, &id);
        let control = starter.control();
        let spec = ChildSpec {
            id,
            restart: RestartType::Permanent,
            shutdown: Shutdown::Infinity,
            child_type: ChildType::Supervisor,
            significant: false,
            backoff: None,
            deadline: None,
            heartbeat: None,
            starter: Arc::new(starter),
        };
        TypedChildSpec { spec, handle: control }
    }

    /// For a supervisor child, its runtime API (usable once it runs; follows its restarts).
    /// `None` for workers. [`SupervisorChildSpec::control`] is the infallible form.
    pub fn supervisor_control(&self) -> Option<SupervisorControl> {
        if self.child_type != ChildType::Supervisor {
            return None;
        }
        self.starter.as_any().downcast_ref::<SupervisorStarter>().map(SupervisorStarter::control)
    }
}

/// Starts nested supervisors for a [`ChildSpec::supervisor`] and owns their stable handle.
pub(crate) struct SupervisorStarter {
    spec: SupervisorSpec,
    slot: Arc<Slot<SupervisorMsg>>,
    exit: ExitNote,
}

impl SupervisorStarter {
    pub(crate) fn new(spec: SupervisorSpec, id: &str) -> Self {
        SupervisorStarter { spec, slot: Arc::new(Slot::new(id)), exit: ExitNote::default() }
    }

    /// The nested supervisor's runtime API (follows its restarts).
    pub(crate) fn control(&self) -> SupervisorControl {
        SupervisorControl { handle: ChildRef::from_slot(self.slot.clone()), exit: self.exit.clone() }
    }
}

impl Starter for SupervisorStarter {
    fn start(&self, ctx: StartCtx) -> BoxFuture<'static, Result<Option<Spawned>, String>> {
        let spec = self.spec.clone();
        let slot = self.slot.clone();
        let exit = self.exit.clone();
        Box::pin(async move {
            spec.validate().map_err(|e| e.to_string())?;
            slot.set_path(ctx.path.clone());
            let init = SupervisorInit { spec, path: ctx.path.clone(), events: ctx.events.clone(), exit };
            let (actor, task) =
                Actor::spawn_linked(None, Supervisor, init, ctx.supervisor.clone()).await.map_err(spawn_cause)?;
            slot.install(actor.clone(), Some(ctx.supervisor.clone()));
            Ok(Some(Spawned { cell: actor.get_cell(), task }))
        })
    }

    fn slot(&self) -> &dyn SlotControl {
        &*self.slot
    }

    fn handle_any(&self) -> Box<dyn Any + Send> {
        Box::new(ChildRef::from_slot(self.slot.clone()))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
