//! The checker's judgements on made-up histories.

use super::*;
use crate::demo::bank::Served;
use crate::demo::launcher::workload::RegisterOp;

fn op(client: usize, write: Option<u64>, invoked: u64, returned: Option<(u64, Option<u64>)>) -> RegisterOp {
    RegisterOp { client, write, invoked_ms: invoked, returned }
}

#[test]
fn a_read_after_a_write_must_see_it() {
    let mut h = History {
        register: vec![op(0, Some(5), 0, Some((10, None))), op(0, None, 20, Some((30, Some(5))))],
        ..History::default()
    };
    assert_eq!(linearizable(&h), (true, 2));
    // A stale read (an old instance answering after the write was acknowledged): not linearizable.
    h.register.push(op(0, None, 40, Some((50, Some(0)))));
    assert!(!linearizable(&h).0);
}

#[test]
fn a_write_without_an_answer_may_take_effect_later_or_never() {
    let mut h = History {
        register: vec![
            op(0, Some(5), 0, Some((10, None))),
            op(0, Some(6), 20, None), // no answer: the client moves on as another
            op(1, None, 30, Some((40, Some(5)))),
            op(1, None, 50, Some((60, Some(6)))),
        ],
        ..History::default()
    };
    assert!(linearizable(&h).0, "6 took effect between the two reads");
    h.register.push(op(1, None, 70, Some((80, Some(5)))));
    assert!(!linearizable(&h).0, "once 6 was read, 5 cannot come back");
}

#[test]
fn overlapping_answers_of_two_instances_are_measured() {
    let served = |token| Served { node: "n1".into(), token };
    let mut h = History::default();
    h.answers.insert(
        "acct-1".into(),
        vec![(100, served(3), true), (200, served(3), false), (150, served(7), false), (400, served(7), true)],
    );
    // Token 3 answered until 200, token 7 from 150: 50 ms of overlap, none for writes (100 < 400).
    assert_eq!(duplicate_serving(&h), (50, 0));
    h.answers.get_mut("acct-1").unwrap().push((450, served(3), true));
    assert_eq!(duplicate_serving(&h), (300, 50));
}

#[test]
fn many_unanswered_operations_do_not_blow_up_the_search_nor_change_the_verdict() {
    // 60 writes and reads without an answer among answered ones (a run with many timeouts):
    // the tester would try every place for each; those no read observed are left out.
    let mut register = Vec::new();
    let mut at = 0;
    for i in 0..60u64 {
        register.push(op(i as usize, Some(1000 + i), at, None));
        register.push(op(i as usize + 1, None, at + 1, None));
        register.push(op(100, Some(i + 1), at + 2, Some((at + 3, None))));
        register.push(op(100, None, at + 4, Some((at + 5, Some(i + 1)))));
        at += 10;
    }
    let mut h = History { register, ..History::default() };
    let started = std::time::Instant::now();
    assert!(linearizable(&h).0);
    // A stale read at the end is still caught.
    h.register.push(op(100, None, at, Some((at + 1, Some(3)))));
    assert!(!linearizable(&h).0);
    // An unanswered write that a read did observe still counts.
    h.register.pop();
    h.register.push(op(100, None, at, Some((at + 1, Some(1059)))));
    assert!(linearizable(&h).0, "the pending write of 1059 took effect late");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "the search stays small");
}
