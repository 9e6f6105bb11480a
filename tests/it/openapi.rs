//! `GET /openapi.json` against the router that serves it: every documented operation is
//! served, and for every documented path the router takes exactly the documented methods (its
//! `405`'s `Allow` header says which). That no route is served outside `routes!` (which adds the
//! documentation with the route) is checked from the sources by
//! `architecture_tests::every_api_route_is_registered_with_its_documentation`.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::harness::{spawn_app, ADMIN};

/// `path` with each `{parameter}` replaced by a value that parses (and names nothing).
fn concrete(path: &str) -> String {
    path.replace("{tguid}", "tg-openapi").replace("{id}", "1")
}

#[tokio::test]
async fn the_document_is_served_without_a_token_as_openapi_3_with_the_bearer_scheme() {
    let app = spawn_app("").await;
    let answer = app.api.get("/openapi.json", None).await;
    let document = answer.ok(200);
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        document["openapi"]
    );
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        document["components"]["schemas"]["ErrorBody"]["required"],
        serde_json::json!(["error", "message"])
    );
}

#[tokio::test]
async fn every_documented_path_takes_exactly_its_documented_methods() {
    let app = spawn_app("").await;
    let document = app.api.get("/openapi.json", None).await.ok(200);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15, "{} paths", paths.len());
    for (path, item) in paths {
        let url = format!("{}{}", app.api.base, concrete(path));
        let documented: BTreeSet<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        for method in &documented {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let response = client
                .request(method.clone(), &url)
                .bearer_auth(ADMIN)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value =
                serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null);
            assert_ne!(status, 405, "{method} {path} is documented, not served");
            assert!(
                !(status == 404
                    && body["message"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("no such route")),
                "{method} {path} is documented, not routed"
            );
        }
        // A method no route takes: the router answers 405 and lists what it serves there.
        let response = client
            .request(reqwest::Method::from_bytes(b"TRACE").unwrap(), &url)
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 405, "TRACE {path}");
        let allow = response
            .headers()
            .get("allow")
            .unwrap_or_else(|| panic!("no Allow header on the 405 of {path}"))
            .to_str()
            .unwrap()
            .to_owned();
        // HEAD comes with every GET (axum answers it from the GET handler).
        let served: BTreeSet<String> = allow
            .split(',')
            .map(|m| m.trim().to_owned())
            .filter(|m| m != "HEAD" || !documented.contains("GET"))
            .collect();
        assert_eq!(served, documented, "{path}: Allow: {allow}");
        let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(body["error"], "method_not_allowed", "{path}");
    }
}
