//! The crash report's `tracing` event carries every field, as JSON log output shows.
//!
//! Alone in its test binary: `tracing` caches per-callsite interest process-wide, and tests
//! running in parallel without a subscriber would race with the scoped one used here.
mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use warden::prelude::*;
use warden::testkit::EventProbe;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_tracing_event_carries_every_field_as_json() {
    let buf = Buffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt().json().with_writer(move || writer.clone()).finish();
    // A current-thread runtime: every actor runs on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let spec = ChildSpec::worker("w", Worker::named("w"), ());
    let h = spec.handle();
    let app = Supervisor::start("json", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    h.cast(Msg::Panic).unwrap();
    probe.restarted(&h.path(), DEADLINE).await.unwrap();
    app.shutdown().await;
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let line = text.lines().find(|l| l.contains("crash report")).unwrap_or_else(|| panic!("no crash report in {text}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["target"], "warden::crash");
    let f = &v["fields"];
    assert_eq!(f["path"], "/json/w");
    assert_eq!(f["reason_kind"], "panic");
    assert_eq!(f["restart"], "permanent");
    assert!(f["panic_location"].as_str().unwrap_or_default().contains("common/mod.rs"), "{f}");
    assert!(f["decision"].as_str().unwrap_or_default().contains("restart"), "{f}");
    for field in ["ancestors", "child_id", "shutdown", "incarnation", "message_type", "restarts_in_window", "intensity"]
    {
        assert!(f.get(field).is_some(), "{field} missing in {f}");
    }
}
