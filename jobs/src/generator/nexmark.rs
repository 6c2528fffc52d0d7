//! Nexmark's bids as JSON records: the events of the Nexmark benchmark's queries q0, q1, q2, q5
//! and q7 (`riskstream bench nexmark`), made by the `nexmark` crate's port of the benchmark's
//! generator and written in the shape of [`BID_SCHEMA_DDL`].
//!
//! The generator makes people, auctions and bids in the benchmark's proportions (1 : 3 : 46);
//! only bids are kept, with the event times the full stream gives them, so a run of N bids is
//! the bid part of about N × 50 / 46 Nexmark events.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use nexmark::EventGenerator;
use nexmark::config::{NexmarkConfig, RateShape};
use nexmark::event::{Bid, Event};

use super::json::JsonObject;

/// A bid's columns, in Spark DDL: the schema a Nexmark job declares (`query.schema`). Prices
/// are in cents, as the generator makes them.
pub const BID_SCHEMA_DDL: &str = "auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, \
     url STRING, date_time TIMESTAMP, extra STRING";

/// [`BID_SCHEMA_DDL`] as an Arrow schema.
pub fn bid_schema() -> Result<SchemaRef, String> {
    riskstream_udfs::parse_ddl_schema(BID_SCHEMA_DDL).map(|fields| Arc::new(Schema::new(fields)))
}

/// The generator's settings for a run.
#[derive(Debug, Clone, Copy)]
pub struct NexmarkRun {
    /// Event time of the first event, ms since the epoch (fixed, so runs are comparable).
    pub base_time_ms: u64,
    /// Events per second of event time, all kinds together (the benchmark's `TPS`), held
    /// constant.
    pub events_per_second: usize,
}

/// The bids of a Nexmark stream as (key, JSON value) records. The key is the bid's number in
/// the stream, which spreads bids evenly over the partitions, as a round-robin producer would:
/// keyed by auction, the partition of the auction that is hot at the time runs ahead in event
/// time of the others, and a short watermark delay would take the others' bids for late.
pub fn bids(run: NexmarkRun) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> {
    let config = NexmarkConfig {
        base_time: run.base_time_ms,
        rate_shape: RateShape::Square,
        first_rate: run.events_per_second,
        next_rate: run.events_per_second,
        ..NexmarkConfig::default()
    };
    EventGenerator::new(config)
        .filter_map(|event| match event {
            Event::Bid(bid) => Some(bid_json(&bid)),
            Event::Person(_) | Event::Auction(_) => None,
        })
        .enumerate()
        .map(|(n, value)| (n.to_string().into_bytes(), value))
}

fn bid_json(bid: &Bid) -> Vec<u8> {
    let mut value = Vec::with_capacity(96 + bid.url.len() + bid.extra.len());
    let mut object = JsonObject::begin(&mut value);
    object
        .int("auction", bid.auction as i64)
        .int("bidder", bid.bidder as i64)
        .int("price", bid.price as i64)
        .str("channel", &bid.channel)
        .str("url", &bid.url)
        .timestamp("date_time", bid.date_time as i64)
        .str("extra", &bid.extra);
    object.end();
    value
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};

    use super::*;
    use crate::decode::JsonDecoder;

    #[test]
    fn bids_decode_into_their_schema_at_the_rate_asked() {
        let run = NexmarkRun {
            base_time_ms: 1_767_225_600_000,
            events_per_second: 10_000,
        };
        let records: Vec<_> = bids(run).take(4_600).collect();
        let schema = bid_schema().unwrap();
        let values: Vec<&[u8]> = records.iter().map(|(_, v)| v.as_slice()).collect();
        let decoded = JsonDecoder::new(schema)
            .unwrap()
            .decode(&datafusion::arrow::array::BinaryArray::from(values))
            .unwrap();
        assert!(decoded.rejected.is_empty());
        let batch = &decoded.batches[0];
        assert_eq!(batch.num_rows(), 4_600);
        for (n, (key, _)) in records.iter().enumerate() {
            assert_eq!(key, n.to_string().as_bytes());
        }
        // 4,600 bids are 5,000 events: half a second of event time at 10,000 events/s.
        let times = batch.column(5).as_primitive::<TimestampMicrosecondType>();
        let first = times.value(0);
        let last = times.value(4_599);
        assert!(first >= 1_767_225_600_000_000, "{first}");
        assert!(
            (490_000..=510_000).contains(&(last - first)),
            "{}",
            last - first
        );
        assert!(
            batch
                .column(2)
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .all(|p| *p > 0)
        );
    }
}
