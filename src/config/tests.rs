//! The configuration as an operator writes it: defaults, the file, the environment, and
//! every mistake named by its key.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::domain::UpdateLabel;
use crate::endpoint::{
    self, AmqpDestination, ClientAuth, Destination, Endpoint, EndpointAuth, HttpDestination,
};

/// The HTTP destination of a configured endpoint.
fn http(e: &Endpoint) -> &HttpDestination {
    match &e.destination {
        Destination::Http(h) => h,
        Destination::Amqp(_) => panic!("{} is the RabbitMQ sink", e.id),
    }
}

/// The RabbitMQ sink, when enabled: its endpoint and its destination.
fn sink(s: &Settings) -> Option<(&Endpoint, &AmqpDestination)> {
    s.endpoints.iter().find_map(|e| match &e.destination {
        Destination::Amqp(a) => Some((e, a)),
        Destination::Http(_) => None,
    })
}

fn from_toml(text: &str) -> Result<Settings, ConfigError> {
    from_toml_env(text, &[])
}

fn from_toml_env(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    load(Some(&path), |k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
}

#[test]
fn no_file_gives_the_embedded_defaults() {
    let s = load(None, |_| None).unwrap();
    assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(s.store.sqlite_path, PathBuf::from("gbds-notifier.db"));
    assert!(s.endpoints.is_empty());
    assert_eq!(s.delivery.retry_schedule.len(), 7);
    assert_eq!(s.delivery.retry_schedule[1], Duration::from_secs(300));
    assert_eq!(s.update_label, UpdateLabel::Enroll);
    assert_eq!(s.delivery.success, SuccessRule::Any2xx);
}

#[test]
fn the_contract_example_config_is_accepted() {
    let s = from_toml(
        r#"
listen = "127.0.0.1:9090"
[store]
sqlite_path = "x.db"
[[endpoints]]
id = "backoffice"
url = "http://127.0.0.1:9000/notify"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
[api]
tokens = [ { token = "t-admin", role = "admin" } ]
[delivery]
retry_schedule = ["250ms", "5s", "5m", "30m", "2h", "5h", "10h", "10h"]
success = "200"
[notifications]
update_operation = "UPDATE"
"#,
    )
    .unwrap();
    assert_eq!(s.listen.port(), 9090);
    assert_eq!(s.endpoints[0].id, "backoffice");
    assert_eq!(s.api.tokens[0].role, Role::Admin);
    assert_eq!(s.delivery.retry_schedule[0], Duration::from_millis(250));
    assert_eq!(s.delivery.success, SuccessRule::Only200);
    assert_eq!(s.update_label, UpdateLabel::Update);
}

#[test]
fn unknown_keys_are_errors_that_name_the_key() {
    let e = from_toml("[delivery]\nretry_schedul = []\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("retry_schedul"), "{e}");
    let e = from_toml("lisen = \"x\"\n").unwrap_err().to_string();
    assert!(e.contains("lisen"), "{e}");
}

#[test]
fn bad_values_name_their_key() {
    for (text, key) in [
        ("listen = \"nowhere\"", "listen"),
        ("[delivery]\nretry_schedule = [\"5s\", \"5x\"]", "delivery.retry_schedule[1]"),
        ("[delivery]\nsuccess = \"3xx\"", "delivery.success"),
        ("[notifications]\nupdate_operation = \"SEARCH\"", "notifications.update_operation"),
        ("[api]\ntokens = [{ token = \"t\", role = \"root\" }]", "api.tokens[0].role"),
        ("[[endpoints]]\nid = \"a\"\nurl = \"ftp://x/\"", "endpoints[0].url"),
        ("[[endpoints]]\nid = \"a\"\nurl = \"http://x/\"\n[[endpoints]]\nid = \"a\"\nurl = \"http://y/\"", "endpoints[1].id"),
        ("[[endpoints]]\nid = \"a\"\nurl = \"http://x/\"\nsecret = \"whsec_!!\"", "endpoints[0].secret"),
        ("[store]\nsynchronous = \"OFF\"", "store.synchronous"),
    ] {
        let e = from_toml(text).unwrap_err().to_string();
        assert!(e.contains(key), "{text}: {e}");
    }
}

#[test]
fn environment_variables_override_the_file() {
    let s = from_toml_env(
        "listen = \"127.0.0.1:1\"\n",
        &[
            ("GBDS_LISTEN", "127.0.0.1:2"),
            ("GBDS_DELIVERY_RETRY_SCHEDULE", "[\"1s\", \"2s\"]"),
            (
                "GBDS_ENDPOINTS",
                "[{ id = \"e\", url = \"http://127.0.0.1:9/\" }]",
            ),
            ("GBDS_API_TOKENS", "[{ token = \"t\", role = \"review\" }]"),
            ("GBDS_NOTIFICATIONS_UPDATE_OPERATION", "UPDATE"),
        ],
    )
    .unwrap();
    assert_eq!(s.listen.port(), 2);
    assert_eq!(
        s.delivery.retry_schedule,
        vec![Duration::from_secs(1), Duration::from_secs(2)]
    );
    assert_eq!(s.endpoints[0].id, "e");
    assert_eq!(s.api.tokens[0].role, Role::Review);
    assert_eq!(s.update_label, UpdateLabel::Update);
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let e = from_toml_env("", &[("GBDS_DELIVERY_RETRY_SCHEDULE", "[\"1s\"")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("GBDS_DELIVERY_RETRY_SCHEDULE"), "{e}");
}

#[test]
fn secrets_do_not_show_in_debug_output() {
    let s = from_toml("[[endpoints]]\nid = \"a\"\nurl = \"http://x/\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"").unwrap();
    let shown = format!("{s:?}");
    assert!(!shown.contains("MfKQ9r8"), "{shown}");
}

#[test]
fn an_endpoint_may_hold_several_secrets_newest_first() {
    let s = from_toml(
        "[[endpoints]]\nid = \"a\"\nurl = \"http://x/\"\nsecrets = [\"whsec_bmV3\", \"whsec_b2xk\"]",
    )
    .unwrap();
    let shown: Vec<&str> = http(&s.endpoints[0])
        .secrets
        .iter()
        .map(Secret::expose)
        .collect();
    assert_eq!(shown, ["whsec_bmV3", "whsec_b2xk"]);
    let s = from_toml("[[endpoints]]\nid = \"a\"\nurl = \"http://x/\"\nsecret = \"whsec_bmV3\"")
        .unwrap();
    assert_eq!(http(&s.endpoints[0]).secrets.len(), 1);
    let s = from_toml("[[endpoints]]\nid = \"a\"\nurl = \"http://x/\"").unwrap();
    assert!(http(&s.endpoints[0]).secrets.is_empty());
    assert!(http(&s.endpoints[0]).auth.is_none());
}

#[test]
fn endpoint_auth_is_read_and_checked_key_by_key() {
    let e = "[[endpoints]]\nid = \"a\"\nurl = \"http://x/\"\n";
    let s = from_toml(&format!(
        "{e}auth = {{ type = \"api_key\", header = \"X-API-Key\", value = \"k-123\" }}"
    ))
    .unwrap();
    match &http(&s.endpoints[0]).auth {
        Some(EndpointAuth::ApiKey { header, value }) => {
            assert_eq!(header.as_str(), "x-api-key");
            assert_eq!(value.expose(), "k-123");
        }
        other => panic!("{other:?}"),
    }
    let s = from_toml(&format!(
        "{e}auth = {{ type = \"oauth2\", token_url = \"https://idp/token\", client_id = \"c\", client_secret = \"cs-9\", scope = \"notify\" }}"
    ))
    .unwrap();
    match &http(&s.endpoints[0]).auth {
        Some(EndpointAuth::OAuth2(o)) => {
            assert_eq!(o.token_url.as_str(), "https://idp/token");
            assert_eq!(o.scope.as_deref(), Some("notify"));
            assert_eq!(o.client_auth, ClientAuth::Basic);
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{s:?}").contains("cs-9"));

    for (auth, key) in [
        ("{ type = \"basic\" }", "endpoints[0].auth.type"),
        ("{ type = \"api_key\", value = \"v\" }", "endpoints[0].auth.header"),
        ("{ type = \"api_key\", header = \"X-K\" }", "endpoints[0].auth.value"),
        ("{ type = \"api_key\", header = \"bad header\", value = \"v\" }", "endpoints[0].auth.header"),
        ("{ type = \"api_key\", header = \"X-Signature\", value = \"v\" }", "endpoints[0].auth.header"),
        ("{ type = \"api_key\", header = \"X-K\", value = \"v\\n\" }", "endpoints[0].auth.value"),
        ("{ type = \"api_key\", header = \"X-K\", value = \"v\", scope = \"s\" }", "endpoints[0].auth.scope"),
        ("{ type = \"oauth2\", client_id = \"c\", client_secret = \"s\" }", "endpoints[0].auth.token_url"),
        ("{ type = \"oauth2\", token_url = \"ftp://idp/\", client_id = \"c\", client_secret = \"s\" }", "endpoints[0].auth.token_url"),
        ("{ type = \"oauth2\", token_url = \"https://idp/\", client_secret = \"s\" }", "endpoints[0].auth.client_id"),
        ("{ type = \"oauth2\", token_url = \"https://idp/\", client_id = \"c\" }", "endpoints[0].auth.client_secret"),
        ("{ type = \"oauth2\", token_url = \"https://idp/\", client_id = \"c\", client_secret = \"s\", client_auth = \"jwt\" }", "endpoints[0].auth.client_auth"),
        ("{ type = \"oauth2\", token_url = \"https://idp/\", client_id = \"c\", client_secret = \"s\", header = \"X\" }", "endpoints[0].auth.header"),
        ("{ type = \"oauth2\", token_url = \"https://idp/\", client_id = \"c\", client_secret = \"s\", audience = \"x\" }", "audience"),
    ] {
        let e = from_toml(&format!("{e}auth = {auth}")).unwrap_err().to_string();
        assert!(e.contains(key), "{auth}: {e}");
        assert!(!e.contains("v\\n"), "{e}");
    }
}

#[test]
fn rotation_and_guard_errors_name_their_key() {
    let e = "[[endpoints]]\nid = \"a\"\nurl = \"http://x/\"\n";
    for (text, key) in [
        (format!("{e}secret = \"whsec_bmV3\"\nsecrets = [\"whsec_bmV3\"]"), "endpoints[0].secrets"),
        (format!("{e}secrets = []"), "endpoints[0].secrets"),
        (format!("{e}secrets = [\"whsec_bmV3\", \"whsec_!\"]"), "endpoints[0].secrets[1]"),
        (
            "[delivery]\nblock_private_targets = true\n[[endpoints]]\nid = \"a\"\nurl = \"http://127.0.0.1:9000/\"".to_owned(),
            "endpoints[0].url",
        ),
        (
            "[delivery]\nblock_private_targets = true\n[[endpoints]]\nid = \"a\"\nurl = \"https://example.com/\"\nauth = { type = \"oauth2\", token_url = \"http://[::1]/t\", client_id = \"c\", client_secret = \"s\" }".to_owned(),
            "endpoints[0].auth.token_url",
        ),
    ] {
        let e = from_toml(&text).unwrap_err().to_string();
        assert!(e.contains(key), "{text}: {e}");
    }
    // Names are left to the resolver at connect time; public literals pass.
    let s = from_toml("[delivery]\nblock_private_targets = true\n[[endpoints]]\nid = \"a\"\nurl = \"http://localhost:9/\"\n[[endpoints]]\nid = \"b\"\nurl = \"https://8.8.8.8/\"").unwrap();
    assert!(s.delivery.block_private_targets);
    assert!(!Settings::default().delivery.block_private_targets);
}

#[test]
fn api_tokens_may_be_given_as_their_sha256_and_mistakes_name_the_key() {
    let s = from_toml(
        "[api]\ntokens = [{ token = \"t-admin\", role = \"admin\" }, { token_sha256 = \"C140B9EE332D67F84953AAE63EDC037A10D217685D2D98161ECB34696EB4E2A5\", role = \"review\", name = \"mir\" }]",
    )
    .unwrap();
    assert_eq!(s.api.tokens[0].digest, TokenDigest::of("t-admin"));
    assert_eq!(s.api.tokens[1].name, "mir");
    for (tokens, key) in [
        ("{ role = \"admin\" }", "api.tokens[0].token"),
        ("{ token = \"\", role = \"admin\" }", "api.tokens[0].token"),
        ("{ token = \"a\", token_sha256 = \"00\", role = \"admin\" }", "api.tokens[0].token_sha256"),
        ("{ token_sha256 = \"c140b9\", role = \"admin\" }", "api.tokens[0].token_sha256"),
        ("{ token_sha256 = \"zz40b9ee332d67f84953aae63edc037a10d217685d2d98161ecb34696eb4e2a4\", role = \"admin\" }", "api.tokens[0].token_sha256"),
        (
            "{ token = \"t-admin\", role = \"admin\" }, { token_sha256 = \"c140b9ee332d67f84953aae63edc037a10d217685d2d98161ecb34696eb4e2a4\", role = \"ingest\" }",
            "api.tokens[1]",
        ),
    ] {
        let e = from_toml(&format!("[api]\ntokens = [{tokens}]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{tokens}: {e}");
        assert!(!e.contains("t-admin"), "{e}");
    }
}

#[test]
fn api_limits_have_defaults_and_can_be_set() {
    let d = Settings::default().api;
    assert_eq!(d.header_read_timeout, Duration::from_secs(10));
    assert_eq!(d.request_timeout, Duration::from_secs(30));
    assert_eq!(d.max_concurrent_requests, 256);
    assert_eq!(d.body_read_timeout, Duration::from_secs(15));
    assert_eq!(d.body_memory_budget, 64 << 20);
    let s = from_toml_env(
        "[api]\nheader_read_timeout = \"2s\"\nbody_memory_budget = \"512KiB\"\n",
        &[
            ("GBDS_API_REQUEST_TIMEOUT", "5s"),
            ("GBDS_API_MAX_CONCURRENT_REQUESTS", "8"),
            ("GBDS_API_BODY_READ_TIMEOUT", "3s"),
        ],
    )
    .unwrap();
    assert_eq!(s.api.header_read_timeout, Duration::from_secs(2));
    assert_eq!(s.api.request_timeout, Duration::from_secs(5));
    assert_eq!(s.api.max_concurrent_requests, 8);
    assert_eq!(s.api.body_read_timeout, Duration::from_secs(3));
    assert_eq!(s.api.body_memory_budget, 512 << 10);
    let s = from_toml_env("", &[("GBDS_API_BODY_MEMORY_BUDGET", "1GiB")]).unwrap();
    assert_eq!(s.api.body_memory_budget, 1 << 30);
    let s = from_toml("[api]\nbody_memory_budget = 1048576").unwrap();
    assert_eq!(s.api.body_memory_budget, 1 << 20);
    for (text, key) in [
        (
            "[api]\nheader_read_timeout = \"0s\"",
            "api.header_read_timeout",
        ),
        ("[api]\nrequest_timeout = \"soon\"", "api.request_timeout"),
        (
            "[api]\nmax_concurrent_requests = 0",
            "api.max_concurrent_requests",
        ),
        ("[api]\nbody_read_timeout = \"0s\"", "api.body_read_timeout"),
        ("[api]\nbody_read_timeout = \"15\"", "api.body_read_timeout"),
        (
            "[api]\nbody_memory_budget = \"0\"",
            "api.body_memory_budget",
        ),
        (
            "[api]\nbody_memory_budget = \"64MB\"",
            "api.body_memory_budget",
        ),
        (
            "[api]\nbody_memory_budget = \"2TiB\"",
            "api.body_memory_budget",
        ),
        (
            "[api]\nbody_memory_budget = \"4096GiB\"",
            "api.body_memory_budget",
        ),
        ("[api]\nbody_memory_budget = 0", "api.body_memory_budget"),
    ] {
        let e = from_toml(text).unwrap_err().to_string();
        assert!(e.contains(key), "{text}: {e}");
    }
}

#[test]
fn durations_parse_with_units() {
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
    assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
    assert_eq!(parse_duration("5"), None);
    assert_eq!(parse_duration("s"), None);
    assert_eq!(parse_duration("1.5s"), None);
}

#[test]
fn sizes_parse_in_bytes_or_binary_units() {
    assert_eq!(parse_size("65536"), Some(65536));
    assert_eq!(parse_size("512KiB"), Some(512 * 1024));
    assert_eq!(parse_size("64MiB"), Some(64 * 1024 * 1024));
    assert_eq!(parse_size("1GiB"), Some(1 << 30));
    assert_eq!(parse_size("10B"), Some(10));
    for bad in [
        "",
        "MiB",
        "64MB",
        "64 mib",
        "1.5MiB",
        "-1",
        "99999999999999999999GiB",
    ] {
        assert_eq!(parse_size(bad), None, "{bad}");
    }
}

#[test]
fn subscriptions_and_format_are_read_per_endpoint_and_bad_ones_name_their_key() {
    let e = "[[endpoints]]\nid = \"a\"\nurl = \"http://x/\"\n";
    let s = from_toml(&format!(
        "{e}subscriptions = [\"ENROLL.*\", \"*.FAILED\", \"TREAT_EXCEPTION.*\", \"SEARCH.MATCH\"]\nformat = \"cloudevents\""
    ))
    .unwrap();
    let subs = &s.endpoints[0].subscriptions;
    assert!(subs.matches("SEARCH", "FAILED"));
    assert!(!subs.matches("SEARCH", "NOT_MATCH"));
    assert_eq!(http(&s.endpoints[0]).format, endpoint::Format::CloudEvents);
    let s = from_toml(e).unwrap();
    assert_eq!(
        s.endpoints[0].subscriptions,
        crate::domain::Subscriptions::All
    );
    assert_eq!(http(&s.endpoints[0]).format, endpoint::Format::Gbds);
    assert_eq!(s.delivery.cloudevents_source, "urn:gbds-notifier");
    for (text, key, says) in [
        (
            format!("{e}subscriptions = [\"ENROLL.*\", \"ENROL.*\"]"),
            "endpoints[0].subscriptions[1]",
            "ENROL",
        ),
        (
            format!("{e}subscriptions = [\"SEARCH.ENROLLED\"]"),
            "endpoints[0].subscriptions[0]",
            "never matches",
        ),
        (
            format!("{e}subscriptions = []"),
            "endpoints[0].subscriptions",
            "at least one",
        ),
        (
            format!("{e}format = \"xml\""),
            "endpoints[0].format",
            "cloudevents",
        ),
        (
            "[notifications]\ncloudevents_source = \"\"".to_owned(),
            "notifications.cloudevents_source",
            "URI",
        ),
    ] {
        let got = from_toml(&text).unwrap_err().to_string();
        assert!(got.contains(key) && got.contains(says), "{text}: {got}");
    }
}

#[test]
fn the_amqp_sink_is_off_unless_enabled_by_config_or_by_either_variable() {
    let s = from_toml("").unwrap();
    assert!(sink(&s).is_none());
    let s = from_toml("[amqp]\nenabled = true").unwrap();
    let (e, a) = sink(&s).unwrap();
    assert_eq!(e.id, "rabbitmq");
    assert_eq!(a.exchange, "gbds.notifications");
    assert_eq!(a.url.expose(), "amqp://guest:guest@127.0.0.1:5672/%2f");
    assert_eq!(e.subscriptions, crate::domain::Subscriptions::All);
    let s = from_toml_env("", &[("RABBITMQ_TRANSACTION_EVENTS_ENABLED", "true")]).unwrap();
    assert!(sink(&s).is_some());
    let s = from_toml_env(
        "",
        &[
            ("RABBITMQ_TRANSACTION_EVENTS_ENABLED", "true"),
            ("GBDS_AMQP_ENABLED", "false"),
        ],
    )
    .unwrap();
    assert!(sink(&s).is_none(), "GBDS_AMQP_ENABLED wins");
    let s = from_toml_env(
        "",
        &[
            ("GBDS_AMQP_ENABLED", "true"),
            ("GBDS_AMQP_URL", "amqps://u:p@broker:5671/prod"),
            ("GBDS_AMQP_EXCHANGE", "gbds.events"),
            ("GBDS_AMQP_ID", "broker"),
            ("GBDS_AMQP_SUBSCRIPTIONS", "[\"ENROLL.*\"]"),
        ],
    )
    .unwrap();
    let (e, a) = sink(&s).unwrap();
    assert_eq!(
        (e.id.as_str(), a.exchange.as_str(), a.url.expose()),
        ("broker", "gbds.events", "amqps://u:p@broker:5671/prod")
    );
    assert!(!e.subscriptions.matches("SEARCH", "MATCH"));
}

#[test]
fn amqp_mistakes_name_their_key_and_never_show_the_password() {
    for (text, key) in [
        ("[amqp]\nurl = \"http://u:hunter2@x/\"", "amqp.url"),
        ("[amqp]\nexchange = \"has space\"", "amqp.exchange"),
        ("[amqp]\nid = \"no/slash\"", "amqp.id"),
        (
            "[amqp]\nsubscriptions = [\"*.NOPE\"]",
            "amqp.subscriptions[0]",
        ),
        ("[amqp]\nenable = true", "enable"),
        (
            "[amqp]\nid = \"a\"\n[[endpoints]]\nid = \"a\"\nurl = \"http://x/\"",
            "amqp.id",
        ),
    ] {
        let e = from_toml(text).unwrap_err().to_string();
        assert!(e.contains(key), "{text}: {e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
    let s = from_toml("[amqp]\nenabled = true\nurl = \"amqp://u:hunter2@x/\"").unwrap();
    assert!(!format!("{s:?}").contains("hunter2"));
}

#[test]
fn the_defaults_are_what_a_file_that_spells_them_out_gives() {
    let spelled_out = from_toml(
        r#"
listen = "127.0.0.1:8080"
[store]
sqlite_path = "gbds-notifier.db"
synchronous = "FULL"
integrity_schedule = "0 47 3 * * *"
[api]
header_read_timeout = "10s"
request_timeout = "30s"
max_concurrent_requests = 256
body_read_timeout = "15s"
body_memory_budget = "64MiB"
[delivery]
retry_schedule = ["5s", "5m", "30m", "2h", "5h", "10h", "10h"]
success = "2xx"
connect_timeout = "5s"
request_timeout = "15s"
lease = "60s"
jitter = 0.2
endpoint_concurrency = 64
max_in_flight = 512
block_private_targets = false
disable_after = "5d"
[notifications]
update_operation = "ENROLL"
cloudevents_source = "urn:gbds-notifier"
[retention]
age = "30d"
schedule = "0 17 * * * *"
[amqp]
enabled = false
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
exchange = "gbds.notifications"
id = "rabbitmq"
[log]
format = "text"
"#,
    )
    .unwrap();
    assert_eq!(
        format!("{:?}", Settings::default()),
        format!("{spelled_out:?}")
    );
    let with_sink = from_toml("[amqp]\nenabled = true").unwrap();
    let spelled_out = from_toml("[amqp]\nenabled = true\nurl = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\nexchange = \"gbds.notifications\"\nid = \"rabbitmq\"").unwrap();
    assert_eq!(with_sink.endpoints, spelled_out.endpoints);
    let oauth = |extra: &str| {
        from_toml(&format!("[[endpoints]]\nid = \"a\"\nurl = \"https://x/\"\nauth = {{ type = \"oauth2\", token_url = \"https://idp/t\", client_id = \"c\", client_secret = \"s\"{extra} }}")).unwrap().endpoints
    };
    assert_eq!(oauth(""), oauth(", client_auth = \"basic\""));
}

#[test]
fn postgres_url_selects_postgresql_and_never_shows_its_password() {
    let s = from_toml("[store]\npostgres_url = \"postgres://gbds:hunter2@127.0.0.1:5432/gbds\"")
        .unwrap();
    let url = s.store.postgres_url.as_ref().expect("postgres_url is read");
    assert_eq!(url.expose(), "postgres://gbds:hunter2@127.0.0.1:5432/gbds");
    assert!(!format!("{s:?}").contains("hunter2"));
    let s = from_toml_env("", &[("GBDS_STORE_POSTGRES_URL", "postgres://x@h/db")]).unwrap();
    assert!(s.store.postgres_url.is_some());
    assert!(load(None, |_| None).unwrap().store.postgres_url.is_none());
}

#[test]
fn postgres_url_and_sqlite_path_together_are_refused_naming_both() {
    let both_in_file = "[store]\npostgres_url = \"postgres://x@h/db\"\nsqlite_path = \"n.db\"";
    let one_each = from_toml_env(
        "[store]\nsqlite_path = \"n.db\"",
        &[("GBDS_STORE_POSTGRES_URL", "postgres://x@h/db")],
    );
    for refused in [from_toml(both_in_file), one_each] {
        let e = refused.unwrap_err().to_string();
        assert!(
            e.contains("store.postgres_url") && e.contains("store.sqlite_path"),
            "{e}"
        );
    }
    let e = from_toml("[store]\npostgres_url = \"not a url\"")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("store.postgres_url: not a PostgreSQL URL"),
        "{e}"
    );
}

#[test]
fn log_format_is_text_unless_the_file_or_gbds_log_format_says_json() {
    assert_eq!(from_toml("").unwrap().log_format, LogFormat::Text);
    assert_eq!(
        from_toml("[log]\nformat = \"json\"").unwrap().log_format,
        LogFormat::Json
    );
    let from_env = from_toml_env("[log]\nformat = \"text\"", &[("GBDS_LOG_FORMAT", "json")]);
    assert_eq!(from_env.unwrap().log_format, LogFormat::Json);
    for (text, env) in [
        ("[log]\nformat = \"JSON\"", None),
        ("", Some("logfmt")),
        ("[log]\nformats = \"json\"", None),
    ] {
        let env: Vec<(&str, &str)> = env.map(|v| ("GBDS_LOG_FORMAT", v)).into_iter().collect();
        let e = from_toml_env(text, &env).unwrap_err().to_string();
        assert!(e.contains("format"), "{text} {env:?}: {e}");
    }
    let e = from_toml_env("", &[("GBDS_LOG_FORMAT", "logfmt")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "config: log.format: \"logfmt\" is not \"text\" or \"json\""
    );
}
