//! Scheduled jobs (tokio-cron-scheduler): retention of delivered history and endpoint health.
//! Each job only sends an operator action to the store writer; the writer does the work.

use std::time::Duration;

use tokio_cron_scheduler::{Job, JobScheduler};

use crate::clock::now_ms;
use crate::config::Settings;
use crate::store::{AdminOp, Store};

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

/// Starts the scheduler with both jobs; keep the returned scheduler alive while serving.
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

    scheduler.start().await?;
    Ok(scheduler)
}
