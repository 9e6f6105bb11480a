//! A damaged database is found before it is trusted: `gbds-notifier check` says ok on a sound
//! file and exits non-zero with SQLite's findings on one with 64 KiB zeroed in the middle, and
//! `serve` refuses to start on it.

use crate::harness::{database_in, free_port, spawn_app, Setup};

/// Zeroes 64 KiB in the middle of the file, as a failing disk or a stray write would.
fn zero_the_middle(db: &std::path::Path) {
    use std::io::{Seek, SeekFrom, Write};
    let size = std::fs::metadata(db).expect("the database exists").len();
    assert!(
        size > 160 * 1024,
        "the database is large enough ({size} bytes)"
    );
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(db)
        .expect("the database opens for writing");
    file.seek(SeekFrom::Start(size / 2 / 4096 * 4096))
        .expect("seek");
    file.write_all(&[0; 64 * 1024]).expect("zeroed");
}

#[tokio::test]
async fn check_finds_zeroed_pages_and_serve_refuses_to_start_on_them() {
    if super::skipped() {
        return;
    }
    let app = spawn_app("").await;
    let calls = (0..600).map(|i| {
        let api = app.api.clone();
        async move { api.register(&format!("tg-damage-{i:04}"), "ENROLL").await }
    });
    for answer in futures_util::future::join_all(calls).await {
        answer.ok(201);
    }
    let dir = app.stop().await;
    let db = database_in(dir.path());
    let path = db.display().to_string();

    let (status, stdout, stderr) = super::run_binary(&["check", "--db", &path]);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("ok"), "{stdout}");

    zero_the_middle(&db);
    let (status, stdout, stderr) = super::run_binary(&["check", "--db", &path]);
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("damaged"), "{stdout}");
    assert!(
        stdout.lines().count() > 1,
        "the findings are listed: {stdout}"
    );

    let config = dir.path().join("after.toml");
    let listen = ([127, 0, 0, 1], free_port()).into();
    std::fs::write(
        &config,
        Setup::new("").toml(listen, &db, "http://127.0.0.1:9/"),
    )
    .expect("the config file is written");
    let (status, _, stderr) =
        super::run_binary(&["serve", "--config", &config.display().to_string()]);
    assert!(
        !status.success(),
        "serve started on a damaged file: {stderr}"
    );
    assert!(
        stderr.contains("damaged") && stderr.contains(&path),
        "{stderr}"
    );
}
