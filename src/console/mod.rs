//! The review console (CONTRACT §7): one page for MIR and ETR reviewers and operators, compiled
//! into the binary and served from our router. It is plain HTML, CSS and JavaScript that calls
//! the REST API with the reader's token; it holds no logic of its own about which decisions
//! exist (the API's `allowed` says). Every value from the API is written as text.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// No inline script or style, nothing from elsewhere, no framing, no form posts: the page's
/// only scripts are the ones served below, and a value that got into the DOM as markup
/// could not run.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");
const ICON: &str = include_str!("icon.svg");

/// The page and its assets. Loading them needs no token; the API calls the page makes do.
pub fn router<S: Clone + Send + Sync + 'static>() -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .routes(routes!(script))
        .routes(routes!(style))
        .routes(routes!(icon))
}

/// The review console (CONTRACT §7).
#[utoipa::path(get, path = "/console", tag = "service", security(()),
    responses((status = 200, description = "The page", content_type = "text/html", body = String)))]
async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// The console's script.
#[utoipa::path(get, path = "/console/console.js", tag = "service", security(()),
    responses((status = 200, description = "The script", content_type = "text/javascript", body = String)))]
async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// The console's style sheet.
#[utoipa::path(get, path = "/console/console.css", tag = "service", security(()),
    responses((status = 200, description = "The style sheet", content_type = "text/css", body = String)))]
async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// The console's icon.
#[utoipa::path(get, path = "/console/icon.svg", tag = "service", security(()),
    responses((status = 200, description = "The icon", content_type = "image/svg+xml", body = String)))]
async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}

/// One asset with the headers every console response carries.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Always asked again, so a new binary's page is never mixed with an old script.
        (header::CACHE_CONTROL, "no-cache"),
    ]
    .map(|(name, value): (HeaderName, &'static str)| (name, HeaderValue::from_static(value)));
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attributes of every tag in `markup`, as written.
    fn attributes(markup: &str) -> Vec<String> {
        markup
            .split('<')
            .skip(1)
            .filter_map(|tag| tag.split('>').next())
            .flat_map(|tag| tag.split_whitespace().skip(1).map(str::to_ascii_lowercase))
            .collect()
    }

    #[test]
    fn the_page_loads_only_its_own_assets_and_has_no_inline_script_or_style() {
        let lower = PAGE.to_ascii_lowercase();
        assert!(!lower.contains("<style"), "the page has a style element");
        assert!(!lower.contains("http:") && !lower.contains("https:") && !lower.contains("//"));
        for src in [
            "/console/console.js",
            "/console/console.css",
            "/console/icon.svg",
        ] {
            assert!(PAGE.contains(src), "the page does not load {src}");
        }
        for (name, markup) in [("page.html", PAGE), ("icon.svg", ICON)] {
            for attr in attributes(markup) {
                assert!(!attr.starts_with("on"), "{name}: event handler {attr}");
                assert!(!attr.starts_with("style="), "{name}: inline style {attr}");
            }
        }
        // Every script element loads a file (an inline one would be refused by the policy).
        for script in lower.split("<script").skip(1) {
            assert!(
                script.trim_start().starts_with("src="),
                "inline <script{script}"
            );
        }
    }

    #[test]
    fn the_script_never_writes_markup() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!SCRIPT.contains(sink), "console.js uses {sink}");
        }
    }
}
