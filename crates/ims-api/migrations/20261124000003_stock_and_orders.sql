-- Stock operations, sales and purchase orders, invoices and payments. Portable DDL; composite
-- (organization_id, id) foreign keys so no row can point into another organization.

-- The ledger: one row per change of a stock level, whatever caused it. The sum of a
-- (item, warehouse)'s deltas equals its stock_levels.quantity.
CREATE TABLE stock_movements (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    item_id TEXT NOT NULL,
    warehouse_id TEXT NOT NULL,
    quantity_delta BIGINT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('adjustment', 'transfer', 'sale', 'purchase')),
    source_id TEXT NOT NULL,
    reason TEXT,
    created_by TEXT,
    created_at TEXT NOT NULL,
    FOREIGN KEY (organization_id, item_id) REFERENCES items (organization_id, id),
    FOREIGN KEY (organization_id, warehouse_id) REFERENCES warehouses (organization_id, id)
);
CREATE INDEX stock_movements_org_created_idx ON stock_movements (organization_id, created_at);
CREATE INDEX stock_movements_org_item_idx ON stock_movements (organization_id, item_id, created_at);
CREATE INDEX stock_movements_org_warehouse_idx ON stock_movements (organization_id, warehouse_id, created_at);

CREATE TABLE stock_adjustments (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    item_id TEXT NOT NULL,
    warehouse_id TEXT NOT NULL,
    quantity_delta BIGINT NOT NULL CHECK (quantity_delta <> 0),
    reason TEXT NOT NULL,
    created_by TEXT,
    created_at TEXT NOT NULL,
    FOREIGN KEY (organization_id, item_id) REFERENCES items (organization_id, id),
    FOREIGN KEY (organization_id, warehouse_id) REFERENCES warehouses (organization_id, id)
);
CREATE INDEX stock_adjustments_org_created_idx ON stock_adjustments (organization_id, created_at);

CREATE TABLE stock_transfers (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    item_id TEXT NOT NULL,
    from_warehouse_id TEXT NOT NULL,
    to_warehouse_id TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    created_by TEXT,
    created_at TEXT NOT NULL,
    FOREIGN KEY (organization_id, item_id) REFERENCES items (organization_id, id),
    FOREIGN KEY (organization_id, from_warehouse_id) REFERENCES warehouses (organization_id, id),
    FOREIGN KEY (organization_id, to_warehouse_id) REFERENCES warehouses (organization_id, id)
);
CREATE INDEX stock_transfers_org_created_idx ON stock_transfers (organization_id, created_at);

CREATE TABLE sales_orders (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    customer_id TEXT NOT NULL,
    warehouse_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'fulfilled', 'cancelled')),
    notes TEXT,
    subtotal_cents BIGINT NOT NULL,
    tax_cents BIGINT NOT NULL,
    total_cents BIGINT NOT NULL,
    fulfilled_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (organization_id, id),
    FOREIGN KEY (organization_id, customer_id) REFERENCES contacts (organization_id, id),
    FOREIGN KEY (organization_id, warehouse_id) REFERENCES warehouses (organization_id, id)
);
CREATE INDEX sales_orders_org_created_idx ON sales_orders (organization_id, created_at);
CREATE INDEX sales_orders_org_status_idx ON sales_orders (organization_id, status, created_at);
CREATE INDEX sales_orders_org_customer_idx ON sales_orders (organization_id, customer_id, created_at);
CREATE INDEX sales_orders_org_warehouse_idx ON sales_orders (organization_id, warehouse_id);

CREATE TABLE sales_order_lines (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    sales_order_id TEXT NOT NULL,
    line_no BIGINT NOT NULL,
    item_id TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents >= 0),
    tax_rate_bps BIGINT NOT NULL,
    subtotal_cents BIGINT NOT NULL,
    tax_cents BIGINT NOT NULL,
    total_cents BIGINT NOT NULL,
    FOREIGN KEY (organization_id, sales_order_id) REFERENCES sales_orders (organization_id, id),
    FOREIGN KEY (organization_id, item_id) REFERENCES items (organization_id, id)
);
CREATE INDEX sales_order_lines_order_idx ON sales_order_lines (sales_order_id, line_no);
CREATE INDEX sales_order_lines_org_item_idx ON sales_order_lines (organization_id, item_id);

CREATE TABLE purchase_orders (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    vendor_id TEXT NOT NULL,
    warehouse_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'received', 'cancelled')),
    notes TEXT,
    total_cents BIGINT NOT NULL,
    received_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (organization_id, id),
    FOREIGN KEY (organization_id, vendor_id) REFERENCES contacts (organization_id, id),
    FOREIGN KEY (organization_id, warehouse_id) REFERENCES warehouses (organization_id, id)
);
CREATE INDEX purchase_orders_org_created_idx ON purchase_orders (organization_id, created_at);
CREATE INDEX purchase_orders_org_status_idx ON purchase_orders (organization_id, status, created_at);
CREATE INDEX purchase_orders_org_vendor_idx ON purchase_orders (organization_id, vendor_id, created_at);
CREATE INDEX purchase_orders_org_warehouse_idx ON purchase_orders (organization_id, warehouse_id);

CREATE TABLE purchase_order_lines (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    purchase_order_id TEXT NOT NULL,
    line_no BIGINT NOT NULL,
    item_id TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    unit_cost_cents BIGINT NOT NULL CHECK (unit_cost_cents >= 0),
    total_cents BIGINT NOT NULL,
    FOREIGN KEY (organization_id, purchase_order_id) REFERENCES purchase_orders (organization_id, id),
    FOREIGN KEY (organization_id, item_id) REFERENCES items (organization_id, id)
);
CREATE INDEX purchase_order_lines_order_idx ON purchase_order_lines (purchase_order_id, line_no);
CREATE INDEX purchase_order_lines_org_item_idx ON purchase_order_lines (organization_id, item_id);

-- The last invoice number handed out per organization. Incremented inside the transaction
-- that inserts the invoice, so a failed insert rolls the number back (no gaps) and the row
-- lock serialises concurrent invoices, also across API instances (no duplicates).
CREATE TABLE invoice_counters (
    organization_id TEXT PRIMARY KEY REFERENCES organizations (id),
    last_number BIGINT NOT NULL
);

CREATE TABLE invoices (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    number TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    sales_order_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('unpaid', 'partially_paid', 'paid')),
    subtotal_cents BIGINT NOT NULL,
    tax_cents BIGINT NOT NULL,
    total_cents BIGINT NOT NULL,
    paid_cents BIGINT NOT NULL CHECK (paid_cents >= 0),
    issued_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (organization_id, id),
    UNIQUE (organization_id, sequence),
    UNIQUE (organization_id, sales_order_id),
    FOREIGN KEY (organization_id, sales_order_id) REFERENCES sales_orders (organization_id, id),
    FOREIGN KEY (organization_id, customer_id) REFERENCES contacts (organization_id, id)
);
CREATE INDEX invoices_org_issued_idx ON invoices (organization_id, issued_at);
CREATE INDEX invoices_org_status_idx ON invoices (organization_id, status, issued_at);
CREATE INDEX invoices_org_customer_idx ON invoices (organization_id, customer_id);

CREATE TABLE payments (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    invoice_id TEXT NOT NULL,
    amount_cents BIGINT NOT NULL CHECK (amount_cents > 0),
    paid_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    FOREIGN KEY (organization_id, invoice_id) REFERENCES invoices (organization_id, id)
);
CREATE INDEX payments_invoice_idx ON payments (invoice_id, paid_at);
CREATE INDEX payments_org_paid_idx ON payments (organization_id, paid_at);
