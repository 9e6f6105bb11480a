//! Readiness: the conditions the service needs to take writes and send notifications, each
//! reported by the part that owns it (the writer, the dispatcher, the store's file or
//! database, the inbound consumer). `/readyz` answers from it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// A part of the service that can stop the whole from being ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// The thread or task that commits writes.
    Writer,
    /// The loop that claims and sends deliveries.
    Dispatcher,
    /// The database the writer commits to: its file, its disk, its server, its integrity.
    Store,
    /// The inbound message consumer, when one is configured.
    Consumer,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Writer => "writer",
            Component::Dispatcher => "dispatcher",
            Component::Store => "store",
            Component::Consumer => "consumer",
        }
    }
}

/// The service's readiness: which components are failing now, and why. Cheap to clone; every
/// clone sees the same conditions.
#[derive(Debug, Clone, Default)]
pub struct Health {
    failing: Arc<Mutex<BTreeMap<Component, String>>>,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `component` as failing for `reason`; logs only when the condition changes, so
    /// that a caller may report the same failure on every attempt.
    pub fn fail(&self, component: Component, reason: impl Into<String>) {
        let reason = reason.into();
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        if failing.get(&component) != Some(&reason) {
            tracing::error!(component = component.as_str(), %reason, "not ready");
            failing.insert(component, reason);
        }
    }

    /// Marks `component` as not ready yet for `reason`, as it is expected to be for a while
    /// (starting up): logged at info, not as an error.
    pub fn wait_for(&self, component: Component, reason: impl Into<String>) {
        let reason = reason.into();
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        if failing.get(&component) != Some(&reason) {
            tracing::info!(component = component.as_str(), %reason, "not ready yet");
            failing.insert(component, reason);
        }
    }

    /// Marks `component` as working again.
    pub fn recover(&self, component: Component) {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        if failing.remove(&component).is_some() {
            tracing::info!(component = component.as_str(), "ready again");
        }
    }

    /// The failing components and their reasons, in a stable order; empty when ready.
    pub fn problems(&self) -> Vec<(Component, String)> {
        let failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        failing.iter().map(|(c, r)| (*c, r.clone())).collect()
    }

    pub fn is_ready(&self) -> bool {
        self.failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Why `component` is failing, if it is.
    pub fn reason(&self, component: Component) -> Option<String> {
        let failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        failing.get(&component).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_is_ready_until_a_component_fails_and_again_once_it_recovers() {
        let health = Health::new();
        let seen_by_api = health.clone();
        assert!(seen_by_api.is_ready());
        health.fail(Component::Store, "the database file was deleted");
        health.fail(Component::Writer, "the writer thread stopped");
        assert!(!seen_by_api.is_ready());
        assert_eq!(
            seen_by_api.problems(),
            [
                (Component::Writer, "the writer thread stopped".to_owned()),
                (Component::Store, "the database file was deleted".to_owned()),
            ]
        );
        health.recover(Component::Writer);
        assert_eq!(
            seen_by_api.reason(Component::Store).as_deref(),
            Some("the database file was deleted")
        );
        health.recover(Component::Store);
        assert!(seen_by_api.is_ready());
        assert!(seen_by_api.problems().is_empty());
    }
}
