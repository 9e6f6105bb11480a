//! The GBDS notification state machine: operations, states, inputs and the notifications each
//! transition emits (CONTRACT §2–§3). Pure: no I/O, no async, no clock.

mod ids;
mod machine;
mod notification;
mod review;
pub mod subscription;
mod vocabulary;

pub use ids::{IdError, Tguid, Uguid};
pub use machine::{step, Input, Refusal, Transition};
pub use notification::{Notification, NotificationKind};
pub use review::{allowed, Allowed};
pub use subscription::{Pattern, PatternError, Subscriptions};
pub use vocabulary::{Decision, Operation, Outcome, State, Treatment, UpdateLabel};
