//! The service in-process, delivering to a receiver of the test's choosing.

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::harness::{config_toml, Api, DEADLINE};

pub struct Service {
    pub api: Api,
    stop: Option<oneshot::Sender<()>>,
    _running: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

/// Starts `gbds_notifier::run` on port 0 with endpoint `test` at `receiver_url`;
/// `extra_toml` is merged over the test configuration (an `[[endpoints]]` list replaces it).
pub async fn spawn(receiver_url: &str, extra_toml: &str) -> Service {
    let dir = tempfile::tempdir().unwrap();
    spawn_in(dir, receiver_url, extra_toml).await
}

pub async fn spawn_in(dir: tempfile::TempDir, receiver_url: &str, extra_toml: &str) -> Service {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_toml(addr, &dir.path().join("n.db"), receiver_url, extra_toml),
    )
    .unwrap();
    let settings = gbds_notifier::config::load(Some(&config), |_| None).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(gbds_notifier::run(settings, listener, async move {
        let _ = stopped.await;
    }));
    Service {
        api: Api::new(format!("http://{addr}")),
        stop: Some(stop),
        _running: running,
        _dir: dir,
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Polls `check` until it holds, or panics after `DEADLINE` naming what was awaited.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "waited {DEADLINE:?} for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
