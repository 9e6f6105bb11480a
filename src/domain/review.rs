//! What a reviewer may decide now: the MIR decisions and ETR treatments that the state machine
//! accepts for a transaction's (operation, state), found by asking `step`, not kept as a table.

use super::machine::{step, Input};
use super::vocabulary::{Decision, Operation, State, Treatment, UpdateLabel};

/// The reviewer inputs `step` accepts now, split by the call that takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    /// `POST …/review` decisions (a PENDING transaction).
    pub decisions: Vec<Decision>,
    /// `POST …/treatment` treatments (an EXCEPTION transaction of an operation that has them).
    pub treatments: Vec<Treatment>,
}

/// Every review and treatment input that `step` would accept on a transaction of `op` in
/// `state`, in the order of the contract's tables. Empty in any other state.
pub fn allowed(op: Operation, state: State) -> Allowed {
    // The update label changes only the notifications' `operation` field, never whether an
    // input is accepted.
    let accepts = |input: Input| step(op, state, &input, UpdateLabel::Enroll).is_ok();
    Allowed {
        decisions: Decision::ALL
            .iter()
            .copied()
            .filter(|d| accepts(Input::Review(*d)))
            .collect(),
        treatments: Treatment::ALL
            .iter()
            .copied()
            .filter(|t| accepts(Input::Treat(*t)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Treatment::*;

    #[test]
    fn a_pending_enrollment_takes_approve_and_reject_and_no_treatment() {
        for op in [Operation::Enroll, Operation::Update] {
            let a = allowed(op, State::Pending);
            assert_eq!(a.decisions, [Decision::Approve, Decision::Reject], "{op}");
            assert!(a.treatments.is_empty(), "{op}");
        }
    }

    #[test]
    fn an_update_in_exception_is_not_offered_merge_transactions() {
        let a = allowed(Operation::Update, State::Exception);
        assert_eq!(
            a.treatments,
            [SameFingers, DifferentFingers, Recollect, IncorrectEnroll]
        );
        assert!(a.decisions.is_empty());
    }

    #[test]
    fn an_enroll_in_exception_is_not_offered_incorrect_enroll() {
        let a = allowed(Operation::Enroll, State::Exception);
        assert_eq!(
            a.treatments,
            [SameFingers, DifferentFingers, MergeTransactions, Recollect]
        );
        assert!(a.decisions.is_empty());
    }

    #[test]
    fn nothing_is_offered_outside_the_review_queues() {
        for op in Operation::ALL {
            for state in State::ALL {
                if matches!(state, State::Pending | State::Exception) && *op != Operation::Search {
                    continue;
                }
                assert_eq!(allowed(*op, *state), Allowed::default(), "{op} {state}");
            }
        }
    }

    #[test]
    fn every_offered_input_is_one_step_accepts_and_every_other_is_refused() {
        for op in Operation::ALL {
            for state in State::ALL {
                let a = allowed(*op, *state);
                for d in Decision::ALL {
                    let ok = step(*op, *state, &Input::Review(*d), UpdateLabel::Update).is_ok();
                    assert_eq!(a.decisions.contains(d), ok, "{op} {state} {d}");
                }
                for t in Treatment::ALL {
                    let ok = step(*op, *state, &Input::Treat(*t), UpdateLabel::Update).is_ok();
                    assert_eq!(a.treatments.contains(t), ok, "{op} {state} {t}");
                }
            }
        }
    }
}
