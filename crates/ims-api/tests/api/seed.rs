//! `ims-api seed` as an operator runs it: the real binary on a fresh database, then the server
//! on that database, then the data's invariants checked in SQL.

use std::process::{Command, Output};

use ims_api::config::Settings;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::AnyPool;

use crate::helpers::{client, fresh_database, start};

fn run_seed(database_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ims-api"))
        // Nothing from the developer's environment or a .env file may leak in.
        .env_clear()
        .current_dir(std::env::temp_dir())
        .env("DATABASE_URL", database_url)
        .arg("seed")
        .args(args)
        .output()
        .expect("run ims-api seed")
}

async fn scalar(pool: &AnyPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test]
async fn seed_creates_a_consistent_organization_that_can_log_in() {
    let (url, _db) = fresh_database().await;
    let email = "owner@seed.example";
    let password = "seeded-password";
    let output = run_seed(
        &url,
        &[
            "--items",
            "30",
            "--orders",
            "200",
            "--customers",
            "12",
            "--vendors",
            "4",
            "--days",
            "90",
            "--email",
            email,
            "--password",
            password,
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("Log in with: {email} / {password}")),
        "{stdout}"
    );
    assert!(stdout.contains("curl -s -X POST"), "{stdout}");
    assert!(stdout.contains("30 items"), "{stdout}");
    assert!(stdout.contains("200 sales orders"), "{stdout}");

    // The server on the same database: the printed login works and the items are there.
    let env = [
        ("DATABASE_URL", url.clone()),
        ("REDIS_ENABLED", "false".to_string()),
        ("IMS_BIND", "127.0.0.1:0".to_string()),
        (
            "JWT_SECRET",
            "seed-test-secret-seed-test-secret-0123".to_string(),
        ),
    ];
    let settings = Settings::from_lookup(|k| {
        env.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.clone())
    })
    .expect("settings");
    let (address, state, stop) = start(settings).await;
    let pool = state.db.pool().clone();
    let client = client();
    let response = client
        .post(format!("{address}/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), StatusCode::OK);
    let pair: Value = response.json().await.expect("token pair");
    let token = pair["accessToken"].as_str().expect("access token");
    let response = client
        .get(format!("{address}/items?limit=100"))
        .bearer_auth(token)
        .send()
        .await
        .expect("items");
    assert_eq!(response.status(), StatusCode::OK);
    let items: Value = response.json().await.expect("items page");
    assert_eq!(items["total"], 30, "{items}");
    let data = items["data"].as_array().expect("data");
    assert_eq!(data.len(), 30);
    assert!(data
        .iter()
        .all(|i| i["sku"].is_string() && i["priceCents"].as_i64() > Some(0)));
    assert!(
        data.iter().any(|i| i["stockOnHand"].as_i64() > Some(0)),
        "{items}"
    );

    // The ledger sums to the levels, in both directions, and nothing is negative.
    let mismatched = scalar(
        &pool,
        "SELECT COUNT(*) FROM stock_levels l
         WHERE l.quantity <> COALESCE((SELECT SUM(m.quantity_delta) FROM stock_movements m
                                       WHERE m.item_id = l.item_id AND m.warehouse_id = l.warehouse_id), 0)",
    )
    .await;
    assert_eq!(mismatched, 0);
    let unlevelled = scalar(
        &pool,
        "SELECT COUNT(*) FROM (SELECT item_id, warehouse_id FROM stock_movements
                               GROUP BY item_id, warehouse_id) g
         WHERE NOT EXISTS (SELECT 1 FROM stock_levels l
                           WHERE l.item_id = g.item_id AND l.warehouse_id = g.warehouse_id)",
    )
    .await;
    assert_eq!(unlevelled, 0);
    assert_eq!(
        scalar(
            &pool,
            "SELECT COUNT(*) FROM stock_levels WHERE quantity < 0"
        )
        .await,
        0
    );
    // Stock never went negative at any point: the running total in time order stays >= 0.
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT item_id, warehouse_id, created_at, quantity_delta FROM stock_movements
         ORDER BY item_id, warehouse_id, created_at, quantity_delta DESC",
    )
    .fetch_all(&pool)
    .await
    .expect("movements");
    let mut running = 0;
    let mut key = (String::new(), String::new());
    for (item, warehouse, _, delta) in &rows {
        if (item, warehouse) != (&key.0, &key.1) {
            key = (item.clone(), warehouse.clone());
            running = 0;
        }
        running += delta;
        assert!(running >= 0, "{item} in {warehouse} went negative");
    }
    assert!(
        scalar(
            &pool,
            "SELECT COUNT(*) FROM stock_movements WHERE source = 'sale'"
        )
        .await
            > 0
    );
    assert!(
        scalar(
            &pool,
            "SELECT COUNT(*) FROM stock_movements WHERE source = 'purchase'"
        )
        .await
            > 0
    );
    assert!(
        scalar(&pool, "SELECT COUNT(*) FROM stock_adjustments").await
            == scalar(
                &pool,
                "SELECT COUNT(*) FROM stock_movements WHERE source = 'adjustment'"
            )
            .await
    );

    // Orders: totals are the sums of their lines; lines are priced and taxed as the API does.
    assert_eq!(
        scalar(&pool, "SELECT COUNT(*) FROM sales_orders").await,
        200
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT COUNT(*) FROM sales_orders o
             WHERE o.subtotal_cents <> (SELECT SUM(subtotal_cents) FROM sales_order_lines l WHERE l.sales_order_id = o.id)
                OR o.tax_cents <> (SELECT SUM(tax_cents) FROM sales_order_lines l WHERE l.sales_order_id = o.id)
                OR o.total_cents <> o.subtotal_cents + o.tax_cents",
        )
        .await,
        0
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT COUNT(*) FROM sales_order_lines l JOIN items i ON i.id = l.item_id
             JOIN tax_rates t ON t.id = i.tax_rate_id
             WHERE l.unit_price_cents <> i.price_cents OR l.tax_rate_bps <> t.rate_bps
                OR l.subtotal_cents <> l.quantity * l.unit_price_cents
                OR l.tax_cents <> (l.subtotal_cents * l.tax_rate_bps + 5000) / 10000
                OR l.total_cents <> l.subtotal_cents + l.tax_cents",
        )
        .await,
        0
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT COUNT(*) FROM purchase_orders p
             WHERE p.total_cents <> (SELECT SUM(total_cents) FROM purchase_order_lines l WHERE l.purchase_order_id = p.id)",
        )
        .await,
        0
    );
    // Every fulfilled order took its stock out; open and cancelled ones did not.
    assert_eq!(
        scalar(
            &pool,
            "SELECT COUNT(*) FROM sales_orders o
             WHERE (o.status = 'fulfilled') <> EXISTS (SELECT 1 FROM stock_movements m WHERE m.source_id = o.id)",
        )
        .await,
        0
    );
    // Every received purchase order put its stock in.
    assert_eq!(
        scalar(
            &pool,
            "SELECT COUNT(*) FROM purchase_orders p
             WHERE (p.status = 'received') <> EXISTS (SELECT 1 FROM stock_movements m WHERE m.source_id = p.id)",
        )
        .await,
        0
    );
    assert!(
        scalar(
            &pool,
            "SELECT COUNT(*) FROM sales_orders WHERE status = 'fulfilled'"
        )
        .await
            > 100
    );

    // Timestamps: stored format, and in order.
    let stamps: Vec<String> = sqlx::query_scalar(
        "SELECT created_at FROM sales_orders UNION ALL SELECT created_at FROM stock_movements
         UNION ALL SELECT issued_at FROM invoices UNION ALL SELECT paid_at FROM payments",
    )
    .fetch_all(&pool)
    .await
    .expect("timestamps");
    for stamp in &stamps {
        assert_eq!(stamp.len(), 24, "{stamp}");
        let parsed =
            time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
                .expect("RFC 3339");
        assert_eq!(ims_api::db::timestamp(parsed), *stamp);
    }
    for (check, sql) in [
        ("fulfilled", "SELECT COUNT(*) FROM sales_orders WHERE fulfilled_at < created_at OR updated_at < created_at OR (status = 'fulfilled') <> (fulfilled_at IS NOT NULL)"),
        ("received", "SELECT COUNT(*) FROM purchase_orders WHERE received_at < created_at OR (status = 'received') <> (received_at IS NOT NULL)"),
        ("issued", "SELECT COUNT(*) FROM invoices i JOIN sales_orders o ON o.id = i.sales_order_id WHERE i.issued_at < o.fulfilled_at OR o.status <> 'fulfilled'"),
        ("paid", "SELECT COUNT(*) FROM payments p JOIN invoices i ON i.id = p.invoice_id WHERE p.paid_at < i.issued_at"),
        ("sold", "SELECT COUNT(*) FROM stock_movements m JOIN sales_orders o ON o.id = m.source_id WHERE m.created_at <> o.fulfilled_at"),
    ] {
        assert_eq!(scalar(&pool, sql).await, 0, "{check}");
    }

    // Invoices: numbered 1..n without gaps, counter at n, paid amounts match payments.
    let numbers: Vec<(String, i64)> =
        sqlx::query_as("SELECT number, sequence FROM invoices ORDER BY sequence")
            .fetch_all(&pool)
            .await
            .expect("invoices");
    assert!(!numbers.is_empty());
    for (n, (number, sequence)) in numbers.iter().enumerate() {
        assert_eq!(*sequence, n as i64 + 1);
        assert_eq!(*number, format!("INV-{:06}", n + 1));
    }
    assert_eq!(
        scalar(&pool, "SELECT last_number FROM invoice_counters").await,
        numbers.len() as i64
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT COUNT(*) FROM invoices i JOIN sales_orders o ON o.id = i.sales_order_id
             WHERE i.total_cents <> o.total_cents
                OR i.paid_cents <> COALESCE((SELECT SUM(amount_cents) FROM payments p WHERE p.invoice_id = i.id), 0)
                OR i.paid_cents > i.total_cents
                OR i.status <> CASE WHEN i.paid_cents = 0 THEN 'unpaid'
                                    WHEN i.paid_cents < i.total_cents THEN 'partially_paid'
                                    ELSE 'paid' END",
        )
        .await,
        0
    );
    assert!(scalar(&pool, "SELECT COUNT(*) FROM invoices WHERE status = 'paid'").await > 0);
    assert!(
        scalar(
            &pool,
            "SELECT COUNT(*) FROM categories WHERE parent_id IS NOT NULL"
        )
        .await
            > 0
    );
    assert_eq!(scalar(&pool, "SELECT COUNT(*) FROM tax_rates").await, 3);

    // The next invoice the API issues continues the sequence.
    let open_order: Option<String> = sqlx::query_scalar(
        "SELECT o.id FROM sales_orders o WHERE o.status = 'fulfilled'
         AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.sales_order_id = o.id) LIMIT 1",
    )
    .fetch_optional(&pool)
    .await
    .expect("uninvoiced order");
    if let Some(order_id) = open_order {
        let response = client
            .post(format!("{address}/invoices"))
            .bearer_auth(token)
            .json(&json!({"salesOrderId": order_id}))
            .send()
            .await
            .expect("invoice");
        assert_eq!(response.status(), StatusCode::CREATED);
        let invoice: Value = response.json().await.expect("invoice body");
        assert_eq!(invoice["number"], format!("INV-{:06}", numbers.len() + 1));
    }

    // A second run with the same email changes nothing and says why.
    let again = run_seed(&url, &["--items", "5", "--orders", "5", "--email", email]);
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(email) && stderr.contains("--email"),
        "{stderr}"
    );
    assert_eq!(scalar(&pool, "SELECT COUNT(*) FROM organizations").await, 1);
    let _ = stop.send(());
}

#[tokio::test]
async fn the_same_seed_gives_the_same_data_and_a_second_organization_fits_beside_it() {
    let (url, _db) = fresh_database().await;
    let args = |email: &'static str| {
        vec![
            "--items",
            "10",
            "--orders",
            "40",
            "--customers",
            "5",
            "--vendors",
            "2",
            "--warehouses",
            "2",
            "--days",
            "30",
            "--email",
            email,
        ]
    };
    for email in ["first@seed.example", "second@seed.example"] {
        let output = run_seed(&url, &args(email));
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("connect");
    // Same seed: the same catalog and amounts in both organizations, under different ids.
    let per_org: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT o.organization_id, COUNT(*), CAST(SUM(o.total_cents) AS BIGINT) FROM sales_orders o
         GROUP BY o.organization_id",
    )
    .fetch_all(&pool)
    .await
    .expect("per org");
    assert_eq!(per_org.len(), 2);
    assert_eq!(per_org[0].1, 40);
    assert_eq!((per_org[0].1, per_org[0].2), (per_org[1].1, per_org[1].2));
    let skus: Vec<(String, i64)> = sqlx::query_as(
        "SELECT name || '/' || sku, COUNT(DISTINCT organization_id) FROM items GROUP BY name || '/' || sku",
    )
    .fetch_all(&pool)
    .await
    .expect("skus");
    assert_eq!(skus.len(), 10);
    assert!(skus.iter().all(|(_, orgs)| *orgs == 2));
    pool.close().await;
}

#[test]
fn bad_options_are_refused_before_touching_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ims.db").display());
    for args in [
        &["--items", "0"][..],
        &["--email", "not-an-email"],
        &["--password", "short"],
        &["--warehouses", "x"],
    ] {
        let output = run_seed(&url, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
    assert!(!dir.path().join("ims.db").exists());
}
