//! Every flow of the GBDS notification document, from `fixtures/scenarios/*.json`, driven
//! through the real REST API against a real receiver: the bodies must arrive byte for byte, in
//! order, and nothing else. Each received sequence is also snapshotted for a person to compare
//! with the Spanish document.

use serde_json::Value;

use crate::harness::{spawn_app, Received, Scenario};

async fn run(name: &str) {
    let fixture = Scenario::named(name);
    let app = spawn_app(&fixture.config_toml()).await;
    let tguid = format!("tg-{name}");

    let created = app.api.register(&tguid, &fixture.operation).await.ok(201);
    assert_eq!(created["state"], "PROCESSING");
    let mut steps_shown = Vec::new();
    for step in &fixture.steps {
        let reply = step.send(&app.api, &tguid).await.ok(200);
        steps_shown.push(format!(
            "{:<9} {} -> {}",
            format!("{:?}", step.call).to_lowercase(),
            step.body,
            reply["state"].as_str().unwrap_or("?")
        ));
    }

    let expected: Vec<String> = fixture.expected(&tguid);
    app.receiver
        .wait_until(&format!("{} notification(s)", expected.len()), |all| {
            all.len() >= expected.len()
        })
        .await;
    app.receiver.assert_quiet().await;
    let received = app.receiver.all();

    // Byte for byte, in order, and nothing more.
    let bodies: Vec<String> = received.iter().map(Received::text).collect();
    assert_eq!(bodies, expected, "{name}: the received sequence differs");

    let mut ids = Vec::new();
    for r in &received {
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{name}: Content-Type of {}",
            r.text()
        );
        let id = r.webhook_id();
        assert!(!id.is_empty(), "{name}: empty webhook-id");
        assert!(!ids.contains(&id), "{name}: webhook-id {id} used twice");
        ids.push(id);
    }

    // The transaction's own record embeds the same bytes and ids (read raw: a `Value` would
    // re-order the keys).
    let detail = app.api.recorded(&tguid).await;
    assert_eq!(detail.state, fixture.final_state, "{name}: final state");
    let recorded: Vec<&str> = detail.notifications.iter().map(|n| n.text()).collect();
    assert_eq!(
        recorded, expected,
        "{name}: the transaction's recorded notifications"
    );
    let recorded_ids: Vec<&String> = detail.notifications.iter().map(|n| &n.webhook_id).collect();
    let sent_ids: Vec<&String> = ids.iter().collect();
    assert_eq!(
        recorded_ids, sent_ids,
        "{name}: webhook-ids sent vs recorded"
    );

    let mut shown = format!(
        "{} {tguid}: {}\n",
        fixture.operation, fixture.document_section
    );
    if let Some(config) = &fixture.config {
        shown.push_str(&format!("config    {config}\n"));
    }
    shown.push_str(&format!(
        "register  -> {}\n",
        created["state"].as_str().unwrap_or("?")
    ));
    for s in steps_shown {
        shown.push_str(&s);
        shown.push('\n');
    }
    shown.push_str("\nreceived, in order:\n");
    for b in &bodies {
        shown.push_str(b);
        shown.push('\n');
    }
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots/scenarios");
    settings.set_prepend_module_to_snapshot(false);
    if let Some(note) = &fixture.note {
        settings.set_description(note.clone());
    }
    settings.set_omit_expression(true);
    settings.bind(|| insta::assert_snapshot!(name, shown));

    app.stop().await;
}

/// One test per fixture; the names say what the document says.
macro_rules! document_scenarios {
    ($($test:ident => $file:literal,)+) => {
        $(
            #[tokio::test]
            async fn $test() {
                run($file).await;
            }
        )+

        const COVERED: &[&str] = &[$($file),+];
    };
}

document_scenarios! {
    // Transacción Aceptada
    an_accepted_enroll_notifies_enrolled => "enroll_enrolled",
    an_accepted_enroll_that_cannot_finish_notifies_failed => "enroll_failed",
    an_accepted_update_notifies_enrolled_under_the_enroll_label => "update_enrolled",
    an_accepted_update_that_cannot_finish_notifies_failed_under_the_enroll_label => "update_failed",
    a_search_notifies_match => "search_match",
    a_search_notifies_not_match => "search_not_match",
    a_search_notifies_failed => "search_failed",
    a_one_to_one_search_without_a_reference_notifies_person_not_found => "search_person_not_found",
    // Transacción Enviada para Revisión Manual
    an_enroll_sent_to_manual_review_notifies_pending => "enroll_pending",
    an_approved_review_sends_nothing_and_processing_resumes_to_enrolled => "enroll_pending_approve_enrolled",
    a_rejected_review_notifies_failed => "enroll_pending_reject",
    an_update_sent_to_review_and_rejected_keeps_the_enroll_label => "update_pending_reject",
    // Transacción con Excepción Biométrica
    an_enroll_with_a_biometric_exception_notifies_exception => "enroll_exception",
    an_update_with_a_biometric_exception_notifies_exception_under_the_enroll_label => "update_exception",
    // Tratamiento de Excepciones
    enroll_same_fingers_notifies_the_treatment_then_failed => "enroll_exception_same_fingers",
    enroll_different_fingers_notifies_the_treatment_then_enrolled => "enroll_exception_different_fingers",
    enroll_merge_transactions_notifies_the_treatment_then_enrolled => "enroll_exception_merge_transactions",
    enroll_recollect_notifies_the_treatment_then_failed => "enroll_exception_recollect",
    update_same_fingers_notifies_the_treatment_then_enrolled => "update_exception_same_fingers",
    update_different_fingers_notifies_the_treatment_then_failed => "update_exception_different_fingers",
    update_recollect_notifies_the_treatment_then_failed => "update_exception_recollect",
    update_incorrect_enroll_notifies_the_treatment_then_enrolled => "update_exception_incorrect_enroll",
    // Emparejamiento con Latente No Resuelta
    a_reverse_latent_match_carries_the_uguid_then_the_enroll_ends_normally => "enroll_reverse_latent_match",
    an_update_with_a_reverse_latent_match_then_fails => "update_reverse_latent_match",
    every_matched_latent_gets_its_own_reverse_latent_match => "enroll_reverse_latent_match_twice",
    a_reverse_latent_match_can_be_followed_by_an_exception_and_its_treatment => "enroll_reverse_latent_match_exception_merge_transactions",
    an_update_reverse_latent_match_then_exception_then_different_fingers_fails => "update_reverse_latent_match_exception_different_fingers",
    // notifications.update_operation = "UPDATE"
    with_the_update_label_an_accepted_update_says_update => "update_enrolled_labelled_update",
    with_the_update_label_a_treated_update_says_update_but_treat_exception_stays => "update_exception_incorrect_enroll_labelled_update",
    with_the_update_label_a_latent_match_and_review_say_update => "update_reverse_latent_match_labelled_update",
    with_the_update_label_an_enroll_still_says_enroll => "enroll_enrolled_with_update_label_setting",
}

#[test]
fn every_fixture_file_has_a_test_and_every_test_a_fixture() {
    let files = Scenario::names();
    let mut covered: Vec<String> = COVERED.iter().map(|s| s.to_string()).collect();
    covered.sort();
    assert_eq!(
        files, covered,
        "add a line to document_scenarios! in tests/it/scenarios.rs for each new fixture"
    );
    for name in COVERED {
        let f = Scenario::named(name);
        assert!(!f.expect.is_empty(), "{name}: expects nothing");
        for e in &f.expect {
            assert_eq!(
                &in_document_order(e),
                e,
                "{name}: not compact JSON in document key order"
            );
            let v: Value = serde_json::from_str(e).expect("JSON");
            assert_eq!(
                v["tguid"], "<tguid>",
                "{name}: {e} does not use the <tguid> placeholder"
            );
        }
    }
}

#[test]
fn the_fixtures_cover_every_section_of_the_document() {
    let sections: Vec<String> = COVERED
        .iter()
        .map(|n| Scenario::named(n).document_section)
        .collect();
    for wanted in [
        "Transacción Aceptada",
        "Transacción Enviada para Revisión Manual",
        "Transacción con Excepción Biométrica",
        "Excepción de Registro - Mismos Dedos",
        "Excepción de Registro - Dedos Diferentes",
        "Tratamiento de Excepción - Fusionar Transacciones",
        "Tratamiento de Excepción - Recolectar de Nuevo",
        "Excepción de Actualización - Mismos Dedos",
        "Excepción de Actualización - Dedos Diferentes",
        "Excepción de Actualización - Recolectar de Nuevo",
        "Excepción de Actualización - Registro Incorrecto",
        "Emparejamiento con Latente No Resuelta",
    ] {
        assert!(
            sections.iter().any(|s| s == wanted),
            "no fixture for the section {wanted:?}"
        );
    }
    for s in &sections {
        let known = s.starts_with("Transacción")
            || s.starts_with("Excepción de")
            || s.starts_with("Tratamiento de Excepción")
            || s == "Emparejamiento con Latente No Resuelta";
        assert!(known, "{s:?} is not a section title of the document");
    }
}

/// `body` re-written as CONTRACT §3 writes notifications: compact, keys in the order
/// operation, tguid, status, then uguid or treatment, and no other key.
fn in_document_order(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{body}: {e}"));
    let object = v
        .as_object()
        .unwrap_or_else(|| panic!("{body}: not an object"));
    const ORDER: [&str; 5] = ["operation", "tguid", "status", "uguid", "treatment"];
    for key in object.keys() {
        assert!(
            ORDER.contains(&key.as_str()),
            "{body}: unexpected key {key}"
        );
    }
    let fields: Vec<String> = ORDER
        .iter()
        .filter_map(|k| object.get(*k).map(|value| format!("{:?}:{value}", k)))
        .collect();
    format!("{{{}}}", fields.join(","))
}
