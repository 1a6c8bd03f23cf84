-- Indexes for the dashboard and reports, which select sales by when they were fulfilled and
-- purchases by when they were received: the status indexes of the previous migration end in
-- created_at, which cannot serve a fulfilled_at/received_at range.
CREATE INDEX sales_orders_org_status_fulfilled_idx
    ON sales_orders (organization_id, status, fulfilled_at);
CREATE INDEX purchase_orders_org_status_received_idx
    ON purchase_orders (organization_id, status, received_at);
