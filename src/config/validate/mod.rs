//! Checks the raw configuration into [`Settings`], section by section in the order the file
//! reads, each key's default from `defaults`; the first mistake is the error, and it names
//! its key.

mod api;
mod delivery;
mod endpoints;
mod inbound;

use std::net::SocketAddr;
use std::path::PathBuf;

use super::defaults;
use super::duration::duration_or;
use super::error::{err, ConfigError};
use super::raw::{RawConfig, RawLog, RawNotifications, RawRetention, RawStore};
use super::schedule::schedule_or;
use super::settings::{LogFormat, RetentionSettings, Settings, StoreSettings};
use crate::domain::UpdateLabel;

pub(super) fn validate(raw: RawConfig) -> Result<Settings, ConfigError> {
    let listen = listen(raw.listen.as_deref())?;
    let store = store(raw.store)?;
    let block_private_targets = raw
        .delivery
        .block_private_targets
        .unwrap_or(defaults::BLOCK_PRIVATE_TARGETS);
    let mut endpoints = endpoints::endpoints(raw.endpoints, block_private_targets)?;
    let api = api::api(raw.api)?;
    let RawNotifications {
        update_operation,
        cloudevents_source,
    } = raw.notifications;
    let delivery = delivery::delivery(raw.delivery, cloudevents_source)?;
    let retention = retention(raw.retention)?;
    let update_label = update_label(update_operation.as_deref())?;
    let amqp_inbound = inbound::amqp_inbound(&raw.amqp)?;
    if let Some(sink) = endpoints::amqp_sink(raw.amqp, &endpoints)? {
        endpoints.push(sink);
    }
    let log_format = log_format(raw.log)?;
    Ok(Settings {
        listen,
        store,
        endpoints,
        api,
        delivery,
        update_label,
        retention,
        amqp_inbound,
        log_format,
    })
}

fn log_format(raw: RawLog) -> Result<LogFormat, ConfigError> {
    match raw.format.as_deref() {
        None => Ok(defaults::LOG_FORMAT),
        Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => err(
            "log.format",
            format!("{other:?} is not \"text\" or \"json\""),
        ),
    }
}

fn listen(text: Option<&str>) -> Result<SocketAddr, ConfigError> {
    let text = text.unwrap_or(defaults::LISTEN);
    match text.parse() {
        Ok(a) => Ok(a),
        Err(_) => err(
            "listen",
            format!("{text:?} is not an address such as \"127.0.0.1:8080\""),
        ),
    }
}

fn store(raw: RawStore) -> Result<StoreSettings, ConfigError> {
    if raw.postgres_url.is_some() && raw.sqlite_path.is_some() {
        return err(
            "store.postgres_url",
            "store.postgres_url and store.sqlite_path are both set (in the file or through \
             GBDS_STORE_POSTGRES_URL / GBDS_STORE_SQLITE_PATH); set only one: PostgreSQL or SQLite",
        );
    }
    if let Some(url) = &raw.postgres_url {
        if let Err(e) = url.expose().parse::<tokio_postgres::Config>() {
            return err(
                "store.postgres_url",
                format!("not a PostgreSQL URL such as \"postgres://user@host:5432/db\": {e}"),
            );
        }
    }
    let synchronous_full = match raw.synchronous.as_deref() {
        None => defaults::SYNCHRONOUS_FULL,
        Some("FULL" | "full") => true,
        Some("NORMAL" | "normal") => false,
        Some(other) => {
            return err(
                "store.synchronous",
                format!("{other:?} is not FULL or NORMAL"),
            )
        }
    };
    let integrity_schedule = schedule_or(
        "store.integrity_schedule",
        raw.integrity_schedule,
        defaults::INTEGRITY_SCHEDULE,
    )?;
    Ok(StoreSettings {
        integrity_schedule,
        sqlite_path: raw
            .sqlite_path
            .unwrap_or_else(|| PathBuf::from(defaults::SQLITE_PATH)),
        synchronous_full,
        postgres_url: raw.postgres_url,
    })
}

fn retention(raw: RawRetention) -> Result<RetentionSettings, ConfigError> {
    let schedule = schedule_or(
        "retention.schedule",
        raw.schedule,
        defaults::RETENTION_SCHEDULE,
    )?;
    Ok(RetentionSettings {
        age: duration_or("retention.age", raw.age.as_deref(), defaults::RETENTION_AGE)?,
        schedule,
    })
}

/// `[notifications] update_operation`: the operation label UPDATE transactions notify with.
fn update_label(text: Option<&str>) -> Result<UpdateLabel, ConfigError> {
    match text {
        None => Ok(defaults::UPDATE_LABEL),
        Some(text) => UpdateLabel::parse(text).ok_or_else(|| {
            ConfigError(format!(
                "notifications.update_operation: {text:?} is not \"ENROLL\" or \"UPDATE\""
            ))
        }),
    }
}
