//! What a demo node does with each request of its launcher: route it to the singleton it is
//! for (wherever the group placed it), run a job on the node's pool, inject a fault, or
//! describe the node for the observer.

use std::sync::Arc;
use std::time::Duration;

use warden_cluster::Node;
use warden_observe::snapshot::{CheckpointView, GroupView, NodeView, PeerState, PeerView};

use super::bank::{self, AccountMsg, AccountReply, AuditorMsg, AuditorStatus, RegisterMsg, RegisterReply};
use super::pipeline::{self, Faults, Record, ResultsCount, ResultsMsg};
use super::protocol::{Answer, Op, Probe, RegisterOutcome, Status, TransferOutcome, MAX_OBSERVED_SINGLETONS};
use super::wire::{self, CallExt};
use super::Demo;

/// How long a request waits for the singleton it is for.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(2500);
/// How long a probe waits.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Crash reports per supervisor in the observer view.
pub const OBSERVED_REPORTS: usize = 5;
/// Singletons whose checkpoints the observer view lists (each is one read of the local store).
pub const OBSERVED_CHECKPOINTS: usize = 20;

/// The observer's word for a peer's state.
pub fn peer_state(state: warden_cluster::PeerState) -> PeerState {
    match state {
        warden_cluster::PeerState::Up => PeerState::Up,
        warden_cluster::PeerState::Suspected => PeerState::Suspected,
        warden_cluster::PeerState::Down => PeerState::Down,
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A node's request handler.
pub struct Gateway {
    pub(super) demo: Demo,
    pub(super) accounts: usize,
    pub(super) faults: Arc<Faults>,
    pub(super) pool: Option<warden_pool::Pool<u64, u64>>,
    pub(super) app: Option<warden_core::SupervisorRef>,
    pub(super) node: Arc<Node>,
}

fn error(what: impl Into<String>) -> Answer {
    Answer::Error { what: what.into() }
}

fn moving(name: &str) -> String {
    format!("{name} is not running on any node reachable from here (moving?)")
}

impl Gateway {
    /// Serves one request.
    pub async fn serve(&self, op: Op) -> Answer {
        let locator = self.node.locator();
        match (self.demo, op) {
            (Demo::Bank, Op::Transfer { transfer }) => {
                let Some(acct) = locator.find::<AccountMsg>(&transfer.from) else {
                    return Answer::Transfer(TransferOutcome::Failed { why: moving(&transfer.from) });
                };
                let call = acct.call(|p| AccountMsg::Debit(wire::encode(&transfer), p), Some(REQUEST_TIMEOUT)).await;
                Answer::Transfer(match call.ok().and_then(CallExt::success).map(|b| wire::decode::<AccountReply>(&b)) {
                    Some(Ok(AccountReply::Ok(served))) => TransferOutcome::Ok { served },
                    Some(Ok(AccountReply::Insufficient(served))) => TransferOutcome::Insufficient { served },
                    Some(Ok(AccountReply::Refused(why))) => TransferOutcome::Failed { why },
                    Some(Err(e)) => TransferOutcome::Failed { why: format!("an undecodable answer: {e}") },
                    None => TransferOutcome::Failed { why: "no answer in time".into() },
                })
            }
            (Demo::Bank, op @ (Op::RegisterWrite { .. } | Op::RegisterRead)) => {
                let Some(reg) = locator.find::<RegisterMsg>("register") else {
                    return Answer::Register(RegisterOutcome::Failed { why: moving("register") });
                };
                let call = match op {
                    Op::RegisterWrite { value } => {
                        reg.call(|p| RegisterMsg::Write(value, p), Some(REQUEST_TIMEOUT)).await
                    }
                    _ => reg.call(RegisterMsg::Read, Some(REQUEST_TIMEOUT)).await,
                };
                Answer::Register(
                    match call.ok().and_then(CallExt::success).map(|b| wire::decode::<RegisterReply>(&b)) {
                        Some(Ok(RegisterReply::Written(served))) => RegisterOutcome::Written { served },
                        Some(Ok(RegisterReply::Value(value, served))) => RegisterOutcome::Value { value, served },
                        Some(Ok(RegisterReply::Refused(why))) => RegisterOutcome::Failed { why },
                        Some(Err(e)) => RegisterOutcome::Failed { why: format!("an undecodable answer: {e}") },
                        None => RegisterOutcome::Failed { why: "no answer in time".into() },
                    },
                )
            }
            (Demo::Pipeline, Op::Job { job }) => match &self.pool {
                Some(pool) => Answer::Job(pipeline::run_job(pool, &locator, job).await),
                None => error("this node runs no pool"),
            },
            (_, op @ (Op::Panic { .. } | Op::Hang { .. })) => self.fault(op),
            (_, Op::StallDisk { ms }) => {
                self.node.stall_disk(Duration::from_millis(ms));
                Answer::Done
            }
            (Demo::Bank, Op::Status) => match self.auditor(REQUEST_TIMEOUT).await {
                Ok(status) => Answer::Status(Status::Bank(status)),
                Err(e) => error(e),
            },
            (Demo::Pipeline, Op::Status) => match locator.find::<ResultsMsg>("results") {
                Some(r) => {
                    let summary = r.call(ResultsMsg::Summary, Some(REQUEST_TIMEOUT)).await;
                    let count = r.call(ResultsMsg::Count, Some(REQUEST_TIMEOUT)).await;
                    let summary = summary.ok().and_then(CallExt::success).and_then(|b| wire::decode::<Record>(&b).ok());
                    let count =
                        count.ok().and_then(CallExt::success).and_then(|b| wire::decode::<ResultsCount>(&b).ok());
                    match (summary, count) {
                        (Some(rec), Some(c)) => Answer::Status(Status::Pipeline {
                            completed: rec.completed.into_iter().collect(),
                            duplicates: rec.duplicates,
                            served: c.served,
                        }),
                        _ => error("the results recorder did not answer"),
                    }
                }
                None => error(moving("results")),
            },
            (Demo::Bank, Op::Probe) => match self.auditor(PROBE_TIMEOUT).await {
                Ok(s) => Answer::Probe(Probe { count: s.audits.audits, served: s.served }),
                Err(e) => error(e),
            },
            (Demo::Pipeline, Op::Probe) => match locator.find::<ResultsMsg>("results") {
                Some(r) => {
                    let call = r.call(ResultsMsg::Count, Some(PROBE_TIMEOUT)).await;
                    match call.ok().and_then(CallExt::success).and_then(|b| wire::decode::<ResultsCount>(&b).ok()) {
                        Some(c) => Answer::Probe(Probe { count: c.count, served: c.served }),
                        None => error("the results recorder did not answer"),
                    }
                }
                None => error(moving("results")),
            },
            (Demo::Bank, Op::Books) => match bank::audit(&locator, self.accounts).await {
                Some((audit, books)) => Answer::Books { audit, books },
                None => error("an account did not answer"),
            },
            (_, Op::Hosted) => Answer::Hosted { names: self.node.hosted() },
            (_, Op::Observe) => Answer::Observe(Box::new(self.observe().await)),
            (_, Op::Leave) => Answer::Done,
            (demo, op) => error(format!("{op:?} is not a request of the {demo:?} demo")),
        }
    }

    async fn auditor(&self, timeout: Duration) -> Result<AuditorStatus, String> {
        let a = self.node.locator().find::<AuditorMsg>("auditor").ok_or_else(|| moving("auditor"))?;
        let call = a.call(AuditorMsg::Status, Some(timeout)).await;
        call.ok()
            .and_then(CallExt::success)
            .and_then(|b| wire::decode::<AuditorStatus>(&b).ok())
            .ok_or_else(|| "the auditor did not answer".to_string())
    }

    fn fault(&self, op: Op) -> Answer {
        let (panic, target) = match op {
            Op::Panic { target } => (true, target),
            Op::Hang { target } => (false, target),
            _ => return error("not a fault"),
        };
        // A singleton's fault goes through the node that hosts it, to its local instance: a
        // cast to a remote instance that has just stopped is lost without an error.
        let singleton = !(self.demo == Demo::Pipeline && target == "worker");
        if singleton && !self.node.hosted().contains(&target) {
            return error(format!("{target} does not run on this node"));
        }
        let locator = self.node.locator();
        let sent = match self.demo {
            Demo::Pipeline if target == "worker" => {
                let counter = if panic { &self.faults.panics } else { &self.faults.hangs };
                counter.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                return Answer::Armed;
            }
            Demo::Bank if target == "auditor" => locator
                .find::<AuditorMsg>("auditor")
                .map(|a| a.cast(if panic { AuditorMsg::Panic } else { AuditorMsg::Hang }).is_ok()),
            Demo::Bank if target == "register" => locator
                .find::<RegisterMsg>("register")
                .map(|a| a.cast(if panic { RegisterMsg::Panic } else { RegisterMsg::Hang }).is_ok()),
            Demo::Bank => locator
                .find::<AccountMsg>(&target)
                .map(|a| a.cast(if panic { AccountMsg::Panic } else { AccountMsg::Hang }).is_ok()),
            Demo::Pipeline => locator
                .find::<ResultsMsg>(&target)
                .map(|a| a.cast(if panic { ResultsMsg::Panic } else { ResultsMsg::Hang }).is_ok()),
        };
        match sent {
            Some(true) => Answer::Sent,
            _ => error(format!("{target} not reachable")),
        }
    }

    /// This node as the observer shows it (bounded: the first [`MAX_OBSERVED_SINGLETONS`]
    /// singletons' trees, [`OBSERVED_REPORTS`] reports per tree, the first
    /// [`OBSERVED_CHECKPOINTS`] singletons' checkpoints).
    async fn observe(&self) -> NodeView {
        let node = &self.node;
        let peers = node
            .transport()
            .view()
            .peers()
            .into_iter()
            .map(|p| PeerView {
                name: p.name,
                state: peer_state(p.state),
                phi: p.phi.is_finite().then_some(p.phi),
                silent_ms: p.silent_ms,
            })
            .collect();
        let membership = node.membership();
        let names = |ids: &std::collections::BTreeSet<u64>| -> Vec<String> {
            node.ledger(|l| ids.iter().map(|id| l.nodes.get(id).map_or(id.to_string(), |n| n.name.clone())).collect())
        };
        let group = GroupView {
            leader: membership
                .leader
                .map(|id| node.ledger(|l| l.nodes.get(&id).map_or(id.to_string(), |n| n.name.clone()))),
            voters: names(&membership.voters),
            learners: names(&membership.learners),
            term: membership.term,
            applied: node.applied(),
        };
        let hosted_all = node.hosted();
        let (hosted, with_checkpoints) = observed(&hosted_all);
        let mut supervisors = Vec::new();
        let mut crash_reports = Vec::new();
        let mut sups: Vec<(String, warden_core::SupervisorRef)> =
            hosted.iter().filter_map(|n| node.supervisor(n).map(|s| (format!("singleton {n}"), s))).collect();
        if let Some(app) = &self.app {
            sups.push(("node supervisor".into(), app.clone()));
        }
        for (name, sup) in sups {
            let (view, reports) = warden_observe::snapshot::supervisor_view(name, &sup, OBSERVED_REPORTS).await;
            supervisors.push(view);
            crash_reports.extend(reports);
        }
        let mut checkpoints = Vec::new();
        let now_ms = unix_ms();
        for key in with_checkpoints.iter().filter_map(|n| self.demo.checkpoint_key(n)) {
            let Ok(kept) = node.checkpoints().list(&key).await else { continue };
            let last_seq = node.checkpoints().last_seq(&key).await.unwrap_or(0);
            let newest = kept.last();
            checkpoints.push(CheckpointView {
                last_seq,
                kept: kept.len(),
                snapshot_seq: newest.map(|s| s.seq),
                size_bytes: newest.map(|s| s.size),
                age_ms: newest.map(|s| now_ms.saturating_sub(s.created_unix_ms)),
                key,
            });
        }
        NodeView {
            node: node.name().to_string(),
            peers,
            group: Some(group),
            hosted_total: hosted_all.len(),
            lease_left_ms: Some(node.lease_left().as_millis() as u64),
            supervisors,
            crash_reports,
            checkpoints,
        }
    }
}

/// Which of a node's hosted singletons its observer view describes: the first
/// [`MAX_OBSERVED_SINGLETONS`] get their trees, the first [`OBSERVED_CHECKPOINTS`] their
/// checkpoints; the view counts the rest (`hosted_total`).
fn observed(hosted: &[String]) -> (&[String], &[String]) {
    (&hosted[..hosted.len().min(MAX_OBSERVED_SINGLETONS)], &hosted[..hosted.len().min(OBSERVED_CHECKPOINTS)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_describes_at_most_its_bounds_of_singletons() {
        let many: Vec<String> = (0..MAX_OBSERVED_SINGLETONS + 50).map(|i| format!("acct-{i}")).collect();
        let (trees, checkpoints) = observed(&many);
        assert_eq!(trees.len(), MAX_OBSERVED_SINGLETONS);
        assert_eq!(checkpoints.len(), OBSERVED_CHECKPOINTS);
        assert_eq!(trees[0], "acct-0", "the first ones, in the node's order");
        let few: Vec<String> = vec!["auditor".into()];
        assert_eq!(observed(&few), (&few[..], &few[..]));
    }
}
