//! Every request body the service reads, through the functions the handlers (and the AMQP
//! inbound consumer) parse it with. The first byte picks the call, the rest is the body.
//!
//! Properties: nothing panics; a refusal is 400 (not JSON at all, exactly when serde_json
//! finds a syntax error), 413 or 422 with an error code and a message; and an accepted object
//! body with a key repeated in front is refused 422 naming that key.

#![no_main]

use gbds_notifier::api::{self, ApiError};
use libfuzzer_sys::fuzz_target;

const TGUID: &str = "tg-fuzz";

/// The calls with a body; the index is the first byte modulo their number.
const CALLS: &[&str] = &[
    "register",
    "event",
    "review",
    "treatment",
    "create endpoint",
    "change endpoint",
    "recover",
    "renotify",
    "inbound message",
];

/// What the call made of `body`: `Ok(())` when accepted.
fn call(which: usize, body: &[u8]) -> Result<(), ApiError> {
    match which {
        0 => api::parse_registration(body).map(drop),
        1 => api::parse_event(TGUID, body, "fuzz".into()).map(drop),
        2 => api::parse_review(TGUID, body, "fuzz").map(drop),
        3 => api::parse_treatment(TGUID, body, "fuzz").map(drop),
        4 => api::parse_endpoint(body).map(drop),
        5 => api::parse_endpoint_change("ep-fuzz", body).map(drop),
        6 => api::parse_recover(body).map(drop),
        7 => api::parse_renotify(TGUID, body).map(drop),
        _ => gbds_notifier::inbound::parse(body, Some("m-1"), "amqp:fuzz").map(drop),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let which = first as usize % CALLS.len();
    let name = CALLS[which];
    let syntax_error = serde_json::from_slice::<serde_json::Value>(body).is_err();
    // A re-send may come without any body at all.
    let empty_renotify = which == 7 && body.iter().all(u8::is_ascii_whitespace);
    match call(which, body) {
        Ok(()) => {
            assert!(!syntax_error || empty_renotify, "{name}: accepted a body that is not JSON");
            repeated_key_is_refused(which, body);
        }
        Err(e) => {
            let status = e.status.as_u16();
            assert!(matches!(status, 400 | 413 | 422), "{name}: status {status}");
            assert!(!e.code.is_empty() && !e.message.is_empty(), "{name}: {e:?}");
            assert_eq!(
                status == 400,
                syntax_error && !empty_renotify,
                "{name}: 400 must mean \"not JSON\": {e:?}"
            );
        }
    }
});

/// An accepted object body, with its first key given once more in front, is refused as 422
/// naming the key (never applied with either value).
fn repeated_key_is_refused(which: usize, body: &[u8]) {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) else {
        return;
    };
    let Some(key) = fields.keys().next() else {
        return;
    };
    let text = String::from_utf8_lossy(body);
    let Some(open) = text.find('{') else { return };
    let repeated = format!(
        "{}{{{}:null,{}",
        &text[..open],
        serde_json::to_string(key).unwrap(),
        &text[open + 1..]
    );
    let e = call(which, repeated.as_bytes()).expect_err("a repeated key was accepted");
    assert_eq!(e.status.as_u16(), 422, "{e:?}");
    assert!(
        e.message.contains(&format!("{key:?}")),
        "the refusal does not name {key:?}: {}",
        e.message
    );
}
