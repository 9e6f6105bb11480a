//! `[[endpoints]]` and `[amqp]`: each checked into an [`Endpoint`] by the rules of the
//! endpoint module, every mistake named by its key.

use std::collections::HashSet;

use crate::config::defaults;
use crate::config::error::{err, ConfigError};
use crate::config::raw::{RawAmqp, RawAuth, RawEndpoint};
use crate::domain::Subscriptions;
use crate::endpoint::{
    self, AmqpDestination, ClientAuth, Destination, Endpoint, EndpointAuth, HttpDestination,
    OAuth2Settings, Source,
};
use crate::secret::Secret;

/// The `[[endpoints]]` list. With `block_private_targets`, a URL naming a non-public address
/// is refused now (names are checked when resolved).
pub(super) fn endpoints(
    raw: Vec<RawEndpoint>,
    block_private_targets: bool,
) -> Result<Vec<Endpoint>, ConfigError> {
    let mut endpoints = Vec::new();
    let mut seen = HashSet::new();
    for (i, e) in raw.into_iter().enumerate() {
        let key = format!("endpoints[{i}]");
        if e.id.is_empty() || !endpoint::id_characters_allowed(&e.id) {
            return err(
                format!("{key}.id"),
                format!(
                    "{:?} must be non-empty letters, digits, '-', '_' or '.'",
                    e.id
                ),
            );
        }
        if !seen.insert(e.id.clone()) {
            return err(
                format!("{key}.id"),
                format!("{:?} is used by another endpoint", e.id),
            );
        }
        let url = match endpoint::parse_http_url(&e.url) {
            Ok(u) => u,
            Err(why) => return err(format!("{key}.url"), why),
        };
        let secrets = match (e.secret, e.secrets) {
            (Some(_), Some(_)) => {
                return err(
                    format!("{key}.secrets"),
                    "give either secret or secrets (newest first), not both",
                )
            }
            (Some(one), None) => {
                if let Err(why) = endpoint::check_secret(one.expose()) {
                    return err(format!("{key}.secret"), why);
                }
                vec![one]
            }
            (None, Some(list)) => {
                if list.is_empty() {
                    return err(
                        format!("{key}.secrets"),
                        "must hold at least one secret (or leave it out)",
                    );
                }
                for (j, secret) in list.iter().enumerate() {
                    if let Err(why) = endpoint::check_secret(secret.expose()) {
                        return err(format!("{key}.secrets[{j}]"), why);
                    }
                }
                list
            }
            (None, None) => Vec::new(),
        };
        let auth = match e.auth {
            Some(raw) => Some(endpoint_auth(&format!("{key}.auth"), raw)?),
            None => None,
        };
        if block_private_targets {
            // Names are checked when resolved; a literal address can be refused now.
            if let Err(why) = endpoint::address::check_public_literal(&url) {
                return err(format!("{key}.url"), why);
            }
            if let Some(EndpointAuth::OAuth2(o)) = &auth {
                if let Err(why) = endpoint::address::check_public_literal(&o.token_url) {
                    return err(format!("{key}.auth.token_url"), why);
                }
            }
        }
        let subscriptions = subscriptions(&key, e.subscriptions.as_deref())?;
        let format = match e.format.as_deref() {
            None => endpoint::Format::Gbds,
            Some(f) => match endpoint::Format::parse(f) {
                Ok(f) => f,
                Err(why) => return err(format!("{key}.format"), why),
            },
        };
        endpoints.push(Endpoint {
            id: e.id,
            source: Source::Config,
            destination: Destination::Http(HttpDestination {
                url,
                secrets,
                auth,
                format,
            }),
            subscriptions,
            enabled: true,
        });
    }

    Ok(endpoints)
}

/// An endpoint's `auth` table at `key`.
fn endpoint_auth(key: &str, raw: RawAuth) -> Result<EndpointAuth, ConfigError> {
    // Keys that belong to the other type are refused rather than silently ignored.
    let unused = |kind: &str, present: &[(&str, bool)]| -> Result<(), ConfigError> {
        match present.iter().find(|(_, p)| *p) {
            Some((name, _)) => err(
                format!("{key}.{name}"),
                format!("is not used by type {kind:?}"),
            ),
            None => Ok(()),
        }
    };
    match raw.kind.as_str() {
        "api_key" => {
            unused(
                "api_key",
                &[
                    ("token_url", raw.token_url.is_some()),
                    ("client_id", raw.client_id.is_some()),
                    ("client_secret", raw.client_secret.is_some()),
                    ("scope", raw.scope.is_some()),
                    ("client_auth", raw.client_auth.is_some()),
                ],
            )?;
            let Some(header) = raw.header else {
                return err(format!("{key}.header"), "is required for type \"api_key\"");
            };
            let name = match endpoint::api_key_header(&header) {
                Ok(n) => n,
                Err(why) => return err(format!("{key}.header"), why),
            };
            let Some(value) = raw.value else {
                return err(format!("{key}.value"), "is required for type \"api_key\"");
            };
            if let Err(why) = endpoint::check_api_key_value(&value) {
                return err(format!("{key}.value"), why);
            }
            Ok(EndpointAuth::ApiKey {
                header: name,
                value,
            })
        }
        "oauth2" => {
            unused(
                "oauth2",
                &[
                    ("header", raw.header.is_some()),
                    ("value", raw.value.is_some()),
                ],
            )?;
            let Some(token_url) = raw.token_url else {
                return err(
                    format!("{key}.token_url"),
                    "is required for type \"oauth2\"",
                );
            };
            let token_url = match endpoint::check_url(&token_url) {
                Ok(u) => u,
                Err(why) => return err(format!("{key}.token_url"), why),
            };
            let client_id = match raw.client_id {
                Some(id) if !id.is_empty() => id,
                _ => {
                    return err(
                        format!("{key}.client_id"),
                        "is required for type \"oauth2\" (non-empty)",
                    )
                }
            };
            let client_secret = match raw.client_secret {
                Some(s) if !s.expose().is_empty() => s,
                _ => {
                    return err(
                        format!("{key}.client_secret"),
                        "is required for type \"oauth2\" (non-empty)",
                    )
                }
            };
            let client_auth = match ClientAuth::parse(
                raw.client_auth
                    .as_deref()
                    .unwrap_or(defaults::OAUTH2_CLIENT_AUTH),
            ) {
                Ok(a) => a,
                Err(why) => return err(format!("{key}.client_auth"), why),
            };
            Ok(EndpointAuth::OAuth2(OAuth2Settings {
                token_url,
                client_id,
                client_secret,
                scope: raw.scope.filter(|s| !s.is_empty()),
                client_auth,
            }))
        }
        other => err(
            format!("{key}.type"),
            format!("{other:?} is not \"api_key\" or \"oauth2\""),
        ),
    }
}

/// An endpoint's `subscriptions` list, each bad pattern named by its index.
fn subscriptions(key: &str, patterns: Option<&[String]>) -> Result<Subscriptions, ConfigError> {
    match patterns {
        None => Ok(Subscriptions::All),
        Some(list) => Subscriptions::parse(list).or_else(|(i, why)| match i {
            Some(i) => err(format!("{key}.subscriptions[{i}]"), why),
            None => err(format!("{key}.subscriptions"), why),
        }),
    }
}

/// `[amqp]`: the RabbitMQ sink, an endpoint whose deliveries are published to a topic
/// exchange. Checked whether or not it is enabled, so a mistake shows before it is switched on.
pub(super) fn amqp_sink(
    raw: RawAmqp,
    endpoints: &[Endpoint],
) -> Result<Option<Endpoint>, ConfigError> {
    let url = raw.url.unwrap_or_else(|| Secret::new(defaults::AMQP_URL));
    if let Err(why) = endpoint::amqp::check_url(url.expose()) {
        return err("amqp.url", why);
    }
    let exchange = raw
        .exchange
        .unwrap_or_else(|| defaults::AMQP_EXCHANGE.to_owned());
    if let Err(why) = endpoint::amqp::check_exchange(&exchange) {
        return err("amqp.exchange", why);
    }
    let id = raw.id.unwrap_or_else(|| defaults::AMQP_ID.to_owned());
    if let Err(why) = endpoint::check_id(&id) {
        return err("amqp.id", why);
    }
    if let Some(i) = endpoints.iter().position(|e| e.id == id) {
        return err(
            "amqp.id",
            format!("{id:?} is used by endpoints[{i}]; give the sink another id"),
        );
    }
    let subscriptions = subscriptions("amqp", raw.subscriptions.as_deref())?;
    Ok(raw
        .enabled
        .unwrap_or(defaults::AMQP_ENABLED)
        .then_some(Endpoint {
            id,
            source: Source::Config,
            destination: Destination::Amqp(AmqpDestination { url, exchange }),
            subscriptions,
            enabled: true,
        }))
}
