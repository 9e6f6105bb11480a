//! Signature headers as a receiver verifies them (`receiver::verify`, the development
//! receiver's check) against what the service signs (`delivery::signing`).
//!
//! Properties: no header, however malformed, makes verification panic; what the service
//! signs verifies, with one secret and during a rotation (either secret); the same headers
//! with another body or another secret do not verify.

#![no_main]

use arbitrary::Arbitrary;
use gbds_notifier::delivery::signing;
use gbds_notifier::receiver::verify;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Case {
    secret: String,
    other_secret: String,
    id: String,
    timestamp: i64,
    body: Vec<u8>,
    /// Headers as a hostile sender might write them.
    raw_timestamp: String,
    raw_signature: String,
    raw_plain: String,
}

fn headers(pairs: &[(&'static str, &str)]) -> Option<HeaderMap> {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.insert(*name, HeaderValue::from_str(value).ok()?);
    }
    Some(h)
}

fuzz_target!(|case: Case| {
    // Anything at all in the headers: a verdict, never a panic.
    if let Some(h) = headers(&[
        ("webhook-id", &case.id),
        ("webhook-timestamp", &case.raw_timestamp),
        ("webhook-signature", &case.raw_signature),
        ("x-signature", &case.raw_plain),
    ]) {
        let _ = verify(&case.secret, &h, &case.body);
    }

    // What the service signs verifies; during a rotation, with either secret. Its webhook
    // ids are visible ASCII; a header value with other bytes is one a receiver cannot read
    // as text, and `verify` counts it as absent.
    if !case.id.bytes().all(|b| b.is_ascii_graphic()) {
        return;
    }
    let ts = case.timestamp.to_string();
    let standard = signing::standard_signatures(
        [case.other_secret.as_str(), case.secret.as_str()],
        &case.id,
        case.timestamp,
        &case.body,
    );
    let plain = signing::plain_signature(&case.secret, &case.body);
    let Some(h) = headers(&[
        ("webhook-id", &case.id),
        ("webhook-timestamp", &ts),
        ("webhook-signature", &standard),
        ("x-signature", &plain),
    ]) else {
        return; // an id that is no header value is never sent
    };
    let v = verify(&case.secret, &h, &case.body);
    assert_eq!((v.standard, v.plain), (Some(true), Some(true)));
    assert_eq!(verify(&case.other_secret, &h, &case.body).standard, Some(true));

    // Another body does not verify.
    let mut other_body = case.body.clone();
    other_body.push(b' ');
    let v = verify(&case.secret, &h, &other_body);
    assert_eq!((v.standard, v.plain), (Some(false), Some(false)));

    // A secret that is neither of the two does not verify, unless it is the same key.
    let stranger = format!("{}x", case.secret);
    let same_key = |a: &str, b: &str| {
        signing::standard_signature(a, "k", 0, b"") == signing::standard_signature(b, "k", 0, b"")
    };
    if !same_key(&stranger, &case.secret) && !same_key(&stranger, &case.other_secret) {
        assert_eq!(verify(&stranger, &h, &case.body).standard, Some(false));
    }
    assert_eq!(verify(&stranger, &h, &case.body).plain, Some(false));
});
