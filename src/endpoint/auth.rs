//! How our POSTs authenticate to an endpoint: a fixed API-key header, or an OAuth 2.0
//! client-credentials token; and the checks of each value, whoever supplies it.

use reqwest::header::{HeaderName, HeaderValue};

use crate::secret::Secret;

/// How the dispatcher authenticates to an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum EndpointAuth {
    /// A fixed header on every POST, e.g. `X-API-Key: …`.
    ApiKey { header: HeaderName, value: Secret },
    /// `Authorization: Bearer <token>` from an OAuth 2.0 client-credentials grant.
    OAuth2(OAuth2Settings),
}

#[derive(Debug, Clone, PartialEq)]
pub struct OAuth2Settings {
    pub token_url: reqwest::Url,
    pub client_id: String,
    pub client_secret: Secret,
    /// Sent as `scope` when given.
    pub scope: Option<String>,
    pub client_auth: ClientAuth,
}

/// Where the client id and secret go in the token request (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic` (`client_secret_basic`; every server must accept it).
    Basic,
    /// `client_id` and `client_secret` in the form body (`client_secret_post`).
    Body,
}

impl ClientAuth {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "basic" => Ok(ClientAuth::Basic),
            "body" => Ok(ClientAuth::Body),
            other => Err(format!("{other:?} is not \"basic\" or \"body\"")),
        }
    }
}

/// Headers the dispatcher sets itself; an API key may not replace them.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-signature",
];

/// An API key's header name: a valid one that the dispatcher does not set itself.
pub fn api_key_header(header: &str) -> Result<HeaderName, String> {
    match HeaderName::from_bytes(header.as_bytes()) {
        Ok(n) if !RESERVED_HEADERS.contains(&n.as_str()) => Ok(n),
        Ok(_) => Err(format!(
            "{header:?} is set by the notifier itself; choose another header"
        )),
        Err(_) => Err(format!("{header:?} is not a valid HTTP header name")),
    }
}

/// An API key's value is sent as a header. It is a secret: the error says what is wrong,
/// never what it is.
pub fn check_api_key_value(value: &Secret) -> Result<(), String> {
    if value.expose().is_empty() || HeaderValue::from_str(value.expose()).is_err() {
        return Err("must be non-empty visible ASCII (it is sent as a header)".to_owned());
    }
    Ok(())
}
