//! The service under test: started in this process on its own runtime (default), as a child
//! process running the `gbds-notifier` binary (`--spawn`, which the backlog scenario needs to
//! restart it), or already running elsewhere (`--target URL`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::oneshot;

/// The admin token the benchmark configures on services it starts.
pub const TOKEN: &str = "bench-token";

/// How a service the benchmark starts is configured (through the `GBDS_*` keys of CONTRACT §1).
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub db: PathBuf,
    /// The one endpoint, the benchmark's receiver.
    pub receiver_url: String,
    /// `FULL` or `NORMAL`.
    pub synchronous: String,
    /// More `GBDS_*` settings (the backlog scenario's retry schedule).
    pub extra: Vec<(String, String)>,
}

impl ServiceConfig {
    fn env(&self, listen: std::net::SocketAddr) -> Vec<(String, String)> {
        let mut env = vec![
            ("GBDS_LISTEN".to_owned(), listen.to_string()),
            (
                "GBDS_STORE_SQLITE_PATH".to_owned(),
                self.db.display().to_string(),
            ),
            (
                "GBDS_STORE_SYNCHRONOUS".to_owned(),
                self.synchronous.clone(),
            ),
            (
                "GBDS_ENDPOINTS".to_owned(),
                format!(r#"[{{ id = "bench", url = "{}" }}]"#, self.receiver_url),
            ),
            (
                "GBDS_API_TOKENS".to_owned(),
                format!(r#"[{{ token = "{TOKEN}", role = "admin" }}]"#),
            ),
        ];
        env.extend(self.extra.iter().cloned());
        env
    }

    /// The settings `gbds-notifier serve` would load from this configuration (and any other
    /// `GBDS_*` variable of this process's environment), listening on `listen`.
    pub fn settings(
        &self,
        listen: std::net::SocketAddr,
    ) -> anyhow::Result<gbds_notifier::config::Settings> {
        let env = self.env(listen);
        Ok(gbds_notifier::config::load(None, |key| {
            env.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var(key).ok())
        })?)
    }
}

pub enum Service {
    /// On a runtime whose threads are named `svc` (plus `svc-main` and the store's own
    /// threads), so that its CPU time can be told apart from the benchmark's `bench` threads.
    InProcess {
        base: String,
        db: PathBuf,
        stop: Option<oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    },
    Child {
        base: String,
        db: PathBuf,
        child: ChildGuard,
    },
    External {
        base: String,
        pid: Option<u32>,
        db: Option<PathBuf>,
    },
}

impl Service {
    /// Starts the service in this process and waits until it answers `/healthz`.
    pub async fn in_process(
        client: &reqwest::Client,
        config: &ServiceConfig,
    ) -> anyhow::Result<Service> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let settings = config.settings(addr)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("svc-main".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .thread_name("svc")
                    // Idle blocking threads must not exit mid-run: their CPU time would vanish
                    // from the per-thread accounting.
                    .thread_keep_alive(Duration::from_secs(3600))
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    gbds_notifier::run(settings, listener, async {
                        let _ = stopped.await;
                    })
                    .await
                })
            })?;
        let service = Service::InProcess {
            base: format!("http://{addr}"),
            db: config.db.clone(),
            stop: Some(stop),
            thread: Some(thread),
        };
        wait_healthy(client, service.base(), Duration::from_secs(30)).await?;
        Ok(service)
    }

    /// Starts `binary serve` (the `gbds-notifier` binary) as a child process (its log goes to
    /// `log`) and waits until it answers `/healthz`; returns it with the time that took.
    pub async fn child(
        client: &reqwest::Client,
        binary: &Path,
        config: &ServiceConfig,
        log: &Path,
    ) -> anyhow::Result<(Service, Duration)> {
        let addr = {
            // Reserve a free port; the child binds it right after.
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let started = Instant::now();
        let child = std::process::Command::new(binary)
            .arg("serve")
            .envs(config.env(addr))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} serve", binary.display()))?;
        let service = Service::Child {
            base: format!("http://{addr}"),
            db: config.db.clone(),
            child: ChildGuard(Some(child)),
        };
        wait_healthy(client, service.base(), Duration::from_secs(120)).await?;
        Ok((service, started.elapsed()))
    }

    pub fn base(&self) -> &str {
        match self {
            Service::InProcess { base, .. }
            | Service::Child { base, .. }
            | Service::External { base, .. } => base,
        }
    }

    /// The process whose CPU and memory are the service's (for in-process: this one).
    pub fn pid(&self) -> Option<u32> {
        match self {
            Service::InProcess { .. } => Some(std::process::id()),
            Service::Child { child, .. } => child.0.as_ref().map(|c| c.id()),
            Service::External { pid, .. } => *pid,
        }
    }

    pub fn db(&self) -> Option<&Path> {
        match self {
            Service::InProcess { db, .. } | Service::Child { db, .. } => Some(db),
            Service::External { db, .. } => db.as_deref(),
        }
    }

    pub fn is_in_process(&self) -> bool {
        matches!(self, Service::InProcess { .. })
    }

    /// Shuts the service down gracefully (SIGTERM for a child) and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        match self {
            Service::InProcess {
                mut stop,
                mut thread,
                ..
            } => {
                if let Some(s) = stop.take() {
                    let _ = s.send(());
                }
                if let Some(t) = thread.take() {
                    tokio::task::spawn_blocking(move || t.join())
                        .await?
                        .map_err(|_| anyhow::anyhow!("the service thread panicked"))??;
                }
                Ok(())
            }
            Service::Child { mut child, .. } => {
                let Some(mut child) = child.0.take() else {
                    return Ok(());
                };
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                tokio::task::spawn_blocking(move || {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        if child.try_wait()?.is_some() {
                            return Ok(());
                        }
                        if Instant::now() > deadline {
                            child.kill()?;
                            child.wait()?;
                            anyhow::bail!(
                                "the service did not stop within 60 s of SIGTERM; killed"
                            );
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
                .await?
            }
            Service::External { .. } => Ok(()),
        }
    }
}

/// A child process that is killed if the benchmark ends without stopping it (an error, a
/// panic), so that no service is left running.
pub struct ChildGuard(Option<std::process::Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `GET /healthz` every few milliseconds until it answers 200.
pub async fn wait_healthy(
    client: &reqwest::Client,
    base: &str,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let url = format!("{base}/healthz");
    loop {
        if let Ok(r) = client
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            if r.status().is_success() {
                return Ok(started.elapsed());
            }
        }
        if started.elapsed() > timeout {
            anyhow::bail!("{url} did not answer 200 within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
