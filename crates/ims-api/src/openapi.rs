//! `GET /openapi.json` (an OpenAPI 3.1 document generated from the code) and `GET /docs`
//! (a page that renders it).
//!
//! Every handler carries a `#[utoipa::path(...)]` attribute next to its code, and each
//! domain module declares its routes with `utoipa_axum`'s `routes!`, so the router and the
//! document come from one list: a route cannot be served undocumented. An attribute
//! begins with the operation's identity on one line (method, path, operation id,
//! summary); what follows says only what is the operation's own (its body, parameters, and answers, one
//! per line; a single answer stays on one line). [`finish`] adds
//! what is global: the title and version, the tags, the `bearer` security scheme (the
//! access token of `POST /auth/login`), and what many operations share: a row's `id`
//! parameter and 404, and the answers 401, 400, 422, 415, 429 with the rate-limit headers.
//! The areas whose every route needs the token are marked once where they are merged
//! (`crate::policy::signed_in`); each cached route's cache headers and 304
//! come with its cache policy (`crate::policy::RoutePolicy::cache`). Request and response
//! types derive `utoipa::ToSchema`, so a field added to a type shows up in the document
//! without further work.
//!
//! `/openapi.json` is built once, at start, and served from memory; it needs nothing from
//! outside. `/docs` is one HTML page embedding the same document and rendered by Scalar,
//! whose standalone script the server also serves (vendored under `assets/scalar`), so the
//! page works offline. `utoipa-swagger-ui` is not used because its build script downloads
//! Swagger UI at build time.
//!
//! Both routes are public and not cached by the response cache: they describe the API, not
//! an organization's data.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, PartialSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_scalar::{Scalar, Servable};

use crate::state::AppState;

/// The API description routes, serving `doc` (made by [`finish`]).
pub fn router(doc: utoipa::openapi::OpenApi) -> Router<AppState> {
    // Serialized once: the document is fixed for the life of the process.
    let json: Arc<str> = match serde_json::to_value(&doc).and_then(|mut value| {
        camel_case_links(&mut value);
        serde_json::to_string(&value)
    }) {
        Ok(json) => json.into(),
        Err(e) => {
            tracing::error!("cannot serialize the OpenAPI document: {e}");
            "{}".into()
        }
    };
    let docs: Router<AppState> = Scalar::with_url("/docs", doc).custom_html(DOCS_HTML).into();
    let docs = docs.route(
        &format!("/docs/scalar-{SCALAR_VERSION}.js"),
        axum::routing::get(scalar_js),
    );
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let json = json.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        json.to_string(),
                    )
                        .into_response()
                }
            }),
        )
        .merge(docs)
}

/// The whole document: the operations the routers declared (from
/// `OpenApiRouter::split_for_parts`), `limited` (behind the rate limiter) and `unlimited`
/// (monitoring), the global parts of [`ApiDoc`], and the answers many operations share.
pub fn finish(
    mut limited: utoipa::openapi::OpenApi,
    mut unlimited: utoipa::openapi::OpenApi,
) -> utoipa::openapi::OpenApi {
    for part in [&mut limited, &mut unlimited] {
        document_ids(part);
        document_edits(part);
        document_shared_answers(part);
        document_body_media_type(part);
    }
    document_links(&mut limited);
    // Last: the answers above passed the rate limiter too, and carry its headers.
    document_rate_limits(&mut limited);
    let mut doc = ApiDoc::openapi();
    doc.merge(limited);
    doc.merge(unlimited);
    doc
}

/// Puts every operation of `router` that has no tag under `tag`, the area's section of
/// the document: said once where the area declares its routes, not in each operation.
pub fn tagged<S>(tag: &str, mut router: OpenApiRouter<S>) -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    for item in router.get_openapi_mut().paths.paths.values_mut() {
        for operation in operations_mut(item) {
            operation.tags.get_or_insert_with(|| vec![tag.to_string()]);
        }
    }
    router
}

/// The operations of a path item, for the passes that add what many of them share. HEAD,
/// OPTIONS and TRACE are never declared here.
pub(crate) fn operations_mut(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
}

/// What every operation on one row (`/…/{id}`) shares, declared here once instead of in
/// each: the `id` path parameter (a UUID) and `404` for an id that names no row of the
/// caller's organization, both worded after the collection (`/tax-rates/{id}`: "Tax rate
/// id (UUID)", "No such tax rate in the caller's organization"). An operation that
/// declares either itself keeps its own.
fn document_ids(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::schema::{KnownFormat, SchemaFormat};
    use utoipa::openapi::{ObjectBuilder, Required, Type};

    for (path, item) in doc.paths.paths.iter_mut() {
        let Some((collection, _)) = path.split_once("/{id}") else {
            continue;
        };
        let noun = crate::fields::row_noun(collection);
        let mut capitalized = noun.clone();
        if let Some(first) = capitalized.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        let id = ParameterBuilder::new()
            .name("id")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some(format!("{capitalized} id (UUID)")))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
            ))
            .build();
        let missing = problem(&format!("No such {noun} in the caller's organization"));
        let mut moved = problem(
            "The id written in another form than lower-case hyphenated (upper case, no \
             hyphens, braces): the same request belongs at the URL in `Location`",
        );
        moved.headers.insert(
            "Location".into(),
            utoipa::openapi::header::HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .description(Some("The row's URL, its id lower-case and hyphenated"))
                .build(),
        );
        for operation in operations_mut(item) {
            let parameters = operation.parameters.get_or_insert_with(Vec::new);
            if !parameters.iter().any(|p| p.name == "id") {
                parameters.insert(0, id.clone());
            }
            answers(operation, "308", &moved);
            answers(operation, "404", &missing);
        }
    }
}

/// utoipa 5.5 writes a Link Object's fields in snake case (`operation_id`), where OpenAPI
/// names them `operationId`, `operationRef` and `requestBody`; a client (schemathesis among
/// them) then sees links that name no operation. Renamed in the served JSON until utoipa
/// does it itself.
fn camel_case_links(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let links = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links")?.as_object_mut())
        .flat_map(|links| links.values_mut())
        .filter_map(|link| link.as_object_mut());
    for link in links {
        for (snake, camel) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(value) = link.remove(snake) {
                link.insert(camel.into(), value);
            }
        }
    }
}

/// Links (OpenAPI 3.1 §4.8.20) from each create (`POST /x` answering `201` with the row) to
/// every operation on that row (`/x/{id}`, `/x/{id}/…`), its `id` taken from the created
/// row: how a client goes from a row it made to what it can do with it, and how
/// schemathesis's stateful phase reaches those operations with ids that exist (without
/// them it only ever sent unknown ids there and got 404s).
fn document_links(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::link::LinkBuilder;
    use utoipa::openapi::RefOr;

    let mut on_rows: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, item) in doc.paths.paths.iter_mut() {
        let Some((collection, _)) = path.split_once("/{id}") else {
            continue;
        };
        let ids = operations_mut(item).filter_map(|operation| operation.operation_id.clone());
        on_rows
            .entry(collection.to_string())
            .or_default()
            .extend(ids);
    }
    for (collection, targets) in on_rows {
        let Some(created) = doc
            .paths
            .paths
            .get_mut(&collection)
            .and_then(|item| item.post.as_mut())
            .and_then(|post| post.responses.responses.get_mut("201"))
        else {
            continue;
        };
        let RefOr::T(created) = created else {
            continue;
        };
        for target in targets {
            created.links.entry(target.clone()).or_insert_with(|| {
                LinkBuilder::new()
                    .operation_id(target)
                    .parameter("id", "$response.body#/id")
                    .build()
                    .into()
            });
        }
    }
}

/// What replacing, updating and deleting a row mean, the same for every row (an
/// operation that says more keeps its own): `PUT` takes every field of the create body,
/// `PATCH` keeps the fields left out, `DELETE` answers `204`.
fn document_edits(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::ResponseBuilder;

    for item in doc.paths.paths.values_mut() {
        if let Some(put) = item.put.as_mut() {
            put.description.get_or_insert_with(|| {
                "Every field of the create body; optional fields left out are cleared.".into()
            });
        }
        if let Some(patch) = item.patch.as_mut() {
            patch.description.get_or_insert_with(|| {
                "Fields left out are kept; `null` clears an optional field.".into()
            });
        }
        if let Some(delete) = item.delete.as_mut() {
            let responses = &mut delete.responses.responses;
            if !responses.keys().any(|status| status.starts_with('2')) {
                responses.insert(
                    "204".into(),
                    ResponseBuilder::new().description("Deleted").build().into(),
                );
            }
        }
    }
}

/// Documents that `operation` answers `status` with `response`, unless it says so itself.
fn answers(
    operation: &mut utoipa::openapi::path::Operation,
    status: &str,
    response: &utoipa::openapi::Response,
) {
    operation
        .responses
        .responses
        .entry(status.into())
        .or_insert_with(|| response.clone().into());
}

/// A response whose body is a problem (`error::Problem`).
fn problem(description: &str) -> utoipa::openapi::Response {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};

    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

/// The answers many operations share, declared here once instead of in each: `401` for
/// every operation that needs the access token, `400` (malformed JSON) and `413` for every
/// one that takes a body, `409` for every write that takes one (a row it names deleted
/// meanwhile), `422` for every one that takes a body or query parameters, and `503` for
/// every one (over `REQUEST_TIMEOUT_MS`, or the database away). An operation that documents
/// one of them itself (a more specific description) keeps its own. (413, 409 and 503 were
/// missing: a client generated from the document did not expect them; a probe.)
fn document_shared_answers(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::ParameterIn;

    let unauthorized = problem("Missing, invalid or expired access token");
    let malformed = problem("Malformed JSON body");
    let too_large = problem(
        "The body is over 1 MiB; the connection is closed after this answer \
         (`Connection: close`)",
    );
    let conflict = problem(
        "The write conflicts with the data: a row it names was deleted meanwhile (try \
         again), or a rule the `detail` states",
    );
    let mut unavailable = problem(
        "Over `REQUEST_TIMEOUT_MS`, or the database is unreachable or busy; the `detail` \
         says whether to try again, `Retry-After` when",
    );
    unavailable.headers.insert(
        "Retry-After".into(),
        utoipa::openapi::HeaderBuilder::new()
            .schema(<u64 as utoipa::PartialSchema>::schema())
            .description(Some("Seconds to wait before trying again"))
            .build(),
    );
    let invalid = problem("Invalid fields or query parameters, listed in `errors`");
    for (path, item) in doc.paths.paths.iter_mut() {
        for operation in operations_mut(item) {
            let secured = operation.security.as_ref().is_some_and(|requirements| {
                serde_json::to_value(requirements)
                    .is_ok_and(|v| v.to_string().contains("\"bearer\""))
            });
            let body = operation.request_body.is_some();
            let query = operation.parameters.as_ref().is_some_and(|parameters| {
                parameters
                    .iter()
                    .any(|p| matches!(p.parameter_in, ParameterIn::Query))
            });
            if secured {
                answers(operation, "401", &unauthorized);
            }
            if body {
                answers(operation, "400", &malformed);
                answers(operation, "413", &too_large);
            }
            if body && !path.starts_with("/auth") {
                answers(operation, "409", &conflict);
            }
            if body || query {
                answers(operation, "422", &invalid);
            }
            answers(operation, "503", &unavailable);
        }
    }
}

/// Every operation that takes a body answers `415` to one sent without
/// `Content-Type: application/json` (axum's `Json` extractor, as a problem): added here
/// once rather than in each operation.
fn document_body_media_type(doc: &mut utoipa::openapi::OpenApi) {
    let unsupported = problem("The body is not sent as `Content-Type: application/json`");
    for item in doc.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            if operation.request_body.is_some() {
                answers(operation, "415", &unsupported);
            }
        }
    }
}

/// Every operation of `doc` (the limited ones) gets the `429` answer and every answer of
/// it the rate-limit headers (contract §6): added here once rather than in each of the ~60
/// operations.
fn document_rate_limits(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};

    let integer = |description: &str| {
        HeaderBuilder::new()
            .schema(u64::schema())
            .description(Some(description))
            .build()
    };
    let text = |description: &str| {
        HeaderBuilder::new()
            .schema(String::schema())
            .description(Some(description))
            .build()
    };
    let headers = [
        ("RateLimit-Limit", integer("The binding policy's quota")),
        ("RateLimit-Remaining", integer("Requests left in its window after this one")),
        ("RateLimit-Reset", integer("Seconds until a slot frees up")),
        (
            "RateLimit-Policy",
            text("Every policy that applies (RFC 8941 list), e.g. `\"ip-route\";q=100;w=60, \"user\";q=1000;w=3600`"),
        ),
        (
            "RateLimit",
            text("The binding policy's state (RFC 8941 list), e.g. `\"ip-route\";r=57;t=42`"),
        ),
    ];
    let mut too_many = ResponseBuilder::new()
        .description("Rate limit exceeded (contract §6); retry after `Retry-After` seconds")
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .header("Retry-After", integer("Seconds to wait"));
    for (name, header) in &headers {
        too_many = too_many.header(*name, header.clone());
    }
    let too_many = too_many.build();
    for item in doc.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            for response in operation.responses.responses.values_mut() {
                if let utoipa::openapi::RefOr::T(response) = response {
                    for (name, header) in &headers {
                        response.headers.insert(name.to_string(), header.clone());
                    }
                }
            }
            operation
                .responses
                .responses
                .insert("429".into(), too_many.clone().into());
        }
    }
}

/// The global parts of the document; operations come from the modules (see [`crate::openapi`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "IMS API",
        version = env!("CARGO_PKG_VERSION"),
        description = "Multi-tenant inventory management. Every route except `/auth/register`, \
            `/auth/login`, `/auth/refresh` and `/health*` needs `Authorization: Bearer \
            <accessToken>`, and every query is scoped to the token's organization. Errors are \
            `application/problem+json` (RFC 9457). Ids are UUID strings, money is integer \
            minor units (`…Cents`), rates are basis points (`rateBps`), timestamps are RFC 3339 \
            UTC. Lists take `page` and `limit` (at most 100) and answer `{data, page, limit, \
            total}`. Cached reads carry `X-Cache`, `X-Cache-TTL` and `ETag`.",
        license(name = "MIT"),
    ),
    components(schemas(crate::error::Problem)),
    modifiers(&SecurityAddon),
    tags(
        (name = "auth", description = "Registration, login, rotating refresh tokens, sessions"),
        (name = "catalog", description = "Categories, tax rates and warehouses"),
        (name = "contacts", description = "Customers and vendors"),
        (name = "items", description = "Items, with stock on hand over all warehouses"),
        (name = "inventory", description = "Stock levels, adjustments, transfers and the stock ledger"),
        (name = "sales", description = "Sales orders and their fulfilment"),
        (name = "invoices", description = "Invoices of sales orders, and payments"),
        (name = "purchasing", description = "Purchase orders and their receipt"),
        (name = "dashboard", description = "Key figures (cached for 300 s)"),
        (name = "reports", description = "Aggregate reports (cached for 900 s)"),
        (name = "health", description = "Service and cache health (no authentication)"),
    )
)]
pub struct ApiDoc;

/// Adds the `bearer` scheme the operations' `security(("bearer" = []))` refer to.
struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "The `accessToken` of `POST /auth/login`, `/auth/register` or \
                         `/auth/refresh`",
                    ))
                    .build(),
            ),
        );
    }
}

/// The version of the vendored Scalar bundle (`assets/scalar`).
const SCALAR_VERSION: &str = "1.46.4";

/// Scalar's standalone browser bundle, unmodified from the npm package (see
/// `assets/scalar/README.md`).
static SCALAR_JS: &[u8] = include_bytes!("../assets/scalar/api-reference-1.46.4.js");

/// `GET /docs/scalar-{version}.js`: the bundle, cacheable for good (the URL names the
/// version).
async fn scalar_js() -> impl axum::response::IntoResponse {
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/javascript; charset=utf-8",
            ),
            (
                axum::http::header::CACHE_CONTROL,
                "public, max-age=31536000, immutable",
            ),
        ],
        SCALAR_JS,
    )
}

/// The `/docs` page: Scalar's API reference with the document embedded (`$spec`), and a
/// plain link to `/openapi.json` for when the script cannot load.
const DOCS_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
  <title>IMS API</title>
  <meta charset="utf-8"/>
  <meta name="viewport" content="width=device-width, initial-scale=1"/>
</head>
<body>
  <noscript>
    This page needs JavaScript. The OpenAPI document itself is at
    <a href="/openapi.json">/openapi.json</a>.
  </noscript>
  <!-- The OpenAPI document, also served as /openapi.json -->
  <script id="api-reference" type="application/json">
    $spec
  </script>
  <!-- Served by this server (vendored, see assets/scalar): no internet access needed.
       No default fonts: they would come from Scalar's font host. -->
  <script>
    document.getElementById('api-reference').dataset.configuration =
      JSON.stringify({ withDefaultFonts: false });
  </script>
  <script src="/docs/scalar-1.46.4.js"></script>
</body>
</html>
"#;
