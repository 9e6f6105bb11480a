//! Endpoint subscriptions: which notifications an endpoint receives, as patterns over
//! `<OPERATION>.<STATUS>` with `*` for "any" (as in `session.*`). Pure: parsing and
//! matching only; the store applies them when it fans a notification out.

use std::fmt;

/// The `operation` values a notification can carry (UPDATE only with
/// `update_operation = "UPDATE"`).
pub const OPERATIONS: &[&str] = &["ENROLL", "UPDATE", "SEARCH", "TREAT_EXCEPTION"];

/// The `status` values a notification can carry.
pub const STATUSES: &[&str] = &[
    "PENDING",
    "EXCEPTION",
    "REVERSE_LATENT_MATCH",
    "ENROLLED",
    "FAILED",
    "MATCH",
    "NOT_MATCH",
    "PERSON_NOT_FOUND",
    "OK",
];

/// Whether some notification has this operation and status (CONTRACT §2). A pattern that
/// names a pair no notification has would never match: that is a mistake worth refusing.
pub fn occurs(operation: &str, status: &str) -> bool {
    match operation {
        "ENROLL" | "UPDATE" => matches!(
            status,
            "PENDING" | "EXCEPTION" | "REVERSE_LATENT_MATCH" | "ENROLLED" | "FAILED"
        ),
        "SEARCH" => matches!(
            status,
            "MATCH" | "NOT_MATCH" | "FAILED" | "PERSON_NOT_FOUND"
        ),
        "TREAT_EXCEPTION" => status == "OK",
        _ => false,
    }
}

/// One side of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Any,
    Is(&'static str),
}

impl Part {
    fn matches(&self, value: &str) -> bool {
        match self {
            Part::Any => true,
            Part::Is(v) => *v == value,
        }
    }
}

/// A checked pattern such as `ENROLL.*`, `*.FAILED` or `SEARCH.MATCH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    operation: Part,
    status: Part,
}

/// Why a pattern was refused; the message names the pattern and what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(String);

impl Pattern {
    /// Parses `<OPERATION>.<STATUS>`: each side `*` or a value as notifications carry it
    /// (upper case). Refuses unknown values and pairs no notification has.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let bad = |why: String| Err(PatternError(format!("{text:?} {why}")));
        let Some((op, status)) = text.split_once('.') else {
            return bad(
                "is not <OPERATION>.<STATUS> (e.g. \"ENROLL.*\", \"*.FAILED\", \"SEARCH.MATCH\")"
                    .to_owned(),
            );
        };
        let part = |value: &str, known: &'static [&'static str]| -> Option<Part> {
            if value == "*" {
                return Some(Part::Any);
            }
            known.iter().copied().find(|k| *k == value).map(Part::Is)
        };
        let Some(operation) = part(op, OPERATIONS) else {
            return bad(format!(
                "names operation {op:?}; use * or one of {}",
                OPERATIONS.join(", ")
            ));
        };
        let Some(status_part) = part(status, STATUSES) else {
            return bad(format!(
                "names status {status:?}; use * or one of {}",
                STATUSES.join(", ")
            ));
        };
        if let (Part::Is(o), Part::Is(s)) = (&operation, &status_part) {
            if !occurs(o, s) {
                let possible: Vec<&str> =
                    STATUSES.iter().copied().filter(|s| occurs(o, s)).collect();
                return bad(format!(
                    "never matches: {o} notifications have status {}",
                    possible.join(", ")
                ));
            }
        }
        Ok(Pattern {
            operation,
            status: status_part,
        })
    }

    pub fn matches(&self, operation: &str, status: &str) -> bool {
        self.operation.matches(operation) && self.status.matches(status)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |p: &Part| match p {
            Part::Any => "*",
            Part::Is(v) => v,
        };
        write!(f, "{}.{}", side(&self.operation), side(&self.status))
    }
}

/// What an endpoint subscribed to: `All` (no list given) or at least one pattern, any of
/// which may match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Subscriptions {
    #[default]
    All,
    Only(Vec<Pattern>),
}

impl Subscriptions {
    /// Parses a list of patterns; on error, the index of the first bad one and why. An empty
    /// list is refused: it would receive nothing, which is what disabling an endpoint is for.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, (Option<usize>, PatternError)> {
        if patterns.is_empty() {
            return Err((
                None,
                PatternError(
                    "must list at least one pattern (leave it out to receive everything)"
                        .to_owned(),
                ),
            ));
        }
        let mut out = Vec::with_capacity(patterns.len());
        for (i, p) in patterns.iter().enumerate() {
            out.push(Pattern::parse(p.as_ref()).map_err(|e| (Some(i), e))?);
        }
        Ok(Subscriptions::Only(out))
    }

    /// Whether a notification with this `operation` and `status` (as sent) goes to the
    /// endpoint.
    pub fn matches(&self, operation: &str, status: &str) -> bool {
        match self {
            Subscriptions::All => true,
            Subscriptions::Only(patterns) => patterns.iter().any(|p| p.matches(operation, status)),
        }
    }

    /// The patterns as written (normalised), or `None` for everything.
    pub fn patterns(&self) -> Option<Vec<String>> {
        match self {
            Subscriptions::All => None,
            Subscriptions::Only(p) => Some(p.iter().map(Pattern::to_string).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::domain::{
        step, Decision, Input, Operation, Outcome, State, Treatment, Uguid, UpdateLabel,
    };

    fn subs(p: &[&str]) -> Subscriptions {
        Subscriptions::parse(p).unwrap()
    }

    #[test]
    fn no_list_means_every_notification() {
        assert!(Subscriptions::All.matches("SEARCH", "MATCH"));
        assert!(Subscriptions::All.matches("TREAT_EXCEPTION", "OK"));
        assert_eq!(Subscriptions::All.patterns(), None);
    }

    #[test]
    fn a_wildcard_operation_matches_that_status_of_every_operation() {
        let s = subs(&["*.FAILED"]);
        assert!(s.matches("ENROLL", "FAILED"));
        assert!(s.matches("SEARCH", "FAILED"));
        assert!(s.matches("UPDATE", "FAILED"));
        assert!(!s.matches("ENROLL", "ENROLLED"));
        assert!(!s.matches("TREAT_EXCEPTION", "OK"));
    }

    #[test]
    fn a_wildcard_status_matches_every_status_of_that_operation() {
        let s = subs(&["ENROLL.*"]);
        assert!(s.matches("ENROLL", "PENDING"));
        assert!(s.matches("ENROLL", "REVERSE_LATENT_MATCH"));
        assert!(!s.matches("TREAT_EXCEPTION", "OK"));
        assert!(!s.matches("SEARCH", "FAILED"));
    }

    #[test]
    fn an_exact_pattern_matches_only_itself_and_any_pattern_of_a_list_may_match() {
        let s = subs(&["SEARCH.MATCH", "TREAT_EXCEPTION.*"]);
        assert!(s.matches("SEARCH", "MATCH"));
        assert!(!s.matches("SEARCH", "NOT_MATCH"));
        assert!(s.matches("TREAT_EXCEPTION", "OK"));
        assert!(!s.matches("ENROLL", "EXCEPTION"));
        assert!(subs(&["*.*"]).matches("UPDATE", "PENDING"));
    }

    #[test]
    fn matching_is_exact_and_case_sensitive_on_what_is_sent() {
        let s = subs(&["ENROLL.FAILED"]);
        assert!(!s.matches("enroll", "failed"));
        assert!(!s.matches("ENROLL", "FAILED "));
    }

    #[test]
    fn patterns_print_back_as_written() {
        let s = subs(&["ENROLL.*", "*.FAILED", "TREAT_EXCEPTION.*", "SEARCH.MATCH"]);
        assert_eq!(
            s.patterns().unwrap(),
            ["ENROLL.*", "*.FAILED", "TREAT_EXCEPTION.*", "SEARCH.MATCH"]
        );
    }

    #[test]
    fn bad_patterns_are_refused_with_the_pattern_and_the_reason() {
        for (text, says) in [
            ("ENROLL", "is not <OPERATION>.<STATUS>"),
            ("", "is not <OPERATION>.<STATUS>"),
            ("ENROL.*", "names operation \"ENROL\""),
            ("enroll.*", "names operation \"enroll\""),
            ("ENROLL.DONE", "names status \"DONE\""),
            ("ENROLL.", "names status \"\""),
            ("ENROLL.FAILED.x", "names status \"FAILED.x\""),
            ("ENROLL.*.*", "names status \"*.*\""),
            ("*", "is not <OPERATION>.<STATUS>"),
            ("E*.FAILED", "names operation \"E*\""),
            ("SEARCH.ENROLLED", "never matches: SEARCH notifications have status FAILED, MATCH, NOT_MATCH, PERSON_NOT_FOUND"),
            ("TREAT_EXCEPTION.FAILED", "never matches"),
            ("ENROLL.OK", "never matches"),
            ("*.PROCESSING", "names status \"PROCESSING\""),
        ] {
            let e = Pattern::parse(text).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{text:?}")), "{text}: {e}");
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn a_list_reports_the_index_of_its_first_bad_pattern_and_may_not_be_empty() {
        let (i, e) = Subscriptions::parse(&["ENROLL.*", "SEARCH.NOPE", "x"]).unwrap_err();
        assert_eq!(i, Some(1));
        assert!(e.to_string().contains("SEARCH.NOPE"));
        let (i, e) = Subscriptions::parse::<&str>(&[]).unwrap_err();
        assert_eq!(i, None);
        assert!(e.to_string().contains("at least one"));
    }

    /// Every (operation, status) the state machine can emit, whatever the update label.
    fn emitted() -> BTreeSet<(&'static str, &'static str)> {
        let uguid = Uguid::parse("u-1").unwrap();
        let mut inputs = vec![
            Input::SentToReview,
            Input::Exception,
            Input::LatentMatch(uguid),
        ];
        inputs.extend(Outcome::ALL.iter().map(|o| Input::Outcome(*o)));
        inputs.extend(Decision::ALL.iter().map(|d| Input::Review(*d)));
        inputs.extend(Treatment::ALL.iter().map(|t| Input::Treat(*t)));
        let mut out = BTreeSet::new();
        for op in Operation::ALL {
            for state in State::ALL {
                for input in &inputs {
                    for label in UpdateLabel::ALL {
                        if let Ok(t) = step(*op, *state, input, *label) {
                            for n in &t.notifications {
                                out.insert((n.operation(), n.status()));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_table_of_possible_pairs_is_exactly_what_the_state_machine_emits() {
        let emitted = emitted();
        let table: BTreeSet<(&str, &str)> = OPERATIONS
            .iter()
            .flat_map(|o| STATUSES.iter().map(move |s| (*o, *s)))
            .filter(|(o, s)| occurs(o, s))
            .collect();
        assert_eq!(table, emitted);
    }
}
