//! Headless Chromium driven through WebDriver: a chromedriver on a free port per test, a
//! browser session with a fresh profile, waits that poll a DOM condition against a deadline,
//! and screenshots under `target/console-screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Longest a page test waits for something the page should show (Chromium on a busy 2-core
/// machine can be slow to start; nothing waits this long when all is well).
const PAGE_DEADLINE: Duration = Duration::from_secs(30);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(100);

/// Window sizes every screen is photographed at: a laptop, and a narrow phone-like window.
pub const WIDE: (u32, u32) = (1280, 800);
pub const NARROW: (u32, u32) = (400, 900);

fn chromium() -> String {
    std::env::var("GBDS_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

fn chromedriver() -> String {
    std::env::var("GBDS_TEST_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".to_owned())
}

/// A chromedriver of our own, stopped when dropped.
pub struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Only one browser test at a time: two Chromiums at once on two shared cores make each slow
/// enough to turn waits into timeouts.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts chromedriver for one test, or `None` (after a loud SKIPPED line) when Chromium or
/// chromedriver is missing. Under CI=true a missing browser fails the test instead.
pub async fn driver() -> Option<(Driver, tokio::sync::MutexGuard<'static, ()>)> {
    let (browser, driver) = (chromium(), chromedriver());
    let missing: Vec<&str> = [&browser, &driver]
        .into_iter()
        .filter(|p| !std::path::Path::new(p).exists())
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let why = format!("{} not found", missing.join(" and "));
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the console's browser tests need Chromium under CI: {why} (apt-get install -y chromium chromium-driver)");
        }
        // Written to stderr directly, past the test harness's capture, so that it is seen.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: install chromium chromium-driver ({why}); the console's browser test did not run ***\n"
        );
        return None;
    }
    let guard = ONE_AT_A_TIME.lock().await;
    let port = crate::harness::free_port();
    let child = Command::new(&driver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {driver}: {e}"));
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let status = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client");
    let deadline = tokio::time::Instant::now() + PAGE_DEADLINE;
    loop {
        let ready = status
            .get(format!("{}/status", driver.url))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success());
        if ready.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not come up on port {port}"
        );
        tokio::time::sleep(POLL).await;
    }
    Some((driver, guard))
}

/// One browser session (its own Chromium and profile).
pub struct Browser {
    pub client: Client,
    _profile: tempfile::TempDir,
}

impl Driver {
    pub async fn browser(&self) -> Browser {
        let profile = tempfile::tempdir().expect("a profile directory");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            // The machine has no network: without these Chromium waits on refused connections.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--window-size={},{}", WIDE.0, WIDE.1),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({ "binary": chromium(), "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a WebDriver session in Chromium");
        let browser = Browser {
            client,
            _profile: profile,
        };
        browser.resize(WIDE).await;
        browser
    }
}

impl Browser {
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("the page opens");
    }

    /// Gives the page a viewport of `width` × `height` (the window is larger by its frame).
    pub async fn resize(&self, (width, height): (u32, u32)) {
        let frame = self
            .js("return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight];")
            .await;
        let extra = |i: usize| frame[i].as_u64().unwrap_or(0) as u32;
        self.client
            .set_window_size(width + extra(0), height + extra(1))
            .await
            .expect("the window is resized");
    }

    /// Runs `script` (a function body that `return`s) in the page.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until it returns something other than null, undefined or false, and
    /// returns that; panics after the deadline with what the page shows.
    pub async fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PAGE_DEADLINE;
        loop {
            let v = self.js(script).await;
            if !matches!(v, Value::Null | Value::Bool(false)) {
                return v;
            }
            if tokio::time::Instant::now() >= deadline {
                let text = self
                    .js("return document.body ? document.body.innerText : ''")
                    .await;
                panic!(
                    "waited {PAGE_DEADLINE:?} for {what}; the page shows:\n{}",
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until an element matching `css` is shown, and returns it.
    pub async fn shown(&self, css: &str) -> Element {
        let check = format!(
            "const e = document.querySelector({css}); return !!e && e.getClientRects().length > 0;",
            css = json!(css)
        );
        self.wait_for(&format!("{css} to be shown"), &check).await;
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    pub async fn click(&self, css: &str) {
        self.shown(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        self.shown(css)
            .await
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Presses a key in the element that has the focus.
    pub async fn press(&self, key: Key) {
        let focused = self
            .client
            .active_element()
            .await
            .expect("an element has the focus");
        focused
            .send_keys(&key.to_string())
            .await
            .expect("the key is pressed");
    }

    /// The text of the page's notice once one is shown: (its kind, its text).
    pub async fn notice(&self) -> (String, String) {
        let v = self
            .wait_for(
                "a notice",
                "const n = document.getElementById('notice');
                 return !n.hidden && n.textContent ? [n.className, n.textContent] : null;",
            )
            .await;
        let kind = v[0].as_str().unwrap_or_default().replace("notice", "");
        (
            kind.trim().to_owned(),
            v[1].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// Saves the window as `<name>-wide.png` and `<name>-narrow.png`, and returns their paths.
    pub async fn screenshots(&self, name: &str) -> Vec<PathBuf> {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("the screenshot directory");
        let mut saved = Vec::new();
        for (size, label) in [(WIDE, "wide"), (NARROW, "narrow")] {
            self.resize(size).await;
            // Let layout and the chart's redraw (on resize) settle before the picture.
            self.js("return new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(() => done(true))));")
                .await;
            // Nothing may stick out sideways: a page wider than the window hides what is
            // past its edge (tables scroll inside their own box or turn into cards instead).
            let widths: (u64, u64) = serde_json::from_value(
                self.js("return [document.documentElement.scrollWidth, window.innerWidth];")
                    .await,
            )
            .expect("two widths");
            assert!(
                widths.0 <= widths.1,
                "{name} at {label}: the page is wider than the window (page, window): {widths:?}"
            );
            let png = self.client.screenshot().await.expect("a screenshot");
            let path = dir.join(format!("{name}-{label}.png"));
            std::fs::write(&path, png).expect("the screenshot is saved");
            saved.push(path);
        }
        self.resize(WIDE).await;
        saved
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// `target/console-screenshots/` (or under `CARGO_TARGET_DIR`).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("console-screenshots")
}
