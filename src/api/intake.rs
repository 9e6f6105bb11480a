//! Request bodies, read in full before a call takes an API slot: from a caller with a valid
//! token only, under a total deadline (`[api] body_read_timeout`) and within a memory budget
//! shared by every body held (`[api] body_memory_budget`, an eighth of it kept for small
//! bodies). So a sender that trickles its body holds no slot, a bounded share of memory, and
//! not for long.
//!
//! What must be refused after the route's own checks (a body over 2 MB is 413 only once the
//! role was found allowed, CONTRACT §4's precedence) travels to the handler inside the body,
//! as the error its `read_body` returns.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use super::request::{Auth, Deferred, DRAIN_LIMIT, MAX_BODY};
use crate::config::{ApiSettings, Role};

/// Every role: the intake asks only that the token is valid; the route checks the role.
const ANY_ROLE: &[Role] = &[Role::Ingest, Role::Review];

/// Bodies up to this size (every call of this API is far smaller) are "small".
const SMALL_BODY: usize = 64 * 1024;

/// The limits every body is read under, shared by all connections.
pub struct Intake {
    deadline: Duration,
    pools: Arc<Pools>,
    auth: Arc<Auth>,
}

/// The memory budget, one permit per byte, in two parts: an eighth of it only for small
/// bodies, so that large bodies sent slowly cannot take all of it and leave the API's
/// ordinary calls (a few hundred bytes each) nothing but 503s.
struct Pools {
    small: Arc<Semaphore>,
    large: Arc<Semaphore>,
    /// What counts as small: `SMALL_BODY`, or the small part if that is less.
    small_body: usize,
    /// The largest body that can be held at all: 2 MB, or the large part if that is less.
    largest: usize,
}

impl Intake {
    pub fn new(limits: &ApiSettings, auth: Arc<Auth>) -> Self {
        let small = limits.body_memory_budget / 8;
        let large = limits.body_memory_budget - small;
        let small_body = SMALL_BODY.min(small);
        Self {
            deadline: limits.body_read_timeout,
            pools: Arc::new(Pools {
                small: Arc::new(Semaphore::new(small)),
                large: Arc::new(Semaphore::new(large)),
                small_body,
                largest: MAX_BODY.min(large.max(small_body)),
            }),
            auth,
        }
    }

    /// The middleware: reads the body, then lets the call go on with it in memory.
    pub async fn read_ahead(self: Arc<Self>, req: Request, next: Next) -> Response {
        let (parts, body) = req.into_parts();
        if body.is_end_stream() {
            return next.run(Request::from_parts(parts, body)).await;
        }
        // Nobody without a valid token gets the service to wait for or hold a body.
        if let Err(e) = self.auth.check(&parts.headers, ANY_ROLE) {
            return e.into_response();
        }
        let received = match tokio::time::timeout(self.deadline, self.receive(body)).await {
            Ok(Ok(received)) => received,
            Ok(Err(refusal)) => return refusal,
            Err(_) => {
                return ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!(
                        "the request body did not arrive within {} ms",
                        self.deadline.as_millis()
                    ),
                )
                .into_response()
            }
        };
        next.run(Request::from_parts(parts, Body::new(received)))
            .await
    }

    async fn receive(&self, mut body: Body) -> Result<Received, Response> {
        let announced = body.size_hint().exact();
        if announced.is_some_and(|n| n > self.pools.largest as u64) {
            return Ok(self.drain(body, 0).await);
        }
        let mut held = Held::new(self.pools.clone());
        if let Some(n) = announced {
            held.reserve(n as usize).map_err(over_budget)?;
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::malformed(format!("could not read the body: {e}")).into_response()
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            let total = held.buf.len() + data.len();
            if total > self.pools.largest {
                drop(held);
                return Ok(self.drain(body, total).await);
            }
            held.reserve(total).map_err(over_budget)?;
            held.buf.extend_from_slice(&data);
        }
        Ok(Received::Data(Some(held.into_bytes())))
    }

    /// Reads and drops the rest of a body too large to hold, so that its sender gets the 413
    /// rather than a reset connection; past `DRAIN_LIMIT` the connection is cut.
    async fn drain(&self, mut body: Body, mut seen: usize) -> Received {
        while seen <= DRAIN_LIMIT {
            match body.frame().await {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, Bytes::len),
                Some(Err(_)) | None => break,
            }
        }
        let largest = self.pools.largest;
        Received::Refused(Some(Deferred(if largest < MAX_BODY {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is larger than {largest} bytes (api.body_memory_budget)"),
            )
        } else {
            ApiError::too_large()
        })))
    }
}

/// A body being read, and the budget it holds: never less than its buffer's capacity, from
/// the small part while it is small and from the large part once it is not.
struct Held {
    buf: Vec<u8>,
    permit: Option<OwnedSemaphorePermit>,
    large: bool,
    pools: Arc<Pools>,
}

impl Held {
    fn new(pools: Arc<Pools>) -> Self {
        Self {
            buf: Vec::new(),
            permit: None,
            large: false,
            pools,
        }
    }

    fn reserved(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Makes room for `total` bytes, growing by doubling (as a `Vec` would) but never past
    /// what the budget grants: a body that finds the budget spent is refused, not queued.
    fn reserve(&mut self, total: usize) -> Result<(), OverBudget> {
        let reserved = self.reserved();
        if total <= reserved {
            return Ok(());
        }
        let pools = &self.pools;
        let mut want = total.max(reserved * 2).min(pools.largest.max(total));
        let large = total > pools.small_body;
        if !large {
            want = want.min(pools.small_body);
        }
        let pool = if large { &pools.large } else { &pools.small };
        // Moving to the large part: all of it from there, and the small share given back.
        let more = if large == self.large {
            want - reserved
        } else {
            want
        };
        let more = u32::try_from(more).map_err(|_| OverBudget)?;
        let permit = pool
            .clone()
            .try_acquire_many_owned(more)
            .map_err(|_| OverBudget)?;
        match &mut self.permit {
            Some(held) if large == self.large => held.merge(permit),
            _ => self.permit = Some(permit),
        }
        self.large = large;
        self.buf.reserve_exact(want - self.buf.len());
        Ok(())
    }

    /// The body as `Bytes` that give its share of the budget back when the last copy is
    /// dropped, i.e. once the handler is done with it.
    fn into_bytes(self) -> Bytes {
        Bytes::from_owner(Owned {
            buf: self.buf,
            _permit: self.permit,
        })
    }
}

struct Owned {
    buf: Vec<u8>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

/// The budget had no room for a body.
struct OverBudget;

fn over_budget(_: OverBudget) -> Response {
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "the request bodies being received hold all the memory set aside for them \
         (api.body_memory_budget); retry shortly",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The body as the handler sees it: the bytes, already in memory, or a refusal.
enum Received {
    Data(Option<Bytes>),
    Refused(Option<Deferred>),
}

impl hyper::body::Body for Received {
    type Data = Bytes;
    type Error = Deferred;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Deferred>>> {
        Poll::Ready(match self.get_mut() {
            Received::Data(data) => data.take().map(|d| Ok(Frame::data(d))),
            Received::Refused(refusal) => refusal.take().map(Err),
        })
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Received::Data(data) => data.is_none(),
            Received::Refused(refusal) => refusal.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Received::Data(Some(d)) => SizeHint::with_exact(d.len() as u64),
            _ => SizeHint::with_exact(0),
        }
    }
}
