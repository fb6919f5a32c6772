//! The observer in a real browser: `warden demo bank --observe` runs three node processes and
//! serves the page; headless chromium (Debian's, driven through chromedriver) loads it, finds
//! the demo's actors in the drawn trees, clicks the page's "panic" button of one account and
//! sees that account's restart count go up and its crash report appear, within seconds. The
//! test saves a screenshot (`target/observer.png`; with `WARDEN_UPDATE_SCREENSHOT=1`, also
//! `docs/observer.png`).
//!
//! `.ci/run` installs chromium and chromedriver and sets `WARDEN_REQUIRE_BROWSER=1`, under which
//! a missing browser fails the test. Without it (a plain `cargo test` on a machine without
//! chromium) the test says loudly that it did not run, and passes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn browser() -> Option<(&'static str, &'static str)> {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists())?;
    let driver = ["/usr/bin/chromedriver"].into_iter().find(|p| Path::new(p).exists())?;
    Some((chromium, driver))
}

/// Starts the demo with the observer; returns it and the page's address.
fn start_demo() -> (Killed, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["demo", "bank", "--observe", "--duration", "120s", "--faults", "none", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start warden demo");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("observer: ") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(60)).expect("the demo printed the observer's address");
    (Killed(child), url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_tree_and_a_click_breaks_an_actor_that_then_restarts() {
    let Some((chromium, driver)) = browser() else {
        assert!(
            std::env::var_os("WARDEN_REQUIRE_BROWSER").is_none(),
            "WARDEN_REQUIRE_BROWSER is set but chromium or chromedriver is missing"
        );
        eprintln!("SKIPPED: no chromium/chromedriver here (.ci/run installs them and requires this test)");
        return;
    };
    let port = free_port();
    let _driver = Killed(
        Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let (_demo, url) = start_demo();

    let caps: serde_json::Map<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1440,1000"]
        }
    }))
    .unwrap();
    let webdriver = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        match builder.capabilities(caps.clone()).connect(&webdriver).await {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("chromedriver not ready yet: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("no WebDriver session: {e}"),
        }
    };
    client.goto(&url).await.expect("load the page");

    // The tree shows the demo's actors: every account and the auditor, each on some node.
    let wait = Duration::from_secs(30);
    client
        .wait()
        .at_most(wait)
        .for_element(Locator::Css(r#"li[data-actor="auditor"]"#))
        .await
        .expect("the auditor appears in the tree");
    for i in 0..12 {
        let css = format!(r#"li[data-actor="acct-{i}"]"#);
        client.wait().at_most(wait).for_element(Locator::Css(&css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    }
    let restarts = |client: fantoccini::Client| async move {
        let li = client.find(Locator::Css(r#"li[data-actor="acct-3"]"#)).await.ok()?;
        li.attr("data-restarts").await.ok().flatten()?.parse::<u64>().ok()
    };
    // The page redraws the tree on every update, so an element found a moment ago can be
    // gone when its attribute is read: read until one read succeeds (bounded by `wait`).
    let first_read = Instant::now() + wait;
    let before = loop {
        if let Some(n) = restarts(client.clone()).await {
            break n;
        }
        assert!(Instant::now() < first_read, "acct-3 never showed a restart count");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Break it from the page.
    let button = client
        .wait()
        .at_most(wait)
        .for_element(Locator::Css(r#"button[data-kind="panic"][data-target="acct-3"]"#))
        .await
        .expect("demo mode shows fault buttons");
    let clicked = Instant::now();
    button.click().await.expect("click panic on acct-3");

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if restarts(client.clone()).await.is_some_and(|n| n > before) {
            break;
        }
        assert!(Instant::now() < deadline, "acct-3's restart never showed on the page");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("the restart showed on the page {} ms after the click", clicked.elapsed().as_millis());
    let reports = client.find(Locator::Id("reports")).await.unwrap().text().await.unwrap();
    assert!(reports.contains("acct-3"), "the crash report is listed: {reports}");
    let faults = client.find(Locator::Id("faults")).await.unwrap().text().await.unwrap();
    assert!(faults.contains("panic") && faults.contains("acct-3"), "the fault is listed: {faults}");
    let checkpoints = client.find(Locator::Id("checkpoints")).await.unwrap().text().await.unwrap();
    assert!(checkpoints.contains("bank/acct-3"), "the hosted singletons' checkpoints are listed: {checkpoints}");

    // Keep a picture of the page, from the top.
    let _ = client.execute("window.scrollTo(0, 0)", vec![]).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let png = client.screenshot().await.expect("screenshot");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../target/observer.png");
    let _ = std::fs::write(&target, &png);
    if std::env::var_os("WARDEN_UPDATE_SCREENSHOT").is_some() {
        std::fs::write(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../docs/observer.png"), &png).unwrap();
    }
    client.close().await.expect("close the browser");
}
