//! `GET /openapi.json` documents every route the router serves, and `GET /docs` renders it.
//!
//! The route list below is written by hand from the contract (§3–§4, §7) on purpose: a route
//! added to a router without a `#[utoipa::path]` (or listed in no module's `ApiDoc`) fails
//! here rather than silently missing from the document.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::spawn_app;

/// The routes that need no access token.
const PUBLIC: &[&str] = &[
    "/auth/register",
    "/auth/login",
    "/auth/refresh",
    "/health",
    "/health/live",
    "/health/ready",
    "/health/cache",
    "/metrics",
];

/// GET routes behind the response cache (a `cached(...)` layer in their router).
const CACHED: &[&str] = &[
    "/categories",
    "/tax-rates",
    "/contacts",
    "/items",
    "/items/{id}",
    "/inventory/stock-levels",
    "/dashboard/kpis",
    "/dashboard/sales-chart",
    "/dashboard/top-customers",
    "/dashboard/top-products",
    "/dashboard/inventory-status",
    "/reports/{type}",
];

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch"];

async fn document() -> Value {
    let app = spawn_app().await;
    let response = app.anonymous().get("/openapi.json").await;
    assert_eq!(response.status, StatusCode::OK);
    let content_type = response.header("content-type");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    response.json()
}

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut out = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            if METHODS.contains(&method.as_str()) {
                out.push((path.clone(), method.clone(), op));
            }
        }
    }
    out
}

/// The router and the document come from the same declarations (`routes!`), so no hand
/// list is kept here; what is checked is that the document is well-formed and that every
/// operation it lists is one the server routes (not the router's 404 or a 405).
#[tokio::test]
async fn document_is_openapi_3_and_every_documented_operation_is_served() {
    let app = spawn_app().await;
    let doc: Value = app.anonymous().get("/openapi.json").await.json();
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3."), "{version}");
    assert_eq!(doc["info"]["title"], "IMS API");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let token = app.token("routes@example.com").await;
    let operations = operations(&doc);
    assert!(operations.len() > 60, "{} operations", operations.len());
    for (path, method, _) in operations {
        let concrete = path
            .replace("{id}", "00000000-0000-4000-8000-000000000000")
            .replace("{type}", "sales-by-item");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let body = matches!(
            method,
            reqwest::Method::POST | reqwest::Method::PUT | reqwest::Method::PATCH
        )
        .then(|| serde_json::json!({}));
        let response = app
            .caller(&token)
            .send(method.clone(), &concrete, body)
            .await;
        let status = response.status;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        if status == StatusCode::NOT_FOUND {
            let problem: Value = serde_json::from_str(&response.text).unwrap_or_default();
            assert_ne!(
                problem["detail"], "no route matches this path",
                "{method} {path} is documented but not routed"
            );
        }
    }
}

#[tokio::test]
async fn authenticated_operations_require_the_bearer_scheme_and_public_ones_do_not() {
    let doc = document().await;
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(scheme["scheme"], "bearer", "{scheme}");
    for (path, method, op) in operations(&doc) {
        let names: Vec<&str> = op["security"]
            .as_array()
            .map(|reqs| {
                reqs.iter()
                    .filter_map(|r| r.as_object())
                    .flat_map(|r| r.keys().map(String::as_str))
                    .collect()
            })
            .unwrap_or_default();
        if PUBLIC.contains(&path.as_str()) {
            assert!(names.is_empty(), "{method} {path} is public: {names:?}");
        } else {
            assert_eq!(names, ["bearer"], "{method} {path}");
            assert!(
                op["responses"]["401"].is_object(),
                "{method} {path} documents no 401"
            );
        }
    }
}

#[tokio::test]
async fn operations_are_tagged_unique_and_errors_are_problem_json() {
    let doc = document().await;
    let mut ids = HashSet::new();
    for (path, method, op) in operations(&doc) {
        let id = op["operationId"].as_str().expect("operationId");
        assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
        assert!(
            op["tags"].as_array().is_some_and(|t| !t.is_empty()),
            "{method} {path} has no tag"
        );
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path} documents no success"
        );
        // What any operation can answer: 503 over the time-out or without the database;
        // 413 when it takes a body, and 409 when that body writes rows it names (a probe
        // found all three answered but undocumented).
        let takes_body = op.get("requestBody").is_some();
        let mut shared = vec!["503"];
        if takes_body {
            shared.push("413");
        }
        if takes_body && !path.starts_with("/auth") {
            shared.push("409");
        }
        for status in shared {
            assert!(
                responses.contains_key(status),
                "{method} {path} does not document {status}"
            );
        }
        for (status, response) in responses {
            if status.starts_with('4') {
                assert!(
                    response["content"]["application/problem+json"]["schema"]["$ref"]
                        == "#/components/schemas/Problem",
                    "{method} {path} {status}: {response}"
                );
            }
        }
        // Path parameters are declared.
        for segment in path.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let declared = op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
                assert!(declared, "{method} {path}: path parameter {name}");
            }
        }
    }
}

/// Each create links to the operations on the row it made, with the row's id (OpenAPI
/// Link Objects, written as OpenAPI names their fields), and every link names an operation
/// the document has.
#[tokio::test]
async fn creates_link_to_the_operations_on_their_row() {
    let doc = document().await;
    let links = &doc["paths"]["/invoices"]["post"]["responses"]["201"]["links"];
    for operation in ["getInvoice", "createPayment"] {
        assert_eq!(links[operation]["operationId"], operation, "{links}");
        assert_eq!(
            links[operation]["parameters"]["id"], "$response.body#/id",
            "{links}"
        );
    }
    let item = &doc["paths"]["/items"]["post"]["responses"]["201"]["links"];
    for operation in ["getItem", "replaceItem", "updateItem", "deleteItem"] {
        assert_eq!(item[operation]["operationId"], operation, "{item}");
    }
    let mut known = std::collections::HashSet::new();
    let mut named = Vec::new();
    for item in doc["paths"].as_object().expect("paths").values() {
        for operation in item.as_object().expect("item").values() {
            if let Some(id) = operation["operationId"].as_str() {
                known.insert(id.to_string());
            }
            for response in operation["responses"].as_object().into_iter().flatten() {
                for link in response.1["links"].as_object().into_iter().flatten() {
                    assert!(link.1.get("operation_id").is_none(), "{link:?}");
                    named.push(
                        link.1["operationId"]
                            .as_str()
                            .expect("operationId")
                            .to_string(),
                    );
                }
            }
        }
    }
    assert!(named.len() >= 20, "{named:?}");
    for id in named {
        assert!(known.contains(&id), "{id} is no operation");
    }
}

#[tokio::test]
async fn cached_routes_document_the_cache_headers() {
    let doc = document().await;
    for path in CACHED {
        let ok = &doc["paths"][path]["get"]["responses"]["200"];
        for header in ["X-Cache", "X-Cache-TTL", "ETag"] {
            assert!(ok["headers"][header].is_object(), "GET {path}: {header}");
        }
        assert!(
            doc["paths"][path]["get"]["responses"]["304"].is_object(),
            "GET {path}: 304"
        );
    }
    assert!(doc["paths"]["/health"]["get"]["responses"]["503"].is_object());
}

/// A cheap structural check in place of a full validator: every `$ref` points at a schema
/// the document defines.
#[tokio::test]
async fn every_reference_resolves() {
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let doc = document().await;
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for r in found {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {r}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling reference {r}"
        );
    }
}

#[tokio::test]
async fn docs_page_is_html_and_points_at_the_document() {
    let app = spawn_app().await;
    let response = app.anonymous().get("/docs").await;
    assert_eq!(response.status, StatusCode::OK);
    let content_type = response.header("content-type");
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let body = response.text;
    assert!(body.contains("/openapi.json"), "no link to the document");
    // The document is embedded, so the page shows the same operations.
    assert!(body.contains("\"IMS API\""));
    assert!(body.contains("listItems"));
    // Works offline: every script and link the page loads comes from this server.
    let mut scripts = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for (i, _) in body.match_indices(attribute) {
            let rest = &body[i + attribute.len()..];
            let target = &rest[..rest.find('"').expect("closing quote")];
            assert!(target.starts_with('/'), "external reference {target:?}");
            if attribute == "src=\"" {
                scripts.push(target.to_string());
            }
        }
    }
    assert_eq!(scripts.len(), 1, "{scripts:?}");
    let script = app.anonymous().get(&scripts[0]).await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(script.header("content-type").starts_with("text/javascript"));
    assert!(script.header("cache-control").contains("immutable"));
    assert!(script.text.len() > 1_000_000);
}

#[tokio::test]
async fn limited_operations_document_the_429_and_the_rate_limit_headers() {
    let doc = document().await;
    let unlimited = [
        "/health",
        "/health/live",
        "/health/ready",
        "/health/cache",
        "/metrics",
    ];
    let paths = doc["paths"].as_object().expect("paths");
    let mut limited = 0;
    for (path, item) in paths {
        for method in METHODS {
            let Some(operation) = item.get(*method) else {
                continue;
            };
            let too_many = &operation["responses"]["429"];
            if unlimited.contains(&path.as_str()) {
                assert!(too_many.is_null(), "{method} {path} is not limited");
                continue;
            }
            limited += 1;
            assert!(
                too_many["content"]["application/problem+json"].is_object(),
                "{method} {path}: {too_many}"
            );
            assert!(
                too_many["headers"]["Retry-After"].is_object(),
                "{method} {path}"
            );
            for (status, response) in operation["responses"].as_object().expect("responses") {
                for header in ["RateLimit-Policy", "RateLimit", "RateLimit-Remaining"] {
                    assert!(
                        response["headers"][header].is_object(),
                        "{method} {path} {status}: no {header}"
                    );
                }
            }
        }
    }
    assert!(limited > 40, "{limited} limited operations");
}

/// A few of the rules the document states and schemathesis checks in CI
/// (`scripts/api-conformance`), pinned here so that they fail where tests run: a present
/// query parameter must be valid (empty included), integers may be written as `1500.0`
/// but not as `1500.5`, and a body without `Content-Type: application/json` is a 415.
#[tokio::test]
async fn the_server_enforces_what_the_document_says() {
    let app = spawn_app().await;
    let token = app.token("conformance@example.com").await;
    for path in [
        "/dashboard/kpis?to=",
        "/dashboard/sales-chart?interval=",
        "/items?sort=",
        "/contacts?type=",
    ] {
        let response = app.caller(&token).get(path).await;
        assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY, "{path}");
    }
    let body = app
        .caller(&token)
        .create(
            "/tax-rates",
            serde_json::json!({"name": "VAT", "rateBps": 1500.0}),
        )
        .await;
    assert_eq!(body["rateBps"], 1500);
    let fractional = app
        .caller(&token)
        .post(
            "/tax-rates",
            serde_json::json!({"name": "VAT", "rateBps": 1500.5}),
        )
        .await;
    assert_eq!(fractional.status, StatusCode::UNPROCESSABLE_ENTITY);
    let untyped = reqwest::Client::new()
        .post(format!("{}/tax-rates", app.address))
        .bearer_auth(&token)
        .body(r#"{"name": "VAT", "rateBps": 1500}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(untyped.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let document: Value = app.anonymous().get("/openapi.json").await.json();
    let responses = &document["paths"]["/tax-rates"]["post"]["responses"];
    assert!(responses.get("415").is_some(), "{responses}");
}

/// The credential routes say which limit they are counted against where they are declared,
/// and the document shows it (the limiter reads the same mark).
#[tokio::test]
async fn credential_routes_carry_their_rate_limit_in_the_document() {
    let doc = document().await;
    for path in ["/auth/login", "/auth/register", "/auth/refresh"] {
        assert_eq!(
            doc["paths"][path]["post"]["x-rate-limit"], "credentials",
            "{path}"
        );
    }
    assert!(doc["paths"]["/auth/me"]["get"]["x-rate-limit"].is_null());
}

/// A report's `totals` is one of five shapes, each closed, so that exactly one matches:
/// open, a sales-by-customer total also matched the purchases-by-vendor one (a subset of
/// its fields) and failed the `oneOf` (a probe).
#[tokio::test]
async fn report_totals_are_closed_so_one_shape_matches() {
    let doc = document().await;
    for name in [
        "SalesByItemTotals",
        "SalesByCustomerTotals",
        "ValuationTotals",
        "StockMovementsTotals",
        "PurchasesByVendorTotals",
    ] {
        let schema = &doc["components"]["schemas"][name];
        assert_eq!(schema["additionalProperties"], false, "{name}: {schema}");
    }
}
