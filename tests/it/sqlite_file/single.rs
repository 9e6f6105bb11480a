//! One process per database file: a second `serve` on it exits 2, naming the file and the
//! holder's pid, and the first goes on serving.

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
    let (status, _, stderr) =
        tokio::task::spawn_blocking(move || super::run_binary(&["serve", "--config", &config]))
            .await
            .expect("the second instance ran");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", first.pid())),
        "the holder is named: {stderr}"
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
