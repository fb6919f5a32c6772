//! The runtime calls a supervisor answers (OTP's `start_child`, `terminate_child`,
//! `restart_child`, `delete_child`, `which_children`, `count_children`) and their errors.

use super::*;
use crate::decision::{plan_start_child, plan_stopped_only, plan_terminate, CallRefusal, Existing, StartRefusal};

impl SupervisorState {
    pub(super) fn info(&self, c: &Child) -> ChildInfo {
        let supervisor =
            c.spec.supervisor_control().map(|control| SupervisorRef { control, events: self.events.clone() });
        ChildInfo {
            id: c.id().to_string(),
            path: c.path.clone(),
            status: c.public_status(),
            child_type: c.spec.child_type,
            restart: c.spec.restart,
            restarts: c.restarts,
            incarnation: c.incarnation,
            actor: c.cell().cloned(),
            supervisor,
        }
    }

    pub(super) fn counts(&self) -> ChildCounts {
        let mut n = ChildCounts { specs: self.children.len(), ..Default::default() };
        for (_, c) in self.children.iter() {
            if matches!(c.status(), Status::Running { .. }) {
                n.active += 1;
            }
            match c.spec.child_type {
                ChildType::Worker => n.workers += 1,
                ChildType::Supervisor => n.supervisors += 1,
            }
        }
        n
    }

    pub(super) async fn api_start_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        spec: ChildSpec,
    ) -> Result<ChildInfo, SupervisorError> {
        validate_child(&spec).map_err(|error| SupervisorError::InvalidSpec { supervisor: self.path.clone(), error })?;
        let dynamic = matches!(self.strategy, Strategy::Dynamic { .. });
        let same_spec_running = self.starters.contains(&starter_key(&spec));
        // Static supervisors are small and keyed by id; dynamic ones may hold very many
        // children, so they are checked through the set of specs in use only.
        let existing = if dynamic && !same_spec_running {
            None
        } else {
            self.children
                .iter()
                .map(|(_, c)| c)
                .find(|c| Arc::ptr_eq(&c.spec.starter, &spec.starter) || (!dynamic && c.id() == spec.id))
        };
        let seen = match existing.map(|c| c.status()) {
            None => Existing::None,
            Some(Status::Running { .. }) => Existing::Running,
            Some(_) => Existing::NotRunning,
        };
        if let Err(refusal) = plan_start_child(self.strategy, self.children.len(), seen) {
            let path = || existing.map(|c| c.path.clone()).unwrap_or_else(|| self.path.clone());
            return Err(match refusal {
                StartRefusal::MaxChildren { max } => {
                    SupervisorError::MaxChildren { supervisor: self.path.clone(), max }
                }
                StartRefusal::AlreadyStarted => SupervisorError::AlreadyStarted { path: path() },
                StartRefusal::AlreadyPresent => SupervisorError::AlreadyPresent { path: path() },
            });
        }
        let idx = self.add_child(spec);
        match self.start_at(myself, idx).await {
            Ok(Started::Ignored) => Ok(self.ignored(idx)),
            Ok(Started::Running) => {
                self.started(idx);
                Ok(self.info(&self.children[idx]))
            }
            Err(cause) => {
                let path = self.children[idx].path.clone();
                self.remove_at(idx);
                Err(SupervisorError::StartFailed { path, cause })
            }
        }
    }

    pub(super) async fn api_terminate_child(&mut self, id: &str) -> Result<(), SupervisorError> {
        let idx = self.index_of(id).ok_or_else(|| self.not_found(id))?;
        let plan = plan_terminate(self.strategy, self.children[idx].spec.restart, self.children[idx].phase());
        if plan.cancel_restart {
            // No repair will follow (`settle` drops it when not recording).
            self.tallies.push((Instant::now(), self.children[idx].path.clone(), Tally::Stopped));
        }
        self.terminate_at(idx).await;
        self.children.set_status(idx, Status::Stopped);
        if self.group_retry.as_deref() == Some(id) {
            self.cancel_group_retry(idx);
        }
        if plan.forget {
            self.remove_at(idx);
        } else {
            self.close_slot(idx);
        }
        Ok(())
    }

    pub(super) async fn api_restart_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: &str,
    ) -> Result<ChildInfo, SupervisorError> {
        let idx = self.stopped_only("restart_child", id)?;
        match self.start_at(myself, idx).await {
            Ok(Started::Ignored) => Ok(self.ignored(idx)),
            Ok(Started::Running) => {
                self.started(idx);
                Ok(self.info(&self.children[idx]))
            }
            Err(cause) => Err(SupervisorError::StartFailed { path: self.children[idx].path.clone(), cause }),
        }
    }

    pub(super) fn api_delete_child(&mut self, id: &str) -> Result<(), SupervisorError> {
        let idx = self.stopped_only("delete_child", id)?;
        self.remove_at(idx);
        Ok(())
    }

    /// The index of child `id` if `operation` (restart or delete) may act on it
    /// ([`plan_stopped_only`]), else the error that says why not.
    fn stopped_only(&self, operation: &'static str, id: &str) -> Result<usize, SupervisorError> {
        let idx = self.index_of(id);
        let phase = idx.map(|i| self.children[i].phase());
        let path = || idx.map(|i| self.children[i].path.clone()).unwrap_or_else(|| self.path.clone());
        match plan_stopped_only(self.strategy, phase) {
            // The plan only answers `Ok` for a child that exists.
            Ok(()) => idx.ok_or_else(|| self.not_found(id)),
            Err(CallRefusal::NotSupported) => {
                Err(SupervisorError::NotSupported { supervisor: self.path.clone(), operation })
            }
            Err(CallRefusal::NotFound) => Err(self.not_found(id)),
            Err(CallRefusal::Running) => Err(SupervisorError::Running { path: path() }),
            Err(CallRefusal::Restarting) => Err(SupervisorError::Restarting { path: path() }),
        }
    }

    pub(super) fn not_found(&self, id: &str) -> SupervisorError {
        SupervisorError::NotFound { supervisor: self.path.clone(), id: id.to_string() }
    }
}
