//! The SQLite file under the service: one process per file (a second `serve` exits 2), the
//! file deleted under a running service (writes refused with 503), a full disk (503, results
//! kept and never sent again, recovery without a restart), damage found by `check` and at
//! start, and what `GET /v1/endpoints` and the start-up line say. SQLite only: with
//! `GBDS_TEST_STORE=postgres` each says SKIPPED and passes.

mod damage;
mod deleted;
mod disk_full;
mod endpoints;
mod single;

use crate::harness::postgres;

fn skipped() -> bool {
    if !postgres::enabled() {
        return false;
    }
    println!("SKIPPED: a test of the SQLite file; it runs without GBDS_TEST_STORE=postgres");
    true
}

/// Runs the binary with `args` until it exits (bounded by the harness deadline); its status,
/// stdout and stderr.
fn run_binary(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    run_binary_with_env(args, &[])
}

/// `run_binary` with the variables `env` set.
fn run_binary_with_env(
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, String, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gbds-notifier"))
        .args(args)
        .env_clear()
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the gbds-notifier binary starts");
    let deadline = std::time::Instant::now() + crate::harness::DEADLINE;
    loop {
        if child
            .try_wait()
            .expect("the child can be waited on")
            .is_some()
        {
            let out = child.wait_with_output().expect("its output");
            return (
                out.status,
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("gbds-notifier {args:?} did not exit within the deadline");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
