//! Fault plans: which faults a demo run injects, and when.
//!
//! A plan is either `chaos` (the default: a seeded random mix in which every kind of fault
//! appears when the run is long enough), `none`, or a comma-separated list of
//! `TIME:KIND[:TARGET][:FOR]` entries, e.g. `5s:panic:acct-3,8s:kill:n2,14s:restart:n2,
//! 18s:stop:n3:2s`. KIND is `panic` or `hang` (TARGET: a singleton such as `acct-3`,
//! `auditor` or `results`, or `worker@n2` for a pool worker on node n2), `kill`, `stop` (SIGSTOP,
//! then SIGCONT after FOR, 2 s by default) or `restart` (a killed node; TARGET: a node). A node
//! TARGET may be `@auditor` / `@results` (the node hosting that singleton when the fault fires)
//! or `@killed` (the node killed last). Same seed, same plan.

use std::fmt;
use std::time::Duration;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A panic inside an actor's handler.
    Panic,
    /// An actor's handler that never returns.
    Hang,
    /// SIGKILL of a node process.
    Kill,
    /// SIGSTOP of a node process, SIGCONT after a while.
    Stop,
    /// Starting a killed node again.
    Restart,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "panic" => Kind::Panic,
            "hang" => Kind::Hang,
            "kill" => Kind::Kill,
            "stop" => Kind::Stop,
            "restart" => Kind::Restart,
            _ => return None,
        })
    }

    /// Whether the fault hits a whole node.
    pub fn is_node_fault(self) -> bool {
        matches!(self, Kind::Kill | Kind::Stop | Kind::Restart)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Panic => "panic",
            Kind::Hang => "hang",
            Kind::Kill => "kill",
            Kind::Stop => "stop",
            Kind::Restart => "restart",
        })
    }
}

/// One planned fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// When, from the start of the workload.
    pub at: Duration,
    /// What.
    pub kind: Kind,
    /// Whom (see the module docs).
    pub target: String,
    /// How long a stopped node stays stopped.
    pub hold: Duration,
}

/// Why a plan was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fault plan entry {index} ({entry:?}): {problem}")]
pub struct PlanError {
    /// Which entry, from 1.
    pub index: usize,
    /// The entry.
    pub entry: String,
    /// What is wrong.
    pub problem: String,
}

/// Parses `5s`, `1500ms`, `2.5s`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| Duration::from_secs_f64(v * scale))
}

/// The targets a demo offers.
#[derive(Debug, Clone)]
pub struct Targets {
    /// Node names.
    pub nodes: Vec<String>,
    /// Actors a panic or hang can hit.
    pub actors: Vec<String>,
    /// The singleton whose host `@` node faults usually aim at.
    pub key_singleton: String,
}

/// Parses a plan written as a list (not `chaos` / `none`).
pub fn parse_list(text: &str, targets: &Targets) -> Result<Vec<Fault>, PlanError> {
    let mut faults = Vec::new();
    for (i, entry) in text.split(',').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
        let err = |problem: String| PlanError { index: i + 1, entry: entry.to_string(), problem };
        let parts: Vec<&str> = entry.split(':').collect();
        if parts.len() < 2 {
            return Err(err("expected TIME:KIND[:TARGET][:FOR]".into()));
        }
        let at = parse_duration(parts[0]).ok_or_else(|| err(format!("{:?} is not a time such as 5s", parts[0])))?;
        let kind = Kind::parse(parts[1])
            .ok_or_else(|| err(format!("{:?} is not a fault (panic, hang, kill, stop, restart)", parts[1])))?;
        let target = parts.get(2).map(|t| t.to_string()).unwrap_or_else(|| match kind {
            Kind::Panic | Kind::Hang => targets.actors.first().cloned().unwrap_or_default(),
            Kind::Restart => "@killed".into(),
            _ => format!("@{}", targets.key_singleton),
        });
        let node_ok = |t: &str| t.starts_with('@') || targets.nodes.iter().any(|n| n == t);
        match kind {
            Kind::Panic | Kind::Hang => {
                let ok = targets.actors.contains(&target)
                    || target.strip_prefix("worker@").is_some_and(|n| targets.nodes.iter().any(|x| x == n));
                if !ok {
                    return Err(err(format!(
                        "no actor {target:?} to hit (this demo has {})",
                        targets.actors.join(", ")
                    )));
                }
            }
            _ if !node_ok(&target) => {
                return Err(err(format!("no node {target:?} (the nodes are {})", targets.nodes.join(", "))))
            }
            _ => {}
        }
        let hold = match parts.get(3) {
            Some(h) => parse_duration(h).ok_or_else(|| err(format!("{h:?} is not a duration such as 2s")))?,
            None => Duration::from_secs(2),
        };
        if parts.len() > 4 {
            return Err(err("too many fields".into()));
        }
        faults.push(Fault { at, kind, target, hold });
    }
    faults.sort_by_key(|f| f.at);
    Ok(faults)
}

/// SplitMix64: written out (five lines) because a plan must be the same for a seed on every
/// platform and every version of this program, which `rand`'s small generators do not promise.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A seeded random mix over a run of `duration`: faults start after 3 s and stop 10 s before
/// the end (the run then checks its invariants on a quiet cluster); at most one node is down
/// or stopped at a time, so a majority always survives; a killed node is restarted 4 s later.
/// When there is room, every kind appears at least once: a kill (of the node hosting the key
/// singleton), a stop, a panic and a hang (the node faults first, in a seeded order), then
/// random ones.
pub fn chaos(seed: u64, duration: Duration, targets: &Targets) -> Vec<Fault> {
    let mut rng = SplitMix(seed);
    let end = duration.saturating_sub(Duration::from_secs(10));
    let mut t = Duration::from_secs(3);
    let mut node_free_at = Duration::ZERO;
    // The node faults come first (each needs room for the cluster to recover), in a seeded
    // order; panics and hangs fill the time in between.
    let mut must = if rng.below(2) == 0 { vec![Kind::Kill, Kind::Stop] } else { vec![Kind::Stop, Kind::Kill] };
    must.extend(if rng.below(2) == 0 { [Kind::Panic, Kind::Hang] } else { [Kind::Hang, Kind::Panic] });
    let mut faults = Vec::new();
    let mut first_node_fault = true;
    while t < end {
        let kind = match must.iter().position(|k| !k.is_node_fault() || t >= node_free_at) {
            Some(i) => must.remove(i),
            None if must.is_empty() => *rng.pick(&[Kind::Panic, Kind::Hang, Kind::Kill, Kind::Stop, Kind::Panic]),
            None => *rng.pick(&[Kind::Panic, Kind::Hang]),
        };
        let kind = if kind.is_node_fault() && t < node_free_at { Kind::Panic } else { kind };
        match kind {
            Kind::Panic | Kind::Hang => {
                let target = rng.pick(&targets.actors).clone();
                faults.push(Fault { at: t, kind, target, hold: Duration::ZERO });
            }
            Kind::Kill => {
                let restart_at = t + Duration::from_secs(4);
                if restart_at + Duration::from_secs(2) > end {
                    t += Duration::from_secs(1);
                    must.retain(|k| *k != Kind::Kill);
                    continue;
                }
                let target = if first_node_fault {
                    format!("@{}", targets.key_singleton)
                } else {
                    rng.pick(&targets.nodes).clone()
                };
                faults.push(Fault { at: t, kind, target, hold: Duration::ZERO });
                faults.push(Fault {
                    at: restart_at,
                    kind: Kind::Restart,
                    target: "@killed".into(),
                    hold: Duration::ZERO,
                });
                node_free_at = restart_at + Duration::from_secs(3);
                first_node_fault = false;
            }
            Kind::Stop => {
                let hold = Duration::from_millis(1500 + rng.below(1500));
                let target = if first_node_fault {
                    format!("@{}", targets.key_singleton)
                } else {
                    rng.pick(&targets.nodes).clone()
                };
                faults.push(Fault { at: t, kind, target, hold });
                node_free_at = t + hold + Duration::from_secs(4);
                first_node_fault = false;
            }
            Kind::Restart => {}
        }
        t += Duration::from_millis(1500 + rng.below(2000));
    }
    faults.sort_by_key(|f| f.at);
    faults
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Targets {
        Targets {
            nodes: vec!["n1".into(), "n2".into(), "n3".into()],
            actors: vec!["acct-0".into(), "acct-1".into(), "auditor".into()],
            key_singleton: "auditor".into(),
        }
    }

    #[test]
    fn lists_parse_and_bad_entries_are_named() {
        let plan =
            parse_list("8s:kill:n2, 1500ms:panic:acct-1,12s:restart,14s:stop:@auditor:2.5s", &targets()).unwrap();
        assert_eq!(plan.len(), 4);
        assert_eq!(
            plan[0],
            Fault {
                at: Duration::from_millis(1500),
                kind: Kind::Panic,
                target: "acct-1".into(),
                hold: Duration::from_secs(2)
            }
        );
        assert_eq!(plan[2].target, "@killed");
        assert_eq!(plan[3].hold, Duration::from_millis(2500));
        let e = parse_list("1s:panic:acct-0,2s:explode:n1", &targets()).unwrap_err();
        assert_eq!(e.index, 2);
        assert!(e.to_string().contains("\"explode\" is not a fault"), "{e}");
        let e = parse_list("1s:kill:n9", &targets()).unwrap_err();
        assert!(e.to_string().contains("no node \"n9\""), "{e}");
        let e = parse_list("soon:kill:n1", &targets()).unwrap_err();
        assert!(e.to_string().contains("not a time"), "{e}");
        let e = parse_list("1s:hang:ledger", &targets()).unwrap_err();
        assert!(e.to_string().contains("no actor \"ledger\""), "{e}");
        assert!(parse_list("1s:panic:worker@n2", &targets()).is_ok());
    }

    #[test]
    fn chaos_is_seeded_covers_every_kind_and_keeps_a_majority() {
        let d = Duration::from_secs(30);
        let a = chaos(7, d, &targets());
        assert_eq!(a, chaos(7, d, &targets()), "same seed, same plan");
        assert_ne!(a, chaos(8, d, &targets()));
        for seed in 0..200 {
            let plan = chaos(seed, d, &targets());
            for kind in [Kind::Kill, Kind::Stop, Kind::Panic, Kind::Hang, Kind::Restart] {
                assert!(plan.iter().any(|f| f.kind == kind), "seed {seed}: no {kind} in {plan:?}");
            }
            assert!(plan.iter().all(|f| f.at >= Duration::from_secs(3) && f.at <= Duration::from_secs(20)), "{plan:?}");
            // Node faults never overlap: each kill is restarted, and the next node fault comes later.
            let mut busy_until = Duration::ZERO;
            for f in plan.iter().filter(|f| matches!(f.kind, Kind::Kill | Kind::Stop)) {
                assert!(f.at >= busy_until, "seed {seed}: overlapping node faults {plan:?}");
                busy_until = f.at + f.hold + Duration::from_secs(4);
            }
        }
        assert!(chaos(1, Duration::from_secs(5), &targets()).is_empty(), "too short for faults");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("2.5s"), Some(Duration::from_millis(2500)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("x"), None);
    }
}
