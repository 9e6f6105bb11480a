//! What every call goes through before its handler runs its logic: the bearer token and its
//! role, then the body (size-limited, JSON, strict fields). The order is CONTRACT §4's
//! precedence: 401/403, then 413/400/422.

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::config::{ApiToken, Role, TokenDigest};

/// Largest accepted request body.
pub const MAX_BODY: usize = 2 * 1024 * 1024;
/// An oversized body is read (and dropped) up to this much so the client gets its 413 instead
/// of a reset connection; past it the connection is cut.
pub(super) const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Who is calling, as the transition log records it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
}

/// The configured tokens; an empty list leaves the API open.
pub struct Auth {
    tokens: Vec<ApiToken>,
}

/// Compares without an early exit, so timing does not reveal how much of a token matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    pub fn new(tokens: Vec<ApiToken>) -> Self {
        Self { tokens }
    }

    /// Checks the bearer token against the roles a route admits (admin is always admitted).
    pub fn check(&self, headers: &HeaderMap, allowed: &[Role]) -> Result<Caller, ApiError> {
        if self.tokens.is_empty() {
            return Ok(Caller {
                name: "anonymous".to_owned(),
            });
        }
        let presented = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .ok_or_else(|| {
                ApiError::unauthorized("an Authorization: Bearer <token> header is required")
            })?;
        // Only digests are kept; every one is compared, in constant time, with no early exit.
        let digest = TokenDigest::of(presented);
        let mut found = None;
        for t in &self.tokens {
            if same(t.digest.as_bytes(), digest.as_bytes()) {
                found = Some(t);
            }
        }
        let token = found.ok_or_else(|| ApiError::unauthorized("the bearer token is not valid"))?;
        if token.role == Role::Admin || allowed.contains(&token.role) {
            Ok(Caller {
                name: token.name.clone(),
            })
        } else {
            let wanted: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
            Err(ApiError::forbidden(format!(
                "role {} may not make this call (it needs {} or admin)",
                token.role.as_str(),
                wanted.join(" or ")
            )))
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme is case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Reads the whole body, refusing more than `MAX_BODY`. Behind the intake (`serve`) the body
/// is already in memory, and a refusal the intake deferred to this point is returned here.
pub async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    let mut body = body;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| match e.into_inner().downcast::<Deferred>() {
            Ok(deferred) => deferred.0,
            Err(e) => ApiError::malformed(format!("could not read the body: {e}")),
        })?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= MAX_BODY {
                chunks.push(data);
            } else {
                chunks.clear();
                if seen > DRAIN_LIMIT {
                    break;
                }
            }
        }
    }
    if seen > MAX_BODY {
        return Err(ApiError::too_large());
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        // The intake's one chunk, kept as it is: it holds its share of the memory budget.
        1 => chunks.pop().expect("one chunk"),
        _ => chunks.concat().into(),
    })
}

/// A refusal the intake found but the handler gives, when it reads the body after its own
/// checks (CONTRACT §4's precedence).
#[derive(Debug)]
pub(super) struct Deferred(pub ApiError);

impl std::fmt::Display for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for Deferred {}

/// Parses a JSON body: not JSON at all is 400; JSON of the wrong shape (unknown or missing
/// fields, wrong types, a key given twice in one object) is 422.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    shape(json_value(bytes)?)
}

/// The one reading of JSON that every body goes through (every route's, and every inbound
/// message's): not JSON at all is 400; a key given twice in any object, however deeply
/// nested, is 422 naming the key.
pub fn json_value(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    let repeated = std::cell::RefCell::new(None);
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    let value = serde::de::DeserializeSeed::deserialize(
        unique_keys::Value {
            repeated: &repeated,
        },
        &mut reader,
    )
    .and_then(|v| reader.end().map(|()| v))
    .map_err(|e| ApiError::malformed(format!("the body is not valid JSON: {e}")))?;
    if let Some(key) = repeated.into_inner() {
        // serde_json would keep the last one silently: `{"type":"FAILED","type":"ENROLLED"}`
        // must not be taken for ENROLLED.
        return Err(ApiError::invalid(format!(
            "the key {key:?} appears more than once in one object"
        )));
    }
    Ok(value)
}

/// A JSON value read by `json_value`, taken as the call's request type (422 if it does not
/// fit).
pub fn shape<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(value)
        .map_err(|e| ApiError::invalid(format!("the body does not fit this call: {e}")))
}

/// A JSON value read like `serde_json::Value`, noting the first key repeated in an object.
mod unique_keys {
    use std::cell::RefCell;
    use std::fmt;

    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Number};

    #[derive(Clone, Copy)]
    pub struct Value<'a> {
        pub repeated: &'a RefCell<Option<String>>,
    }

    impl<'de> DeserializeSeed<'de> for Value<'_> {
        type Value = serde_json::Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Value<'_> {
        type Value = serde_json::Value;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
            Ok(v.into())
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(v.into())
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(v.into())
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(v.into())
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(v.into())
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(serde_json::Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element_seed(self)? {
                items.push(item);
            }
            Ok(items.into())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut object = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = map.next_value_seed(self)?;
                if object.contains_key(&key) && self.repeated.borrow().is_none() {
                    *self.repeated.borrow_mut() = Some(key.clone());
                }
                object.insert(key, value);
            }
            Ok(object.into())
        }
    }
}

/// Default and largest page of every paged list (review queues, deliveries, the feed).
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// A query string read into a route's documented parameters (`T`, whose `IntoParams` also
/// describes them in the document): a key it does not take, a key given twice or a value of
/// the wrong type is 422. Called after the token check, like the body's parse.
pub fn parse_query<T: DeserializeOwned + utoipa::IntoParams>(
    raw: Option<&str>,
) -> Result<T, ApiError> {
    let raw = raw.unwrap_or("");
    let known: Vec<String> = T::into_params(|| None)
        .into_iter()
        .map(|p| p.name)
        .collect();
    if let Some((key, _)) =
        form_urlencoded::parse(raw.as_bytes()).find(|(k, _)| !known.iter().any(|n| n == k))
    {
        return Err(ApiError::invalid(if known.is_empty() {
            format!("unknown query parameter {key:?} (this call takes none)")
        } else {
            format!("unknown query parameter {key:?} (use {})", known.join(", "))
        }));
    }
    serde_urlencoded::from_str(raw)
        .map_err(|e| ApiError::invalid(format!("the query does not fit this call: {e}")))
}

/// `limit`: 1 to `MAX_LIMIT`, `DEFAULT_LIMIT` when absent.
pub fn page_limit(limit: Option<&str>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "limit {s:?} must be a whole number from 1 to {MAX_LIMIT}"
                ))
            }),
    }
}

/// A cursor parameter (`key`): a non-negative number this service gave out, 0 when absent.
pub fn page_cursor(key: &str, value: Option<&str>) -> Result<i64, ApiError> {
    match value {
        None => Ok(0),
        Some(s) => s.parse::<i64>().ok().filter(|c| *c >= 0).ok_or_else(|| {
            ApiError::invalid(format!(
                "{key} {s:?} is not a cursor this service gave out (use 0 for the beginning)"
            ))
        }),
    }
}

/// The one `{…}` segment of a route, as text. A segment that is not UTF-8 is not refused
/// here, before the token is checked: it becomes U+FFFD, which no tguid or id accepts, so the
/// handler answers in CONTRACT §4's precedence (401/403 first, then a JSON 422 or 404).
pub struct PathParam(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathParam {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        use axum::extract::Path;
        Ok(
            match Path::<String>::from_request_parts(parts, state).await {
                Ok(Path(segment)) => PathParam(segment),
                Err(_) => PathParam(char::REPLACEMENT_CHARACTER.to_string()),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(vec![
            ApiToken::new("t-ingest", Role::Ingest, "bo"),
            ApiToken {
                // sha256("t-admin"), as token_sha256 would give it.
                digest: TokenDigest::from_hex(
                    "C140B9EE332D67F84953AAE63EDC037A10D217685D2D98161ECB34696EB4E2A4",
                )
                .unwrap(),
                role: Role::Admin,
                name: "admin".into(),
            },
        ])
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", format!("Bearer {t}").parse().unwrap());
        h
    }

    #[test]
    fn a_missing_or_unknown_token_is_401_and_a_wrong_role_403() {
        let a = auth();
        assert_eq!(
            a.check(&HeaderMap::new(), &[Role::Ingest])
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            a.check(&bearer("t-nope"), &[Role::Ingest])
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            a.check(&bearer("t-ingest"), &[Role::Review])
                .unwrap_err()
                .status,
            403
        );
        assert_eq!(
            a.check(&bearer("t-ingest"), &[Role::Ingest]).unwrap().name,
            "bo"
        );
        assert_eq!(
            a.check(&bearer("t-admin"), &[Role::Review]).unwrap().name,
            "admin"
        );
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_other_schemes_are_401() {
        let a = auth();
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("authorization", v.parse().unwrap());
            a.check(&h, &[Role::Ingest]).map(|c| c.name)
        };
        assert_eq!(with("bearer t-ingest").unwrap(), "bo");
        assert_eq!(with("BEARER  t-ingest ").unwrap(), "bo");
        for bad in [
            "Basic dC1pbmdlc3Q=",
            "Bearer",
            "Bearer ",
            "t-ingest",
            "Bearer t-ingest2",
        ] {
            assert_eq!(with(bad).unwrap_err().status, 401, "{bad}");
        }
    }

    #[test]
    fn a_token_given_as_its_sha256_is_accepted_and_the_digest_never_shown() {
        let a = auth();
        assert_eq!(
            a.check(&bearer("t-admin"), &[Role::Review]).unwrap().name,
            "admin"
        );
        assert!(!format!("{:?}", a.tokens).contains("c140b9"));
    }

    #[test]
    fn without_tokens_the_api_is_open() {
        assert!(Auth::new(vec![])
            .check(&HeaderMap::new(), &[Role::Review])
            .is_ok());
    }

    #[test]
    fn json_syntax_errors_are_400_and_shape_errors_422() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct R {
            a: String,
        }
        assert_eq!(parse_json::<R>(b"{\"a\":").unwrap_err().status, 400);
        assert_eq!(
            parse_json::<R>(b"{\"a\":\"x\",\"b\":1}")
                .unwrap_err()
                .status,
            422
        );
        assert_eq!(parse_json::<R>(b"[]").unwrap_err().status, 422);
        assert_eq!(parse_json::<R>(b"{\"a\":1}").unwrap_err().status, 422);
        assert!(parse_json::<R>(b"{\"a\":\"x\"}").is_ok());
        assert_eq!(parse_json::<R>(b"{\"a\":\"x\"} x").unwrap_err().status, 400);
    }

    #[test]
    fn a_key_given_twice_in_any_object_is_422_naming_it() {
        let e =
            parse_json::<serde_json::Value>(br#"{"type":"FAILED","type":"ENROLLED"}"#).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (422, "invalid_request"));
        assert!(e.message.contains("\"type\""), "{}", e.message);
        let nested = parse_json::<serde_json::Value>(br#"{"a":[{"b":1,"b":1}]}"#).unwrap_err();
        assert!(nested.message.contains("\"b\""), "{}", nested.message);
        let fine = parse_json::<serde_json::Value>(br#"{"a":{"b":1},"c":[{"b":2.5}],"d":null}"#);
        assert_eq!(
            fine.unwrap(),
            serde_json::json!({"a":{"b":1},"c":[{"b":2.5}],"d":null})
        );
    }
}
