//! The words a demo organization is made of: item kinds with their vocabulary and price
//! ranges, brands, people's and companies' names, streets and cities, and the small
//! generators that combine them.

use super::*;

/// A leaf category's vocabulary.
pub(super) struct Kind {
    pub(super) parent: &'static str,
    pub(super) name: &'static str,
    pub(super) code: &'static str,
    pub(super) nouns: &'static [&'static str],
    pub(super) variants: &'static [&'static str],
    /// Price range in whole currency units.
    pub(super) price: (f64, f64),
    pub(super) unit: &'static str,
}

pub(super) const KINDS: &[Kind] = &[
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

pub(super) const BRANDS: &[&str] = &[
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
pub(super) const ADJECTIVES: &[&str] = &[
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
pub(super) const FEATURES: &[&str] = &[
    "Backed by a two-year warranty.",
    "A best seller with small businesses.",
    "Built for daily use.",
    "Ships in recyclable packaging.",
    "Tested to last.",
    "Our most popular size.",
];
pub(super) const CUSTOMER_FIRST: &[&str] = &[
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
pub(super) const CUSTOMER_SECOND: &[&str] = &[
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
pub(super) const CUSTOMER_SUFFIX: &[&str] = &["", " LLC", " Inc.", " & Co."];
pub(super) const VENDOR_FIRST: &[&str] = &[
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
pub(super) const VENDOR_SECOND: &[&str] = &[
    "Supply Co.",
    "Wholesale",
    "Distribution",
    "Manufacturing",
    "Trading",
    "Industrial Supply",
    "Imports",
    "Goods",
];
pub(super) const STREETS: &[&str] = &[
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
pub(super) const STREET_KINDS: &[&str] = &["St", "Ave", "Rd", "Blvd", "Way", "Lane"];
pub(super) const CITIES: &[(&str, &str)] = &[
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
pub(super) const WAREHOUSES: &[(&str, &str)] = &[
    ("Main Warehouse", "MAIN"),
    ("East Distribution Center", "EAST"),
    ("West Distribution Center", "WEST"),
    ("North Depot", "NORTH"),
    ("South Depot", "SOUTH"),
    ("Central Fulfillment", "CENTRAL"),
];
pub(super) const ORG_NAMES: &[&str] = &[
    "Harborview Supply Co.",
    "Bluefin Trading",
    "Summit Outfitters",
    "Lakeshore Goods",
    "Ironwood Merchants",
    "Northwind Provisions",
];
pub(super) const SALES_NOTES: &[&str] = &[
    "Leave at the loading dock",
    "Call before delivery",
    "Customer pickup",
    "Gift wrap requested",
    "Deliver after 10 am",
];
pub(super) const SHRINK_REASONS: &[&str] = &[
    "Damaged in storage",
    "Expired stock written off",
    "Lost in transit",
    "Cycle count correction",
];
pub(super) const GAIN_REASONS: &[&str] = &[
    "Found during cycle count",
    "Customer return restocked",
    "Cycle count correction",
];

pub(super) fn slug(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join("-")
}

pub(super) fn address(rng: &mut StdRng) -> String {
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
pub(super) fn phone(rng: &mut StdRng) -> String {
    format!(
        "+1-{}-555-01{:02}",
        rng.gen_range(201..990),
        rng.gen_range(0..100)
    )
}

/// Names from `first × second × suffix`, unique; numbered once the combinations run out.
pub(super) fn unique_names(
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
pub(super) fn price(range: (f64, f64), rng: &mut StdRng) -> i64 {
    let (lo, hi) = (range.0.ln(), range.1.ln());
    let units = rng.gen_range(lo..hi).exp().floor().max(1.0) as i64;
    let cents = if rng.gen_bool(0.7) { 99 } else { 49 };
    (units - 1) * 100 + cents
}
