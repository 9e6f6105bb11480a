//! The transition function: one exhaustive `match` over (state, input) that returns the next
//! state and the notifications to record, or why the input is refused (a Mealy machine).

use super::ids::Uguid;
use super::notification::{Notification, NotificationKind};
use super::vocabulary::{Decision, Operation, Outcome, State, Treatment, UpdateLabel};

impl Outcome {
    fn state(self) -> State {
        match self {
            Outcome::Enrolled => State::Enrolled,
            Outcome::Failed => State::Failed,
            Outcome::Match => State::Match,
            Outcome::NotMatch => State::NotMatch,
            Outcome::PersonNotFound => State::PersonNotFound,
        }
    }

    /// Whether a transaction of `op` can end this way (ENROLLED is not a search result).
    fn fits(self, op: Operation) -> bool {
        match (op, self) {
            (Operation::Enroll | Operation::Update, Outcome::Enrolled | Outcome::Failed) => true,
            (Operation::Enroll | Operation::Update, _) => false,
            (Operation::Search, Outcome::Enrolled) => false,
            (Operation::Search, _) => true,
        }
    }
}

impl Operation {
    /// Only enrolls and updates go to manual review, exception treatment or latent search.
    fn is_enrollment(self) -> bool {
        match self {
            Operation::Enroll | Operation::Update => true,
            Operation::Search => false,
        }
    }
}

/// The result of `treatment` on an EXCEPTION transaction of `op` (CONTRACT §2's treatment
/// table); `None` where the treatment is not allowed for that operation.
pub fn treatment_result(op: Operation, treatment: Treatment) -> Option<State> {
    use Treatment::*;
    match (op, treatment) {
        (Operation::Enroll, SameFingers) => Some(State::Failed),
        (Operation::Enroll, DifferentFingers) => Some(State::Enrolled),
        (Operation::Enroll, MergeTransactions) => Some(State::Enrolled),
        (Operation::Enroll, Recollect) => Some(State::Failed),
        (Operation::Enroll, IncorrectEnroll) => None,
        (Operation::Update, SameFingers) => Some(State::Enrolled),
        (Operation::Update, DifferentFingers) => Some(State::Failed),
        (Operation::Update, MergeTransactions) => None,
        (Operation::Update, Recollect) => Some(State::Failed),
        (Operation::Update, IncorrectEnroll) => Some(State::Enrolled),
        // Searches never reach EXCEPTION; the state check refuses them first.
        (Operation::Search, _) => None,
    }
}

/// Something that moves a transaction: a back-office event or a reviewer's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Processing finished with a final result.
    Outcome(Outcome),
    /// GBDS sent the transaction to manual review (MIR).
    SentToReview,
    /// GBDS raised a biometric exception (ETR).
    Exception,
    /// An unsolved latent matched; processing goes on.
    LatentMatch(Uguid),
    /// A MIR decision.
    Review(Decision),
    /// An ETR decision.
    Treat(Treatment),
}

impl Input {
    /// A short human name, used in refusals and in the transition log.
    pub fn describe(&self) -> String {
        match self {
            Input::Outcome(o) => format!("event {o}"),
            Input::SentToReview => "event PENDING".to_owned(),
            Input::Exception => "event EXCEPTION".to_owned(),
            Input::LatentMatch(_) => "event REVERSE_LATENT_MATCH".to_owned(),
            Input::Review(d) => format!("review {d}"),
            Input::Treat(t) => format!("treatment {t}"),
        }
    }
}

/// An allowed move: where the transaction goes and what is sent, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub to: State,
    pub notifications: Vec<Notification>,
}

/// Why an input was refused; every refusal leaves the transaction as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{input} is not allowed on a {op} transaction in state {state}")]
    NotInState {
        op: Operation,
        state: State,
        input: String,
    },
    #[error("treatment {treatment} is not allowed for {op} transactions")]
    TreatmentNotAllowed { op: Operation, treatment: Treatment },
}

/// The state machine of CONTRACT §2: what `input` does to a transaction of `op` in `state`.
pub fn step(
    op: Operation,
    state: State,
    input: &Input,
    update_label: UpdateLabel,
) -> Result<Transition, Refusal> {
    let refuse = || Refusal::NotInState {
        op,
        state,
        input: input.describe(),
    };
    let says = |kind: NotificationKind| Notification::new(op, update_label, kind);
    let to = |to: State, notifications: Vec<Notification>| Ok(Transition { to, notifications });

    match state {
        State::Processing => match input {
            Input::Outcome(outcome) if outcome.fits(op) => {
                let to_state = outcome.state();
                to(to_state, vec![says(NotificationKind::Status(to_state))])
            }
            Input::Outcome(_) => Err(refuse()),
            Input::SentToReview if op.is_enrollment() => to(
                State::Pending,
                vec![says(NotificationKind::Status(State::Pending))],
            ),
            Input::Exception if op.is_enrollment() => to(
                State::Exception,
                vec![says(NotificationKind::Status(State::Exception))],
            ),
            Input::LatentMatch(uguid) if op.is_enrollment() => to(
                State::Processing,
                vec![says(NotificationKind::ReverseLatentMatch(uguid.clone()))],
            ),
            Input::SentToReview | Input::Exception | Input::LatentMatch(_) => Err(refuse()),
            Input::Review(_) | Input::Treat(_) => Err(refuse()),
        },
        State::Pending => match input {
            // A search never reaches PENDING; refuse rather than invent a transition for it.
            Input::Review(_) if !op.is_enrollment() => Err(refuse()),
            Input::Review(Decision::Approve) => to(State::Processing, vec![]),
            Input::Review(Decision::Reject) => to(
                State::Failed,
                vec![says(NotificationKind::Status(State::Failed))],
            ),
            Input::Outcome(_)
            | Input::SentToReview
            | Input::Exception
            | Input::LatentMatch(_)
            | Input::Treat(_) => Err(refuse()),
        },
        State::Exception => match input {
            Input::Treat(_) if !op.is_enrollment() => Err(refuse()),
            Input::Treat(treatment) => match treatment_result(op, *treatment) {
                Some(final_state) => to(
                    final_state,
                    vec![
                        says(NotificationKind::Treated(*treatment)),
                        says(NotificationKind::Status(final_state)),
                    ],
                ),
                None => Err(Refusal::TreatmentNotAllowed {
                    op,
                    treatment: *treatment,
                }),
            },
            Input::Outcome(_)
            | Input::SentToReview
            | Input::Exception
            | Input::LatentMatch(_)
            | Input::Review(_) => Err(refuse()),
        },
        State::Enrolled
        | State::Failed
        | State::Match
        | State::NotMatch
        | State::PersonNotFound => Err(refuse()),
    }
}

#[cfg(test)]
mod tests;
