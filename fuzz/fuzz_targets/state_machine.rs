//! The state machine (`domain::step`) driven through any sequence of inputs, against a small
//! model written here from CONTRACT §2's tables: states and names only, no shared code.
//!
//! Properties: at every step the machine accepts exactly what the model accepts, moves to the
//! state the model says, and records the notifications the model says, byte for byte and in
//! order; a refused input leaves the state as it was.

#![no_main]

use arbitrary::Arbitrary;
use gbds_notifier::domain::{
    step, Decision, Input, Operation, Outcome, State, Tguid, Treatment, Uguid, UpdateLabel,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Run {
    operation: u8,
    update_label_is_update: bool,
    inputs: Vec<u8>,
}

/// Every input there is, by index: 5 outcomes, PENDING, EXCEPTION, a latent match, 2
/// decisions, 5 treatments.
fn input(i: u8) -> Input {
    let outcomes = Outcome::ALL;
    let decisions = Decision::ALL;
    let treatments = Treatment::ALL;
    let n = outcomes.len() + 3 + decisions.len() + treatments.len();
    let mut i = i as usize % n;
    if i < outcomes.len() {
        return Input::Outcome(outcomes[i]);
    }
    i -= outcomes.len();
    match i {
        0 => return Input::SentToReview,
        1 => return Input::Exception,
        2 => return Input::LatentMatch(Uguid::parse("ug-1").unwrap()),
        _ => i -= 3,
    }
    if i < decisions.len() {
        return Input::Review(decisions[i]);
    }
    Input::Treat(treatments[i - decisions.len()])
}

/// The input as the model reads it: (kind, value).
fn named(input: &Input) -> (&'static str, &'static str) {
    match input {
        Input::Outcome(o) => ("outcome", o.as_str()),
        Input::SentToReview => ("pending", ""),
        Input::Exception => ("exception", ""),
        Input::LatentMatch(_) => ("latent", ""),
        Input::Review(d) => ("review", d.as_str()),
        Input::Treat(t) => ("treatment", t.as_str()),
    }
}

/// CONTRACT §2's treatment table: the final state, or None where not allowed.
fn treated(op: &str, t: &str) -> Option<&'static str> {
    match (op, t) {
        ("ENROLL", "SAME_FINGERS") => Some("FAILED"),
        ("ENROLL", "DIFFERENT_FINGERS") => Some("ENROLLED"),
        ("ENROLL", "MERGE_TRANSACTIONS") => Some("ENROLLED"),
        ("ENROLL", "RECOLLECT") => Some("FAILED"),
        ("UPDATE", "SAME_FINGERS") => Some("ENROLLED"),
        ("UPDATE", "DIFFERENT_FINGERS") => Some("FAILED"),
        ("UPDATE", "RECOLLECT") => Some("FAILED"),
        ("UPDATE", "INCORRECT_ENROLL") => Some("ENROLLED"),
        _ => None,
    }
}

/// CONTRACT §2's transition table: the next state and the notifications' bodies, or None
/// for a refusal.
fn model(op: &str, label: &str, state: &str, input: (&str, &str)) -> Option<(&'static str, Vec<String>)> {
    let body = |status: &str| format!(r#"{{"operation":"{label}","tguid":"tg-1","status":"{status}"}}"#);
    let enrolment = op == "ENROLL" || op == "UPDATE";
    let finals: &[&'static str] = if enrolment {
        &["ENROLLED", "FAILED"]
    } else {
        &["MATCH", "NOT_MATCH", "FAILED", "PERSON_NOT_FOUND"]
    };
    match (state, input.0) {
        ("PROCESSING", "outcome") => {
            let to = *finals.iter().find(|f| **f == input.1)?;
            Some((to, vec![body(to)]))
        }
        ("PROCESSING", "pending") if enrolment => Some(("PENDING", vec![body("PENDING")])),
        ("PROCESSING", "exception") if enrolment => Some(("EXCEPTION", vec![body("EXCEPTION")])),
        ("PROCESSING", "latent") if enrolment => Some((
            "PROCESSING",
            vec![format!(
                r#"{{"operation":"{label}","tguid":"tg-1","status":"REVERSE_LATENT_MATCH","uguid":"ug-1"}}"#
            )],
        )),
        ("PENDING", "review") if input.1 == "APPROVE" => Some(("PROCESSING", vec![])),
        ("PENDING", "review") if input.1 == "REJECT" => Some(("FAILED", vec![body("FAILED")])),
        ("EXCEPTION", "treatment") => {
            let to = treated(op, input.1)?;
            Some((
                to,
                vec![
                    format!(
                        r#"{{"operation":"TREAT_EXCEPTION","tguid":"tg-1","status":"OK","treatment":"{}"}}"#,
                        input.1
                    ),
                    body(to),
                ],
            ))
        }
        _ => None,
    }
}

fuzz_target!(|run: Run| {
    let op = Operation::ALL[run.operation as usize % Operation::ALL.len()];
    let update_label = if run.update_label_is_update {
        UpdateLabel::Update
    } else {
        UpdateLabel::Enroll
    };
    let label = match (op.as_str(), update_label) {
        ("UPDATE", UpdateLabel::Update) => "UPDATE",
        ("SEARCH", _) => "SEARCH",
        _ => "ENROLL",
    };
    let tguid = Tguid::parse("tg-1").unwrap();
    let mut state = State::Processing;
    for &i in run.inputs.iter().take(64) {
        let input = input(i);
        let expected = model(op.as_str(), label, state.as_str(), named(&input));
        match (step(op, state, &input, update_label), expected) {
            (Ok(t), Some((to, bodies))) => {
                assert_eq!(t.to.as_str(), to, "{op} {state} {input:?}");
                let got: Vec<String> = t
                    .notifications
                    .iter()
                    .map(|n| String::from_utf8(n.body(&tguid)).unwrap())
                    .collect();
                assert_eq!(got, bodies, "{op} {state} {input:?}");
                state = t.to;
            }
            (Err(_), None) => {}
            (got, want) => panic!("{op} {state} {input:?}: machine {got:?}, model {want:?}"),
        }
    }
});
