//! Writing a plan: multi-row `INSERT … VALUES (…), (…)` statements in chunks, in one
//! transaction, with progress on stderr.

use super::*;

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
pub(super) fn values_sql(backend: Backend, table: &str, columns: &[&str], rows: usize) -> String {
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

/// One table's rows, as the plan produces them: every table is written by the same loop
/// ([`insert`]), in the order of the list (parents before children).
struct TableRows<'a> {
    /// The table.
    table: &'static str,
    /// Its columns, in the order of each row's values.
    columns: &'static [&'static str],
    /// How many rows `rows` yields (for the progress bar and the chunk size).
    count: usize,
    /// The rows' values.
    rows: Box<dyn Iterator<Item = Vec<Val>> + 'a>,
}

/// Inserts the rows of `table` in multi-row statements.
async fn insert(
    conn: &mut AnyConnection,
    backend: Backend,
    progress: &Progress,
    table: TableRows<'_>,
) -> Result<(), sqlx::Error> {
    let TableRows {
        table,
        columns,
        count,
        rows,
    } = table;
    let stage = progress.bar(table, count);
    let per_statement = (MAX_PARAMS / columns.len()).max(1);
    let full_sql = values_sql(backend, table, columns, per_statement.min(count.max(1)));
    let mut values = Vec::with_capacity(per_statement.min(count) * columns.len());
    let mut in_chunk = 0;
    for row in rows {
        values.extend(row);
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

pub(super) async fn write(
    tx: &mut crate::db::WriteTx,
    backend: Backend,
    plan: &Plan,
    email: &str,
    password_hash: &str,
    progress: &Progress,
) -> Result<(), sqlx::Error> {
    let conn: &mut AnyConnection = tx;
    let org = plan.org_id.to_string();
    let org = org.as_str();
    let user = plan.user_id.to_string();
    let user = user.as_str();
    let start = plan.start;

    sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(org)
        .bind(&plan.org_name)
        .bind(stamp(start))
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO users (id, organization_id, email, password_hash, name, role, created_at)
         VALUES ($1, $2, $3, $4, $5, 'admin', $6)",
    )
    .bind(plan.user_id.to_string())
    .bind(org)
    .bind(email)
    .bind(password_hash)
    .bind("Demo Admin")
    .bind(stamp(start))
    .execute(&mut *conn)
    .await?;

    let mut tables: Vec<TableRows<'_>> = Vec::new();
    // Parents before children: a row's foreign key must find its parent already there.
    for top_level in [true, false] {
        let rows: Vec<&Category> = plan
            .categories
            .iter()
            .filter(|c| c.parent.is_none() == top_level)
            .collect();
        tables.push(TableRows {
            table: "categories",
            columns: &[
                "id",
                "organization_id",
                "name",
                "parent_id",
                "created_at",
                "updated_at",
            ],
            count: rows.len(),
            rows: Box::new(rows.into_iter().map(move |c| {
                vec![
                    id(c.id),
                    text(org),
                    text(c.name.clone()),
                    Val::OptText(c.parent.map(|p| plan.categories[p].id.to_string())),
                    ts(start),
                    ts(start),
                ]
            })),
        });
    }
    tables.push(TableRows {
        table: "tax_rates",
        columns: &[
            "id",
            "organization_id",
            "name",
            "rate_bps",
            "created_at",
            "updated_at",
        ],
        count: plan.tax_rates.len(),
        rows: Box::new(plan.tax_rates.iter().map(move |t| {
            vec![
                id(t.id),
                text(org),
                text(t.name),
                Val::Int(t.bps),
                ts(start),
                ts(start),
            ]
        })),
    });
    tables.push(TableRows {
        table: "warehouses",
        columns: &[
            "id",
            "organization_id",
            "name",
            "code",
            "created_at",
            "updated_at",
        ],
        count: plan.warehouses.len(),
        rows: Box::new(plan.warehouses.iter().map(move |w| {
            vec![
                id(w.id),
                text(org),
                text(w.name.clone()),
                text(w.code.clone()),
                ts(start),
                ts(start),
            ]
        })),
    });
    let contacts = plan
        .customers
        .iter()
        .map(|c| ("customer", c))
        .chain(plan.vendors.iter().map(|c| ("vendor", c)));
    tables.push(TableRows {
        table: "contacts",
        columns: &[
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
        count: plan.customers.len() + plan.vendors.len(),
        rows: Box::new(contacts.map(move |(kind, c)| {
            vec![
                id(c.id),
                text(org),
                text(kind),
                text(c.name.clone()),
                opt(c.email.as_deref()),
                opt(c.phone.as_deref()),
                opt(c.address.as_deref()),
                ts(start),
                ts(start),
            ]
        })),
    });
    tables.push(TableRows {
        table: "items",
        columns: &[
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
        count: plan.items.len(),
        rows: Box::new(plan.items.iter().map(move |i| {
            vec![
                id(i.id),
                text(org),
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
            ]
        })),
    });
    tables.push(TableRows {
        table: "purchase_orders",
        columns: &[
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
        count: plan.purchases.len(),
        rows: Box::new(plan.purchases.iter().map(move |p| {
            vec![
                id(p.id),
                text(org),
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
            ]
        })),
    });
    tables.push(TableRows {
        table: "purchase_order_lines",
        columns: &[
            "id",
            "organization_id",
            "purchase_order_id",
            "line_no",
            "item_id",
            "quantity",
            "unit_cost_cents",
            "total_cents",
        ],
        count: plan.purchases.iter().map(|p| p.lines.len()).sum(),
        rows: Box::new(
            plan.purchases
                .iter()
                .flat_map(|p| p.lines.iter().enumerate().map(move |(n, l)| (p, n, l)))
                .map(move |(p, n, l)| {
                    vec![
                        id(l.id),
                        text(org),
                        id(p.id),
                        Val::Int(n as i64 + 1),
                        id(plan.items[l.item].id),
                        Val::Int(l.quantity),
                        Val::Int(l.unit_cost_cents),
                        Val::Int(l.quantity * l.unit_cost_cents),
                    ]
                }),
        ),
    });
    tables.push(TableRows {
        table: "sales_orders",
        columns: &[
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
        count: plan.sales.len(),
        rows: Box::new(plan.sales.iter().map(move |o| {
            let (subtotal, tax, total) = o.totals();
            vec![
                id(o.id),
                text(org),
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
            ]
        })),
    });
    tables.push(TableRows {
        table: "sales_order_lines",
        columns: &[
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
        count: plan.sales.iter().map(|o| o.lines.len()).sum(),
        rows: Box::new(
            plan.sales
                .iter()
                .flat_map(|o| o.lines.iter().enumerate().map(move |(n, l)| (o, n, l)))
                .map(move |(o, n, l)| {
                    vec![
                        id(l.id),
                        text(org),
                        id(o.id),
                        Val::Int(n as i64 + 1),
                        id(plan.items[l.item].id),
                        Val::Int(l.quantity),
                        Val::Int(l.unit_price_cents),
                        Val::Int(l.tax_rate_bps),
                        Val::Int(l.subtotal()),
                        Val::Int(l.tax()),
                        Val::Int(l.subtotal() + l.tax()),
                    ]
                }),
        ),
    });
    tables.push(TableRows {
        table: "stock_adjustments",
        columns: &[
            "id",
            "organization_id",
            "item_id",
            "warehouse_id",
            "quantity_delta",
            "reason",
            "created_by",
            "created_at",
        ],
        count: plan.adjustments.len(),
        rows: Box::new(plan.adjustments.iter().map(move |a| {
            vec![
                id(a.id),
                text(org),
                id(plan.items[a.item].id),
                id(plan.warehouses[a.warehouse].id),
                Val::Int(a.delta),
                text(a.reason),
                text(user),
                ts(a.at),
            ]
        })),
    });
    tables.push(TableRows {
        table: "stock_movements",
        columns: &[
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
        count: plan.movements.len(),
        rows: Box::new(plan.movements.iter().map(move |m| {
            vec![
                id(m.id),
                text(org),
                id(plan.items[m.item].id),
                id(plan.warehouses[m.warehouse].id),
                Val::Int(m.delta),
                text(m.source),
                id(m.source_id),
                opt(m.reason),
                text(user),
                ts(m.at),
            ]
        })),
    });
    let levels = plan.stock_levels();
    tables.push(TableRows {
        table: "stock_levels",
        columns: &[
            "organization_id",
            "item_id",
            "warehouse_id",
            "quantity",
            "updated_at",
        ],
        count: levels.len(),
        rows: Box::new(
            levels
                .into_iter()
                .map(move |(item, warehouse, quantity, at)| {
                    vec![
                        text(org),
                        id(plan.items[item].id),
                        id(plan.warehouses[warehouse].id),
                        Val::Int(quantity),
                        ts(at),
                    ]
                }),
        ),
    });
    tables.push(TableRows {
        table: "invoices",
        columns: &[
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
        count: plan.invoices.len(),
        rows: Box::new(plan.invoices.iter().enumerate().map(move |(n, inv)| {
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
            vec![
                id(inv.id),
                text(org),
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
            ]
        })),
    });
    tables.push(TableRows {
        table: "payments",
        columns: &[
            "id",
            "organization_id",
            "invoice_id",
            "amount_cents",
            "paid_at",
            "created_at",
        ],
        count: plan.payments.len(),
        rows: Box::new(plan.payments.iter().map(move |p| {
            vec![
                id(p.id),
                text(org),
                id(plan.invoices[p.invoice].id),
                Val::Int(p.amount_cents),
                ts(p.at),
                ts(p.at),
            ]
        })),
    });
    for table in tables {
        insert(conn, backend, progress, table).await?;
    }
    // The API's next invoice continues the sequence the seed started.
    sqlx::query("INSERT INTO invoice_counters (organization_id, last_number) VALUES ($1, $2)")
        .bind(org)
        .bind(plan.invoices.len() as i64)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
