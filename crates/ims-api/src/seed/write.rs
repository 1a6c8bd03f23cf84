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
