//! The statuses of orders and invoices: closed sets, so they are enums at the edges (the
//! compiler checks every comparison and assignment), stored and sent as today's snake_case
//! strings. `serde` maps them for JSON, `TryFrom<String>` for rows (`#[sqlx(try_from =
//! "String")]`), and [`Status::as_str`] for binding.

use serde::{Deserialize, Serialize};

/// What every status type offers.
pub trait Status: Copy + Sized + 'static {
    /// Every value's name, in the order they are documented.
    const NAMES: &'static [&'static str];

    /// The stored and serialized name.
    fn as_str(self) -> &'static str;
}

/// A stored status that is not one of its type's names.
#[derive(Debug, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(String);

macro_rules! status {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl Status for $name {
            const NAMES: &'static [&'static str] = &[$($text),+];

            fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownStatus;

            fn try_from(text: String) -> Result<Self, Self::Error> {
                match text.as_str() {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownStatus(text)),
                }
            }
        }
    };
}

status! {
    /// A sales order: open until fulfilled (stock leaves) or cancelled.
    SalesOrderStatus {
        /// Can still change.
        Open => "open",
        /// Its stock has left the warehouse.
        Fulfilled => "fulfilled",
        /// Withdrawn before fulfilment.
        Cancelled => "cancelled",
    }
}

status! {
    /// A purchase order: open until received (stock arrives) or cancelled.
    PurchaseOrderStatus {
        /// Can still change.
        Open => "open",
        /// Its stock has arrived.
        Received => "received",
        /// Withdrawn before receipt.
        Cancelled => "cancelled",
    }
}

status! {
    /// An invoice, by what has been paid of it.
    InvoiceStatus {
        /// Nothing paid yet.
        Unpaid => "unpaid",
        /// Some of the total paid.
        PartiallyPaid => "partially_paid",
        /// Paid in full.
        Paid => "paid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_rows_and_json() {
        for name in InvoiceStatus::NAMES {
            let status = InvoiceStatus::try_from(name.to_string()).expect("known");
            assert_eq!(status.as_str(), *name);
            assert_eq!(
                serde_json::to_value(status).expect("json"),
                serde_json::Value::from(*name)
            );
        }
        assert!(SalesOrderStatus::try_from("received".to_string()).is_err());
    }
}
