//! Endpoints: where notifications go. This module owns the one [`Endpoint`] type (its
//! destination, secrets, authentication, subscriptions, body format and whether it is
//! enabled), the checks that every way of defining one goes through (the configuration
//! file, the endpoints API, the database), and the [`Registry`] that the store's writer keeps
//! in step with the database and that the dispatcher sends by.
//!
//! Wire shapes (the configuration's raw tables, the API's request and response bodies) stay
//! with their owners and are converted into an `Endpoint` explicitly.

pub mod address;
pub mod amqp;
mod auth;
mod format;
pub mod grammar;
mod registry;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use reqwest::Url;

pub use auth::{api_key_header, check_api_key_value, ClientAuth, EndpointAuth, OAuth2Settings};
pub use format::{check_cloudevents_source, Format};
pub use registry::{Publisher, Registered, Registry, Snapshot};

use crate::domain::Subscriptions;
use crate::secret::Secret;

/// An endpoint: where a notification goes, how it is signed and authenticated, which
/// notifications it receives, and whether its deliveries may be sent now.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// Stable and unique; deliveries are recorded, listed and recovered under it.
    pub id: String,
    pub source: Source,
    pub destination: Destination,
    /// Which notifications it receives; the writer fans out by it.
    pub subscriptions: Subscriptions,
    /// Not disabled (by a 410, an operator or the health job): its deliveries may be sent.
    pub enabled: bool,
}

/// Who defined an endpoint, and so who may change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The configuration file (or the environment): changed there, and at a restart.
    Config,
    /// The endpoints API: changed through it, kept in the database.
    Api,
}

impl Source {
    /// The name stored in the database and shown by the endpoints list.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Api => "api",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "config" => Some(Source::Config),
            "api" => Some(Source::Api),
            _ => None,
        }
    }
}

/// Where an attempt goes: an HTTP POST, or a publish to the RabbitMQ sink (the same outbox,
/// retries and dead letters either way).
#[derive(Debug, Clone, PartialEq)]
// Endpoints are few and long-lived: their size does not matter, an extra box would.
#[allow(clippy::large_enum_variant)]
pub enum Destination {
    Http(HttpDestination),
    Amqp(AmqpDestination),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpDestination {
    pub url: Url,
    /// Signing secrets, newest first (empty: unsigned). Every one signs `webhook-signature`
    /// so receivers keep verifying through a rotation; the first signs `X-Signature`.
    pub secrets: Vec<Secret>,
    /// How our POSTs authenticate to the endpoint; `None`: they do not.
    pub auth: Option<EndpointAuth>,
    /// The GBDS body as it is, or wrapped in a CloudEvent.
    pub format: Format,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AmqpDestination {
    /// The broker URL; it holds the broker password, so it never shows in output.
    pub url: Secret,
    /// The durable topic exchange we declare and publish to.
    pub exchange: String,
}

impl Endpoint {
    /// A configured HTTP endpoint that receives everything, unsigned and unauthenticated.
    pub fn http(id: impl Into<String>, url: Url) -> Self {
        Endpoint {
            id: id.into(),
            source: Source::Config,
            destination: Destination::Http(HttpDestination {
                url,
                secrets: Vec::new(),
                auth: None,
                format: Format::Gbds,
            }),
            subscriptions: Subscriptions::All,
            enabled: true,
        }
    }

    /// Its URL as it may be shown and stored: a broker URL without its password.
    pub fn shown_url(&self) -> String {
        match &self.destination {
            Destination::Http(http) => http.url.to_string(),
            Destination::Amqp(amqp) => amqp::redact_url(amqp.url.expose()),
        }
    }

    /// What it receives: the sink publishes the GBDS body as it is.
    pub fn format(&self) -> Format {
        match &self.destination {
            Destination::Http(http) => http.format,
            Destination::Amqp(_) => Format::Gbds,
        }
    }
}

/// A change to an endpoint made through the API: each field given is set, the others kept.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    pub url: Option<Url>,
    /// `Some(None)` removes the secret.
    pub secret: Option<Option<Secret>>,
    pub enabled: Option<bool>,
    pub subscriptions: Option<Subscriptions>,
    pub format: Option<Format>,
}

/// Whether every character of `id` may appear in an endpoint id: letters, digits, '-', '_'
/// and '.' (ids appear in URLs and logs unquoted).
pub fn id_characters_allowed(id: &str) -> bool {
    id.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Checks an id given through the API (or as `[amqp] id`): 1-64 allowed characters.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 || !id_characters_allowed(id) {
        return Err(format!(
            "id {id:?} must be 1-64 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// An `http://` or `https://` URL with a host; the error starts with the URL as given.
pub fn parse_http_url(url: &str) -> Result<Url, String> {
    match Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
        Ok(_) => Err(format!("{url:?} must be an http:// or https:// URL")),
        Err(why) => Err(format!("{url:?} is not a URL: {why}")),
    }
}

/// [`parse_http_url`], with an error that says it is about a URL.
pub fn check_url(url: &str) -> Result<Url, String> {
    parse_http_url(url).map_err(|why| format!("url {why}"))
}

/// The prefix of a Standard Webhooks secret; what follows it is the base64 key.
pub const SECRET_PREFIX: &str = "whsec_";

/// Checks a signing secret: non-empty, and a `whsec_` secret must hold valid base64.
pub fn check_secret(secret: &str) -> Result<(), String> {
    if secret.is_empty() {
        return Err("must not be empty".to_owned());
    }
    match secret.strip_prefix(SECRET_PREFIX) {
        Some(b64) => match B64.decode(b64) {
            Ok(key) if !key.is_empty() => Ok(()),
            _ => Err("the part after \"whsec_\" must be non-empty base64".to_owned()),
        },
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
