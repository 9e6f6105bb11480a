//! The endpoints deliveries may be queued for and sent to, shared by the store's writer (it
//! fans notifications out by it and hands deliveries out only to its enabled endpoints) and
//! the dispatcher (it sends every attempt by it).
//!
//! Only the writer changes it, through its [`Publisher`], right after the COMMIT that changed
//! the database the same way and before it hands anything out or answers anyone: so no
//! delivery reaches the dispatcher for an endpoint the registry does not hold, and no
//! endpoint change is answered before the sender uses it.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};

use super::Endpoint;

/// What the sender keeps for one destination, opaque here (see [`Registered::sender`]).
type SenderSlot = OnceLock<Box<dyn Any + Send + Sync>>;

/// An endpoint as the registry holds it, with what the sender keeps for its destination.
pub struct Registered {
    pub endpoint: Endpoint,
    sender: Arc<SenderSlot>,
}

impl Registered {
    /// What the sender keeps for this endpoint's destination (its connections, a token
    /// cache), made by `make` on first use and kept as long as the destination stays the
    /// same, whatever else of the endpoint changes. A registry serves one kind of sender:
    /// asking for another type than the first one made is a bug, and panics.
    pub fn sender<T: Any + Send + Sync>(&self, make: impl FnOnce(&Endpoint) -> T) -> &T {
        self.sender
            .get_or_init(|| Box::new(make(&self.endpoint)))
            .downcast_ref()
            .expect("a registry serves one kind of sender")
    }
}

impl fmt::Debug for Registered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.endpoint.fmt(f)
    }
}

/// The endpoints at one moment, sorted by id; cheap to clone.
#[derive(Clone, Default, Debug)]
pub struct Snapshot(Arc<[Arc<Registered>]>);

impl Snapshot {
    pub fn get(&self, id: &str) -> Option<&Arc<Registered>> {
        let at = self
            .0
            .binary_search_by(|r| r.endpoint.id.as_str().cmp(id))
            .ok()?;
        Some(&self.0[at])
    }

    /// In id order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Registered>> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The endpoints as they are now (`endpoints`), each keeping what the sender made for it
    /// here when its destination did not change, so that connections and tokens survive an
    /// endpoint being disabled, enabled or re-subscribed.
    pub fn succeeded_by(&self, endpoints: Vec<Endpoint>) -> Snapshot {
        let mut next: Vec<Arc<Registered>> = endpoints
            .into_iter()
            .map(|endpoint| match self.get(&endpoint.id) {
                Some(old) if old.endpoint == endpoint => old.clone(),
                Some(old) if old.endpoint.destination == endpoint.destination => {
                    Arc::new(Registered {
                        endpoint,
                        sender: old.sender.clone(),
                    })
                }
                _ => Arc::new(Registered {
                    endpoint,
                    sender: Arc::default(),
                }),
            })
            .collect();
        next.sort_by(|a, b| a.endpoint.id.cmp(&b.endpoint.id));
        Snapshot(next.into())
    }
}

/// A reading handle on the registry; cheap to clone. Reads take a lock only long enough to
/// copy a pointer: never across an await.
#[derive(Clone)]
pub struct Registry {
    current: Arc<RwLock<Snapshot>>,
}

impl Registry {
    /// The endpoint with this id as it is now.
    pub fn get(&self, id: &str) -> Option<Arc<Registered>> {
        self.current.read().expect("registry").get(id).cloned()
    }

    /// Every endpoint as it is now.
    pub fn snapshot(&self) -> Snapshot {
        self.current.read().expect("registry").clone()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// The one handle that changes the registry, owned by the store's writer.
pub struct Publisher {
    registry: Registry,
}

impl Publisher {
    /// A new registry holding `endpoints`.
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        let snapshot = Snapshot::default().succeeded_by(endpoints);
        Publisher {
            registry: Registry {
                current: Arc::new(RwLock::new(snapshot)),
            },
        }
    }

    /// A reading handle for whoever sends or shows endpoints.
    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    pub fn current(&self) -> Snapshot {
        self.registry.snapshot()
    }

    /// Makes `snapshot` what every reader sees from now on.
    pub fn publish(&self, snapshot: Snapshot) {
        *self.registry.current.write().expect("registry") = snapshot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{Destination, HttpDestination};

    fn endpoint(id: &str, url: &str) -> Endpoint {
        Endpoint::http(id, url.parse().unwrap())
    }

    fn url_of(r: &Registered) -> String {
        match &r.endpoint.destination {
            Destination::Http(HttpDestination { url, .. }) => url.to_string(),
            Destination::Amqp(_) => unreachable!(),
        }
    }

    #[test]
    fn readers_see_what_was_published_and_nothing_before() {
        let publisher =
            Publisher::new(vec![endpoint("b", "http://b/"), endpoint("a", "http://a/")]);
        let registry = publisher.registry();
        let all = registry.snapshot();
        assert_eq!(registry_ids(&all), ["a", "b"], "sorted by id");
        let next = publisher.current().succeeded_by(vec![
            endpoint("a", "http://a2/"),
            endpoint("c", "http://c/"),
        ]);
        assert_eq!(url_of(&registry.get("a").unwrap()), "http://a/");
        assert!(registry.get("c").is_none(), "not before it is published");
        publisher.publish(next);
        assert_eq!(url_of(&registry.get("a").unwrap()), "http://a2/");
        assert!(registry.get("b").is_none());
        assert!(registry.get("c").is_some());
    }

    fn registry_ids(s: &Snapshot) -> Vec<&str> {
        s.iter().map(|r| r.endpoint.id.as_str()).collect()
    }

    #[test]
    fn what_the_sender_made_lives_as_long_as_the_destination() {
        let publisher = Publisher::new(vec![endpoint("a", "http://a/")]);
        let made = |n: u32| move |_: &Endpoint| n;
        assert_eq!(*publisher.current().get("a").unwrap().sender(made(1)), 1);

        let mut disabled = endpoint("a", "http://a/");
        disabled.enabled = false;
        publisher.publish(publisher.current().succeeded_by(vec![disabled]));
        let a = publisher.current().get("a").unwrap().clone();
        assert!(!a.endpoint.enabled);
        assert_eq!(*a.sender(made(2)), 1, "kept: same destination");

        publisher.publish(
            publisher
                .current()
                .succeeded_by(vec![endpoint("a", "http://moved/")]),
        );
        let a = publisher.current().get("a").unwrap().clone();
        assert_eq!(*a.sender(made(3)), 3, "made again for the new destination");
    }
}
