//! Extreme numbers over HTTP: every bounded number at its bound and one past it, orders
//! whose figures would not fit, the largest tax on the largest subtotal, and sums beyond
//! 64 bits in dashboards and reports (contract §2: money never overflows or wraps).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, id, send_raw, spawn_app, Reply, TestApp};

/// `ims_api::money::MAX_CENTS`, written out: the tests check the documented number.
const MAX_CENTS: i64 = 10_000_000_000_000;
const MAX_STOCK: i64 = 1_000_000_000_000;

struct Org {
    token: String,
    warehouse: String,
    other_warehouse: String,
    customer: String,
    vendor: String,
}

impl Org {
    async fn new(app: &TestApp, email: &str) -> Org {
        let token = app.token(email).await;
        let mut org = Org {
            token,
            warehouse: String::new(),
            other_warehouse: String::new(),
            customer: String::new(),
            vendor: String::new(),
        };
        org.warehouse = id(&org
            .created(app, "/warehouses", json!({"name": "Main", "code": "MAIN"}))
            .await);
        org.other_warehouse = id(&org
            .created(app, "/warehouses", json!({"name": "Second", "code": "SEC"}))
            .await);
        org.customer = id(&org
            .created(
                app,
                "/contacts",
                json!({"type": "customer", "name": "Big Buyer"}),
            )
            .await);
        org.vendor = id(&org
            .created(
                app,
                "/contacts",
                json!({"type": "vendor", "name": "Big Seller"}),
            )
            .await);
        org
    }

    async fn send(&self, app: &TestApp, method: Method, path: &str, body: Value) -> Reply {
        app.caller(&self.token).send(method, path, Some(body)).await
    }

    async fn created(&self, app: &TestApp, path: &str, body: Value) -> Value {
        app.caller(&self.token).create(path, body).await
    }

    /// Fulfils a sales order (must answer 200).
    async fn fulfil(&self, app: &TestApp, order_id: &str) {
        let path = format!("/sales-orders/{order_id}/fulfil");
        let fulfilled = self.send(app, Method::POST, &path, json!({})).await;
        assert_eq!(fulfilled.status, StatusCode::OK, "{path}");
    }

    /// The body as text, read past the cache.
    async fn read(&self, app: &TestApp, path: &str) -> String {
        let response = app
            .caller(&self.token)
            .with(&[("Cache-Control", "no-cache")])
            .get(path)
            .await;
        assert_eq!(response.status, StatusCode::OK, "GET {path}");
        response.text
    }

    async fn item(&self, app: &TestApp, sku: &str, price: i64, extra: Value) -> String {
        let mut body = json!({"name": format!("Item {sku}"), "sku": sku, "priceCents": price});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        id(&self.created(app, "/items", body).await)
    }

    async fn total(&self, app: &TestApp, path: &str) -> i64 {
        let body: Value = serde_json::from_str(&self.read(app, path).await).expect("json");
        body["total"].as_i64().expect("total")
    }
}

/// Sends `body` to `path` and expects a 422 naming `field`.
async fn refused(org: &Org, app: &TestApp, method: Method, path: &str, body: Value, field: &str) {
    let problem = org
        .send(app, method, path, body.clone())
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        problem["errors"][field].is_array(),
        "{path} {body}: expected an error on {field}, got {problem}"
    );
}

/// Asserts that `text` (a JSON body) has `"field":value` somewhere, exactly: values above
/// 2^64 would lose digits through `serde_json::Value`.
fn assert_figure(text: &str, field: &str, value: &str) {
    let needle = format!("\"{field}\":{value}");
    assert!(
        text.contains(&(needle.clone() + ",")) || text.contains(&(needle.clone() + "}")),
        "expected {needle} in {text}"
    );
}

#[tokio::test]
async fn every_bounded_number_is_accepted_at_its_bound_and_refused_one_past() {
    let app = spawn_app().await;
    let org = Org::new(&app, "bounds@example.com").await;
    let post = Method::POST;

    // Items: price and cost 0..=10^13, reorder level 0..=10^12.
    for (field, bound) in [
        ("priceCents", MAX_CENTS),
        ("costCents", MAX_CENTS),
        ("reorderLevel", MAX_STOCK),
    ] {
        let sku = format!("AT-{field}");
        org.item(&app, &sku, 1, json!({ field: bound })).await;
        for bad in [bound + 1, -1, i64::MAX, i64::MIN] {
            let mut body = json!({"name": "x", "sku": format!("PAST-{field}"), "priceCents": 1});
            body[field] = json!(bad);
            refused(&org, &app, post.clone(), "/items", body, field).await;
        }
    }
    let item = org.item(&app, "PLAIN", 100, json!({})).await;
    refused(
        &org,
        &app,
        Method::PATCH,
        &format!("/items/{item}"),
        json!({"priceCents": MAX_CENTS + 1}),
        "priceCents",
    )
    .await;
    assert_eq!(
        org.total(&app, "/items").await,
        4,
        "nothing written past a bound"
    );

    // Tax rates: 0..=100,000 bps.
    org.created(
        &app,
        "/tax-rates",
        json!({"name": "max", "rateBps": 100_000}),
    )
    .await;
    for bad in [100_001, -1] {
        refused(
            &org,
            &app,
            post.clone(),
            "/tax-rates",
            json!({"name": "past", "rateBps": bad}),
            "rateBps",
        )
        .await;
    }

    // Adjustments: |quantityDelta| ≤ 10^9; transfers: 1..=10^9.
    let adjust = |delta: i64| json!({"itemId": item, "warehouseId": org.warehouse, "quantityDelta": delta, "reason": "count"});
    org.created(&app, "/inventory/adjustments", adjust(1_000_000_000))
        .await;
    org.created(&app, "/inventory/adjustments", adjust(-1_000_000_000))
        .await;
    for bad in [1_000_000_001, -1_000_000_001, i64::MIN] {
        refused(
            &org,
            &app,
            post.clone(),
            "/inventory/adjustments",
            adjust(bad),
            "quantityDelta",
        )
        .await;
    }
    org.created(&app, "/inventory/adjustments", adjust(1_000_000_000))
        .await;
    let transfer = |quantity: i64| json!({"itemId": item, "fromWarehouseId": org.warehouse, "toWarehouseId": org.other_warehouse, "quantity": quantity});
    org.created(&app, "/inventory/transfers", transfer(1_000_000_000))
        .await;
    refused(
        &org,
        &app,
        post.clone(),
        "/inventory/transfers",
        transfer(1_000_000_001),
        "quantity",
    )
    .await;

    // Order lines: quantity 1..=10^6, unit price and cost 0..=10^13.
    let sale = |quantity: i64, unit: i64| {
        json!({"customerId": org.customer, "warehouseId": org.warehouse,
               "lines": [{"itemId": item, "quantity": quantity, "unitPriceCents": unit}]})
    };
    org.created(&app, "/sales-orders", sale(1_000_000, 1)).await;
    org.created(&app, "/sales-orders", sale(1, MAX_CENTS)).await;
    refused(
        &org,
        &app,
        post.clone(),
        "/sales-orders",
        sale(1_000_001, 1),
        "lines[0].quantity",
    )
    .await;
    refused(
        &org,
        &app,
        post.clone(),
        "/sales-orders",
        sale(1, MAX_CENTS + 1),
        "lines[0].unitPriceCents",
    )
    .await;
    refused(
        &org,
        &app,
        post.clone(),
        "/sales-orders",
        sale(1, -1),
        "lines[0].unitPriceCents",
    )
    .await;
    let purchase = |quantity: i64, unit: i64| {
        json!({"vendorId": org.vendor, "warehouseId": org.warehouse,
               "lines": [{"itemId": item, "quantity": quantity, "unitCostCents": unit}]})
    };
    org.created(&app, "/purchase-orders", purchase(1, MAX_CENTS))
        .await;
    refused(
        &org,
        &app,
        post.clone(),
        "/purchase-orders",
        purchase(1, MAX_CENTS + 1),
        "lines[0].unitCostCents",
    )
    .await;
    assert_eq!(org.total(&app, "/sales-orders").await, 2);
    assert_eq!(org.total(&app, "/purchase-orders").await, 1);

    // Payments: 1..=10^13 (and never above the balance).
    let orders: Value = serde_json::from_str(&org.read(&app, "/sales-orders").await).expect("json");
    let big = orders["data"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["totalCents"] == json!(MAX_CENTS)))
        .map(id)
        .expect("the maximal order");
    org.created(&app, "/inventory/adjustments", adjust(1)).await;
    org.fulfil(&app, &big).await;
    let invoice = id(&org
        .created(&app, "/invoices", json!({"salesOrderId": big}))
        .await);
    let pay = format!("/invoices/{invoice}/payments");
    for bad in [MAX_CENTS + 1, 0, -1, i64::MAX] {
        refused(
            &org,
            &app,
            post.clone(),
            &pay,
            json!({"amountCents": bad}),
            "amountCents",
        )
        .await;
    }
    let paid = org
        .created(&app, &pay, json!({"amountCents": MAX_CENTS}))
        .await;
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(paid["balanceCents"], 0);

    // Paging: page 1..=2^31-1, limit 1..=100.
    for (query, ok) in [
        ("page=2147483647", true),
        ("page=2147483648", false),
        ("page=0", false),
        ("limit=100", true),
        ("limit=101", false),
    ] {
        let response = app.caller(&org.token).get(&format!("/items?{query}")).await;
        if ok {
            assert_eq!(response.status, StatusCode::OK, "{query}");
            if query.starts_with("page=") {
                // Past the end: no rows, the same total as the first page's.
                let past = response.json();
                let first = app.caller(&org.token).get("/items").await.json();
                assert_eq!(past["data"], json!([]), "{past}");
                assert_eq!(past["total"], first["total"], "{past}");
                assert!(first["total"].as_i64() > Some(0), "{first}");
            }
        } else {
            response.field_error(query.split('=').next().unwrap_or_default());
        }
    }

    // The bounds are in the document a client generator reads.
    let doc = app.anonymous().get("/openapi.json").await.json();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["ItemBody"]["properties"]["priceCents"]["maximum"],
        json!(MAX_CENTS)
    );
    assert_eq!(
        schemas["TaxRateBody"]["properties"]["rateBps"]["maximum"],
        json!(100_000)
    );
    assert_eq!(
        schemas["PaymentBody"]["properties"]["amountCents"]["maximum"],
        json!(MAX_CENTS)
    );
    assert_eq!(
        schemas["OrderLineBody"]["properties"]["quantity"]["maximum"],
        json!(1_000_000)
    );
}

#[tokio::test]
async fn an_order_whose_figures_would_not_fit_is_422_and_writes_nothing() {
    let app = spawn_app().await;
    let org = Org::new(&app, "overflow@example.com").await;
    let tax = id(&org
        .created(&app, "/tax-rates", json!({"name": "VAT", "rateBps": 825}))
        .await);
    let plain = org.item(&app, "MAX", MAX_CENTS, json!({})).await;
    let taxed = org
        .item(&app, "MAX-T", MAX_CENTS, json!({"taxRateId": tax}))
        .await;
    // The issue's item: i64::MAX cents is no longer a price at all.
    refused(
        &org,
        &app,
        Method::POST,
        "/items",
        json!({"name": "x", "sku": "WRAP", "priceCents": i64::MAX}),
        "priceCents",
    )
    .await;

    let order = |lines: Value| json!({"customerId": org.customer, "warehouseId": org.warehouse, "lines": lines});
    // One maximal untaxed line fits exactly.
    let fits = org
        .created(
            &app,
            "/sales-orders",
            order(json!([{"itemId": plain, "quantity": 1}])),
        )
        .await;
    assert_eq!(fits["totalCents"], json!(MAX_CENTS), "{fits}");
    for (lines, field) in [
        // quantity × price past the bound (and 3 × i64::MAX wrapped before).
        (json!([{"itemId": plain, "quantity": 3}]), "lines[0]"),
        // Tax pushes a storable subtotal past it.
        (json!([{"itemId": taxed, "quantity": 1}]), "lines[0]"),
        // Each line fits, their sum does not.
        (
            json!([{"itemId": plain, "quantity": 1}, {"itemId": plain, "quantity": 1, "unitPriceCents": 1}]),
            "lines",
        ),
    ] {
        refused(
            &org,
            &app,
            Method::POST,
            "/sales-orders",
            order(lines.clone()),
            field,
        )
        .await;
        let purchase = json!({"vendorId": org.vendor, "warehouseId": org.warehouse,
            "lines": lines.as_array().map(|ls| ls.iter().map(|l| {
                let mut l = l.clone();
                l["unitCostCents"] = l.get("unitPriceCents").cloned().unwrap_or(json!(MAX_CENTS));
                l
            }).collect::<Vec<_>>())});
        if field == "lines" || lines[0]["quantity"] == 3 {
            refused(
                &org,
                &app,
                Method::POST,
                "/purchase-orders",
                purchase,
                field,
            )
            .await;
        }
    }
    // Re-pricing an open order the same way is refused, and the order is unchanged.
    let small = org
        .created(
            &app,
            "/sales-orders",
            order(json!([{"itemId": plain, "quantity": 1, "unitPriceCents": 5}])),
        )
        .await;
    let path = format!("/sales-orders/{}", id(&small));
    refused(
        &org,
        &app,
        Method::PATCH,
        &path,
        json!({"lines": [{"itemId": plain, "quantity": 2}]}),
        "lines[0]",
    )
    .await;
    let after: Value = serde_json::from_str(&org.read(&app, &path).await).expect("json");
    assert_eq!(after["totalCents"], 5, "{after}");
    assert_eq!(
        org.total(&app, "/sales-orders").await,
        2,
        "nothing else written"
    );
    assert_eq!(org.total(&app, "/purchase-orders").await, 0);
}

#[tokio::test]
async fn the_largest_rate_on_the_largest_subtotal_is_exact_through_invoice_and_payment() {
    let app = spawn_app().await;
    let org = Org::new(&app, "tax@example.com").await;
    for bps in [100_000_i64, 99_999] {
        let rate = id(&org
            .created(
                &app,
                "/tax-rates",
                json!({"name": format!("r{bps}"), "rateBps": bps}),
            )
            .await);
        // The largest price whose taxed total still fits.
        let price = i64::try_from(i128::from(MAX_CENTS) * 10_000 / (10_000 + i128::from(bps)) - 1)
            .expect("fits");
        let item = org
            .item(&app, &format!("T{bps}"), price, json!({"taxRateId": rate}))
            .await;
        let tax = i64::try_from((i128::from(price) * i128::from(bps) + 5_000).div_euclid(10_000))
            .expect("fits");
        assert!(price + tax <= MAX_CENTS);
        org.created(
            &app,
            "/inventory/adjustments",
            json!({"itemId": item, "warehouseId": org.warehouse, "quantityDelta": 1, "reason": "in"}),
        )
        .await;
        let order = org
            .created(
                &app,
                "/sales-orders",
                json!({"customerId": org.customer, "warehouseId": org.warehouse, "lines": [{"itemId": item, "quantity": 1}]}),
            )
            .await;
        assert_eq!(order["subtotalCents"], json!(price), "{order}");
        assert_eq!(order["taxCents"], json!(tax), "{order}");
        assert_eq!(order["totalCents"], json!(price + tax), "{order}");
        let line = &order["lines"][0];
        assert_eq!(
            (line["taxCents"].clone(), line["totalCents"].clone()),
            (json!(tax), json!(price + tax))
        );
        org.fulfil(&app, &id(&order)).await;
        let invoice = org
            .created(&app, "/invoices", json!({"salesOrderId": id(&order)}))
            .await;
        assert_eq!(invoice["totalCents"], json!(price + tax));
        let pay = format!("/invoices/{}/payments", id(&invoice));
        let part = org.created(&app, &pay, json!({"amountCents": price})).await;
        assert_eq!(part["balanceCents"], json!(tax), "{part}");
        refused(
            &org,
            &app,
            Method::POST,
            &pay,
            json!({"amountCents": tax + 1}),
            "amountCents",
        )
        .await;
        let rest = org.created(&app, &pay, json!({"amountCents": tax})).await;
        assert_eq!(rest["status"], "paid");
    }
}

/// Copies order `template` (with its one line) `copies` times in SQL: far quicker than the
/// API for a million orders, and the copies are what the API would have written.
async fn copy_order(app: &TestApp, template: &str, copies: i64) {
    // A connection of its own: the server's carry a statement time-out of the request
    // time-out, which a million-row copy on a loaded machine can outlast.
    let own = sqlx::AnyPool::connect(&app.state.settings.database_url)
        .await
        .expect("connect");
    let pool = &own;
    let numbers = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $2)";
    let order_sql = format!(
        "{numbers} INSERT INTO sales_orders
           (id, organization_id, customer_id, warehouse_id, status, notes, subtotal_cents,
            tax_cents, total_cents, fulfilled_at, created_at, updated_at)
         SELECT o.id || '-' || CAST(n.i AS TEXT), o.organization_id, o.customer_id,
                o.warehouse_id, o.status, o.notes, o.subtotal_cents, o.tax_cents,
                o.total_cents, o.fulfilled_at, o.created_at, o.updated_at
         FROM sales_orders o CROSS JOIN n WHERE o.id = $1"
    );
    let line_sql = format!(
        "{numbers} INSERT INTO sales_order_lines
           (id, organization_id, sales_order_id, line_no, item_id, quantity, unit_price_cents,
            tax_rate_bps, subtotal_cents, tax_cents, total_cents)
         SELECT l.id || '-' || CAST(n.i AS TEXT), l.organization_id,
                l.sales_order_id || '-' || CAST(n.i AS TEXT), l.line_no, l.item_id,
                l.quantity, l.unit_price_cents, l.tax_rate_bps, l.subtotal_cents,
                l.tax_cents, l.total_cents
         FROM sales_order_lines l CROSS JOIN n WHERE l.sales_order_id = $1"
    );
    // As after any bulk load (the seed does the same): fresh statistics for the planners.
    for sql in [order_sql, line_sql, "ANALYZE".to_string()] {
        let query = sqlx::query(&sql);
        let query = if sql == "ANALYZE" {
            query
        } else {
            query.bind(template).bind(copies)
        };
        query.execute(pool).await.expect("copy");
    }
}

#[tokio::test]
async fn sums_over_a_million_maximal_orders_are_exact_in_dashboards_and_reports() {
    let app = spawn_app().await;
    let org = Org::new(&app, "million@example.com").await;
    let item = org.item(&app, "MAX", MAX_CENTS, json!({})).await;
    let small_buyer = id(&org
        .created(
            &app,
            "/contacts",
            json!({"type": "customer", "name": "Aaron Small"}),
        )
        .await);
    org.created(
        &app,
        "/inventory/adjustments",
        json!({"itemId": item, "warehouseId": org.warehouse, "quantityDelta": 2, "reason": "in"}),
    )
    .await;
    let mut orders = Vec::new();
    for (customer, unit) in [(&org.customer, MAX_CENTS), (&small_buyer, 7)] {
        let order = org
            .created(
                &app,
                "/sales-orders",
                json!({"customerId": customer, "warehouseId": org.warehouse,
                       "lines": [{"itemId": item, "quantity": 1, "unitPriceCents": unit}]}),
            )
            .await;
        org.fulfil(&app, &id(&order)).await;
        orders.push(id(&order));
    }
    // 10^6 orders of 10^13 cents: 10^19, past i64::MAX (about 9.22·10^18).
    copy_order(&app, &orders[0], 999_999).await;
    let big = "10000000000000000000";
    let all = i128::from(MAX_CENTS) * 1_000_000 + 7;

    let kpis = org.read(&app, "/dashboard/kpis").await;
    assert_figure(&kpis, "revenueCents", &all.to_string());
    assert_figure(&kpis, "orderCount", "1000001");
    assert_figure(
        &kpis,
        "averageOrderCents",
        &((all + 500_000) / 1_000_001).to_string(),
    );
    let chart = org
        .read(&app, "/dashboard/sales-chart?interval=month")
        .await;
    assert_figure(&chart, "revenueCents", &all.to_string());
    let customers = org.read(&app, "/dashboard/top-customers").await;
    let ranked: Value = serde_json::from_str(&customers).expect("json");
    assert_eq!(
        ranked["data"][0]["name"], "Big Buyer",
        "exact order, not an overflow: {customers}"
    );
    assert_eq!(ranked["data"][1]["name"], "Aaron Small");
    assert_figure(&customers, "revenueCents", big);
    let products = org.read(&app, "/dashboard/top-products").await;
    assert_figure(&products, "revenueCents", &all.to_string());
    assert_figure(&products, "quantity", "1000001");

    let by_item = org.read(&app, "/reports/sales-by-item").await;
    for field in ["subtotalCents", "totalCents"] {
        assert_figure(&by_item, field, &all.to_string());
    }
    assert_figure(&by_item, "taxCents", "0");
    let by_customer = org.read(&app, "/reports/sales-by-customer").await;
    assert_figure(&by_customer, "subtotalCents", big);
    assert_figure(&by_customer, "totalCents", &all.to_string());
    let report: Value = serde_json::from_str(&by_customer).expect("json");
    assert_eq!(report["rows"][0]["name"], "Big Buyer", "{by_customer}");
}

#[tokio::test]
async fn stock_valued_past_64_bits_is_exact_and_levels_stop_at_their_bound() {
    let app = spawn_app().await;
    let org = Org::new(&app, "stock@example.com").await;
    let dear = org
        .item(&app, "DEAR", 1, json!({"costCents": MAX_CENTS}))
        .await;
    let cheap = org.item(&app, "CHEAP", 1, json!({"costCents": 3})).await;
    let adjust = |item: &str, warehouse: &str, delta: i64| json!({"itemId": item, "warehouseId": warehouse, "quantityDelta": delta, "reason": "in"});
    for warehouse in [&org.warehouse, &org.other_warehouse] {
        org.created(
            &app,
            "/inventory/adjustments",
            adjust(&dear, warehouse, 1_000_000_000),
        )
        .await;
    }
    org.created(
        &app,
        "/inventory/adjustments",
        adjust(&cheap, &org.warehouse, 5),
    )
    .await;
    // A thousand adjustments of 10^9 each, in one statement: both levels at the bound.
    sqlx::query("UPDATE stock_levels SET quantity = $1 WHERE item_id = $2")
        .bind(MAX_STOCK)
        .bind(&dear)
        .execute(app.state.db.pool())
        .await
        .expect("levels");
    // One more unit would pass the bound: 409, nothing applied, also by a transfer.
    let over = org
        .send(
            &app,
            Method::POST,
            "/inventory/adjustments",
            adjust(&dear, &org.warehouse, 1),
        )
        .await;
    over.problem(StatusCode::CONFLICT);
    let take = org
        .send(
            &app,
            Method::POST,
            "/inventory/adjustments",
            adjust(&dear, &org.warehouse, -1),
        )
        .await;
    assert_eq!(take.status, StatusCode::CREATED);
    let transfer = org
        .send(
            &app,
            Method::POST,
            "/inventory/transfers",
            json!({"itemId": dear, "fromWarehouseId": org.other_warehouse, "toWarehouseId": org.warehouse, "quantity": 2}),
        )
        .await;
    transfer.problem(StatusCode::CONFLICT);
    let levels: Value = serde_json::from_str(
        &org.read(&app, &format!("/inventory/stock-levels?itemId={dear}"))
            .await,
    )
    .expect("json");
    let mut quantities: Vec<i64> = levels["data"]
        .as_array()
        .expect("levels")
        .iter()
        .filter_map(|l| l["quantity"].as_i64())
        .collect();
    quantities.sort_unstable();
    assert_eq!(
        quantities,
        [MAX_STOCK - 1, MAX_STOCK],
        "the transfer took nothing"
    );

    // (2·10^12 − 1) × 10^13 ≈ 2·10^25 cents, far past 2^64.
    let on_hand = 2 * i128::from(MAX_STOCK) - 1;
    let dear_value = on_hand * i128::from(MAX_CENTS);
    let total = dear_value + 15;
    let valuation = org.read(&app, "/reports/inventory-valuation").await;
    assert_figure(&valuation, "valueCents", &dear_value.to_string());
    assert_figure(&valuation, "valueCents", &total.to_string());
    assert_figure(&valuation, "quantity", &on_hand.to_string());
    let report: Value = serde_json::from_str(&valuation).expect("json");
    assert_eq!(
        report["rows"][0]["sku"], "DEAR",
        "highest value first: {valuation}"
    );
    assert_eq!(report["rows"][1]["sku"], "CHEAP");
    let kpis = org.read(&app, "/dashboard/kpis").await;
    assert_figure(&kpis, "inventoryValueCents", &total.to_string());
    let status = org.read(&app, "/dashboard/inventory-status").await;
    assert_figure(&status, "inventoryValueCents", &total.to_string());
    let main_value = (i128::from(MAX_STOCK) - 1) * i128::from(MAX_CENTS) + 15;
    assert_figure(&status, "valueCents", &main_value.to_string());
    assert_figure(
        &status,
        "valueCents",
        &(i128::from(MAX_STOCK) * i128::from(MAX_CENTS)).to_string(),
    );
}

/// A number is read as it is written: a fraction that a float cannot hold
/// (`1999.99999999999999` is `2000.0` as an `f64`) is still a fraction, so a 422 and nothing
/// written, never a rounded amount; an integer written as a float (`4.768e3`) is the integer.
#[tokio::test]
async fn a_fraction_is_refused_even_where_a_float_would_round_it_to_an_integer() {
    let app = spawn_app().await;
    let org = Org::new(&app, "fractions@example.com").await;
    let item = org.item(&app, "F-1", 100, json!({})).await;
    let adjust = |delta: &str| {
        format!(
            r#"{{"itemId":"{item}","warehouseId":"{}","quantityDelta":{delta},"reason":"x"}}"#,
            org.warehouse
        )
    };
    for (path, body) in [
        (
            "/items",
            r#"{"name":"f","sku":"FR-1","priceCents":1999.99999999999999}"#.to_string(),
        ),
        (
            "/items",
            r#"{"name":"f","sku":"FR-2","priceCents":10000000000000.0000001}"#.to_string(),
        ),
        ("/inventory/adjustments", adjust("0.99999999999999999")),
        ("/inventory/adjustments", adjust("1.0000000000000000001")),
        // A float reads these one unit in the last place off, as an integer (probe 15).
        (
            "/items",
            r#"{"name":"f","sku":"FR-4","priceCents":999999.0000000001}"#.to_string(),
        ),
        (
            "/items",
            r#"{"name":"f","sku":"FR-5","priceCents":99999999999999.99e-1}"#.to_string(),
        ),
        ("/inventory/adjustments", adjust("0.9999999999999999")),
        // A duplicate key is refused when another number is a float, as without (probe 15).
        (
            "/items",
            r#"{"name":"f","sku":"FR-6","priceCents":20000000000000,"priceCents":1.0}"#.to_string(),
        ),
    ] {
        let response = send_raw(&app, Method::POST, path, &body, &org.token).await;
        assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    assert_eq!(org.total(&app, "/items").await, 1, "no item written");
    assert_eq!(org.total(&app, "/inventory/adjustments").await, 0);
    let response = send_raw(
        &app,
        Method::POST,
        "/items",
        r#"{"name":"f","sku":"FR-3","priceCents":4.768e3}"#,
        &org.token,
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.expect("json");
    assert_eq!(created["priceCents"], 4768);
    // A fraction in a field the route ignores changes nothing (schemathesis sends such).
    let response = send_raw(
        &app,
        Method::POST,
        "/items",
        r#"{"name":"f","sku":"FR-4","priceCents":1770.0,"ignored":2.220446049250313e-16}"#,
        &org.token,
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
}
