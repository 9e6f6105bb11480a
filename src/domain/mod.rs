//! The GBDS notification state machine: operations, states, inputs and the notifications each
//! transition emits (CONTRACT §2–§3). Pure: no I/O, no async, no clock.

mod ids;
mod machine;
mod notification;
mod review;
pub mod subscription;

pub use ids::{IdError, Tguid, Uguid};
pub use machine::{
    step, Decision, Input, Operation, Outcome, Refusal, State, Transition, Treatment, UpdateLabel,
};
pub use notification::{Notification, NotificationKind};
pub use review::{allowed, Allowed};
pub use subscription::{Pattern, PatternError, Subscriptions};
