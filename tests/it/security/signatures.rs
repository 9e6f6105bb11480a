//! Signatures during a secret rotation: receivers holding either secret verify every
//! notification; one secret gives one signature and a matching X-Signature.

use gbds_notifier::receiver::verify;

use super::{endpoint, enrolled, header, start};
use crate::harness::Receiver;

const NEW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD_SECRET: &str = "whsec_dGhlLW9sZC1zZWNyZXQtb2YtdGhlLWVuZHBvaW50";

#[tokio::test]
async fn during_a_rotation_receivers_holding_either_secret_verify_every_notification() {
    let rx = Receiver::start().await;
    let app = start(&endpoint(
        &rx.url,
        &format!("secrets = [\"{NEW_SECRET}\", \"{OLD_SECRET}\"]"),
    ))
    .await;
    enrolled(&app.api, "rot-1").await;
    let got = rx.at_least(1).await;
    let post = &got[0];
    assert_eq!(
        &post.body[..],
        br#"{"operation":"ENROLL","tguid":"rot-1","status":"ENROLLED"}"#
    );
    let sigs: Vec<&str> = header(post, "webhook-signature").split(' ').collect();
    assert_eq!(sigs.len(), 2, "{sigs:?}");
    assert!(sigs.iter().all(|s| s.starts_with("v1,")));

    // A receiver still on the old secret and one already on the new both verify the
    // Standard Webhooks signature; X-Signature follows the newest secret.
    let with_new = verify(NEW_SECRET, &post.headers, &post.body);
    assert_eq!(
        (with_new.standard, with_new.plain),
        (Some(true), Some(true))
    );
    let with_old = verify(OLD_SECRET, &post.headers, &post.body);
    assert_eq!(
        (with_old.standard, with_old.plain),
        (Some(true), Some(false))
    );
    let stranger = verify("whsec_c29tZW9uZS1lbHNl", &post.headers, &post.body);
    assert_eq!(stranger.standard, Some(false));
    app.stop().await;
}

#[tokio::test]
async fn a_single_secret_still_sends_one_signature_and_a_matching_x_signature() {
    let rx = Receiver::start().await;
    let app = start(&endpoint(&rx.url, &format!("secret = \"{NEW_SECRET}\""))).await;
    enrolled(&app.api, "one-1").await;
    let post = &rx.at_least(1).await[0];
    assert_eq!(header(post, "webhook-signature").split(' ').count(), 1);
    let v = verify(NEW_SECRET, &post.headers, &post.body);
    assert_eq!((v.standard, v.plain), (Some(true), Some(true)));
    app.stop().await;
}
