//! The binary's commands besides a normal `serve`: `states` (writes and checks the generated
//! state tables), `receive` (the development receiver: prints what it gets, checks signatures,
//! answers the status it was given), and `serve` refusing a tokenless API on an address other
//! than loopback (`check_exposure`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{eventually, free_port, spawn_app, status_body, DEADLINE};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Runs the binary with `args` and nothing from the caller's environment; waits for its exit.
fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gbds-notifier"))
        .args(args)
        .env_clear()
        .output()
        .expect("the gbds-notifier binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn states_writes_every_generated_file_and_check_passes_on_them_and_fails_on_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("states");
    let wrote = run(&["states", "--dir", out.to_str().unwrap()]);
    assert!(wrote.status.success(), "{}", stderr(&wrote));
    let rendered = gbds_notifier::states::render();
    for (name, text) in &rendered {
        let on_disk = std::fs::read_to_string(out.join(name)).expect("each file is written");
        assert_eq!(&on_disk, text, "{name}");
    }
    let check = run(&["states", "--check", "--dir", out.to_str().unwrap()]);
    assert!(check.status.success(), "{}", stderr(&check));

    let (first, text) = &rendered[0];
    std::fs::write(out.join(first), text.replace("FAILED", "FALLIDO")).unwrap();
    let check = run(&["states", "--check", "--dir", out.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    let why = stderr(&check);
    assert!(why.contains(first.as_str()), "{why}");
    assert!(why.contains("gbds-notifier states"), "{why}");
    // `--check` only reads: the stale file is left as it was.
    let after = std::fs::read_to_string(out.join(first)).unwrap();
    assert!(after.contains("FALLIDO"));
}

#[test]
fn the_committed_states_directory_passes_the_binarys_own_check() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("states");
    let check = run(&["states", "--check", "--dir", dir.to_str().unwrap()]);
    assert!(check.status.success(), "{}", stderr(&check));
}

#[test]
fn serve_refuses_an_api_without_tokens_on_an_address_other_than_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("open.toml");
    let db = dir.path().join("open.db");
    std::fs::write(
        &config,
        format!(
            "listen = \"0.0.0.0:{}\"\n[store]\nsqlite_path = {:?}\n",
            free_port(),
            db.display().to_string()
        ),
    )
    .unwrap();
    let out = run(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let why = stderr(&out);
    assert!(why.contains("api.tokens"), "{why}");
    assert!(why.contains("0.0.0.0"), "{why}");
    assert!(!db.exists(), "refused before the database was created");
}

#[tokio::test]
async fn run_refuses_a_tokenless_api_on_a_non_loopback_address_and_accepts_it_on_loopback() {
    let open = |listen: &str| {
        gbds_notifier::config::load(None, |k| match k {
            "GBDS_LISTEN" => Some(listen.to_owned()),
            _ => None,
        })
        .expect("the configuration loads")
    };
    let settings = open("0.0.0.0:8080");
    let why = gbds_notifier::check_exposure(&settings)
        .expect_err("an open API on every interface is refused")
        .to_string();
    assert!(why.contains("api.tokens"), "{why}");
    // `run` checks it too, before it opens anything.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = gbds_notifier::run(settings, listener, async {}).await;
    assert!(refused.is_err());
    assert!(gbds_notifier::check_exposure(&open("127.0.0.1:8080")).is_ok());
    assert!(gbds_notifier::check_exposure(&open("[::1]:8080")).is_ok());
}

/// `gbds-notifier receive` as a child process; its stdout lines are collected as they come.
struct Receive {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    url: String,
}

impl Receive {
    async fn start(secret: &str, status: u16) -> Receive {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_gbds-notifier"))
            .args(["receive", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--secret", secret, "--status", &status.to_string()])
            .env_clear()
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("gbds-notifier receive starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let into = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                into.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + DEADLINE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "receive never listened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Receive {
            child,
            lines,
            url: format!("http://127.0.0.1:{port}/hook"),
        }
    }

    async fn line(&self, n: usize) -> String {
        eventually(&format!("line {n} from receive"), async || {
            self.lines.lock().unwrap().get(n).cloned()
        })
        .await
    }
}

impl Drop for Receive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn receive_prints_each_notification_with_its_signature_checks_and_answers_its_status() {
    let good = Receive::start(SECRET, 503).await;
    let wrong = Receive::start("whsec_c29tZW9uZS1lbHNl", 200).await;
    let app = spawn_app(&format!(
        "[delivery]\nretry_schedule = [\"1h\"]\n\n\
         [[endpoints]]\nid = \"good\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\n\
         [[endpoints]]\nid = \"wrong\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
        good.url, wrong.url
    ))
    .await;
    app.api.enroll("tg-rcv", "ENROLLED").await;
    let body = status_body("ENROLL", "tg-rcv", "ENROLLED");
    let webhook_id = app.api.recorded("tg-rcv").await.notifications[0]
        .webhook_id
        .clone();
    assert_eq!(
        good.line(0).await,
        format!("{webhook_id} webhook-signature=ok x-signature=ok {body}")
    );
    assert_eq!(
        wrong.line(0).await,
        format!("{webhook_id} webhook-signature=BAD x-signature=BAD {body}")
    );
    // The status it was told to answer is the one the service recorded.
    let by_endpoint = eventually("both attempts recorded", async || {
        let d = app.api.recorded("tg-rcv").await;
        let ds = d.notifications[0].deliveries.clone();
        ds.iter()
            .all(|d| d["attempts"].as_i64() == Some(1))
            .then_some(ds)
    })
    .await;
    for d in by_endpoint {
        match d["endpoint"].as_str() {
            Some("good") => assert_eq!(d["last_status"], 503, "{d}"),
            Some("wrong") => assert_eq!(d["status"], "delivered", "{d}"),
            other => panic!("a delivery to {other:?}"),
        }
    }
}
