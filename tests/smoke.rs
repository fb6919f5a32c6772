mod common;
use common::*;
use warden::prelude::*;
use warden::testkit::EventProbe;

#[tokio::test]
async fn panic_restarts_in_place_and_keeps_the_mailbox() {
    let w = Worker::named("w");
    let spec = ChildSpec::worker("w", w.clone(), ());
    let h = spec.handle();
    let app = Supervisor::start("smoke", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    assert_eq!(incarnation(&h).await, 1);
    h.cast(Msg::Panic).unwrap();
    h.cast(Msg::Add(3)).unwrap();
    assert_eq!(total(&h).await, 3);
    assert_eq!(incarnation(&h).await, 2);
    probe.restarted(&h.path(), DEADLINE).await.unwrap();
    app.shutdown().await;
}
