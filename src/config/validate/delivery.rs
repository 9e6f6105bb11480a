//! `[delivery]` (with `[notifications] cloudevents_source`, which shapes what is delivered):
//! the retry schedule, what acknowledges, timeouts, the lease, concurrency and the guard.

use crate::config::defaults;
use crate::config::duration::duration_or;
use crate::config::error::{err, ConfigError};
use crate::config::raw::RawDelivery;
use crate::config::settings::{DeliverySettings, SuccessRule};
use crate::endpoint;

pub(super) fn delivery(
    d: RawDelivery,
    cloudevents_source: Option<String>,
) -> Result<DeliverySettings, ConfigError> {
    let retry_schedule = match d.retry_schedule {
        None => defaults::RETRY_SCHEDULE.to_vec(),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (i, s) in list.iter().enumerate() {
                let key = format!("delivery.retry_schedule[{i}]");
                out.push(duration_or(&key, Some(s), Default::default())?);
            }
            out
        }
    };
    let success = match d.success.as_deref() {
        None => defaults::SUCCESS,
        Some("2xx") => SuccessRule::Any2xx,
        Some("200") => SuccessRule::Only200,
        Some(other) => {
            return err(
                "delivery.success",
                format!("{other:?} is not \"2xx\" or \"200\""),
            )
        }
    };
    let jitter = d.jitter.unwrap_or(defaults::JITTER);
    if !(0.0..=1.0).contains(&jitter) {
        return err(
            "delivery.jitter",
            format!("{jitter} is not between 0 and 1"),
        );
    }
    let endpoint_concurrency = d
        .endpoint_concurrency
        .unwrap_or(defaults::ENDPOINT_CONCURRENCY);
    if endpoint_concurrency == 0 {
        return err("delivery.endpoint_concurrency", "must be at least 1");
    }
    let max_in_flight = d.max_in_flight.unwrap_or(defaults::MAX_IN_FLIGHT);
    if max_in_flight == 0 {
        return err("delivery.max_in_flight", "must be at least 1");
    }
    let lease = duration_or("delivery.lease", d.lease.as_deref(), defaults::LEASE)?;
    let request_timeout = duration_or(
        "delivery.request_timeout",
        d.request_timeout.as_deref(),
        defaults::REQUEST_TIMEOUT,
    )?;
    if lease <= request_timeout {
        return err("delivery.lease", "must be longer than delivery.request_timeout, or a slow POST could be sent twice at once");
    }
    let connect_timeout = duration_or(
        "delivery.connect_timeout",
        d.connect_timeout.as_deref(),
        defaults::CONNECT_TIMEOUT,
    )?;
    let disable_after = duration_or(
        "delivery.disable_after",
        d.disable_after.as_deref(),
        defaults::DISABLE_AFTER,
    )?;
    let cloudevents_source =
        cloudevents_source.unwrap_or_else(|| defaults::CLOUDEVENTS_SOURCE.to_owned());
    if let Err(why) = endpoint::check_cloudevents_source(&cloudevents_source) {
        return err("notifications.cloudevents_source", why);
    }
    Ok(DeliverySettings {
        retry_schedule,
        success,
        connect_timeout,
        request_timeout,
        lease,
        jitter,
        endpoint_concurrency,
        max_in_flight,
        block_private_targets: d
            .block_private_targets
            .unwrap_or(defaults::BLOCK_PRIVATE_TARGETS),
        disable_after,
        cloudevents_source,
    })
}
