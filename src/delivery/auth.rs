//! Authentication towards endpoints (API key or OAuth 2.0) and the one place a POST leaves the service:
//! an API-key header, or an OAuth 2.0 client-credentials bearer token that is fetched once per
//! endpoint, shared by concurrent deliveries, renewed shortly before it expires and replaced
//! (with one immediate retry) when the receiver answers 401.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Client, Response, StatusCode};

use crate::endpoint::address::check_public_literal;
use crate::endpoint::{ClientAuth, EndpointAuth, OAuth2Settings};

/// A token is renewed this fraction of its lifetime before it ends…
const RENEW_FRACTION: u32 = 10;
/// …but never more than this much before.
const RENEW_AT_MOST: Duration = Duration::from_secs(60);
/// Largest token response read; a token endpoint has no business sending more.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// Why a POST could not be made or got no HTTP answer.
#[derive(Debug)]
pub enum SendError {
    /// The request failed on the wire (connect, TLS, timeout, …).
    Http(reqwest::Error),
    /// No OAuth2 token could be had; the POST was not sent.
    Token(String),
    /// `block_private_targets` refused the address; nothing was sent.
    Refused(String),
}

impl SendError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, SendError::Http(e) if e.is_timeout())
    }
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Http(e) if e.is_connect())
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // reqwest's own message hides the cause ("error sending request"); show the chain.
            SendError::Http(e) => write_chain(f, e),
            SendError::Token(why) => write!(f, "oauth2 token: {why}"),
            SendError::Refused(why) => f.write_str(why),
        }
    }
}

fn write_chain(f: &mut fmt::Formatter<'_>, e: &dyn std::error::Error) -> fmt::Result {
    write!(f, "{e}")?;
    let mut source = e.source();
    while let Some(cause) = source {
        write!(f, ": {cause}")?;
        source = cause.source();
    }
    Ok(())
}

/// An endpoint's credentials, with the OAuth2 token cache; one per endpoint.
pub enum Credentials {
    None,
    ApiKey {
        header: HeaderName,
        value: HeaderValue,
    },
    OAuth2(OAuth2),
}

impl Credentials {
    pub fn new(auth: Option<&EndpointAuth>) -> Self {
        match auth {
            None => Credentials::None,
            Some(EndpointAuth::ApiKey { header, value }) => {
                // Checked when the configuration was loaded.
                let mut value =
                    HeaderValue::from_str(value.expose()).unwrap_or(HeaderValue::from_static(""));
                value.set_sensitive(true);
                Credentials::ApiKey {
                    header: header.clone(),
                    value,
                }
            }
            Some(EndpointAuth::OAuth2(settings)) => {
                Credentials::OAuth2(OAuth2::new(settings.clone()))
            }
        }
    }
}

/// Sends one POST with the endpoint's credentials. With OAuth2, a 401 drops the token, a
/// new one is fetched and the POST is sent once more at once; the second answer stands.
pub async fn send(
    client: &Client,
    credentials: &Credentials,
    block_private_targets: bool,
    request: reqwest::RequestBuilder,
) -> Result<Response, SendError> {
    let mut request = request.build().map_err(SendError::Http)?;
    if block_private_targets {
        check_public_literal(request.url()).map_err(SendError::Refused)?;
    }
    match credentials {
        Credentials::None => client.execute(request).await.map_err(SendError::Http),
        Credentials::ApiKey { header, value } => {
            request.headers_mut().insert(header.clone(), value.clone());
            client.execute(request).await.map_err(SendError::Http)
        }
        Credentials::OAuth2(oauth) => {
            let retry = request.try_clone();
            let token = oauth.token(client, block_private_targets).await?;
            request
                .headers_mut()
                .insert(AUTHORIZATION, token.header.clone());
            let response = client.execute(request).await.map_err(SendError::Http)?;
            let Some(mut retry) = retry.filter(|_| response.status() == StatusCode::UNAUTHORIZED)
            else {
                return Ok(response);
            };
            // Let the connection go back to the pool before the second try.
            let _ = response.bytes().await;
            oauth.discard(&token).await;
            let token = oauth.token(client, block_private_targets).await?;
            tracing::debug!(token_url = %oauth.settings.token_url, "401 from the receiver: retrying once with a new token");
            retry
                .headers_mut()
                .insert(AUTHORIZATION, token.header.clone());
            client.execute(retry).await.map_err(SendError::Http)
        }
    }
}

/// A bearer token and until when it may be used.
pub struct Token {
    /// `Bearer <access_token>`, marked sensitive.
    header: HeaderValue,
    /// When to stop using it (renewal margin already taken off); `None`: until a 401.
    renew_at: Option<Instant>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("renew_at", &self.renew_at)
            .finish_non_exhaustive()
    }
}

/// What the token cache holds between fetches.
#[derive(Default)]
struct Cache {
    token: Option<Arc<Token>>,
    /// The last failed fetch: callers that were already waiting when it failed get its error
    /// instead of each asking the token server again.
    failure: Option<(Instant, String)>,
    /// How many tokens were fetched (for tests and logs).
    fetched: u64,
}

/// The OAuth 2.0 client-credentials grant for one endpoint, with its token cache.
pub struct OAuth2 {
    settings: OAuth2Settings,
    /// Held across a fetch, so that concurrent deliveries share one token request.
    cache: tokio::sync::Mutex<Cache>,
}

impl OAuth2 {
    pub fn new(settings: OAuth2Settings) -> Self {
        Self {
            settings,
            cache: tokio::sync::Mutex::new(Cache::default()),
        }
    }

    /// How many tokens this endpoint has fetched so far.
    pub async fn tokens_fetched(&self) -> u64 {
        self.cache.lock().await.fetched
    }

    /// A usable token: the cached one, or a new one fetched while others wait for it.
    pub async fn token(&self, client: &Client, guarded: bool) -> Result<Arc<Token>, SendError> {
        let asked = Instant::now();
        let mut cache = self.cache.lock().await;
        if let Some(token) = &cache.token {
            if token.renew_at.is_none_or(|at| Instant::now() < at) {
                return Ok(token.clone());
            }
        }
        if let Some((at, why)) = &cache.failure {
            if *at >= asked {
                return Err(SendError::Token(why.clone()));
            }
        }
        match self.fetch(client, guarded).await {
            Ok(token) => {
                let token = Arc::new(token);
                cache.token = Some(token.clone());
                cache.failure = None;
                cache.fetched += 1;
                Ok(token)
            }
            Err(why) => {
                cache.token = None;
                cache.failure = Some((Instant::now(), why.clone()));
                tracing::warn!(token_url = %self.settings.token_url, error = %why, "oauth2 token request failed");
                Err(SendError::Token(why))
            }
        }
    }

    /// Forgets `used` after a 401, unless another delivery already replaced it.
    pub async fn discard(&self, used: &Arc<Token>) {
        let mut cache = self.cache.lock().await;
        if cache.token.as_ref().is_some_and(|t| Arc::ptr_eq(t, used)) {
            cache.token = None;
        }
    }

    /// One client-credentials token request (RFC 6749 §4.4), form-encoded.
    async fn fetch(&self, client: &Client, guarded: bool) -> Result<Token, String> {
        let s = &self.settings;
        if guarded {
            check_public_literal(&s.token_url)?;
        }
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &s.scope {
            form.push(("scope", scope));
        }
        let mut request = client
            .post(s.token_url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json");
        match s.client_auth {
            ClientAuth::Body => {
                form.push(("client_id", &s.client_id));
                form.push(("client_secret", s.client_secret.expose()));
            }
            ClientAuth::Basic => {
                // RFC 6749 §2.3.1: both parts are form-encoded before the Basic encoding.
                let enc =
                    |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
                let pair = format!("{}:{}", enc(&s.client_id), enc(s.client_secret.expose()));
                let mut value = HeaderValue::from_str(&format!("Basic {}", B64.encode(pair)))
                    .map_err(|_| "the client credentials do not fit in a header".to_owned())?;
                value.set_sensitive(true);
                request = request.header(AUTHORIZATION, value);
            }
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| format!("request to the token URL failed: {}", SendError::Http(e)))?;
        let status = response.status();
        let body = read_limited(response).await?;
        if !status.is_success() {
            // RFC 6749 §5.2: {"error": "invalid_client", …}; show the code, not the body.
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            return Err(format!(
                "the token URL answered HTTP {}{code}",
                status.as_u16()
            ));
        }
        parse_token(&body, Instant::now())
    }
}

async fn read_limited(mut response: Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading the token response failed: {}", SendError::Http(e)))?
    {
        out.extend_from_slice(&chunk);
        if out.len() > MAX_TOKEN_RESPONSE {
            return Err("the token response is larger than 64 KiB".to_owned());
        }
    }
    Ok(out)
}

/// Reads an RFC 6749 §5.1 token response received at `now`.
fn parse_token(body: &[u8], now: Instant) -> Result<Token, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "the token response is not JSON".to_owned())?;
    let access = v
        .get("access_token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or("the token response has no access_token")?;
    if let Some(kind) = v.get("token_type") {
        if !kind
            .as_str()
            .is_some_and(|k| k.eq_ignore_ascii_case("bearer"))
        {
            return Err(format!("token_type {kind} is not Bearer"));
        }
    }
    // A number of seconds; some servers send it as a string.
    let lifetime = match v.get("expires_in") {
        None | Some(serde_json::Value::Null) => None,
        Some(e) => Some(
            e.as_u64()
                .or_else(|| e.as_str().and_then(|s| s.trim().parse().ok()))
                .map(Duration::from_secs)
                .ok_or_else(|| format!("expires_in {e} is not a number of seconds"))?,
        ),
    };
    let renew_at = lifetime.map(|life| now + life - (life / RENEW_FRACTION).min(RENEW_AT_MOST));
    let mut header = HeaderValue::from_str(&format!("Bearer {access}"))
        .map_err(|_| "the access_token cannot be sent in a header".to_owned())?;
    header.set_sensitive(true);
    Ok(Token { header, renew_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_renewed_a_tenth_of_its_lifetime_early_at_most_a_minute() {
        let now = Instant::now();
        let t = parse_token(
            br#"{"access_token":"abc","token_type":"Bearer","expires_in":3600}"#,
            now,
        )
        .unwrap();
        assert_eq!(t.renew_at, Some(now + Duration::from_secs(3540)));
        assert_eq!(t.header, "Bearer abc");
        assert!(t.header.is_sensitive());
        let t = parse_token(br#"{"access_token":"abc","expires_in":"100"}"#, now).unwrap();
        assert_eq!(t.renew_at, Some(now + Duration::from_secs(90)));
        let t = parse_token(br#"{"access_token":"abc","token_type":"bearer"}"#, now).unwrap();
        assert_eq!(t.renew_at, None);
    }

    #[test]
    fn bad_token_responses_are_refused_without_echoing_the_token() {
        let now = Instant::now();
        for (body, says) in [
            (&b"<html>"[..], "not JSON"),
            (br#"{"token_type":"Bearer"}"#, "no access_token"),
            (br#"{"access_token":""}"#, "no access_token"),
            (
                br#"{"access_token":"s3cr3t","token_type":"mac"}"#,
                "not Bearer",
            ),
            (
                br#"{"access_token":"s3cr3t","expires_in":-5}"#,
                "expires_in",
            ),
            (br#"{"access_token":"s3cr3t\n"}"#, "header"),
        ] {
            let e = parse_token(body, now).unwrap_err();
            assert!(e.contains(says), "{e}");
            assert!(!e.contains("s3cr3t"), "{e}");
        }
    }

    #[test]
    fn a_token_does_not_show_in_debug_output() {
        let t = parse_token(br#"{"access_token":"s3cr3t"}"#, Instant::now()).unwrap();
        assert!(!format!("{t:?}").contains("s3cr3t"));
    }
}
