//! `[amqp] inbound_*`: the consumer of outcomes over RabbitMQ, checked into
//! [`AmqpInboundSettings`]; a consumer only when `inbound_queue` names a queue.

use super::super::defaults;
use super::super::error::{err, ConfigError};
use super::super::raw::RawAmqp;
use super::super::settings::AmqpInboundSettings;
use crate::secret::Secret;

/// The longest queue name: `<queue>.dead` must fit AMQP's 255-byte names.
const MAX_QUEUE_LEN: usize = 250;

pub(super) fn amqp_inbound(raw: &RawAmqp) -> Result<Option<AmqpInboundSettings>, ConfigError> {
    // 0 would be "no limit" to the broker: memory bounded by nothing.
    let prefetch = match raw.inbound_prefetch {
        None => defaults::INBOUND_PREFETCH,
        Some(n) => match u16::try_from(n) {
            Ok(n) if n > 0 => n,
            _ => return err("amqp.inbound_prefetch", format!("{n} is not 1 to 65535")),
        },
    };
    let queue = match raw.inbound_queue.as_deref() {
        None | Some("") => return Ok(None),
        Some(q) => q,
    };
    // `amq.` names are the broker's own.
    if queue.len() > MAX_QUEUE_LEN
        || queue.starts_with("amq.")
        || !queue
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return err(
            "amqp.inbound_queue",
            format!(
                "{queue:?} must be 1-{MAX_QUEUE_LEN} letters, digits, '-', '_', '.' or ':', not starting with \"amq.\""
            ),
        );
    }
    // Checked by the sink's section whether or not the sink is on.
    let url = raw
        .url
        .clone()
        .unwrap_or_else(|| Secret::new(defaults::AMQP_URL));
    Ok(Some(AmqpInboundSettings {
        url,
        queue: queue.to_owned(),
        prefetch,
    }))
}
