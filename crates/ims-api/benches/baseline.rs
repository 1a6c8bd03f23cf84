//! Uncached response times of every dashboard and report route on the seeded demo data,
//! on SQLite and (when IMS_BENCH_POSTGRES_URL names a server, e.g.
//! postgres://postgres@127.0.0.1:5432/test) on a fresh PostgreSQL database:
//! `cargo bench -p ims-api --bench baseline`. Sizes: IMS_BENCH_ITEMS (default 10000),
//! IMS_BENCH_ORDERS (default 100000). Each route runs 7 times with
//! `Cache-Control: no-cache`, so the handler always runs; the median is reported.

mod support;

use support::{application, base_url, seed};

use std::time::{Duration, Instant};

const ROUTES: [&str; 10] = [
    "/dashboard/kpis",
    "/dashboard/sales-chart",
    "/dashboard/top-customers",
    "/dashboard/top-products",
    "/dashboard/inventory-status",
    "/reports/sales-by-item",
    "/reports/sales-by-customer",
    "/reports/inventory-valuation",
    "/reports/stock-movements",
    "/reports/purchases-by-vendor",
];

async fn measure(label: &str, database_url: &str) -> Vec<Duration> {
    seed(label, database_url);
    let app = application(vec![
        ("DATABASE_URL", database_url.to_string()),
        ("REDIS_ENABLED", "false".into()),
        ("RATE_LIMIT_ENABLED", "false".into()),
    ])
    .await;
    let base = base_url(&app);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let login = support::demo_login(&client, &base).await;
    let token = login["accessToken"].as_str().expect("token").to_string();
    let mut medians = Vec::new();
    for route in ROUTES {
        let mut samples = Vec::new();
        for _ in 0..7 {
            let t = Instant::now();
            let request = client
                .get(format!("{base}{route}"))
                .bearer_auth(&token)
                .header("cache-control", "no-cache");
            support::success(request).await.bytes().await.expect("body");
            samples.push(t.elapsed());
        }
        samples.sort();
        medians.push(samples[3]);
    }
    let _ = stop.send(());
    let _ = server.await;
    medians
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("baseline.db").display()
    );
    let mut columns = vec![("SQLite", measure("SQLite", &sqlite).await)];
    if let Ok(admin) = std::env::var("IMS_BENCH_POSTGRES_URL") {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let name = format!("ims_bench_{}", std::process::id());
        let mut conn = sqlx::AnyConnection::connect(&admin)
            .await
            .expect("postgres");
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut conn)
            .await
            .expect("drop");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create");
        let base = admin
            .rsplit_once('/')
            .map(|(server, _)| server)
            .unwrap_or(&admin);
        columns.push((
            "PostgreSQL",
            measure("PostgreSQL", &format!("{base}/{name}")).await,
        ));
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .expect("drop");
    }
    print!("\n{:<32}", "route (median of 7, uncached)");
    for (label, _) in &columns {
        print!("{label:>14}");
    }
    println!();
    for (i, route) in ROUTES.iter().enumerate() {
        print!("{route:<32}");
        for (_, medians) in &columns {
            print!("{:>14.1?}", medians[i]);
        }
        println!();
    }
}
