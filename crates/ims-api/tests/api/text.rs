//! Text that is valid everywhere or refused the same way everywhere (contract §2): a NUL in a
//! body string or a query parameter is a 422 naming the field on both engines (PostgreSQL
//! cannot store it, SQLite could), nothing is written, and `search` is matched literally.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{assert_problem, spawn_app, TestApp};
use crate::helpers::{id, rows_in, send_raw, user};

const NUL_TEXT: &str = "a\u{0}b";
const NUL_MESSAGE: &str = "must not contain NUL characters";

/// Every table, so "nothing written" covers rows no list shows (sessions, lines, counters).
const TABLES: &[&str] = &[
    "organizations",
    "users",
    "sessions",
    "refresh_tokens",
    "categories",
    "tax_rates",
    "warehouses",
    "contacts",
    "items",
    "stock_levels",
    "stock_movements",
    "stock_adjustments",
    "stock_transfers",
    "sales_orders",
    "sales_order_lines",
    "purchase_orders",
    "purchase_order_lines",
    "invoice_counters",
    "invoices",
    "payments",
];

/// A GET that skips the response cache, so a write the cache had not heard of would show.
async fn fresh(app: &TestApp, token: &str, path: &str) -> Value {
    app.caller(token)
        .with(&[("cache-control", "no-cache")])
        .get(path)
        .await
        .expect(StatusCode::OK)
}

/// Row counts of every table and the current state of `reads`.
async fn snapshot(app: &TestApp, token: &str, reads: &[String]) -> Vec<Value> {
    let mut state = Vec::new();
    for table in TABLES {
        state.push(json!({ *table: rows_in(app, table).await }));
    }
    for path in reads {
        state.push(fresh(app, token, path).await);
    }
    state
}

/// Asserts that a 422 `problem`'s `errors` are exactly `fields`, each with the NUL message.
fn assert_nul_errors(problem: Value, fields: &[&str], what: &str) {
    let mut expected = serde_json::Map::new();
    for field in fields {
        expected.insert(field.to_string(), json!([NUL_MESSAGE]));
    }
    assert_eq!(problem["errors"], Value::Object(expected), "{what}");
}

/// `body` with the field named as in validation errors (`lines[0].itemId`) set to `text`.
fn poisoned(body: &Value, field: &str, text: &str) -> Value {
    let pointer = format!("/{}", field.replace(['.', '['], "/").replace(']', ""));
    let mut poisoned = body.clone();
    *poisoned
        .pointer_mut(&pointer)
        .unwrap_or_else(|| panic!("{field} in {body}")) = json!(text);
    poisoned
}

struct World {
    token: String,
    refresh: String,
    category: String,
    tax: String,
    main: String,
    annex: String,
    customer: String,
    vendor: String,
    item: String,
    order: String,
    purchase: String,
}

async fn world(app: &TestApp) -> World {
    let (token, _) = user(app, "nul@example.com").await;
    let pair = app.login("nul@example.com").await;
    let refresh = pair["refreshToken"].as_str().expect("refresh").to_string();
    let t = token.as_str();
    let api = app.caller(t);
    let category = id(&api.create("/categories", json!({"name": "Cat"})).await);
    let tax = id(&api
        .create("/tax-rates", json!({"name": "Tax", "rateBps": 5}))
        .await);
    let main = id(&api
        .create("/warehouses", json!({"name": "Main", "code": "M"}))
        .await);
    let annex = id(&api
        .create("/warehouses", json!({"name": "Annex", "code": "A"}))
        .await);
    let customer = id(&api
        .create("/contacts", json!({"type": "customer", "name": "Cust"}))
        .await);
    let vendor = id(&api
        .create("/contacts", json!({"type": "vendor", "name": "Vend"}))
        .await);
    let item = id(&api
        .create(
            "/items",
            json!({"name": "Item", "sku": "SKU", "priceCents": 100}),
        )
        .await);
    api.create(
        "/inventory/adjustments",
        json!({"itemId": item, "warehouseId": main, "quantityDelta": 10, "reason": "count"}),
    )
    .await;
    let lines = json!([{"itemId": item, "quantity": 1}]);
    let order = id(&api
        .create(
            "/sales-orders",
            json!({"customerId": customer, "warehouseId": main, "lines": lines}),
        )
        .await);
    let purchase = id(&api
        .create(
            "/purchase-orders",
            json!({"vendorId": vendor, "warehouseId": main,
            "lines": [{"itemId": item, "quantity": 1, "unitCostCents": 50}]}),
        )
        .await);
    World {
        token,
        refresh,
        category,
        tax,
        main,
        annex,
        customer,
        vendor,
        item,
        order,
        purchase,
    }
}

/// Everything a client can read back, to see that refused requests changed nothing.
fn reads(w: &World) -> Vec<String> {
    [
        "/categories",
        "/tax-rates",
        "/warehouses",
        "/contacts",
        "/items",
        "/inventory/stock-levels",
        "/inventory/adjustments",
        "/inventory/transfers",
        "/inventory/movements",
        "/sales-orders",
        "/purchase-orders",
        "/invoices",
        "/auth/me",
    ]
    .into_iter()
    .map(String::from)
    .chain([
        format!("/sales-orders/{}", w.order),
        format!("/purchase-orders/{}", w.purchase),
    ])
    .collect()
}

/// A route, a body that would succeed as it is, and the text fields to poison one by one.
type Case = (Method, String, Value, Vec<&'static str>, bool);

fn body_cases(w: &World) -> Vec<Case> {
    let category = json!({"name": "New", "parentId": w.category});
    // Not the category itself as its own parent: that would be a 422 of its own.
    let category_update = json!({"name": "New", "parentId": null});
    let tax = json!({"name": "New", "rateBps": 7});
    let warehouse = json!({"name": "New", "code": "NEW"});
    let contact = json!({"type": "customer", "name": "New", "email": "n@example.com",
        "phone": "555", "address": "1 Road"});
    let contact_fields = vec!["type", "name", "email", "phone", "address"];
    let item = json!({"name": "New", "sku": "NEW", "priceCents": 5, "description": "d",
        "categoryId": w.category, "taxRateId": w.tax, "unit": "pcs"});
    let item_fields = vec![
        "name",
        "sku",
        "description",
        "categoryId",
        "taxRateId",
        "unit",
    ];
    let lines = json!([{"itemId": w.item, "quantity": 2}]);
    let sales = json!({"customerId": w.customer, "warehouseId": w.main, "lines": lines,
        "notes": "n"});
    let sales_patch = json!({"customerId": w.customer, "warehouseId": w.annex, "lines": lines,
        "notes": "n", "status": "cancelled"});
    let bought = json!([{"itemId": w.item, "quantity": 2, "unitCostCents": 50}]);
    let purchase = json!({"vendorId": w.vendor, "warehouseId": w.main, "lines": bought,
        "notes": "n"});
    let purchase_patch = json!({"vendorId": w.vendor, "warehouseId": w.annex, "lines": bought,
        "notes": "n", "status": "cancelled"});
    let order_fields = |party: &'static str| vec![party, "warehouseId", "lines[0].itemId", "notes"];
    let patch_fields = |party| {
        let mut fields = order_fields(party);
        fields.push("status");
        fields
    };
    let category_path = format!("/categories/{}", w.category);
    let tax_path = format!("/tax-rates/{}", w.tax);
    let warehouse_path = format!("/warehouses/{}", w.main);
    let contact_path = format!("/contacts/{}", w.customer);
    let item_path = format!("/items/{}", w.item);
    vec![
        (
            Method::POST,
            "/categories".into(),
            category.clone(),
            vec!["name", "parentId"],
            true,
        ),
        (
            Method::PUT,
            category_path.clone(),
            category_update.clone(),
            vec!["name", "parentId"],
            true,
        ),
        (
            Method::PATCH,
            category_path,
            category_update,
            vec!["name", "parentId"],
            true,
        ),
        (
            Method::POST,
            "/tax-rates".into(),
            tax.clone(),
            vec!["name"],
            true,
        ),
        (
            Method::PUT,
            tax_path.clone(),
            tax.clone(),
            vec!["name"],
            true,
        ),
        (Method::PATCH, tax_path, tax, vec!["name"], true),
        (
            Method::POST,
            "/warehouses".into(),
            warehouse.clone(),
            vec!["name", "code"],
            true,
        ),
        (
            Method::PUT,
            warehouse_path.clone(),
            warehouse.clone(),
            vec!["name", "code"],
            true,
        ),
        (
            Method::PATCH,
            warehouse_path,
            warehouse,
            vec!["name", "code"],
            true,
        ),
        (
            Method::POST,
            "/contacts".into(),
            contact.clone(),
            contact_fields.clone(),
            true,
        ),
        (
            Method::PUT,
            contact_path.clone(),
            contact.clone(),
            contact_fields.clone(),
            true,
        ),
        (Method::PATCH, contact_path, contact, contact_fields, true),
        (
            Method::POST,
            "/items".into(),
            item.clone(),
            item_fields.clone(),
            true,
        ),
        (
            Method::PUT,
            item_path.clone(),
            item.clone(),
            item_fields.clone(),
            true,
        ),
        (Method::PATCH, item_path, item, item_fields, true),
        (
            Method::POST,
            "/inventory/adjustments".into(),
            json!({"itemId": w.item, "warehouseId": w.main, "quantityDelta": 1, "reason": "r"}),
            vec!["itemId", "warehouseId", "reason"],
            true,
        ),
        (
            Method::POST,
            "/inventory/transfers".into(),
            json!({"itemId": w.item, "fromWarehouseId": w.main, "toWarehouseId": w.annex,
                "quantity": 1}),
            vec!["itemId", "fromWarehouseId", "toWarehouseId"],
            true,
        ),
        (
            Method::POST,
            "/sales-orders".into(),
            sales,
            order_fields("customerId"),
            true,
        ),
        (
            Method::PATCH,
            format!("/sales-orders/{}", w.order),
            sales_patch,
            patch_fields("customerId"),
            true,
        ),
        (
            Method::POST,
            "/purchase-orders".into(),
            purchase,
            order_fields("vendorId"),
            true,
        ),
        (
            Method::PATCH,
            format!("/purchase-orders/{}", w.purchase),
            purchase_patch,
            patch_fields("vendorId"),
            true,
        ),
        (
            Method::POST,
            "/invoices".into(),
            json!({"salesOrderId": w.order}),
            vec!["salesOrderId"],
            true,
        ),
        (
            Method::POST,
            "/auth/register".into(),
            json!({"email": "new@example.com", "password": "correct horse battery",
                "name": "New", "organizationName": "New Org"}),
            vec!["email", "password", "name", "organizationName"],
            false,
        ),
        (
            Method::POST,
            "/auth/login".into(),
            json!({"email": "nul@example.com", "password": "correct horse battery"}),
            vec!["email", "password"],
            false,
        ),
        (
            Method::POST,
            "/auth/refresh".into(),
            json!({"refreshToken": w.refresh}),
            vec!["refreshToken"],
            false,
        ),
        (
            Method::POST,
            "/auth/logout".into(),
            json!({"refreshToken": w.refresh}),
            vec!["refreshToken"],
            true,
        ),
    ]
}

#[tokio::test]
async fn nul_in_any_body_field_is_422_naming_it_and_writes_nothing() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let api = app.caller(&w.token);
    let reads = reads(&w);
    let before = snapshot(&app, &w.token, &reads).await;

    let mut checked = 0;
    for (method, path, body, fields, auth) in body_cases(&w) {
        let caller = if auth { api } else { app.anonymous() };
        for field in fields {
            let bad = poisoned(&body, field, NUL_TEXT);
            let problem = caller
                .send(method.clone(), &path, Some(bad.clone()))
                .await
                .problem(StatusCode::UNPROCESSABLE_ENTITY);
            assert_nul_errors(problem, &[field], &format!("{method} {path} {bad}"));
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked} cases");

    // Several at once are all named; NUL anywhere in a string counts, at either end too.
    let lines = json!([{"itemId": w.item, "quantity": 1}, {"itemId": w.item, "quantity": 1}]);
    let body = json!({"customerId": w.customer, "warehouseId": w.main, "lines": lines,
        "notes": "n"});
    let mut body = poisoned(&body, "notes", "\u{0}");
    body = poisoned(&body, "lines[1].itemId", &format!("{}\u{0}", w.item));
    let problem = api
        .post("/sales-orders", body)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_nul_errors(problem, &["lines[1].itemId", "notes"], "two fields");

    // A field the route ignores is still refused: the rule is "no NUL in a body".
    let problem = api
        .post(
            "/categories",
            json!({"name": "Fine", "comment": {"tags": ["x", NUL_TEXT]}}),
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_nul_errors(problem, &["comment.tags[1]"], "unknown field");

    // A body `serde_json::Value` refuses (a lone surrogate in an ignored field) but the typed
    // parse accepts still cannot smuggle a NUL in: refused as a whole.
    let response = send_raw(
        &app,
        Method::POST,
        "/categories",
        r#"{"name": "x\u0000", "junk": "\ud800"}"#,
        &w.token,
    )
    .await;
    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_nul_errors(problem, &["body"], "unplaced NUL");

    // Still a 400 when the JSON is broken, NUL or not.
    for raw in [r#"{"name": "x\u0000""#, r#"{"name": "\ud800"}"#] {
        let response = send_raw(&app, Method::POST, "/categories", raw, &w.token).await;
        assert_problem(response, StatusCode::BAD_REQUEST).await;
    }

    assert_eq!(snapshot(&app, &w.token, &reads).await, before);
    // The session the refused logout named is still alive.
    assert_eq!(app.refresh(&w.refresh).await.status, StatusCode::OK);
}

#[tokio::test]
async fn text_that_only_looks_like_nul_and_every_other_code_point_is_stored() {
    let app = spawn_app().await;
    let (t, _) = user(&app, "codepoints@example.com").await;
    let api = app.caller(&t);
    // An escaped backslash followed by "u0000" (JSON `"a\\u0000b"`), controls other than NUL,
    // noncharacters and the last code point: PostgreSQL's UTF-8 takes all of them.
    for name in [
        "a\\u0000b",
        "a\\\\u0000b",
        "a\u{1}\u{1f}\u{7f}\u{85}b",
        "\u{fffe}\u{ffff}\u{feff}x",
        "\u{10ffff}\u{1f600}",
    ] {
        let row = api.create("/categories", json!({"name": name})).await;
        assert_eq!(row["name"], name);
        let path = format!("/categories/{}", id(&row));
        let read = api.get(&path).await.expect(StatusCode::OK);
        assert_eq!(read["name"], name);
    }
    // A key with NUL is an unknown field, ignored like any other.
    let row = api
        .create("/categories", json!({"name": "Keyed", "x\u{0}": "y"}))
        .await;
    assert_eq!(row["name"], "Keyed");
}

#[tokio::test]
async fn nul_in_any_query_parameter_is_422_naming_it() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let api = app.caller(&w.token);
    let reads = reads(&w);
    let before = snapshot(&app, &w.token, &reads).await;

    let lists: &[(&str, &[&str])] = &[
        ("/categories", &["page", "limit"]),
        ("/tax-rates", &["page", "limit"]),
        ("/warehouses", &["page", "limit"]),
        ("/contacts", &["type", "search", "page", "limit"]),
        (
            "/items",
            &["search", "categoryId", "sort", "lowStock", "page", "limit"],
        ),
        (
            "/inventory/stock-levels",
            &["warehouseId", "itemId", "lowStock", "page"],
        ),
        (
            "/inventory/adjustments",
            &["itemId", "warehouseId", "limit"],
        ),
        ("/inventory/transfers", &["itemId", "warehouseId"]),
        ("/inventory/movements", &["itemId", "warehouseId"]),
        ("/sales-orders", &["status", "customerId", "from", "to"]),
        ("/purchase-orders", &["status", "vendorId", "from", "to"]),
        ("/invoices", &["status", "customerId", "from", "to"]),
        ("/dashboard/kpis", &["from", "to"]),
        ("/dashboard/sales-chart", &["from", "to", "interval"]),
        ("/dashboard/top-customers", &["from", "to", "limit"]),
        ("/dashboard/top-products", &["limit"]),
        ("/reports/sales-by-item", &["from", "to"]),
        ("/reports/stock-movements", &["from", "to"]),
    ];
    for (path, params) in lists {
        for param in *params {
            // Next to a valid parameter, and with the NUL at the start, middle or end.
            for value in ["%00", "a%00b", "name%00"] {
                let url = if *param == "page" {
                    format!("{path}?{param}={value}")
                } else {
                    format!("{path}?page=1&{param}={value}")
                };
                let problem = api
                    .get(&url)
                    .await
                    .problem(StatusCode::UNPROCESSABLE_ENTITY);
                assert_nul_errors(problem, &[param], &url);
            }
        }
        // A parameter the route does not know is refused too, like an unknown body field.
        let url = format!("{path}?x=%00");
        let problem = api
            .get(&url)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_nul_errors(problem, &["x"], &url);
    }
    // Percent-decoding happens once: `%2500` is the text "%00", not a NUL.
    let list = api.get("/items?search=%2500").await.expect(StatusCode::OK);
    assert_eq!(list["total"], 0);

    assert_eq!(snapshot(&app, &w.token, &reads).await, before);
}

#[tokio::test]
async fn nul_or_non_utf8_in_a_path_segment_is_a_404() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let reads = reads(&w);
    let before = snapshot(&app, &w.token, &reads).await;
    let valid = json!({"name": "New"});
    let cases = [
        (Method::GET, "/items/%00".to_string()),
        (Method::GET, format!("/items/{}%00", w.item)),
        (Method::PUT, "/categories/a%00b".to_string()),
        (Method::PATCH, "/sales-orders/%00".to_string()),
        (
            Method::POST,
            format!("/purchase-orders/{}%00/receive", w.purchase),
        ),
        (Method::DELETE, "/contacts/%00".to_string()),
        (Method::DELETE, "/auth/sessions/%00".to_string()),
        (Method::GET, "/invoices/%00".to_string()),
        (Method::GET, "/reports/sales-by-item%00".to_string()),
        // Segments that do not even decode to UTF-8 (a lone byte, an overlong NUL, an encoded
        // surrogate) name no row either: the same 404 problem, not axum's text/plain 400.
        (Method::GET, "/items/%FF".to_string()),
        (Method::GET, "/items/%C0%80".to_string()),
        (Method::PUT, "/categories/%ED%A0%80".to_string()),
        (Method::DELETE, "/auth/sessions/%FF".to_string()),
        (Method::GET, "/reports/%FF".to_string()),
    ];
    for (method, path) in cases {
        let body = matches!(method, Method::PUT | Method::PATCH).then(|| valid.clone());
        let response = app.caller(&w.token).send(method.clone(), &path, body).await;
        assert_eq!(response.status, StatusCode::NOT_FOUND, "{method} {path}");
        response.problem(StatusCode::NOT_FOUND);
    }
    assert_eq!(snapshot(&app, &w.token, &reads).await, before);
}

/// Sends `request` on a plain TCP connection; returns the status line.
async fn raw_http(app: &TestApp, request: &[u8]) -> String {
    let host = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response);
    text.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn raw_nul_never_gets_past_http_parsing_and_non_ascii_user_agents_are_not_stored() {
    let app = spawn_app().await;
    app.register("ua@example.com").await;
    let sessions = rows_in(&app, "sessions").await;
    let body = r#"{"email":"ua@example.com","password":"correct horse battery"}"#;
    let login = |user_agent: &[u8]| {
        let mut request = b"POST /auth/login HTTP/1.1\r\nHost: x\r\nUser-Agent: ".to_vec();
        request.extend_from_slice(user_agent);
        request.extend_from_slice(
            format!(
                "\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        request
    };

    let anonymous = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM sessions WHERE user_agent IS NULL")
            .fetch_one(app.state.db.pool())
            .await
            .expect("count")
    };

    // A plain User-Agent is what gets stored with the session.
    let status = raw_http(&app, &login(b"probe/1")).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let stored: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE user_agent = 'probe/1'")
            .fetch_one(app.state.db.pool())
            .await
            .expect("count");
    assert_eq!(stored, 1);
    let sessions = sessions + 1;

    // hyper refuses a NUL in a header before any handler runs.
    let status = raw_http(&app, &login(b"a\0b")).await;
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    assert_eq!(rows_in(&app, "sessions").await, sessions);

    // Nor can the request target carry a raw NUL: only `%00`, which `Query` refuses.
    let status = raw_http(
        &app,
        b"GET /items?search=a\0b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");

    // Bytes above 0x7f are legal in a header but not text; the session gets no User-Agent
    // rather than invalid UTF-8.
    let before = anonymous().await;
    let status = raw_http(&app, &login(b"caf\xc3\xa9 \xff")).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(rows_in(&app, "sessions").await, sessions + 1);
    assert_eq!(anonymous().await, before + 1);
}

#[tokio::test]
async fn search_matches_percent_underscore_and_backslash_literally() {
    let app = spawn_app().await;
    let (t, _) = user(&app, "search@example.com").await;
    let api = app.caller(&t);
    for (i, name) in ["100% cotton", "a_b", "back\\slash", "plain"]
        .into_iter()
        .enumerate()
    {
        api.create(
            "/items",
            json!({"name": name, "sku": format!("SKU{i}"), "priceCents": 1}),
        )
        .await;
        api.create("/contacts", json!({"type": "customer", "name": name}))
            .await;
    }
    let names = |list: &Value| -> Vec<String> {
        list["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|row| row["name"].as_str().expect("name").to_string())
            .collect()
    };
    for (query, expected) in [
        ("%25", vec!["100% cotton"]),
        ("_", vec!["a_b"]),
        ("%5C", vec!["back\\slash"]),
        ("%5C%5C", vec![]),
        ("0%25+c", vec!["100% cotton"]),
        ("A_B", vec!["a_b"]),
        ("%25%25", vec![]),
        ("__", vec![]),
    ] {
        for list in ["/items", "/contacts"] {
            let path = format!("{list}?search={query}");
            let got = api.get(&path).await.expect(StatusCode::OK);
            assert_eq!(names(&got), expected, "{path}");
        }
    }
}
