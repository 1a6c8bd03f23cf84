//! Concurrent writes to the same rows through two server processes on one database: what
//! each answers and what the database holds afterwards. Each test was seen to fail before
//! its fix (on PostgreSQL; the PATCH merges on SQLite too).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{id, spawn_app, ServerProcess, TestApp};
use crate::orders::shop;

/// Every request's status, sent all at once, alternately to `app` and `second`.
async fn at_once(
    app: &TestApp,
    second: &ServerProcess,
    token: &str,
    requests: Vec<(reqwest::Method, String, Option<Value>)>,
) -> Vec<StatusCode> {
    let api = app.caller(token);
    let sent = requests
        .into_iter()
        .enumerate()
        .map(|(i, (method, path, body))| {
            let base = if i % 2 == 0 {
                app.address.as_str()
            } else {
                second.address.as_str()
            };
            async move { api.at(base).send(method, &path, body).await.status }
        });
    futures::future::join_all(sent).await
}

/// A PATCH changes the fields it names and no other: concurrent PATCHes of different
/// fields of one row all land (each read the row and wrote it back whole, so most of them
/// were lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_of_different_fields_all_land() {
    let app = spawn_app().await;
    let shop = shop(&app, "patches@example.com").await;
    let second = ServerProcess::beside(&app).await;
    for round in 0..5 {
        let fields = [
            json!({"name": format!("Name {round}")}),
            json!({"priceCents": 2000 + round}),
            json!({"description": format!("Description {round}")}),
            json!({"unit": format!("box{round}")}),
            json!({"reorderLevel": 10 + round}),
            json!({"costCents": 300 + round}),
        ];
        let patches = fields
            .iter()
            .map(|body| {
                let path = format!("/items/{}", shop.widget);
                (reqwest::Method::PATCH, path, Some(body.clone()))
            })
            .collect();
        let statuses = at_once(&app, &second, &shop.token, patches).await;
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "{statuses:?}"
        );
        let item = app
            .caller(&shop.token)
            .with(&[("cache-control", "no-cache")])
            .get(&format!("/items/{}", shop.widget))
            .await
            .expect(StatusCode::OK);
        for body in &fields {
            for (field, value) in body.as_object().expect("object") {
                assert_eq!(&item[field], value, "round {round}: {field} lost: {item}");
            }
        }
    }
}

/// An order's amounts are the sums of its lines, whatever PATCHes race: one of its notes
/// while another replaces its lines wrote the old totals back over the new lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_notes_patch_racing_a_lines_patch_keeps_the_totals_in_line() {
    let app = spawn_app().await;
    let shop = shop(&app, "order-patches@example.com").await;
    let second = ServerProcess::beside(&app).await;
    let api = app.caller(&shop.token);
    for round in 0..8 {
        let order = api
            .create(
                "/sales-orders",
                json!({"customerId": shop.customer, "warehouseId": shop.warehouse,
                       "lines": [{"itemId": shop.widget, "quantity": 1}]}),
            )
            .await;
        let path = format!("/sales-orders/{}", id(&order));
        let patches = vec![
            (
                reqwest::Method::PATCH,
                path.clone(),
                Some(json!({"lines": [{"itemId": shop.widget, "quantity": 7}]})),
            ),
            (
                reqwest::Method::PATCH,
                path.clone(),
                Some(json!({"notes": format!("round {round}")})),
            ),
            (
                reqwest::Method::PATCH,
                path.clone(),
                Some(json!({"notes": format!("again {round}")})),
            ),
        ];
        let statuses = at_once(&app, &second, &shop.token, patches).await;
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "{statuses:?}"
        );
        let order = api.get(&path).await.expect(StatusCode::OK);
        let lines: i64 = order["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .map(|line| line["subtotalCents"].as_i64().expect("subtotal"))
            .sum();
        assert_eq!(order["subtotalCents"], lines, "round {round}: {order}");
        assert_eq!(order["subtotalCents"], 7000, "round {round}: {order}");
    }
}

/// Transfers of one item in opposite directions at once all succeed: they lock the two
/// levels in the same order (PostgreSQL failed about half of them as deadlocks, with 500s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opposite_transfers_at_once_all_succeed() {
    let app = spawn_app().await;
    let shop = shop(&app, "transfers@example.com").await;
    let second = ServerProcess::beside(&app).await;
    let api = app.caller(&shop.token);
    for warehouse in [&shop.warehouse, &shop.other_warehouse] {
        api.post("/inventory/adjustments", json!({"itemId": shop.widget, "warehouseId": warehouse, "quantityDelta": 100, "reason": "count"}))
            .await
            .expect(StatusCode::CREATED);
    }
    let transfers = (0..24)
        .map(|i| {
            let (from, to) = if i % 4 < 2 {
                (&shop.warehouse, &shop.other_warehouse)
            } else {
                (&shop.other_warehouse, &shop.warehouse)
            };
            let body = json!({"itemId": shop.widget, "fromWarehouseId": from, "toWarehouseId": to, "quantity": 1});
            (
                reqwest::Method::POST,
                "/inventory/transfers".to_string(),
                Some(body),
            )
        })
        .collect();
    let statuses = at_once(&app, &second, &shop.token, transfers).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::CREATED),
        "{statuses:?}"
    );
    let levels = api
        .get(&format!("/inventory/stock-levels?itemId={}", shop.widget))
        .await
        .expect(StatusCode::OK);
    let quantities: Vec<i64> = levels["data"]
        .as_array()
        .expect("levels")
        .iter()
        .map(|level| level["quantity"].as_i64().expect("quantity"))
        .collect();
    assert_eq!(quantities, [100, 100], "{levels}");
}

/// A stock movement into a warehouse deleted at the same moment is a 409 or succeeds (then
/// the delete is the 409), never a 500 from the broken foreign key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stock_writes_racing_a_delete_are_never_500() {
    let app = spawn_app().await;
    let shop = shop(&app, "deletes@example.com").await;
    let second = ServerProcess::beside(&app).await;
    let api = app.caller(&shop.token);
    api.post("/inventory/adjustments", json!({"itemId": shop.widget, "warehouseId": shop.warehouse, "quantityDelta": 100, "reason": "count"}))
        .await
        .expect(StatusCode::CREATED);
    for round in 0..12 {
        let warehouse = api
            .create(
                "/warehouses",
                json!({"name": format!("Short-lived {round}"), "code": format!("SL{round}")}),
            )
            .await;
        let warehouse = id(&warehouse);
        let requests = vec![
            (
                reqwest::Method::DELETE,
                format!("/warehouses/{warehouse}"),
                None,
            ),
            (
                reqwest::Method::POST,
                "/inventory/adjustments".to_string(),
                Some(
                    json!({"itemId": shop.widget, "warehouseId": warehouse, "quantityDelta": 1, "reason": "count"}),
                ),
            ),
            (
                reqwest::Method::POST,
                "/inventory/transfers".to_string(),
                Some(
                    json!({"itemId": shop.widget, "fromWarehouseId": shop.warehouse, "toWarehouseId": warehouse, "quantity": 1}),
                ),
            ),
        ];
        let statuses = at_once(&app, &second, &shop.token, requests).await;
        assert!(
            statuses.iter().all(|s| !s.is_server_error()),
            "round {round}: {statuses:?}"
        );
    }
}

/// More concurrent PATCHes than the pool has connections all succeed: a PATCH's validation
/// reads the database, and it must not wait for a second connection while its transaction
/// holds the first (with every connection held by a waiting PATCH, all of them timed out).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_concurrent_patches_than_connections_all_succeed() {
    let app = crate::helpers::spawn_app_with(&[("DATABASE_MAX_CONNECTIONS", "3")]).await;
    let shop = shop(&app, "pool@example.com").await;
    let api = app.caller(&shop.token);
    let category = id(&api.create("/categories", json!({"name": "Tools"})).await);
    let mut items = Vec::new();
    for i in 0..12 {
        let body = json!({"name": format!("Item {i}"), "sku": format!("S-{i}"), "priceCents": 100});
        items.push(id(&api.create("/items", body).await));
    }
    let patches = items.iter().map(|item| {
        let path = format!("/items/{item}");
        let body = json!({"name": "Renamed", "categoryId": category});
        async move { api.patch(&path, body).await.status }
    });
    let statuses = futures::future::join_all(patches).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
}

/// A contact's type and the orders naming it agree, whatever races: turning a customer into
/// a vendor while an order was made out to it (or an order moved to it) let both land, and
/// the vendor then had sales orders and invoices (a black-box probe, 11 rounds of 12).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_contact_changing_type_while_an_order_names_it_never_leaves_both() {
    let app = spawn_app().await;
    let shop = shop(&app, "contact-type-race@example.com").await;
    let second = ServerProcess::beside(&app).await;
    let api = app.caller(&shop.token);
    let order = api
        .create(
            "/sales-orders",
            json!({"customerId": shop.customer, "warehouseId": shop.warehouse,
                   "lines": [{"itemId": shop.widget, "quantity": 1}]}),
        )
        .await;
    let order_path = format!("/sales-orders/{}", id(&order));
    for round in 0..12 {
        let contact = api
            .create(
                "/contacts",
                json!({"type": "customer", "name": format!("Racer {round}")}),
            )
            .await;
        let contact_path = format!("/contacts/{}", id(&contact));
        // Half the rounds make an order out to the contact, half move an open order to it.
        let naming = if round % 2 == 0 {
            (
                reqwest::Method::POST,
                "/sales-orders".to_string(),
                Some(
                    json!({"customerId": id(&contact), "warehouseId": shop.warehouse,
                            "lines": [{"itemId": shop.widget, "quantity": 1}]}),
                ),
            )
        } else {
            (
                reqwest::Method::PATCH,
                order_path.clone(),
                Some(json!({"customerId": id(&contact)})),
            )
        };
        let turning = (
            reqwest::Method::PATCH,
            contact_path.clone(),
            Some(json!({"type": "vendor"})),
        );
        let statuses = at_once(&app, &second, &shop.token, vec![turning, naming]).await;
        let turned = statuses[0] == StatusCode::OK;
        let named = statuses[1].is_success();
        assert!(
            !(turned && named),
            "round {round}: both landed: {statuses:?}"
        );
        assert!(
            turned || statuses[0] == StatusCode::CONFLICT,
            "{statuses:?}"
        );
        assert!(
            named || statuses[1] == StatusCode::UNPROCESSABLE_ENTITY,
            "{statuses:?}"
        );
    }
}

/// Moving two categories under each other at once closes no cycle: each move was checked
/// alone, both landed, and the cycle then refused every edit of its categories (a
/// black-box probe, 9 rounds of 10 on one instance).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opposite_category_moves_at_once_close_no_cycle() {
    let app = spawn_app().await;
    let shop = shop(&app, "category-cycle@example.com").await;
    let second = ServerProcess::beside(&app).await;
    let api = app.caller(&shop.token);
    for round in 0..10 {
        let a = id(&api
            .create("/categories", json!({"name": format!("A{round}")}))
            .await);
        let b = id(&api
            .create("/categories", json!({"name": format!("B{round}")}))
            .await);
        let moves = vec![
            (
                reqwest::Method::PATCH,
                format!("/categories/{a}"),
                Some(json!({"parentId": b})),
            ),
            (
                reqwest::Method::PUT,
                format!("/categories/{b}"),
                Some(json!({"name": format!("B{round}"), "parentId": a})),
            ),
        ];
        let mut statuses = at_once(&app, &second, &shop.token, moves).await;
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::UNPROCESSABLE_ENTITY],
            "round {round}"
        );
        // A PUT and a PATCH moving the same category at once: both lock the row, then the
        // tree, never the other way round (a PUT took the tree first: two such could wait on
        // each other).
        let c = id(&api
            .create("/categories", json!({"name": format!("C{round}")}))
            .await);
        let moves = vec![
            (
                reqwest::Method::PUT,
                format!("/categories/{c}"),
                Some(json!({"name": format!("C{round}"), "parentId": a})),
            ),
            (
                reqwest::Method::PATCH,
                format!("/categories/{c}"),
                Some(json!({"parentId": b})),
            ),
        ];
        let statuses = at_once(&app, &second, &shop.token, moves).await;
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "round {round}: {statuses:?}"
        );
    }
}

/// `DELETE /items/{id}` while a PATCH replaces an order's lines, the item on the old lines
/// and on the new: the item's deletion is refused (409, the order refers to it) and the
/// PATCH lands, whichever comes first; never a 5xx. The PATCH deleted the old lines and
/// then inserted the new ones, each insert's foreign-key check taking a share of its item's
/// row; the deletion held the item's row and waited for the deleted line's transaction to
/// know whether the item was still referred to; on PostgreSQL each waited for the other
/// and "deadlock detected" answered one of them 500. The deletion is sent at times spread
/// over the PATCH's answer; the item comes last of 400 lines, so that the window is wide.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_an_item_while_an_order_s_lines_are_replaced_never_answers_5xx() {
    let app = spawn_app().await;
    let shop = shop(&app, "line-delete@example.com").await;
    let api = app.caller(&shop.token);
    let lines = |last: &str| {
        let mut lines = vec![json!({"itemId": shop.widget, "quantity": 1}); 399];
        lines.push(json!({"itemId": last, "quantity": 1}));
        json!({"lines": lines})
    };
    let order_of = |item: &str| {
        json!({"customerId": shop.customer, "warehouseId": shop.warehouse,
               "lines": [{"itemId": item, "quantity": 1}]})
    };
    // How long such a PATCH takes alone.
    let order = id(&api.create("/sales-orders", order_of(&shop.gadget)).await);
    let started = std::time::Instant::now();
    let patched = api
        .patch(&format!("/sales-orders/{order}"), lines(&shop.gadget))
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    let alone = started.elapsed();
    for round in 0..10u32 {
        let item = id(&api
            .create(
                "/items",
                json!({"name": "Doomed", "sku": format!("D-{round}"), "priceCents": 100}),
            )
            .await);
        let order = id(&api.create("/sales-orders", order_of(&item)).await);
        let delay = alone.mul_f64(0.1 * f64::from(round));
        let path = format!("/sales-orders/{order}");
        let (patched, deleted) = tokio::join!(api.patch(&path, lines(&item)), async {
            tokio::time::sleep(delay).await;
            api.delete(&format!("/items/{item}")).await
        });
        // The deletion's 409 is the item's being referred to, not the one a write rolled
        // back for a concurrent one gets.
        assert_eq!(
            (patched.status, deleted.status),
            (StatusCode::OK, StatusCode::CONFLICT),
            "round {round}: PATCH {}, DELETE {}",
            patched.text.chars().take(300).collect::<String>(),
            deleted.text
        );
        assert!(
            deleted.text.contains("still referred to"),
            "round {round}: {}",
            deleted.text
        );
    }
}
