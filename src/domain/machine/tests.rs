//! Every cell of CONTRACT §2: each (operation, state, input) is either in the hand-written
//! table below, with its target and notifications, or refused.

use super::*;
use crate::domain::{Tguid, Uguid};

fn all_inputs() -> Vec<Input> {
    let mut inputs: Vec<Input> = Outcome::ALL.iter().map(|o| Input::Outcome(*o)).collect();
    inputs.push(Input::SentToReview);
    inputs.push(Input::Exception);
    inputs.push(Input::LatentMatch(Uguid::parse("ul-1").unwrap()));
    inputs.extend(Decision::ALL.iter().map(|d| Input::Review(*d)));
    inputs.extend(Treatment::ALL.iter().map(|t| Input::Treat(*t)));
    inputs
}

/// The contract's tables, typed out by hand: (op, from, input, to, [(operation, status, extra)]).
/// (op, from, input, to, [(operation, status, uguid or treatment)])
type Row = (
    Operation,
    State,
    Input,
    State,
    Vec<(&'static str, &'static str, Option<&'static str>)>,
);

fn allowed() -> Vec<Row> {
    use Operation::*;
    use State::*;
    let ul = || Input::LatentMatch(Uguid::parse("ul-1").unwrap());
    let mut rows = vec![];
    for op in [Enroll, Update] {
        rows.push((
            op,
            Processing,
            Input::Outcome(Outcome::Enrolled),
            Enrolled,
            vec![("ENROLL", "ENROLLED", None)],
        ));
        rows.push((
            op,
            Processing,
            Input::Outcome(Outcome::Failed),
            Failed,
            vec![("ENROLL", "FAILED", None)],
        ));
        rows.push((
            op,
            Processing,
            Input::SentToReview,
            Pending,
            vec![("ENROLL", "PENDING", None)],
        ));
        rows.push((
            op,
            Processing,
            Input::Exception,
            Exception,
            vec![("ENROLL", "EXCEPTION", None)],
        ));
        rows.push((
            op,
            Processing,
            ul(),
            Processing,
            vec![("ENROLL", "REVERSE_LATENT_MATCH", Some("ul-1"))],
        ));
        rows.push((
            op,
            Pending,
            Input::Review(Decision::Approve),
            Processing,
            vec![],
        ));
        rows.push((
            op,
            Pending,
            Input::Review(Decision::Reject),
            Failed,
            vec![("ENROLL", "FAILED", None)],
        ));
    }
    for (outcome, state, status) in [
        (Outcome::Match, Match, "MATCH"),
        (Outcome::NotMatch, NotMatch, "NOT_MATCH"),
        (Outcome::Failed, Failed, "FAILED"),
        (Outcome::PersonNotFound, PersonNotFound, "PERSON_NOT_FOUND"),
    ] {
        rows.push((
            Search,
            Processing,
            Input::Outcome(outcome),
            state,
            vec![("SEARCH", status, None)],
        ));
    }
    let treatments = [
        (Enroll, Treatment::SameFingers, Failed, "FAILED"),
        (Enroll, Treatment::DifferentFingers, Enrolled, "ENROLLED"),
        (Enroll, Treatment::MergeTransactions, Enrolled, "ENROLLED"),
        (Enroll, Treatment::Recollect, Failed, "FAILED"),
        (Update, Treatment::SameFingers, Enrolled, "ENROLLED"),
        (Update, Treatment::DifferentFingers, Failed, "FAILED"),
        (Update, Treatment::Recollect, Failed, "FAILED"),
        (Update, Treatment::IncorrectEnroll, Enrolled, "ENROLLED"),
    ];
    for (op, t, to, status) in treatments {
        rows.push((
            op,
            Exception,
            Input::Treat(t),
            to,
            vec![
                ("TREAT_EXCEPTION", "OK", Some(t.as_str())),
                ("ENROLL", status, None),
            ],
        ));
    }
    rows
}

fn rendered(op: Operation, t: &Transition) -> Vec<(&'static str, &'static str, Option<String>)> {
    let tguid = Tguid::parse("tg").unwrap();
    t.notifications
        .iter()
        .map(|n| {
            let body: serde_json::Value = serde_json::from_slice(&n.body(&tguid)).unwrap();
            assert_eq!(body["tguid"], "tg", "{op}");
            let extra = body
                .get("uguid")
                .or(body.get("treatment"))
                .map(|v| v.as_str().unwrap().to_owned());
            (n.operation(), n.status(), extra)
        })
        .collect()
}

/// How a cell outside the table is refused: a treatment the operation does not offer, on an
/// EXCEPTION transaction that does offer treatments, is "not allowed"; everything else is
/// "not in this state" (a search has no treatments at all, and never reaches EXCEPTION).
fn refusal(op: Operation, state: State, input: &Input) -> Refusal {
    let not_offered = [
        (Operation::Enroll, Treatment::IncorrectEnroll),
        (Operation::Update, Treatment::MergeTransactions),
    ];
    match input {
        Input::Treat(t) if state == State::Exception && not_offered.contains(&(op, *t)) => {
            Refusal::TreatmentNotAllowed { op, treatment: *t }
        }
        _ => Refusal::NotInState {
            op,
            state,
            input: input.describe(),
        },
    }
}

#[test]
fn every_cell_of_the_contract_table_is_allowed_or_refused_as_written() {
    let table = allowed();
    let mut checked = 0;
    for &op in Operation::ALL {
        for &state in State::ALL {
            for input in all_inputs() {
                let got = step(op, state, &input, UpdateLabel::Enroll);
                let want = table
                    .iter()
                    .find(|(o, s, i, _, _)| *o == op && *s == state && *i == input);
                match (want, got) {
                    (Some((_, _, _, to, notes)), Ok(t)) => {
                        assert_eq!(t.to, *to, "{op} {state} {input:?}");
                        let notes: Vec<_> = notes
                            .iter()
                            .map(|(a, b, c)| (*a, *b, c.map(str::to_owned)))
                            .collect();
                        assert_eq!(rendered(op, &t), notes, "{op} {state} {input:?}");
                    }
                    (None, Err(e)) => assert_eq!(e, refusal(op, state, &input)),
                    (Some(_), Err(e)) => {
                        panic!("{op} {state} {input:?} should be allowed, refused: {e}")
                    }
                    (None, Ok(t)) => {
                        panic!("{op} {state} {input:?} should be refused, went to {}", t.to)
                    }
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 * 8 * 15);
}

#[test]
fn final_states_refuse_everything() {
    use State::*;
    let finals = [Enrolled, Failed, Match, NotMatch, PersonNotFound];
    let said_final: Vec<State> = State::ALL
        .iter()
        .copied()
        .filter(|s| s.is_final())
        .collect();
    assert_eq!(said_final, finals);
    for &op in Operation::ALL {
        for state in finals {
            for input in all_inputs() {
                assert!(step(op, state, &input, UpdateLabel::Enroll).is_err());
            }
        }
    }
}

#[test]
fn a_treatment_the_operation_does_not_have_is_refused_as_not_allowed() {
    let e = step(
        Operation::Enroll,
        State::Exception,
        &Input::Treat(Treatment::IncorrectEnroll),
        UpdateLabel::Enroll,
    );
    assert_eq!(
        e,
        Err(Refusal::TreatmentNotAllowed {
            op: Operation::Enroll,
            treatment: Treatment::IncorrectEnroll
        })
    );
    let e = step(
        Operation::Update,
        State::Exception,
        &Input::Treat(Treatment::MergeTransactions),
        UpdateLabel::Enroll,
    );
    assert!(matches!(e, Err(Refusal::TreatmentNotAllowed { .. })));
}

#[test]
fn the_update_label_setting_relabels_update_notifications_but_not_treatments() {
    let t = step(
        Operation::Update,
        State::Exception,
        &Input::Treat(Treatment::SameFingers),
        UpdateLabel::Update,
    )
    .unwrap();
    let labels: Vec<_> = t.notifications.iter().map(|n| n.operation()).collect();
    assert_eq!(labels, ["TREAT_EXCEPTION", "UPDATE"]);
    let t = step(
        Operation::Enroll,
        State::Processing,
        &Input::Exception,
        UpdateLabel::Update,
    )
    .unwrap();
    assert_eq!(t.notifications[0].operation(), "ENROLL");
}

#[test]
fn a_reverse_latent_match_keeps_the_transaction_processing_and_can_repeat() {
    let ul = Input::LatentMatch(Uguid::parse("ul-2").unwrap());
    let t = step(
        Operation::Enroll,
        State::Processing,
        &ul,
        UpdateLabel::Enroll,
    )
    .unwrap();
    assert_eq!(t.to, State::Processing);
    let again = step(Operation::Enroll, t.to, &ul, UpdateLabel::Enroll).unwrap();
    assert_eq!(again.to, State::Processing);
}

#[test]
fn wire_names_round_trip() {
    for s in State::ALL {
        assert_eq!(State::parse(s.as_str()), Some(*s));
    }
    for t in Treatment::ALL {
        assert_eq!(Treatment::parse(t.as_str()), Some(*t));
    }
    assert_eq!(Operation::parse("DELETE"), None);
    assert_eq!(Operation::parse("enroll"), None, "names are case-sensitive");
}

#[test]
fn every_input_has_the_name_the_transition_log_and_refusals_show() {
    let names: Vec<String> = all_inputs().iter().map(Input::describe).collect();
    assert_eq!(
        names,
        [
            "event ENROLLED",
            "event FAILED",
            "event MATCH",
            "event NOT_MATCH",
            "event PERSON_NOT_FOUND",
            "event PENDING",
            "event EXCEPTION",
            "event REVERSE_LATENT_MATCH",
            "review APPROVE",
            "review REJECT",
            "treatment SAME_FINGERS",
            "treatment DIFFERENT_FINGERS",
            "treatment MERGE_TRANSACTIONS",
            "treatment RECOLLECT",
            "treatment INCORRECT_ENROLL",
        ]
    );
}
