//! A reviewer and an operator using the real console page in headless Chromium: the page is
//! served by the service under test (port 0, its own database), and a recording receiver gets
//! what the decisions send. Each screen is photographed wide and narrow.

use fantoccini::key::Key;
use serde_json::{json, Value};

use super::api::{encoded, waiting};
use super::browser::{driver, Browser};
use crate::harness::{eventually, spawn_app, status_body, treated_body, TestApp, REVIEW};

/// The console's address with the review token in the fragment, then `screen` (`queues`,
/// `operator`, `tx/<tguid>`).
fn console_url(app: &TestApp, screen: &str) -> String {
    format!("{}/console#{screen}&token={REVIEW}", app.api.base)
}

/// The decision buttons the transaction view offers, by their wire value.
async fn offered(b: &Browser) -> Vec<String> {
    b.wait_for(
        "the decision area",
        "return document.querySelectorAll('#decide-buttons button').length > 0 || !document.getElementById('decide-none').hidden",
    )
    .await;
    let v = b
        .js("return Array.from(document.querySelectorAll('#decide-buttons button'), (x) => x.dataset.value);")
        .await;
    serde_json::from_value(v).expect("a list of names")
}

/// Waits until the transaction view shows `tguid` (loaded, not the one shown before).
async fn opened(b: &Browser, tguid: &str) {
    b.wait_for(
        &format!("the view of {tguid}"),
        &format!("const s = document.getElementById('tx-summary'); return !s.closest('[hidden]') && s.dataset.tguid === {};", json!(tguid)),
    )
    .await;
}

/// The state the transaction view shows, once it shows `want`.
async fn shows_state(b: &Browser, want: &str) {
    b.wait_for(
        &format!("the view to show state {want}"),
        &format!("const s = document.querySelector('#tx-summary [data-state]'); return !!s && s.dataset.state === {};", json!(want)),
    )
    .await;
}

/// A script returning, for each body row of `table` matching `rows`, the cell under the
/// column headed `heading` as `{text, datetime}` (the `datetime` of a `<time>` in it).
fn column_cells(table: &str, heading: &str, rows: &str) -> String {
    format!(
        "const t = document.querySelector({table});
         const i = Array.from(t.tHead.rows[0].cells, (th) => th.textContent).indexOf({heading});
         if (i < 0) throw new Error('no column ' + {heading});
         return Array.from(t.tBodies[0].querySelectorAll({rows}), (r) => {{
           const c = r.cells[i], time = c.querySelector('time');
           return {{ text: c.textContent, datetime: time && time.getAttribute('datetime') }};
         }});",
        table = json!(table),
        heading = json!(heading),
        rows = json!(rows),
    )
}

/// An age as the console writes it: "45 s", "12 min", "3 h 5 min", "2 d 4 h".
fn is_age(text: &str) -> bool {
    let words: Vec<&str> = text.split(' ').collect();
    let number = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit());
    match words.as_slice() {
        [n, unit] => number(n) && matches!(*unit, "s" | "min"),
        [n, a, m, b] => number(n) && number(m) && matches!((*a, *b), ("h", "min") | ("d", "h")),
        _ => false,
    }
}

#[tokio::test]
async fn a_reviewer_rejects_a_pending_transaction_with_a_comment_and_the_receiver_gets_failed() {
    let Some((driver, _one)) = driver().await else {
        return;
    };
    let app = spawn_app("").await;
    waiting(&app.api, "tg-mir-1", "ENROLL", "PENDING").await;
    waiting(&app.api, "tg-mir-2", "UPDATE", "PENDING").await;
    waiting(&app.api, "tg-etr-1", "ENROLL", "EXCEPTION").await;
    let b = driver.browser().await;

    b.goto(&console_url(&app, "queues")).await;
    b.shown("#queue-PENDING tr[data-tguid='tg-mir-1'] a").await;
    b.shown("#queue-EXCEPTION tr[data-tguid='tg-etr-1']").await;
    // The token left the address bar and stays for the tab.
    let url = b.client.current_url().await.expect("the address");
    assert!(!url.as_str().contains("token"), "{url}");
    assert_eq!(
        b.js("return sessionStorage.getItem('gbds-console-token');")
            .await,
        json!(REVIEW)
    );
    let counts = b
        .js("return ['PENDING', 'EXCEPTION'].map((s) => document.querySelector(`#queue-${s} [data-role=count]`).textContent);")
        .await;
    assert_eq!(counts, json!(["2", "1"]));
    // Each row shows how long it has waited, counted from when it entered the queue.
    let waited = b
        .js(&column_cells(
            "#queue-PENDING table",
            "Waiting",
            "tr[data-tguid='tg-mir-1']",
        ))
        .await;
    let entered = app.api.detail("tg-mir-1").await["updated_at"].clone();
    assert_eq!(waited[0]["datetime"], entered, "{waited}");
    let age = waited[0]["text"].as_str().unwrap_or_default();
    assert!(is_age(age), "the Waiting column shows {age:?}");
    // One page each: nothing to page through.
    let pagers = b
        .js("return ['PENDING', 'EXCEPTION'].map((s) => document.querySelector(`#queue-${s} [data-role=pager]`).hidden);")
        .await;
    assert_eq!(pagers, json!([true, true]));
    b.screenshots("queues").await;
    // The operation filter narrows the queues and their counts.
    b.js("const f = document.getElementById('operation-filter'); f.value = 'UPDATE'; f.dispatchEvent(new Event('change')); return true;").await;
    b.wait_for(
        "the PENDING queue filtered to UPDATE",
        "return document.querySelector('#queue-PENDING [data-role=count]').textContent === '1' && !document.querySelector(\"#queue-PENDING tr[data-tguid='tg-mir-1']\");",
    )
    .await;
    b.js("const f = document.getElementById('operation-filter'); f.value = ''; f.dispatchEvent(new Event('change')); return true;").await;

    b.click("#queue-PENDING tr[data-tguid='tg-mir-1'] a").await;
    opened(&b, "tg-mir-1").await;
    shows_state(&b, "PENDING").await;
    assert_eq!(offered(&b).await, ["APPROVE", "REJECT"]);
    b.screenshots("transaction-pending").await;

    b.click("#decide-buttons button[data-value='REJECT']").await;
    b.shown("#confirm-comment").await;
    let comment = "Face photo <b>does not</b> match & \"id\" differs";
    b.type_into("#confirm-comment", comment).await;
    b.screenshots("confirm-reject").await;
    // Enter in the comment confirms.
    b.press(Key::Enter).await;
    let (kind, text) = b.notice().await;
    assert_eq!(kind, "ok", "{text}");
    app.receiver
        .wait_until("the FAILED notification", |all| {
            all.iter()
                .any(|r| r.text() == status_body("ENROLL", "tg-mir-1", "FAILED"))
        })
        .await;
    // The history shows who decided, and the comment as written (as text, not markup).
    let shown = b
        .wait_for(
            "the comment in the history",
            "const c = Array.from(document.querySelectorAll('#tx-transitions td.comment'), (td) => td.textContent).filter(Boolean); return c.length ? c : null;",
        )
        .await;
    assert_eq!(shown, json!([comment]));
    assert_eq!(
        b.js("return document.querySelectorAll('#tx-transitions b').length;")
            .await,
        json!(0)
    );
    shows_state(&b, "FAILED").await;
    assert!(offered(&b).await.is_empty());
    let detail = app.api.detail("tg-mir-1").await;
    let log = detail["transitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let last = log.last().cloned().unwrap_or(Value::Null);
    assert_eq!(last["comment"], comment);
    assert_eq!(last["input"], "review REJECT");
    // "Who" shows each transition's actor: the review token's name for the decision.
    assert_eq!(last["actor"], "review");
    let who = b.js(&column_cells("table.history", "Who", "tr")).await;
    let who: Vec<&str> = who
        .as_array()
        .map(|cells| cells.iter().filter_map(|c| c["text"].as_str()).collect())
        .unwrap_or_default();
    let actors: Vec<&str> = log.iter().filter_map(|t| t["actor"].as_str()).collect();
    assert_eq!((who.len(), who), (3, actors));
    assert!(
        last["decision_id"]
            .as_str()
            .is_some_and(|d| d.starts_with("console-")),
        "{last}"
    );
    b.screenshots("transaction-rejected").await;
    b.close().await;
    app.stop().await;
}

#[tokio::test]
async fn an_exception_offers_only_the_treatments_its_operation_allows() {
    let Some((driver, _one)) = driver().await else {
        return;
    };
    let app = spawn_app("").await;
    waiting(&app.api, "tg-update-x", "UPDATE", "EXCEPTION").await;
    waiting(&app.api, "tg-enroll-x", "ENROLL", "EXCEPTION").await;
    let b = driver.browser().await;

    b.goto(&console_url(&app, "tx/tg-enroll-x")).await;
    opened(&b, "tg-enroll-x").await;
    shows_state(&b, "EXCEPTION").await;
    let enroll = offered(&b).await;
    assert_eq!(
        enroll,
        [
            "SAME_FINGERS",
            "DIFFERENT_FINGERS",
            "MERGE_TRANSACTIONS",
            "RECOLLECT"
        ]
    );
    assert!(!enroll.contains(&"INCORRECT_ENROLL".to_owned()));

    b.goto(&format!("{}/console#tx/tg-update-x", app.api.base))
        .await;
    opened(&b, "tg-update-x").await;
    shows_state(&b, "EXCEPTION").await;
    let update = offered(&b).await;
    assert_eq!(
        update,
        [
            "SAME_FINGERS",
            "DIFFERENT_FINGERS",
            "RECOLLECT",
            "INCORRECT_ENROLL"
        ]
    );
    assert!(!update.contains(&"MERGE_TRANSACTIONS".to_owned()));
    b.screenshots("transaction-exception").await;

    // Escape cancels: nothing is sent.
    b.click("#decide-buttons button[data-value='SAME_FINGERS']")
        .await;
    b.shown("#confirm-ok").await;
    b.press(Key::Escape).await;
    b.wait_for(
        "the dialog to close",
        "return !document.getElementById('confirm').open;",
    )
    .await;
    let focus = b
        .js("return document.activeElement.dataset.value || document.activeElement.id;")
        .await;
    assert_eq!(
        focus,
        json!("SAME_FINGERS"),
        "the focus goes back to the button that opened it"
    );
    let ring = b
        .js("return getComputedStyle(document.activeElement).outlineStyle;")
        .await;
    assert_ne!(ring, json!("none"), "the focused button shows its focus");
    assert_eq!(app.api.detail("tg-update-x").await["state"], "EXCEPTION");

    // Confirmed with the button (no comment): the treatment and its outcome go out.
    b.click("#decide-buttons button[data-value='RECOLLECT']")
        .await;
    b.screenshots("confirm-treatment").await;
    b.click("#confirm-ok").await;
    assert_eq!(b.notice().await.0, "ok");
    shows_state(&b, "FAILED").await;
    app.receiver
        .wait_until("the treatment and its outcome", |all| {
            let bodies: Vec<String> = all.iter().map(|r| r.text()).collect();
            bodies.contains(&treated_body("tg-update-x", "RECOLLECT"))
                && bodies.contains(&status_body("ENROLL", "tg-update-x", "FAILED"))
        })
        .await;
    b.close().await;
    app.stop().await;
}

#[tokio::test]
async fn two_reviewers_deciding_at_once_see_one_success_and_one_readable_conflict() {
    let Some((driver, _one)) = driver().await else {
        return;
    };
    let app = spawn_app("").await;
    waiting(&app.api, "tg-race", "ENROLL", "PENDING").await;
    let (ana, ben) = (driver.browser().await, driver.browser().await);
    for b in [&ana, &ben] {
        b.goto(&console_url(&app, "tx/tg-race")).await;
        opened(b, "tg-race").await;
        shows_state(b, "PENDING").await;
    }
    ana.click("#decide-buttons button[data-value='REJECT']")
        .await;
    ben.click("#decide-buttons button[data-value='APPROVE']")
        .await;
    ana.shown("#confirm-ok").await;
    ben.shown("#confirm-ok").await;
    let (a, b) = tokio::join!(ana.click("#confirm-ok"), ben.click("#confirm-ok"));
    let _ = (a, b);
    let (ana_notice, ben_notice) = tokio::join!(ana.notice(), ben.notice());
    let mut kinds = [ana_notice.0.as_str(), ben_notice.0.as_str()];
    kinds.sort();
    assert_eq!(kinds, ["ok", "warn"], "{ana_notice:?} {ben_notice:?}");
    let (loser, conflict) = if ana_notice.0 == "warn" {
        (&ana, &ana_notice.1)
    } else {
        (&ben, &ben_notice.1)
    };
    assert!(
        conflict.contains("Another reviewer decided first"),
        "{conflict}"
    );
    // Both views are refreshed to what happened, with nothing left to decide.
    let state = app.api.detail("tg-race").await["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(state == "FAILED" || state == "PROCESSING", "{state}");
    for b in [&ana, &ben] {
        shows_state(b, &state).await;
        assert!(offered(b).await.is_empty());
    }
    let log = app.api.detail("tg-race").await["transitions"]
        .as_array()
        .map(Vec::len);
    assert_eq!(log, Some(3), "exactly one decision was recorded");
    loser.screenshots("conflict").await;
    ana.close().await;
    ben.close().await;
    app.stop().await;
}

#[tokio::test]
async fn a_tguid_holding_markup_is_shown_as_text_and_runs_nothing() {
    let Some((driver, _one)) = driver().await else {
        return;
    };
    let app = spawn_app("").await;
    let hostile = [
        r"<script>window.pwned=1<\script>",
        r#""><img>'-window.pwned=2-'<\b>"#,
        "${window.pwned=3}&lt;i&gt;",
    ];
    for tg in hostile {
        waiting(&app.api, tg, "ENROLL", "PENDING").await;
    }
    let b = driver.browser().await;
    b.goto(&console_url(&app, "queues")).await;
    let listed = b
        .wait_for(
            "the three transactions in the PENDING queue",
            "const t = Array.from(document.querySelectorAll('#queue-PENDING tbody tr[data-tguid] code'), (c) => c.textContent); return t.length === 3 ? t : null;",
        )
        .await;
    assert_eq!(listed, json!(hostile));
    // Had any of them been parsed as markup: a flag set, a second script, an image.
    let marks =
        "return [window.pwned === undefined, document.scripts.length, document.images.length];";
    assert_eq!(b.js(marks).await, json!([true, 1, 0]));
    b.screenshots("queues-hostile-tguids").await;

    for tg in hostile {
        b.goto(&format!("{}/console#tx/{}", app.api.base, encoded(tg)))
            .await;
        // The notification body, as JSON text: the tguid JSON-quoted, nothing else changed.
        let quoted = serde_json::to_string(tg).expect("a JSON string");
        let body = format!(r#"{{"operation":"ENROLL","tguid":{quoted},"status":"PENDING"}}"#);
        b.wait_for(
            &format!("the page of {tg}"),
            &format!(
                "const p = document.querySelector('#tx-notifications pre');
                 return document.getElementById('tx-tguid').textContent === {} && !!p && p.textContent === {};",
                json!(tg),
                json!(body)
            ),
        )
        .await;
        assert_eq!(b.js(marks).await, json!([true, 1, 0]), "{tg}");
    }
    b.screenshots("transaction-hostile-tguid").await;
    b.close().await;
    app.stop().await;
}

#[tokio::test]
async fn the_operator_screen_retries_a_dead_delivery_and_recovers_an_endpoint() {
    let Some((driver, _one)) = driver().await else {
        return;
    };
    // Two quick failures and a delivery is dead.
    let app = spawn_app("[delivery]\nretry_schedule = [\"10ms\"]\n").await;
    app.receiver.answer_with(500);
    for tg in ["tg-dead-1", "tg-dead-2"] {
        app.api.register(tg, "ENROLL").await.ok(201);
        app.api.event(tg, json!({"type": "ENROLLED"})).await.ok(200);
    }
    app.receiver
        .wait_until("two failed attempts of each", |all| all.len() >= 4)
        .await;
    eventually("both deliveries dead", async || {
        let page = app
            .api
            .get("/v1/deliveries?status=dead&endpoint=test", Some(REVIEW))
            .await
            .ok(200);
        (page["items"].as_array().map(Vec::len) == Some(2)).then_some(())
    })
    .await;
    app.receiver.answer_with(200);

    let b = driver.browser().await;
    b.goto(&console_url(&app, "operator")).await;
    b.shown("#health-chart svg g[data-endpoint='test']").await;
    b.shown("#dead-rows tr[data-delivery]").await;
    let row = b
        .js("return Array.from(document.querySelectorAll('#endpoint-rows tr[data-endpoint=test] td'), (td) => td.textContent);")
        .await;
    assert_eq!(row[2], json!("0"), "backlog: {row}");
    assert_eq!(row[3], json!("2"), "dead: {row}");
    // The last attempt reads as the receiver's answer, once: not "500 HTTP 500".
    let last = b
        .js("return Array.from(document.querySelectorAll('#dead-rows tr[data-delivery]'), (r) => r.querySelectorAll('td')[3].textContent);")
        .await;
    assert_eq!(
        last,
        json!(["HTTP 500", "HTTP 500"]),
        "last attempt: {last}"
    );
    b.screenshots("operator").await;

    // Retry the first dead delivery; it arrives.
    let first = b
        .js("const r = document.querySelector('#dead-rows tr[data-delivery]'); return r.querySelector('code').textContent;")
        .await;
    let first = first.as_str().unwrap_or_default().to_owned();
    b.click("#dead-rows tr[data-delivery] button").await;
    b.click("#confirm-ok").await;
    assert_eq!(b.notice().await.0, "ok");
    app.receiver
        .wait_until("the retried delivery, acknowledged", |all| {
            all.iter()
                .any(|r| r.acknowledged() && r.text() == status_body("ENROLL", &first, "ENROLLED"))
        })
        .await;

    // Recover the endpoint since long ago: the other one arrives too.
    b.wait_for(
        "one dead delivery left",
        "return document.querySelectorAll('#dead-rows tr[data-delivery]').length === 1;",
    )
    .await;
    b.js("document.getElementById('recover-since').value = '2000-01-01T00:00:00'; return true;")
        .await;
    b.click("#recover-form button[type=submit]").await;
    b.click("#confirm-ok").await;
    let (kind, text) = b.notice().await;
    assert_eq!(
        (kind.as_str(), text.starts_with("1 delivery")),
        ("ok", true),
        "{text}"
    );
    app.receiver
        .wait_until("both deliveries acknowledged", |all| {
            ["tg-dead-1", "tg-dead-2"].iter().all(|tg| {
                all.iter()
                    .any(|r| r.acknowledged() && r.text() == status_body("ENROLL", tg, "ENROLLED"))
            })
        })
        .await;
    b.wait_for(
        "no dead delivery left",
        "return !document.getElementById('dead-none').hidden;",
    )
    .await;
    assert_eq!(
        b.js("return document.getElementById('dead-table').hidden;")
            .await,
        json!(true),
        "no table headings over no rows"
    );
    b.screenshots("operator-recovered").await;
    b.close().await;
    app.stop().await;
}

#[tokio::test]
async fn a_queue_longer_than_a_page_is_paged_with_its_count() {
    let Some((driver, _one)) = driver().await else {
        return;
    };
    let app = spawn_app("").await;
    let tguids: Vec<String> = (0..23).map(|i| format!("tg-page-{i:02}")).collect();
    for tg in &tguids {
        waiting(&app.api, tg, "UPDATE", "PENDING").await;
    }
    let b = driver.browser().await;
    b.goto(&console_url(&app, "queues")).await;
    let page = |first: &str| {
        format!(
            "const rows = Array.from(document.querySelectorAll('#queue-PENDING tbody tr[data-tguid]'), (r) => r.dataset.tguid);
             return rows[0] === {} ? [rows, document.querySelector('#queue-PENDING [data-role=page]').textContent] : null;",
            json!(first)
        )
    };
    let first = b.wait_for("the first page", &page("tg-page-00")).await;
    assert_eq!(first[0], json!(tguids[..20]));
    assert_eq!(first[1], json!("1–20 of 23"));
    b.click("#queue-PENDING [data-role=next]").await;
    let second = b.wait_for("the second page", &page("tg-page-20")).await;
    assert_eq!(second[0], json!(tguids[20..]));
    assert_eq!(second[1], json!("21–23 of 23"));
    assert_eq!(
        b.js("return document.querySelector('#queue-PENDING [data-role=next]').disabled;")
            .await,
        json!(true)
    );
    b.click("#queue-PENDING [data-role=prev]").await;
    b.wait_for("the first page again", &page("tg-page-00"))
        .await;
    // The empty queue says so once, in its table, not also in the line above it.
    let empty = b
        .wait_for(
            "the empty exception queue",
            "const box = document.getElementById('queue-EXCEPTION');
             if (!box || !box.querySelector('tbody').children.length) return null;
             return box.textContent.split('Nothing waiting.').length - 1;",
        )
        .await;
    assert_eq!(empty, json!(1));
    b.close().await;
    app.stop().await;
}

#[tokio::test]
async fn without_a_token_the_console_asks_for_one_refuses_a_wrong_one_and_keeps_the_right_one() {
    let Some((driver, _one)) = driver().await else {
        return;
    };
    let app = spawn_app("").await;
    waiting(&app.api, "tg-login-1", "ENROLL", "PENDING").await;
    let b = driver.browser().await;
    let token = "return sessionStorage.getItem('gbds-console-token');";

    // Nothing in the address: the form, ready to type into, and nothing else.
    b.goto(&format!("{}/console", app.api.base)).await;
    b.shown("#login-form").await;
    b.wait_for(
        "the token field to have the focus",
        "return document.activeElement && document.activeElement.id === 'token-input';",
    )
    .await;
    let hidden = b
        .js("return ['queues', 'transaction', 'operator', 'sign-out', 'notice'].map((id) => document.getElementById(id).hidden);")
        .await;
    assert_eq!(
        hidden,
        json!([true, true, true, true, true]),
        "no error before anything was typed"
    );
    assert_eq!(b.js(token).await, Value::Null);
    b.screenshots("login").await;

    // A wrong token: refused in words, forgotten, and the form is still there.
    b.type_into("#token-input", "t-not-a-token").await;
    b.press(Key::Enter).await;
    let (kind, text) = b.notice().await;
    assert_eq!(kind, "error", "{text}");
    assert!(
        text.contains("refused this token") && text.contains("not valid"),
        "{text}"
    );
    b.shown("#login-form").await;
    assert_eq!(
        b.js(token).await,
        Value::Null,
        "a refused token is not kept"
    );
    b.screenshots("login-refused").await;

    // The right one: the queues, and the token kept for the tab (not in the address).
    b.type_into("#token-input", REVIEW).await;
    b.click("#login-form button[type=submit]").await;
    b.shown("#queue-PENDING tr[data-tguid='tg-login-1']").await;
    assert_eq!(b.js(token).await, json!(REVIEW));
    let url = b.client.current_url().await.expect("the address");
    assert!(!url.as_str().contains(REVIEW), "{url}");
    let shown = b
        .js("return [document.getElementById('login').hidden, document.getElementById('notice').hidden, document.getElementById('sign-out').hidden];")
        .await;
    assert_eq!(
        shown,
        json!([true, true, false]),
        "login, notice, Forget token"
    );

    // It stays for the tab: a reload needs no token typed again.
    b.client.refresh().await.expect("the page reloads");
    b.shown("#queue-PENDING tr[data-tguid='tg-login-1']").await;
    assert_eq!(b.js(token).await, json!(REVIEW));

    // "Forget token" removes it and asks again.
    b.click("#sign-out").await;
    b.shown("#login-form").await;
    assert_eq!(b.js(token).await, Value::Null);
    b.close().await;
    app.stop().await;
}
