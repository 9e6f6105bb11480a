//! One process per database file: a second `serve` on it exits 2, naming the file and the
//! holder's pid (as a log event, so in JSON when the logs are), and the first goes on serving.

use serde_json::Value;

use crate::harness::{database_in, free_port, status_body, Receiver, ServiceProcess, Setup};

#[tokio::test]
async fn a_second_instance_on_the_same_file_exits_2_naming_the_file_and_the_holder() {
    if super::skipped() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let receiver = Receiver::start().await;
    let db = database_in(dir.path());
    let first = ServiceProcess::start(dir.path(), &db, &receiver.url, "").await;

    let listen = ([127, 0, 0, 1], free_port()).into();
    let config = dir.path().join("second.toml");
    std::fs::write(&config, Setup::new("").toml(listen, &db, &receiver.url))
        .expect("the config file is written");
    let config = config.display().to_string();
    let second = |env: &'static [(&'static str, &'static str)]| {
        let config = config.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                super::run_binary_with_env(&["serve", "--config", &config], env)
            })
            .await
            .expect("the second instance ran")
        }
    };
    let names_file_and_holder = |text: &str| {
        text.contains(&db.display().to_string()) && text.contains(&format!("pid {}", first.pid()))
    };
    let (status, _, stderr) = second(&[]).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(names_file_and_holder(&stderr), "{stderr}");

    let (status, _, stderr) = second(&[("GBDS_LOG_FORMAT", "json")]).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) if v.is_object() => v,
            _ => panic!("not a JSON object: {l}\n{stderr}"),
        })
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "ERROR"
                && l["message"].as_str().is_some_and(names_file_and_holder)),
        "an error event naming the file and the holder:\n{stderr}"
    );

    first.api.register("tg-single", "ENROLL").await.ok(201);
    first
        .api
        .event("tg-single", serde_json::json!({"type": "ENROLLED"}))
        .await
        .ok(200);
    receiver
        .expect_exactly(&[status_body("ENROLL", "tg-single", "ENROLLED")])
        .await;
}
