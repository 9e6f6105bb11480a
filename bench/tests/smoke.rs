//! A small run of `gbds-bench`, to keep the load generator working. It asserts that the tool
//! completes and accounts for every notification; it makes no timing assertions.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn bench(json: &Path, extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_gbds-bench"))
        .args(["--warmup", "20", "--concurrency", "8", "--quiet", "--json"])
        .arg(json)
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "bench failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(json).expect("the JSON was written")).expect("JSON")
}

fn the_run_of<'a>(outcome: &'a Value, subject: &str) -> &'a Value {
    outcome["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["subject"] == subject)
        .unwrap_or_else(|| panic!("no {subject} run in {outcome}"))
}

#[test]
fn a_closed_loop_run_with_the_ceilings_delivers_every_notification_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = bench(
        &dir.path().join("bench.json"),
        &["--transactions", "300", "--compare"],
    );

    // 300 transactions of the mix: 15 × (12 ENROLL, 3 SEARCH, 3 UPDATE, 2 EXCEPTION).
    let service = the_run_of(&outcome, "service");
    assert_eq!(service["transactions"], 300);
    assert_eq!(service["api_calls"], 675);
    assert_eq!(service["api_errors"], 0);
    assert_eq!(service["notifications_expected"], 405);
    assert_eq!(service["notifications_delivered"], 405);
    assert_eq!(service["notifications_missing"], 0);
    assert_eq!(service["order_violations"], 0);
    assert_eq!(service["ack_to_delivery_us"]["count"], 405);
    assert!(service["database_bytes_per_notification"].as_f64().unwrap() > 0.0);
    assert!(service["peak_rss_bytes"].as_u64().unwrap() > 0);

    let http = the_run_of(&outcome, "http-null");
    assert_eq!(http["api_calls"], 675);
    assert_eq!(http["api_errors"], 0);
    let store = the_run_of(&outcome, "store");
    assert_eq!(store["api_calls"], 675);
    assert_eq!(store["api_errors"], 0);
    assert_eq!(store["notifications_delivered"], 405);
    assert_eq!(store["notifications_missing"], 0);
    let minimal = the_run_of(&outcome, "disk-null");
    assert_eq!(minimal["notifications_delivered"], 405);

    assert_eq!(outcome["ratio"]["per_run"].as_array().unwrap().len(), 1);
    assert_eq!(
        outcome["ratio_minimal_schema"]["per_run"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(outcome["table"].as_str().unwrap().contains("lower ceiling"));
}

#[test]
fn an_open_loop_run_delivers_every_notification_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = bench(
        &dir.path().join("bench.json"),
        &["--rate", "270", "--duration", "1s"],
    );
    let service = the_run_of(&outcome, "service");
    // 270 notifications/s at 1.35 per transaction: 200 transactions in one second.
    assert_eq!(service["transactions"], 200);
    assert_eq!(service["notifications_expected"], 270);
    assert_eq!(service["notifications_delivered"], 270);
    assert_eq!(service["order_violations"], 0);
}
