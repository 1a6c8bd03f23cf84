//! Items: CRUD, SKU uniqueness per organization, list filters and sorting, and stockOnHand.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{id, rows_in, spawn_app, user, TestApp};

fn skus(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| r["sku"].as_str().expect("sku").to_string())
        .collect()
}

async fn put_stock(app: &TestApp, org: &str, item: &str, warehouse: &str, quantity: i64) {
    sqlx::query(
        "INSERT INTO stock_levels (organization_id, item_id, warehouse_id, quantity, updated_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(org)
    .bind(item)
    .bind(warehouse)
    .bind(quantity)
    .bind(ims_api::db::now())
    .execute(app.state.db.pool())
    .await
    .expect("insert stock level");
}

#[tokio::test]
async fn items_crud_put_replaces_and_patch_merges() {
    let app = spawn_app().await;
    let (t, _) = user(&app, "items@example.com").await;
    let api = app.caller(&t);
    let category = api.create("/categories", json!({"name": "Hardware"})).await;
    let tax = api
        .create("/tax-rates", json!({"name": "Std", "rateBps": 825}))
        .await;

    let full = json!({
        "name": " Claw hammer ", "sku": "HAM-001", "priceCents": 1999, "costCents": 1200,
        "description": "16 oz", "categoryId": id(&category), "taxRateId": id(&tax),
        "reorderLevel": 5, "unit": "pcs"
    });
    let item = api.create("/items", full).await;
    assert_eq!(item["name"], "Claw hammer");
    assert_eq!(item["sku"], "HAM-001");
    assert_eq!(item["priceCents"], 1999);
    assert_eq!(item["costCents"], 1200);
    assert_eq!(item["description"], "16 oz");
    assert_eq!(item["categoryId"], category["id"]);
    assert_eq!(item["taxRateId"], tax["id"]);
    assert_eq!(item["reorderLevel"], 5);
    assert_eq!(item["unit"], "pcs");
    assert_eq!(item["stockOnHand"], 0);
    assert!(item["createdAt"].is_string() && item["updatedAt"].is_string());

    let minimal = api
        .create(
            "/items",
            json!({"name": "Nail", "sku": "NAIL", "priceCents": 0}),
        )
        .await;
    for field in [
        "costCents",
        "description",
        "categoryId",
        "taxRateId",
        "reorderLevel",
        "unit",
    ] {
        assert_eq!(minimal[field], Value::Null, "{field}");
    }

    let path = format!("/items/{}", id(&item));
    assert_eq!(api.get(&path).await.expect(StatusCode::OK), item);

    // PATCH: absent unchanged, null clears nullable fields, values set.
    let patched = api
        .patch(
            &path,
            json!({"priceCents": 2499, "description": null, "categoryId": null}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(patched["priceCents"], 2499);
    assert_eq!(patched["description"], Value::Null);
    assert_eq!(patched["categoryId"], Value::Null);
    assert_eq!(patched["taxRateId"], tax["id"]);
    assert_eq!(patched["name"], "Claw hammer");
    assert_eq!(patched["costCents"], 1200);
    assert_eq!(patched["createdAt"], item["createdAt"]);
    for field in ["name", "sku", "priceCents"] {
        api.patch(&path, json!({field: null}))
            .await
            .field_error(field);
    }
    let unchanged = api.patch(&path, json!({})).await.expect(StatusCode::OK);
    assert_eq!(unchanged["priceCents"], 2499);

    // PUT replaces everything: absent optional fields become null.
    let put = api.put(&path, json!({"name": "Hammer", "sku": "HAM-002", "priceCents": 10, "categoryId": id(&category)})).await.expect(StatusCode::OK);
    assert_eq!(
        (
            put["name"].clone(),
            put["sku"].clone(),
            put["priceCents"].clone()
        ),
        (json!("Hammer"), json!("HAM-002"), json!(10))
    );
    assert_eq!(put["categoryId"], category["id"]);
    for field in [
        "costCents",
        "description",
        "taxRateId",
        "reorderLevel",
        "unit",
    ] {
        assert_eq!(put[field], Value::Null, "{field}");
    }

    // The category is now in use; the tax rate no longer is.
    let category_path = format!("/categories/{}", id(&category));
    api.delete(&category_path)
        .await
        .problem(StatusCode::CONFLICT);
    api.delete(&format!("/tax-rates/{}", id(&tax)))
        .await
        .expect(StatusCode::NO_CONTENT);

    api.delete(&path).await.expect(StatusCode::NO_CONTENT);
    api.get(&path).await.problem(StatusCode::NOT_FOUND);
    api.patch(&path, json!({}))
        .await
        .problem(StatusCode::NOT_FOUND);
    api.delete(&category_path)
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(rows_in(&app, "items").await, 1);
}

#[tokio::test]
async fn skus_are_unique_per_organization() {
    let app = spawn_app().await;
    let (a, _) = user(&app, "skua@example.com").await;
    let alice = app.caller(&a);
    let (b, _) = user(&app, "skub@example.com").await;
    let bob = app.caller(&b);
    alice
        .create(
            "/items",
            json!({"name": "One", "sku": "SKU-1", "priceCents": 1}),
        )
        .await;
    let two = alice
        .create(
            "/items",
            json!({"name": "Two", "sku": "SKU-2", "priceCents": 1}),
        )
        .await;
    let problem = alice
        .post(
            "/items",
            json!({"name": "Dup", "sku": "SKU-1", "priceCents": 1}),
        )
        .await
        .problem(StatusCode::CONFLICT);
    assert!(problem["detail"].as_str().expect("detail").contains("SKU"));
    // Surrounding spaces do not make a different SKU.
    alice
        .post(
            "/items",
            json!({"name": "Dup", "sku": " SKU-1 ", "priceCents": 1}),
        )
        .await
        .problem(StatusCode::CONFLICT);
    let two_path = format!("/items/{}", id(&two));
    alice
        .patch(&two_path, json!({"sku": "SKU-1"}))
        .await
        .problem(StatusCode::CONFLICT);
    alice
        .put(
            &two_path,
            json!({"name": "Two", "sku": "SKU-1", "priceCents": 1}),
        )
        .await
        .problem(StatusCode::CONFLICT);
    assert_eq!(
        alice.get(&two_path).await.expect(StatusCode::OK)["sku"],
        "SKU-2"
    );
    // Keeping its own SKU is not a conflict.
    alice
        .patch(&two_path, json!({"sku": "SKU-2", "name": "Two!"}))
        .await
        .expect(StatusCode::OK);
    // Another organization may use the same SKU.
    bob.create(
        "/items",
        json!({"name": "Theirs", "sku": "SKU-1", "priceCents": 1}),
    )
    .await;
    assert_eq!(rows_in(&app, "items").await, 3);
}

#[tokio::test]
async fn item_list_filters_sorts_and_paginates() {
    let app = spawn_app().await;
    let (t, org) = user(&app, "list@example.com").await;
    let api = app.caller(&t);
    let (other, _) = user(&app, "list2@example.com").await;
    let tools = api.create("/categories", json!({"name": "Tools"})).await;
    let parts = api.create("/categories", json!({"name": "Parts"})).await;
    let wh = api
        .create("/warehouses", json!({"name": "Main", "code": "M"}))
        .await;
    // Created in this order, so createdAt sorts them so too.
    let specs = [
        ("Drill", "TL-DRILL", 8000, &tools, Some(2), 1),
        ("hammer", "TL-HAM", 1500, &tools, Some(2), 5),
        ("Bolt 50%", "PT_BOLT", 10, &parts, None, 0),
        ("Nut", "PT-NUT", 5, &parts, Some(0), 0),
    ];
    for (name, sku, price, category, reorder, stock) in specs {
        let item = api.create("/items", json!({"name": name, "sku": sku, "priceCents": price, "categoryId": id(category), "reorderLevel": reorder})).await;
        if stock > 0 {
            put_stock(&app, &org, &id(&item), &id(&wh), stock).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    app.caller(&other)
        .create(
            "/items",
            json!({"name": "Drill", "sku": "TL-X", "priceCents": 1}),
        )
        .await;

    let get = |query: &'static str| async move {
        api.get(&format!("/items{query}"))
            .await
            .expect(StatusCode::OK)
    };
    let all = get("").await;
    assert_eq!(all["total"], 4);
    assert_eq!(
        skus(&all),
        ["PT_BOLT", "TL-DRILL", "TL-HAM", "PT-NUT"],
        "default: by name, ignoring case"
    );

    // Search: case-insensitive substring of name or SKU; % and _ are literal.
    assert_eq!(skus(&get("?search=HAMMER").await), ["TL-HAM"]);
    assert_eq!(skus(&get("?search=tl-").await), ["TL-DRILL", "TL-HAM"]);
    assert_eq!(skus(&get("?search=%25").await), ["PT_BOLT"]);
    assert_eq!(skus(&get("?search=_").await), ["PT_BOLT"]);
    assert_eq!(skus(&get("?search=zzz").await), Vec::<String>::new());
    assert_eq!(get("?search=t&limit=1").await["total"], 4);

    let by_category = api
        .get(&format!("/items?categoryId={}", id(&parts)))
        .await
        .expect(StatusCode::OK);
    assert_eq!(skus(&by_category), ["PT_BOLT", "PT-NUT"]);
    assert_eq!(by_category["total"], 2);
    let combined = api
        .get(&format!("/items?categoryId={}&search=nut", id(&parts)))
        .await
        .expect(StatusCode::OK);
    assert_eq!(skus(&combined), ["PT-NUT"]);
    let unknown = api
        .get(&format!("/items?categoryId={}", uuid::Uuid::new_v4()))
        .await
        .expect(StatusCode::OK);
    assert_eq!(unknown["total"], 0);
    api.get("/items?categoryId=abc")
        .await
        .field_error("categoryId");

    assert_eq!(
        skus(&get("?sort=name").await),
        ["PT_BOLT", "TL-DRILL", "TL-HAM", "PT-NUT"]
    );
    assert_eq!(
        skus(&get("?sort=-name").await),
        ["PT-NUT", "TL-HAM", "TL-DRILL", "PT_BOLT"]
    );
    assert_eq!(
        skus(&get("?sort=priceCents").await),
        ["PT-NUT", "PT_BOLT", "TL-HAM", "TL-DRILL"]
    );
    assert_eq!(
        skus(&get("?sort=-priceCents").await),
        ["TL-DRILL", "TL-HAM", "PT_BOLT", "PT-NUT"]
    );
    assert_eq!(
        skus(&get("?sort=createdAt").await),
        ["TL-DRILL", "TL-HAM", "PT_BOLT", "PT-NUT"]
    );
    assert_eq!(
        skus(&get("?sort=-createdAt").await),
        ["PT-NUT", "PT_BOLT", "TL-HAM", "TL-DRILL"]
    );
    let by_sku = skus(&get("?sort=sku").await);
    assert_eq!(by_sku.len(), 4);
    assert_eq!(&by_sku[2..], ["TL-DRILL", "TL-HAM"]);
    let page = get("?sort=priceCents&page=2&limit=3").await;
    assert_eq!(skus(&page), ["TL-DRILL"]);
    assert_eq!(
        (
            page["page"].clone(),
            page["limit"].clone(),
            page["total"].clone()
        ),
        (json!(2), json!(3), json!(4))
    );
    for bad in ["price", "name;DROP TABLE items", "-", "NAME"] {
        let path = format!("/items?sort={}", bad.replace(' ', "%20"));
        api.get(&path).await.field_error("sort");
    }
    // A repeated parameter does not fit the query's shape: 422 under `query`, not a 500.
    api.get("/items?sort=name&sort=-name")
        .await
        .field_error("query");

    // lowStock: items with a reorder level and stock at or below it.
    assert_eq!(skus(&get("?lowStock=true").await), ["TL-DRILL", "PT-NUT"]);
    assert_eq!(get("?lowStock=false").await["total"], 4);
    api.get("/items?lowStock=yes").await.field_error("lowStock");
    assert_eq!(rows_in(&app, "items").await, 5);
}

#[tokio::test]
async fn stock_on_hand_sums_stock_levels_over_warehouses() {
    let app = spawn_app().await;
    let (t, org) = user(&app, "stock@example.com").await;
    let api = app.caller(&t);
    let a = api
        .create("/warehouses", json!({"name": "A", "code": "A"}))
        .await;
    let b = api
        .create("/warehouses", json!({"name": "B", "code": "B"}))
        .await;
    let item = api
        .create(
            "/items",
            json!({"name": "Screw", "sku": "SCR", "priceCents": 3}),
        )
        .await;
    let other = api
        .create(
            "/items",
            json!({"name": "Washer", "sku": "WSH", "priceCents": 1}),
        )
        .await;
    put_stock(&app, &org, &id(&item), &id(&a), 40).await;
    put_stock(&app, &org, &id(&item), &id(&b), 2).await;
    put_stock(&app, &org, &id(&other), &id(&b), 0).await;

    let path = format!("/items/{}", id(&item));
    assert_eq!(
        api.get(&path).await.expect(StatusCode::OK)["stockOnHand"],
        42
    );
    let list = api.get("/items?sort=name").await.expect(StatusCode::OK);
    let stock: Vec<i64> = list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| r["stockOnHand"].as_i64().expect("stockOnHand"))
        .collect();
    assert_eq!(stock, [42, 0]);
    // Writes answer with the current stock too.
    let patched = api
        .patch(&path, json!({"reorderLevel": 50}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(patched["stockOnHand"], 42);
    assert_eq!(
        api.get("/items?lowStock=true").await.expect(StatusCode::OK)["total"],
        1
    );

    // An item with stock rows is referred to: 409, and it stays.
    api.delete(&path).await.problem(StatusCode::CONFLICT);
    api.get(&path).await.expect(StatusCode::OK);

    // The database refuses stock rows that mix organizations.
    let (_, org_b) = user(&app, "stockb@example.com").await;
    let mixed = sqlx::query(
        "INSERT INTO stock_levels (organization_id, item_id, warehouse_id, quantity, updated_at)
         VALUES ($1, $2, $3, 1, $4)",
    )
    .bind(&org_b)
    .bind(id(&other))
    .bind(id(&a))
    .bind(ims_api::db::now())
    .execute(app.state.db.pool())
    .await;
    assert!(mixed.is_err());
}
