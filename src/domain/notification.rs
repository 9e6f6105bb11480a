//! A notification and its exact wire body (CONTRACT §3): compact JSON, keys in document order.

use serde::Serialize;

use super::ids::{Tguid, Uguid};
use super::vocabulary::{Operation, State, Treatment, UpdateLabel};

/// What a notification says about its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationKind {
    /// `{op, tguid, status}`: the transaction reached `State`.
    Status(State),
    /// `{op, tguid, "REVERSE_LATENT_MATCH", uguid}`.
    ReverseLatentMatch(Uguid),
    /// `{"TREAT_EXCEPTION", tguid, "OK", treatment}`.
    Treated(Treatment),
}

/// One notification, before it is bound to a tguid and rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The operation label of the transaction (UPDATE already mapped by the setting).
    label: &'static str,
    pub kind: NotificationKind,
}

/// Field order is the wire order; `serde_json` keeps a struct's declaration order.
#[derive(Serialize)]
struct Body<'a> {
    operation: &'a str,
    tguid: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    uguid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    treatment: Option<&'a str>,
}

impl Notification {
    pub(super) fn new(op: Operation, update_label: UpdateLabel, kind: NotificationKind) -> Self {
        let label = match op {
            Operation::Enroll => "ENROLL",
            Operation::Update => update_label.as_str(),
            Operation::Search => "SEARCH",
        };
        Self { label, kind }
    }

    /// The `operation` field: the transaction's label, or TREAT_EXCEPTION.
    pub fn operation(&self) -> &'static str {
        match self.kind {
            NotificationKind::Treated(_) => "TREAT_EXCEPTION",
            NotificationKind::Status(_) | NotificationKind::ReverseLatentMatch(_) => self.label,
        }
    }

    /// The `status` field.
    pub fn status(&self) -> &'static str {
        match &self.kind {
            NotificationKind::Status(state) => state.as_str(),
            NotificationKind::ReverseLatentMatch(_) => "REVERSE_LATENT_MATCH",
            NotificationKind::Treated(_) => "OK",
        }
    }

    /// The exact bytes POSTed to receivers.
    pub fn body(&self, tguid: &Tguid) -> Vec<u8> {
        let (uguid, treatment) = match &self.kind {
            NotificationKind::Status(_) => (None, None),
            NotificationKind::ReverseLatentMatch(u) => (Some(u.as_str()), None),
            NotificationKind::Treated(t) => (None, Some(t.as_str())),
        };
        let body = Body {
            operation: self.operation(),
            tguid: tguid.as_str(),
            status: self.status(),
            uguid,
            treatment,
        };
        serde_json::to_vec(&body).expect("a struct of strings always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tg() -> Tguid {
        Tguid::parse("tg-1").unwrap()
    }

    #[test]
    fn a_status_body_has_operation_tguid_status_in_that_order() {
        let n = Notification::new(
            Operation::Enroll,
            UpdateLabel::Enroll,
            NotificationKind::Status(State::Enrolled),
        );
        assert_eq!(
            n.body(&tg()),
            br#"{"operation":"ENROLL","tguid":"tg-1","status":"ENROLLED"}"#
        );
    }

    #[test]
    fn a_latent_match_body_ends_with_the_uguid() {
        let n = Notification::new(
            Operation::Update,
            UpdateLabel::Enroll,
            NotificationKind::ReverseLatentMatch(Uguid::parse("ul-9").unwrap()),
        );
        assert_eq!(
            n.body(&tg()),
            br#"{"operation":"ENROLL","tguid":"tg-1","status":"REVERSE_LATENT_MATCH","uguid":"ul-9"}"#
        );
    }

    #[test]
    fn a_treatment_body_is_labelled_treat_exception_whatever_the_operation() {
        let n = Notification::new(
            Operation::Update,
            UpdateLabel::Update,
            NotificationKind::Treated(Treatment::IncorrectEnroll),
        );
        assert_eq!(
            n.body(&tg()),
            br#"{"operation":"TREAT_EXCEPTION","tguid":"tg-1","status":"OK","treatment":"INCORRECT_ENROLL"}"#
        );
    }

    #[test]
    fn updates_are_labelled_update_only_when_the_setting_says_so() {
        let status = NotificationKind::Status(State::Failed);
        let default = Notification::new(Operation::Update, UpdateLabel::Enroll, status.clone());
        let switched = Notification::new(Operation::Update, UpdateLabel::Update, status);
        assert_eq!(default.operation(), "ENROLL");
        assert_eq!(switched.operation(), "UPDATE");
    }
}
