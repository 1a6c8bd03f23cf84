//! Categories, tax rates, warehouses and contacts, plus what every catalog resource shares:
//! organization isolation, pagination, and rejection of bad input without side effects.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{
    assert_field_error, assert_problem, create, expect, id, rows_in, send, send_raw, spawn_app,
    user,
};

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

    let tools = create(&app, &t, "/categories", json!({"name": "  Tools  "})).await;
    assert_eq!(tools["name"], "Tools", "names are trimmed");
    assert_eq!(tools["parentId"], Value::Null);
    assert!(tools["createdAt"]
        .as_str()
        .expect("createdAt")
        .ends_with('Z'));
    assert_eq!(tools["createdAt"], tools["updatedAt"]);
    let hammers = create(
        &app,
        &t,
        "/categories",
        json!({"name": "Hammers", "parentId": id(&tools)}),
    )
    .await;
    assert_eq!(hammers["parentId"], tools["id"]);

    let path = format!("/categories/{}", id(&hammers));
    let got = expect(&app, Method::GET, &path, None, &t, StatusCode::OK).await;
    assert_eq!(got, hammers);
    let list = expect(&app, Method::GET, "/categories", None, &t, StatusCode::OK).await;
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
    let put = expect(
        &app,
        Method::PUT,
        &path,
        Some(json!({"name": "Mallets"})),
        &t,
        StatusCode::OK,
    )
    .await;
    assert_eq!(put["name"], "Mallets");
    assert_eq!(put["parentId"], Value::Null);
    assert_eq!(put["createdAt"], hammers["createdAt"]);
    // PATCH: absent is unchanged, null clears, a value sets.
    let patched = expect(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"parentId": id(&tools)})),
        &t,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (patched["name"].clone(), patched["parentId"].clone()),
        (json!("Mallets"), tools["id"].clone())
    );
    let patched = expect(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"name": "Hammers"})),
        &t,
        StatusCode::OK,
    )
    .await;
    assert_eq!(patched["parentId"], tools["id"], "absent field unchanged");
    let cleared = expect(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"parentId": null})),
        &t,
        StatusCode::OK,
    )
    .await;
    assert_eq!(cleared["parentId"], Value::Null);
    assert_eq!(cleared["name"], "Hammers");
    assert_field_error(
        send(&app, Method::PATCH, &path, Some(json!({"name": null})), &t).await,
        "name",
    )
    .await;

    // A category cannot be its own parent or its descendant's child.
    expect(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"parentId": id(&tools)})),
        &t,
        StatusCode::OK,
    )
    .await;
    let tools_path = format!("/categories/{}", id(&tools));
    assert_field_error(
        send(
            &app,
            Method::PATCH,
            &tools_path,
            Some(json!({"parentId": id(&hammers)})),
            &t,
        )
        .await,
        "parentId",
    )
    .await;
    assert_field_error(
        send(
            &app,
            Method::PUT,
            &tools_path,
            Some(json!({"name": "Tools", "parentId": id(&tools)})),
            &t,
        )
        .await,
        "parentId",
    )
    .await;

    // A parent with children is in use.
    assert_problem(
        send(&app, Method::DELETE, &tools_path, None, &t).await,
        StatusCode::CONFLICT,
    )
    .await;
    expect(
        &app,
        Method::DELETE,
        &path,
        None,
        &t,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_problem(
        send(&app, Method::GET, &path, None, &t).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(
        send(&app, Method::DELETE, &path, None, &t).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect(
        &app,
        Method::DELETE,
        &tools_path,
        None,
        &t,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_eq!(rows_in(&app, "categories").await, 0);
}

#[tokio::test]
async fn tax_rates_crud_and_range() {
    let app = spawn_app().await;
    let (t, _) = user(&app, "tax@example.com").await;
    let vat = create(
        &app,
        &t,
        "/tax-rates",
        json!({"name": "VAT", "rateBps": 2000}),
    )
    .await;
    assert_eq!(vat["rateBps"], 2000);
    let zero = create(
        &app,
        &t,
        "/tax-rates",
        json!({"name": "Zero", "rateBps": 0}),
    )
    .await;
    create(
        &app,
        &t,
        "/tax-rates",
        json!({"name": "Max", "rateBps": 100000}),
    )
    .await;
    let path = format!("/tax-rates/{}", id(&vat));
    assert_eq!(
        expect(&app, Method::GET, &path, None, &t, StatusCode::OK).await,
        vat
    );
    let list = expect(&app, Method::GET, "/tax-rates", None, &t, StatusCode::OK).await;
    assert_eq!(names(&list), ["Max", "VAT", "Zero"]);

    let put = expect(
        &app,
        Method::PUT,
        &path,
        Some(json!({"name": "Sales tax", "rateBps": 825})),
        &t,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (put["name"].clone(), put["rateBps"].clone()),
        (json!("Sales tax"), json!(825))
    );
    let patched = expect(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"rateBps": 850})),
        &t,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (patched["name"].clone(), patched["rateBps"].clone()),
        (json!("Sales tax"), json!(850))
    );
    assert!(patched["updatedAt"].as_str() >= put["updatedAt"].as_str());

    for bad in [-1, 100_001] {
        assert_field_error(
            send(
                &app,
                Method::POST,
                "/tax-rates",
                Some(json!({"name": "X", "rateBps": bad})),
                &t,
            )
            .await,
            "rateBps",
        )
        .await;
        assert_field_error(
            send(
                &app,
                Method::PATCH,
                &path,
                Some(json!({"rateBps": bad})),
                &t,
            )
            .await,
            "rateBps",
        )
        .await;
    }
    assert_field_error(
        send(
            &app,
            Method::PATCH,
            &path,
            Some(json!({"rateBps": null})),
            &t,
        )
        .await,
        "rateBps",
    )
    .await;

    // In use by an item: 409; once the item is gone, deletable.
    let item = create(
        &app,
        &t,
        "/items",
        json!({"name": "Widget", "sku": "W-1", "priceCents": 100, "taxRateId": id(&zero)}),
    )
    .await;
    let zero_path = format!("/tax-rates/{}", id(&zero));
    assert_problem(
        send(&app, Method::DELETE, &zero_path, None, &t).await,
        StatusCode::CONFLICT,
    )
    .await;
    expect(
        &app,
        Method::DELETE,
        &format!("/items/{}", id(&item)),
        None,
        &t,
        StatusCode::NO_CONTENT,
    )
    .await;
    expect(
        &app,
        Method::DELETE,
        &zero_path,
        None,
        &t,
        StatusCode::NO_CONTENT,
    )
    .await;
    expect(
        &app,
        Method::DELETE,
        &path,
        None,
        &t,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_problem(
        send(&app, Method::GET, &path, None, &t).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(rows_in(&app, "tax_rates").await, 1);
}

#[tokio::test]
async fn warehouses_crud_with_codes_unique_per_organization() {
    let app = spawn_app().await;
    let (t, org) = user(&app, "wh@example.com").await;
    let (other, _) = user(&app, "wh2@example.com").await;
    let main = create(
        &app,
        &t,
        "/warehouses",
        json!({"name": "Main", "code": "MAIN"}),
    )
    .await;
    let east = create(
        &app,
        &t,
        "/warehouses",
        json!({"name": "East", "code": "EAST"}),
    )
    .await;
    assert_eq!(main["code"], "MAIN");
    assert_problem(
        send(
            &app,
            Method::POST,
            "/warehouses",
            Some(json!({"name": "Other", "code": "MAIN"})),
            &t,
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    // Another organization may use the same code.
    create(
        &app,
        &other,
        "/warehouses",
        json!({"name": "Theirs", "code": "MAIN"}),
    )
    .await;

    let path = format!("/warehouses/{}", id(&east));
    assert_eq!(
        expect(&app, Method::GET, &path, None, &t, StatusCode::OK).await,
        east
    );
    let list = expect(&app, Method::GET, "/warehouses", None, &t, StatusCode::OK).await;
    assert_eq!(names(&list), ["East", "Main"]);
    assert_eq!(list["total"], 2);
    let put = expect(
        &app,
        Method::PUT,
        &path,
        Some(json!({"name": "East 2", "code": "E2"})),
        &t,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (put["name"].clone(), put["code"].clone()),
        (json!("East 2"), json!("E2"))
    );
    let patched = expect(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"name": "Eastern"})),
        &t,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (patched["name"].clone(), patched["code"].clone()),
        (json!("Eastern"), json!("E2"))
    );
    assert_problem(
        send(
            &app,
            Method::PATCH,
            &path,
            Some(json!({"code": "MAIN"})),
            &t,
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_problem(
        send(
            &app,
            Method::PUT,
            &path,
            Some(json!({"name": "x", "code": "MAIN"})),
            &t,
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_field_error(
        send(&app, Method::PATCH, &path, Some(json!({"code": "  "})), &t).await,
        "code",
    )
    .await;

    // A warehouse holding stock is in use.
    let item = create(
        &app,
        &t,
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
    assert_problem(
        send(&app, Method::DELETE, &main_path, None, &t).await,
        StatusCode::CONFLICT,
    )
    .await;
    expect(
        &app,
        Method::DELETE,
        &path,
        None,
        &t,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_problem(
        send(&app, Method::GET, &path, None, &t).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    // The freed code can be used again.
    create(
        &app,
        &t,
        "/warehouses",
        json!({"name": "East", "code": "E2"}),
    )
    .await;
}

#[tokio::test]
async fn contacts_crud_and_filters() {
    let app = spawn_app().await;
    let (t, _) = user(&app, "contacts@example.com").await;
    let acme = create(
        &app,
        &t,
        "/contacts",
        json!({"type": "customer", "name": "Acme Corp", "email": "buy@acme.example", "phone": "+1 555 0100", "address": "1 Road"}),
    )
    .await;
    assert_eq!(acme["type"], "customer");
    assert_eq!(acme["email"], "buy@acme.example");
    let supplier = create(
        &app,
        &t,
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
    create(
        &app,
        &t,
        "/contacts",
        json!({"type": "customer", "name": "Zed"}),
    )
    .await;

    let all = expect(&app, Method::GET, "/contacts", None, &t, StatusCode::OK).await;
    assert_eq!(names(&all), ["Acme Corp", "Bolts & Nuts", "Zed"]);
    let customers = expect(
        &app,
        Method::GET,
        "/contacts?type=customer",
        None,
        &t,
        StatusCode::OK,
    )
    .await;
    assert_eq!(names(&customers), ["Acme Corp", "Zed"]);
    assert_eq!(customers["total"], 2);
    let vendors = expect(
        &app,
        Method::GET,
        "/contacts?type=vendor",
        None,
        &t,
        StatusCode::OK,
    )
    .await;
    assert_eq!(names(&vendors), ["Bolts & Nuts"]);
    let search = expect(
        &app,
        Method::GET,
        "/contacts?search=ACME",
        None,
        &t,
        StatusCode::OK,
    )
    .await;
    assert_eq!(names(&search), ["Acme Corp"]);
    let by_email = expect(
        &app,
        Method::GET,
        "/contacts?search=buy%40",
        None,
        &t,
        StatusCode::OK,
    )
    .await;
    assert_eq!(names(&by_email), ["Acme Corp"]);
    let both = expect(
        &app,
        Method::GET,
        "/contacts?type=vendor&search=e",
        None,
        &t,
        StatusCode::OK,
    )
    .await;
    assert_eq!(both["total"], 0);
    assert_field_error(
        send(&app, Method::GET, "/contacts?type=supplier", None, &t).await,
        "type",
    )
    .await;

    let path = format!("/contacts/{}", id(&acme));
    assert_eq!(
        expect(&app, Method::GET, &path, None, &t, StatusCode::OK).await,
        acme
    );
    let put = expect(
        &app,
        Method::PUT,
        &path,
        Some(json!({"type": "vendor", "name": "Acme Supply"})),
        &t,
        StatusCode::OK,
    )
    .await;
    assert_eq!(put["type"], "vendor");
    assert_eq!(
        put["email"],
        Value::Null,
        "PUT clears absent optional fields"
    );
    let patched = expect(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"email": "a@b.example", "phone": "123"})),
        &t,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (patched["name"].clone(), patched["email"].clone()),
        (json!("Acme Supply"), json!("a@b.example"))
    );
    let cleared = expect(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"email": null})),
        &t,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (cleared["email"].clone(), cleared["phone"].clone()),
        (Value::Null, json!("123"))
    );
    assert_field_error(
        send(
            &app,
            Method::PATCH,
            &path,
            Some(json!({"type": "other"})),
            &t,
        )
        .await,
        "type",
    )
    .await;
    assert_field_error(
        send(
            &app,
            Method::PATCH,
            &path,
            Some(json!({"email": "nope"})),
            &t,
        )
        .await,
        "email",
    )
    .await;
    assert_field_error(
        send(&app, Method::PATCH, &path, Some(json!({"type": null})), &t).await,
        "type",
    )
    .await;
    expect(
        &app,
        Method::DELETE,
        &path,
        None,
        &t,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_problem(
        send(&app, Method::GET, &path, None, &t).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(rows_in(&app, "contacts").await, 2);
}

#[tokio::test]
async fn lists_paginate_with_totals_and_reject_bad_page_parameters() {
    let app = spawn_app().await;
    let (t, _) = user(&app, "pages@example.com").await;
    for n in 0..25 {
        create(&app, &t, "/categories", json!({"name": format!("C{n:02}")})).await;
    }
    let first = expect(&app, Method::GET, "/categories", None, &t, StatusCode::OK).await;
    assert_eq!(first["data"].as_array().expect("data").len(), 20);
    assert_eq!(
        (
            first["page"].clone(),
            first["limit"].clone(),
            first["total"].clone()
        ),
        (json!(1), json!(20), json!(25))
    );
    let second = expect(
        &app,
        Method::GET,
        "/categories?page=2&limit=10",
        None,
        &t,
        StatusCode::OK,
    )
    .await;
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
    let last = expect(
        &app,
        Method::GET,
        "/categories?page=3&limit=10",
        None,
        &t,
        StatusCode::OK,
    )
    .await;
    assert_eq!(last["data"].as_array().expect("data").len(), 5);
    let beyond = expect(
        &app,
        Method::GET,
        "/categories?page=9&limit=10",
        None,
        &t,
        StatusCode::OK,
    )
    .await;
    assert_eq!(beyond["data"], json!([]));
    assert_eq!(beyond["total"], 25);
    expect(
        &app,
        Method::GET,
        "/categories?limit=100",
        None,
        &t,
        StatusCode::OK,
    )
    .await;

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
            assert_field_error(
                send(&app, Method::GET, &format!("{path}?{query}"), None, &t).await,
                field,
            )
            .await;
        }
    }
}

/// One row of each resource in organization A; B must not see or touch any of them.
#[tokio::test]
async fn organizations_never_see_or_touch_each_others_rows() {
    let app = spawn_app().await;
    let (a, _) = user(&app, "a@example.com").await;
    let (b, _) = user(&app, "b@example.com").await;
    let category = create(&app, &a, "/categories", json!({"name": "A cat"})).await;
    let tax = create(
        &app,
        &a,
        "/tax-rates",
        json!({"name": "A tax", "rateBps": 1}),
    )
    .await;
    let warehouse = create(
        &app,
        &a,
        "/warehouses",
        json!({"name": "A wh", "code": "A"}),
    )
    .await;
    let contact = create(
        &app,
        &a,
        "/contacts",
        json!({"type": "vendor", "name": "A vendor"}),
    )
    .await;
    let item = create(
        &app,
        &a,
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
        assert_problem(
            send(&app, Method::GET, &path, None, &b).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        assert_problem(
            send(&app, Method::PUT, &path, Some(body.clone()), &b).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        assert_problem(
            send(&app, Method::PATCH, &path, Some(json!({"name": "B"})), &b).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        assert_problem(
            send(&app, Method::DELETE, &path, None, &b).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        let theirs = expect(&app, Method::GET, base, None, &b, StatusCode::OK).await;
        assert_eq!(
            (theirs["data"].clone(), theirs["total"].clone()),
            (json!([]), json!(0)),
            "{base}"
        );
        // Untouched for its owner.
        assert_eq!(
            &expect(&app, Method::GET, &path, None, &a, StatusCode::OK).await,
            row
        );
        let mine = expect(&app, Method::GET, base, None, &a, StatusCode::OK).await;
        assert_eq!(mine["total"], 1);

        // Ids that are not UUIDs cannot name anything: 404 too.
        for bad in ["not-a-uuid", "1", "%20"] {
            let path = format!("{base}/{bad}");
            assert_problem(
                send(&app, Method::GET, &path, None, &a).await,
                StatusCode::NOT_FOUND,
            )
            .await;
            assert_problem(
                send(&app, Method::PUT, &path, Some(body.clone()), &a).await,
                StatusCode::NOT_FOUND,
            )
            .await;
            assert_problem(
                send(&app, Method::PATCH, &path, Some(json!({})), &a).await,
                StatusCode::NOT_FOUND,
            )
            .await;
            assert_problem(
                send(&app, Method::DELETE, &path, None, &a).await,
                StatusCode::NOT_FOUND,
            )
            .await;
        }
        // No token: 401.
        assert_problem(app.get(base, None).await, StatusCode::UNAUTHORIZED).await;
        assert_problem(
            app.post(base, body.clone(), None).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        assert_problem(app.get(&path, None).await, StatusCode::UNAUTHORIZED).await;
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
    let category = create(&app, &t, "/categories", json!({"name": "Cat"})).await;
    let tax = create(&app, &t, "/tax-rates", json!({"name": "Tax", "rateBps": 5})).await;
    let warehouse = create(&app, &t, "/warehouses", json!({"name": "Wh", "code": "W"})).await;
    let contact = create(
        &app,
        &t,
        "/contacts",
        json!({"type": "vendor", "name": "V"}),
    )
    .await;
    let item = create(
        &app,
        &t,
        "/items",
        json!({"name": "I", "sku": "S", "priceCents": 1}),
    )
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
            assert_problem(
                send(&app, method.clone(), target, Some(json!([1])), &t).await,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
            if method != Method::PATCH {
                // Missing required fields are named.
                let problem = assert_problem(
                    send(&app, method.clone(), target, Some(json!({})), &t).await,
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await;
                assert!(problem["errors"].is_object(), "{problem}");
            }
            for (body, field) in &bodies {
                assert_field_error(
                    send(&app, method.clone(), target, Some(body.clone()), &t).await,
                    field,
                )
                .await;
            }
        }
        assert_eq!(
            rows_in(&app, table).await,
            before,
            "{base}: nothing created"
        );
        assert_eq!(
            &expect(&app, Method::GET, &path, None, &t, StatusCode::OK).await,
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
    let (b, _) = user(&app, "refb@example.com").await;
    let their_category = create(&app, &b, "/categories", json!({"name": "B cat"})).await;
    let their_tax = create(
        &app,
        &b,
        "/tax-rates",
        json!({"name": "B tax", "rateBps": 1}),
    )
    .await;
    let my_category = create(&app, &a, "/categories", json!({"name": "A cat"})).await;
    let my_item = create(
        &app,
        &a,
        "/items",
        json!({"name": "A", "sku": "A", "priceCents": 1}),
    )
    .await;

    assert_field_error(
        send(
            &app,
            Method::POST,
            "/categories",
            Some(json!({"name": "x", "parentId": id(&their_category)})),
            &a,
        )
        .await,
        "parentId",
    )
    .await;
    let my_category_path = format!("/categories/{}", id(&my_category));
    assert_field_error(
        send(
            &app,
            Method::PATCH,
            &my_category_path,
            Some(json!({"parentId": id(&their_category)})),
            &a,
        )
        .await,
        "parentId",
    )
    .await;
    assert_field_error(
        send(
            &app,
            Method::PUT,
            &my_category_path,
            Some(json!({"name": "x", "parentId": id(&their_category)})),
            &a,
        )
        .await,
        "parentId",
    )
    .await;
    let item_path = format!("/items/{}", id(&my_item));
    for (field, other) in [
        ("categoryId", id(&their_category)),
        ("taxRateId", id(&their_tax)),
    ] {
        let mut body = json!({"name": "x", "sku": "X", "priceCents": 1});
        body[field] = json!(other);
        assert_field_error(
            send(&app, Method::POST, "/items", Some(body.clone()), &a).await,
            field,
        )
        .await;
        assert_field_error(
            send(&app, Method::PUT, &item_path, Some(body), &a).await,
            field,
        )
        .await;
        assert_field_error(
            send(
                &app,
                Method::PATCH,
                &item_path,
                Some(json!({field: other})),
                &a,
            )
            .await,
            field,
        )
        .await;
    }
    assert_eq!(rows_in(&app, "items").await, 1);
    assert_eq!(rows_in(&app, "categories").await, 2);
    assert_eq!(
        expect(
            &app,
            Method::GET,
            &my_category_path,
            None,
            &a,
            StatusCode::OK
        )
        .await,
        my_category
    );
    assert_eq!(
        expect(&app, Method::GET, &item_path, None, &a, StatusCode::OK).await,
        my_item
    );
}
