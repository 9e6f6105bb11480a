//! Notification signatures (CONTRACT §3): Standard Webhooks `webhook-signature` and the plain
//! hex `X-Signature` that simpler receivers check. Pure functions of key, id, timestamp and body.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::endpoint::SECRET_PREFIX;

type HmacSha256 = Hmac<Sha256>;

/// The Standard Webhooks key: the base64-decoded part after `whsec_`, or the raw bytes of a
/// secret written without that prefix.
fn standard_key(secret: &str) -> Vec<u8> {
    match secret.strip_prefix(SECRET_PREFIX) {
        Some(b64) => B64
            .decode(b64)
            .unwrap_or_else(|_| secret.as_bytes().to_vec()),
        None => secret.as_bytes().to_vec(),
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = hmac(
        &standard_key(secret),
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
    );
    format!("v1,{}", B64.encode(mac))
}

/// The `webhook-signature` header during a secret rotation: one `v1,<base64>` per secret,
/// space-separated, so a receiver holding either the old or the new secret verifies
/// (Standard Webhooks allows several signatures in the header for exactly this).
pub fn standard_signatures<'a>(
    secrets: impl IntoIterator<Item = &'a str>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .into_iter()
        .map(|secret| standard_signature(secret, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Hex HMAC-SHA256 of the body, keyed with the secret string exactly as configured.
pub fn plain_signature(secret: &str, body: &[u8]) -> String {
    hex::encode(hmac(secret.as_bytes(), &[body]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the Standard Webhooks specification (and its reference libraries).
    #[test]
    fn the_standard_webhooks_test_vector_verifies() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let ts = 1614265330;
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            standard_signature(secret, id, ts, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn during_a_rotation_every_secret_signs_space_separated_newest_first() {
        let (new, old) = (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_dGhlLW9sZC1zZWNyZXQtb2YtdGhlLWVuZHBvaW50",
        );
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let ts = 1614265330;
        let body = br#"{"test": 2432232314}"#;
        let header = standard_signatures([new, old], id, ts, body);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(
            parts,
            [
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                standard_signature(old, id, ts, body).as_str(),
            ]
        );
        assert_ne!(parts[0], parts[1]);
        // One secret gives exactly the single-signature header.
        assert_eq!(
            standard_signatures([new], id, ts, body),
            standard_signature(new, id, ts, body)
        );
    }

    #[test]
    fn the_plain_signature_is_keyed_with_the_whole_secret_string() {
        let body = b"{}";
        let sig = plain_signature("whsec_abc", body);
        assert_eq!(sig.len(), 64);
        assert_eq!(sig, hex::encode(hmac(b"whsec_abc", &[body])));
        assert_ne!(sig, plain_signature("abc", body));
    }
}
