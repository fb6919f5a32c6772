//! The `warden_*` metrics, read through metrics-util's debugging recorder.
//!
//! Alone in its test binary: it installs the process-wide metrics recorder.
mod common;

use std::time::Duration;

use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use warden::prelude::*;
use warden::testkit::EventProbe;

/// A metric's name, labels and value.
type Series = (String, Vec<(String, String)>, DebugValue);

fn find<'a>(snapshot: &'a [Series], name: &str, labels: &[(&str, &str)]) -> Option<&'a DebugValue> {
    snapshot
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v)))
        .map(|(_, _, v)| v)
}

#[tokio::test]
async fn failures_restarts_children_and_recovery_time_are_exported() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder in this test binary");

    let w = ChildSpec::worker("w", Worker::named("w"), ());
    let hw = w.handle();
    let app = Supervisor::start("m", SupervisorSpec::one_for_one().intensity(10, Duration::from_secs(60)).child(w))
        .await
        .unwrap();
    let mut probe = EventProbe::new(&app);
    hw.cast(Msg::Panic).unwrap();
    probe.restarted(&hw.path(), DEADLINE).await.unwrap();
    hw.cast(Msg::Fail).unwrap();
    probe.restarted(&hw.path(), DEADLINE).await.unwrap();
    // The children gauges are refreshed at most every 100 ms: wait for the last refresh, then
    // one call so that the supervisor has handled everything up to here.
    tokio::time::sleep(warden::supervisor::GAUGE_PERIOD * 3).await;
    app.count_children().await.unwrap();

    let snap: Vec<Series> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(k, _, _, v)| {
            let key = k.key();
            let labels = key.labels().map(|l| (l.key().to_string(), l.value().to_string())).collect();
            (key.name().to_string(), labels, v)
        })
        .collect();
    assert_eq!(
        find(&snap, "warden_failures_total", &[("path", "/m/w"), ("reason", "panic")]),
        Some(&DebugValue::Counter(1)),
        "{snap:#?}"
    );
    assert_eq!(
        find(&snap, "warden_failures_total", &[("path", "/m/w"), ("reason", "error")]),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(find(&snap, "warden_restarts_total", &[("path", "/m/w")]), Some(&DebugValue::Counter(2)));
    match find(&snap, "warden_recovery_seconds", &[("path", "/m/w")]) {
        Some(DebugValue::Histogram(v)) => assert_eq!(v.len(), 2),
        other => panic!("recovery histogram: {other:?}"),
    }
    for (state, want) in [("running", 1.0), ("restarting", 0.0), ("stopped", 0.0)] {
        match find(&snap, "warden_children", &[("supervisor", "/m"), ("state", state)]) {
            Some(DebugValue::Gauge(g)) => assert_eq!(g.into_inner(), want, "{state}"),
            other => panic!("children gauge {state}: {other:?}"),
        }
    }
    app.shutdown().await;
}
