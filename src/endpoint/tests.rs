//! The endpoint checks, each against what it must accept and refuse.

use super::*;

#[test]
fn secrets_are_checked() {
    assert!(check_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
    assert!(check_secret("plain-secret").is_ok());
    assert!(check_secret("").is_err());
    assert!(check_secret("whsec_").is_err());
    assert!(check_secret("whsec_***").is_err());
}

#[test]
fn ids_are_short_plain_names() {
    assert!(check_id("back-office_1.a").is_ok());
    assert!(check_id("").is_err());
    assert!(check_id(&"a".repeat(65)).is_err());
    assert!(check_id("no/slash").unwrap_err().contains("\"no/slash\""));
}

#[test]
fn urls_must_be_http_or_https_with_a_host() {
    assert_eq!(
        check_url("http://127.0.0.1:9/notify").unwrap().as_str(),
        "http://127.0.0.1:9/notify"
    );
    assert!(check_url("ftp://x/")
        .unwrap_err()
        .starts_with("url \"ftp://x/\""));
    assert!(parse_http_url("nowhere")
        .unwrap_err()
        .starts_with("\"nowhere\" is not a URL"));
}

#[test]
fn a_broker_url_is_shown_without_its_password() {
    let sink = Endpoint {
        destination: Destination::Amqp(AmqpDestination {
            url: Secret::new("amqp://u:hunter2@broker:5672/%2f"),
            exchange: "gbds.notifications".into(),
        }),
        ..Endpoint::http("rabbitmq", "http://x/".parse().unwrap())
    };
    assert_eq!(sink.shown_url(), "amqp://u:***@broker:5672/%2f");
    assert!(!format!("{sink:?}").contains("hunter2"));
    assert_eq!(sink.format(), Format::Gbds);
}
