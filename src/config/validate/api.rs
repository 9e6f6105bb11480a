//! `[api]`: the bearer tokens and their roles (kept only as digests), and the limits on calls.

use crate::config::defaults;
use crate::config::duration::duration_or;
use crate::config::error::{err, ConfigError};
use crate::config::raw::{RawApi, RawSize};
use crate::config::settings::{ApiSettings, ApiToken, Role};
use crate::config::size::size_or;
use crate::secret::TokenDigest;

/// Far more than any machine this runs on, and well inside what a tokio semaphore counts.
const MAX_BODY_MEMORY_BUDGET: usize = 1 << 40;

pub(super) fn api(raw: RawApi) -> Result<ApiSettings, ConfigError> {
    let mut tokens = Vec::new();
    for (i, t) in raw.tokens.into_iter().enumerate() {
        let role = match t.role.as_str() {
            "ingest" => Role::Ingest,
            "review" => Role::Review,
            "admin" => Role::Admin,
            other => {
                return err(
                    format!("api.tokens[{i}].role"),
                    format!("{other:?} is not ingest, review or admin"),
                )
            }
        };
        let digest = match (t.token, t.token_sha256) {
            (Some(_), Some(_)) => {
                return err(
                    format!("api.tokens[{i}].token_sha256"),
                    "give either token or token_sha256, not both",
                )
            }
            (None, None) => {
                return err(
                    format!("api.tokens[{i}].token"),
                    "is required (or token_sha256: the hex SHA-256 of the token)",
                )
            }
            (Some(token), None) => {
                if token.expose().trim().is_empty() {
                    return err(format!("api.tokens[{i}].token"), "must not be empty");
                }
                TokenDigest::of(token.expose().trim())
            }
            (None, Some(hex_digits)) => match TokenDigest::from_hex(&hex_digits) {
                Some(d) => d,
                None => {
                    return err(
                        format!("api.tokens[{i}].token_sha256"),
                        "must be 64 hex digits (e.g. from `printf %s TOKEN | sha256sum`)",
                    )
                }
            },
        };
        if let Some(j) = tokens.iter().position(|t: &ApiToken| t.digest == digest) {
            return err(
                format!("api.tokens[{i}]"),
                format!("holds the same token as api.tokens[{j}]; a token has one role"),
            );
        }
        let name = t.name.unwrap_or_else(|| role.as_str().to_owned());
        tokens.push(ApiToken { digest, role, name });
    }
    let header_read_timeout = duration_or(
        "api.header_read_timeout",
        raw.header_read_timeout.as_deref(),
        defaults::HEADER_READ_TIMEOUT,
    )?;
    let api_request_timeout = duration_or(
        "api.request_timeout",
        raw.request_timeout.as_deref(),
        defaults::API_REQUEST_TIMEOUT,
    )?;
    if header_read_timeout.is_zero() {
        return err("api.header_read_timeout", "must be more than 0");
    }
    if api_request_timeout.is_zero() {
        return err("api.request_timeout", "must be more than 0");
    }
    let max_concurrent_requests = raw
        .max_concurrent_requests
        .unwrap_or(defaults::MAX_CONCURRENT_REQUESTS);
    if max_concurrent_requests == 0 {
        return err("api.max_concurrent_requests", "must be at least 1");
    }
    let body_read_timeout = duration_or(
        "api.body_read_timeout",
        raw.body_read_timeout.as_deref(),
        defaults::BODY_READ_TIMEOUT,
    )?;
    if body_read_timeout.is_zero() {
        return err("api.body_read_timeout", "must be more than 0");
    }
    let body_memory_budget = match raw.body_memory_budget {
        Some(RawSize::Bytes(n)) => usize::try_from(n).unwrap_or(usize::MAX),
        Some(RawSize::Text(text)) => size_or("api.body_memory_budget", Some(&text), 0)?,
        None => defaults::BODY_MEMORY_BUDGET,
    };
    if body_memory_budget == 0 {
        return err("api.body_memory_budget", "must be more than 0");
    }
    if body_memory_budget > MAX_BODY_MEMORY_BUDGET {
        return err("api.body_memory_budget", "must be at most 1024GiB");
    }
    Ok(ApiSettings {
        tokens,
        header_read_timeout,
        request_timeout: api_request_timeout,
        max_concurrent_requests,
        body_read_timeout,
        body_memory_budget,
    })
}
