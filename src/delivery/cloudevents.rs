//! CloudEvents 1.0 in structured mode: the envelope an endpoint with
//! `format = "cloudevents"` receives, with the exact GBDS body (CONTRACT §3) as `data`.
//! Pure: the dispatcher signs and sends the bytes this returns.

use serde::Serialize;
use serde_json::value::RawValue;

use super::Outgoing;

/// The `Content-Type` of a structured-mode CloudEvent over HTTP.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// Field order is the wire order: the required attributes first, as the spec lists them.
#[derive(Serialize)]
struct Structured<'a> {
    specversion: &'static str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    kind: String,
    subject: &'a str,
    time: String,
    datacontenttype: &'static str,
    /// Embedded as the stored bytes, so the body's key order is what the receiver reads.
    data: &'a RawValue,
}

/// `gbds.<operation>.<status>.v1` in lower case, e.g. `gbds.treat_exception.ok.v1`.
pub fn event_type(operation: &str, status: &str) -> String {
    format!(
        "gbds.{}.{}.v1",
        operation.to_ascii_lowercase(),
        status.to_ascii_lowercase()
    )
}

/// The event as sent: compact JSON, `data` the body byte for byte. Fails only when the
/// stored body is not JSON, which the store never records.
pub fn render(source: &str, n: &Outgoing<'_>) -> Result<Vec<u8>, serde_json::Error> {
    let text = std::str::from_utf8(n.body).map_err(serde::de::Error::custom)?;
    let data: &RawValue = serde_json::from_str(text)?;
    serde_json::to_vec(&Structured {
        specversion: "1.0",
        id: n.webhook_id,
        source,
        kind: event_type(n.operation, n.status),
        subject: n.tguid,
        time: crate::clock::rfc3339(n.created_at),
        datacontenttype: "application/json",
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(body: &[u8]) -> Outgoing<'_> {
        Outgoing {
            webhook_id: "msg_0019a8b1c2d3e4f5a6b7c8d9e0f1",
            tguid: "tg-1",
            operation: "TREAT_EXCEPTION",
            status: "OK",
            created_at: 1_614_265_330_123,
            body,
        }
    }

    #[test]
    fn the_event_carries_every_required_attribute_in_order_and_the_body_as_data() {
        let body = br#"{"operation":"TREAT_EXCEPTION","tguid":"tg-1","status":"OK","treatment":"SAME_FINGERS"}"#;
        let out = render("urn:gbds-notifier", &notice(body)).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"{"specversion":"1.0","id":"msg_0019a8b1c2d3e4f5a6b7c8d9e0f1","source":"urn:gbds-notifier","#,
                r#""type":"gbds.treat_exception.ok.v1","subject":"tg-1","time":"2021-02-25T15:02:10.123Z","#,
                r#""datacontenttype":"application/json","#,
                r#""data":{"operation":"TREAT_EXCEPTION","tguid":"tg-1","status":"OK","treatment":"SAME_FINGERS"}}"#
            )
        );
    }

    #[test]
    fn data_keeps_the_body_bytes_even_where_a_json_value_would_reorder_them() {
        // Keys out of alphabetical order: a serde_json::Value round trip would sort them.
        let body =
            br#"{"operation":"ENROLL","tguid":"t","status":"REVERSE_LATENT_MATCH","uguid":"u"}"#;
        let out = String::from_utf8(render("s", &notice(body)).unwrap()).unwrap();
        let inner = std::str::from_utf8(body).unwrap();
        assert!(out.ends_with(&format!(r#""data":{inner}}}"#)), "{out}");
    }

    #[test]
    fn the_type_is_the_lower_case_operation_and_status_with_a_version() {
        assert_eq!(event_type("ENROLL", "ENROLLED"), "gbds.enroll.enrolled.v1");
        assert_eq!(
            event_type("SEARCH", "PERSON_NOT_FOUND"),
            "gbds.search.person_not_found.v1"
        );
    }

    #[test]
    fn a_body_that_is_not_json_is_an_error_not_a_malformed_event() {
        assert!(render("s", &notice(b"{not json")).is_err());
        assert!(render("s", &notice(&[0xff, 0xfe])).is_err());
    }
}
