//! The consumer's policies without a broker: its settings, the queue's arguments, and what a
//! store failure, a refusal and a stop do to a message in hand.

use std::cell::Cell;
use std::time::Duration;

use lapin::types::AMQPValue;
use tokio::sync::watch;

use super::broker::queue_arguments;
use super::consumer::{apply_until_settled, Backoff, Settled};
use crate::config::{self, defaults};
use crate::domain::Refusal;
use crate::store::WriteError;

fn settings(toml: &str, env: &[(&str, &str)]) -> Result<config::Settings, config::ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    config::load(Some(&path), |k| {
        env.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.to_string())
    })
}

#[test]
fn the_consumer_runs_only_when_a_queue_is_named_and_shares_the_sinks_url() {
    assert!(settings("", &[]).unwrap().amqp_inbound.is_none());
    assert!(settings("[amqp]\ninbound_queue = \"\"", &[])
        .unwrap()
        .amqp_inbound
        .is_none());
    let s = settings("[amqp]\ninbound_queue = \"gbds.outcomes\"", &[]).unwrap();
    assert!(
        s.endpoints.iter().all(|e| e.id != defaults::AMQP_ID),
        "the sink stays off"
    );
    let inbound = s.amqp_inbound.unwrap();
    assert_eq!(inbound.queue, "gbds.outcomes");
    assert_eq!(inbound.prefetch, defaults::INBOUND_PREFETCH);
    assert_eq!(
        inbound.url.expose(),
        defaults::AMQP_URL,
        "the local broker by default"
    );
    let s = settings(
        "[amqp]\nurl = \"amqp://u:p@broker:5672/v\"\ninbound_queue = \"a\"\ninbound_prefetch = 7",
        &[
            ("GBDS_AMQP_INBOUND_QUEUE", "from-env"),
            ("GBDS_AMQP_INBOUND_PREFETCH", "9"),
        ],
    )
    .unwrap();
    let inbound = s.amqp_inbound.unwrap();
    assert_eq!(
        (
            inbound.queue.as_str(),
            inbound.prefetch,
            inbound.url.expose()
        ),
        ("from-env", 9, "amqp://u:p@broker:5672/v")
    );
    assert!(
        !format!("{inbound:?}").contains("u:p@"),
        "the password never shows"
    );
}

#[test]
fn inbound_mistakes_name_their_key() {
    for (toml, key) in [
        (
            "[amqp]\ninbound_queue = \"has space\"",
            "amqp.inbound_queue",
        ),
        ("[amqp]\ninbound_queue = \"amq.mine\"", "amqp.inbound_queue"),
        ("[amqp]\ninbound_prefetch = 0", "amqp.inbound_prefetch"),
        ("[amqp]\ninbound_prefetch = 70000", "inbound_prefetch"),
        (
            "[amqp]\ninbound_queue = \"q\"\nurl = \"http://x/\"",
            "amqp.url",
        ),
        ("[amqp]\ninbound_queues = \"q\"", "inbound_queues"),
    ] {
        let e = settings(toml, &[]).unwrap_err().to_string();
        assert!(e.contains(key), "{toml}: {e}");
    }
    let long = "q".repeat(251);
    let e = settings(&format!("[amqp]\ninbound_queue = \"{long}\""), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("amqp.inbound_queue"), "{e}");
}

#[test]
fn the_queue_has_one_active_consumer_and_dead_letters_to_its_dead_exchange() {
    let arguments = queue_arguments("gbds.outcomes");
    let inner = arguments.inner();
    assert_eq!(
        inner.get("x-single-active-consumer"),
        Some(&AMQPValue::Boolean(true))
    );
    assert_eq!(
        inner.get("x-dead-letter-exchange"),
        Some(&AMQPValue::LongString("gbds.outcomes.dead".into()))
    );
    assert_eq!(inner.len(), 2);
}

#[test]
fn the_backoff_doubles_to_its_ceiling_and_starts_over_when_reset() {
    let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
    let delays: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
    assert_eq!(delays, [100, 200, 400, 500, 500]);
    b.reset();
    assert_eq!(b.next_delay(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_store_failure_is_retried_until_the_write_commits_and_never_taken_for_a_refusal() {
    let (_cancel, cancelled) = watch::channel(false);
    let calls = Cell::new(0);
    let mut told = Vec::new();
    let settled = apply_until_settled(
        || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                match n {
                    1 => Err(WriteError::Unavailable("disk I/O error".into())),
                    2 | 3 => Err(WriteError::Internal("disk I/O error".into())),
                    _ => Ok(false),
                }
            }
        },
        cancelled,
        |why, delay| told.push((why.to_owned(), delay)),
    )
    .await;
    assert!(matches!(settled, Settled::Applied { duplicate: false }));
    assert_eq!(calls.get(), 4);
    let delays: Vec<u128> = told.iter().map(|(_, d)| d.as_millis()).collect();
    assert_eq!(delays, [100, 200, 400], "backing off");
    assert!(told.iter().all(|(why, _)| why == "disk I/O error"));
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_settled_at_once_with_its_rest_code() {
    let (_cancel, cancelled) = watch::channel(false);
    let cases = [
        (WriteError::NotFound("t".into()), "not_found"),
        (
            WriteError::Refused(Refusal::NotInState {
                op: crate::domain::Operation::Search,
                state: crate::domain::State::Match,
                input: "MATCH".into(),
            }),
            "invalid_transition",
        ),
        (WriteError::EventIdReused("e".into()), "event_id_reused"),
    ];
    for (error, code) in cases {
        let error = std::cell::RefCell::new(Some(error));
        let settled = apply_until_settled(
            || {
                let e = error.borrow_mut().take().expect("asked once");
                async move { Err(e) }
            },
            cancelled.clone(),
            |_, _| panic!("a refusal is not retried"),
        )
        .await;
        match settled {
            Settled::Refused(e) => assert_eq!(e.code, code),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_a_store_outage_leaves_the_message_unsettled() {
    let (cancel, cancelled) = watch::channel(false);
    let settled = apply_until_settled(
        || async { Err::<bool, _>(WriteError::Internal("database is locked".into())) },
        cancelled,
        |_, _| {
            let _ = cancel.send(true);
        },
    )
    .await;
    assert!(matches!(settled, Settled::Abandoned));
}
