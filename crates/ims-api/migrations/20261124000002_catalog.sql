-- The catalog: categories, tax rates, warehouses, contacts, items, and the per-warehouse
-- stock levels items report as stockOnHand. Portable DDL, as in the auth migration.
--
-- Every table carries organization_id and a UNIQUE (organization_id, id), so references
-- between rows are composite foreign keys that include the organization: the database
-- itself refuses a row pointing into another organization, whatever the handlers check.
-- A NULL reference column leaves its foreign key unchecked (MATCH SIMPLE on both engines).
-- No ON DELETE actions: deleting a row that others refer to fails, and the API answers 409.
--
-- Lists sort by LOWER(name) so the order ignores case on both engines; the name indexes are
-- on that expression.

CREATE TABLE categories (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    parent_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (organization_id, id),
    FOREIGN KEY (organization_id, parent_id) REFERENCES categories (organization_id, id)
);
CREATE INDEX categories_org_name_idx ON categories (organization_id, LOWER(name));
-- Foreign-key checks on delete look children up by parent.
CREATE INDEX categories_parent_idx ON categories (organization_id, parent_id);

CREATE TABLE tax_rates (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    rate_bps BIGINT NOT NULL CHECK (rate_bps >= 0 AND rate_bps <= 100000),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (organization_id, id)
);
CREATE INDEX tax_rates_org_name_idx ON tax_rates (organization_id, LOWER(name));

CREATE TABLE warehouses (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    code TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (organization_id, id)
);
CREATE UNIQUE INDEX warehouses_org_code_idx ON warehouses (organization_id, code);
CREATE INDEX warehouses_org_name_idx ON warehouses (organization_id, LOWER(name));

CREATE TABLE contacts (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    contact_type TEXT NOT NULL CHECK (contact_type IN ('customer', 'vendor')),
    name TEXT NOT NULL,
    email TEXT,
    phone TEXT,
    address TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (organization_id, id)
);
CREATE INDEX contacts_org_name_idx ON contacts (organization_id, LOWER(name));
CREATE INDEX contacts_org_type_name_idx ON contacts (organization_id, contact_type, LOWER(name));

CREATE TABLE items (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    sku TEXT NOT NULL,
    description TEXT,
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    cost_cents BIGINT CHECK (cost_cents >= 0),
    category_id TEXT,
    tax_rate_id TEXT,
    -- NULL: the item is not watched for low stock.
    reorder_level BIGINT CHECK (reorder_level >= 0),
    unit TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (organization_id, id),
    FOREIGN KEY (organization_id, category_id) REFERENCES categories (organization_id, id),
    FOREIGN KEY (organization_id, tax_rate_id) REFERENCES tax_rates (organization_id, id)
);
CREATE UNIQUE INDEX items_org_sku_idx ON items (organization_id, sku);
CREATE INDEX items_org_name_idx ON items (organization_id, LOWER(name));
CREATE INDEX items_org_price_idx ON items (organization_id, price_cents);
CREATE INDEX items_org_created_idx ON items (organization_id, created_at);
CREATE INDEX items_org_category_idx ON items (organization_id, category_id);
CREATE INDEX items_org_tax_rate_idx ON items (organization_id, tax_rate_id);

-- Quantity of one item in one warehouse. Written by the stock operations (adjustments,
-- transfers, orders); items read the sum over warehouses as stockOnHand.
CREATE TABLE stock_levels (
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    item_id TEXT NOT NULL,
    warehouse_id TEXT NOT NULL,
    quantity BIGINT NOT NULL DEFAULT 0 CHECK (quantity >= 0),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (item_id, warehouse_id),
    FOREIGN KEY (organization_id, item_id) REFERENCES items (organization_id, id),
    FOREIGN KEY (organization_id, warehouse_id) REFERENCES warehouses (organization_id, id)
);
CREATE INDEX stock_levels_org_item_idx ON stock_levels (organization_id, item_id);
CREATE INDEX stock_levels_org_warehouse_idx ON stock_levels (organization_id, warehouse_id);
