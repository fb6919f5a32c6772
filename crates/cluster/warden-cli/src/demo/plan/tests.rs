//! Plans: the list format, its errors, the majority rule and the chaos mix.

use super::*;

fn targets(partitions: bool) -> Targets {
    Targets {
        nodes: vec!["n1".into(), "n2".into(), "n3".into()],
        actors: vec!["acct-0".into(), "acct-1".into(), "auditor".into()],
        key_singleton: "auditor".into(),
        partitions,
    }
}

fn err(text: &str) -> String {
    parse_list(text, &targets(true)).unwrap_err().to_string()
}

#[test]
fn every_kind_parses() {
    let plan = parse_list(
        "1s:panic:acct-1,2s:hang,3s:kill:n2,7s:restart,9s:stop:@auditor:2.5s,13s:partition:n1|n2,15s:heal,\
         16s:partition:n1>n3,17s:heal,18s:slow-disk:n3:1s,20s:wipe:n1,30s:join:n4,36s:leave:n2,40s:stop-at:@leader:handoff:3s",
        &targets(true),
    )
    .unwrap();
    let kinds: Vec<&str> = plan.iter().map(|f| f.action.kind()).collect();
    assert_eq!(
        kinds,
        [
            "panic",
            "hang",
            "kill",
            "restart",
            "stop",
            "partition",
            "heal",
            "partition",
            "heal",
            "slow_disk",
            "wipe",
            "join",
            "leave",
            "stop_at"
        ]
    );
    assert_eq!(plan[1].action, Action::Hang(ActorTarget::Singleton("acct-0".into())), "the first actor by default");
    assert_eq!(plan[3].action, Action::Restart(NodeRef::Killed));
    assert_eq!(plan[4].action, Action::Stop(NodeRef::Hosting("auditor".into()), Duration::from_millis(2500)));
    assert_eq!(plan[5].action, Action::Partition(Cut::Sides(vec!["n1".into()], vec!["n2".into()])));
    assert_eq!(plan[7].action, Action::Partition(Cut::OneWay(vec!["n1".into()], vec!["n3".into()])));
    assert_eq!(plan[13].action, Action::StopAt(NodeRef::Leader, "handoff".into(), Duration::from_secs(3)));
}

#[test]
fn bad_entries_are_named() {
    assert!(
        err("1s:panic:acct-0,2s:explode:n1").contains("entry 2")
            && err("1s:panic:acct-0,2s:explode:n1").contains("\"explode\" is not a fault")
    );
    assert!(err("1s:kill:n9").contains("no node \"n9\""));
    assert!(err("soon:kill:n1").contains("not a time"));
    assert!(err("1s:hang:ledger").contains("no actor \"ledger\""));
    assert!(err("1s:partition:n1").contains("not a cut"));
    assert!(err("1s:partition:n1|n1").contains("both sides"));
    assert!(err("1s:partition:n1|n7").contains("no node \"n7\""));
    assert!(err("1s:join:n2").contains("exists already"));
    assert!(err("1s:stop-at:n1:sleep").contains("not a step"));
    assert!(err("1s:kill:n1:n2").contains("too many fields"));
    // A node that joins can be aimed at afterwards.
    assert!(parse_list("1s:join:n4,5s:slow-disk:n4", &targets(true)).is_ok());
    assert!(parse_list("1s:panic:worker@n2", &targets(true)).is_ok());
    let e = parse_list("1s:partition:n1|n2", &targets(false)).unwrap_err().to_string();
    assert!(e.contains("need root"), "{e}");
}

#[test]
fn a_plan_that_loses_the_majority_is_refused() {
    let e = err("3s:kill:n1,4s:kill:n2");
    assert!(e.contains("entry 2") && e.contains("2 of 3 members could be unavailable"), "{e}");
    assert!(err("3s:kill:n1,4s:stop:n2:1s").contains("a majority (2) must stay up"));
    // A restart makes room again.
    assert!(parse_list("3s:kill:n1,6s:restart:n1,8s:kill:n2", &targets(true)).is_ok());
    // A node cut off from the others: the others keep a majority.
    assert!(parse_list("3s:partition:n1|n2+n3", &targets(true)).is_ok());
    // A partial partition: both still reach n3.
    assert!(parse_list("3s:partition:n1|n2,4s:kill:n3", &targets(true)).is_err());
    assert!(parse_list("3s:partition:n1|n2", &targets(true)).is_ok());
    // Four nodes split 2|2: neither side has a majority.
    let e = err("1s:join:n4,5s:partition:n1+n2|n3+n4");
    assert!(e.contains("entry 2") && e.contains("4 members"), "{e}");
    // ... while 3|1 is fine.
    assert!(parse_list("1s:join:n4,5s:partition:n1+n2+n3|n4", &targets(true)).is_ok());
}

#[test]
fn chaos_is_seeded_keeps_a_majority_and_covers_every_kind_when_there_is_room() {
    let d = Duration::from_secs(30);
    let a = chaos(7, d, &targets(true));
    assert_eq!(a, chaos(7, d, &targets(true)), "same seed, same plan");
    assert_ne!(a, chaos(8, d, &targets(true)));
    for seed in 0..200 {
        for (long, partitions) in [(Duration::from_secs(150), true), (Duration::from_secs(150), false), (d, true)] {
            let plan = chaos(seed, long, &targets(partitions));
            assert!(
                plan.iter().all(|f| f.at >= Duration::from_secs(3) && f.at <= long - Duration::from_secs(10)),
                "{plan:?}"
            );
            let numbered: Vec<(usize, String, Fault)> =
                plan.iter().enumerate().map(|(i, f)| (i + 1, format!("{f:?}"), f.clone())).collect();
            check_majority(&targets(true).nodes, &numbered).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            if long > d {
                for kind in KINDS {
                    if (kind == "partition" || kind == "heal") && !partitions {
                        assert!(plan.iter().all(|f| f.action.kind() != kind));
                        continue;
                    }
                    assert!(plan.iter().any(|f| f.action.kind() == kind), "seed {seed}: no {kind} in {plan:?}");
                }
            }
        }
    }
    assert!(chaos(1, Duration::from_secs(5), &targets(true)).is_empty(), "too short for faults");
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

#[test]
fn actor_targets_are_typed_and_print_in_the_plans_words() {
    assert_eq!(ActorTarget::parse("worker@n2"), ActorTarget::Worker("n2".into()));
    assert_eq!(ActorTarget::parse("acct-3"), ActorTarget::Singleton("acct-3".into()));
    for word in ["worker@n2", "acct-3", "results"] {
        assert_eq!(ActorTarget::parse(word).to_string(), word);
    }
    let plan = parse_list("1s:panic:worker@n2", &targets(true)).expect("a worker on a node of the run");
    assert_eq!(plan[0].action, Action::Panic(ActorTarget::Worker("n2".into())));
    let e = parse_list("1s:panic:worker@n9", &targets(true)).expect_err("no node n9");
    assert!(e.to_string().contains("worker@n9"), "{e}");
}
