//! `ims-api seed`: a realistic demo organization of configurable size.
//!
//! The whole history is simulated in memory first (`Plan::generate`, a pure function of the
//! options, the RNG seed and "now"), then written in one transaction with multi-row
//! `INSERT … VALUES (…), (…)` statements. Simulating first is what makes the data consistent
//! by construction: stock is tracked per (item, warehouse) as events happen in time order, so
//! a sale only takes what is there and restocking goes through purchase orders, exactly as the
//! API would have recorded it. Writing in one transaction makes a seed all-or-nothing.
//!
//! The same seed gives the same catalog, orders and amounts; ids are random on every run (an
//! organization id names its cache, session and limit keys, so two databases seeded alike and
//! sharing a Redis must not share it); dates are relative to the moment of the run, so
//! dashboards always show a recent history.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::fmt;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sqlx::AnyConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::Settings;
use crate::db::{self, Backend, Db};
use crate::money;

mod simulate;
mod words;
mod write;

/// The RNG seed used when `--seed` is not given, so two plain runs produce the same data.
pub const DEFAULT_SEED: u64 = 20_261_124;

/// Options of `ims-api seed`.
#[derive(Debug, Clone, Args)]
pub struct SeedOptions {
    /// Items in the catalog.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub items: u32,
    /// Sales orders over the history.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub orders: u32,
    /// Customers (contacts of type customer).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub customers: u32,
    /// Vendors (contacts of type vendor).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub vendors: u32,
    /// Warehouses.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub warehouses: u32,
    /// Length of the history in days, ending now.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// Email of the organization's admin user; must not be registered yet.
    #[arg(long, default_value = "demo@ims.example", value_parser = parse_email)]
    pub email: String,
    /// Password of the admin user (at least 8 characters, as registration requires).
    #[arg(long, default_value = "demo-password", value_parser = parse_password)]
    pub password: String,
    /// RNG seed: the same seed gives the same data (apart from dates, which end now).
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
}

/// Lower-cases and checks the email the way registration does, so the printed login works.
fn parse_email(raw: &str) -> Result<String, String> {
    let email = raw.trim().to_lowercase();
    let ok = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.contains(char::is_whitespace)
        }
        None => false,
    };
    if ok && email.len() <= 254 {
        Ok(email)
    } else {
        Err(format!("{raw:?} is not a valid email address"))
    }
}

fn parse_password(raw: &str) -> Result<String, String> {
    if raw.chars().count() < 8 {
        Err("must be at least 8 characters".into())
    } else if raw.len() > 1024 {
        Err("must be at most 1024 bytes".into())
    } else {
        Ok(raw.to_string())
    }
}

/// Why a seed failed. The binary prints it on one line and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The admin email is already registered (in any organization).
    #[error("a user with email {0} already exists; pass --email to seed another organization")]
    EmailTaken(String),
    /// `DATABASE_URL` cannot be opened.
    #[error("cannot open the database (DATABASE_URL): {0}")]
    Connect(sqlx::Error),
    /// The migrations failed.
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A statement failed; nothing of the seed was committed.
    #[error("database error (nothing was written): {0}")]
    Database(#[from] sqlx::Error),
    /// Anything else (hashing the password).
    #[error("{0}")]
    Other(String),
}

/// What a seed created, as printed at the end.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub organization_id: String,
    pub organization_name: String,
    pub email: String,
    pub password: String,
    pub categories: usize,
    pub tax_rates: usize,
    pub warehouses: usize,
    pub items: usize,
    pub customers: usize,
    pub vendors: usize,
    pub sales_orders: usize,
    pub fulfilled: usize,
    pub open: usize,
    pub cancelled: usize,
    pub sales_lines: usize,
    pub purchase_orders: usize,
    pub purchase_orders_open: usize,
    pub purchase_lines: usize,
    pub invoices: usize,
    pub payments: usize,
    pub adjustments: usize,
    pub movements: usize,
    pub stock_levels: usize,
    /// `http://host:port` the login example points at (from `IMS_BIND`).
    pub base_url: String,
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Seeded organization \"{}\" (id {}) in {:.1} s:",
            self.organization_name,
            self.organization_id,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "  {} items in {} categories, {} tax rates, {} warehouses, {} customers, {} vendors",
            self.items,
            self.categories,
            self.tax_rates,
            self.warehouses,
            self.customers,
            self.vendors
        )?;
        writeln!(
            f,
            "  {} sales orders ({} fulfilled, {} open, {} cancelled; {} lines)",
            self.sales_orders, self.fulfilled, self.open, self.cancelled, self.sales_lines
        )?;
        writeln!(
            f,
            "  {} purchase orders ({} still open; {} lines)",
            self.purchase_orders, self.purchase_orders_open, self.purchase_lines
        )?;
        writeln!(
            f,
            "  {} invoices, {} payments, {} stock adjustments, {} stock movements, {} stock levels",
            self.invoices, self.payments, self.adjustments, self.movements, self.stock_levels
        )?;
        writeln!(f)?;
        writeln!(f, "Log in with: {} / {}", self.email, self.password)?;
        let body = serde_json::json!({"email": self.email, "password": self.password}).to_string();
        write!(
            f,
            "  curl -s -X POST {}/auth/login -H 'Content-Type: application/json' -d {}",
            self.base_url,
            shell_quote(&body)
        )
    }
}

/// `s` in single quotes for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `ims-api seed` command: connects, migrates, seeds and prints the summary on stdout.
pub async fn run(settings: &Settings, options: &SeedOptions) -> Result<(), SeedError> {
    let db = Db::connect(&settings.database_url)
        .await
        .map_err(SeedError::Connect)?;
    db.migrate().await?;
    let mut summary = seed(&db, options).await?;
    let host = if settings.bind.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        settings.bind.ip().to_string()
    };
    let host = if settings.bind.is_ipv6() && !settings.bind.ip().is_unspecified() {
        format!("[{host}]")
    } else {
        host
    };
    summary.base_url = format!("http://{host}:{}", settings.bind.port());
    println!("{summary}");
    db.close().await;
    Ok(())
}

/// Seeds one organization into `db` (already migrated); progress goes to stderr.
pub async fn seed(db: &Db, options: &SeedOptions) -> Result<Summary, SeedError> {
    let started = Instant::now();
    let progress = Progress::new();
    let email = parse_email(&options.email).map_err(SeedError::Other)?;
    // Fail fast, before minutes of work; checked again inside the transaction.
    if email_taken(db.pool(), &email).await? {
        return Err(SeedError::EmailTaken(email));
    }

    let spinner = progress.spinner("hashing password");
    let password_hash = crate::auth::tokens::hash_password(options.password.clone())
        .await
        .map_err(|e| SeedError::Other(format!("cannot hash the password: {e}")))?;
    spinner.finish();

    let spinner = progress.spinner("simulating history");
    let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let plan = Plan::generate(options, now as i64);
    spinner.finish();

    let mut tx = db.begin_write().await?;
    if email_taken(&mut *tx, &email).await? {
        return Err(SeedError::EmailTaken(email));
    }
    let inserted = write::write(
        &mut tx,
        db.backend(),
        &plan,
        &email,
        &password_hash,
        &progress,
    )
    .await;
    match inserted {
        // Another process registered the same email between the check and the insert.
        Err(e) if db::is_unique_violation(&e) && email_taken(db.pool(), &email).await? => {
            return Err(SeedError::EmailTaken(email))
        }
        other => other?,
    }
    let spinner = progress.spinner("committing");
    tx.commit().await?;
    spinner.finish();
    // A bulk load leaves the planner's statistics describing empty tables; PostgreSQL then
    // picks nested loops that take minutes on the aggregates until autovacuum catches up.
    // ANALYZE exists on both engines.
    let spinner = progress.spinner("analyzing");
    sqlx::query("ANALYZE").execute(db.pool()).await?;
    spinner.finish();

    let mut summary = plan.summary();
    summary.email = email;
    summary.password = options.password.clone();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

async fn email_taken<'c>(
    conn: impl sqlx::Executor<'c, Database = sqlx::Any>,
    email: &str,
) -> Result<bool, sqlx::Error> {
    let found: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(conn)
        .await?;
    Ok(found.is_some())
}

// ---------------------------------------------------------------------------------------
// Progress on stderr: bars on a terminal, one line per stage otherwise (CI logs, pipes).

struct Progress {
    tty: bool,
}

struct Stage {
    bar: ProgressBar,
    label: String,
    /// Rows the stage writes, for the plain-text line (a hidden bar keeps no length).
    rows: Option<usize>,
    tty: bool,
    started: Instant,
}

impl Progress {
    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn bar(&self, label: &str, len: usize) -> Stage {
        let bar = if self.tty {
            let bar = ProgressBar::new(len as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>22} [{bar:30}] {human_pos:>9}/{human_len:<9} {elapsed}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            bar
        } else {
            ProgressBar::hidden()
        };
        self.stage(bar, label, Some(len))
    }

    fn spinner(&self, label: &str) -> Stage {
        let bar = if self.tty {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{prefix:>22} {spinner} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(label.to_string());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        } else {
            ProgressBar::hidden()
        };
        self.stage(bar, label, None)
    }

    fn stage(&self, bar: ProgressBar, label: &str, rows: Option<usize>) -> Stage {
        Stage {
            bar,
            label: label.to_string(),
            rows,
            tty: self.tty,
            started: Instant::now(),
        }
    }
}

impl Stage {
    fn inc(&self, n: usize) {
        self.bar.inc(n as u64);
    }

    fn finish(self) {
        if self.tty {
            self.bar.finish();
        } else {
            let rows = self.rows.map(|n| format!(": {n} rows")).unwrap_or_default();
            eprintln!(
                "seed: {}{rows} ({:.1} s)",
                self.label,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The plan: everything the seed writes, generated in memory.

/// Unix time in milliseconds.
type Ms = i64;

const MINUTE: Ms = 60_000;
const HOUR: Ms = 60 * MINUTE;
const DAY: Ms = 24 * HOUR;

/// Lines per sales order and their relative frequency.
const LINE_COUNTS: &[(usize, u32)] = &[(1, 35), (2, 25), (3, 15), (4, 10), (5, 7), (6, 5), (7, 3)];
/// Quantity per sales line and its relative frequency.
const QUANTITIES: &[(i64, u32)] = &[
    (1, 40),
    (2, 25),
    (3, 12),
    (4, 6),
    (5, 5),
    (6, 3),
    (8, 3),
    (10, 3),
    (12, 2),
    (20, 1),
];
/// Most lines on one purchase order (the API allows 500).
const MAX_PURCHASE_LINES: usize = 40;

struct Category {
    id: Uuid,
    name: String,
    parent: Option<usize>,
}

struct TaxRate {
    id: Uuid,
    name: &'static str,
    bps: i64,
}

struct Warehouse {
    id: Uuid,
    name: String,
    code: String,
}

struct Contact {
    id: Uuid,
    name: String,
    email: Option<String>,
    phone: Option<String>,
    address: Option<String>,
}

struct Item {
    id: Uuid,
    name: String,
    sku: String,
    description: Option<String>,
    price_cents: i64,
    cost_cents: i64,
    category: usize,
    tax_rate: usize,
    reorder_level: i64,
    unit: &'static str,
    vendor: usize,
}

struct PurchaseLine {
    id: Uuid,
    item: usize,
    quantity: i64,
    unit_cost_cents: i64,
}

struct PurchaseOrder {
    id: Uuid,
    vendor: usize,
    warehouse: usize,
    notes: Option<&'static str>,
    created: Ms,
    /// `None`: still open (due after the end of the history).
    received: Option<Ms>,
    lines: Vec<PurchaseLine>,
}

impl PurchaseOrder {
    fn total_cents(&self) -> i64 {
        self.lines
            .iter()
            .map(|l| l.quantity * l.unit_cost_cents)
            .sum()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Status {
    Open,
    Fulfilled,
    Cancelled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Fulfilled => "fulfilled",
            Self::Cancelled => "cancelled",
        }
    }
}

struct SalesLine {
    id: Uuid,
    item: usize,
    quantity: i64,
    unit_price_cents: i64,
    tax_rate_bps: i64,
}

impl SalesLine {
    fn subtotal(&self) -> i64 {
        self.quantity * self.unit_price_cents
    }

    fn tax(&self) -> i64 {
        // The seed's prices and quantities are small; the bound is never reached.
        i64::try_from(money::tax(self.subtotal(), self.tax_rate_bps)).unwrap_or(i64::MAX)
    }
}

struct SalesOrder {
    id: Uuid,
    customer: usize,
    warehouse: usize,
    status: Status,
    notes: Option<&'static str>,
    created: Ms,
    fulfilled: Option<Ms>,
    updated: Ms,
    lines: Vec<SalesLine>,
}

impl SalesOrder {
    /// (subtotal, tax, total): sums of the lines, as the API computes them.
    fn totals(&self) -> (i64, i64, i64) {
        let subtotal: i64 = self.lines.iter().map(SalesLine::subtotal).sum();
        let tax: i64 = self.lines.iter().map(SalesLine::tax).sum();
        (subtotal, tax, subtotal + tax)
    }
}

struct Invoice {
    id: Uuid,
    order: usize,
    issued: Ms,
    paid_cents: i64,
    updated: Ms,
}

struct Payment {
    id: Uuid,
    invoice: usize,
    amount_cents: i64,
    at: Ms,
}

struct Adjustment {
    id: Uuid,
    item: usize,
    warehouse: usize,
    delta: i64,
    reason: &'static str,
    at: Ms,
}

struct Movement {
    id: Uuid,
    item: usize,
    warehouse: usize,
    delta: i64,
    source: &'static str,
    source_id: Uuid,
    reason: Option<&'static str>,
    at: Ms,
}

/// Everything one seed writes.
struct Plan {
    org_id: Uuid,
    org_name: String,
    user_id: Uuid,
    /// Start of the history; the organization and its catalog date from here.
    start: Ms,
    categories: Vec<Category>,
    tax_rates: Vec<TaxRate>,
    warehouses: Vec<Warehouse>,
    customers: Vec<Contact>,
    vendors: Vec<Contact>,
    items: Vec<Item>,
    purchases: Vec<PurchaseOrder>,
    sales: Vec<SalesOrder>,
    /// Sorted by issue time: the position is the sequence number minus one.
    invoices: Vec<Invoice>,
    payments: Vec<Payment>,
    adjustments: Vec<Adjustment>,
    movements: Vec<Movement>,
    /// Final quantity per `item * warehouses + warehouse`, and when it last changed
    /// (`None`: never stocked there, so no stock_levels row).
    levels: Vec<(i64, Option<Ms>)>,
}

/// Samples indices in proportion to their weights.
struct Weighted {
    cumulative: Vec<f64>,
}

impl Weighted {
    fn new(weights: impl IntoIterator<Item = f64>) -> Self {
        let mut total = 0.0;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                total += w;
                total
            })
            .collect();
        Self { cumulative }
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = rng.gen::<f64>() * total;
        self.cumulative
            .partition_point(|&c| c <= x)
            .min(self.cumulative.len().saturating_sub(1))
    }
}

fn pick<T: Copy>(choices: &[(T, u32)], rng: &mut StdRng) -> T {
    let total: u32 = choices.iter().map(|(_, w)| w).sum();
    let mut x = rng.gen_range(0..total.max(1));
    for &(value, weight) in choices {
        if x < weight {
            return value;
        }
        x -= weight;
    }
    choices[0].0
}

/// The weighted mean of `choices`, with `value` turning each into a number.
fn mean<T: Copy>(choices: &[(T, u32)], value: impl Fn(T) -> f64) -> f64 {
    let total: f64 = choices.iter().map(|&(_, w)| f64::from(w)).sum();
    choices
        .iter()
        .map(|&(v, w)| value(v) * f64::from(w))
        .sum::<f64>()
        / total
}

/// Ids come from their own RNG, seeded afresh on every run, while the data RNG, and so the
/// data, depends on the seed alone.
struct Ids(StdRng);

impl Ids {
    fn next(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(self.0.gen()).into_uuid()
    }
}

#[cfg(test)]
mod tests {
    use super::write::values_sql;
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        options: SeedOptions,
    }

    fn options(args: &[&str]) -> SeedOptions {
        Cli::parse_from(std::iter::once("seed").chain(args.iter().copied())).options
    }

    const NOW: Ms = 1_795_000_000_000;

    #[test]
    fn the_simulation_never_takes_stock_that_is_not_there() {
        let plan = Plan::generate(
            &options(&["--items", "200", "--orders", "3000", "--warehouses", "4"]),
            NOW,
        );
        // Replaying the ledger in time order (receipts first within a millisecond) never
        // goes below zero and ends at the levels.
        let mut moves: Vec<&Movement> = plan.movements.iter().collect();
        moves.sort_by_key(|m| (m.item, m.warehouse, m.at, Reverse(m.delta)));
        let mut running = vec![0i64; plan.levels.len()];
        for m in moves {
            let slot = m.item * plan.warehouses.len() + m.warehouse;
            running[slot] += m.delta;
            assert!(running[slot] >= 0);
        }
        for (slot, &(quantity, _)) in plan.levels.iter().enumerate() {
            assert_eq!(running[slot], quantity);
        }
        let fulfilled = plan
            .sales
            .iter()
            .filter(|o| o.status == Status::Fulfilled)
            .count();
        assert!(fulfilled > 2500, "{fulfilled}");
        // Rush orders stay the exception.
        let rush = plan
            .purchases
            .iter()
            .filter(|p| p.notes == Some("Rush order"))
            .count();
        assert!(
            rush * 5 < plan.purchases.len(),
            "{rush} of {}",
            plan.purchases.len()
        );
        assert!(plan
            .movements
            .iter()
            .all(|m| m.at >= plan.start && m.at <= NOW));
    }

    #[test]
    fn the_same_seed_gives_the_same_orders() {
        let a = Plan::generate(&options(&["--orders", "300"]), NOW);
        let b = Plan::generate(&options(&["--orders", "300"]), NOW + DAY / 3);
        let lines = |p: &Plan| -> Vec<(usize, i64, i64)> {
            p.sales
                .iter()
                .flat_map(|o| {
                    o.lines
                        .iter()
                        .map(|l| (l.item, l.quantity, l.unit_price_cents))
                })
                .collect()
        };
        assert_eq!(lines(&a), lines(&b));
        // The ids are new each run: two databases seeded alike may share a Redis.
        assert_ne!(a.org_id, b.org_id);
        let c = Plan::generate(&options(&["--orders", "300", "--seed", "7"]), NOW);
        assert_ne!(lines(&a), lines(&c));
    }

    #[test]
    fn sqlite_statements_use_anonymous_placeholders() {
        assert_eq!(
            values_sql(Backend::Sqlite, "t", &["a", "b"], 2),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)"
        );
        assert_eq!(
            values_sql(Backend::Postgres, "t", &["a", "b"], 2),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
        );
    }

    #[test]
    fn the_login_example_is_quoted_for_the_shell() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
