//! A development receiver (`gbds-notifier receive`): prints every notification it is sent and
//! whether its signatures verify, and answers with a chosen status.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

use crate::delivery::signing;

/// What a receiver concludes about one POST's signatures.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `webhook-signature` verified (None: no secret given or header absent).
    pub standard: Option<bool>,
    /// `X-Signature` verified.
    pub plain: Option<bool>,
}

/// Verifies a POST the way a receiver should: recompute both signatures from the secret and
/// compare. (A real receiver also rejects a `webhook-timestamp` far from its clock.)
pub fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Verdict {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let standard = match (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) {
        (Some(id), Some(ts), Some(sigs)) => Some(ts.parse::<i64>().is_ok_and(|ts| {
            let expected = signing::standard_signature(secret, id, ts, body);
            sigs.split(' ').any(|s| s == expected)
        })),
        _ => None,
    };
    let plain = header("x-signature")
        .map(|s| s.eq_ignore_ascii_case(&signing::plain_signature(secret, body)));
    Verdict { standard, plain }
}

/// Serves on `listen` until interrupted, printing one line per notification.
pub async fn serve(
    listen: SocketAddr,
    secret: Option<String>,
    status: StatusCode,
) -> anyhow::Result<()> {
    let app = Router::new().fallback(post(move |headers: HeaderMap, body: Bytes| {
        let secret = secret.clone();
        async move {
            let id = headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            let check = match &secret {
                Some(s) => {
                    let v = verify(s, &headers, &body);
                    let show = |r: Option<bool>| match r {
                        Some(true) => "ok",
                        Some(false) => "BAD",
                        None => "absent",
                    };
                    format!(
                        " webhook-signature={} x-signature={}",
                        show(v.standard),
                        show(v.plain)
                    )
                }
                None => String::new(),
            };
            println!("{id}{check} {}", String::from_utf8_lossy(&body));
            status
        }
    }));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!(
        "receiving on http://{}/ (answering {})",
        listener.local_addr()?,
        status.as_u16()
    );
    axum::serve(listener, app).await?;
    Ok(())
}
