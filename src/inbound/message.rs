//! What one inbound message asks for: a registration or an event, parsed and checked by the
//! REST routes' own functions, so that a message is refused exactly when the same call would
//! be, with the same error code.

use serde_json::{Map, Value};

use crate::api::{event_of, json_value, registration, shape, ApiError, MAX_BODY};
use crate::domain::{Operation, Tguid};
use crate::store::InputRequest;

/// A message the store is asked to apply.
#[derive(Debug, Clone)]
pub enum Command {
    /// `{"action":"register","tguid","operation"}`: `POST /v1/transactions`.
    Register { tguid: Tguid, operation: Operation },
    /// `{"action":"event","tguid","type","uguid"?,"event_id"?}`:
    /// `POST /v1/transactions/{tguid}/events`.
    Event(InputRequest),
}

impl Command {
    /// The transaction it changes; messages of one transaction are applied in queue order.
    pub fn tguid(&self) -> &Tguid {
        match self {
            Command::Register { tguid, .. } => tguid,
            Command::Event(request) => &request.tguid,
        }
    }
}

/// Parses a message body. `message_id` (the AMQP property) is the event's `event_id` when the
/// body has none, so that a redelivered event is a no-op; `actor` is what the transition log
/// records. A refusal carries the REST error code and message of the same refusal.
pub fn parse(body: &[u8], message_id: Option<&str>, actor: &str) -> Result<Command, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::too_large());
    }
    // Read once, duplicate keys refused there; the fields left after `action` (and `tguid`)
    // are then exactly a REST body, checked by the route's own function.
    let mut fields: Map<String, Value> = shape(json_value(body)?)?;
    let action = fields.remove("action");
    match action.as_ref().map(Value::as_str) {
        Some(Some("register")) => {
            // What is left is exactly a registration body.
            let (tguid, operation) = registration(Value::Object(fields))?;
            Ok(Command::Register { tguid, operation })
        }
        Some(Some("event")) => {
            let tguid = match fields.remove("tguid") {
                Some(Value::String(tguid)) => tguid,
                Some(_) => return Err(ApiError::invalid("tguid must be a string")),
                None => return Err(ApiError::invalid("an event message needs a tguid")),
            };
            let has_event_id = fields.get("event_id").is_some_and(|v| !v.is_null());
            if let (false, Some(id)) = (has_event_id, message_id) {
                fields.insert("event_id".to_owned(), Value::String(id.to_owned()));
            }
            // What is left is exactly an event body.
            let request = event_of(&tguid, Value::Object(fields), actor.to_owned())?;
            Ok(Command::Event(request))
        }
        Some(Some(other)) => Err(ApiError::invalid(format!(
            "action {other:?} is not one of register, event"
        ))),
        Some(None) => Err(ApiError::invalid("action must be a string")),
        None => Err(ApiError::invalid(
            "a message needs an action: \"register\" or \"event\"",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Input, Outcome};

    const ACTOR: &str = "amqp:q";

    fn refused(body: &str, message_id: Option<&str>) -> (u16, &'static str, String) {
        let e = parse(body.as_bytes(), message_id, ACTOR).unwrap_err();
        (e.status.as_u16(), e.code, e.message)
    }

    #[test]
    fn a_registration_becomes_the_register_command() {
        let c = parse(
            br#"{"action":"register","tguid":"tg-1","operation":"SEARCH"}"#,
            Some("m-1"),
            ACTOR,
        )
        .unwrap();
        match c {
            Command::Register { tguid, operation } => {
                assert_eq!((tguid.as_str(), operation), ("tg-1", Operation::Search));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_key_given_twice_anywhere_in_a_message_is_refused_naming_it() {
        for (body, key) in [
            (
                r#"{"action":"register","action":"event","tguid":"tg-1","operation":"SEARCH"}"#,
                "action",
            ),
            (
                r#"{"action":"event","tguid":"tg-1","tguid":"tg-2","type":"MATCH"}"#,
                "tguid",
            ),
            (
                r#"{"action":"event","tguid":"tg-1","type":"FAILED","type":"ENROLLED"}"#,
                "type",
            ),
            (
                r#"{"action":"register","tguid":"tg-1","operation":"SEARCH","x":[{"y":{"z":1,"z":2}}]}"#,
                "z",
            ),
        ] {
            let (status, code, message) = refused(body, Some("m-1"));
            assert_eq!((status, code), (422, "invalid_request"), "{body}");
            assert!(message.contains(&format!("{key:?}")), "{body}: {message}");
        }
    }

    #[test]
    fn the_message_id_is_the_event_id_only_when_the_body_has_none() {
        let with = |body: &str, id| match parse(body.as_bytes(), id, ACTOR).unwrap() {
            Command::Event(r) => r,
            other => panic!("{other:?}"),
        };
        let r = with(
            r#"{"action":"event","tguid":"tg-1","type":"MATCH"}"#,
            Some("m-1"),
        );
        assert_eq!(r.tguid.as_str(), "tg-1");
        assert!(matches!(r.input, Input::Outcome(Outcome::Match)));
        assert_eq!(r.event_id, Some(("m-1".into(), "MATCH|".into())));
        assert_eq!(r.actor, ACTOR);
        let r = with(
            r#"{"action":"event","tguid":"tg-1","type":"MATCH","event_id":"e-9"}"#,
            Some("m-1"),
        );
        assert_eq!(r.event_id, Some(("e-9".into(), "MATCH|".into())));
        let r = with(
            r#"{"action":"event","tguid":"tg-1","type":"MATCH","event_id":null}"#,
            Some("m-1"),
        );
        assert_eq!(r.event_id.unwrap().0, "m-1");
        let r = with(
            r#"{"action":"event","tguid":"t","type":"REVERSE_LATENT_MATCH","uguid":"u"}"#,
            None,
        );
        assert_eq!(r.event_id, None);
        assert!(matches!(r.input, Input::LatentMatch(_)));
    }

    #[test]
    fn refusals_carry_the_rest_codes_of_the_same_mistakes() {
        let cases: &[(&str, Option<&str>, u16, &str, &str)] = &[
            ("{not json", None, 400, "malformed_json", "not valid JSON"),
            ("[1]", None, 422, "invalid_request", "does not fit"),
            (
                r#"{"tguid":"t"}"#,
                None,
                422,
                "invalid_request",
                "needs an action",
            ),
            (
                r#"{"action":7}"#,
                None,
                422,
                "invalid_request",
                "must be a string",
            ),
            (
                r#"{"action":"explode","tguid":"t"}"#,
                None,
                422,
                "invalid_request",
                "\"explode\"",
            ),
            (
                r#"{"action":"register","tguid":"t","operation":"DELETE"}"#,
                None,
                422,
                "invalid_request",
                "operation \"DELETE\"",
            ),
            (
                r#"{"action":"register","tguid":"t","operation":"SEARCH","x":1}"#,
                None,
                422,
                "invalid_request",
                "unknown field `x`",
            ),
            (
                r#"{"action":"register","tguid":"has space","operation":"SEARCH"}"#,
                None,
                422,
                "invalid_request",
                "tguid",
            ),
            (
                r#"{"action":"event","type":"MATCH"}"#,
                None,
                422,
                "invalid_request",
                "needs a tguid",
            ),
            (
                r#"{"action":"event","tguid":["t"],"type":"MATCH"}"#,
                None,
                422,
                "invalid_request",
                "tguid must be a string",
            ),
            (
                r#"{"action":"event","tguid":"t","type":"EXPLODED"}"#,
                None,
                422,
                "invalid_request",
                "type \"EXPLODED\"",
            ),
            (
                r#"{"action":"event","tguid":"t","type":"REVERSE_LATENT_MATCH"}"#,
                None,
                422,
                "invalid_request",
                "needs a uguid",
            ),
            (
                r#"{"action":"event","tguid":"t","type":"MATCH","uguid":"u"}"#,
                None,
                422,
                "invalid_request",
                "only allowed on REVERSE_LATENT_MATCH",
            ),
            (
                r#"{"action":"event","tguid":"t","type":"FAILED","type":"ENROLLED"}"#,
                None,
                422,
                "invalid_request",
                "\"type\"",
            ),
            (
                r#"{"action":"event","tguid":"t","type":"MATCH"}"#,
                Some(""),
                422,
                "invalid_request",
                "event_id",
            ),
        ];
        for (body, id, status, code, says) in cases {
            let (s, c, m) = refused(body, *id);
            assert_eq!((s, c), (*status, *code), "{body}: {m}");
            assert!(m.contains(says), "{body}: wanted {says:?} in {m:?}");
        }
    }

    #[test]
    fn a_body_over_the_rest_limit_is_refused_as_too_large() {
        let body = format!(
            r#"{{"action":"register","tguid":"t","operation":"SEARCH","pad":"{}"}}"#,
            "x".repeat(MAX_BODY)
        );
        let (s, c, _) = refused(&body, None);
        assert_eq!((s, c), (413, "payload_too_large"));
    }
}
