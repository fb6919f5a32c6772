//! The supervisor as a ractor actor: its start, and which message or supervision event leads
//! to which of its rules.

use super::*;

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorInit;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        init: SupervisorInit,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let SupervisorInit { spec, path, events, exit } = init;
        // Until this incarnation says how it ended (in post_stop), it counts as killed: a kill
        // skips post_stop, and an earlier incarnation's reason must not be reported for it.
        exit.set(ExitReason::Killed);
        let mut state = SupervisorState {
            path,
            strategy: spec.strategy,
            auto_shutdown: spec.auto_shutdown,
            intensity: IntensityWindow::new(spec.intensity, spec.period),
            intensity_limit: (spec.intensity, spec.period),
            record: spec.record_failures,
            flush_scheduled: false,
            teardown: Vec::new(),
            group_retry: None,
            exit,
            children: Children::with_capacity(spec.children.len()),
            events,
            next_dynamic: 0,
            starters: HashSet::new(),
            tallies: Vec::new(),
            gauges_at: None,
            gauge_refresh_pending: false,
            exit_reason: None,
            reporter: reporter(myself.clone()),
        };
        for child in spec.children {
            let idx = state.add_child(child);
            match state.start_at(&myself, idx).await {
                Ok(Started::Running) => {
                    state.started(idx);
                }
                Ok(Started::Ignored) => {
                    state.ignored(idx);
                }
                Err(cause) => {
                    let path = state.children[idx].path.clone();
                    state.stop_all().await;
                    return Err(Box::new(StartError::Failed { path, cause }));
                }
            }
        }
        state.settle(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::ChildCrashed(crash) => {
                let Some(idx) = state.index_of_actor(crash.actor) else {
                    let _ = crash.reply.send(Directive::Exit);
                    return Ok(());
                };
                let clues = Clues {
                    incarnation: crash.incarnation,
                    message_type: crash.dropped_message,
                    captured: crash.captured,
                    rendered: crash.rendered,
                };
                state.exited(&myself, idx, crash.reason, Some(crash.reply), clues).await;
            }
            SupervisorMsg::ChildRecovered { actor, incarnation } => {
                if let Some(idx) = state.index_of_actor(actor) {
                    if let Status::Crashed { cell, reply: None, .. } = state.children[idx].status() {
                        let cell = cell.clone();
                        state.children.set_status(idx, Status::Running { cell });
                        let path = state.children[idx].path.clone();
                        state.observe(SupervisorEvent::ChildRestarted { path, incarnation, in_place: true });
                    }
                }
            }
            SupervisorMsg::StateRestored { actor, incarnation, from } => {
                if let Some(idx) = state.index_of_actor(actor) {
                    let path = state.children[idx].path.clone();
                    state.events.recorder().note_restored(&path.to_string(), incarnation, &from);
                    state.observe(SupervisorEvent::StateRestored { path, incarnation, from });
                }
            }
            SupervisorMsg::ChildHung { actor, stuck_for, message_type } => {
                // Only a running child can hang; a crashed one is already being handled.
                let Some(idx) = state.index_of_actor(actor) else { return Ok(()) };
                let Status::Running { cell } = state.children[idx].status() else { return Ok(()) };
                // Kill without waiting: a handler spinning synchronously cannot be pre-empted,
                // and the supervisor must not block on it. The new incarnation starts once the
                // old one is torn down (see `teardown`), at most `TEARDOWN_WAIT` later.
                cell.kill();
                state.await_teardown(idx, Some((actor, true)));
                // Its task may never end (a synchronous spin): the teardown wait is all the
                // replacement waits for (a kill in a handler hands the state over in the event).
                state.children[idx].task = None;
                state.children.set_status(idx, Status::Restarting { not_before: Instant::now() });
                let c = &state.children[idx];
                let clues = Clues { incarnation: c.incarnation, message_type: Some(message_type), ..Clues::default() };
                state.exited(&myself, idx, ExitReason::Hung { stuck_for, message_type }, None, clues).await;
            }
            SupervisorMsg::Retry => state.resume_restarts(&myself).await,
            SupervisorMsg::Flush => {
                state.flush_scheduled = false;
                let bus = state.events.clone();
                tokio::task::spawn_blocking(move || bus.flush());
            }

            SupervisorMsg::RefreshGauges => {
                state.gauge_refresh_pending = false;
                state.gauges_at = Some(Instant::now());
                state.set_gauges();
                return Ok(());
            }
            SupervisorMsg::StartChild(spec, reply) => {
                let r = state.api_start_child(&myself, spec).await;
                let _ = reply.send(r);
            }
            SupervisorMsg::TerminateChild(id, reply) => {
                let r = state.api_terminate_child(&id).await;
                let _ = reply.send(r);
            }
            SupervisorMsg::RestartChild(id, reply) => {
                let r = state.api_restart_child(&myself, &id).await;
                let _ = reply.send(r);
            }
            SupervisorMsg::DeleteChild(id, reply) => {
                let _ = reply.send(state.api_delete_child(&id));
            }
            SupervisorMsg::WhichChildren(reply) => {
                let _ = reply.send(state.children.iter().map(|(_, c)| state.info(c)).collect());
                return Ok(());
            }
            SupervisorMsg::CountChildren(reply) => {
                let _ = reply.send(state.counts());
                return Ok(());
            }
        }
        state.settle(&myself);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if !state.teardown.is_empty() {
            let gone = match &evt {
                SupervisionEvent::ActorTerminated(cell, ..) | SupervisionEvent::ActorFailed(cell, _) => {
                    state.teardown.iter().position(|(actor, ..)| *actor == cell.get_id())
                }
                _ => None,
            };
            if let Some(pos) = gone {
                // A killed incarnation's teardown: drop its state, then start its replacement.
                state.teardown.remove(pos);
                drop(evt);
                state.resume_restarts(&myself).await;
                state.settle(&myself);
                return Ok(());
            }
        }
        let (cell, reason, ignored) = match evt {
            SupervisionEvent::ActorTerminated(cell, state, reason) => {
                // The stopped incarnation's state (ractor hands it over here; after a graceful
                // stop the host already dropped the user's part) goes before anything starts
                // in its place.
                drop(state);
                let ignored = reason.as_deref() == Some(crate::reason::IGNORED_STOP);
                (cell, ExitReason::from_stop_reason(reason.as_deref()), ignored)
            }
            SupervisionEvent::ActorFailed(cell, err) => (cell, ExitReason::Error(err.to_string()), false),
            _ => return Ok(()),
        };
        // Exits of actors the supervisor stopped itself, or already replaced, are not found.
        let Some(idx) = state.index_of_actor(cell.get_id()) else { return Ok(()) };
        if ignored && matches!(state.children[idx].status(), Status::Crashed { reply: None, .. }) {
            // Restarted in place (the restart already counted), it chose not to run.
            state.children.set_status(idx, Status::Stopped);
            state.ignored(idx);
            state.settle(&myself);
            return Ok(());
        }
        let clues = Clues { incarnation: state.children[idx].incarnation, ..Clues::default() };
        state.exited(&myself, idx, reason, None, clues).await;
        state.settle(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.stop_all().await;
        state.settle(&myself);
        // Nothing queued is left behind by a supervisor that stops.
        state.events.flush();
        let reason = state.exit_reason.clone().unwrap_or(ExitReason::Shutdown(None));
        state.exit.set(reason.clone());
        state.observe(SupervisorEvent::SupervisorShutdown { path: state.path.clone(), reason });
        Ok(())
    }
}
