//! The service under test: in this test's runtime on port 0 (`TestApp`), or the real binary as
//! a child process that the test can kill (`ServiceProcess`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::{database_in, free_port, Api, Receiver, Setup, DEADLINE};

/// The service running in this test's runtime, with its own database and receiver.
pub struct TestApp {
    pub api: Api,
    /// Endpoint `test`'s receiver (started for every app; unused when nothing points at it).
    pub receiver: Receiver,
    /// Holds the database; give it to `Setup::in_dir` to start again on it.
    pub dir: Arc<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Held while the service runs, so that receivers find it (`deliverers::started`).
    _alive: Option<Arc<()>>,
}

/// Starts the service with the test configuration and `extra_toml` merged over it.
pub async fn spawn_app(extra_toml: &str) -> TestApp {
    Setup::new(extra_toml).start().await
}

impl Setup {
    /// Writes the configuration into the directory as `gbds-notifier.toml`, loads it as
    /// `serve --config` would, and runs `gbds_notifier::run` on 127.0.0.1:0.
    pub async fn start(self) -> TestApp {
        let receiver = Receiver::start().await;
        let dir = match &self.dir {
            Some(dir) => dir.clone(),
            None => Arc::new(tempfile::tempdir().expect("a temporary directory")),
        };
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port on 127.0.0.1");
        let addr = listener.local_addr().expect("a bound address");
        let path = dir.path().join("gbds-notifier.toml");
        let toml = self.toml(addr, &database_in(dir.path()), &receiver.url);
        std::fs::write(&path, &toml).expect("the config file is written");
        let settings = gbds_notifier::config::load(Some(&path), |_| None)
            .unwrap_or_else(|e| panic!("the test configuration is refused: {e}"));
        let (shutdown, stop) = oneshot::channel::<()>();
        let running = tokio::spawn(gbds_notifier::run(settings, listener, async move {
            let _ = stop.await;
        }));
        let api = Api::new(format!("http://{addr}"));
        super::deliverers::serves(&toml, &api.base);
        let alive = Arc::new(());
        super::deliverers::started(&api.base, &alive);
        TestApp {
            api,
            receiver,
            dir,
            shutdown: Some(shutdown),
            running: Some(running),
            _alive: Some(alive),
        }
    }
}

impl TestApp {
    /// Asks the service to stop and waits until it has (it must stop cleanly); gives back its
    /// directory, to start again on the same database.
    pub async fn stop(mut self) -> Arc<tempfile::TempDir> {
        self._alive = None;
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(running) = self.running.take() {
            tokio::time::timeout(DEADLINE, running)
                .await
                .expect("the service stops within the deadline")
                .expect("the service task did not panic")
                .expect("the service stops without an error");
        }
        self.dir.clone()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }
}

/// `gbds-notifier serve --config FILE` as a child process, killed if the test ends first.
pub struct ServiceProcess {
    pub api: Api,
    child: Child,
    log: PathBuf,
    /// Held while the process runs, so that receivers find it (`deliverers::started`).
    _alive: Arc<()>,
}

impl ServiceProcess {
    /// Writes the test configuration with `extra_toml` (listening on a fresh port, on `db`,
    /// endpoint `test` at `receiver_url`) into `dir` and starts the binary on it; returns once
    /// `/healthz` answers.
    pub async fn start(dir: &Path, db: &Path, receiver_url: &str, extra_toml: &str) -> Self {
        Self::start_with_env(dir, db, receiver_url, extra_toml, &[]).await
    }

    /// [`ServiceProcess::start`] with these environment variables too (`RUST_LOG` is `info`
    /// unless they say otherwise).
    pub async fn start_with_env(
        dir: &Path,
        db: &Path,
        receiver_url: &str,
        extra_toml: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let port = free_port();
        let listen: SocketAddr = ([127, 0, 0, 1], port).into();
        let config = dir.join(format!("gbds-notifier-{port}.toml"));
        let toml = Setup::new(extra_toml).toml(listen, db, receiver_url);
        std::fs::write(&config, &toml).expect("the config file is written");
        let log = dir.join(format!("gbds-notifier-{port}.log"));
        let out = std::fs::File::create(&log).expect("the log file is created");
        let child = Command::new(env!("CARGO_BIN_EXE_gbds-notifier"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            // Nothing from the caller's environment (GBDS_*, proxies) may change the config.
            .env_clear()
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("the log file handle"))
            .stderr(out)
            .spawn()
            .expect("the gbds-notifier binary starts");
        let api = Api::new(format!("http://{listen}"));
        super::deliverers::serves(&toml, &api.base);
        let alive = Arc::new(());
        super::deliverers::started(&api.base, &alive);
        let mut process = ServiceProcess {
            api,
            child,
            log,
            _alive: alive,
        };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if process.api.healthy().await {
                return process;
            }
            if let Some(status) = process
                .child
                .try_wait()
                .expect("the child can be waited on")
            {
                panic!(
                    "gbds-notifier exited with {status} before answering:\n{}",
                    process.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "gbds-notifier did not answer /healthz within {DEADLINE:?}:\n{}",
                process.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: the process gets no chance to finish anything.
    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL is delivered");
        self.child.wait().expect("the killed child is reaped");
    }

    /// Waits (polling, bounded) for the process to exit by itself; returns its status and log.
    pub async fn exited(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited on") {
                return (status, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "gbds-notifier did not exit by itself within {DEADLINE:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits (polling, bounded) for the process to exit; returns its status.
    pub async fn terminate(mut self) -> (ExitStatus, String) {
        // The shell's builtin `kill`: no dependency on libc bindings or a /bin/kill.
        let sent = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {}", self.pid()))
            .status()
            .expect("`sh` runs");
        assert!(sent.success(), "kill -TERM {} failed", self.pid());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited on") {
                return (status, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "gbds-notifier did not exit after SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
