//! A model-based property test: random sequences of child crashes, exits, kills and
//! runtime-API calls, checked after every step against a small reference model of the OTP
//! contract (which_children, restart counts, API errors, escalation).
//!
//! The same model is checked twice: against a running supervisor (actors, a runtime,
//! `which_children`), and against warden's pure decision functions alone (`warden::decision`,
//! no actors and no runtime), which runs many more cases in less time.
mod common;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};
use warden::decision::{
    group_plan, plan_exit, plan_start_child, plan_stopped_only, plan_terminate, CallRefusal, ChildView, Existing,
    ExitFacts, ExitPlan, IntensityWindow, Phase, StartRefusal,
};
use warden::prelude::{ChildRef, ChildSpec, RestartType, Supervisor, SupervisorRef, SupervisorSpec};
use warden::testkit::inject_kill;
use warden::Strategy as Otp;
use warden::{AutoShutdown, ChildStatus, ExitReason, SupervisorError};

/// Restarts allowed before the supervisor gives up; the period is long enough never to slide
/// during a test.
const INTENSITY: u32 = 4;
const IDS: u8 = 4;

fn restart_of(id: u8) -> RestartType {
    match id {
        1 => RestartType::Transient,
        2 => RestartType::Temporary,
        _ => RestartType::Permanent,
    }
}

#[derive(Clone, Debug, PartialEq)]
struct MChild {
    id: u8,
    running: bool,
    restarts: u64,
}

#[derive(Clone, Debug)]
struct Model {
    strategy: Otp,
    children: Vec<MChild>,
    restarts_total: u32,
    down: bool,
}

#[derive(Clone, Debug)]
enum Op {
    Panic(u8),
    ExitNormal(u8),
    Kill(u8),
    Terminate(u8),
    Restart(u8),
    Delete(u8),
    Start(u8),
}

/// What an API call answers, as the model predicts it.
#[derive(Debug, PartialEq)]
enum Answer {
    Ok,
    NotFound,
    Running,
    AlreadyStarted,
    AlreadyPresent,
    Unavailable,
}

impl Model {
    fn pos(&self, id: u8) -> Option<usize> {
        self.children.iter().position(|c| c.id == id)
    }

    fn running(&self, id: u8) -> Option<usize> {
        self.pos(id).filter(|&p| self.children[p].running)
    }

    /// OTP's rules, written out independently of warden's decision module.
    fn exit(&mut self, pos: usize, abnormal: bool) {
        let wanted = match restart_of(self.children[pos].id) {
            RestartType::Permanent => true,
            RestartType::Transient => abnormal,
            RestartType::Temporary => false,
        };
        if !wanted {
            if restart_of(self.children[pos].id) == RestartType::Temporary {
                self.children.remove(pos);
            } else {
                self.children[pos].running = false;
            }
            return;
        }
        self.restarts_total += 1;
        if self.restarts_total > INTENSITY {
            self.down = true;
            return;
        }
        self.children[pos].restarts += 1;
        let failed = self.children[pos].id;
        let (lo, hi) = match self.strategy {
            Otp::OneForAll => (0, self.children.len()),
            Otp::RestForOne => (pos, self.children.len()),
            _ => (pos, pos + 1),
        };
        let mut i = 0;
        self.children.retain(|c| {
            let member = i >= lo && i < hi;
            i += 1;
            !(member && c.id != failed && restart_of(c.id) == RestartType::Temporary)
        });
        let hi = hi.min(self.children.len());
        for c in &mut self.children[lo.min(hi)..hi] {
            c.running = true;
        }
    }

    fn answer(&self, op: &Op) -> Option<Answer> {
        if self.down {
            return matches!(op, Op::Terminate(_) | Op::Restart(_) | Op::Delete(_) | Op::Start(_))
                .then_some(Answer::Unavailable);
        }
        Some(match *op {
            Op::Terminate(i) => self.pos(i).map_or(Answer::NotFound, |_| Answer::Ok),
            Op::Restart(i) | Op::Delete(i) => match self.pos(i) {
                None => Answer::NotFound,
                Some(p) if self.children[p].running => Answer::Running,
                Some(_) => Answer::Ok,
            },
            Op::Start(i) => match self.pos(i) {
                None => Answer::Ok,
                Some(p) if self.children[p].running => Answer::AlreadyStarted,
                Some(_) => Answer::AlreadyPresent,
            },
            _ => return None,
        })
    }
}

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        prop_oneof![Just(Otp::OneForOne), Just(Otp::OneForAll), Just(Otp::RestForOne)]
            .prop_map(|strategy| Model {
                strategy,
                children: (0..IDS).map(|id| MChild { id, running: true, restarts: 0 }).collect(),
                restarts_total: 0,
                down: false,
            })
            .boxed()
    }

    fn transitions(_: &Model) -> BoxedStrategy<Op> {
        let id = 0..IDS;
        prop_oneof![
            2 => id.clone().prop_map(Op::Panic),
            1 => id.clone().prop_map(Op::ExitNormal),
            1 => id.clone().prop_map(Op::Kill),
            1 => id.clone().prop_map(Op::Terminate),
            1 => id.clone().prop_map(Op::Restart),
            1 => id.clone().prop_map(Op::Delete),
            1 => id.prop_map(Op::Start),
        ]
        .boxed()
    }

    fn apply(mut m: Model, op: &Op) -> Model {
        if m.down {
            return m;
        }
        match *op {
            Op::Panic(i) | Op::Kill(i) => {
                if let Some(p) = m.running(i) {
                    m.exit(p, true)
                }
            }
            Op::ExitNormal(i) => {
                if let Some(p) = m.running(i) {
                    m.exit(p, false)
                }
            }
            Op::Terminate(i) => {
                if let Some(p) = m.pos(i) {
                    if restart_of(i) == RestartType::Temporary {
                        m.children.remove(p);
                    } else {
                        m.children[p].running = false;
                    }
                }
            }
            Op::Restart(i) => {
                if let Some(p) = m.pos(i) {
                    m.children[p].running = true;
                }
            }
            Op::Delete(i) => {
                if let Some(p) = m.pos(i).filter(|&p| !m.children[p].running) {
                    m.children.remove(p);
                }
            }
            Op::Start(i) => {
                if m.pos(i).is_none() {
                    m.children.push(MChild { id: i, running: true, restarts: 0 });
                }
            }
        }
        m
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        // The model's crashes are expected: keep them off stderr, but let every other panic
        // (a failing assertion) print as usual.
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.to_string().contains("was told to panic") {
                default(info)
            }
        }));
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
    })
}

fn spec(id: u8) -> (ChildSpec, ChildRef<Msg>) {
    ChildSpec::worker(format!("c{id}"), Worker::named("model"), ()).restart(restart_of(id)).into_parts()
}

struct Sut {
    app: SupervisorRef,
    handles: HashMap<u8, ChildRef<Msg>>,
    before: Model,
}

fn observed(kids: &[warden::ChildInfo]) -> Vec<(String, ChildStatus, u64)> {
    kids.iter().map(|k| (k.id.clone(), k.status, k.restarts)).collect()
}

fn expected(m: &Model) -> Vec<(String, ChildStatus, u64)> {
    m.children
        .iter()
        .map(|c| {
            (format!("c{}", c.id), if c.running { ChildStatus::Running } else { ChildStatus::Stopped }, c.restarts)
        })
        .collect()
}

fn classify<T>(r: Result<T, SupervisorError>) -> Answer {
    match r {
        Ok(_) => Answer::Ok,
        Err(SupervisorError::NotFound { .. }) => Answer::NotFound,
        Err(SupervisorError::Running { .. }) => Answer::Running,
        Err(SupervisorError::AlreadyStarted { .. }) => Answer::AlreadyStarted,
        Err(SupervisorError::AlreadyPresent { .. }) => Answer::AlreadyPresent,
        Err(SupervisorError::Unavailable { .. }) => Answer::Unavailable,
        Err(other) => panic!("unexpected error {other}"),
    }
}

impl StateMachineTest for Sut {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(m: &Model) -> Sut {
        runtime().block_on(async {
            let mut sup = SupervisorSpec::new(m.strategy).intensity(INTENSITY, Duration::from_secs(3600));
            let mut handles = HashMap::new();
            for c in &m.children {
                let (s, h) = spec(c.id);
                handles.insert(c.id, h);
                sup = sup.child(s);
            }
            let app = Supervisor::start("model", sup).await.expect("tree starts");
            Sut { app, handles, before: m.clone() }
        })
    }

    fn apply(mut sut: Sut, after: &Model, op: Op) -> Sut {
        let predicted = sut.before.answer(&op);
        runtime().block_on(async {
            let h = |i: u8| sut.handles.get(&i).cloned();
            let answer = match op {
                Op::Panic(i) => {
                    let _ = h(i).map(|h| h.cast(Msg::Panic));
                    None
                }
                Op::ExitNormal(i) => {
                    let _ = h(i).map(|h| h.cast(Msg::Exit(None)));
                    None
                }
                Op::Kill(i) => {
                    let _ = h(i).map(|h| inject_kill(&h));
                    None
                }
                Op::Terminate(i) => Some(classify(sut.app.terminate_child(&format!("c{i}")).await)),
                Op::Restart(i) => Some(classify(sut.app.restart_child(&format!("c{i}")).await)),
                Op::Delete(i) => Some(classify(sut.app.delete_child(&format!("c{i}")).await)),
                Op::Start(i) => {
                    let (s, handle) = spec(i);
                    let r = classify(sut.app.start_child(s).await);
                    if r == Answer::Ok {
                        sut.handles.insert(i, handle);
                    }
                    Some(r)
                }
            };
            assert_eq!(answer, predicted, "answer to {op:?} in {:?}", sut.before);
            if after.down {
                tokio::time::timeout(DEADLINE, sut.app.wait()).await.expect("the supervisor gives up and stops");
                assert!(!sut.app.is_running());
            } else {
                // Crashes and exits are handled asynchronously: wait until the tree settles
                // on the predicted state, then compare (a mismatch fails after the deadline).
                let want = expected(after);
                let until = tokio::time::Instant::now() + DEADLINE;
                let mut got = observed(&sut.app.which_children().await.expect("supervisor answers"));
                while got != want && tokio::time::Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    got = observed(&sut.app.which_children().await.expect("supervisor answers"));
                }
                assert_eq!(got, want, "after {op:?} from {:?}", sut.before);
                let counts = sut.app.count_children().await.expect("supervisor answers");
                assert_eq!(counts.specs, want.len());
                assert_eq!(counts.active, want.iter().filter(|c| c.1 == ChildStatus::Running).count());
                // Every running child answers through its stable handle.
                for c in after.children.iter().filter(|c| c.running) {
                    let handle = &sut.handles[&c.id];
                    handle.call(Msg::Incarnation, Some(DEADLINE)).await.expect("a running child answers");
                }
            }
        });
        sut.before = after.clone();
        sut
    }

    fn teardown(sut: Sut, _: Model) {
        runtime().block_on(sut.app.shutdown());
    }
}

/// The decision functions alone, driven by the smallest bookkeeping that carries their plans
/// out: a list of child records in start order. Every rule (restart or not, which children a
/// group restart touches, intensity, which specs are forgotten, what each runtime call
/// answers) comes from `warden::decision`; the driver only applies the plans, as the
/// supervisor actor does.
struct Planner {
    strategy: Otp,
    children: Vec<PChild>,
    intensity: IntensityWindow,
    now: tokio::time::Instant,
    down: bool,
    before: Model,
}

struct PChild {
    id: u8,
    phase: Phase,
    restarts: u64,
}

impl Planner {
    fn pos(&self, id: u8) -> Option<usize> {
        self.children.iter().position(|c| c.id == id)
    }

    /// Child `pos` exited with `reason`: `decision::plan_exit` says what follows.
    fn exit(&mut self, pos: usize, reason: ExitReason) {
        let views: Vec<ChildView> = self
            .children
            .iter()
            .map(|c| ChildView { restart: restart_of(c.id), running: c.phase == Phase::Running })
            .collect();
        let group = matches!(self.strategy, Otp::OneForAll | Otp::RestForOne)
            .then(|| (group_plan(self.strategy, &views, pos), pos));
        let facts = ExitFacts {
            strategy: self.strategy,
            auto_shutdown: AutoShutdown::Never,
            shutting_down: false,
            restart: restart_of(self.children[pos].id),
            significant: false,
            significant_left: 0,
            reason: &reason,
            waits_in_place: false,
            group,
        };
        match plan_exit(&facts, &mut self.intensity, None, self.now) {
            ExitPlan::ShuttingDown => panic!("the planner thinks a running supervisor is shutting down"),
            ExitPlan::NotRestarted { forget: true, .. } => {
                self.children.remove(pos);
            }
            ExitPlan::NotRestarted { forget: false, .. } => self.children[pos].phase = Phase::Stopped,
            ExitPlan::Escalate => self.down = true,
            ExitPlan::RestartOne { .. } => {
                self.children[pos].restarts += 1;
                self.children[pos].phase = Phase::Running;
            }
            ExitPlan::RestartGroup { group, .. } => {
                self.children[pos].restarts += 1;
                for &i in &group.stop {
                    self.children[i].phase = Phase::Stopped;
                }
                for &i in &group.start {
                    self.children[i].phase = Phase::Running;
                }
                let mut forget = group.forget.clone();
                forget.sort_unstable_by(|a, b| b.cmp(a));
                for i in forget {
                    self.children.remove(i);
                }
            }
        }
    }

    fn running(&self, id: u8) -> Option<usize> {
        self.pos(id).filter(|&p| self.children[p].phase == Phase::Running)
    }

    fn call(&mut self, op: &Op) -> Option<Answer> {
        if self.down {
            // The supervisor has stopped: the mechanism answers that, not a rule.
            return matches!(op, Op::Terminate(_) | Op::Restart(_) | Op::Delete(_) | Op::Start(_))
                .then_some(Answer::Unavailable);
        }
        let refused = |r: CallRefusal| match r {
            CallRefusal::NotFound => Answer::NotFound,
            CallRefusal::Running => Answer::Running,
            other => panic!("the model never leads to {other:?}"),
        };
        match *op {
            Op::Panic(i) | Op::Kill(i) => {
                if let Some(p) = self.running(i) {
                    self.exit(p, ExitReason::Panic { message: "told to".into() });
                }
                None
            }
            Op::ExitNormal(i) => {
                if let Some(p) = self.running(i) {
                    self.exit(p, ExitReason::Normal);
                }
                None
            }
            Op::Terminate(i) => Some(match self.pos(i) {
                None => Answer::NotFound,
                Some(p) => {
                    let plan = plan_terminate(self.strategy, restart_of(i), self.children[p].phase);
                    if plan.forget {
                        self.children.remove(p);
                    } else {
                        self.children[p].phase = Phase::Stopped;
                    }
                    Answer::Ok
                }
            }),
            Op::Restart(i) => {
                let p = self.pos(i);
                Some(match plan_stopped_only(self.strategy, p.map(|p| self.children[p].phase)) {
                    Ok(()) => {
                        self.children[p.expect("a stopped child is kept")].phase = Phase::Running;
                        Answer::Ok
                    }
                    Err(r) => refused(r),
                })
            }
            Op::Delete(i) => {
                let p = self.pos(i);
                Some(match plan_stopped_only(self.strategy, p.map(|p| self.children[p].phase)) {
                    Ok(()) => {
                        self.children.remove(p.expect("a stopped child is kept"));
                        Answer::Ok
                    }
                    Err(r) => refused(r),
                })
            }
            Op::Start(i) => {
                let existing = match self.pos(i).map(|p| self.children[p].phase) {
                    None => Existing::None,
                    Some(Phase::Running) => Existing::Running,
                    Some(_) => Existing::NotRunning,
                };
                Some(match plan_start_child(self.strategy, self.children.len(), existing) {
                    Ok(()) => {
                        self.children.push(PChild { id: i, phase: Phase::Running, restarts: 0 });
                        Answer::Ok
                    }
                    Err(StartRefusal::AlreadyStarted) => Answer::AlreadyStarted,
                    Err(StartRefusal::AlreadyPresent) => Answer::AlreadyPresent,
                    Err(other) => panic!("the model never leads to {other:?}"),
                })
            }
        }
    }
}

impl StateMachineTest for Planner {
    type SystemUnderTest = Planner;
    type Reference = Reference;

    fn init_test(m: &Model) -> Planner {
        Planner {
            strategy: m.strategy,
            children: m.children.iter().map(|c| PChild { id: c.id, phase: Phase::Running, restarts: 0 }).collect(),
            intensity: IntensityWindow::new(INTENSITY, Duration::from_secs(3600)),
            now: tokio::time::Instant::now(),
            down: false,
            before: m.clone(),
        }
    }

    fn apply(mut p: Planner, after: &Model, op: Op) -> Planner {
        let predicted = p.before.answer(&op);
        let answer = p.call(&op);
        assert_eq!(answer, predicted, "answer to {op:?} in {:?}", p.before);
        assert_eq!(p.down, after.down, "escalation after {op:?} from {:?}", p.before);
        if !after.down {
            let got: Vec<_> = p
                .children
                .iter()
                .map(|c| {
                    let status = if c.phase == Phase::Running { ChildStatus::Running } else { ChildStatus::Stopped };
                    (format!("c{}", c.id), status, c.restarts)
                })
                .collect();
            assert_eq!(got, expected(after), "after {op:?} from {:?}", p.before);
        }
        p.before = after.clone();
        p
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 4096, max_shrink_iters: 1000, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn the_decision_functions_alone_follow_the_otp_model(sequential 1..40 => Planner);
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 128, max_shrink_iters: 200, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn supervisor_follows_the_otp_model(sequential 1..25 => Sut);
}
