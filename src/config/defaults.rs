//! Every default of the configuration, by name: what the service runs on for a key that
//! neither the file nor the environment sets (CONTRACT §1's embedded default).

use std::time::Duration;

use super::settings::{ApiSettings, LogFormat, SuccessRule};
use crate::domain::UpdateLabel;

/// `listen`: loopback only, so that a service without tokens is not open to the network.
pub const LISTEN: &str = "127.0.0.1:8080";

/// `[store] sqlite_path`, relative to the working directory.
pub const SQLITE_PATH: &str = "gbds-notifier.db";
/// `[store] synchronous`: FULL, so that every acknowledged call survives a power loss.
pub const SYNCHRONOUS_FULL: bool = true;
/// `[store] integrity_schedule`: daily, at night (it reads the whole file).
pub const INTEGRITY_SCHEDULE: &str = "0 47 3 * * *";

/// `[api] header_read_timeout`.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// `[api] request_timeout`.
pub const API_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// `[api] max_concurrent_requests`.
pub const MAX_CONCURRENT_REQUESTS: usize = 256;
/// `[api] body_read_timeout`: a 2 MB body at about 140 KB/s still arrives in time.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// `[api] body_memory_budget`: 32 bodies of the largest size at once.
pub const BODY_MEMORY_BUDGET: usize = 64 * 1024 * 1024;

/// `[delivery] retry_schedule`: the Standard Webhooks ladder (after the immediate first
/// attempt).
pub const RETRY_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];
/// `[delivery] success`: any 2xx acknowledges.
pub const SUCCESS: SuccessRule = SuccessRule::Any2xx;
/// `[delivery] jitter`: retry delays spread by ±20 %.
pub const JITTER: f64 = 0.2;
/// `[delivery] endpoint_concurrency`.
pub const ENDPOINT_CONCURRENCY: usize = 64;
/// `[delivery] max_in_flight`.
pub const MAX_IN_FLIGHT: usize = 512;
/// `[delivery] lease`: longer than `REQUEST_TIMEOUT`, as it must be.
pub const LEASE: Duration = Duration::from_secs(60);
/// `[delivery] request_timeout`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// `[delivery] connect_timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `[delivery] block_private_targets`: off, as receivers are often on the same network.
pub const BLOCK_PRIVATE_TARGETS: bool = false;
/// `[delivery] disable_after`: five days of nothing but failures.
pub const DISABLE_AFTER: Duration = Duration::from_secs(5 * 86_400);

/// `[notifications] update_operation`: UPDATE transactions notify as ENROLL, as the GBDS
/// document says.
pub const UPDATE_LABEL: UpdateLabel = UpdateLabel::Enroll;
/// `[notifications] cloudevents_source`.
pub const CLOUDEVENTS_SOURCE: &str = "urn:gbds-notifier";

/// `[retention] age`.
pub const RETENTION_AGE: Duration = Duration::from_secs(30 * 86_400);
/// `[retention] schedule`: hourly, at a minute few other jobs pick.
pub const RETENTION_SCHEDULE: &str = "0 17 * * * *";

/// `[amqp] enabled`: the RabbitMQ sink is opt-in.
pub const AMQP_ENABLED: bool = false;
/// `[amqp] url`: the local broker's default vhost with the guest account.
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// `[amqp] exchange`.
pub const AMQP_EXCHANGE: &str = "gbds.notifications";
/// `[amqp] id`: the endpoint id deliveries to the sink are recorded under.
pub const AMQP_ID: &str = "rabbitmq";
/// `[amqp] inbound_prefetch`: enough messages in flight for the writer to group-commit many
/// of them, few enough to bound what the consumer holds (BENCHMARKS.md: 64 halves the rate,
/// 1,024 adds nothing).
pub const INBOUND_PREFETCH: u16 = 256;

/// `[log] format`: text, for a person.
pub const LOG_FORMAT: LogFormat = LogFormat::Text;

/// An endpoint's `auth.client_auth`: `client_secret_basic`, which every server must accept.
pub const OAUTH2_CLIENT_AUTH: &str = "basic";

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            header_read_timeout: HEADER_READ_TIMEOUT,
            request_timeout: API_REQUEST_TIMEOUT,
            max_concurrent_requests: MAX_CONCURRENT_REQUESTS,
            body_read_timeout: BODY_READ_TIMEOUT,
            body_memory_budget: BODY_MEMORY_BUDGET,
        }
    }
}
