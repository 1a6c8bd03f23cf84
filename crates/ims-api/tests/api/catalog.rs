//! Categories, tax rates, warehouses and contacts, plus what every catalog resource shares:
//! organization isolation, pagination, and rejection of bad input without side effects.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, id, rows_in, send_raw, spawn_app, user};

fn names(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| r["name"].as_str().expect("name").to_string())
        .collect()
}

#[tokio::test]
async fn categories_crud_with_parents_and_cycles_refused() {
    let app = spawn_app().await;
    let (t, _) = user(&app, "cat@example.com").await;
    let api = app.caller(&t);

    let tools = api
        .create("/categories", json!({"name": "  Tools  "}))
        .await;
    assert_eq!(tools["name"], "Tools", "names are trimmed");
    assert_eq!(tools["parentId"], Value::Null);
    assert!(tools["createdAt"]
        .as_str()
        .expect("createdAt")
        .ends_with('Z'));
    assert_eq!(tools["createdAt"], tools["updatedAt"]);
    let hammers = api
        .create(
            "/categories",
            json!({"name": "Hammers", "parentId": id(&tools)}),
        )
        .await;
    assert_eq!(hammers["parentId"], tools["id"]);

    let path = format!("/categories/{}", id(&hammers));
    let got = api.get(&path).await.expect(StatusCode::OK);
    assert_eq!(got, hammers);
    let list = api.get("/categories").await.expect(StatusCode::OK);
    assert_eq!(names(&list), ["Hammers", "Tools"]);
    assert_eq!(
        (
            list["page"].clone(),
            list["limit"].clone(),
            list["total"].clone()
        ),
        (json!(1), json!(20), json!(2))
    );

    // PUT replaces: an absent optional field is cleared.
    let put = api
        .put(&path, json!({"name": "Mallets"}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(put["name"], "Mallets");
    assert_eq!(put["parentId"], Value::Null);
    assert_eq!(put["createdAt"], hammers["createdAt"]);
    // PATCH: absent is unchanged, null clears, a value sets.
    let patched = api
        .patch(&path, json!({"parentId": id(&tools)}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (patched["name"].clone(), patched["parentId"].clone()),
        (json!("Mallets"), tools["id"].clone())
    );
    let patched = api
        .patch(&path, json!({"name": "Hammers"}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(patched["parentId"], tools["id"], "absent field unchanged");
    let cleared = api
        .patch(&path, json!({"parentId": null}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(cleared["parentId"], Value::Null);
    assert_eq!(cleared["name"], "Hammers");
    api.patch(&path, json!({"name": null}))
        .await
        .field_error("name");

    // A category cannot be its own parent or its descendant's child.
    api.patch(&path, json!({"parentId": id(&tools)}))
        .await
        .expect(StatusCode::OK);
    let tools_path = format!("/categories/{}", id(&tools));
    api.patch(&tools_path, json!({"parentId": id(&hammers)}))
        .await
        .field_error("parentId");
    api.put(
        &tools_path,
        json!({"name": "Tools", "parentId": id(&tools)}),
    )
    .await
    .field_error("parentId");

    // A parent with children is in use.
    api.delete(&tools_path).await.problem(StatusCode::CONFLICT);
    api.delete(&path).await.expect(StatusCode::NO_CONTENT);
    api.get(&path).await.problem(StatusCode::NOT_FOUND);
    api.delete(&path).await.problem(StatusCode::NOT_FOUND);
    api.delete(&tools_path).await.expect(StatusCode::NO_CONTENT);
    assert_eq!(rows_in(&app, "categories").await, 0);
}

#[tokio::test]
async fn tax_rates_crud_and_range() {
    let app = spawn_app().await;
    let (t, _) = user(&app, "tax@example.com").await;
    let api = app.caller(&t);
    let vat = api
        .create("/tax-rates", json!({"name": "VAT", "rateBps": 2000}))
        .await;
    assert_eq!(vat["rateBps"], 2000);
    let zero = api
        .create("/tax-rates", json!({"name": "Zero", "rateBps": 0}))
        .await;
    api.create("/tax-rates", json!({"name": "Max", "rateBps": 100000}))
        .await;
    let path = format!("/tax-rates/{}", id(&vat));
    assert_eq!(api.get(&path).await.expect(StatusCode::OK), vat);
    let list = api.get("/tax-rates").await.expect(StatusCode::OK);
    assert_eq!(names(&list), ["Max", "VAT", "Zero"]);

    let put = api
        .put(&path, json!({"name": "Sales tax", "rateBps": 825}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (put["name"].clone(), put["rateBps"].clone()),
        (json!("Sales tax"), json!(825))
    );
    let patched = api
        .patch(&path, json!({"rateBps": 850}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (patched["name"].clone(), patched["rateBps"].clone()),
        (json!("Sales tax"), json!(850))
    );
    assert!(patched["updatedAt"].as_str() >= put["updatedAt"].as_str());

    for bad in [-1, 100_001] {
        api.post("/tax-rates", json!({"name": "X", "rateBps": bad}))
            .await
            .field_error("rateBps");
        api.patch(&path, json!({"rateBps": bad}))
            .await
            .field_error("rateBps");
    }
    api.patch(&path, json!({"rateBps": null}))
        .await
        .field_error("rateBps");

    // In use by an item: 409; once the item is gone, deletable.
    let item = api
        .create(
            "/items",
            json!({"name": "Widget", "sku": "W-1", "priceCents": 100, "taxRateId": id(&zero)}),
        )
        .await;
    let zero_path = format!("/tax-rates/{}", id(&zero));
    api.delete(&zero_path).await.problem(StatusCode::CONFLICT);
    api.delete(&format!("/items/{}", id(&item)))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.delete(&zero_path).await.expect(StatusCode::NO_CONTENT);
    api.delete(&path).await.expect(StatusCode::NO_CONTENT);
    api.get(&path).await.problem(StatusCode::NOT_FOUND);
    assert_eq!(rows_in(&app, "tax_rates").await, 1);
}

#[tokio::test]
async fn warehouses_crud_with_codes_unique_per_organization() {
    let app = spawn_app().await;
    let (t, org) = user(&app, "wh@example.com").await;
    let api = app.caller(&t);
    let (other, _) = user(&app, "wh2@example.com").await;
    let main = api
        .create("/warehouses", json!({"name": "Main", "code": "MAIN"}))
        .await;
    let east = api
        .create("/warehouses", json!({"name": "East", "code": "EAST"}))
        .await;
    assert_eq!(main["code"], "MAIN");
    api.post("/warehouses", json!({"name": "Other", "code": "MAIN"}))
        .await
        .problem(StatusCode::CONFLICT);
    // Another organization may use the same code.
    app.caller(&other)
        .create("/warehouses", json!({"name": "Theirs", "code": "MAIN"}))
        .await;

    let path = format!("/warehouses/{}", id(&east));
    assert_eq!(api.get(&path).await.expect(StatusCode::OK), east);
    let list = api.get("/warehouses").await.expect(StatusCode::OK);
    assert_eq!(names(&list), ["East", "Main"]);
    assert_eq!(list["total"], 2);
    let put = api
        .put(&path, json!({"name": "East 2", "code": "E2"}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (put["name"].clone(), put["code"].clone()),
        (json!("East 2"), json!("E2"))
    );
    let patched = api
        .patch(&path, json!({"name": "Eastern"}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (patched["name"].clone(), patched["code"].clone()),
        (json!("Eastern"), json!("E2"))
    );
    api.patch(&path, json!({"code": "MAIN"}))
        .await
        .problem(StatusCode::CONFLICT);
    api.put(&path, json!({"name": "x", "code": "MAIN"}))
        .await
        .problem(StatusCode::CONFLICT);
    api.patch(&path, json!({"code": "  "}))
        .await
        .field_error("code");

    // A warehouse holding stock is in use.
    let item = api
        .create(
            "/items",
            json!({"name": "Bolt", "sku": "B", "priceCents": 5}),
        )
        .await;
    sqlx::query(
        "INSERT INTO stock_levels (organization_id, item_id, warehouse_id, quantity, updated_at)
         VALUES ($1, $2, $3, 7, $4)",
    )
    .bind(&org)
    .bind(id(&item))
    .bind(id(&main))
    .bind(ims_api::db::now())
    .execute(app.state.db.pool())
    .await
    .expect("insert stock");
    let main_path = format!("/warehouses/{}", id(&main));
    api.delete(&main_path).await.problem(StatusCode::CONFLICT);
    api.delete(&path).await.expect(StatusCode::NO_CONTENT);
    api.get(&path).await.problem(StatusCode::NOT_FOUND);
    // The freed code can be used again.
    api.create("/warehouses", json!({"name": "East", "code": "E2"}))
        .await;
}

#[tokio::test]
async fn contacts_crud_and_filters() {
    let app = spawn_app().await;
    let (t, _) = user(&app, "contacts@example.com").await;
    let api = app.caller(&t);
    let acme = api.create("/contacts", json!({"type": "customer", "name": "Acme Corp", "email": "buy@acme.example", "phone": "+1 555 0100", "address": "1 Road"})).await;
    assert_eq!(acme["type"], "customer");
    assert_eq!(acme["email"], "buy@acme.example");
    let supplier = api
        .create(
            "/contacts",
            json!({"type": "vendor", "name": "Bolts & Nuts", "email": ""}),
        )
        .await;
    assert_eq!(
        supplier["email"],
        Value::Null,
        "blank optional text is stored as null"
    );
    assert_eq!(supplier["phone"], Value::Null);
    api.create("/contacts", json!({"type": "customer", "name": "Zed"}))
        .await;

    let all = api.get("/contacts").await.expect(StatusCode::OK);
    assert_eq!(names(&all), ["Acme Corp", "Bolts & Nuts", "Zed"]);
    let customers = api
        .get("/contacts?type=customer")
        .await
        .expect(StatusCode::OK);
    assert_eq!(names(&customers), ["Acme Corp", "Zed"]);
    assert_eq!(customers["total"], 2);
    let vendors = api
        .get("/contacts?type=vendor")
        .await
        .expect(StatusCode::OK);
    assert_eq!(names(&vendors), ["Bolts & Nuts"]);
    let search = api
        .get("/contacts?search=ACME")
        .await
        .expect(StatusCode::OK);
    assert_eq!(names(&search), ["Acme Corp"]);
    let by_email = api
        .get("/contacts?search=buy%40")
        .await
        .expect(StatusCode::OK);
    assert_eq!(names(&by_email), ["Acme Corp"]);
    let both = api
        .get("/contacts?type=vendor&search=e")
        .await
        .expect(StatusCode::OK);
    assert_eq!(both["total"], 0);
    api.get("/contacts?type=supplier").await.field_error("type");

    let path = format!("/contacts/{}", id(&acme));
    assert_eq!(api.get(&path).await.expect(StatusCode::OK), acme);
    let put = api
        .put(&path, json!({"type": "vendor", "name": "Acme Supply"}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(put["type"], "vendor");
    assert_eq!(
        put["email"],
        Value::Null,
        "PUT clears absent optional fields"
    );
    let patched = api
        .patch(&path, json!({"email": "a@b.example", "phone": "123"}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (patched["name"].clone(), patched["email"].clone()),
        (json!("Acme Supply"), json!("a@b.example"))
    );
    let cleared = api
        .patch(&path, json!({"email": null}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (cleared["email"].clone(), cleared["phone"].clone()),
        (Value::Null, json!("123"))
    );
    api.patch(&path, json!({"type": "other"}))
        .await
        .field_error("type");
    api.patch(&path, json!({"email": "nope"}))
        .await
        .field_error("email");
    api.patch(&path, json!({"type": null}))
        .await
        .field_error("type");
    api.delete(&path).await.expect(StatusCode::NO_CONTENT);
    api.get(&path).await.problem(StatusCode::NOT_FOUND);
    assert_eq!(rows_in(&app, "contacts").await, 2);
}

#[tokio::test]
async fn lists_paginate_with_totals_and_reject_bad_page_parameters() {
    let app = spawn_app().await;
    let (t, _) = user(&app, "pages@example.com").await;
    let api = app.caller(&t);
    for n in 0..25 {
        api.create("/categories", json!({"name": format!("C{n:02}")}))
            .await;
    }
    let first = api.get("/categories").await.expect(StatusCode::OK);
    assert_eq!(first["data"].as_array().expect("data").len(), 20);
    assert_eq!(
        (
            first["page"].clone(),
            first["limit"].clone(),
            first["total"].clone()
        ),
        (json!(1), json!(20), json!(25))
    );
    let second = api
        .get("/categories?page=2&limit=10")
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        names(&second),
        (10..20).map(|n| format!("C{n:02}")).collect::<Vec<_>>()
    );
    assert_eq!(
        (
            second["page"].clone(),
            second["limit"].clone(),
            second["total"].clone()
        ),
        (json!(2), json!(10), json!(25))
    );
    let last = api
        .get("/categories?page=3&limit=10")
        .await
        .expect(StatusCode::OK);
    assert_eq!(last["data"].as_array().expect("data").len(), 5);
    let beyond = api
        .get("/categories?page=9&limit=10")
        .await
        .expect(StatusCode::OK);
    assert_eq!(beyond["data"], json!([]));
    assert_eq!(beyond["total"], 25);
    api.get("/categories?limit=100")
        .await
        .expect(StatusCode::OK);

    for path in [
        "/categories",
        "/tax-rates",
        "/warehouses",
        "/contacts",
        "/items",
    ] {
        for (query, field) in [
            ("page=0", "page"),
            ("page=-1", "page"),
            ("page=x", "page"),
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("limit=1.5", "limit"),
            ("page=99999999999", "page"),
        ] {
            api.get(&format!("{path}?{query}")).await.field_error(field);
        }
    }
}

/// One row of each resource in organization A; B must not see or touch any of them.
#[tokio::test]
async fn organizations_never_see_or_touch_each_others_rows() {
    let app = spawn_app().await;
    let (a, _) = user(&app, "a@example.com").await;
    let alice = app.caller(&a);
    let (b, _) = user(&app, "b@example.com").await;
    let bob = app.caller(&b);
    let category = alice.create("/categories", json!({"name": "A cat"})).await;
    let tax = alice
        .create("/tax-rates", json!({"name": "A tax", "rateBps": 1}))
        .await;
    let warehouse = alice
        .create("/warehouses", json!({"name": "A wh", "code": "A"}))
        .await;
    let contact = alice
        .create("/contacts", json!({"type": "vendor", "name": "A vendor"}))
        .await;
    let item = alice
        .create(
            "/items",
            json!({"name": "A item", "sku": "A-1", "priceCents": 1}),
        )
        .await;

    let cases = [
        ("/categories", category, json!({"name": "B"})),
        ("/tax-rates", tax, json!({"name": "B", "rateBps": 2})),
        ("/warehouses", warehouse, json!({"name": "B", "code": "B"})),
        (
            "/contacts",
            contact,
            json!({"type": "customer", "name": "B"}),
        ),
        (
            "/items",
            item,
            json!({"name": "B", "sku": "B-1", "priceCents": 2}),
        ),
    ];
    for (base, row, body) in &cases {
        let path = format!("{base}/{}", id(row));
        bob.get(&path).await.problem(StatusCode::NOT_FOUND);
        bob.put(&path, body.clone())
            .await
            .problem(StatusCode::NOT_FOUND);
        bob.patch(&path, json!({"name": "B"}))
            .await
            .problem(StatusCode::NOT_FOUND);
        bob.delete(&path).await.problem(StatusCode::NOT_FOUND);
        let theirs = bob.get(base).await.expect(StatusCode::OK);
        assert_eq!(
            (theirs["data"].clone(), theirs["total"].clone()),
            (json!([]), json!(0)),
            "{base}"
        );
        // Untouched for its owner.
        assert_eq!(&alice.get(&path).await.expect(StatusCode::OK), row);
        let mine = alice.get(base).await.expect(StatusCode::OK);
        assert_eq!(mine["total"], 1);

        // Ids that are not UUIDs cannot name anything: 404 too.
        for bad in ["not-a-uuid", "1", "%20"] {
            let path = format!("{base}/{bad}");
            alice.get(&path).await.problem(StatusCode::NOT_FOUND);
            alice
                .put(&path, body.clone())
                .await
                .problem(StatusCode::NOT_FOUND);
            alice
                .patch(&path, json!({}))
                .await
                .problem(StatusCode::NOT_FOUND);
            alice.delete(&path).await.problem(StatusCode::NOT_FOUND);
        }
        // No token: 401.
        let anonymous = app.anonymous();
        anonymous.get(base).await.problem(StatusCode::UNAUTHORIZED);
        anonymous
            .post(base, body.clone())
            .await
            .problem(StatusCode::UNAUTHORIZED);
        anonymous.get(&path).await.problem(StatusCode::UNAUTHORIZED);
    }
}

/// (collection path, table, an existing row, [(invalid body, field the 422 names)]).
type BadInputCase<'a> = (&'a str, &'a str, &'a Value, Vec<(Value, &'a str)>);

/// Every write route refuses malformed JSON (400), missing fields, wrong types and invalid
/// values (422 naming the field), and writes nothing when it does.
#[tokio::test]
async fn bad_input_on_every_write_route_is_4xx_and_writes_nothing() {
    let app = spawn_app().await;
    let (t, _) = user(&app, "bad@example.com").await;
    let api = app.caller(&t);
    let category = api.create("/categories", json!({"name": "Cat"})).await;
    let tax = api
        .create("/tax-rates", json!({"name": "Tax", "rateBps": 5}))
        .await;
    let warehouse = api
        .create("/warehouses", json!({"name": "Wh", "code": "W"}))
        .await;
    let contact = api
        .create("/contacts", json!({"type": "vendor", "name": "V"}))
        .await;
    let item = api
        .create("/items", json!({"name": "I", "sku": "S", "priceCents": 1}))
        .await;
    let long = "x".repeat(201);

    // Each body is invalid as a create, a PUT and a PATCH body, for the field named.
    let cases: Vec<BadInputCase> = vec![
        (
            "/categories",
            "categories",
            &category,
            vec![
                (json!({"name": ""}), "name"),
                (json!({"name": "   "}), "name"),
                (json!({"name": long}), "name"),
                (json!({"name": 5}), "body"),
                (json!({"name": "x", "parentId": "nope"}), "parentId"),
                (
                    json!({"name": "x", "parentId": uuid::Uuid::new_v4()}),
                    "parentId",
                ),
                (json!({"name": "x", "parentId": 3}), "body"),
            ],
        ),
        (
            "/tax-rates",
            "tax_rates",
            &tax,
            vec![
                (json!({"name": "", "rateBps": 1}), "name"),
                (json!({"name": "x", "rateBps": -1}), "rateBps"),
                (json!({"name": "x", "rateBps": "5"}), "body"),
                (json!({"name": "x", "rateBps": 1.5}), "body"),
            ],
        ),
        (
            "/warehouses",
            "warehouses",
            &warehouse,
            vec![
                (json!({"name": "", "code": "C"}), "name"),
                (json!({"name": "x", "code": ""}), "code"),
                (json!({"name": "x", "code": "c".repeat(51)}), "code"),
                (json!({"name": "x", "code": ["C"]}), "body"),
            ],
        ),
        (
            "/contacts",
            "contacts",
            &contact,
            vec![
                (json!({"type": "supplier", "name": "x"}), "type"),
                (json!({"type": "vendor", "name": ""}), "name"),
                (
                    json!({"type": "vendor", "name": "x", "email": "no-at-sign"}),
                    "email",
                ),
                (
                    json!({"type": "vendor", "name": "x", "phone": "1".repeat(51)}),
                    "phone",
                ),
                (json!({"type": 1, "name": "x"}), "body"),
                (
                    json!({"type": "vendor", "name": "x", "email": false}),
                    "body",
                ),
            ],
        ),
        (
            "/items",
            "items",
            &item,
            vec![
                (json!({"name": "", "sku": "N", "priceCents": 1}), "name"),
                (json!({"name": "x", "sku": "", "priceCents": 1}), "sku"),
                (
                    json!({"name": "x", "sku": "N", "priceCents": -1}),
                    "priceCents",
                ),
                (
                    json!({"name": "x", "sku": "N", "priceCents": 1, "costCents": -1}),
                    "costCents",
                ),
                (
                    json!({"name": "x", "sku": "N", "priceCents": 1, "reorderLevel": -1}),
                    "reorderLevel",
                ),
                (
                    json!({"name": "x", "sku": "N", "priceCents": 1, "categoryId": "x"}),
                    "categoryId",
                ),
                (
                    json!({"name": "x", "sku": "N", "priceCents": 1, "taxRateId": uuid::Uuid::new_v4()}),
                    "taxRateId",
                ),
                (json!({"name": "x", "sku": "N", "priceCents": "1"}), "body"),
                (json!({"name": "x", "sku": "N", "priceCents": 1.25}), "body"),
                (json!({"name": "x", "sku": "N", "priceCents": 1e30}), "body"),
                (
                    json!({"name": "x", "sku": "N", "priceCents": 1, "unit": "u".repeat(51)}),
                    "unit",
                ),
            ],
        ),
    ];
    for (base, table, row, bodies) in cases {
        let path = format!("{base}/{}", id(row));
        let before = rows_in(&app, table).await;
        for method in [Method::POST, Method::PUT, Method::PATCH] {
            let target = if method == Method::POST {
                base
            } else {
                path.as_str()
            };
            for raw in ["{", "{\"name\": }", "not json", "{\"name\": \"x\""] {
                let problem = assert_problem(
                    send_raw(&app, method.clone(), target, raw, &t).await,
                    StatusCode::BAD_REQUEST,
                )
                .await;
                assert_eq!(problem["type"], "/problems/bad-request");
            }
            // A JSON value that is not an object.
            api.send(method.clone(), target, Some(json!([1])))
                .await
                .problem(StatusCode::UNPROCESSABLE_ENTITY);
            if method != Method::PATCH {
                // Missing required fields are named.
                let problem = api
                    .send(method.clone(), target, Some(json!({})))
                    .await
                    .problem(StatusCode::UNPROCESSABLE_ENTITY);
                assert!(problem["errors"].is_object(), "{problem}");
            }
            for (body, field) in &bodies {
                api.send(method.clone(), target, Some(body.clone()))
                    .await
                    .field_error(field);
            }
        }
        assert_eq!(
            rows_in(&app, table).await,
            before,
            "{base}: nothing created"
        );
        assert_eq!(
            &api.get(&path).await.expect(StatusCode::OK),
            row,
            "{base}: nothing changed"
        );
    }
    // Without a JSON content type: 415.
    let response = app
        .client
        .post(format!("{}/categories", app.address))
        .bearer_auth(&t)
        .body("{\"name\":\"x\"}")
        .send()
        .await
        .expect("request");
    assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
}

/// Referenced ids must be rows of the caller's organization: another organization's ids are
/// refused like unknown ones, and the database would refuse them too.
#[tokio::test]
async fn references_into_another_organization_are_422() {
    let app = spawn_app().await;
    let (a, _) = user(&app, "refa@example.com").await;
    let alice = app.caller(&a);
    let (b, _) = user(&app, "refb@example.com").await;
    let bob = app.caller(&b);
    let their_category = bob.create("/categories", json!({"name": "B cat"})).await;
    let their_tax = bob
        .create("/tax-rates", json!({"name": "B tax", "rateBps": 1}))
        .await;
    let my_category = alice.create("/categories", json!({"name": "A cat"})).await;
    let my_item = alice
        .create("/items", json!({"name": "A", "sku": "A", "priceCents": 1}))
        .await;

    alice
        .post(
            "/categories",
            json!({"name": "x", "parentId": id(&their_category)}),
        )
        .await
        .field_error("parentId");
    let my_category_path = format!("/categories/{}", id(&my_category));
    alice
        .patch(&my_category_path, json!({"parentId": id(&their_category)}))
        .await
        .field_error("parentId");
    alice
        .put(
            &my_category_path,
            json!({"name": "x", "parentId": id(&their_category)}),
        )
        .await
        .field_error("parentId");
    let item_path = format!("/items/{}", id(&my_item));
    for (field, other) in [
        ("categoryId", id(&their_category)),
        ("taxRateId", id(&their_tax)),
    ] {
        let mut body = json!({"name": "x", "sku": "X", "priceCents": 1});
        body[field] = json!(other);
        alice.post("/items", body.clone()).await.field_error(field);
        alice.put(&item_path, body).await.field_error(field);
        alice
            .patch(&item_path, json!({field: other}))
            .await
            .field_error(field);
    }
    assert_eq!(rows_in(&app, "items").await, 1);
    assert_eq!(rows_in(&app, "categories").await, 2);
    assert_eq!(
        alice.get(&my_category_path).await.expect(StatusCode::OK),
        my_category
    );
    assert_eq!(alice.get(&item_path).await.expect(StatusCode::OK), my_item);
}

/// A body is a JSON object, sent as written: an array of the fields in order (which serde
/// would read as the struct), a compressed body, or a declared length over the limit are
/// refused before anything is written. The last is refused at once, not after waiting for
/// a body that would be refused anyway.
#[tokio::test]
async fn bodies_are_objects_sent_uncompressed_within_the_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app().await;
    let (t, _) = user(&app, "shapes@example.com").await;
    let api = app.caller(&t);
    let rate = api
        .create("/tax-rates", json!({"name": "VAT", "rateBps": 825}))
        .await;
    let path = format!("/tax-rates/{}", id(&rate));
    for (method, target, body) in [
        (Method::POST, "/tax-rates", json!(["Arrayed", 825])),
        (Method::PUT, path.as_str(), json!(["Arrayed", 825])),
        (Method::PATCH, path.as_str(), json!(["Arrayed"])),
    ] {
        let problem = api
            .send(method, target, Some(body))
            .await
            .field_error("body");
        assert_eq!(problem["errors"]["body"][0], "must be a JSON object");
    }
    let compressed = app
        .client
        .post(format!("{}/tax-rates", app.address))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(r#"{"name":"Zipped","rateBps":1}"#)
        .send()
        .await
        .expect("request");
    assert_problem(compressed, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(rows_in(&app, "tax_rates").await, 1, "nothing created");
    assert_eq!(api.get(&path).await.expect(StatusCode::OK), rate);

    let host = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let head = format!(
        "POST /tax-rates HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\n\
         Content-Type: application/json\r\nContent-Length: 5000000\r\n\r\n{{\"a\":1}}"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut response = vec![0u8; 4096];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read(&mut response),
    )
    .await
    .expect("answered before the body came")
    .expect("read");
    let text = String::from_utf8_lossy(&response[..read]).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 413"), "{text}");
    assert!(
        text.contains("content-type: application/problem+json"),
        "{text}"
    );
}
