//! `ims-api seed`: a realistic demo organization of configurable size.
//!
//! The whole history is simulated in memory first ([`Plan::generate`], a pure function of the
//! options, the RNG seed and "now"), then written in one transaction with multi-row
//! `INSERT … VALUES (…), (…)` statements. Simulating first is what makes the data consistent
//! by construction: stock is tracked per (item, warehouse) as events happen in time order, so
//! a sale only takes what is there and restocking goes through purchase orders, exactly as the
//! API would have recorded it. Writing in one transaction makes a seed all-or-nothing.
//!
//! The same seed gives the same catalog, orders and amounts (ids also depend on the email, so
//! two demo organizations can live in one database); dates are relative to the moment of the
//! run, so dashboards always show a recent history.

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
    let plan = Plan::generate(options, &email, now as i64);
    spinner.finish();

    let mut tx = db.begin_write().await?;
    if email_taken(&mut *tx, &email).await? {
        return Err(SeedError::EmailTaken(email));
    }
    let inserted = write(
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
        Stage {
            bar,
            label: label.to_string(),
            rows: Some(len),
            tty: self.tty,
            started: Instant::now(),
        }
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
        Stage {
            bar,
            label: label.to_string(),
            rows: None,
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
// Writing: multi-row inserts in chunks.

/// One bound value.
enum Val {
    Text(String),
    OptText(Option<String>),
    Int(i64),
}

/// Bound parameters per statement: under PostgreSQL's 65,535 and SQLite's 32,766.
const MAX_PARAMS: usize = 30_000;

/// `INSERT INTO table (columns) VALUES (…), …` for `rows` rows. SQLite gets anonymous `?`
/// placeholders: for `$N` ones it looks each parameter's name up in a linear list when binding,
/// which makes a 30,000-parameter statement quadratic (over a second per statement).
/// PostgreSQL only knows `$N`.
fn values_sql(backend: Backend, table: &str, columns: &[&str], rows: usize) -> String {
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..columns.len() {
            if c > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    n += 1;
                    sql.push('$');
                    sql.push_str(&n.to_string());
                }
            }
        }
        sql.push(')');
    }
    sql
}

async fn execute(conn: &mut AnyConnection, sql: &str, values: Vec<Val>) -> Result<(), sqlx::Error> {
    let mut query = sqlx::query(sql);
    for value in values {
        query = match value {
            Val::Text(s) => query.bind(s),
            Val::OptText(s) => query.bind(s),
            Val::Int(i) => query.bind(i),
        };
    }
    query.execute(conn).await?;
    Ok(())
}

/// Inserts `count` rows of `table`; `push` appends one row's values in `columns` order.
#[allow(clippy::too_many_arguments)]
async fn insert<T>(
    conn: &mut AnyConnection,
    backend: Backend,
    progress: &Progress,
    table: &str,
    columns: &[&str],
    count: usize,
    rows: impl Iterator<Item = T>,
    mut push: impl FnMut(T, &mut Vec<Val>),
) -> Result<(), sqlx::Error> {
    let stage = progress.bar(table, count);
    let per_statement = (MAX_PARAMS / columns.len()).max(1);
    let full_sql = values_sql(backend, table, columns, per_statement.min(count.max(1)));
    let mut values = Vec::with_capacity(per_statement.min(count) * columns.len());
    let mut in_chunk = 0;
    for row in rows {
        push(row, &mut values);
        in_chunk += 1;
        if in_chunk == per_statement {
            execute(conn, &full_sql, std::mem::take(&mut values)).await?;
            stage.inc(in_chunk);
            in_chunk = 0;
        }
    }
    if in_chunk > 0 {
        let sql = if in_chunk == per_statement.min(count.max(1)) {
            full_sql
        } else {
            values_sql(backend, table, columns, in_chunk)
        };
        execute(conn, &sql, values).await?;
        stage.inc(in_chunk);
    }
    stage.finish();
    Ok(())
}

fn text(s: impl Into<String>) -> Val {
    Val::Text(s.into())
}

fn opt(s: Option<&str>) -> Val {
    Val::OptText(s.map(str::to_string))
}

fn id(u: Uuid) -> Val {
    Val::Text(u.to_string())
}

fn ts(ms: Ms) -> Val {
    Val::Text(stamp(ms))
}

fn stamp(ms: Ms) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    db::timestamp(at)
}

/// `INV-000042`, as the invoices API numbers them.
fn invoice_number(sequence: i64) -> String {
    format!("INV-{sequence:06}")
}

async fn write(
    tx: &mut crate::db::WriteTx,
    backend: Backend,
    plan: &Plan,
    email: &str,
    password_hash: &str,
    progress: &Progress,
) -> Result<(), sqlx::Error> {
    let conn: &mut AnyConnection = tx;
    let org = plan.org_id.to_string();
    let start = plan.start;

    sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(&org)
        .bind(&plan.org_name)
        .bind(stamp(start))
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO users (id, organization_id, email, password_hash, name, role, created_at)
         VALUES ($1, $2, $3, $4, $5, 'admin', $6)",
    )
    .bind(plan.user_id.to_string())
    .bind(&org)
    .bind(email)
    .bind(password_hash)
    .bind("Demo Admin")
    .bind(stamp(start))
    .execute(&mut *conn)
    .await?;

    // Parents before children: a row's foreign key must find its parent already there.
    for top_level in [true, false] {
        let rows: Vec<&Category> = plan
            .categories
            .iter()
            .filter(|c| c.parent.is_none() == top_level)
            .collect();
        insert(
            conn,
            backend,
            progress,
            "categories",
            &[
                "id",
                "organization_id",
                "name",
                "parent_id",
                "created_at",
                "updated_at",
            ],
            rows.len(),
            rows.into_iter(),
            |c, v| {
                v.extend([
                    id(c.id),
                    text(&org),
                    text(c.name.clone()),
                    Val::OptText(c.parent.map(|p| plan.categories[p].id.to_string())),
                    ts(start),
                    ts(start),
                ])
            },
        )
        .await?;
    }
    insert(
        conn,
        backend,
        progress,
        "tax_rates",
        &[
            "id",
            "organization_id",
            "name",
            "rate_bps",
            "created_at",
            "updated_at",
        ],
        plan.tax_rates.len(),
        plan.tax_rates.iter(),
        |t, v| {
            v.extend([
                id(t.id),
                text(&org),
                text(t.name),
                Val::Int(t.bps),
                ts(start),
                ts(start),
            ])
        },
    )
    .await?;
    insert(
        conn,
        backend,
        progress,
        "warehouses",
        &[
            "id",
            "organization_id",
            "name",
            "code",
            "created_at",
            "updated_at",
        ],
        plan.warehouses.len(),
        plan.warehouses.iter(),
        |w, v| {
            v.extend([
                id(w.id),
                text(&org),
                text(w.name.clone()),
                text(w.code.clone()),
                ts(start),
                ts(start),
            ])
        },
    )
    .await?;
    let contacts = plan
        .customers
        .iter()
        .map(|c| ("customer", c))
        .chain(plan.vendors.iter().map(|c| ("vendor", c)));
    insert(
        conn,
        backend,
        progress,
        "contacts",
        &[
            "id",
            "organization_id",
            "contact_type",
            "name",
            "email",
            "phone",
            "address",
            "created_at",
            "updated_at",
        ],
        plan.customers.len() + plan.vendors.len(),
        contacts,
        |(kind, c), v| {
            v.extend([
                id(c.id),
                text(&org),
                text(kind),
                text(c.name.clone()),
                opt(c.email.as_deref()),
                opt(c.phone.as_deref()),
                opt(c.address.as_deref()),
                ts(start),
                ts(start),
            ])
        },
    )
    .await?;
    insert(
        conn,
        backend,
        progress,
        "items",
        &[
            "id",
            "organization_id",
            "name",
            "sku",
            "description",
            "price_cents",
            "cost_cents",
            "category_id",
            "tax_rate_id",
            "reorder_level",
            "unit",
            "created_at",
            "updated_at",
        ],
        plan.items.len(),
        plan.items.iter(),
        |i, v| {
            v.extend([
                id(i.id),
                text(&org),
                text(i.name.clone()),
                text(i.sku.clone()),
                opt(i.description.as_deref()),
                Val::Int(i.price_cents),
                Val::Int(i.cost_cents),
                id(plan.categories[i.category].id),
                id(plan.tax_rates[i.tax_rate].id),
                Val::Int(i.reorder_level),
                text(i.unit),
                ts(start),
                ts(start),
            ])
        },
    )
    .await?;
    insert(
        conn,
        backend,
        progress,
        "purchase_orders",
        &[
            "id",
            "organization_id",
            "vendor_id",
            "warehouse_id",
            "status",
            "notes",
            "total_cents",
            "received_at",
            "created_at",
            "updated_at",
        ],
        plan.purchases.len(),
        plan.purchases.iter(),
        |p, v| {
            v.extend([
                id(p.id),
                text(&org),
                id(plan.vendors[p.vendor].id),
                id(plan.warehouses[p.warehouse].id),
                text(if p.received.is_some() {
                    "received"
                } else {
                    "open"
                }),
                opt(p.notes),
                Val::Int(p.total_cents()),
                Val::OptText(p.received.map(stamp)),
                ts(p.created),
                ts(p.received.unwrap_or(p.created)),
            ])
        },
    )
    .await?;
    insert(
        conn,
        backend,
        progress,
        "purchase_order_lines",
        &[
            "id",
            "organization_id",
            "purchase_order_id",
            "line_no",
            "item_id",
            "quantity",
            "unit_cost_cents",
            "total_cents",
        ],
        plan.purchases.iter().map(|p| p.lines.len()).sum(),
        plan.purchases
            .iter()
            .flat_map(|p| p.lines.iter().enumerate().map(move |(n, l)| (p, n, l))),
        |(p, n, l), v| {
            v.extend([
                id(l.id),
                text(&org),
                id(p.id),
                Val::Int(n as i64 + 1),
                id(plan.items[l.item].id),
                Val::Int(l.quantity),
                Val::Int(l.unit_cost_cents),
                Val::Int(l.quantity * l.unit_cost_cents),
            ])
        },
    )
    .await?;
    insert(
        conn,
        backend,
        progress,
        "sales_orders",
        &[
            "id",
            "organization_id",
            "customer_id",
            "warehouse_id",
            "status",
            "notes",
            "subtotal_cents",
            "tax_cents",
            "total_cents",
            "fulfilled_at",
            "created_at",
            "updated_at",
        ],
        plan.sales.len(),
        plan.sales.iter(),
        |o, v| {
            let (subtotal, tax, total) = o.totals();
            v.extend([
                id(o.id),
                text(&org),
                id(plan.customers[o.customer].id),
                id(plan.warehouses[o.warehouse].id),
                text(o.status.as_str()),
                opt(o.notes),
                Val::Int(subtotal),
                Val::Int(tax),
                Val::Int(total),
                Val::OptText(o.fulfilled.map(stamp)),
                ts(o.created),
                ts(o.updated),
            ])
        },
    )
    .await?;
    insert(
        conn,
        backend,
        progress,
        "sales_order_lines",
        &[
            "id",
            "organization_id",
            "sales_order_id",
            "line_no",
            "item_id",
            "quantity",
            "unit_price_cents",
            "tax_rate_bps",
            "subtotal_cents",
            "tax_cents",
            "total_cents",
        ],
        plan.sales.iter().map(|o| o.lines.len()).sum(),
        plan.sales
            .iter()
            .flat_map(|o| o.lines.iter().enumerate().map(move |(n, l)| (o, n, l))),
        |(o, n, l), v| {
            v.extend([
                id(l.id),
                text(&org),
                id(o.id),
                Val::Int(n as i64 + 1),
                id(plan.items[l.item].id),
                Val::Int(l.quantity),
                Val::Int(l.unit_price_cents),
                Val::Int(l.tax_rate_bps),
                Val::Int(l.subtotal()),
                Val::Int(l.tax()),
                Val::Int(l.subtotal() + l.tax()),
            ])
        },
    )
    .await?;
    let user = plan.user_id.to_string();
    insert(
        conn,
        backend,
        progress,
        "stock_adjustments",
        &[
            "id",
            "organization_id",
            "item_id",
            "warehouse_id",
            "quantity_delta",
            "reason",
            "created_by",
            "created_at",
        ],
        plan.adjustments.len(),
        plan.adjustments.iter(),
        |a, v| {
            v.extend([
                id(a.id),
                text(&org),
                id(plan.items[a.item].id),
                id(plan.warehouses[a.warehouse].id),
                Val::Int(a.delta),
                text(a.reason),
                text(&user),
                ts(a.at),
            ])
        },
    )
    .await?;
    insert(
        conn,
        backend,
        progress,
        "stock_movements",
        &[
            "id",
            "organization_id",
            "item_id",
            "warehouse_id",
            "quantity_delta",
            "source",
            "source_id",
            "reason",
            "created_by",
            "created_at",
        ],
        plan.movements.len(),
        plan.movements.iter(),
        |m, v| {
            v.extend([
                id(m.id),
                text(&org),
                id(plan.items[m.item].id),
                id(plan.warehouses[m.warehouse].id),
                Val::Int(m.delta),
                text(m.source),
                id(m.source_id),
                opt(m.reason),
                text(&user),
                ts(m.at),
            ])
        },
    )
    .await?;
    let levels = plan.stock_levels();
    insert(
        conn,
        backend,
        progress,
        "stock_levels",
        &[
            "organization_id",
            "item_id",
            "warehouse_id",
            "quantity",
            "updated_at",
        ],
        levels.len(),
        levels.into_iter(),
        |(item, warehouse, quantity, at), v| {
            v.extend([
                text(&org),
                id(plan.items[item].id),
                id(plan.warehouses[warehouse].id),
                Val::Int(quantity),
                ts(at),
            ])
        },
    )
    .await?;
    insert(
        conn,
        backend,
        progress,
        "invoices",
        &[
            "id",
            "organization_id",
            "number",
            "sequence",
            "sales_order_id",
            "customer_id",
            "status",
            "subtotal_cents",
            "tax_cents",
            "total_cents",
            "paid_cents",
            "issued_at",
            "created_at",
            "updated_at",
        ],
        plan.invoices.len(),
        plan.invoices.iter().enumerate(),
        |(n, inv), v| {
            let order = &plan.sales[inv.order];
            let (subtotal, tax, total) = order.totals();
            let status = if inv.paid_cents == 0 {
                "unpaid"
            } else if inv.paid_cents < total {
                "partially_paid"
            } else {
                "paid"
            };
            let sequence = n as i64 + 1;
            v.extend([
                id(inv.id),
                text(&org),
                text(invoice_number(sequence)),
                Val::Int(sequence),
                id(order.id),
                id(plan.customers[order.customer].id),
                text(status),
                Val::Int(subtotal),
                Val::Int(tax),
                Val::Int(total),
                Val::Int(inv.paid_cents),
                ts(inv.issued),
                ts(inv.issued),
                ts(inv.updated),
            ])
        },
    )
    .await?;
    insert(
        conn,
        backend,
        progress,
        "payments",
        &[
            "id",
            "organization_id",
            "invoice_id",
            "amount_cents",
            "paid_at",
            "created_at",
        ],
        plan.payments.len(),
        plan.payments.iter(),
        |p, v| {
            v.extend([
                id(p.id),
                text(&org),
                id(plan.invoices[p.invoice].id),
                Val::Int(p.amount_cents),
                ts(p.at),
                ts(p.at),
            ])
        },
    )
    .await?;
    // The API's next invoice continues the sequence the seed started.
    sqlx::query("INSERT INTO invoice_counters (organization_id, last_number) VALUES ($1, $2)")
        .bind(&org)
        .bind(plan.invoices.len() as i64)
        .execute(&mut *conn)
        .await?;
    Ok(())
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

/// Stable FNV-1a, so ids depend on the email the same way on every platform and version.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Ids come from their own RNG so they differ per email (two demo organizations can share a
/// database) while the data RNG, and so the data, depends on the seed alone.
struct Ids(StdRng);

impl Ids {
    fn next(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(self.0.gen()).into_uuid()
    }
}

/// A leaf category's vocabulary.
struct Kind {
    parent: &'static str,
    name: &'static str,
    code: &'static str,
    nouns: &'static [&'static str],
    variants: &'static [&'static str],
    /// Price range in whole currency units.
    price: (f64, f64),
    unit: &'static str,
}

const KINDS: &[Kind] = &[
    Kind {
        parent: "Electronics",
        name: "Cables & Adapters",
        code: "CBL",
        nouns: &[
            "USB-C Cable",
            "HDMI Cable",
            "Ethernet Cable",
            "Power Adapter",
            "DisplayPort Adapter",
            "Extension Cord",
        ],
        variants: &["0.5 m", "1 m", "2 m", "3 m", "5 m", "Braided 2 m"],
        price: (5.0, 45.0),
        unit: "each",
    },
    Kind {
        parent: "Electronics",
        name: "Audio",
        code: "AUD",
        nouns: &[
            "Wireless Earbuds",
            "Bluetooth Speaker",
            "Studio Headphones",
            "USB Microphone",
            "Soundbar",
        ],
        variants: &["Black", "White", "Graphite", "Midnight Blue", "Sand"],
        price: (19.0, 280.0),
        unit: "each",
    },
    Kind {
        parent: "Electronics",
        name: "Computer Accessories",
        code: "CMP",
        nouns: &[
            "Wireless Mouse",
            "Mechanical Keyboard",
            "Laptop Stand",
            "USB Hub",
            "Webcam",
            "Monitor Arm",
        ],
        variants: &["Black", "Silver", "White", "Space Grey", "Compact"],
        price: (12.0, 190.0),
        unit: "each",
    },
    Kind {
        parent: "Office Supplies",
        name: "Paper Products",
        code: "PAP",
        nouns: &[
            "Copy Paper",
            "Sticky Notes",
            "Spiral Notebook",
            "Legal Pad",
            "Index Cards",
        ],
        variants: &["A4", "Letter", "12-Pack", "24-Pack", "Recycled"],
        price: (2.0, 45.0),
        unit: "pack",
    },
    Kind {
        parent: "Office Supplies",
        name: "Writing Instruments",
        code: "WRT",
        nouns: &[
            "Gel Pen",
            "Ballpoint Pen",
            "Highlighter",
            "Permanent Marker",
            "Mechanical Pencil",
        ],
        variants: &["Black", "Blue", "Assorted Colours", "Fine Tip", "Bold Tip"],
        price: (2.0, 25.0),
        unit: "box",
    },
    Kind {
        parent: "Home & Kitchen",
        name: "Cookware",
        code: "CKW",
        nouns: &[
            "Frying Pan",
            "Saucepan",
            "Dutch Oven",
            "Stock Pot",
            "Baking Sheet",
        ],
        variants: &["20 cm", "24 cm", "28 cm", "Non-Stick", "Cast Iron"],
        price: (15.0, 160.0),
        unit: "each",
    },
    Kind {
        parent: "Home & Kitchen",
        name: "Storage",
        code: "STO",
        nouns: &[
            "Food Container Set",
            "Storage Bin",
            "Spice Rack",
            "Drawer Organizer",
            "Shelf Basket",
        ],
        variants: &["Small", "Medium", "Large", "Stackable", "Clear"],
        price: (6.0, 60.0),
        unit: "each",
    },
    Kind {
        parent: "Tools & Hardware",
        name: "Hand Tools",
        code: "HTL",
        nouns: &[
            "Claw Hammer",
            "Screwdriver Set",
            "Adjustable Wrench",
            "Tape Measure",
            "Utility Knife",
            "Pliers",
        ],
        variants: &["Standard", "Pro Grade", "Compact", "Insulated", "Magnetic"],
        price: (8.0, 85.0),
        unit: "each",
    },
    Kind {
        parent: "Tools & Hardware",
        name: "Fasteners",
        code: "FST",
        nouns: &[
            "Wood Screws",
            "Drywall Anchors",
            "Hex Bolts",
            "Wall Plugs",
            "Cable Ties",
        ],
        variants: &["100 pcs", "250 pcs", "500 pcs", "Stainless", "Zinc Plated"],
        price: (3.0, 30.0),
        unit: "box",
    },
    Kind {
        parent: "Outdoor",
        name: "Camping",
        code: "CMPG",
        nouns: &[
            "Camping Lantern",
            "Folding Chair",
            "Water Bottle",
            "Daypack",
            "Picnic Blanket",
        ],
        variants: &["Forest Green", "Orange", "Navy", "1 L", "Lightweight"],
        price: (10.0, 130.0),
        unit: "each",
    },
    Kind {
        parent: "Outdoor",
        name: "Garden",
        code: "GRD",
        nouns: &[
            "Garden Hose",
            "Pruning Shears",
            "Planter",
            "Watering Can",
            "Gardening Gloves",
        ],
        variants: &["15 m", "30 m", "Terracotta", "Small", "Large"],
        price: (6.0, 90.0),
        unit: "each",
    },
];

const BRANDS: &[&str] = &[
    "Arcwell",
    "Brightline",
    "Corvid",
    "Dunmore",
    "Everfield",
    "Foxglove",
    "Granton",
    "Halcyon",
    "Ironbark",
    "Juniper",
    "Kestrel",
    "Lumen",
    "Meridian",
    "Northgate",
    "Orchard",
    "Pinecrest",
    "Quillon",
    "Redfern",
    "Stonebridge",
    "Tidewater",
];
const ADJECTIVES: &[&str] = &[
    "Pro",
    "Classic",
    "Compact",
    "Heavy-Duty",
    "Premium",
    "Essential",
    "Ultra",
    "Eco",
    "Travel",
    "Deluxe",
    "Slim",
    "Max",
];
const FEATURES: &[&str] = &[
    "Backed by a two-year warranty.",
    "A best seller with small businesses.",
    "Built for daily use.",
    "Ships in recyclable packaging.",
    "Tested to last.",
    "Our most popular size.",
];
const CUSTOMER_FIRST: &[&str] = &[
    "Apex",
    "Bluebird",
    "Cedar",
    "Harbor",
    "Summit",
    "Riverside",
    "Maple",
    "Granite",
    "Silverline",
    "Lakeside",
    "Hilltop",
    "Evergreen",
    "Copper",
    "Sunrise",
    "Westfield",
    "Ironwood",
    "Bayview",
    "Pioneer",
    "Goldleaf",
    "Redwood",
    "Oakridge",
    "Starlight",
    "Crescent",
    "Northstar",
    "Willow",
];
const CUSTOMER_SECOND: &[&str] = &[
    "Cafe",
    "Dental Group",
    "Design Studio",
    "Hardware",
    "Builders",
    "Consulting",
    "Print Shop",
    "Bakery",
    "Fitness Club",
    "Veterinary Clinic",
    "Architects",
    "Law Office",
    "Coworking",
    "Academy",
    "Hotel",
    "Marketing",
    "Electric",
    "Landscaping",
    "Books",
    "Outfitters",
];
const CUSTOMER_SUFFIX: &[&str] = &["", " LLC", " Inc.", " & Co."];
const VENDOR_FIRST: &[&str] = &[
    "Pacific",
    "Atlas",
    "Keystone",
    "Continental",
    "Prairie",
    "Liberty",
    "Coastal",
    "Heartland",
    "Frontier",
    "Sterling",
    "Unity",
    "Vanguard",
    "Allied",
    "Beacon",
    "Crown",
];
const VENDOR_SECOND: &[&str] = &[
    "Supply Co.",
    "Wholesale",
    "Distribution",
    "Manufacturing",
    "Trading",
    "Industrial Supply",
    "Imports",
    "Goods",
];
const STREETS: &[&str] = &[
    "Main",
    "Oak",
    "Pine",
    "Maple",
    "Cedar",
    "Elm",
    "Lake",
    "Hill",
    "Park",
    "Washington",
    "Market",
    "Mill",
    "River",
    "Church",
    "Harbor",
];
const STREET_KINDS: &[&str] = &["St", "Ave", "Rd", "Blvd", "Way", "Lane"];
const CITIES: &[(&str, &str)] = &[
    ("Springfield", "IL"),
    ("Riverton", "WY"),
    ("Fairview", "OR"),
    ("Georgetown", "TX"),
    ("Madison", "WI"),
    ("Franklin", "TN"),
    ("Clinton", "IA"),
    ("Salem", "MA"),
    ("Arlington", "VA"),
    ("Bristol", "CT"),
    ("Ashland", "KY"),
    ("Dover", "DE"),
];
const WAREHOUSES: &[(&str, &str)] = &[
    ("Main Warehouse", "MAIN"),
    ("East Distribution Center", "EAST"),
    ("West Distribution Center", "WEST"),
    ("North Depot", "NORTH"),
    ("South Depot", "SOUTH"),
    ("Central Fulfillment", "CENTRAL"),
];
const ORG_NAMES: &[&str] = &[
    "Harborview Supply Co.",
    "Bluefin Trading",
    "Summit Outfitters",
    "Lakeshore Goods",
    "Ironwood Merchants",
    "Northwind Provisions",
];
const SALES_NOTES: &[&str] = &[
    "Leave at the loading dock",
    "Call before delivery",
    "Customer pickup",
    "Gift wrap requested",
    "Deliver after 10 am",
];
const SHRINK_REASONS: &[&str] = &[
    "Damaged in storage",
    "Expired stock written off",
    "Lost in transit",
    "Cycle count correction",
];
const GAIN_REASONS: &[&str] = &[
    "Found during cycle count",
    "Customer return restocked",
    "Cycle count correction",
];

fn slug(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join("-")
}

fn address(rng: &mut StdRng) -> String {
    let (city, state) = CITIES[rng.gen_range(0..CITIES.len())];
    format!(
        "{} {} {}, {city}, {state} {:05}",
        rng.gen_range(1..9999),
        STREETS[rng.gen_range(0..STREETS.len())],
        STREET_KINDS[rng.gen_range(0..STREET_KINDS.len())],
        rng.gen_range(10_000..99_999)
    )
}

/// A fictional phone number (555-01xx is reserved for fiction).
fn phone(rng: &mut StdRng) -> String {
    format!(
        "+1-{}-555-01{:02}",
        rng.gen_range(201..990),
        rng.gen_range(0..100)
    )
}

/// Names from `first × second × suffix`, unique; numbered once the combinations run out.
fn unique_names(
    n: usize,
    rng: &mut StdRng,
    mut make: impl FnMut(&mut StdRng) -> String,
) -> Vec<String> {
    let mut seen = HashSet::with_capacity(n);
    (0..n)
        .map(|i| {
            for _ in 0..20 {
                let name = make(rng);
                if seen.insert(name.clone()) {
                    return name;
                }
            }
            let name = format!("{} {}", make(rng), i + 1);
            seen.insert(name.clone());
            name
        })
        .collect()
}

/// A price ending in .99 or .49, log-uniform in `range`.
fn price(range: (f64, f64), rng: &mut StdRng) -> i64 {
    let (lo, hi) = (range.0.ln(), range.1.ln());
    let units = rng.gen_range(lo..hi).exp().floor().max(1.0) as i64;
    let cents = if rng.gen_bool(0.7) { 99 } else { 49 };
    (units - 1) * 100 + cents
}

/// Simulation state: stock per (item, warehouse) as events happen in time order.
struct Sim<'a> {
    rng: &'a mut StdRng,
    ids: &'a mut Ids,
    warehouses: usize,
    end: Ms,
    start: Ms,
    /// Per `item * warehouses + warehouse`.
    level: Vec<i64>,
    last_change: Vec<Option<Ms>>,
    /// A purchase order for this (item, warehouse) is on its way.
    on_order: Vec<bool>,
    /// Reorder point and order-up-to level.
    reorder_point: Vec<i64>,
    order_up_to: Vec<i64>,
    /// Items each vendor supplies.
    vendor_items: Vec<Vec<usize>>,
    /// Receipts due: (received at, purchase order index).
    due: BinaryHeap<Reverse<(Ms, usize)>>,
    purchases: Vec<PurchaseOrder>,
    movements: Vec<Movement>,
    adjustments: Vec<Adjustment>,
}

impl Sim<'_> {
    fn slot(&self, item: usize, warehouse: usize) -> usize {
        item * self.warehouses + warehouse
    }

    fn record(
        &mut self,
        item: usize,
        warehouse: usize,
        delta: i64,
        (source, source_id, reason): (&'static str, Uuid, Option<&'static str>),
        at: Ms,
    ) {
        let slot = self.slot(item, warehouse);
        self.level[slot] += delta;
        debug_assert!(self.level[slot] >= 0);
        self.last_change[slot] = Some(at);
        let id = self.ids.next();
        self.movements.push(Movement {
            id,
            item,
            warehouse,
            delta,
            source,
            source_id,
            reason,
            at,
        });
    }

    /// Puts the stock of every purchase order received by `until` in.
    fn receive_until(&mut self, until: Ms) {
        while let Some(&Reverse((at, po))) = self.due.peek() {
            if at > until {
                break;
            }
            self.due.pop();
            let (id, warehouse) = (self.purchases[po].id, self.purchases[po].warehouse);
            let lines: Vec<(usize, i64)> = self.purchases[po]
                .lines
                .iter()
                .map(|l| (l.item, l.quantity))
                .collect();
            for (item, quantity) in lines {
                let slot = self.slot(item, warehouse);
                self.on_order[slot] = false;
                self.record(item, warehouse, quantity, ("purchase", id, None), at);
            }
        }
    }

    fn unit_cost(&mut self, items: &[Item], item: usize) -> i64 {
        // Vendors' prices drift a little from the list cost.
        let cost = items[item].cost_cents as f64 * self.rng.gen_range(0.95..1.05);
        cost.round().max(0.0) as i64
    }

    /// A purchase order placed at `created` and received at `received` (`None`: it stays
    /// open). Its stock is not moved here; the caller schedules or records the receipt.
    fn order(
        &mut self,
        items: &[Item],
        (vendor, warehouse): (usize, usize),
        lines: Vec<(usize, i64)>,
        (created, received): (Ms, Option<Ms>),
        notes: Option<&'static str>,
    ) -> usize {
        let lines = lines
            .into_iter()
            .map(|(item, quantity)| PurchaseLine {
                id: self.ids.next(),
                item,
                quantity,
                unit_cost_cents: self.unit_cost(items, item),
            })
            .collect();
        let po = self.purchases.len();
        self.purchases.push(PurchaseOrder {
            id: self.ids.next(),
            vendor,
            warehouse,
            notes,
            created,
            received,
            lines,
        });
        po
    }

    /// Reorders, from `item`'s vendor, everything of theirs in `warehouse` that is at or
    /// below its reorder point and not already on order.
    fn reorder(&mut self, items: &[Item], item: usize, warehouse: usize, at: Ms) {
        let created = at + self.rng.gen_range(5 * MINUTE..4 * HOUR);
        if created > self.end {
            return;
        }
        let vendor = items[item].vendor;
        let mut lines = Vec::new();
        let candidates = std::mem::take(&mut self.vendor_items[vendor]);
        // The item that triggered the order first, then its vendor's other low items.
        for &other in std::iter::once(&item).chain(candidates.iter().filter(|&&i| i != item)) {
            if lines.len() == MAX_PURCHASE_LINES {
                break;
            }
            let slot = self.slot(other, warehouse);
            if !self.on_order[slot] && self.level[slot] <= self.reorder_point[slot] {
                self.on_order[slot] = true;
                lines.push((other, self.order_up_to[slot] - self.level[slot]));
            }
        }
        self.vendor_items[vendor] = candidates;
        if lines.is_empty() {
            return;
        }
        let received = created + self.rng.gen_range(2 * DAY..8 * DAY);
        let received = (received <= self.end).then_some(received);
        let po = self.order(items, (vendor, warehouse), lines, (created, received), None);
        if let Some(at) = received {
            self.due.push(Reverse((at, po)));
        }
    }

    /// Makes sure `quantity` of `item` is in `warehouse` at `at`: when it is not, a rush
    /// purchase order arrives just before (stock added earlier never makes any earlier
    /// running total negative, so the ledger stays non-negative at every point in time).
    fn ensure(&mut self, items: &[Item], item: usize, warehouse: usize, quantity: i64, at: Ms) {
        let slot = self.slot(item, warehouse);
        if self.level[slot] >= quantity {
            return;
        }
        let wanted = quantity - self.level[slot] + self.order_up_to[slot];
        let created = (at - self.rng.gen_range(DAY..3 * DAY)).max(self.start);
        let received = (at - self.rng.gen_range(MINUTE..2 * HOUR)).max(created);
        let po = self.order(
            items,
            (items[item].vendor, warehouse),
            vec![(item, wanted)],
            (created, Some(received)),
            Some("Rush order"),
        );
        let id = self.purchases[po].id;
        self.record(item, warehouse, wanted, ("purchase", id, None), received);
    }

    fn adjust(&mut self, items: &[Item], at: Ms) {
        let item = self.rng.gen_range(0..items.len());
        let warehouse = self.rng.gen_range(0..self.warehouses);
        let level = self.level[self.slot(item, warehouse)];
        let (delta, reason) = if level > 0 && self.rng.gen_bool(0.65) {
            let taken = self.rng.gen_range(1..=level.min(5));
            (
                -taken,
                SHRINK_REASONS[self.rng.gen_range(0..SHRINK_REASONS.len())],
            )
        } else {
            (
                self.rng.gen_range(1..=5),
                GAIN_REASONS[self.rng.gen_range(0..GAIN_REASONS.len())],
            )
        };
        let id = self.ids.next();
        self.adjustments.push(Adjustment {
            id,
            item,
            warehouse,
            delta,
            reason,
            at,
        });
        self.record(item, warehouse, delta, ("adjustment", id, Some(reason)), at);
        let slot = self.slot(item, warehouse);
        if !self.on_order[slot] && self.level[slot] <= self.reorder_point[slot] {
            self.reorder(items, item, warehouse, at);
        }
    }
}

enum Event {
    Fulfil(usize),
    Adjust,
}

impl Plan {
    /// Generates the organization and its history ending at `now` (Unix milliseconds).
    fn generate(options: &SeedOptions, email: &str, now: Ms) -> Self {
        let rng = &mut StdRng::seed_from_u64(options.seed);
        let ids = &mut Ids(StdRng::seed_from_u64(options.seed ^ fnv1a(email)));
        let n_items = options.items.max(1) as usize;
        let n_warehouses = options.warehouses.max(1) as usize;
        let end = now;
        let span = i64::from(options.days.max(1)) * DAY;
        let start = end - span;
        // Opening stock arrives first, then sales begin.
        let opening_received = start + (span / 8).min(6 * HOUR);
        let sales_start = start + (span / 4).min(DAY);

        let org_id = ids.next();
        let user_id = ids.next();
        let org_name = ORG_NAMES[rng.gen_range(0..ORG_NAMES.len())].to_string();

        // Categories: a parent per group, a child per kind (a group with one kind still gets
        // its parent, so the tree has both levels).
        let mut categories: Vec<Category> = Vec::new();
        let mut leaf_of_kind = Vec::with_capacity(KINDS.len());
        for kind in KINDS {
            let parent = match categories
                .iter()
                .position(|c| c.parent.is_none() && c.name == kind.parent)
            {
                Some(p) => p,
                None => {
                    categories.push(Category {
                        id: ids.next(),
                        name: kind.parent.into(),
                        parent: None,
                    });
                    categories.len() - 1
                }
            };
            categories.push(Category {
                id: ids.next(),
                name: kind.name.into(),
                parent: Some(parent),
            });
            leaf_of_kind.push(categories.len() - 1);
        }

        let tax_rates: Vec<TaxRate> = [
            ("Zero rated", 0),
            ("Reduced 5%", 500),
            ("Standard 8.25%", 825),
        ]
        .into_iter()
        .map(|(name, bps)| TaxRate {
            id: ids.next(),
            name,
            bps,
        })
        .collect();

        let warehouses: Vec<Warehouse> = (0..n_warehouses)
            .map(|w| {
                let (name, code) = match WAREHOUSES.get(w) {
                    Some((name, code)) => (name.to_string(), code.to_string()),
                    None => (format!("Warehouse {}", w + 1), format!("WH{:02}", w + 1)),
                };
                Warehouse {
                    id: ids.next(),
                    name,
                    code,
                }
            })
            .collect();

        let customer_names = unique_names(options.customers as usize, rng, |rng| {
            format!(
                "{} {}{}",
                CUSTOMER_FIRST[rng.gen_range(0..CUSTOMER_FIRST.len())],
                CUSTOMER_SECOND[rng.gen_range(0..CUSTOMER_SECOND.len())],
                CUSTOMER_SUFFIX[rng.gen_range(0..CUSTOMER_SUFFIX.len())]
            )
        });
        let customers: Vec<Contact> = customer_names
            .into_iter()
            .map(|name| {
                let mailbox = ["orders", "accounts", "office", "purchasing"][rng.gen_range(0..4)];
                Contact {
                    id: ids.next(),
                    email: rng
                        .gen_bool(0.9)
                        .then(|| format!("{mailbox}@{}.example", slug(&name))),
                    phone: rng.gen_bool(0.8).then(|| phone(rng)),
                    address: rng.gen_bool(0.85).then(|| address(rng)),
                    name,
                }
            })
            .collect();
        let vendor_names = unique_names(options.vendors as usize, rng, |rng| {
            format!(
                "{} {}",
                VENDOR_FIRST[rng.gen_range(0..VENDOR_FIRST.len())],
                VENDOR_SECOND[rng.gen_range(0..VENDOR_SECOND.len())]
            )
        });
        let vendors: Vec<Contact> = vendor_names
            .into_iter()
            .map(|name| Contact {
                id: ids.next(),
                email: Some(format!("sales@{}.example", slug(&name))),
                phone: Some(phone(rng)),
                address: Some(address(rng)),
                name,
            })
            .collect();

        // Demand: a few best sellers and a long tail; a few big customers; the first
        // warehouse busiest.
        let mut ranks: Vec<usize> = (0..n_items).collect();
        ranks.shuffle(rng);
        let item_weights: Vec<f64> = ranks
            .iter()
            .map(|&r| 1.0 / (r as f64 + 3.0).powf(0.9))
            .collect();
        let item_weight_total: f64 = item_weights.iter().sum();
        let warehouse_weights: Vec<f64> = (0..n_warehouses)
            .map(|w| 1.0 / (w as f64 + 1.0).powf(0.8))
            .collect();
        let warehouse_total: f64 = warehouse_weights.iter().sum();
        let sales_days = ((end - sales_start) as f64 / DAY as f64).max(0.1);
        let units_per_day = f64::from(options.orders)
            * 0.93
            * mean(LINE_COUNTS, |n| n as f64)
            * mean(QUANTITIES, |q| q as f64)
            / sales_days;

        let mut names = HashSet::with_capacity(n_items);
        let mut sku_counters = vec![0usize; KINDS.len()];
        let items: Vec<Item> = (0..n_items)
            .map(|i| {
                let k = rng.gen_range(0..KINDS.len());
                let kind = &KINDS[k];
                let brand = BRANDS[rng.gen_range(0..BRANDS.len())];
                let noun = kind.nouns[rng.gen_range(0..kind.nouns.len())];
                let mut name = String::new();
                for attempt in 0..20 {
                    let candidate = format!(
                        "{brand} {} {noun}, {}",
                        ADJECTIVES[rng.gen_range(0..ADJECTIVES.len())],
                        kind.variants[rng.gen_range(0..kind.variants.len())]
                    );
                    if names.insert(candidate.clone()) || attempt == 19 {
                        name = candidate;
                        break;
                    }
                }
                sku_counters[k] += 1;
                let price_cents = price(kind.price, rng);
                let cost_cents = (price_cents as f64 * rng.gen_range(0.4..0.7)).round() as i64;
                let daily = units_per_day * item_weights[i] / item_weight_total;
                // Two weeks of demand, at least a handful, in round numbers once it is big.
                let reorder = (daily * 14.0).ceil().max(5.0) as i64;
                let reorder_level = if reorder > 20 {
                    (reorder + 4) / 5 * 5
                } else {
                    reorder
                };
                Item {
                    id: ids.next(),
                    name,
                    sku: format!("{}-{:05}", kind.code, sku_counters[k]),
                    description: rng.gen_bool(0.8).then(|| {
                        format!(
                            "{noun} by {brand}. {}",
                            FEATURES[rng.gen_range(0..FEATURES.len())]
                        )
                    }),
                    price_cents,
                    cost_cents,
                    category: leaf_of_kind[k],
                    tax_rate: pick(&[(2, 70), (1, 20), (0, 10)], rng),
                    reorder_level,
                    unit: kind.unit,
                    vendor: rng.gen_range(0..vendors.len()),
                }
            })
            .collect();

        let mut vendor_items = vec![Vec::new(); vendors.len()];
        for (i, item) in items.iter().enumerate() {
            vendor_items[item.vendor].push(i);
        }
        let slots = n_items * n_warehouses;
        let mut reorder_point = vec![0; slots];
        let mut order_up_to = vec![0; slots];
        for (i, item) in items.iter().enumerate() {
            for w in 0..n_warehouses {
                let share = warehouse_weights[w] / warehouse_total;
                let daily = units_per_day * item_weights[i] / item_weight_total * share;
                // The warehouse's share of the item's reorder level, plus a safety stock of
                // a couple of typical order lines for the demand during the lead time.
                let point = ((item.reorder_level as f64) * share).ceil() as i64 + 6;
                reorder_point[i * n_warehouses + w] = point;
                // About six weeks of demand on top of the reorder point, and at least enough
                // for a large order line, so rush orders stay the exception.
                order_up_to[i * n_warehouses + w] = point + (daily * 45.0).ceil().max(12.0) as i64;
            }
        }

        // One RNG per phase: the stock simulation depends on the dates (an order placed late
        // on the last day is still open), so its draws must not shift those of the orders
        // before it or of the invoices after it.
        let stock_rng = &mut StdRng::seed_from_u64(options.seed.wrapping_add(1));
        let money = &mut StdRng::seed_from_u64(options.seed.wrapping_add(2));
        let mut sim = Sim {
            rng: stock_rng,
            ids,
            warehouses: n_warehouses,
            end,
            start,
            level: vec![0; slots],
            last_change: vec![None; slots],
            on_order: vec![false; slots],
            reorder_point,
            order_up_to,
            vendor_items,
            due: BinaryHeap::new(),
            purchases: Vec::new(),
            movements: Vec::new(),
            adjustments: Vec::new(),
        };

        // Opening stock: every item in every warehouse, one order per vendor and warehouse
        // (split at the line limit).
        for w in 0..n_warehouses {
            for v in 0..vendors.len() {
                let supplied = sim.vendor_items[v].clone();
                for chunk in supplied.chunks(MAX_PURCHASE_LINES) {
                    let lines: Vec<(usize, i64)> = chunk
                        .iter()
                        .map(|&i| (i, sim.order_up_to[i * n_warehouses + w]))
                        .collect();
                    let created = start + sim.rng.gen_range(0..HOUR);
                    let po = sim.order(
                        &items,
                        (v, w),
                        lines,
                        (created, Some(opening_received)),
                        Some("Opening stock"),
                    );
                    sim.due.push(Reverse((opening_received, po)));
                }
            }
        }

        // Order dates: weekdays busier than weekends, business growing over the year.
        let first_day = sales_start.div_euclid(DAY);
        let last_day = end.div_euclid(DAY);
        let day_weights = Weighted::new((first_day..=last_day).map(|d| {
            let progress = (d - first_day) as f64 / ((last_day - first_day).max(1)) as f64;
            // 1970-01-01 was a Thursday: day 2 mod 7 is Saturday, 3 is Sunday.
            let weekend = matches!(d.rem_euclid(7), 2 | 3);
            (1.0 + 0.6 * progress) * if weekend { 0.45 } else { 1.0 }
        }));
        let mut created: Vec<Ms> = (0..options.orders)
            .map(|_| {
                let day = first_day + day_weights.sample(rng) as i64;
                // Mostly business hours (UTC), some around the clock.
                let offset = if rng.gen_bool(0.85) {
                    rng.gen_range(8 * HOUR..19 * HOUR)
                } else {
                    rng.gen_range(0..DAY)
                };
                (day * DAY + offset).clamp(sales_start, end)
            })
            .collect();
        created.sort_unstable();

        let customer_weights =
            Weighted::new((0..customers.len()).map(|r| 1.0 / (r as f64 + 2.0).powf(0.7)));
        let warehouse_pick = Weighted::new(warehouse_weights.iter().copied());
        let item_pick = Weighted::new(item_weights.iter().copied());
        let mut sales: Vec<SalesOrder> = Vec::with_capacity(created.len());
        for at in created {
            let wanted_lines = pick(LINE_COUNTS, rng).min(n_items);
            let mut lines: Vec<SalesLine> = Vec::with_capacity(wanted_lines);
            for _ in 0..wanted_lines * 10 {
                if lines.len() == wanted_lines {
                    break;
                }
                let item = item_pick.sample(rng);
                if lines.iter().any(|l| l.item == item) {
                    continue;
                }
                lines.push(SalesLine {
                    id: sim.ids.next(),
                    item,
                    quantity: pick(QUANTITIES, rng),
                    unit_price_cents: items[item].price_cents,
                    tax_rate_bps: tax_rates[items[item].tax_rate].bps,
                });
            }
            let roll: f64 = rng.gen();
            let (status, fulfilled, updated) = if roll < 0.03 {
                let cancelled = (at + rng.gen_range(HOUR..3 * DAY)).min(end);
                (Status::Cancelled, None, cancelled)
            } else if roll < 0.07 {
                (Status::Open, None, at)
            } else {
                let done = at + rng.gen_range(15 * MINUTE..36 * HOUR);
                if done <= end {
                    (Status::Fulfilled, Some(done), done)
                } else {
                    // Too recent to have shipped yet.
                    (Status::Open, None, at)
                }
            };
            sales.push(SalesOrder {
                id: sim.ids.next(),
                customer: customer_weights.sample(rng),
                warehouse: warehouse_pick.sample(rng),
                status,
                notes: sim
                    .rng
                    .gen_bool(0.1)
                    .then(|| SALES_NOTES[rng.gen_range(0..SALES_NOTES.len())]),
                created: at,
                fulfilled,
                updated,
                lines,
            });
        }

        // Stock moves in time order: receipts, fulfilments and a few adjustments.
        let mut events: Vec<(Ms, Event)> = sales
            .iter()
            .enumerate()
            .filter_map(|(o, order)| order.fulfilled.map(|at| (at, Event::Fulfil(o))))
            .collect();
        let n_adjustments = (options.orders as usize / 150).max(3);
        for _ in 0..n_adjustments {
            let at = sim.rng.gen_range(sales_start..=end);
            events.push((at, Event::Adjust));
        }
        events.sort_by_key(|(at, _)| *at);
        for (at, event) in events {
            sim.receive_until(at);
            match event {
                Event::Fulfil(o) => {
                    let order = &sales[o];
                    let (id, warehouse) = (order.id, order.warehouse);
                    for line in &order.lines {
                        sim.ensure(&items, line.item, warehouse, line.quantity, at);
                        sim.record(line.item, warehouse, -line.quantity, ("sale", id, None), at);
                        let slot = sim.slot(line.item, warehouse);
                        if !sim.on_order[slot] && sim.level[slot] <= sim.reorder_point[slot] {
                            sim.reorder(&items, line.item, warehouse, at);
                        }
                    }
                }
                Event::Adjust => sim.adjust(&items, at),
            }
        }
        sim.receive_until(end);

        // Invoices for most fulfilled orders, numbered in the order they were issued.
        let mut invoices: Vec<Invoice> = Vec::new();
        for (o, order) in sales.iter().enumerate() {
            let Some(fulfilled) = order.fulfilled else {
                continue;
            };
            if !money.gen_bool(0.92) {
                continue;
            }
            let issued = if money.gen_bool(0.6) {
                fulfilled + money.gen_range(MINUTE..2 * HOUR)
            } else {
                fulfilled + money.gen_range(HOUR..3 * DAY)
            };
            if issued > end {
                continue;
            }
            invoices.push(Invoice {
                id: sim.ids.next(),
                order: o,
                issued,
                paid_cents: 0,
                updated: issued,
            });
        }
        invoices.sort_by_key(|inv| (inv.issued, inv.order));

        // Payments: most pay in full (some in two instalments), some only part, a few not
        // at all; anything that would fall after now has not happened yet.
        let mut payments: Vec<Payment> = Vec::new();
        for (n, invoice) in invoices.iter_mut().enumerate() {
            let total = sales[invoice.order].totals().2;
            let roll: f64 = money.gen();
            let amounts: Vec<i64> = if total < 2 || roll < 0.68 {
                vec![total]
            } else if roll < 0.80 {
                let first = ((total as f64) * money.gen_range(0.3..0.7)).round() as i64;
                let first = first.clamp(1, total - 1);
                vec![first, total - first]
            } else if roll < 0.92 {
                let part = ((total as f64) * money.gen_range(0.2..0.8)).round() as i64;
                vec![part.clamp(1, total - 1)]
            } else {
                Vec::new()
            };
            let mut at = invoice.issued;
            for (k, amount) in amounts.into_iter().enumerate() {
                at += if k == 0 {
                    money.gen_range(HOUR..40 * DAY)
                } else {
                    money.gen_range(DAY..30 * DAY)
                };
                if at > end || total == 0 {
                    break;
                }
                payments.push(Payment {
                    id: sim.ids.next(),
                    invoice: n,
                    amount_cents: amount,
                    at,
                });
                invoice.paid_cents += amount;
                invoice.updated = at;
            }
        }

        let levels = sim
            .level
            .iter()
            .zip(&sim.last_change)
            .map(|(&q, &at)| (q, at))
            .collect();
        Plan {
            org_id,
            org_name,
            user_id,
            start,
            categories,
            tax_rates,
            warehouses,
            customers,
            vendors,
            items,
            purchases: sim.purchases,
            sales,
            invoices,
            payments,
            adjustments: sim.adjustments,
            movements: sim.movements,
            levels,
        }
    }

    /// (item, warehouse, quantity, last change) of every (item, warehouse) that has moved.
    fn stock_levels(&self) -> Vec<(usize, usize, i64, Ms)> {
        let w = self.warehouses.len();
        self.levels
            .iter()
            .enumerate()
            .filter_map(|(slot, &(q, at))| at.map(|at| (slot / w, slot % w, q, at)))
            .collect()
    }

    fn summary(&self) -> Summary {
        let count = |s: Status| self.sales.iter().filter(|o| o.status == s).count();
        Summary {
            organization_id: self.org_id.to_string(),
            organization_name: self.org_name.clone(),
            categories: self.categories.len(),
            tax_rates: self.tax_rates.len(),
            warehouses: self.warehouses.len(),
            items: self.items.len(),
            customers: self.customers.len(),
            vendors: self.vendors.len(),
            sales_orders: self.sales.len(),
            fulfilled: count(Status::Fulfilled),
            open: count(Status::Open),
            cancelled: count(Status::Cancelled),
            sales_lines: self.sales.iter().map(|o| o.lines.len()).sum(),
            purchase_orders: self.purchases.len(),
            purchase_orders_open: self
                .purchases
                .iter()
                .filter(|p| p.received.is_none())
                .count(),
            purchase_lines: self.purchases.iter().map(|p| p.lines.len()).sum(),
            invoices: self.invoices.len(),
            payments: self.payments.len(),
            adjustments: self.adjustments.len(),
            movements: self.movements.len(),
            stock_levels: self.levels.iter().filter(|(_, at)| at.is_some()).count(),
            ..Summary::default()
        }
    }
}

#[cfg(test)]
mod tests {
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
            "demo@ims.example",
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
        let a = Plan::generate(&options(&["--orders", "300"]), "a@x.example", NOW);
        let b = Plan::generate(&options(&["--orders", "300"]), "a@x.example", NOW + DAY / 3);
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
        let c = Plan::generate(
            &options(&["--orders", "300", "--seed", "7"]),
            "a@x.example",
            NOW,
        );
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
