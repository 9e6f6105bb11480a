//! The review console (CONTRACT §7) and the API it stands on.
//!
//! - `api`: decisions with `decision_id` and `comment`, `allowed`, `/v1/queues`, and the
//!   console's own responses (its page and headers), over HTTP.
//! - `browser`: chromedriver and headless Chromium for the page tests (skipped loudly when
//!   they are not installed, unless CI=true).
//! - `pages`: a reviewer and an operator using the real page in Chromium.

mod api;
mod browser;
mod pages;
