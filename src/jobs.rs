//! Scheduled jobs (tokio-cron-scheduler): retention of delivered history, endpoint health and,
//! on SQLite, the full integrity check of the database file. Retention and endpoint health only
//! send an operator action to the store writer, which does the work; the integrity check reads
//! the file on a connection of its own and reports to readiness.

use std::time::Duration;

use tokio_cron_scheduler::{Job, JobScheduler};

use crate::clock::now_ms;
use crate::config::Settings;
use crate::health::{Component, Health};
use crate::store::{integrity, AdminOp, Store};

/// Transactions deleted per writer command, so a large purge never stalls API writes long.
const RETENTION_BATCH: usize = 500;

/// Runs retention until nothing older than `age` is left; returns how many were deleted.
pub async fn run_retention(store: &Store, age: Duration) -> usize {
    let cutoff = now_ms() - age.as_millis() as i64;
    let mut total = 0;
    loop {
        match store
            .admin(AdminOp::Retention {
                cutoff,
                limit: RETENTION_BATCH,
            })
            .await
        {
            Ok(done) if done.affected > 0 => total += done.affected,
            Ok(_) => break,
            Err(e) => {
                tracing::error!(error = %e, "retention failed");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(transactions = total, "retention deleted delivered history");
    }
    total
}

/// Disables endpoints that have failed every attempt for longer than `disable_after`.
pub async fn run_endpoint_health(store: &Store, disable_after: Duration) -> usize {
    let cutoff = now_ms() - disable_after.as_millis() as i64;
    match store.admin(AdminOp::DisableFailing { cutoff }).await {
        Ok(done) => done.affected,
        Err(e) => {
            tracing::error!(error = %e, "endpoint health check failed");
            0
        }
    }
}

/// Runs SQLite's full integrity check of the file at `db`; damage turns readiness red
/// (`Component::Store`) until a restart on a sound file. Returns whether the file is sound.
pub async fn run_integrity_check(db: &std::path::Path, health: &Health) -> bool {
    let path = db.to_owned();
    let started = std::time::Instant::now();
    let checked = tokio::task::spawn_blocking(move || integrity::full(&path))
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("the check stopped: {e}")));
    match checked {
        Ok(found) if found.is_empty() => {
            tracing::info!(db = %db.display(), elapsed_ms = started.elapsed().as_millis() as u64, "integrity check: ok");
            true
        }
        Ok(found) => {
            health.fail(
                Component::Store,
                format!(
                    "the integrity check found the database {} damaged: {}; restore it from a \
                     backup (docs/operations.md)",
                    db.display(),
                    found.join("; ")
                ),
            );
            false
        }
        Err(e) => {
            tracing::error!(db = %db.display(), error = %e, "integrity check could not run");
            false
        }
    }
}

/// Starts the scheduler with its jobs; keep the returned scheduler alive while serving.
pub async fn start(settings: &Settings, store: &Store) -> anyhow::Result<JobScheduler> {
    let scheduler = JobScheduler::new().await?;

    let (retention_store, age) = (store.clone(), settings.retention.age);
    scheduler
        .add(Job::new_async(
            settings.retention.schedule.as_str(),
            move |_, _| {
                let store = retention_store.clone();
                Box::pin(async move {
                    run_retention(&store, age).await;
                })
            },
        )?)
        .await?;

    let (health_store, disable_after) = (store.clone(), settings.delivery.disable_after);
    scheduler
        .add(Job::new_repeated_async(
            Duration::from_secs(60),
            move |_, _| {
                let store = health_store.clone();
                Box::pin(async move {
                    run_endpoint_health(&store, disable_after).await;
                })
            },
        )?)
        .await?;

    if settings.store.postgres_url.is_none() {
        let (db, health) = (settings.store.sqlite_path.clone(), store.health.clone());
        scheduler
            .add(Job::new_async(
                settings.store.integrity_schedule.as_str(),
                move |_, _| {
                    let (db, health) = (db.clone(), health.clone());
                    Box::pin(async move {
                        run_integrity_check(&db, &health).await;
                    })
                },
            )?)
            .await?;
    }

    scheduler.start().await?;
    Ok(scheduler)
}
