//! The `gbds-notifier` binary: parses the command line, sets up logging, calls the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mimalloc rather than glibc's malloc: the service allocates per call and per delivery on
/// several threads, where glibc's free-list upkeep cost a tenth of its CPU (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "gbds-notifier",
    version,
    about = "GBDS notification flows as a service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (embedded defaults: ./gbds-notifier.db, 127.0.0.1:8080, no endpoints).
    Serve {
        /// TOML configuration file; GBDS_* environment variables override its keys.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run SQLite's full integrity check on the database (read-only; the service may be
    /// running): exit 0 when it is sound, 1 with the findings when it is not.
    Check {
        /// TOML configuration file naming the database ([store] sqlite_path).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The database file, instead of the configuration's.
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Write the state machine's table and diagrams (Markdown + Mermaid) into a directory.
    States {
        #[arg(long, default_value = "states")]
        dir: PathBuf,
        /// Only compare; exit 1 if the files are stale.
        #[arg(long)]
        check: bool,
    },
    /// A development receiver: prints each notification and whether its signatures verify.
    Receive {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
        /// The endpoint's secret (whsec_…), to verify signatures.
        #[arg(long, env = "GBDS_RECEIVE_SECRET")]
        secret: Option<String>,
        /// The HTTP status to answer with (e.g. 503 to watch retries).
        #[arg(long, default_value_t = 200)]
        status: u16,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            // The configuration first: it says how to log (a mistake in it is printed as text).
            let settings =
                match gbds_notifier::config::load(config.as_deref(), |k| std::env::var(k).ok()) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("{e}");
                        std::process::exit(2);
                    }
                };
            gbds_notifier::telemetry::logs::init(settings.log_format);
            if let Err(e) = gbds_notifier::check_exposure(&settings) {
                tracing::error!("{e}");
                std::process::exit(2);
            }
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("cannot start the async runtime: {e}");
                    std::process::exit(1);
                }
            };
            let served = runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(settings.listen)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.listen))?;
                gbds_notifier::run(settings, listener, shutdown_signal()).await
            });
            match served {
                Ok(()) => Ok(()),
                // Another process owns the database: a configuration error, not a crash. Logged,
                // not printed: the log format is known by now, and a collector reading JSON
                // must get this line as JSON too.
                Err(e) if e.is::<gbds_notifier::store::file::InUse>() => {
                    tracing::error!("{e}");
                    std::process::exit(2);
                }
                // A part of the service stopped: a supervisor (systemd's Restart=on-failure,
                // an orchestrator) is to start a fresh process.
                Err(e) if e.is::<gbds_notifier::supervisor::Died>() => {
                    tracing::error!(
                        "{e:#}; exiting with status {}",
                        gbds_notifier::supervisor::EXIT_DIED
                    );
                    std::process::exit(gbds_notifier::supervisor::EXIT_DIED);
                }
                Err(e) => {
                    tracing::error!("{e:#}");
                    std::process::exit(1);
                }
            }
        }
        Command::Check { config, db } => {
            let db = match db {
                Some(db) => db,
                None => {
                    match gbds_notifier::config::load(config.as_deref(), |k| std::env::var(k).ok())
                    {
                        Ok(s) if s.store.postgres_url.is_some() => {
                            eprintln!("check: the configured store is PostgreSQL; check is for the SQLite file");
                            std::process::exit(2);
                        }
                        Ok(s) => s.store.sqlite_path,
                        Err(e) => {
                            eprintln!("{e}");
                            std::process::exit(2);
                        }
                    }
                }
            };
            match gbds_notifier::store::integrity::full(&db) {
                Ok(found) if found.is_empty() => {
                    println!("{}: ok", db.display());
                    Ok(())
                }
                Ok(found) => {
                    println!("{}: damaged", db.display());
                    for line in found {
                        println!("{line}");
                    }
                    std::process::exit(1);
                }
                Err(e) => {
                    eprintln!("check: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::States { dir, check } => {
            let mut stale = Vec::new();
            for (name, text) in gbds_notifier::states::render() {
                let path = dir.join(&name);
                if check {
                    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                        stale.push(path.display().to_string());
                    }
                } else {
                    std::fs::create_dir_all(&dir)?;
                    std::fs::write(&path, text)?;
                    println!("wrote {}", path.display());
                }
            }
            if !stale.is_empty() {
                eprintln!("stale: {} (run `gbds-notifier states`)", stale.join(", "));
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Receive {
            listen,
            secret,
            status,
        } => {
            gbds_notifier::telemetry::logs::init(gbds_notifier::config::LogFormat::Text);
            let status = axum::http::StatusCode::from_u16(status)?;
            tokio::runtime::Runtime::new()?
                .block_on(gbds_notifier::receiver::serve(listen, secret, status))
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
