//! The simulation: the organization's history generated in time order in memory, stock
//! tracked per (item, warehouse), so every sale takes only what is there and restocking
//! goes through purchase orders.

use super::words::*;
use super::*;

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
    pub(super) fn generate(options: &SeedOptions, now: Ms) -> Self {
        let rng = &mut StdRng::seed_from_u64(options.seed);
        // Ids are random, not seeded: the same seed in two databases must not give the same
        // organization id, which names its keys in a Redis the two may share.
        let ids = &mut Ids(StdRng::from_entropy());
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
    pub(super) fn stock_levels(&self) -> Vec<(usize, usize, i64, Ms)> {
        let w = self.warehouses.len();
        self.levels
            .iter()
            .enumerate()
            .filter_map(|(slot, &(q, at))| at.map(|at| (slot / w, slot % w, q, at)))
            .collect()
    }

    pub(super) fn summary(&self) -> Summary {
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
