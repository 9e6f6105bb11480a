//! The opt-in guard `[delivery] block_private_targets`: outbound POSTs (and OAuth2 token
//! requests) may only reach public addresses. Host names are checked after resolution, on the
//! addresses the connection then uses, so a name that re-resolves to 127.0.0.1 (DNS
//! rebinding) is refused at connect time; literal IPs in a URL never reach a resolver and are
//! checked by `endpoint::address::check_public_literal`.

use std::net::SocketAddr;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::endpoint::address::non_public;

/// A resolver that keeps only public addresses and fails when none is left.
#[derive(Debug, Default, Clone, Copy)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port in afterwards.
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (public, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
                all.into_iter().partition(|a| non_public(a.ip()).is_none());
            if public.is_empty() {
                let shown = match refused.first() {
                    Some(a) => format!(
                        "{} is {}",
                        a.ip(),
                        non_public(a.ip()).unwrap_or("not public")
                    ),
                    None => "no address".to_owned(),
                };
                return Err(format!(
                    "refused by block_private_targets: {host} resolves only to non-public addresses ({shown})"
                )
                .into());
            }
            if !refused.is_empty() {
                tracing::warn!(%host, refused = refused.len(), "block_private_targets: dropped non-public addresses of a host");
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// Installs the filtering resolver when the guard is on.
pub fn restrict(
    builder: reqwest::ClientBuilder,
    block_private_targets: bool,
) -> reqwest::ClientBuilder {
    if block_private_targets {
        builder.dns_resolver(PublicOnly)
    } else {
        builder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_resolver_refuses_a_name_that_resolves_only_to_loopback() {
        let name: Name = "localhost".parse().unwrap();
        let err = match PublicOnly.resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("block_private_targets"), "{err}");
        assert!(err.contains("localhost"), "{err}");
    }
}
