//! Stock operations, sales and purchase orders, invoices and payments, over HTTP.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, id, spawn_app, Reply, ServerProcess, TestApp};

/// A small catalog in a fresh organization (also the races' fixture).
pub(crate) struct Shop {
    pub(crate) token: String,
    pub(crate) warehouse: String,
    pub(crate) other_warehouse: String,
    pub(crate) widget: String, // 1,000 cents, taxed at 8.25 %
    pub(crate) gadget: String, // 2,500 cents, untaxed
    pub(crate) customer: String,
    pub(crate) vendor: String,
}

pub(crate) async fn shop(app: &TestApp, email: &str) -> Shop {
    let token = app.token(email).await;
    let api = app.caller(&token);
    let tax = api
        .create("/tax-rates", json!({"name": "Sales tax", "rateBps": 825}))
        .await;
    let warehouse = api
        .create("/warehouses", json!({"name": "Main", "code": "MAIN"}))
        .await;
    let other = api
        .create("/warehouses", json!({"name": "Overflow", "code": "OVF"}))
        .await;
    let widget = api.create("/items", json!({"name": "Widget", "sku": "W-1", "priceCents": 1000, "costCents": 400, "taxRateId": id(&tax), "reorderLevel": 5})).await;
    let gadget = api
        .create(
            "/items",
            json!({"name": "Gadget", "sku": "G-1", "priceCents": 2500, "costCents": 1200}),
        )
        .await;
    let customer = api
        .create("/contacts", json!({"type": "customer", "name": "Ann"}))
        .await;
    let vendor = api
        .create(
            "/contacts",
            json!({"type": "vendor", "name": "Supplies Ltd"}),
        )
        .await;
    Shop {
        token,
        warehouse: id(&warehouse),
        other_warehouse: id(&other),
        widget: id(&widget),
        gadget: id(&gadget),
        customer: id(&customer),
        vendor: id(&vendor),
    }
}

impl Shop {
    async fn adjust(&self, app: &TestApp, item: &str, warehouse: &str, delta: i64) -> Reply {
        app.caller(&self.token).post("/inventory/adjustments", json!({"itemId": item, "warehouseId": warehouse, "quantityDelta": delta, "reason": "count"})).await
    }

    async fn level(&self, app: &TestApp, item: &str, warehouse: &str) -> i64 {
        let body: Value = app
            .caller(&self.token)
            .get(&format!(
                "/inventory/stock-levels?itemId={item}&warehouseId={warehouse}"
            ))
            .await
            .json();
        body["data"][0]["quantity"].as_i64().unwrap_or(0)
    }

    async fn sales_order(&self, app: &TestApp, lines: Value) -> Value {
        app.caller(&self.token)
            .create(
                "/sales-orders",
                json!({"customerId": self.customer, "warehouseId": self.warehouse, "lines": lines}),
            )
            .await
    }
}

/// Checks the invariant of the ledger: per (item, warehouse), the movements sum to the level.
async fn assert_ledger_matches_levels(app: &TestApp) {
    let mismatches: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM stock_levels s WHERE s.quantity <> (
           SELECT CAST(COALESCE(SUM(m.quantity_delta), 0) AS BIGINT) FROM stock_movements m
           WHERE m.item_id = s.item_id AND m.warehouse_id = s.warehouse_id)",
    )
    .fetch_one(app.state.db.pool())
    .await
    .expect("ledger check");
    assert_eq!(mismatches, 0, "ledger and levels disagree");
    let negative: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM stock_levels WHERE quantity < 0")
        .fetch_one(app.state.db.pool())
        .await
        .expect("negative check");
    assert_eq!(negative, 0);
}

#[tokio::test]
async fn adjustments_and_transfers_move_stock_and_never_go_negative() {
    let app = spawn_app().await;
    let shop = shop(&app, "stock@example.com").await;
    let api = app.caller(&shop.token);
    assert_eq!(
        shop.adjust(&app, &shop.widget, &shop.warehouse, 10)
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(shop.level(&app, &shop.widget, &shop.warehouse).await, 10);

    // Taking out more than is there: 409, nothing applied.
    let problem = shop
        .adjust(&app, &shop.widget, &shop.warehouse, -11)
        .await
        .problem(StatusCode::CONFLICT);
    assert!(problem["detail"]
        .as_str()
        .expect("detail")
        .contains("insufficient stock"));
    assert_eq!(shop.level(&app, &shop.widget, &shop.warehouse).await, 10);

    // A transfer moves both sides, or neither.
    let transfer = json!({"itemId": shop.widget, "fromWarehouseId": shop.warehouse, "toWarehouseId": shop.other_warehouse, "quantity": 4});
    api.create("/inventory/transfers", transfer).await;
    assert_eq!(shop.level(&app, &shop.widget, &shop.warehouse).await, 6);
    assert_eq!(
        shop.level(&app, &shop.widget, &shop.other_warehouse).await,
        4
    );
    let too_much = json!({"itemId": shop.widget, "fromWarehouseId": shop.warehouse, "toWarehouseId": shop.other_warehouse, "quantity": 7});
    api.post("/inventory/transfers", too_much)
        .await
        .problem(StatusCode::CONFLICT);
    assert_eq!(shop.level(&app, &shop.widget, &shop.warehouse).await, 6);
    assert_eq!(
        shop.level(&app, &shop.widget, &shop.other_warehouse).await,
        4
    );

    // Lists and the ledger.
    let adjustments: Value = api.get("/inventory/adjustments").await.json();
    assert_eq!(adjustments["total"], 1);
    let transfers: Value = api.get("/inventory/transfers").await.json();
    assert_eq!(transfers["total"], 1);
    assert_eq!(transfers["data"][0]["quantity"], 4);
    let movements: Value = api
        .get(&format!("/inventory/movements?itemId={}", shop.widget))
        .await
        .json();
    assert_eq!(movements["total"], 3);
    let item: Value = api.get(&format!("/items/{}", shop.widget)).await.json();
    assert_eq!(item["stockOnHand"], 10);

    // Low stock: the widget's reorder level is 5; Main has 6, Overflow 4.
    let low: Value = api
        .get("/inventory/stock-levels?lowStock=true")
        .await
        .json();
    assert_eq!(low["total"], 1);
    assert_eq!(low["data"][0]["warehouseId"], shop.other_warehouse.as_str());
    assert_ledger_matches_levels(&app).await;
}

#[tokio::test]
async fn bad_stock_requests_are_problems_and_change_nothing() {
    let app = spawn_app().await;
    let shop = shop(&app, "badstock@example.com").await;
    let api = app.caller(&shop.token);
    let other = shop_token_of_other_org(&app).await;
    let cases = [
        json!({"itemId": shop.widget, "warehouseId": shop.warehouse, "quantityDelta": 0, "reason": "x"}),
        json!({"itemId": shop.widget, "warehouseId": shop.warehouse, "quantityDelta": 5, "reason": " "}),
        json!({"itemId": "nope", "warehouseId": shop.warehouse, "quantityDelta": 5, "reason": "x"}),
        json!({"itemId": shop.widget, "warehouseId": other.1, "quantityDelta": 5, "reason": "x"}),
        json!({"itemId": shop.widget, "warehouseId": shop.warehouse, "quantityDelta": "5", "reason": "x"}),
        json!({"itemId": shop.widget, "warehouseId": shop.warehouse}),
    ];
    for body in cases {
        let response = api.post("/inventory/adjustments", body.clone()).await;
        response.problem(StatusCode::UNPROCESSABLE_ENTITY);
    }
    let same = json!({"itemId": shop.widget, "fromWarehouseId": shop.warehouse, "toWarehouseId": shop.warehouse, "quantity": 1});
    api.post("/inventory/transfers", same)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let zero = json!({"itemId": shop.widget, "fromWarehouseId": shop.warehouse, "toWarehouseId": shop.other_warehouse, "quantity": 0});
    api.post("/inventory/transfers", zero)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let response = app
        .client
        .post(format!("{}/inventory/adjustments", app.address))
        .bearer_auth(&shop.token)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .expect("send");
    assert_problem(response, StatusCode::BAD_REQUEST).await;
    api.get("/inventory/stock-levels?lowStock=maybe")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM stock_movements")
        .fetch_one(app.state.db.pool())
        .await
        .expect("count");
    assert_eq!(rows, 0);
}

/// Another organization with its own warehouse: (token, warehouse id).
async fn shop_token_of_other_org(app: &TestApp) -> (String, String) {
    let token = app.token("other-org@example.com").await;
    let warehouse = app
        .caller(&token)
        .create("/warehouses", json!({"name": "Theirs", "code": "T"}))
        .await;
    (token, id(&warehouse))
}

#[tokio::test]
async fn a_sales_order_is_priced_taxed_fulfilled_once_and_invoiced() {
    let app = spawn_app().await;
    let shop = shop(&app, "sales@example.com").await;
    let api = app.caller(&shop.token);
    shop.adjust(&app, &shop.widget, &shop.warehouse, 10).await;
    shop.adjust(&app, &shop.gadget, &shop.warehouse, 3).await;

    // 3 widgets at list price (tax 8.25 % of 3,000 = 247.5 → 248), 2 gadgets at 2,000 (untaxed).
    let order = shop
        .sales_order(
            &app,
            json!([{"itemId": shop.widget, "quantity": 3}, {"itemId": shop.gadget, "quantity": 2, "unitPriceCents": 2000}]),
        )
        .await;
    assert_eq!(order["status"], "open");
    assert_eq!(order["subtotalCents"], 7000);
    assert_eq!(order["taxCents"], 248);
    assert_eq!(order["totalCents"], 7248);
    assert_eq!(order["lines"][0]["unitPriceCents"], 1000);
    assert_eq!(order["lines"][0]["taxRateBps"], 825);
    let order_id = id(&order);

    // Creating the order reserves nothing; fulfilling takes the stock.
    assert_eq!(shop.level(&app, &shop.widget, &shop.warehouse).await, 10);
    let fulfil = format!("/sales-orders/{order_id}/fulfil");
    let response = api.post(&fulfil, json!({})).await;
    assert_eq!(response.status, StatusCode::OK);
    let fulfilled = response.json();
    assert_eq!(fulfilled["status"], "fulfilled");
    assert!(fulfilled["fulfilledAt"].is_string());
    assert_eq!(shop.level(&app, &shop.widget, &shop.warehouse).await, 7);
    assert_eq!(shop.level(&app, &shop.gadget, &shop.warehouse).await, 1);
    api.post(&fulfil, json!({}))
        .await
        .problem(StatusCode::CONFLICT);
    assert_eq!(shop.level(&app, &shop.widget, &shop.warehouse).await, 7);
    let patch = api
        .patch(
            &format!("/sales-orders/{order_id}"),
            json!({"notes": "late"}),
        )
        .await;
    patch.problem(StatusCode::CONFLICT);

    // Invoice and payments.
    let invoice = api
        .create("/invoices", json!({"salesOrderId": order_id}))
        .await;
    assert_eq!(invoice["number"], "INV-000001");
    assert_eq!(invoice["totalCents"], 7248);
    assert_eq!(invoice["status"], "unpaid");
    let invoice_id = id(&invoice);
    api.post("/invoices", json!({"salesOrderId": order_id}))
        .await
        .problem(StatusCode::CONFLICT);
    let pay = format!("/invoices/{invoice_id}/payments");
    let partial = api.create(&pay, json!({"amountCents": 5000})).await;
    assert_eq!(
        (partial["status"].as_str(), partial["balanceCents"].as_i64()),
        (Some("partially_paid"), Some(2248))
    );
    let over = api
        .post(&pay, json!({"amountCents": 2249}))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(over["errors"]["amountCents"].is_array());
    api.post(&pay, json!({"amountCents": 0}))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let paid = api.create(&pay, json!({"amountCents": 2248})).await;
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["payments"].as_array().expect("payments").len(), 2);
    api.post(&pay, json!({"amountCents": 1}))
        .await
        .problem(StatusCode::CONFLICT);
    let list: Value = api.get("/invoices?status=paid").await.json();
    assert_eq!(list["total"], 1);
    let second = shop
        .sales_order(&app, json!([{"itemId": shop.widget, "quantity": 1}]))
        .await;
    let second_invoice = api
        .create("/invoices", json!({"salesOrderId": id(&second)}))
        .await;
    assert_eq!(second_invoice["number"], "INV-000002");
    assert_ledger_matches_levels(&app).await;
}

#[tokio::test]
async fn an_order_short_of_any_line_takes_nothing() {
    let app = spawn_app().await;
    let shop = shop(&app, "short@example.com").await;
    let api = app.caller(&shop.token);
    shop.adjust(&app, &shop.widget, &shop.warehouse, 10).await;
    shop.adjust(&app, &shop.gadget, &shop.warehouse, 1).await;
    let order = shop
        .sales_order(
            &app,
            json!([{"itemId": shop.widget, "quantity": 4}, {"itemId": shop.gadget, "quantity": 2}]),
        )
        .await;
    let response = api
        .post(&format!("/sales-orders/{}/fulfil", id(&order)), json!({}))
        .await;
    let problem = response.problem(StatusCode::CONFLICT);
    assert!(problem["detail"]
        .as_str()
        .expect("detail")
        .contains(&shop.gadget));
    assert_eq!(shop.level(&app, &shop.widget, &shop.warehouse).await, 10);
    assert_eq!(shop.level(&app, &shop.gadget, &shop.warehouse).await, 1);
    let current: Value = api
        .get(&format!("/sales-orders/{}", id(&order)))
        .await
        .json();
    assert_eq!(current["status"], "open");
    assert_ledger_matches_levels(&app).await;
}

#[tokio::test]
async fn open_orders_can_change_and_be_cancelled() {
    let app = spawn_app().await;
    let shop = shop(&app, "patch@example.com").await;
    let api = app.caller(&shop.token);
    let order = shop
        .sales_order(&app, json!([{"itemId": shop.widget, "quantity": 1}]))
        .await;
    let path = format!("/sales-orders/{}", id(&order));
    let patched: Value = api
        .patch(
            &path,
            json!({"lines": [{"itemId": shop.gadget, "quantity": 2}], "notes": "rush"}),
        )
        .await
        .json();
    assert_eq!(patched["totalCents"], 5000);
    assert_eq!(patched["notes"], "rush");
    assert_eq!(patched["lines"].as_array().expect("lines").len(), 1);
    for bad in [
        json!({"status": "fulfilled"}),
        json!({"lines": []}),
        json!({"customerId": shop.vendor}),
        json!({"lines": null}),
    ] {
        let response = api.patch(&path, bad).await;
        response.problem(StatusCode::UNPROCESSABLE_ENTITY);
    }
    let cancelled: Value = api
        .patch(&path, json!({"status": "cancelled"}))
        .await
        .json();
    assert_eq!(cancelled["status"], "cancelled");
    api.post(&format!("{path}/fulfil"), json!({}))
        .await
        .problem(StatusCode::CONFLICT);
    api.post("/invoices", json!({"salesOrderId": id(&order)}))
        .await
        .problem(StatusCode::CONFLICT);
    let open: Value = api.get("/sales-orders?status=open").await.json();
    assert_eq!(open["total"], 0);
    let all: Value = api.get("/sales-orders").await.json();
    assert_eq!(all["total"], 1);
}

/// An invoice copies its order's figures, so once invoiced an order keeps what was billed:
/// its customer, warehouse and lines no longer change and it is not cancelled (409 naming
/// the invoice); its notes still change, and it is fulfilled as before.
#[tokio::test]
async fn an_invoiced_order_keeps_what_was_billed() {
    let app = spawn_app().await;
    let shop = shop(&app, "billed@example.com").await;
    let api = app.caller(&shop.token);
    let order = shop
        .sales_order(&app, json!([{"itemId": shop.gadget, "quantity": 1}]))
        .await;
    let path = format!("/sales-orders/{}", id(&order));
    let invoice = api
        .create("/invoices", json!({"salesOrderId": id(&order)}))
        .await;
    for change in [
        json!({"lines": [{"itemId": shop.gadget, "quantity": 5}]}),
        json!({"status": "cancelled"}),
        json!({"warehouseId": shop.other_warehouse}),
        json!({"customerId": shop.customer, "notes": "again"}),
    ] {
        let problem = api.patch(&path, change).await.problem(StatusCode::CONFLICT);
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("INV-000001")),
            "{problem}"
        );
    }
    let noted: Value = api.patch(&path, json!({"notes": "gift"})).await.json();
    assert_eq!(noted["notes"], "gift");
    assert_eq!(noted["totalCents"], invoice["totalCents"]);
    assert_eq!(noted["status"], "open");
    shop.adjust(&app, &shop.gadget, &shop.warehouse, 1).await;
    let fulfilled: Value = api.post(&format!("{path}/fulfil"), json!({})).await.json();
    assert_eq!(fulfilled["status"], "fulfilled");
    assert_eq!(fulfilled["totalCents"], invoice["totalCents"]);
    // Fulfilled, it changes in nothing, and says so for every change: never that its
    // notes could still change.
    for change in [json!({"status": "cancelled"}), json!({"notes": "late"})] {
        let problem = api.patch(&path, change).await.problem(StatusCode::CONFLICT);
        assert_eq!(
            problem["detail"],
            "the order is fulfilled; only open orders can change"
        );
    }
}

/// A line has one schema for both order types: the unit field the other type uses is not
/// read, but past its documented bounds it is refused, not dropped.
#[tokio::test]
async fn a_line_field_past_its_bounds_is_refused_on_either_order_type() {
    let app = spawn_app().await;
    let shop = shop(&app, "bounds@example.com").await;
    let api = app.caller(&shop.token);
    for (path, party, line, field) in [
        (
            "/sales-orders",
            json!({"customerId": shop.customer}),
            json!({"itemId": shop.gadget, "quantity": 1, "unitCostCents": -1}),
            "lines[0].unitCostCents",
        ),
        (
            "/sales-orders",
            json!({"customerId": shop.customer}),
            json!({"itemId": shop.gadget, "quantity": 1, "unitCostCents": 10_000_000_000_001_i64}),
            "lines[0].unitCostCents",
        ),
        (
            "/purchase-orders",
            json!({"vendorId": shop.vendor}),
            json!({"itemId": shop.widget, "quantity": 1, "unitCostCents": 1, "unitPriceCents": -1}),
            "lines[0].unitPriceCents",
        ),
    ] {
        let mut body = party;
        body["warehouseId"] = json!(shop.warehouse);
        body["lines"] = json!([line]);
        let problem = api
            .post(path, body)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            problem["errors"][field][0], "must be from 0 to 10000000000000",
            "{problem}"
        );
    }
}

#[tokio::test]
async fn purchase_orders_put_stock_in_once() {
    let app = spawn_app().await;
    let shop = shop(&app, "buy@example.com").await;
    let api = app.caller(&shop.token);
    let order = api
        .create(
            "/purchase-orders",
            json!({"vendorId": shop.vendor, "warehouseId": shop.warehouse, "lines": [
                {"itemId": shop.widget, "quantity": 20, "unitCostCents": 350},
                {"itemId": shop.widget, "quantity": 5, "unitCostCents": 360}
            ]}),
        )
        .await;
    assert_eq!(order["totalCents"], 20 * 350 + 5 * 360);
    assert_eq!(order["status"], "open");
    let receive = format!("/purchase-orders/{}/receive", id(&order));
    let received: Value = api.post(&receive, json!({})).await.json();
    assert_eq!(received["status"], "received");
    assert_eq!(shop.level(&app, &shop.widget, &shop.warehouse).await, 25);
    api.post(&receive, json!({}))
        .await
        .problem(StatusCode::CONFLICT);
    assert_eq!(shop.level(&app, &shop.widget, &shop.warehouse).await, 25);

    // A purchase order needs a vendor and a unit cost on every line.
    for bad in [
        json!({"vendorId": shop.customer, "warehouseId": shop.warehouse, "lines": [{"itemId": shop.widget, "quantity": 1, "unitCostCents": 1}]}),
        json!({"vendorId": shop.vendor, "warehouseId": shop.warehouse, "lines": [{"itemId": shop.widget, "quantity": 1}]}),
        json!({"vendorId": shop.vendor, "warehouseId": shop.warehouse, "lines": [{"itemId": shop.widget, "quantity": -1, "unitCostCents": 1}]}),
        json!({"vendorId": shop.vendor, "warehouseId": shop.warehouse, "lines": []}),
    ] {
        api.post("/purchase-orders", bad)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY);
    }
    let list: Value = api.get("/purchase-orders?status=received").await.json();
    assert_eq!(list["total"], 1);
    assert_ledger_matches_levels(&app).await;
}

#[tokio::test]
async fn bad_sales_orders_are_422_and_write_nothing() {
    let app = spawn_app().await;
    let shop = shop(&app, "badsales@example.com").await;
    let api = app.caller(&shop.token);
    let (_, foreign_warehouse) = shop_token_of_other_org(&app).await;
    let base = |lines: Value| json!({"customerId": shop.customer, "warehouseId": shop.warehouse, "lines": lines});
    let cases = [
        base(json!([])),
        base(json!([{"itemId": shop.widget, "quantity": 0}])),
        base(json!([{"itemId": shop.widget, "quantity": 1, "unitPriceCents": -5}])),
        base(json!([{"itemId": "00000000-0000-0000-0000-000000000000", "quantity": 1}])),
        json!({"customerId": shop.vendor, "warehouseId": shop.warehouse, "lines": [{"itemId": shop.widget, "quantity": 1}]}),
        json!({"customerId": shop.customer, "warehouseId": foreign_warehouse, "lines": [{"itemId": shop.widget, "quantity": 1}]}),
        json!({"customerId": shop.customer, "lines": [{"itemId": shop.widget, "quantity": 1}]}),
        json!({"customerId": shop.customer, "warehouseId": shop.warehouse, "lines": "many"}),
    ];
    for body in cases {
        let response = api.post("/sales-orders", body.clone()).await;
        response.problem(StatusCode::UNPROCESSABLE_ENTITY);
    }
    // A negative figure is refused for what it is, not also as a line total too large.
    for (line, field) in [
        (json!({"itemId": shop.widget, "quantity": -1}), "quantity"),
        (
            json!({"itemId": shop.widget, "quantity": 1, "unitPriceCents": -1}),
            "unitPriceCents",
        ),
    ] {
        let problem = api
            .post("/sales-orders", base(json!([line])))
            .await
            .field_error(&format!("lines[0].{field}"));
        assert!(problem["errors"]["lines[0]"].is_null(), "{problem}");
    }
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sales_orders")
        .fetch_one(app.state.db.pool())
        .await
        .expect("count");
    assert_eq!(orders, 0);
    for path in [
        "/sales-orders/not-a-uuid",
        "/invoices/00000000-0000-0000-0000-000000000000",
    ] {
        api.get(path).await.problem(StatusCode::NOT_FOUND);
    }
    api.get("/sales-orders?status=shipped")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    api.get("/sales-orders?from=2026-13-01")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn another_organization_sees_and_touches_nothing() {
    let app = spawn_app().await;
    let shop = shop(&app, "owner@example.com").await;
    let api = app.caller(&shop.token);
    shop.adjust(&app, &shop.widget, &shop.warehouse, 5).await;
    let order = shop
        .sales_order(&app, json!([{"itemId": shop.widget, "quantity": 1}]))
        .await;
    let invoice = api
        .create("/invoices", json!({"salesOrderId": id(&order)}))
        .await;
    let purchase = api.create("/purchase-orders", json!({"vendorId": shop.vendor, "warehouseId": shop.warehouse, "lines": [{"itemId": shop.widget, "quantity": 1, "unitCostCents": 1}]})).await;
    let (intruder, _) = shop_token_of_other_org(&app).await;
    for path in [
        format!("/sales-orders/{}", id(&order)),
        format!("/invoices/{}", id(&invoice)),
        format!("/purchase-orders/{}", id(&purchase)),
    ] {
        app.caller(&intruder)
            .get(&path)
            .await
            .problem(StatusCode::NOT_FOUND);
    }
    for path in [
        format!("/sales-orders/{}/fulfil", id(&order)),
        format!("/purchase-orders/{}/receive", id(&purchase)),
    ] {
        app.caller(&intruder)
            .post(&path, json!({}))
            .await
            .problem(StatusCode::NOT_FOUND);
    }
    let pay = app
        .caller(&intruder)
        .post(
            &format!("/invoices/{}/payments", id(&invoice)),
            json!({"amountCents": 1}),
        )
        .await;
    pay.problem(StatusCode::NOT_FOUND);
    let steal = app
        .caller(&intruder)
        .post("/invoices", json!({"salesOrderId": id(&order)}))
        .await;
    steal.problem(StatusCode::UNPROCESSABLE_ENTITY);
    let cancel = app
        .caller(&intruder)
        .patch(
            &format!("/sales-orders/{}", id(&order)),
            json!({"status": "cancelled"}),
        )
        .await;
    cancel.problem(StatusCode::NOT_FOUND);
    for path in [
        "/sales-orders",
        "/invoices",
        "/purchase-orders",
        "/inventory/stock-levels",
        "/inventory/adjustments",
        "/inventory/movements",
    ] {
        let list: Value = app.caller(&intruder).get(path).await.json();
        assert_eq!(list["total"], 0, "{path}");
    }
    // The owner's data is intact, and the intruder's first invoice is its own INV-000001.
    let mine: Value = api
        .get(&format!("/sales-orders/{}", id(&order)))
        .await
        .json();
    assert_eq!(mine["status"], "open");
    assert_eq!(shop.level(&app, &shop.widget, &shop.warehouse).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_fulfilments_and_adjustments_never_oversell() {
    let app = spawn_app().await;
    let shop = shop(&app, "race@example.com").await;
    shop.adjust(&app, &shop.widget, &shop.warehouse, 25).await;
    // 40 orders of 1 widget compete for 25; 20 withdrawals of 1 compete as well.
    let mut orders = Vec::new();
    for _ in 0..40 {
        orders.push(id(&shop
            .sales_order(&app, json!([{"itemId": shop.widget, "quantity": 1}]))
            .await));
    }
    let fulfils = orders.iter().map(|order| {
        let path = format!("/sales-orders/{order}/fulfil");
        let app = &app;
        let token = shop.token.clone();
        async move { app.caller(&token).post(&path, json!({})).await.status }
    });
    let withdrawals = (0..20).map(|_| async {
        shop.adjust(&app, &shop.widget, &shop.warehouse, -1)
            .await
            .status
    });
    let (fulfilled, withdrawn) = tokio::join!(
        futures::future::join_all(fulfils),
        futures::future::join_all(withdrawals)
    );
    let ok = |s: &Vec<StatusCode>, good: StatusCode| s.iter().filter(|s| **s == good).count();
    let taken = ok(&fulfilled, StatusCode::OK) + ok(&withdrawn, StatusCode::CREATED);
    assert_eq!(
        taken, 25,
        "exactly the stock there was: {fulfilled:?} {withdrawn:?}"
    );
    assert!(fulfilled
        .iter()
        .chain(withdrawn.iter())
        .all(|s| s.is_success() || *s == StatusCode::CONFLICT));
    assert_eq!(shop.level(&app, &shop.widget, &shop.warehouse).await, 0);
    let fulfilled_orders: Value = app
        .caller(&shop.token)
        .get("/sales-orders?status=fulfilled")
        .await
        .json();
    assert_eq!(fulfilled_orders["total"], ok(&fulfilled, StatusCode::OK));
    assert_ledger_matches_levels(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invoice_numbers_have_no_gaps_or_duplicates_across_two_server_processes() {
    let app = spawn_app().await;
    let shop = shop(&app, "numbers@example.com").await;
    let second = ServerProcess::beside(&app).await;
    let mut orders = Vec::new();
    for _ in 0..30 {
        orders.push(id(&shop
            .sales_order(&app, json!([{"itemId": shop.gadget, "quantity": 1}]))
            .await));
    }
    // Each order is invoiced twice at once, once through each server: exactly one wins, and
    // the loser's number is rolled back.
    let attempts = orders.iter().enumerate().flat_map(|(i, order)| {
        let bases = if i % 2 == 0 {
            [app.address.clone(), second.address.clone()]
        } else {
            [second.address.clone(), app.address.clone()]
        };
        bases.into_iter().map(move |base| (base, order.clone()))
    });
    let api = app.caller(&shop.token);
    let requests = attempts.map(|(base, order)| async move {
        api.at(&base)
            .post("/invoices", json!({"salesOrderId": order}))
            .await
            .status
    });
    let statuses = futures::future::join_all(requests).await;
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        30,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    let mut numbers: Vec<String> = sqlx::query_scalar("SELECT number FROM invoices")
        .fetch_all(app.state.db.pool())
        .await
        .expect("numbers");
    numbers.sort();
    let expected: Vec<String> = (1..=30).map(|n| format!("INV-{n:06}")).collect();
    assert_eq!(numbers, expected);
}

/// A contact that orders name keeps its type (else an order's customer would be a vendor,
/// and its invoice issued to one); its other fields still change, and a contact no order
/// names changes type freely.
#[tokio::test]
async fn a_contact_named_by_orders_keeps_its_type() {
    let app = spawn_app().await;
    let shop = shop(&app, "contact-type@example.com").await;
    let api = app.caller(&shop.token);
    shop.sales_order(&app, json!([{"itemId": shop.widget, "quantity": 1}]))
        .await;
    let path = format!("/contacts/{}", shop.customer);
    api.patch(&path, json!({"type": "vendor"}))
        .await
        .problem(StatusCode::CONFLICT);
    api.put(&path, json!({"type": "vendor", "name": "Ann"}))
        .await
        .problem(StatusCode::CONFLICT);
    let renamed = api
        .patch(&path, json!({"name": "Ann B."}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(renamed["type"], "customer");
    let free = api
        .create("/contacts", json!({"type": "customer", "name": "Bo"}))
        .await;
    let switched = api
        .patch(
            &format!("/contacts/{}", id(&free)),
            json!({"type": "vendor"}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(switched["type"], "vendor");
}
