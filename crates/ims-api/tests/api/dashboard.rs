//! Dashboard figures over a small fixed data set built through the API, with every expected
//! number worked out by hand from the fixture's literals (see the comments in [`fixture`]).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{id, user};
use crate::helpers::{spawn_app, TestApp};

/// The ids of the fixture's rows.
pub struct Fixture {
    pub acme: String,
    pub bolt: String,
    pub vendco: String,
    pub widget: String,
    pub gadget: String,
    pub doohickey: String,
    pub thingamajig: String,
    pub gizmo: String,
    pub main: String,
    pub annex: String,
    pub empty: String,
}

pub async fn get_ok(app: &TestApp, token: &str, path: &str) -> Value {
    app.caller(token).get(path).await.expect(StatusCode::OK)
}

async fn post_ok(app: &TestApp, token: &str, path: &str, status: StatusCode) -> Value {
    app.caller(token)
        .send(Method::POST, path, None)
        .await
        .expect(status)
}

async fn adjust(app: &TestApp, token: &str, item: &str, warehouse: &str, delta: i64) {
    app.caller(token).create("/inventory/adjustments", json!({"itemId": item, "warehouseId": warehouse, "quantityDelta": delta, "reason": "count"})).await;
}

/// Fixture shortcut: the API stamps orders with the current time, so tests move them to
/// fixed dates directly in the database.
async fn set_time(app: &TestApp, sql: &str, at: &str, id: &str) {
    sqlx::query(sql)
        .bind(at)
        .bind(id)
        .execute(app.state.db.pool())
        .await
        .expect("move timestamp");
}

/// Creates, fulfils and dates a sales order; returns its id.
async fn sale(
    app: &TestApp,
    token: &str,
    body: Value,
    fulfilled_at: &str,
    expected_totals: (i64, i64, i64),
) -> String {
    let order = app.caller(token).create("/sales-orders", body).await;
    assert_eq!(
        (
            order["subtotalCents"].as_i64(),
            order["taxCents"].as_i64(),
            order["totalCents"].as_i64()
        ),
        (
            Some(expected_totals.0),
            Some(expected_totals.1),
            Some(expected_totals.2)
        ),
        "{order}"
    );
    let order_id = id(&order);
    let fulfilled = post_ok(
        app,
        token,
        &format!("/sales-orders/{order_id}/fulfil"),
        StatusCode::OK,
    )
    .await;
    assert_eq!(fulfilled["status"], "fulfilled");
    set_time(
        app,
        "UPDATE sales_orders SET fulfilled_at = $1 WHERE id = $2",
        fulfilled_at,
        &order_id,
    )
    .await;
    order_id
}

/// Creates an invoice for `order` and pays `paid` of it.
async fn invoice(app: &TestApp, token: &str, order: &str, paid: i64) {
    let api = app.caller(token);
    let invoice = api
        .create("/invoices", json!({"salesOrderId": order}))
        .await;
    if paid > 0 {
        api.create(
            &format!("/invoices/{}/payments", id(&invoice)),
            json!({"amountCents": paid}),
        )
        .await;
    }
}

/// Builds the data set every dashboard and report test uses. Expected figures:
///
/// Tax rates: Standard 10 % (1000 bps), Reduced 8.25 % (825 bps).
/// Items (price / cost / tax / reorder level):
///   Widget 1000 / 600 / Standard / 10, Gadget 2550 / 1500 / Reduced / 30,
///   Doohickey 300 / 100 / Reduced / –, Thingamajig 500 / – / – / 0, Gizmo 800 / – / – / –.
///
/// Fulfilled sales (line tax rounded half up):
///   SO1 Acme  2026-01-05 10:00     Widget 5×1000=5000 (+500), Gadget 2×2500=5000 (+412.5→413)
///                                  = 10000 + 913 = 10913
///   SO2 Bolt  2026-01-05 23:59:59.999  Doohickey 10×300=3000 (+247.5→248) = 3248
///   SO6 Acme  2026-01-06 00:00     Doohickey 5×300=1500 (+123.75→124) = 1624
///   SO3 Bolt  2026-02-10 08:00     Widget 3×900=2700 (+270) = 2970
///   revenue 17200 over 4 orders; tax 1555; total 18755.
/// Not sales: SO4 Acme open (Gadget 1×2550), SO5 Acme cancelled (Widget 7×1000).
///
/// Stock: adjustments Widget Main +50 / Annex +10, Gadget Main +20, Doohickey Annex +40,
/// Thingamajig Main +3 −3, Gizmo Annex +7; sales take Widget 5+3 (Main), Gadget 2 (Main),
/// Doohickey 10+5 (Annex); PO1 (received 2026-01-20) brings Gadget 10×1400 and Doohickey
/// 4×90 to Main (total 14360); PO2 (Widget 100×550) stays open. On hand:
///   Widget   Main 42, Annex 10 → 52 × 600 = 31200
///   Gadget   Main 28          → 28 × 1500 = 42000 (≤ 30: low)
///   Doohickey Main 4, Annex 25 → 29 × 100 = 2900
///   Thingamajig Main 0        → 0 (≤ 0: low; out of stock)
///   Gizmo    Annex 7          → 7 × no cost = 0
///   116 units, value 76100; Main 74 units / 67600, Annex 42 / 8500, Empty 0 / 0.
///
/// Invoices: SO1 10913 paid 5000, SO2 3248 paid in full, SO4 (open) 2760 unpaid,
/// SO3 2970 paid 1000 → outstanding 5913 + 2760 + 1970 = 10643.
pub async fn fixture(app: &TestApp, token: &str) -> Fixture {
    let api = app.caller(token);
    let standard = id(&api
        .create("/tax-rates", json!({"name": "Standard", "rateBps": 1000}))
        .await);
    let reduced = id(&api
        .create("/tax-rates", json!({"name": "Reduced", "rateBps": 825}))
        .await);
    let main = id(&api
        .create("/warehouses", json!({"name": "Main", "code": "MAIN"}))
        .await);
    let annex = id(&api
        .create("/warehouses", json!({"name": "Annex", "code": "ANX"}))
        .await);
    let empty = id(&api
        .create("/warehouses", json!({"name": "Empty", "code": "EMP"}))
        .await);
    let acme = id(&api
        .create("/contacts", json!({"type": "customer", "name": "Acme"}))
        .await);
    let bolt = id(&api
        .create("/contacts", json!({"type": "customer", "name": "Bolt"}))
        .await);
    let vendco = id(&api
        .create("/contacts", json!({"type": "vendor", "name": "Vendco"}))
        .await);
    let item = |body: Value| async move { id(&api.create("/items", body).await) };
    let widget = item(json!({"name": "Widget", "sku": "WID", "priceCents": 1000,
        "costCents": 600, "taxRateId": standard, "reorderLevel": 10}))
    .await;
    let gadget = item(json!({"name": "Gadget", "sku": "GAD", "priceCents": 2550,
        "costCents": 1500, "taxRateId": reduced, "reorderLevel": 30}))
    .await;
    let doohickey = item(json!({"name": "Doohickey", "sku": "DOO", "priceCents": 300,
        "costCents": 100, "taxRateId": reduced}))
    .await;
    let thingamajig = item(
        json!({"name": "Thingamajig", "sku": "THI", "priceCents": 500,
        "reorderLevel": 0}),
    )
    .await;
    let gizmo = item(json!({"name": "Gizmo", "sku": "GIZ", "priceCents": 800})).await;

    adjust(app, token, &widget, &main, 50).await;
    adjust(app, token, &widget, &annex, 10).await;
    adjust(app, token, &gadget, &main, 20).await;
    adjust(app, token, &doohickey, &annex, 40).await;
    adjust(app, token, &thingamajig, &main, 3).await;
    adjust(app, token, &thingamajig, &main, -3).await;
    adjust(app, token, &gizmo, &annex, 7).await;

    let so1 = sale(
        app,
        token,
        json!({"customerId": acme, "warehouseId": main, "lines": [
            {"itemId": widget, "quantity": 5},
            {"itemId": gadget, "quantity": 2, "unitPriceCents": 2500}]}),
        "2026-01-05T10:00:00.000Z",
        (10000, 913, 10913),
    )
    .await;
    let so2 = sale(
        app,
        token,
        json!({"customerId": bolt, "warehouseId": annex, "lines": [
            {"itemId": doohickey, "quantity": 10}]}),
        "2026-01-05T23:59:59.999Z",
        (3000, 248, 3248),
    )
    .await;
    sale(
        app,
        token,
        json!({"customerId": acme, "warehouseId": annex, "lines": [
            {"itemId": doohickey, "quantity": 5}]}),
        "2026-01-06T00:00:00.000Z",
        (1500, 124, 1624),
    )
    .await;
    let so3 = sale(
        app,
        token,
        json!({"customerId": bolt, "warehouseId": main, "lines": [
            {"itemId": widget, "quantity": 3, "unitPriceCents": 900}]}),
        "2026-02-10T08:00:00.000Z",
        (2700, 270, 2970),
    )
    .await;
    let so4 = api
        .create(
            "/sales-orders",
            json!({"customerId": acme, "warehouseId": main, "lines": [
            {"itemId": gadget, "quantity": 1}]}),
        )
        .await;
    assert_eq!(so4["totalCents"], 2760);
    let so5 = api
        .create(
            "/sales-orders",
            json!({"customerId": acme, "warehouseId": main, "lines": [
            {"itemId": widget, "quantity": 7}]}),
        )
        .await;
    let cancelled = api
        .patch(
            &format!("/sales-orders/{}", id(&so5)),
            json!({"status": "cancelled"}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(cancelled["status"], "cancelled");

    let po1 = api
        .create(
            "/purchase-orders",
            json!({"vendorId": vendco, "warehouseId": main, "lines": [
            {"itemId": gadget, "quantity": 10, "unitCostCents": 1400},
            {"itemId": doohickey, "quantity": 4, "unitCostCents": 90}]}),
        )
        .await;
    assert_eq!(po1["totalCents"], 14360);
    post_ok(
        app,
        token,
        &format!("/purchase-orders/{}/receive", id(&po1)),
        StatusCode::OK,
    )
    .await;
    set_time(
        app,
        "UPDATE purchase_orders SET received_at = $1 WHERE id = $2",
        "2026-01-20T12:00:00.000Z",
        &id(&po1),
    )
    .await;
    api.create(
        "/purchase-orders",
        json!({"vendorId": vendco, "warehouseId": main, "lines": [
            {"itemId": widget, "quantity": 100, "unitCostCents": 550}]}),
    )
    .await;

    invoice(app, token, &so1, 5000).await;
    invoice(app, token, &so2, 3248).await;
    invoice(app, token, &id(&so4), 0).await;
    invoice(app, token, &so3, 1000).await;

    Fixture {
        acme,
        bolt,
        vendco,
        widget,
        gadget,
        doohickey,
        thingamajig,
        gizmo,
        main,
        annex,
        empty,
    }
}

fn kpis(revenue: i64, orders: i64, average: i64, from: Value, to: Value) -> Value {
    json!({
        "revenueCents": revenue, "orderCount": orders, "averageOrderCents": average,
        "receivablesOutstandingCents": 10643, "lowStockCount": 2, "inventoryValueCents": 76100,
        "from": from, "to": to
    })
}

#[tokio::test]
async fn kpis_count_only_fulfilled_sales_in_the_period() {
    let app = spawn_app().await;
    let (t, _) = user(&app, "kpis@example.com").await;
    fixture(&app, &t).await;

    assert_eq!(
        get_ok(&app, &t, "/dashboard/kpis").await,
        kpis(17200, 4, 4300, Value::Null, Value::Null)
    );
    // Both ends inclusive: the order at 23:59:59.999 counts, the one at midnight after not.
    assert_eq!(
        get_ok(&app, &t, "/dashboard/kpis?from=2026-01-05&to=2026-01-05").await,
        kpis(13000, 2, 6500, json!("2026-01-05"), json!("2026-01-05"))
    );
    // 4200 / 2 orders; open-ended at the top.
    assert_eq!(
        get_ok(&app, &t, "/dashboard/kpis?from=2026-01-06").await,
        kpis(4200, 2, 2100, json!("2026-01-06"), Value::Null)
    );
    // (10000 + 3000 + 1500) / 3 = 4833.33 → 4833.
    assert_eq!(
        get_ok(&app, &t, "/dashboard/kpis?to=2026-01-31").await,
        kpis(14500, 3, 4833, Value::Null, json!("2026-01-31"))
    );
    assert_eq!(
        get_ok(&app, &t, "/dashboard/kpis?from=2026-03-01").await,
        kpis(0, 0, 0, json!("2026-03-01"), Value::Null)
    );
}

fn series(body: &Value) -> Vec<(String, i64, i64)> {
    body["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|p| {
            (
                p["period"].as_str().expect("period").to_string(),
                p["revenueCents"].as_i64().expect("revenue"),
                p["orderCount"].as_i64().expect("count"),
            )
        })
        .collect()
}

fn point(period: &str, revenue: i64, orders: i64) -> (String, i64, i64) {
    (period.to_string(), revenue, orders)
}

#[tokio::test]
async fn sales_chart_is_zero_filled_by_day_and_month() {
    let app = spawn_app().await;
    let (t, _) = user(&app, "chart@example.com").await;
    fixture(&app, &t).await;

    let days = get_ok(
        &app,
        &t,
        "/dashboard/sales-chart?interval=day&from=2026-01-04&to=2026-01-07",
    )
    .await;
    assert_eq!(
        (&days["interval"], &days["from"], &days["to"]),
        (&json!("day"), &json!("2026-01-04"), &json!("2026-01-07"))
    );
    assert_eq!(
        series(&days),
        [
            point("2026-01-04", 0, 0),
            point("2026-01-05", 13000, 2),
            point("2026-01-06", 1500, 1),
            point("2026-01-07", 0, 0),
        ]
    );

    // The interval defaults to days.
    let default_interval = get_ok(
        &app,
        &t,
        "/dashboard/sales-chart?from=2026-02-10&to=2026-02-10",
    )
    .await;
    assert_eq!(default_interval["interval"], "day");
    assert_eq!(series(&default_interval), [point("2026-02-10", 2700, 1)]);

    let months = get_ok(
        &app,
        &t,
        "/dashboard/sales-chart?interval=month&from=2025-12-01&to=2026-03-31",
    )
    .await;
    assert_eq!(
        series(&months),
        [
            point("2025-12", 0, 0),
            point("2026-01", 14500, 3),
            point("2026-02", 2700, 1),
            point("2026-03", 0, 0),
        ]
    );
    // Edge months only count the days inside the range: Jan 6 onwards, Feb up to the 9th.
    let partial = get_ok(
        &app,
        &t,
        "/dashboard/sales-chart?interval=month&from=2026-01-06&to=2026-02-09",
    )
    .await;
    assert_eq!(
        series(&partial),
        [point("2026-01", 1500, 1), point("2026-02", 0, 0)]
    );

    // Defaults: the last 30 days and the last 12 months, ending today (UTC).
    let today = time::OffsetDateTime::now_utc().date();
    let day_text =
        |d: time::Date| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day());
    let recent = get_ok(&app, &t, "/dashboard/sales-chart").await;
    let points = series(&recent);
    assert_eq!(points.len(), 30);
    assert_eq!(points[29].0, day_text(today));
    assert_eq!(points[0].0, day_text(today - time::Duration::days(29)));
    assert_eq!(recent["to"], day_text(today));
    let year = get_ok(&app, &t, "/dashboard/sales-chart?interval=month").await;
    let points = series(&year);
    assert_eq!(points.len(), 12);
    assert_eq!(points[11].0, day_text(today)[..7]);
    assert_eq!(
        year["from"].as_str().map(|f| f.ends_with("-01")),
        Some(true)
    );

    // Exactly 366 days is allowed.
    let leap = get_ok(
        &app,
        &t,
        "/dashboard/sales-chart?from=2024-01-01&to=2024-12-31",
    )
    .await;
    assert_eq!(series(&leap).len(), 366);
}

#[tokio::test]
async fn top_customers_and_products_rank_by_revenue() {
    let app = spawn_app().await;
    let (t, _) = user(&app, "top@example.com").await;
    let f = fixture(&app, &t).await;

    assert_eq!(
        get_ok(&app, &t, "/dashboard/top-customers").await,
        json!({"data": [
            {"customerId": f.acme, "name": "Acme", "revenueCents": 11500, "orderCount": 2},
            {"customerId": f.bolt, "name": "Bolt", "revenueCents": 5700, "orderCount": 2},
        ]})
    );
    assert_eq!(
        get_ok(&app, &t, "/dashboard/top-customers?limit=1").await["data"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // In February only Bolt bought.
    assert_eq!(
        get_ok(
            &app,
            &t,
            "/dashboard/top-customers?from=2026-02-01&to=2026-02-28"
        )
        .await,
        json!({"data": [
            {"customerId": f.bolt, "name": "Bolt", "revenueCents": 2700, "orderCount": 1},
        ]})
    );
    // Jan 5–6: Acme's SO1 and SO6, Bolt's SO2 only.
    assert_eq!(
        get_ok(
            &app,
            &t,
            "/dashboard/top-customers?from=2026-01-05&to=2026-01-06"
        )
        .await,
        json!({"data": [
            {"customerId": f.acme, "name": "Acme", "revenueCents": 11500, "orderCount": 2},
            {"customerId": f.bolt, "name": "Bolt", "revenueCents": 3000, "orderCount": 1},
        ]})
    );

    assert_eq!(
        get_ok(&app, &t, "/dashboard/top-products").await,
        json!({"data": [
            {"itemId": f.widget, "name": "Widget", "sku": "WID", "quantity": 8, "revenueCents": 7700},
            {"itemId": f.gadget, "name": "Gadget", "sku": "GAD", "quantity": 2, "revenueCents": 5000},
            {"itemId": f.doohickey, "name": "Doohickey", "sku": "DOO", "quantity": 15, "revenueCents": 4500},
        ]})
    );
    // Jan 5: Widget 5000 and Gadget 5000 tie and are ordered by name; Doohickey 3000.
    assert_eq!(
        get_ok(
            &app,
            &t,
            "/dashboard/top-products?from=2026-01-05&to=2026-01-05&limit=50"
        )
        .await,
        json!({"data": [
            {"itemId": f.gadget, "name": "Gadget", "sku": "GAD", "quantity": 2, "revenueCents": 5000},
            {"itemId": f.widget, "name": "Widget", "sku": "WID", "quantity": 5, "revenueCents": 5000},
            {"itemId": f.doohickey, "name": "Doohickey", "sku": "DOO", "quantity": 10, "revenueCents": 3000},
        ]})
    );
}

#[tokio::test]
async fn inventory_status_values_stock_per_warehouse() {
    let app = spawn_app().await;
    let (t, _) = user(&app, "status@example.com").await;
    let f = fixture(&app, &t).await;
    assert_eq!(
        get_ok(&app, &t, "/dashboard/inventory-status").await,
        json!({
            "itemCount": 5, "totalQuantity": 116, "inventoryValueCents": 76100,
            "lowStockCount": 2, "outOfStockCount": 1,
            "warehouses": [
                {"warehouseId": f.annex, "name": "Annex", "code": "ANX", "quantity": 42, "valueCents": 8500},
                {"warehouseId": f.empty, "name": "Empty", "code": "EMP", "quantity": 0, "valueCents": 0},
                {"warehouseId": f.main, "name": "Main", "code": "MAIN", "quantity": 74, "valueCents": 67600},
            ]
        })
    );
    // Cross-check the low-stock count against the inventory API's own filter.
    let low = get_ok(&app, &t, "/items?lowStock=true").await;
    let mut low_ids: Vec<&str> = low["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    low_ids.sort_unstable();
    let mut expected = vec![f.gadget.as_str(), f.thingamajig.as_str()];
    expected.sort_unstable();
    assert_eq!(low_ids, expected);
}

#[tokio::test]
async fn organizations_see_only_their_own_figures() {
    let app = spawn_app().await;
    let (a, _) = user(&app, "a@example.com").await;
    fixture(&app, &a).await;
    let (b, _) = user(&app, "b@example.com").await;
    let api = app.caller(&b);

    // Nothing of A's shows up for B.
    assert_eq!(
        get_ok(&app, &b, "/dashboard/kpis").await,
        json!({"revenueCents": 0, "orderCount": 0, "averageOrderCents": 0,
               "receivablesOutstandingCents": 0, "lowStockCount": 0, "inventoryValueCents": 0,
               "from": null, "to": null})
    );
    assert_eq!(
        get_ok(&app, &b, "/dashboard/inventory-status").await,
        json!({"itemCount": 0, "totalQuantity": 0, "inventoryValueCents": 0,
               "lowStockCount": 0, "outOfStockCount": 0, "warehouses": []})
    );
    for path in ["/dashboard/top-customers", "/dashboard/top-products"] {
        assert_eq!(get_ok(&app, &b, path).await, json!({"data": []}), "{path}");
    }
    let chart = get_ok(
        &app,
        &b,
        "/dashboard/sales-chart?interval=month&from=2026-01-01&to=2026-02-28",
    )
    .await;
    assert_eq!(
        series(&chart),
        [point("2026-01", 0, 0), point("2026-02", 0, 0)]
    );
    for kind in [
        "sales-by-item",
        "sales-by-customer",
        "inventory-valuation",
        "stock-movements",
        "purchases-by-vendor",
    ] {
        let report = get_ok(&app, &b, &format!("/reports/{kind}")).await;
        assert_eq!(report["rows"], json!([]), "{kind}");
        let totals = report["totals"].as_object().expect("totals");
        assert!(totals.values().all(|v| v == 0), "{kind}: {report}");
    }

    // B's own sale counts for B only, and A's figures do not move.
    let customer = id(&api
        .create("/contacts", json!({"type": "customer", "name": "Solo"}))
        .await);
    let warehouse = id(&api
        .create("/warehouses", json!({"name": "Only", "code": "ONE"}))
        .await);
    let item = id(&api
        .create(
            "/items",
            json!({"name": "Thing", "sku": "T", "priceCents": 100, "costCents": 40}),
        )
        .await);
    adjust(&app, &b, &item, &warehouse, 5).await;
    sale(
        &app,
        &b,
        json!({"customerId": customer, "warehouseId": warehouse,
               "lines": [{"itemId": item, "quantity": 2}]}),
        "2026-01-05T12:00:00.000Z",
        (200, 0, 200),
    )
    .await;
    let b_kpis = get_ok(&app, &b, "/dashboard/kpis").await;
    assert_eq!(
        (
            &b_kpis["revenueCents"],
            &b_kpis["orderCount"],
            &b_kpis["inventoryValueCents"]
        ),
        (&json!(200), &json!(1), &json!(120))
    );
    assert_eq!(
        get_ok(&app, &a, "/dashboard/kpis").await,
        kpis(17200, 4, 4300, Value::Null, Value::Null)
    );
}

#[tokio::test]
async fn bad_parameters_are_422_naming_the_field() {
    let app = spawn_app().await;
    let (t, _) = user(&app, "bad@example.com").await;
    for (path, field) in [
        ("/dashboard/kpis?from=2026-13-01", "from"),
        ("/dashboard/kpis?to=yesterday", "to"),
        ("/dashboard/kpis?from=2026-02-01&to=2026-01-01", "to"),
        ("/dashboard/sales-chart?interval=week", "interval"),
        ("/dashboard/sales-chart?from=2024-01-01&to=2025-01-01", "to"),
        (
            "/dashboard/sales-chart?interval=month&from=2015-12-31&to=2025-12-31",
            "to",
        ),
        ("/dashboard/sales-chart?from=2999-01-01", "from"),
        ("/dashboard/top-customers?limit=0", "limit"),
        ("/dashboard/top-customers?limit=51", "limit"),
        ("/dashboard/top-products?limit=five", "limit"),
        ("/dashboard/top-products?from=2026-1-1", "from"),
        // RFC 3339 full-dates only: no signed or five-digit years.
        ("/dashboard/kpis?from=-2026-01-01", "from"),
        ("/dashboard/kpis?from=%2B2026-01-01", "from"),
        ("/dashboard/kpis?to=-9999-01-01", "to"),
        ("/dashboard/kpis?to=12026-01-01", "to"),
        (
            "/dashboard/sales-chart?from=-0001-12-31&to=0000-01-02",
            "from",
        ),
    ] {
        app.caller(&t).get(path).await.field_error(field);
    }
    // Exactly 120 months is allowed.
    let decade = get_ok(
        &app,
        &t,
        "/dashboard/sales-chart?interval=month&from=2016-01-01&to=2025-12-31",
    )
    .await;
    assert_eq!(series(&decade).len(), 120);
    // No token, no figures.
    assert_eq!(
        app.anonymous().get("/dashboard/kpis").await.status,
        StatusCode::UNAUTHORIZED
    );
}
