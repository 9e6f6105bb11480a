//! Whole batches through the writer. It runs them without savepoints: a command failing
//! after it wrote must still leave the others' writes, and none of its own. Heads are handed
//! over only once committed, within the endpoints' slots; endpoint changes reach the
//! registry with their commit.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::queue::HandoffSender;
use super::*;
use crate::domain::{Input, Operation, Outcome as Result_, State, Tguid, UpdateLabel};
use crate::endpoint::{self, Endpoint, Source};
use crate::store::{
    endpoints, schema, ClaimedDelivery, DecisionNote, DeliveryLimits, InputRequest,
};

fn writer() -> Writer {
    writer_with(DeliveryLimits::default()).0
}

/// A writer whose handoff is taken (as the dispatcher does), with these slots.
fn handing_over(limits: DeliveryLimits) -> (Writer, mpsc::UnboundedReceiver<ClaimedDelivery>) {
    let (w, rx, taken) = writer_with(limits);
    taken.store(true, std::sync::atomic::Ordering::SeqCst);
    (w, rx)
}

fn writer_with(
    limits: DeliveryLimits,
) -> (
    Writer,
    mpsc::UnboundedReceiver<ClaimedDelivery>,
    Arc<std::sync::atomic::AtomicBool>,
) {
    writer_on(Connection::open_in_memory().unwrap(), limits, None)
}

/// A writer on `conn`, whose files (when it has some) are checked before every COMMIT.
fn writer_on(
    mut conn: Connection,
    limits: DeliveryLimits,
    files: Option<crate::store::file::OpenFiles>,
) -> (
    Writer,
    mpsc::UnboundedReceiver<ClaimedDelivery>,
    Arc<std::sync::atomic::AtomicBool>,
) {
    let (handed, rx) = mpsc::unbounded_channel();
    let taken: Arc<std::sync::atomic::AtomicBool> = Default::default();
    schema::migrate(&mut conn).unwrap();
    let configured = vec![Endpoint::http("e", "http://127.0.0.1:9/".parse().unwrap())];
    let registry = Publisher::new(endpoints::sync(&mut conn, &configured).unwrap());
    let handoff = HandoffSender {
        deliveries: handed,
        taken: taken.clone(),
    };
    let w = Writer {
        conn,
        options: StoreOptions {
            synchronous_full: false,
            update_label: UpdateLabel::Enroll,
            endpoints: Vec::new(),
            delivery: limits,
        },
        endpoints: BatchEndpoints::new(registry, configured),
        queue: DeliveryQueue::new(limits, handoff),
        synced_full: false,
        guard: Guard {
            lock: None,
            files,
            health: Health::new(),
            damaged: Default::default(),
        },
        carried: Vec::new(),
    };
    (w, rx, taken)
}

fn claim(limit: usize) -> (Command, oneshot::Receiver<Claimed>) {
    let (reply, rx) = oneshot::channel();
    (Command::Claim { limit, reply }, rx)
}

fn delivered(id: i64) -> Command {
    Command::Complete {
        completions: vec![Completion::Delivered {
            id,
            http_status: 200,
        }],
    }
}

fn register(tguid: &str) -> (Command, oneshot::Receiver<Result<Registered, WriteError>>) {
    let (reply, rx) = oneshot::channel();
    let command = Command::Register {
        tguid: Tguid::parse(tguid).unwrap(),
        operation: Operation::Enroll,
        actor: "test".into(),
        reply,
    };
    (command, rx)
}

fn enrolled(tguid: &str) -> (Command, oneshot::Receiver<Result<Applied, WriteError>>) {
    let (reply, rx) = oneshot::channel();
    let request = InputRequest {
        tguid: Tguid::parse(tguid).unwrap(),
        input: Input::Outcome(Result_::Enrolled),
        event_id: None,
        actor: "test".into(),
    };
    (
        Command::Apply {
            request,
            decision: DecisionNote::default(),
            reply,
        },
        rx,
    )
}

/// Makes every notification insert of `tguid` fail: after the state update and log row.
fn fail_notifications_of(w: &Writer, tguid: &str) {
    w.conn
        .execute_batch(&format!(
            "CREATE TRIGGER boom AFTER INSERT ON notifications WHEN NEW.tguid = '{tguid}'
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
        ))
        .unwrap();
}

fn count(w: &Writer, sql: &str) -> i64 {
    w.conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn a_command_failing_after_writing_is_undone_alone_and_the_batch_still_commits() {
    let mut w = writer();
    let mut setup = vec![register("a").0, register("boom").0, register("c").0];
    w.run_batch(&mut setup);
    fail_notifications_of(&w, "boom");
    let (a, a_rx) = enrolled("a");
    let (boom, boom_rx) = enrolled("boom");
    let (c, c_rx) = enrolled("c");
    let (refused, refused_rx) = enrolled("missing");
    let mut batch = vec![a, boom, refused, c];
    assert!(w.run_batch(&mut batch), "deliveries became claimable");

    assert!(a_rx.blocking_recv().unwrap().is_ok());
    assert!(c_rx.blocking_recv().unwrap().is_ok());
    let err = boom_rx.blocking_recv().unwrap().unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert!(matches!(
        refused_rx.blocking_recv().unwrap(),
        Err(WriteError::NotFound(_))
    ));
    assert_eq!(
        count(
            &w,
            "SELECT count(*) FROM transactions WHERE state = 'ENROLLED'"
        ),
        2
    );
    assert_eq!(
        count(&w, "SELECT count(*) FROM transactions WHERE tguid = 'boom' AND state = 'PROCESSING' AND next_seq = 1"),
        1
    );
    assert_eq!(
        count(&w, "SELECT count(*) FROM transitions WHERE tguid = 'boom'"),
        1
    );
    assert_eq!(count(&w, "SELECT count(*) FROM notifications"), 2);
    assert_eq!(
        count(&w, "SELECT count(*) FROM deliveries WHERE ready = 1"),
        2
    );
}

fn retried(id: i64) -> Command {
    Command::Complete {
        completions: vec![Completion::Retry {
            id,
            http_status: Some(503),
            error: "unavailable".into(),
            next_attempt_at: now_ms() + 60_000,
        }],
    }
}

fn failing_since(w: &Writer) -> Option<i64> {
    w.conn
        .query_row(
            "SELECT failing_since FROM endpoints WHERE id = 'e'",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn an_endpoints_health_follows_its_last_result_in_a_batch() {
    let mut w = writer();
    let mut setup = vec![register("a").0, register("b").0];
    w.run_batch(&mut setup);
    w.run_batch(&mut vec![enrolled("a").0, enrolled("b").0]);
    // A success, then a failure: failing since this batch (the first noted is not enough).
    w.run_batch(&mut vec![delivered(1), retried(2)]);
    assert!(failing_since(&w).is_some());
    // Failures then a success in one batch: healthy again.
    w.run_batch(&mut vec![retried(2), retried(2), delivered(2)]);
    assert_eq!(failing_since(&w), None);
}

/// Hands `joining` to the pass the first time it asks for more, then nothing; counts asks.
fn joins(
    joining: Vec<Command>,
) -> (
    impl FnMut(&mut Vec<Command>),
    std::rc::Rc<std::cell::Cell<usize>>,
) {
    let asked = std::rc::Rc::new(std::cell::Cell::new(0));
    let counter = asked.clone();
    let mut joining = Some(joining);
    let more = move |batch: &mut Vec<Command>| {
        counter.set(counter.get() + 1);
        batch.extend(joining.take().unwrap_or_default());
    };
    (more, asked)
}

#[test]
fn commands_queued_during_a_pass_join_its_commit_and_get_their_own_answers() {
    let mut w = writer();
    let (a, a_rx) = register("a");
    let (a_done, a_done_rx) = enrolled("a");
    let (b, b_rx) = register("b");
    let (b_missing, b_missing_rx) = enrolled("never-registered");
    let (mut more, asked) = joins(vec![a_done, b, b_missing]);
    w.run_batch_joining(&mut vec![a], &mut more);
    assert_eq!(
        asked.get(),
        2,
        "asked again after the joined ones, until none came"
    );
    assert!(a_rx.blocking_recv().unwrap().unwrap().created);
    let applied = a_done_rx.blocking_recv().unwrap().unwrap();
    assert_eq!(applied.summary.state, State::Enrolled);
    assert!(b_rx.blocking_recv().unwrap().unwrap().created);
    assert!(matches!(
        b_missing_rx.blocking_recv().unwrap(),
        Err(WriteError::NotFound(_))
    ));
    assert_eq!(
        count(
            &w,
            "SELECT count(*) FROM transactions WHERE state = 'ENROLLED'"
        ),
        1
    );
}

#[test]
fn a_joined_command_failing_after_writing_reruns_the_whole_batch_command_by_command() {
    let mut w = writer();
    w.run_batch(&mut vec![register("a").0, register("boom").0]);
    fail_notifications_of(&w, "boom");
    let (a, a_rx) = enrolled("a");
    let (boom, boom_rx) = enrolled("boom");
    let (c, c_rx) = register("c");
    let (mut more, _) = joins(vec![boom, c]);
    w.run_batch_joining(&mut vec![a], &mut more);
    assert!(a_rx.blocking_recv().unwrap().is_ok());
    let err = boom_rx.blocking_recv().unwrap().unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert!(c_rx.blocking_recv().unwrap().unwrap().created);
    assert_eq!(
        count(
            &w,
            "SELECT count(*) FROM transactions WHERE state = 'ENROLLED'"
        ),
        1
    );
    assert_eq!(
        count(
            &w,
            "SELECT count(*) FROM transactions WHERE tguid = 'boom' AND state = 'PROCESSING'"
        ),
        1
    );
    assert_eq!(count(&w, "SELECT count(*) FROM transactions"), 3);
}

#[test]
fn a_batch_committed_without_fsync_takes_no_call_in() {
    let (mut w, mut handed) = handing_over(DeliveryLimits::default());
    w.options.synchronous_full = true;
    w.run_batch(&mut vec![register("a").0]);
    w.run_batch(&mut vec![enrolled("a").0]);
    let d = handed.try_recv().unwrap();
    let (mut more, asked) = joins(vec![register("b").0]);
    w.run_batch_joining(&mut vec![delivered(d.id)], &mut more);
    assert_eq!(asked.get(), 0, "results only: NORMAL, so nothing may join");
    assert!(!w.synced_full);
    // A batch with a call is FULL, and results may join it.
    let (mut more, asked) = joins(Vec::new());
    w.run_batch_joining(&mut vec![register("c").0], &mut more);
    assert_eq!(asked.get(), 1);
    assert!(w.synced_full);
}

#[test]
fn refusals_in_an_optimistic_batch_change_nothing_and_need_no_replay() {
    let mut w = writer();
    let mut setup = vec![register("a").0];
    w.run_batch(&mut setup);
    let (again, again_rx) = enrolled("a");
    let (first, first_rx) = enrolled("a");
    // The second ENROLLED for "a" is refused by the state machine after the first one.
    let mut batch = vec![first, again];
    w.run_batch(&mut batch);
    assert!(first_rx.blocking_recv().unwrap().is_ok());
    assert!(matches!(
        again_rx.blocking_recv().unwrap(),
        Err(WriteError::Refused(_))
    ));
    assert_eq!(count(&w, "SELECT count(*) FROM notifications"), 1);
    assert_eq!(count(&w, "SELECT count(*) FROM transitions"), 2);
}

#[test]
fn a_committed_head_is_handed_over_with_its_exact_body_and_leased() {
    let (mut w, mut handed) = handing_over(DeliveryLimits::default());
    w.run_batch(&mut vec![register("tg-h").0]);
    let (apply, applied) = enrolled("tg-h");
    let woke = w.run_batch(&mut vec![apply]);
    assert!(applied.blocking_recv().unwrap().is_ok());
    assert!(!woke, "nothing was left for the dispatcher to claim");
    let d = handed.try_recv().expect("handed over at the commit");
    assert_eq!(
        std::str::from_utf8(&d.body).unwrap(),
        r#"{"operation":"ENROLL","tguid":"tg-h","status":"ENROLLED"}"#
    );
    assert_eq!((d.endpoint_id.as_str(), d.seq, d.attempts), ("e", 1, 0));
    // Leased: a claim does not see it again.
    let (c, claimed) = claim(10);
    w.run_batch(&mut vec![c]);
    assert!(claimed.blocking_recv().unwrap().deliveries.is_empty());
    assert!(handed.try_recv().is_err(), "handed over once");
}

#[test]
fn the_handoff_keeps_to_the_endpoint_slots_and_leaves_the_rest_to_claim() {
    let limits = DeliveryLimits {
        endpoint_concurrency: 1,
        ..DeliveryLimits::default()
    };
    let (mut w, mut handed) = handing_over(limits);
    w.run_batch(&mut vec![register("tg-1").0, register("tg-2").0]);
    let woke = w.run_batch(&mut vec![enrolled("tg-1").0, enrolled("tg-2").0]);
    assert!(
        woke,
        "one was left in the database: the dispatcher is woken"
    );
    let first = handed.try_recv().unwrap();
    assert!(
        handed.try_recv().is_err(),
        "one slot, one delivery in flight"
    );
    let (c, claimed) = claim(10);
    w.run_batch(&mut vec![c]);
    assert!(
        claimed.blocking_recv().unwrap().deliveries.is_empty(),
        "no slot for a claim either"
    );
    // Its result frees the slot, which wakes the dispatcher to claim the other.
    assert!(w.run_batch(&mut vec![delivered(first.id)]));
    let (c, claimed) = claim(10);
    w.run_batch(&mut vec![c]);
    let second = claimed.blocking_recv().unwrap().deliveries;
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].tguid, first.tguid);
}

#[test]
fn a_command_that_fails_after_queueing_a_head_hands_nothing_over() {
    let (mut w, mut handed) = handing_over(DeliveryLimits::default());
    w.run_batch(&mut vec![register("tg-ok").0, register("tg-boom").0]);
    // The treatment's second notification (ENROLLED, seq 3) of tg-boom fails, after its
    // first one (OK, a queue head once EXCEPTION is delivered) was inserted.
    w.conn
        .execute_batch(
            "CREATE TRIGGER boom AFTER INSERT ON notifications WHEN NEW.tguid = 'tg-boom' AND NEW.seq = 3
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
    let exception = |tguid: &str| {
        let (reply, rx) = oneshot::channel();
        let request = InputRequest {
            tguid: Tguid::parse(tguid).unwrap(),
            input: Input::Exception,
            event_id: None,
            actor: "test".into(),
        };
        (
            Command::Apply {
                request,
                decision: DecisionNote::default(),
                reply,
            },
            rx,
        )
    };
    let treat = |tguid: &str| {
        let (reply, rx) = oneshot::channel();
        let request = InputRequest {
            tguid: Tguid::parse(tguid).unwrap(),
            input: Input::Treat(crate::domain::Treatment::DifferentFingers),
            event_id: None,
            actor: "test".into(),
        };
        (
            Command::Apply {
                request,
                decision: DecisionNote::default(),
                reply,
            },
            rx,
        )
    };
    w.run_batch(&mut vec![exception("tg-ok").0, exception("tg-boom").0]);
    let firsts: Vec<_> = std::iter::from_fn(|| handed.try_recv().ok()).collect();
    assert_eq!(firsts.len(), 2, "both EXCEPTION notifications went out");
    for d in &firsts {
        w.run_batch(&mut vec![delivered(d.id)]);
    }
    let (ok, ok_rx) = treat("tg-ok");
    let (boom, boom_rx) = treat("tg-boom");
    w.run_batch(&mut vec![ok, boom]);
    assert!(ok_rx.blocking_recv().unwrap().is_ok());
    assert!(boom_rx.blocking_recv().unwrap().is_err());
    let out: Vec<_> = std::iter::from_fn(|| handed.try_recv().ok()).collect();
    assert_eq!(
        out.iter().map(|d| d.tguid.as_str()).collect::<Vec<_>>(),
        vec!["tg-ok"],
        "only the committed command's head went out"
    );
}

fn create_endpoint(id: &str) -> (Command, oneshot::Receiver<Result<AdminDone, WriteError>>) {
    let (reply, rx) = oneshot::channel();
    let endpoint = Endpoint {
        source: Source::Api,
        ..Endpoint::http(id, "http://127.0.0.1:9/created".parse().unwrap())
    };
    let op = AdminOp::CreateEndpoint(Box::new(endpoint));
    (Command::Admin { op, reply }, rx)
}

#[test]
fn an_endpoint_created_in_a_batch_fans_out_at_once_and_is_published_with_the_commit() {
    let (mut w, mut handed) = handing_over(DeliveryLimits::default());
    let registry = w.endpoints.registry();
    w.run_batch(&mut vec![register("tg-a").0, register("tg-b").0]);
    let (create, created) = create_endpoint("new");
    let (mut more, asked) = joins(vec![enrolled("tg-b").0]);
    let mut before_commit = None;
    w.run_batch_joining(&mut vec![create, enrolled("tg-a").0], &mut |batch| {
        before_commit.get_or_insert(registry.get("new").is_some());
        more(batch)
    });
    assert!(asked.get() > 0);
    assert_eq!(
        before_commit,
        Some(false),
        "not published before the commit"
    );
    assert!(created.blocking_recv().unwrap().is_ok());
    assert!(registry.get("new").is_some(), "published with the commit");
    let mut out: Vec<(String, String)> = std::iter::from_fn(|| handed.try_recv().ok())
        .map(|d| (d.tguid, d.endpoint_id))
        .collect();
    out.sort();
    let pair = |t: &str, e: &str| (t.to_owned(), e.to_owned());
    assert_eq!(
        out,
        [
            pair("tg-a", "e"),
            pair("tg-a", "new"),
            pair("tg-b", "e"),
            pair("tg-b", "new")
        ],
        "commands after the creation, joined ones too, fan out to it"
    );
}

#[test]
fn an_endpoint_change_that_is_undone_never_reaches_the_registry() {
    let (mut w, mut handed) = handing_over(DeliveryLimits::default());
    let registry = w.endpoints.registry();
    w.run_batch(&mut vec![register("tg").0]);
    w.conn
        .execute_batch(
            "CREATE TRIGGER refuse AFTER UPDATE OF url ON endpoints WHEN NEW.id = 'doomed'
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
    // Created, then changed: its format is written, then its url fails.
    let (create, created) = create_endpoint("doomed");
    w.run_batch(&mut vec![create]);
    assert!(created.blocking_recv().unwrap().is_ok());
    let (reply, changed) = oneshot::channel();
    let change = endpoint::Change {
        format: Some(endpoint::Format::CloudEvents),
        url: Some("http://127.0.0.1:9/moved".parse().unwrap()),
        ..Default::default()
    };
    let update = Command::Admin {
        op: AdminOp::UpdateEndpoint {
            id: "doomed".into(),
            change: Box::new(change),
        },
        reply,
    };
    w.run_batch(&mut vec![update, enrolled("tg").0]);
    assert!(changed.blocking_recv().unwrap().is_err());
    let doomed = registry.get("doomed").unwrap();
    assert_eq!(doomed.endpoint.shown_url(), "http://127.0.0.1:9/created");
    assert_eq!(doomed.endpoint.format(), endpoint::Format::Gbds);
    assert_eq!(
        std::iter::from_fn(|| handed.try_recv().ok()).count(),
        2,
        "the event still fans out to both endpoints"
    );
}

#[test]
fn a_410_undone_with_the_results_it_came_with_leaves_the_endpoint_enabled_everywhere() {
    let (mut w, mut handed) = handing_over(DeliveryLimits::default());
    let registry = w.endpoints.registry();
    w.run_batch(&mut vec![register("tg-a").0, register("tg-b").0]);
    w.run_batch(&mut vec![enrolled("tg-a").0, enrolled("tg-b").0]);
    let ids: Vec<i64> = std::iter::from_fn(|| handed.try_recv().ok())
        .map(|d| d.id)
        .collect();
    assert_eq!(ids.len(), 2);
    w.conn
        .execute_batch(&format!(
            "CREATE TRIGGER boom AFTER UPDATE OF status ON deliveries WHEN NEW.id = {}
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
            ids[1]
        ))
        .unwrap();
    let results = Command::Complete {
        completions: vec![
            Completion::Gone {
                id: ids[0],
                endpoint_id: "e".into(),
            },
            Completion::Delivered {
                id: ids[1],
                http_status: 200,
            },
        ],
    };
    w.run_batch(&mut vec![results]);
    assert_eq!(
        count(
            &w,
            "SELECT count(*) FROM endpoints WHERE id = 'e' AND enabled = 1"
        ),
        1
    );
    assert!(registry.get("e").unwrap().endpoint.enabled);
}

#[test]
fn on_a_full_database_calls_get_unavailable_nothing_is_half_written_and_it_recovers() {
    let mut w = writer();
    w.run_batch(&mut vec![register("first").0]);
    let pages = count(&w, "PRAGMA page_count");
    // No page may be added: the database is "full".
    w.conn
        .execute_batch(&format!("PRAGMA max_page_count = {pages}"))
        .unwrap();
    let tguids: Vec<String> = (0..300).map(|i| format!("t{i:03}")).collect();
    let (mut batch, replies): (Vec<_>, Vec<_>) = tguids.iter().map(|t| register(t)).unzip();
    w.run_batch(&mut batch);
    let mut refused = Vec::new();
    for (t, reply) in tguids.iter().zip(replies) {
        match reply.blocking_recv().unwrap() {
            Ok(_) => {}
            Err(WriteError::Unavailable(why)) => {
                assert!(why.contains("full"), "{why}");
                refused.push(t.clone());
            }
            Err(e) => panic!("{t}: want Unavailable or success, got {e:?}"),
        }
    }
    assert!(!refused.is_empty(), "the database never filled");
    let reason = w.guard.health.reason(Component::Store).expect("not ready");
    assert!(reason.contains("full"), "{reason}");
    // What was refused left nothing behind; what was answered is there.
    let stored = count(&w, "SELECT count(*) FROM transactions") as usize;
    assert_eq!(stored, 1 + tguids.len() - refused.len());

    w.conn
        .execute_batch("PRAGMA max_page_count = 1073741823")
        .unwrap();
    let (mut again, replies): (Vec<_>, Vec<_>) = refused.iter().map(|t| register(t)).unzip();
    w.run_batch(&mut again);
    for reply in replies {
        assert!(reply.blocking_recv().unwrap().is_ok());
    }
    assert!(
        w.guard.health.is_ready(),
        "ready again once a write committed"
    );
    assert_eq!(
        count(&w, "SELECT count(*) FROM transactions") as usize,
        1 + tguids.len()
    );
}

/// Makes every update of a delivery fail with SQLITE_FULL, as on a full disk, until
/// `recording_works`.
fn recording_fails(w: &Writer) {
    // A genuine SQLITE_FULL: the trigger's row needs pages the database may not add.
    w.conn
        .execute_batch(
            "CREATE TABLE filler (b BLOB);
             CREATE TRIGGER full BEFORE UPDATE ON deliveries
             BEGIN INSERT INTO filler VALUES (randomblob(100000)); END;",
        )
        .unwrap();
    let pages = count(w, "PRAGMA page_count");
    w.conn
        .execute_batch(&format!("PRAGMA max_page_count = {pages}"))
        .unwrap();
}

fn recording_works(w: &Writer) {
    w.conn
        .execute_batch("DROP TRIGGER full; PRAGMA max_page_count = 1073741823;")
        .unwrap();
}

#[test]
fn a_result_that_cannot_be_recorded_is_kept_and_its_delivery_is_not_handed_out_again() {
    let (mut w, mut handed) = handing_over(DeliveryLimits::default());
    w.run_batch(&mut vec![register("a").0]);
    w.run_batch(&mut vec![enrolled("a").0]);
    let sent = handed.try_recv().expect("the new head is handed over");

    // The receiver acknowledged it, and the result cannot be written; a claim in the same
    // batch (which writes nothing, and commits) must not hand the delivery out again.
    recording_fails(&w);
    let (c, c_rx) = claim(10);
    w.run_batch(&mut vec![delivered(sent.id), c]);
    assert!(
        c_rx.blocking_recv().unwrap().deliveries.is_empty(),
        "an acknowledged delivery was handed out again while its result was kept"
    );
    let reason = w.guard.health.reason(Component::Store).expect("not ready");
    assert!(reason.contains("full"), "{reason}");
    assert_eq!(w.carried.len(), 1);

    // Space again: the kept result is recorded with the next batch.
    recording_works(&w);
    let (c, c_rx) = claim(10);
    w.run_batch(&mut vec![c]);
    assert!(c_rx.blocking_recv().unwrap().deliveries.is_empty());
    assert_eq!(
        count(
            &w,
            "SELECT count(*) FROM deliveries WHERE status = 'delivered'"
        ),
        1
    );
    assert!(w.carried.is_empty());
    assert!(w.guard.health.is_ready());
}

#[test]
fn a_batch_whose_commit_fails_for_want_of_space_is_answered_unavailable_and_keeps_its_results() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.db");
    let conn = crate::store::open(&path, false).unwrap();
    let files = crate::store::file::OpenFiles::note(&path).unwrap();
    let (mut w, mut handed, taken) = writer_on(conn, DeliveryLimits::default(), Some(files));
    taken.store(true, std::sync::atomic::Ordering::SeqCst);
    w.run_batch(&mut vec![register("a").0]);
    w.run_batch(&mut vec![enrolled("a").0]);
    let sent = handed.try_recv().expect("the new head is handed over");

    crate::store::fault::set_disk_full(&path, true);
    let (b, b_rx) = register("b");
    w.run_batch(&mut vec![delivered(sent.id), b]);
    assert!(matches!(
        b_rx.blocking_recv().unwrap(),
        Err(WriteError::Unavailable(_))
    ));
    assert!(!w.guard.health.is_ready());
    assert_eq!(w.carried.len(), 1);
    crate::store::fault::set_disk_full(&path, false);
    let (c, c_rx) = claim(10);
    w.run_batch(&mut vec![c]);
    assert!(c_rx.blocking_recv().unwrap().deliveries.is_empty());
    assert_eq!(
        count(
            &w,
            "SELECT count(*) FROM deliveries WHERE status = 'delivered'"
        ),
        1
    );
    assert_eq!(
        count(&w, "SELECT count(*) FROM transactions WHERE tguid = 'b'"),
        0
    );
    assert!(w.guard.health.is_ready());
}
