//! The built-in `nexmark` generator connector. It owns the Nexmark benchmark's event model (one
//! stream of persons, auctions and bids, as the Nexmark project's `NexmarkGenerator`,
//! `GeneratorConfig` and `*Generator` model classes define it), the options of the project's
//! Flink connector, the Arrow layout of Flink's `nexmark` table, and a newline-delimited JSON
//! writer for the same events. Every event is a pure function of (config, seed, event index):
//! randomness comes from a counter-based SplitMix64 keyed by the event id and, inside an event,
//! by the field, so parallel splits and restored sources reproduce the stream exactly and
//! columns a query does not read are never generated.
//!
//! Where this deliberately differs from the Java generator:
//! - the Java generator draws from one unseeded `SplittableRandom`; we draw per event and field
//!   from a seed, so the *content* of random fields differs while ids, proportions, hot-key
//!   structure, sizes and timestamps follow the model;
//! - a source of `p` splits generates the one global stream with split `i` taking events
//!   `i, i + p, i + 2p, …` (the Java source gives each split a parallel timeline of its own);
//!   the union over splits is the same stream whatever `p` is, and every split advances through
//!   event time at the same pace, which keeps watermarks aligned;
//! - the `extra` padding is sized from the drawn lengths of the other strings before their
//!   spaces are trimmed, so it can be computed without generating those strings;
//! - the `extra` padding is cut from a smaller pool of random letters (64 KiB instead of 1 MiB
//!   by default) so that copying it stays in cache;
//! - bid and auction prices come from a table and a cubic step (only IEEE `+ *`) instead of the
//!   platform's `pow`, so a restarted worker on another machine computes identical prices; they
//!   are within 2e-9 of Nexmark's `round(100 * 10^(6u))`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{Arc, OnceLock};

use super::split::{SplitGenerator, SplitLayout};
use super::util::{
    BadOption, mix64, parse_base_time, parse_bool, parse_duration_ms, parse_memory_size, parse_positive, parse_u32,
    parse_u64,
};
use arrow::array::{ArrayRef, Int32Array, Int64Array, StringArray, StructArray, TimestampMillisecondArray};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use weir_dataflow::calendar::civil_from_days;

// ---------------------------------------------------------------------------------------------
// The model's constants (Nexmark's `GeneratorConfig`, `PersonGenerator`, `AuctionGenerator`,
// `BidGenerator`, `StringsGenerator`).
// ---------------------------------------------------------------------------------------------

const FIRST_PERSON_ID: i64 = 1000;
const FIRST_AUCTION_ID: i64 = 1000;
const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: u64 = 5;
/// Ids a little ahead of the last one generated, so bids and auctions sometimes refer to a
/// person or auction that appears slightly later (as the model intends).
const PERSON_ID_LEAD: i64 = 10;
const AUCTION_ID_LEAD: i64 = 10;
const HOT_SELLER_BATCH: i64 = 100;
const HOT_AUCTION_BATCH: i64 = 100;
const HOT_BIDDER_BATCH: i64 = 100;
const HOT_CHANNELS_RATIO: u64 = 2;
const CHANNELS_NUMBER: usize = 10_000;
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const MIN_STRING_LENGTH: u64 = 3;
/// Flink's source factory builds its `GeneratorConfig` with `firstEventId = 1` and
/// `firstEventNumber = 1`: the event at stream position `n` has event number `n + 1` (which
/// sets its timestamp) and event id `n + 2` (which sets its kind and ids).
const FIRST_EVENT_NUMBER: u64 = 1;
const FIRST_EVENT_ID: u64 = 1;
/// `extra` strings are slices of one pool of random letters, as in `StringsGenerator`. Java's
/// pool is 1 MiB; ours is as small as the largest `extra` allows (64 KiB by default) so that
/// copying extras hits the cache: it is padding, read only for its length and letter counts.
const MIN_EXTRA_POOL_BYTES: usize = 64 << 10;
/// Keeps the largest `extra` (average + 20 %) well inside a pool of at most 1 MiB.
const MAX_AVG_EVENT_BYTES: u32 = 256 * 1024;
/// Byte size the model charges for an auction's five numeric/timestamp fields and a bid's
/// four, as the Java generators do.
const AUCTION_FIXED_BYTES: u64 = 40;
const BID_FIXED_BYTES: u64 = 32;
const CREDIT_CARD_BYTES: u64 = 19;

const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] =
    ["Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent", "Cheyenne"];
const FIRST_NAMES: [&str; 11] =
    ["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"];
const LAST_NAMES: [&str; 9] = ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"];

/// Children of the `person` column, in table order.
pub const PERSON_FIELDS: [&str; 8] = ["id", "name", "emailAddress", "creditCard", "city", "state", "dateTime", "extra"];
/// Children of the `auction` column, in table order.
pub const AUCTION_FIELDS: [&str; 10] =
    ["id", "itemName", "description", "initialBid", "reserve", "dateTime", "expires", "seller", "category", "extra"];
/// Children of the `bid` column, in table order.
pub const BID_FIELDS: [&str; 7] = ["auction", "bidder", "price", "channel", "url", "dateTime", "extra"];

/// `event_type` values.
pub const EVENT_TYPE_PERSON: i32 = 0;
pub const EVENT_TYPE_AUCTION: i32 = 1;
pub const EVENT_TYPE_BID: i32 = 2;

// ---------------------------------------------------------------------------------------------
// Errors and configuration
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NexmarkError {
    #[error("unknown nexmark option '{name}'; valid options are: {valid}")]
    UnknownOption { name: String, valid: String },
    #[error("invalid value '{value}' for nexmark option '{option}': {reason}")]
    InvalidOption { option: String, value: String, reason: String },
    #[error("invalid nexmark configuration: {0}")]
    InvalidConfig(String),
    #[error("unknown nexmark column '{path}'; use 'event_type', 'person', 'auction', 'bid' or '<struct>.<field>'")]
    UnknownColumn { path: String },
}

/// The options [`NexmarkConfig::from_options`] accepts, as the planner validates them: the
/// Nexmark project's Flink connector options (`NexmarkSourceOptions`) plus `seed` and
/// `base-time`.
fn valid_options() -> String {
    weir_dataflow::sql::connectors::connector_options("nexmark").unwrap_or(&[]).join(", ")
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NexmarkConfig {
    /// Events in the whole stream (all splits); `None` is unbounded. Flink's `events.num`
    /// (0 = unbounded) capped by `stop-at`.
    pub events: Option<u64>,
    /// Events per second of event time over the whole stream (`first-event.rate`).
    pub rate: u64,
    /// Event time of the stream's start in ms since the epoch (UTC). Flink's connector uses
    /// the wall clock at job creation; a fixed value keeps runs reproducible, so whoever plans
    /// the job should fix it once (e.g. to the job's creation time) and keep it across restarts.
    pub base_time_ms: i64,
    pub seed: u64,
    /// Emit events no faster than their event time advances (`rate.limited = true` or
    /// `max-emit-speed = false`). Pacing is the caller's job; see
    /// [`NexmarkGenerator::next_event_timestamp`].
    pub rate_limited: bool,
    /// Keep the source running (idle) after a bounded stream is exhausted (`keep-alive`).
    pub keep_alive: bool,
    pub person_proportion: u32,
    pub auction_proportion: u32,
    pub bid_proportion: u32,
    pub avg_person_bytes: u32,
    pub avg_auction_bytes: u32,
    pub avg_bid_bytes: u32,
    /// A bid goes to a hot auction with probability `1 - 1/ratio`.
    pub hot_auction_ratio: u32,
    /// An auction is by a hot seller with probability `1 - 1/ratio`.
    pub hot_sellers_ratio: u32,
    /// A bid is by a hot bidder with probability `1 - 1/ratio`.
    pub hot_bidders_ratio: u32,
    /// Auctions a bid may refer to (the most recent ones), and the horizon of auction expiry.
    pub num_in_flight_auctions: u32,
    /// People a new auction or bid may refer to (the most recent ones).
    pub num_active_people: u32,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        NexmarkConfig {
            events: None,
            // Nexmark's `first-event.rate` default.
            rate: 10_000,
            base_time_ms: 1_704_067_200_000, // 2024-01-01 00:00:00 UTC
            seed: 42,
            rate_limited: false,
            keep_alive: false,
            person_proportion: 1,
            auction_proportion: 3,
            bid_proportion: 46,
            avg_person_bytes: 200,
            avg_auction_bytes: 500,
            avg_bid_bytes: 100,
            hot_auction_ratio: 2,
            hot_sellers_ratio: 4,
            hot_bidders_ratio: 4,
            num_in_flight_auctions: 100,
            num_active_people: 1000,
        }
    }
}

impl NexmarkConfig {
    /// Reads the table's `WITH` options. Options that Nexmark's current generator accepts but
    /// ignores (`next-event.rate`, `rate.shape`, `rate.period`) are validated and ignored too.
    pub fn from_options(opts: &BTreeMap<String, String>) -> Result<Self, NexmarkError> {
        let mut config = NexmarkConfig::default();
        let mut events_num: u64 = 0;
        let mut stop_at: Option<u64> = None;
        let mut paced_by_rate_limited = false;
        let mut max_emit_speed = true;
        for (key, value) in opts {
            let v = value.trim();
            match key.as_str() {
                "events.num" => events_num = parse_u64(key, v)?,
                "first-event.rate" => config.rate = parse_positive(key, v)?,
                "next-event.rate" => {
                    parse_positive(key, v)?;
                }
                "rate.shape" => {
                    if !v.eq_ignore_ascii_case("square") && !v.eq_ignore_ascii_case("sine") {
                        return Err(invalid(key, value, "expected 'SQUARE' or 'SINE'"));
                    }
                }
                "rate.period" => {
                    parse_duration_ms(key, v)?;
                }
                "rate.limited" => paced_by_rate_limited = parse_bool(key, v)?,
                "max-emit-speed" => max_emit_speed = parse_bool(key, v)?,
                "keep-alive" => config.keep_alive = parse_bool(key, v)?,
                "stop-at" => {
                    let n: i64 = v.parse().map_err(|_| invalid(key, value, "expected an integer"))?;
                    // Nexmark's "no stop" value is -1; any negative means the same here.
                    stop_at = u64::try_from(n).ok();
                }
                "person.proportion" => config.person_proportion = parse_u32(key, v)?,
                "auction.proportion" => config.auction_proportion = parse_u32(key, v)?,
                "bid.proportion" => config.bid_proportion = parse_u32(key, v)?,
                "person.avg-size" => config.avg_person_bytes = parse_memory_size(key, v)?,
                "auction.avg-size" => config.avg_auction_bytes = parse_memory_size(key, v)?,
                "bid.avg-size" => config.avg_bid_bytes = parse_memory_size(key, v)?,
                "bid.hot-ratio.auctions" => config.hot_auction_ratio = parse_u32(key, v)?,
                "bid.hot-ratio.bidders" => config.hot_bidders_ratio = parse_u32(key, v)?,
                "auction.hot-ratio.sellers" => config.hot_sellers_ratio = parse_u32(key, v)?,
                "seed" => config.seed = parse_u64(key, v)?,
                "base-time" => config.base_time_ms = parse_base_time(key, v)?,
                // The planner routes on it; nothing to configure.
                "connector" => {}
                _ => {
                    return Err(NexmarkError::UnknownOption { name: key.clone(), valid: valid_options() });
                }
            }
        }
        config.events = match (events_num, stop_at) {
            (0, stop) => stop,
            (n, None) => Some(n),
            (n, Some(stop)) => Some(n.min(stop)),
        };
        config.rate_limited = paced_by_rate_limited || !max_emit_speed;
        config.validate()?;
        Ok(config)
    }

    /// Checks the invariants the model relies on. [`NexmarkGenerator::new`] does not fail on a
    /// config built by hand; it clamps such values instead, so call this first.
    pub fn validate(&self) -> Result<(), NexmarkError> {
        let bad = |what: &str| Err(NexmarkError::InvalidConfig(what.to_string()));
        if self.rate == 0 {
            return bad("'first-event.rate' must be at least 1");
        }
        if self.person_proportion == 0 || self.auction_proportion == 0 {
            // The id model derives person and auction ids from the event id's position in
            // each epoch of `total` events; it needs at least one of each per epoch.
            return bad("'person.proportion' and 'auction.proportion' must be at least 1");
        }
        if self.hot_auction_ratio == 0 || self.hot_bidders_ratio == 0 || self.hot_sellers_ratio == 0 {
            return bad("hot ratios must be at least 1");
        }
        if self.avg_person_bytes > MAX_AVG_EVENT_BYTES
            || self.avg_auction_bytes > MAX_AVG_EVENT_BYTES
            || self.avg_bid_bytes > MAX_AVG_EVENT_BYTES
        {
            return bad("average event sizes must be at most 256kb");
        }
        Ok(())
    }

    /// Event time (ms since the epoch) of the event at global stream position `event_index`.
    pub fn event_timestamp(&self, event_index: u64) -> i64 {
        timestamp_for_number(self.base_time_ms, self.rate.max(1), event_index.wrapping_add(FIRST_EVENT_NUMBER))
    }
}

fn invalid(option: &str, value: &str, reason: &str) -> NexmarkError {
    NexmarkError::InvalidOption { option: option.to_string(), value: value.to_string(), reason: reason.to_string() }
}

#[inline]
fn timestamp_for_number(base_time_ms: i64, rate: u64, event_number: u64) -> i64 {
    // Nexmark: baseTime + (long)(eventNumber * (1e6 / rate)) / 1000, done here in integers.
    // The u64 path covers the first ~1.8e16 events; beyond that u128 keeps it exact.
    let ms = match event_number.checked_mul(1000) {
        Some(scaled) => scaled / rate,
        None => ((event_number as u128 * 1000) / rate as u128) as u64,
    };
    base_time_ms.wrapping_add(ms as i64)
}

// ---------------------------------------------------------------------------------------------
// Schema and projection
// ---------------------------------------------------------------------------------------------

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

fn person_field(i: usize) -> Field {
    let dt = match i {
        0 => DataType::Int64,
        6 => timestamp_type(),
        _ => DataType::Utf8,
    };
    Field::new(PERSON_FIELDS[i], dt, true)
}

fn auction_field(i: usize) -> Field {
    let dt = match i {
        0 | 3 | 4 | 7 | 8 => DataType::Int64,
        5 | 6 => timestamp_type(),
        _ => DataType::Utf8,
    };
    Field::new(AUCTION_FIELDS[i], dt, true)
}

fn bid_field(i: usize) -> Field {
    let dt = match i {
        0..=2 => DataType::Int64,
        5 => timestamp_type(),
        _ => DataType::Utf8,
    };
    Field::new(BID_FIELDS[i], dt, true)
}

fn struct_fields(mask: u16, count: usize, field: fn(usize) -> Field) -> Fields {
    (0..count).filter(|i| mask & (1 << i) != 0).map(field).collect()
}

/// Which columns, and which children of the three struct columns, a batch carries. Output
/// columns and children keep the table's order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NexmarkProjection {
    pub event_type: bool,
    /// `None`: no `person` column. `Some(mask)`: bit `i` selects `PERSON_FIELDS[i]`; a zero mask
    /// still produces the column (a struct with no children that is null where the event is
    /// not a person).
    pub person: Option<u16>,
    /// As `person`, over `AUCTION_FIELDS`.
    pub auction: Option<u16>,
    /// As `person`, over `BID_FIELDS`.
    pub bid: Option<u16>,
}

impl NexmarkProjection {
    pub fn all() -> Self {
        NexmarkProjection {
            event_type: true,
            person: Some((1 << PERSON_FIELDS.len()) - 1),
            auction: Some((1 << AUCTION_FIELDS.len()) - 1),
            bid: Some((1 << BID_FIELDS.len()) - 1),
        }
    }

    pub fn none() -> Self {
        NexmarkProjection { event_type: false, person: None, auction: None, bid: None }
    }

    /// Builds a projection from column paths: `event_type`, a whole struct (`bid`) or one
    /// child (`bid.price`). Names are case-sensitive, as in Flink.
    pub fn from_paths<S: AsRef<str>>(paths: &[S]) -> Result<Self, NexmarkError> {
        let mut projection = NexmarkProjection::none();
        for path in paths {
            let path = path.as_ref();
            let unknown = || NexmarkError::UnknownColumn { path: path.to_string() };
            let (top, child) = match path.split_once('.') {
                Some((top, child)) => (top, Some(child)),
                None => (path, None),
            };
            let (slot, names): (&mut Option<u16>, &[&str]) = match top {
                "event_type" if child.is_none() => {
                    projection.event_type = true;
                    continue;
                }
                "person" => (&mut projection.person, &PERSON_FIELDS),
                "auction" => (&mut projection.auction, &AUCTION_FIELDS),
                "bid" => (&mut projection.bid, &BID_FIELDS),
                _ => return Err(unknown()),
            };
            let bits = match child {
                None => (1u16 << names.len()) - 1,
                Some(name) => {
                    let i = names.iter().position(|n| *n == name).ok_or_else(unknown)?;
                    1 << i
                }
            };
            *slot = Some(slot.unwrap_or(0) | bits);
        }
        Ok(projection)
    }

    /// The schema of batches produced under this projection.
    pub fn schema(&self) -> SchemaRef {
        let mut fields = Vec::with_capacity(4);
        if self.event_type {
            fields.push(Field::new("event_type", DataType::Int32, true));
        }
        if let Some(mask) = self.person {
            let children = struct_fields(mask, PERSON_FIELDS.len(), person_field);
            fields.push(Field::new("person", DataType::Struct(children), true));
        }
        if let Some(mask) = self.auction {
            let children = struct_fields(mask, AUCTION_FIELDS.len(), auction_field);
            fields.push(Field::new("auction", DataType::Struct(children), true));
        }
        if let Some(mask) = self.bid {
            let children = struct_fields(mask, BID_FIELDS.len(), bid_field);
            fields.push(Field::new("bid", DataType::Struct(children), true));
        }
        Arc::new(Schema::new(fields))
    }
}

/// The full schema of Flink's `nexmark` table.
pub fn nexmark_schema() -> SchemaRef {
    NexmarkProjection::all().schema()
}

// ---------------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------------

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// What an event's random draws are for. Each field has its own stream so that skipping a
/// field does not shift the draws of the others.
#[derive(Clone, Copy)]
#[repr(u64)]
enum Draw {
    PersonName = 1,
    PersonEmail,
    PersonCreditCard,
    PersonCity,
    PersonState,
    PersonExtra,
    AuctionItemName,
    AuctionDescription,
    AuctionPrices,
    AuctionExpires,
    AuctionSeller,
    AuctionCategory,
    AuctionExtra,
    BidAuction,
    BidBidder,
    BidPrice,
    BidChannel,
    BidExtra,
    ChannelTable,
    ExtraPool,
}

/// A SplitMix64 sequence. Streams of one event start 2^32 steps apart in the same sequence,
/// so no two fields of an event can share a draw.
#[derive(Clone, Copy)]
struct Stream(u64);

impl Stream {
    #[inline]
    fn new(key: u64, draw: Draw) -> Self {
        Stream(key.wrapping_add((draw as u64).wrapping_mul(GOLDEN_GAMMA << 32)))
    }

    #[inline]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        mix64(self.0)
    }

    /// Uniform in `[0, n)`; `n = 0` yields 0. Multiply-shift: bias below 2^-40 for our `n`.
    #[inline]
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

const PRICE_STEPS: usize = 1024;

/// `100 * 10^(6 j / 1024)` for `j` in `0..1024`: the bid price distribution's anchor points.
/// Summed as a Taylor series of `e^z` (all terms positive, so well conditioned) in plain IEEE
/// arithmetic, so the table is bit-identical on every platform, unlike libm's `pow`.
fn price_table() -> &'static [f64; PRICE_STEPS] {
    static TABLE: OnceLock<[f64; PRICE_STEPS]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = [0.0; PRICE_STEPS];
        for (j, slot) in table.iter_mut().enumerate() {
            let z = j as f64 * (6.0 * std::f64::consts::LN_10 / PRICE_STEPS as f64);
            let (mut term, mut sum) = (1.0f64, 1.0f64);
            for n in 1..100 {
                term = term * z / n as f64;
                sum += term;
            }
            *slot = 100.0 * sum;
        }
        table
    })
}

/// Nexmark's `PriceGenerator`, `round(100 * 10^(6u))` for a uniform `u`, from 53 random bits:
/// the top 10 pick an anchor of [`price_table`], the next 43 a cubic step within it (relative
/// error below 2e-9 against the exact power). Only IEEE `+ *` and one conversion, so it is
/// deterministic across platforms and cheap.
#[inline]
fn price_from_bits(r: u64, table: &[f64; PRICE_STEPS]) -> i64 {
    let anchor = table[(r >> 54) as usize];
    let within = ((r >> 11) & ((1 << 43) - 1)) as f64 * (1.0 / (1u64 << 43) as f64);
    let y = within * (6.0 * std::f64::consts::LN_10 / PRICE_STEPS as f64);
    let step = 1.0 + y * (1.0 + y * (0.5 + y * (1.0 / 6.0)));
    // Java's Math.round is floor(x + 0.5); x is positive, so truncation is floor.
    (anchor * step + 0.5) as i64
}

/// Appends `len` characters, each a letter or (with probability 1/13) `special`, trimming
/// surrounding spaces like Java's `String.trim` when `special` is a space.
fn push_random_text(s: &mut Stream, len: u64, special: u8, out: &mut Vec<u8>) {
    let start = out.len();
    let mut remaining = len;
    while remaining > 0 {
        let r = s.next();
        for half in [r as u32, (r >> 32) as u32].into_iter().take(remaining.min(2) as usize) {
            // One uniform pick out of 13 * 26 outcomes: 26 of them (1/13) are `special`.
            let x = ((u64::from(half) * 338) >> 32) as u32;
            out.push(if x < 26 { special } else { b'a' + (x % 26) as u8 });
        }
        remaining -= remaining.min(2);
    }
    if special == b' ' {
        let segment = &out[start..];
        let lead = segment.iter().take_while(|&&c| c == b' ').count();
        if lead == segment.len() {
            out.truncate(start);
            return;
        }
        let trail = segment.iter().rev().take_while(|&&c| c == b' ').count();
        let end = out.len() - trail;
        out.copy_within(start + lead..end, start);
        out.truncate(end - lead);
    }
}

// ---------------------------------------------------------------------------------------------
// The event model
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Person,
    Auction,
    Bid,
}

/// What every field of one event is derived from.
#[derive(Clone, Copy)]
struct Event {
    /// Nexmark's event number: sets the timestamp.
    number: u64,
    /// Nexmark's event id (which sets the kind and the ids) as `epoch * total_proportion +
    /// offset`.
    epoch: u64,
    offset: u64,
    key: u64,
    timestamp: i64,
    kind: Kind,
}

/// Tables the Java generator builds once per JVM: the `extra` pool and the channel urls.
/// Derived from the seed, so they are the same in every split.
struct Tables {
    extra_pool: Vec<u8>,
    /// Channel names and urls back to back; entry `i` is `name = bytes[starts[i]..mids[i]]`,
    /// `url = bytes[mids[i]..starts[i + 1]]`. Entries `0..10_000` are `channel-i`, the last four
    /// the hot channels.
    channel_bytes: Vec<u8>,
    channel_starts: Vec<u32>,
    channel_mids: Vec<u32>,
}

impl Tables {
    fn new(seed_key: u64, largest_avg_bytes: u64) -> Self {
        let pool_bytes = (2 * largest_avg_bytes as usize).next_power_of_two().max(MIN_EXTRA_POOL_BYTES);
        let mut pool_stream = Stream::new(seed_key, Draw::ExtraPool);
        let mut extra_pool = Vec::with_capacity(pool_bytes);
        while extra_pool.len() < pool_bytes {
            let r = pool_stream.next();
            for half in [r as u32, (r >> 32) as u32] {
                extra_pool.push(b'a' + ((u64::from(half) * 26) >> 32) as u8);
            }
        }

        let total = CHANNELS_NUMBER + HOT_CHANNELS.len();
        let mut tables = Tables {
            extra_pool,
            channel_bytes: Vec::with_capacity(total * 80),
            channel_starts: Vec::with_capacity(total + 1),
            channel_mids: Vec::with_capacity(total),
        };
        for i in 0..total {
            let mut s = Stream::new(mix64(seed_key ^ i as u64), Draw::ChannelTable);
            tables.channel_starts.push(tables.channel_bytes.len() as u32);
            let bytes = &mut tables.channel_bytes;
            if i < CHANNELS_NUMBER {
                bytes.extend_from_slice(b"channel-");
                push_u64(bytes, i as u64);
            } else {
                bytes.extend_from_slice(HOT_CHANNELS[i - CHANNELS_NUMBER].as_bytes());
            }
            tables.channel_mids.push(bytes.len() as u32);
            bytes.extend_from_slice(b"https://www.nexmark.com/");
            for _ in 0..3 {
                let len = MIN_STRING_LENGTH + s.below(5 - MIN_STRING_LENGTH);
                push_random_text(&mut s, len, b'_', bytes);
                bytes.push(b'/');
            }
            bytes.extend_from_slice(b"item.htm?query=1");
            if i < CHANNELS_NUMBER && s.below(10) > 0 {
                bytes.extend_from_slice(b"&channel_id=");
                // Java's Math.abs(Integer.reverse(i)).
                let id = (i as i32).reverse_bits().wrapping_abs();
                push_i64(bytes, i64::from(id));
            }
        }
        tables.channel_starts.push(tables.channel_bytes.len() as u32);
        tables
    }

    #[inline]
    fn channel(&self, i: usize) -> (&[u8], &[u8]) {
        let (start, mid, end) =
            (self.channel_starts[i] as usize, self.channel_mids[i] as usize, self.channel_starts[i + 1] as usize);
        (&self.channel_bytes[start..mid], &self.channel_bytes[mid..end])
    }
}

struct Model {
    seed_key: u64,
    base_time_ms: i64,
    rate: u64,
    person_proportion: u64,
    auction_proportion: u64,
    total_proportion: u64,
    avg_person_bytes: u64,
    avg_auction_bytes: u64,
    avg_bid_bytes: u64,
    hot_auction_ratio: u64,
    hot_sellers_ratio: u64,
    hot_bidders_ratio: u64,
    num_in_flight_auctions: i64,
    num_active_people: i64,
    /// Events it takes to generate `num_in_flight_auctions` auctions: the expiry horizon.
    events_for_auctions: u64,
    prices: &'static [f64; PRICE_STEPS],
    tables: Tables,
}

impl Model {
    fn new(config: &NexmarkConfig) -> Self {
        debug_assert!(config.validate().is_ok(), "nexmark config was not validated");
        // Clamped so that a hand-built invalid config degrades instead of dividing by zero.
        let person_proportion = u64::from(config.person_proportion.max(1));
        let auction_proportion = u64::from(config.auction_proportion.max(1));
        let total_proportion = person_proportion + auction_proportion + u64::from(config.bid_proportion);
        let cap = u64::from(MAX_AVG_EVENT_BYTES);
        let largest_avg_bytes = [config.avg_person_bytes, config.avg_auction_bytes, config.avg_bid_bytes]
            .into_iter()
            .max()
            .map_or(0, |b| u64::from(b).min(cap));
        let seed_key = mix64(config.seed ^ 0x6E65_786D_6172_6B00);
        Model {
            seed_key,
            base_time_ms: config.base_time_ms,
            rate: config.rate.max(1),
            person_proportion,
            auction_proportion,
            total_proportion,
            avg_person_bytes: u64::from(config.avg_person_bytes).min(cap),
            avg_auction_bytes: u64::from(config.avg_auction_bytes).min(cap),
            avg_bid_bytes: u64::from(config.avg_bid_bytes).min(cap),
            hot_auction_ratio: u64::from(config.hot_auction_ratio.max(1)),
            hot_sellers_ratio: u64::from(config.hot_sellers_ratio.max(1)),
            hot_bidders_ratio: u64::from(config.hot_bidders_ratio.max(1)),
            num_in_flight_auctions: i64::from(config.num_in_flight_auctions),
            num_active_people: i64::from(config.num_active_people),
            events_for_auctions: u64::from(config.num_in_flight_auctions).saturating_mul(total_proportion)
                / auction_proportion,
            prices: price_table(),
            tables: Tables::new(seed_key, largest_avg_bytes),
        }
    }

    /// An upper bound of the string bytes one event adds to any one string column, used to
    /// keep i32 offsets from overflowing.
    fn max_string_bytes_per_event(&self) -> usize {
        let extra = self.avg_person_bytes.max(self.avg_auction_bytes).max(self.avg_bid_bytes) as usize;
        extra + extra / 4 + 256
    }

    #[inline]
    fn event(&self, index: u64) -> Event {
        let id = index.wrapping_add(FIRST_EVENT_ID + FIRST_EVENT_NUMBER);
        let number = index.wrapping_add(FIRST_EVENT_NUMBER);
        let epoch = id / self.total_proportion;
        let offset = id - epoch * self.total_proportion;
        let kind = if offset < self.person_proportion {
            Kind::Person
        } else if offset < self.person_proportion + self.auction_proportion {
            Kind::Auction
        } else {
            Kind::Bid
        };
        Event {
            number,
            epoch,
            offset,
            key: mix64(self.seed_key.wrapping_add(id.wrapping_mul(GOLDEN_GAMMA))),
            timestamp: timestamp_for_number(self.base_time_ms, self.rate, number),
            kind,
        }
    }

    #[inline]
    fn last_base0_person_id(&self, e: &Event) -> i64 {
        let offset = e.offset.min(self.person_proportion - 1);
        // Wrapping: only a position beyond any real stream (about 2^63 events) could
        // overflow, and that must not panic.
        e.epoch.wrapping_mul(self.person_proportion).wrapping_add(offset) as i64
    }

    #[inline]
    fn last_base0_auction_id(&self, e: &Event) -> i64 {
        let first_of_epoch = (e.epoch as i64).wrapping_mul(self.auction_proportion as i64);
        let pp = self.person_proportion;
        let offset = if e.offset < pp {
            // A person: the last auction of the previous epoch.
            -1
        } else if e.offset >= pp + self.auction_proportion {
            // A bid: the last auction of this epoch.
            self.auction_proportion as i64 - 1
        } else {
            (e.offset - pp) as i64
        };
        first_of_epoch.wrapping_add(offset)
    }

    #[inline]
    fn next_base0_person_id(&self, e: &Event, s: &mut Stream) -> i64 {
        let num_people = self.last_base0_person_id(e).wrapping_add(1);
        let active = num_people.clamp(0, self.num_active_people);
        let n = s.below((active + PERSON_ID_LEAD) as u64) as i64;
        num_people.wrapping_sub(active).wrapping_add(n)
    }

    #[inline]
    fn next_base0_auction_id(&self, e: &Event, s: &mut Stream) -> i64 {
        let max_auction = self.last_base0_auction_id(e);
        let min_auction = max_auction.saturating_sub(self.num_in_flight_auctions).max(0);
        let span = max_auction.saturating_sub(min_auction).saturating_add(1 + AUCTION_ID_LEAD).max(1);
        min_auction.wrapping_add(s.below(span as u64) as i64)
    }

    /// Nexmark's `PriceGenerator`: `round(10^(6u) * 100)`, log-uniform in [100, 10^8].
    #[inline]
    fn price(&self, s: &mut Stream) -> i64 {
        price_from_bits(s.next(), self.prices)
    }

    /// Nexmark's `nextExtra`: padding so that events average `avg` bytes, ±20 %.
    #[inline]
    fn extra(&self, s: &mut Stream, current: u64, avg: u64) -> &[u8] {
        if current > avg {
            return &[];
        }
        let desired = avg - current;
        let delta = (2 * desired + 5) / 10; // round(desired * 0.2)
        let size = desired - delta + if delta == 0 { 0 } else { s.below(2 * delta) };
        let pool = &self.tables.extra_pool;
        let size = (size as usize).min(pool.len());
        let start = s.below((pool.len() - size) as u64) as usize;
        &pool[start..start + size]
    }

    // --- person -------------------------------------------------------------------------------

    #[inline]
    fn person_id(&self, e: &Event) -> i64 {
        self.last_base0_person_id(e).wrapping_add(FIRST_PERSON_ID)
    }

    #[inline]
    fn person_name(&self, e: &Event) -> (&'static str, &'static str) {
        let mut s = Stream::new(e.key, Draw::PersonName);
        let first = FIRST_NAMES[s.below(FIRST_NAMES.len() as u64) as usize];
        let last = LAST_NAMES[s.below(LAST_NAMES.len() as u64) as usize];
        (first, last)
    }

    /// Lengths of the email's two random parts, before trimming.
    #[inline]
    fn person_email_lengths(s: &mut Stream) -> (u64, u64) {
        let local = MIN_STRING_LENGTH + s.below(7 - MIN_STRING_LENGTH);
        let domain = MIN_STRING_LENGTH + s.below(5 - MIN_STRING_LENGTH);
        (local, domain)
    }

    fn push_person_email(&self, e: &Event, out: &mut Vec<u8>) {
        let mut s = Stream::new(e.key, Draw::PersonEmail);
        let (local, domain) = Self::person_email_lengths(&mut s);
        push_random_text(&mut s, local, b' ', out);
        out.push(b'@');
        push_random_text(&mut s, domain, b' ', out);
        out.extend_from_slice(b".com");
    }

    fn push_person_credit_card(&self, e: &Event, out: &mut Vec<u8>) {
        let mut s = Stream::new(e.key, Draw::PersonCreditCard);
        for group in 0..4 {
            if group > 0 {
                out.push(b' ');
            }
            push_padded(out, s.below(10_000), 4);
        }
    }

    #[inline]
    fn person_city(&self, e: &Event) -> &'static str {
        let mut s = Stream::new(e.key, Draw::PersonCity);
        US_CITIES[s.below(US_CITIES.len() as u64) as usize]
    }

    #[inline]
    fn person_state(&self, e: &Event) -> &'static str {
        let mut s = Stream::new(e.key, Draw::PersonState);
        US_STATES[s.below(US_STATES.len() as u64) as usize]
    }

    fn person_extra(&self, e: &Event) -> &[u8] {
        let (first, last) = self.person_name(e);
        let (local, domain) = Self::person_email_lengths(&mut Stream::new(e.key, Draw::PersonEmail));
        let current = 8
            + (first.len() + 1 + last.len()) as u64
            + local
            + 1
            + domain
            + 4
            + CREDIT_CARD_BYTES
            + self.person_city(e).len() as u64
            + self.person_state(e).len() as u64;
        self.extra(&mut Stream::new(e.key, Draw::PersonExtra), current, self.avg_person_bytes)
    }

    // --- auction ------------------------------------------------------------------------------

    #[inline]
    fn auction_id(&self, e: &Event) -> i64 {
        self.last_base0_auction_id(e).wrapping_add(FIRST_AUCTION_ID)
    }

    #[inline]
    fn item_name_length(s: &mut Stream) -> u64 {
        MIN_STRING_LENGTH + s.below(20 - MIN_STRING_LENGTH)
    }

    #[inline]
    fn description_length(s: &mut Stream) -> u64 {
        MIN_STRING_LENGTH + s.below(100 - MIN_STRING_LENGTH)
    }

    fn push_item_name(&self, e: &Event, out: &mut Vec<u8>) {
        let mut s = Stream::new(e.key, Draw::AuctionItemName);
        let len = Self::item_name_length(&mut s);
        push_random_text(&mut s, len, b' ', out);
    }

    fn push_description(&self, e: &Event, out: &mut Vec<u8>) {
        let mut s = Stream::new(e.key, Draw::AuctionDescription);
        let len = Self::description_length(&mut s);
        push_random_text(&mut s, len, b' ', out);
    }

    /// `(initialBid, reserve)`; the reserve is the initial bid plus a second price.
    #[inline]
    fn auction_prices(&self, e: &Event) -> (i64, i64) {
        let mut s = Stream::new(e.key, Draw::AuctionPrices);
        let initial = self.price(&mut s);
        (initial, initial + self.price(&mut s))
    }

    /// Uniform in `(dateTime, dateTime + 2 * horizon]`, the horizon being the time until
    /// `num_in_flight_auctions` more auctions have been generated.
    #[inline]
    fn auction_expires(&self, e: &Event) -> i64 {
        let future =
            timestamp_for_number(self.base_time_ms, self.rate, e.number.wrapping_add(self.events_for_auctions));
        let horizon = future.wrapping_sub(e.timestamp);
        let mut s = Stream::new(e.key, Draw::AuctionExpires);
        let length = 1 + s.below(horizon.saturating_mul(2).max(1) as u64) as i64;
        e.timestamp.wrapping_add(length)
    }

    #[inline]
    fn auction_seller(&self, e: &Event) -> i64 {
        let mut s = Stream::new(e.key, Draw::AuctionSeller);
        let hot = s.below(self.hot_sellers_ratio) > 0;
        // The first person of the batch of the last HOT_SELLER_BATCH people.
        let hot_id = (self.last_base0_person_id(e) / HOT_SELLER_BATCH) * HOT_SELLER_BATCH;
        let any_id = self.next_base0_person_id(e, &mut s);
        let base0 = if hot { hot_id } else { any_id };
        base0.wrapping_add(FIRST_PERSON_ID)
    }

    #[inline]
    fn auction_category(&self, e: &Event) -> i64 {
        let mut s = Stream::new(e.key, Draw::AuctionCategory);
        FIRST_CATEGORY_ID + s.below(NUM_CATEGORIES) as i64
    }

    fn auction_extra(&self, e: &Event) -> &[u8] {
        let name = Self::item_name_length(&mut Stream::new(e.key, Draw::AuctionItemName));
        let description = Self::description_length(&mut Stream::new(e.key, Draw::AuctionDescription));
        let current = 8 + name + description + AUCTION_FIXED_BYTES;
        self.extra(&mut Stream::new(e.key, Draw::AuctionExtra), current, self.avg_auction_bytes)
    }

    // --- bid ----------------------------------------------------------------------------------

    #[inline]
    fn bid_auction(&self, e: &Event) -> i64 {
        let mut s = Stream::new(e.key, Draw::BidAuction);
        let hot = s.below(self.hot_auction_ratio) > 0;
        // Both candidates are computed and one is selected: the choice is a coin flip, and a
        // mispredicted branch costs more than the extra draw.
        let hot_id = (self.last_base0_auction_id(e) / HOT_AUCTION_BATCH) * HOT_AUCTION_BATCH;
        let any_id = self.next_base0_auction_id(e, &mut s);
        (if hot { hot_id } else { any_id }).wrapping_add(FIRST_AUCTION_ID)
    }

    #[inline]
    fn bid_bidder(&self, e: &Event) -> i64 {
        let mut s = Stream::new(e.key, Draw::BidBidder);
        let hot = s.below(self.hot_bidders_ratio) > 0;
        // The second person of the batch, so hot bidders and hot sellers differ.
        let hot_id = ((self.last_base0_person_id(e) / HOT_BIDDER_BATCH) * HOT_BIDDER_BATCH).wrapping_add(1);
        let any_id = self.next_base0_person_id(e, &mut s);
        let base0 = if hot { hot_id } else { any_id };
        // Nexmark's BidGenerator adds FIRST_PERSON_ID twice; Flink's nexmark tables carry
        // bidder ids offset by 2000, and queries written against them expect that.
        base0.wrapping_add(2 * FIRST_PERSON_ID)
    }

    #[inline]
    fn bid_price(&self, e: &Event) -> i64 {
        self.price(&mut Stream::new(e.key, Draw::BidPrice))
    }

    /// `(channel, url)`: a hot channel with probability `1 - 1/HOT_CHANNELS_RATIO`.
    #[inline]
    fn bid_channel(&self, e: &Event) -> (&[u8], &[u8]) {
        let mut s = Stream::new(e.key, Draw::BidChannel);
        let hot = s.below(HOT_CHANNELS_RATIO) > 0;
        let r = s.next();
        let hot_index = CHANNELS_NUMBER + ((r as u128 * HOT_CHANNELS.len() as u128) >> 64) as usize;
        let any_index = ((r as u128 * CHANNELS_NUMBER as u128) >> 64) as usize;
        let i = if hot { hot_index } else { any_index };
        self.tables.channel(i)
    }

    #[inline]
    fn bid_extra(&self, e: &Event) -> &[u8] {
        self.extra(&mut Stream::new(e.key, Draw::BidExtra), BID_FIXED_BYTES, self.avg_bid_bytes)
    }
}

// ---------------------------------------------------------------------------------------------
// Arrow batches
// ---------------------------------------------------------------------------------------------

struct StringColumn {
    offsets: Vec<i32>,
    values: Vec<u8>,
}

impl StringColumn {
    fn new(rows: usize, bytes_per_row: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        StringColumn { offsets, values: Vec::with_capacity(rows * bytes_per_row) }
    }

    /// Ends the current value; bytes appended to `values` since the last call belong to it.
    #[inline]
    fn close(&mut self) {
        // The batch row cap keeps every column below i32::MAX bytes.
        self.offsets.push(self.values.len() as i32);
    }

    #[inline]
    fn push(&mut self, bytes: &[u8]) {
        self.values.extend_from_slice(bytes);
        self.close();
    }

    fn finish(self, nulls: &NullBuffer) -> ArrayRef {
        Arc::new(StringArray::new(
            OffsetBuffer::new(ScalarBuffer::from(self.offsets)),
            Buffer::from_vec(self.values),
            Some(nulls.clone()),
        ))
    }
}

fn int64_column(values: Vec<i64>, nulls: &NullBuffer) -> ArrayRef {
    Arc::new(Int64Array::new(ScalarBuffer::from(values), Some(nulls.clone())))
}

fn timestamp_column(values: Vec<i64>, nulls: &NullBuffer) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::new(ScalarBuffer::from(values), Some(nulls.clone())))
}

#[inline]
fn selected(mask: u16, i: usize) -> bool {
    mask & (1 << i) != 0
}

fn ints(mask: u16, i: usize, rows: usize) -> Option<Vec<i64>> {
    selected(mask, i).then(|| Vec::with_capacity(rows))
}

fn strings(mask: u16, i: usize, rows: usize, bytes_per_row: usize) -> Option<StringColumn> {
    selected(mask, i).then(|| StringColumn::new(rows, bytes_per_row))
}

/// Appends a value for a selected child, or nothing when the child is pruned.
macro_rules! put {
    ($column:expr, $value:expr) => {
        if let Some(c) = $column.as_mut() {
            c.push($value);
        }
    };
}

/// Appends the placeholder under a null struct slot.
macro_rules! put_null_int {
    ($column:expr) => {
        if let Some(c) = $column.as_mut() {
            c.push(0);
        }
    };
}

macro_rules! put_null_string {
    ($column:expr) => {
        if let Some(c) = $column.as_mut() {
            c.close();
        }
    };
}

struct PersonColumns {
    mask: u16,
    id: Option<Vec<i64>>,
    name: Option<StringColumn>,
    email: Option<StringColumn>,
    credit_card: Option<StringColumn>,
    city: Option<StringColumn>,
    state: Option<StringColumn>,
    date_time: Option<Vec<i64>>,
    extra: Option<StringColumn>,
}

impl PersonColumns {
    fn new(mask: u16, rows: usize, avg_bytes: usize) -> Self {
        // Persons are one event in 50 by default: size the string buffers for that share.
        let share = rows / 16 + 1;
        PersonColumns {
            mask,
            id: ints(mask, 0, rows),
            name: strings(mask, 1, rows, 1),
            email: strings(mask, 2, rows, 1),
            credit_card: strings(mask, 3, rows, 1),
            city: strings(mask, 4, rows, 1),
            state: strings(mask, 5, rows, 1),
            date_time: ints(mask, 6, rows),
            extra: selected(mask, 7).then(|| StringColumn::new(share, avg_bytes)),
        }
    }

    #[inline]
    fn append(&mut self, m: &Model, e: &Event) {
        put!(self.id, m.person_id(e));
        if let Some(c) = self.name.as_mut() {
            let (first, last) = m.person_name(e);
            c.values.extend_from_slice(first.as_bytes());
            c.values.push(b' ');
            c.values.extend_from_slice(last.as_bytes());
            c.close();
        }
        if let Some(c) = self.email.as_mut() {
            m.push_person_email(e, &mut c.values);
            c.close();
        }
        if let Some(c) = self.credit_card.as_mut() {
            m.push_person_credit_card(e, &mut c.values);
            c.close();
        }
        put!(self.city, m.person_city(e).as_bytes());
        put!(self.state, m.person_state(e).as_bytes());
        put!(self.date_time, e.timestamp);
        put!(self.extra, m.person_extra(e));
    }

    #[inline]
    fn append_null(&mut self) {
        put_null_int!(self.id);
        put_null_string!(self.name);
        put_null_string!(self.email);
        put_null_string!(self.credit_card);
        put_null_string!(self.city);
        put_null_string!(self.state);
        put_null_int!(self.date_time);
        put_null_string!(self.extra);
    }

    fn finish(self, nulls: NullBuffer) -> ArrayRef {
        let fields = struct_fields(self.mask, PERSON_FIELDS.len(), person_field);
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(fields.len());
        arrays.extend(self.id.map(|v| int64_column(v, &nulls)));
        arrays.extend(self.name.map(|c| c.finish(&nulls)));
        arrays.extend(self.email.map(|c| c.finish(&nulls)));
        arrays.extend(self.credit_card.map(|c| c.finish(&nulls)));
        arrays.extend(self.city.map(|c| c.finish(&nulls)));
        arrays.extend(self.state.map(|c| c.finish(&nulls)));
        arrays.extend(self.date_time.map(|v| timestamp_column(v, &nulls)));
        arrays.extend(self.extra.map(|c| c.finish(&nulls)));
        finish_struct(fields, arrays, nulls)
    }
}

struct AuctionColumns {
    mask: u16,
    id: Option<Vec<i64>>,
    item_name: Option<StringColumn>,
    description: Option<StringColumn>,
    initial_bid: Option<Vec<i64>>,
    reserve: Option<Vec<i64>>,
    date_time: Option<Vec<i64>>,
    expires: Option<Vec<i64>>,
    seller: Option<Vec<i64>>,
    category: Option<Vec<i64>>,
    extra: Option<StringColumn>,
}

impl AuctionColumns {
    fn new(mask: u16, rows: usize, avg_bytes: usize) -> Self {
        let share = rows / 8 + 1;
        AuctionColumns {
            mask,
            id: ints(mask, 0, rows),
            item_name: selected(mask, 1).then(|| StringColumn::new(share, 12)),
            description: selected(mask, 2).then(|| StringColumn::new(share, 52)),
            initial_bid: ints(mask, 3, rows),
            reserve: ints(mask, 4, rows),
            date_time: ints(mask, 5, rows),
            expires: ints(mask, 6, rows),
            seller: ints(mask, 7, rows),
            category: ints(mask, 8, rows),
            extra: selected(mask, 9).then(|| StringColumn::new(share, avg_bytes)),
        }
    }

    #[inline]
    fn append(&mut self, m: &Model, e: &Event) {
        put!(self.id, m.auction_id(e));
        if let Some(c) = self.item_name.as_mut() {
            m.push_item_name(e, &mut c.values);
            c.close();
        }
        if let Some(c) = self.description.as_mut() {
            m.push_description(e, &mut c.values);
            c.close();
        }
        if self.initial_bid.is_some() || self.reserve.is_some() {
            let (initial, reserve) = m.auction_prices(e);
            put!(self.initial_bid, initial);
            put!(self.reserve, reserve);
        }
        put!(self.date_time, e.timestamp);
        put!(self.expires, m.auction_expires(e));
        put!(self.seller, m.auction_seller(e));
        put!(self.category, m.auction_category(e));
        put!(self.extra, m.auction_extra(e));
    }

    #[inline]
    fn append_null(&mut self) {
        put_null_int!(self.id);
        put_null_string!(self.item_name);
        put_null_string!(self.description);
        put_null_int!(self.initial_bid);
        put_null_int!(self.reserve);
        put_null_int!(self.date_time);
        put_null_int!(self.expires);
        put_null_int!(self.seller);
        put_null_int!(self.category);
        put_null_string!(self.extra);
    }

    fn finish(self, nulls: NullBuffer) -> ArrayRef {
        let fields = struct_fields(self.mask, AUCTION_FIELDS.len(), auction_field);
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(fields.len());
        arrays.extend(self.id.map(|v| int64_column(v, &nulls)));
        arrays.extend(self.item_name.map(|c| c.finish(&nulls)));
        arrays.extend(self.description.map(|c| c.finish(&nulls)));
        arrays.extend(self.initial_bid.map(|v| int64_column(v, &nulls)));
        arrays.extend(self.reserve.map(|v| int64_column(v, &nulls)));
        arrays.extend(self.date_time.map(|v| timestamp_column(v, &nulls)));
        arrays.extend(self.expires.map(|v| timestamp_column(v, &nulls)));
        arrays.extend(self.seller.map(|v| int64_column(v, &nulls)));
        arrays.extend(self.category.map(|v| int64_column(v, &nulls)));
        arrays.extend(self.extra.map(|c| c.finish(&nulls)));
        finish_struct(fields, arrays, nulls)
    }
}

struct BidColumns {
    mask: u16,
    auction: Option<Vec<i64>>,
    bidder: Option<Vec<i64>>,
    price: Option<Vec<i64>>,
    channel: Option<StringColumn>,
    url: Option<StringColumn>,
    date_time: Option<Vec<i64>>,
    extra: Option<StringColumn>,
}

impl BidColumns {
    fn new(mask: u16, rows: usize, avg_bytes: usize) -> Self {
        BidColumns {
            mask,
            auction: ints(mask, 0, rows),
            bidder: ints(mask, 1, rows),
            price: ints(mask, 2, rows),
            channel: strings(mask, 3, rows, 12),
            url: strings(mask, 4, rows, 64),
            date_time: ints(mask, 5, rows),
            extra: strings(mask, 6, rows, avg_bytes),
        }
    }

    #[inline]
    fn append(&mut self, m: &Model, e: &Event) {
        put!(self.auction, m.bid_auction(e));
        put!(self.bidder, m.bid_bidder(e));
        put!(self.price, m.bid_price(e));
        if self.channel.is_some() || self.url.is_some() {
            let (channel, url) = m.bid_channel(e);
            put!(self.channel, channel);
            put!(self.url, url);
        }
        put!(self.date_time, e.timestamp);
        put!(self.extra, m.bid_extra(e));
    }

    #[inline]
    fn append_null(&mut self) {
        put_null_int!(self.auction);
        put_null_int!(self.bidder);
        put_null_int!(self.price);
        put_null_string!(self.channel);
        put_null_string!(self.url);
        put_null_int!(self.date_time);
        put_null_string!(self.extra);
    }

    fn finish(self, nulls: NullBuffer) -> ArrayRef {
        let fields = struct_fields(self.mask, BID_FIELDS.len(), bid_field);
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(fields.len());
        arrays.extend(self.auction.map(|v| int64_column(v, &nulls)));
        arrays.extend(self.bidder.map(|v| int64_column(v, &nulls)));
        arrays.extend(self.price.map(|v| int64_column(v, &nulls)));
        arrays.extend(self.channel.map(|c| c.finish(&nulls)));
        arrays.extend(self.url.map(|c| c.finish(&nulls)));
        arrays.extend(self.date_time.map(|v| timestamp_column(v, &nulls)));
        arrays.extend(self.extra.map(|c| c.finish(&nulls)));
        finish_struct(fields, arrays, nulls)
    }
}

fn finish_struct(fields: Fields, arrays: Vec<ArrayRef>, nulls: NullBuffer) -> ArrayRef {
    if fields.is_empty() {
        return Arc::new(StructArray::new_empty_fields(nulls.len(), Some(nulls)));
    }
    // Children are nullable and share the struct's validity, which is all StructArray checks.
    Arc::new(StructArray::new(fields, arrays, Some(nulls)))
}

/// Generates one split of the Nexmark stream as Arrow batches.
pub struct NexmarkGenerator {
    model: Model,
    config: NexmarkConfig,
    split_index: u64,
    num_splits: u64,
    /// Events this split holds; `None` when unbounded.
    split_events: Option<u64>,
    position: u64,
    /// Where the split's slots start, and indices an earlier run emitted already.
    layout: SplitLayout,
    /// Rows per batch that keep every string column below i32::MAX bytes.
    row_cap: usize,
    schema_cache: Option<(NexmarkProjection, SchemaRef)>,
}

impl SplitGenerator for NexmarkGenerator {
    fn position(&self) -> u64 {
        self.position
    }

    fn layout(&self) -> &SplitLayout {
        &self.layout
    }

    /// Restores a position under a (possibly rescaled) layout; see [`super::split`].
    fn seek_with_layout(&mut self, position: u64, layout: SplitLayout) {
        self.split_events = layout.slots(self.split_index, self.num_splits, self.config.events);
        self.layout = layout;
        self.position = position;
    }
}

impl NexmarkGenerator {
    /// Split `split_index` of `num_splits` takes the events `split_index + k * num_splits`.
    /// A `num_splits` of 0 is taken as 1; a split index beyond the last split yields no events.
    pub fn new(config: NexmarkConfig, split_index: u64, num_splits: u64) -> Self {
        let num_splits = num_splits.max(1);
        let split_events = if split_index >= num_splits {
            Some(0)
        } else {
            config.events.map(|total| if split_index >= total { 0 } else { (total - 1 - split_index) / num_splits + 1 })
        };
        let model = Model::new(&config);
        let row_cap = (i32::MAX as usize / model.max_string_bytes_per_event()).max(1);
        NexmarkGenerator {
            model,
            config,
            split_index,
            num_splits,
            split_events,
            position: 0,
            layout: SplitLayout::default(),
            row_cap,
            schema_cache: None,
        }
    }

    pub fn config(&self) -> &NexmarkConfig {
        &self.config
    }

    /// Events this split has emitted; what a checkpoint stores.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Restores a position taken from [`position`](Self::position).
    pub fn seek(&mut self, position: u64) {
        self.position = position;
    }

    /// Events this split holds in total; `None` when unbounded.
    pub fn split_events(&self) -> Option<u64> {
        self.split_events
    }

    pub fn is_exhausted(&self) -> bool {
        self.split_events.is_some_and(|n| self.position >= n)
    }

    /// Global stream position of this split's next event, `None` when exhausted.
    pub fn next_event_index(&self) -> Option<u64> {
        (!self.is_exhausted()).then(|| self.global_index(self.position))
    }

    /// Event time of this split's next event: a rate-limited source emits it once the wall
    /// clock has advanced by `timestamp - base_time_ms` since the source started.
    pub fn next_event_timestamp(&self) -> Option<i64> {
        self.next_event_index().map(|n| self.event_timestamp(n))
    }

    /// Event time (ms since the epoch, UTC) of the event at global stream position
    /// `event_index`, whichever split generates it.
    pub fn event_timestamp(&self, event_index: u64) -> i64 {
        self.config.event_timestamp(event_index)
    }

    #[inline]
    fn global_index(&self, local: u64) -> u64 {
        self.layout.global(self.split_index, self.num_splits, local)
    }

    fn schema_for(&mut self, projection: &NexmarkProjection) -> SchemaRef {
        if let Some((cached, schema)) = &self.schema_cache
            && cached == projection
        {
            return schema.clone();
        }
        let schema = projection.schema();
        self.schema_cache = Some((projection.clone(), schema.clone()));
        schema
    }

    /// The next up to `max_rows` events of this split with the projected columns, or `None`
    /// once a bounded split is exhausted.
    pub fn next_batch(&mut self, max_rows: usize, projection: &NexmarkProjection) -> Option<RecordBatch> {
        let remaining = match self.split_events {
            Some(total) if self.position >= total => return None,
            Some(total) => total - self.position,
            None => u64::MAX,
        };
        let rows = (max_rows.min(self.row_cap) as u64).min(remaining) as usize;
        let schema = self.schema_for(projection);
        let batch = self.build(rows, projection, schema);
        let keep = self.layout.keep_mask(self.global_index(self.position), self.num_splits, rows);
        self.position = self.position.saturating_add(rows as u64);
        match keep {
            None => Some(batch),
            Some(keep) => {
                Some(arrow::compute::filter_record_batch(&batch, &keep).expect("a mask as long as the batch"))
            }
        }
    }

    fn build(&self, rows: usize, projection: &NexmarkProjection, schema: SchemaRef) -> RecordBatch {
        let m = &self.model;
        let mut kinds: Vec<Kind> = Vec::with_capacity(rows);
        let mut event_type: Option<Vec<i32>> = projection.event_type.then(|| Vec::with_capacity(rows));
        let mut person = projection.person.map(|mask| PersonColumns::new(mask, rows, m.avg_person_bytes as usize));
        let mut auction = projection.auction.map(|mask| AuctionColumns::new(mask, rows, m.avg_auction_bytes as usize));
        let mut bid = projection.bid.map(|mask| BidColumns::new(mask, rows, m.avg_bid_bytes as usize));

        for k in 0..rows as u64 {
            let e = m.event(self.global_index(self.position.wrapping_add(k)));
            kinds.push(e.kind);
            match e.kind {
                Kind::Person => {
                    put!(event_type, EVENT_TYPE_PERSON);
                    if let Some(c) = person.as_mut() {
                        c.append(m, &e);
                    }
                    if let Some(c) = auction.as_mut() {
                        c.append_null();
                    }
                    if let Some(c) = bid.as_mut() {
                        c.append_null();
                    }
                }
                Kind::Auction => {
                    put!(event_type, EVENT_TYPE_AUCTION);
                    if let Some(c) = person.as_mut() {
                        c.append_null();
                    }
                    if let Some(c) = auction.as_mut() {
                        c.append(m, &e);
                    }
                    if let Some(c) = bid.as_mut() {
                        c.append_null();
                    }
                }
                Kind::Bid => {
                    put!(event_type, EVENT_TYPE_BID);
                    if let Some(c) = person.as_mut() {
                        c.append_null();
                    }
                    if let Some(c) = auction.as_mut() {
                        c.append_null();
                    }
                    if let Some(c) = bid.as_mut() {
                        c.append(m, &e);
                    }
                }
            }
        }

        let validity = |kind: Kind| NullBuffer::new(BooleanBuffer::collect_bool(rows, |i| kinds[i] == kind));
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(4);
        if let Some(values) = event_type {
            columns.push(Arc::new(Int32Array::new(ScalarBuffer::from(values), None)));
        }
        if let Some(c) = person {
            columns.push(c.finish(validity(Kind::Person)));
        }
        if let Some(c) = auction {
            columns.push(c.finish(validity(Kind::Auction)));
        }
        if let Some(c) = bid {
            columns.push(c.finish(validity(Kind::Bid)));
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(schema, columns, &options)
            .expect("generated columns match the projection's schema")
    }
}

// ---------------------------------------------------------------------------------------------
// Newline-delimited JSON
// ---------------------------------------------------------------------------------------------

/// Writes the whole (bounded) stream as newline-delimited JSON in the layout of Flink's JSON
/// format for the `nexmark` table with `json.timestamp-format.standard = 'SQL'`:
/// `{"event_type":N,"<person|auction|bid>":{...}}`, fields in table order, timestamps as UTC
/// `yyyy-MM-dd HH:mm:ss.SSS`. Returns the number of events written.
pub fn write_json_lines(config: &NexmarkConfig, out: &mut impl Write) -> io::Result<u64> {
    let events = config.events.ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "nexmark json output needs a bounded stream; set 'events.num'")
    })?;
    config.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let model = Model::new(config);
    const FLUSH_BYTES: usize = 1 << 20;
    let mut buf = Vec::with_capacity(FLUSH_BYTES + 4096);
    let mut dates = DateCache::default();
    for index in 0..events {
        write_json_event(&model, &model.event(index), &mut dates, &mut buf);
        if buf.len() >= FLUSH_BYTES {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)?;
    Ok(events)
}

// Every string the model produces comes from fixed ASCII alphabets (letters, digits, space,
// '_', '@', '.', '/', ':', '?', '=', '&', '-'), so none needs JSON escaping.
fn write_json_event(m: &Model, e: &Event, dates: &mut DateCache, out: &mut Vec<u8>) {
    match e.kind {
        Kind::Person => {
            out.extend_from_slice(b"{\"event_type\":0,\"person\":{\"id\":");
            push_i64(out, m.person_id(e));
            out.extend_from_slice(b",\"name\":\"");
            let (first, last) = m.person_name(e);
            out.extend_from_slice(first.as_bytes());
            out.push(b' ');
            out.extend_from_slice(last.as_bytes());
            out.extend_from_slice(b"\",\"emailAddress\":\"");
            m.push_person_email(e, out);
            out.extend_from_slice(b"\",\"creditCard\":\"");
            m.push_person_credit_card(e, out);
            out.extend_from_slice(b"\",\"city\":\"");
            out.extend_from_slice(m.person_city(e).as_bytes());
            out.extend_from_slice(b"\",\"state\":\"");
            out.extend_from_slice(m.person_state(e).as_bytes());
            out.extend_from_slice(b"\",\"dateTime\":\"");
            dates.push_timestamp(out, e.timestamp);
            out.extend_from_slice(b"\",\"extra\":\"");
            out.extend_from_slice(m.person_extra(e));
        }
        Kind::Auction => {
            out.extend_from_slice(b"{\"event_type\":1,\"auction\":{\"id\":");
            push_i64(out, m.auction_id(e));
            out.extend_from_slice(b",\"itemName\":\"");
            m.push_item_name(e, out);
            out.extend_from_slice(b"\",\"description\":\"");
            m.push_description(e, out);
            let (initial, reserve) = m.auction_prices(e);
            out.extend_from_slice(b"\",\"initialBid\":");
            push_i64(out, initial);
            out.extend_from_slice(b",\"reserve\":");
            push_i64(out, reserve);
            out.extend_from_slice(b",\"dateTime\":\"");
            dates.push_timestamp(out, e.timestamp);
            out.extend_from_slice(b"\",\"expires\":\"");
            dates.push_timestamp(out, m.auction_expires(e));
            out.extend_from_slice(b"\",\"seller\":");
            push_i64(out, m.auction_seller(e));
            out.extend_from_slice(b",\"category\":");
            push_i64(out, m.auction_category(e));
            out.extend_from_slice(b",\"extra\":\"");
            out.extend_from_slice(m.auction_extra(e));
        }
        Kind::Bid => {
            out.extend_from_slice(b"{\"event_type\":2,\"bid\":{\"auction\":");
            push_i64(out, m.bid_auction(e));
            out.extend_from_slice(b",\"bidder\":");
            push_i64(out, m.bid_bidder(e));
            out.extend_from_slice(b",\"price\":");
            push_i64(out, m.bid_price(e));
            let (channel, url) = m.bid_channel(e);
            out.extend_from_slice(b",\"channel\":\"");
            out.extend_from_slice(channel);
            out.extend_from_slice(b"\",\"url\":\"");
            out.extend_from_slice(url);
            out.extend_from_slice(b"\",\"dateTime\":\"");
            dates.push_timestamp(out, e.timestamp);
            out.extend_from_slice(b"\",\"extra\":\"");
            out.extend_from_slice(m.bid_extra(e));
        }
    }
    out.extend_from_slice(b"\"}}\n");
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

fn push_padded(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

/// Formats `yyyy-MM-dd HH:mm:ss.SSS`, remembering the last day's date text: consecutive
/// events almost always share it.
#[derive(Default)]
struct DateCache {
    day: Option<i64>,
    text: Vec<u8>,
}

impl DateCache {
    fn push_timestamp(&mut self, out: &mut Vec<u8>, ms: i64) {
        let day = ms.div_euclid(86_400_000);
        if self.day != Some(day) {
            self.text.clear();
            let (year, month, day_of_month) = civil_from_days(day);
            if (0..=9999).contains(&year) {
                push_padded(&mut self.text, year as u64, 4);
            } else {
                push_i64(&mut self.text, year);
            }
            self.text.push(b'-');
            push_padded(&mut self.text, month as u64, 2);
            self.text.push(b'-');
            push_padded(&mut self.text, day_of_month as u64, 2);
            self.text.push(b' ');
            self.day = Some(day);
        }
        out.extend_from_slice(&self.text);
        let in_day = ms.rem_euclid(86_400_000) as u64;
        push_padded(out, in_day / 3_600_000, 2);
        out.push(b':');
        push_padded(out, in_day / 60_000 % 60, 2);
        out.push(b':');
        push_padded(out, in_day / 1000 % 60, 2);
        out.push(b'.');
        push_padded(out, in_day % 1000, 3);
    }
}

impl From<BadOption> for NexmarkError {
    fn from(e: BadOption) -> Self {
        NexmarkError::InvalidOption { option: e.option, value: e.value, reason: e.reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType};

    fn bounded(events: u64) -> NexmarkConfig {
        NexmarkConfig { events: Some(events), ..NexmarkConfig::default() }
    }

    fn collect(
        generator: &mut NexmarkGenerator,
        projection: &NexmarkProjection,
        batch_rows: usize,
    ) -> Vec<RecordBatch> {
        std::iter::from_fn(|| generator.next_batch(batch_rows, projection)).collect()
    }

    fn concat(batches: &[RecordBatch]) -> RecordBatch {
        arrow::compute::concat_batches(&batches[0].schema(), batches).expect("same schema")
    }

    fn struct_child<'a>(batch: &'a RecordBatch, column: &str, child: &str) -> &'a ArrayRef {
        batch.column_by_name(column).expect("column present").as_struct().column_by_name(child).expect("child present")
    }

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn schema_matches_flink_table() {
        let schema = nexmark_schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["event_type", "person", "auction", "bid"]);
        assert_eq!(schema.field(0).data_type(), &DataType::Int32);
        let DataType::Struct(bid) = schema.field(3).data_type() else { panic!("bid is a struct") };
        let bid: Vec<(&str, &DataType)> = bid.iter().map(|f| (f.name().as_str(), f.data_type())).collect();
        let ts = timestamp_type();
        assert_eq!(
            bid,
            [
                ("auction", &DataType::Int64),
                ("bidder", &DataType::Int64),
                ("price", &DataType::Int64),
                ("channel", &DataType::Utf8),
                ("url", &DataType::Utf8),
                ("dateTime", &ts),
                ("extra", &DataType::Utf8),
            ]
        );
        assert!(schema.fields().iter().all(|f| f.is_nullable()));
    }

    #[test]
    fn same_config_same_batches() {
        let config = bounded(3000);
        let a = collect(&mut NexmarkGenerator::new(config.clone(), 0, 1), &NexmarkProjection::all(), 700);
        let b = collect(&mut NexmarkGenerator::new(config.clone(), 0, 1), &NexmarkProjection::all(), 700);
        assert_eq!(a, b);
        assert_eq!(a.iter().map(|b| b.num_rows()).sum::<usize>(), 3000);

        let other_seed = NexmarkConfig { seed: 7, ..config };
        let c = collect(&mut NexmarkGenerator::new(other_seed, 0, 1), &NexmarkProjection::all(), 700);
        assert_ne!(concat(&a), concat(&c));
    }

    #[test]
    fn splits_reproduce_the_single_split_stream() {
        let config = bounded(2500);
        let all = concat(&collect(&mut NexmarkGenerator::new(config.clone(), 0, 1), &NexmarkProjection::all(), 1000));
        let mut seen = 0;
        for split in 0..3u64 {
            let mut generator = NexmarkGenerator::new(config.clone(), split, 3);
            let expected_rows = (2500 - split).div_ceil(3);
            assert_eq!(generator.split_events(), Some(expected_rows));
            let part = concat(&collect(&mut generator, &NexmarkProjection::all(), 333));
            assert_eq!(part.num_rows() as u64, expected_rows);
            for k in 0..part.num_rows() {
                let global = (split + 3 * k as u64) as usize;
                assert_eq!(part.slice(k, 1), all.slice(global, 1), "split {split} row {k}");
            }
            seen += part.num_rows();
        }
        assert_eq!(seen, 2500);
    }

    #[test]
    fn seek_restores_the_stream() {
        let config = bounded(5000);
        let projection = NexmarkProjection::all();
        let mut first = NexmarkGenerator::new(config.clone(), 1, 2);
        first.next_batch(400, &projection);
        let position = first.position();
        assert_eq!(position, 400);
        let expected = first.next_batch(400, &projection);

        let mut restored = NexmarkGenerator::new(config, 1, 2);
        restored.seek(position);
        assert_eq!(restored.next_batch(400, &projection), expected);
    }

    #[test]
    fn proportions_are_1_3_46() {
        let batch = concat(&collect(
            &mut NexmarkGenerator::new(bounded(5000), 0, 1),
            &NexmarkProjection::from_paths(&["event_type"]).unwrap(),
            1024,
        ));
        let mut counts = [0; 3];
        for t in batch.column(0).as_primitive::<Int32Type>().values() {
            counts[*t as usize] += 1;
        }
        assert_eq!(counts, [100, 300, 4600]);
    }

    #[test]
    fn ids_and_timestamps_follow_the_model() {
        let config = NexmarkConfig { rate: 1000, ..bounded(20_000) };
        let generator = &mut NexmarkGenerator::new(config.clone(), 0, 1);
        let batch = concat(&collect(generator, &NexmarkProjection::all(), 4096));
        let types = batch.column(0).as_primitive::<Int32Type>();
        let person_ids = struct_child(&batch, "person", "id").as_primitive::<Int64Type>();
        let auction_ids = struct_child(&batch, "auction", "id").as_primitive::<Int64Type>();
        let expires = struct_child(&batch, "auction", "expires").as_primitive::<TimestampMillisecondType>();
        let categories = struct_child(&batch, "auction", "category").as_primitive::<Int64Type>();
        let bid_auctions = struct_child(&batch, "bid", "auction").as_primitive::<Int64Type>();
        let prices = struct_child(&batch, "bid", "price").as_primitive::<Int64Type>();
        let (mut last_person, mut last_auction, mut last_time) = (FIRST_PERSON_ID, FIRST_AUCTION_ID, i64::MIN);
        for row in 0..batch.num_rows() {
            // Rate 1000/s: event n happens (n + 1) ms after the base time.
            let time = match types.value(row) {
                EVENT_TYPE_PERSON => {
                    assert_eq!(person_ids.value(row), last_person + 1);
                    last_person += 1;
                    struct_child(&batch, "person", "dateTime").as_primitive::<TimestampMillisecondType>().value(row)
                }
                EVENT_TYPE_AUCTION => {
                    assert_eq!(auction_ids.value(row), last_auction + 1);
                    last_auction += 1;
                    assert!((10..15).contains(&categories.value(row)));
                    let time = struct_child(&batch, "auction", "dateTime")
                        .as_primitive::<TimestampMillisecondType>()
                        .value(row);
                    assert!(expires.value(row) > time);
                    time
                }
                _ => {
                    assert!(bid_auctions.value(row) <= last_auction + AUCTION_ID_LEAD);
                    assert!((100..=100_000_000).contains(&prices.value(row)));
                    struct_child(&batch, "bid", "dateTime").as_primitive::<TimestampMillisecondType>().value(row)
                }
            };
            assert_eq!(time, config.base_time_ms + row as i64 + 1);
            assert_eq!(time, generator.event_timestamp(row as u64));
            assert!(time >= last_time);
            last_time = time;
        }
        // The first event (event id 2) is the auction with id 1001, as in Flink's source.
        assert_eq!(types.value(0), EVENT_TYPE_AUCTION);
        assert_eq!(auction_ids.value(0), 1001);
        assert!(batch.column_by_name("person").unwrap().is_null(0));
    }

    #[test]
    fn extra_pads_events_to_the_average_sizes() {
        let batch =
            concat(&collect(&mut NexmarkGenerator::new(bounded(50_000), 0, 1), &NexmarkProjection::all(), 8192));
        let bid_extra = struct_child(&batch, "bid", "extra").as_string::<i32>();
        let lengths: Vec<usize> =
            (0..batch.num_rows()).filter(|&r| bid_extra.is_valid(r)).map(|r| bid_extra.value(r).len()).collect();
        let mean = lengths.iter().sum::<usize>() as f64 / lengths.len() as f64;
        // avg 100 bytes minus the 32 the model charges for the other fields, ±20 %.
        assert!((mean - 68.0).abs() < 1.0, "mean bid extra {mean}");
        assert!(lengths.iter().all(|&l| (54..=82).contains(&l)));
        let channels = struct_child(&batch, "bid", "channel").as_string::<i32>();
        let urls = struct_child(&batch, "bid", "url").as_string::<i32>();
        let mut hot = 0;
        for row in (0..batch.num_rows()).filter(|&r| channels.is_valid(r)) {
            let channel = channels.value(row);
            assert!(urls.value(row).starts_with("https://www.nexmark.com/"));
            if HOT_CHANNELS.contains(&channel) {
                hot += 1;
            } else {
                assert!(channel.starts_with("channel-"));
            }
        }
        let share = hot as f64 / lengths.len() as f64;
        assert!((share - 0.5).abs() < 0.02, "hot channel share {share}");
    }

    #[test]
    fn pruned_projection_keeps_the_same_values() {
        let config = bounded(4000);
        let full = concat(&collect(&mut NexmarkGenerator::new(config.clone(), 0, 1), &NexmarkProjection::all(), 1000));
        let paths = [
            "event_type",
            "bid.auction",
            "bid.price",
            "bid.dateTime",
            "bid.extra",
            "auction.extra",
            "person.extra",
            "person.name",
        ];
        let projection = NexmarkProjection::from_paths(&paths).unwrap();
        let pruned = concat(&collect(&mut NexmarkGenerator::new(config, 0, 1), &projection, 1000));
        assert_eq!(pruned.schema(), projection.schema());
        assert_eq!(pruned.column(0), full.column(0));
        for path in &paths[1..] {
            let (column, child) = path.split_once('.').unwrap();
            assert_eq!(struct_child(&pruned, column, child), struct_child(&full, column, child), "{path}");
        }
        let DataType::Struct(bid) = pruned.schema().field_with_name("bid").unwrap().data_type().clone() else {
            panic!("bid is a struct")
        };
        let names: Vec<&str> = bid.iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["auction", "price", "dateTime", "extra"]);

        let empty = NexmarkProjection::none();
        let batch = NexmarkGenerator::new(bounded(10), 0, 1).next_batch(100, &empty).unwrap();
        assert_eq!((batch.num_rows(), batch.num_columns()), (10, 0));
        assert!(NexmarkProjection::from_paths(&["bid.nope"]).is_err());
        assert!(NexmarkProjection::from_paths(&["dateTime"]).is_err());
    }

    /// A JSON value as far as the generator's output needs: integers, strings, objects.
    #[derive(Debug, PartialEq)]
    enum Json {
        Int(i64),
        Str(String),
        Object(Vec<(String, Json)>),
    }

    fn parse_json(text: &str) -> Json {
        fn value(b: &[u8], i: &mut usize) -> Json {
            match b[*i] {
                b'{' => {
                    *i += 1;
                    let mut members = Vec::new();
                    loop {
                        let Json::Str(key) = value(b, i) else { panic!("object key at {i}") };
                        assert_eq!(b[*i], b':');
                        *i += 1;
                        members.push((key, value(b, i)));
                        *i += 1;
                        match b[*i - 1] {
                            b',' => continue,
                            b'}' => return Json::Object(members),
                            c => panic!("unexpected {}", c as char),
                        }
                    }
                }
                b'"' => {
                    let end = *i + 1 + b[*i + 1..].iter().position(|&c| c == b'"').unwrap();
                    let s = std::str::from_utf8(&b[*i + 1..end]).unwrap().to_string();
                    assert!(!s.contains('\\'));
                    *i = end + 1;
                    Json::Str(s)
                }
                _ => {
                    let len = b[*i..].iter().take_while(|c| c.is_ascii_digit() || **c == b'-').count();
                    let n = std::str::from_utf8(&b[*i..*i + len]).unwrap().parse().unwrap();
                    *i += len;
                    Json::Int(n)
                }
            }
        }
        let mut i = 0;
        let parsed = value(text.as_bytes(), &mut i);
        assert_eq!(i, text.len(), "trailing text in {text}");
        parsed
    }

    fn format_ms(ms: i64) -> String {
        let mut out = Vec::new();
        DateCache::default().push_timestamp(&mut out, ms);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_lines_match_the_arrow_batches() {
        let config = bounded(3000);
        let mut out = Vec::new();
        assert_eq!(write_json_lines(&config, &mut out).unwrap(), 3000);
        let text = String::from_utf8(out).unwrap();
        let batch = concat(&collect(&mut NexmarkGenerator::new(config, 0, 1), &NexmarkProjection::all(), 1000));
        let schema = batch.schema();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3000);
        for (row, line) in lines.iter().enumerate() {
            let Json::Object(top) = parse_json(line) else { panic!("line {row} is an object") };
            assert_eq!(top.len(), 2);
            let event_type = batch.column(0).as_primitive::<Int32Type>().value(row);
            assert_eq!(top[0], ("event_type".to_string(), Json::Int(i64::from(event_type))));
            let column_index = 1 + event_type as usize;
            let column = schema.field(column_index).name();
            assert_eq!(&top[1].0, column);
            let Json::Object(members) = &top[1].1 else { panic!("nested object") };
            let nested = batch.column(column_index).as_struct();
            assert_eq!(members.len(), nested.num_columns());
            for ((key, json), (field, array)) in members.iter().zip(nested.fields().iter().zip(nested.columns())) {
                assert_eq!(key, field.name());
                let expected = match field.data_type() {
                    DataType::Int64 => Json::Int(array.as_primitive::<Int64Type>().value(row)),
                    DataType::Utf8 => Json::Str(array.as_string::<i32>().value(row).to_string()),
                    _ => Json::Str(format_ms(array.as_primitive::<TimestampMillisecondType>().value(row))),
                };
                assert_eq!(json, &expected, "row {row} field {key}");
            }
        }
        // The layout of the conformance data set, byte for byte in the fixed parts.
        assert!(lines[0].starts_with("{\"event_type\":1,\"auction\":{\"id\":1001,\"itemName\":\""));
        assert!(lines[0].contains("\"dateTime\":\"2024-01-01 00:00:00.000\""));
        assert!(write_json_lines(&NexmarkConfig::default(), &mut Vec::new()).is_err());
    }

    #[test]
    fn timestamps_format_as_sql_text() {
        assert_eq!(format_ms(1_704_067_200_123), "2024-01-01 00:00:00.123");
        assert_eq!(format_ms(951_782_400_000 + 86_399_999), "2000-02-29 23:59:59.999");
        assert_eq!(format_ms(-1), "1969-12-31 23:59:59.999");
    }

    #[test]
    fn prices_follow_the_exact_power() {
        let table = price_table();
        let mut state = 1u64;
        for _ in 0..200_000 {
            state = state.wrapping_add(GOLDEN_GAMMA);
            let r = mix64(state);
            let u = (r >> 11) as f64 / (1u64 << 53) as f64;
            let exact = 100.0 * 10f64.powf(6.0 * u);
            let ours = price_from_bits(r, table) as f64;
            assert!((ours - exact).abs() <= 0.5 + exact * 2e-9, "u={u}: {ours} vs {exact}");
        }
        assert_eq!(price_from_bits(0, table), 100);
        assert_eq!(price_from_bits(u64::MAX, table), 100_000_000);
    }

    #[test]
    fn options_follow_the_flink_connector() {
        let config = NexmarkConfig::from_options(&opts(&[
            ("connector", "nexmark"),
            ("events.num", "1000"),
            ("first-event.rate", "5000"),
            ("next-event.rate", "5000"),
            ("rate.shape", "sine"),
            ("rate.period", "10 min"),
            ("max-emit-speed", "false"),
            ("person.avg-size", "1kb"),
            ("auction.avg-size", "600"),
            ("bid.avg-size", "120 b"),
            ("person.proportion", "2"),
            ("auction.proportion", "6"),
            ("bid.proportion", "92"),
            ("bid.hot-ratio.auctions", "3"),
            ("bid.hot-ratio.bidders", "5"),
            ("auction.hot-ratio.sellers", "6"),
            ("seed", "9"),
            ("base-time", "2024-01-01 23:59:00"),
        ]))
        .unwrap();
        assert_eq!(config.events, Some(1000));
        assert_eq!(config.rate, 5000);
        assert!(config.rate_limited);
        assert_eq!((config.avg_person_bytes, config.avg_auction_bytes, config.avg_bid_bytes), (1024, 600, 120));
        assert_eq!((config.person_proportion, config.auction_proportion, config.bid_proportion), (2, 6, 92));
        assert_eq!((config.hot_auction_ratio, config.hot_bidders_ratio, config.hot_sellers_ratio), (3, 5, 6));
        assert_eq!((config.seed, config.base_time_ms), (9, 1_704_153_540_000));

        let defaults = NexmarkConfig::from_options(&BTreeMap::new()).unwrap();
        assert_eq!(defaults, NexmarkConfig::default());
        assert_eq!(defaults.events, None);
        assert_eq!(
            NexmarkConfig::from_options(&opts(&[("events.num", "0"), ("stop-at", "50")])).unwrap().events,
            Some(50)
        );
        assert_eq!(
            NexmarkConfig::from_options(&opts(&[("events.num", "90"), ("stop-at", "-1")])).unwrap().events,
            Some(90)
        );
        assert!(NexmarkConfig::from_options(&opts(&[("rate.limited", "true")])).unwrap().rate_limited);
    }

    #[test]
    fn bad_options_are_errors() {
        let err = NexmarkConfig::from_options(&opts(&[("events", "10")])).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("unknown nexmark option 'events'"), "{message}");
        assert!(message.contains("events.num") && message.contains("first-event.rate"), "{message}");
        for (key, value) in [
            ("events.num", "-1"),
            ("events.num", "ten"),
            ("first-event.rate", "0"),
            ("rate.limited", "yes"),
            ("rate.shape", "triangle"),
            ("person.avg-size", "12 parsecs"),
            ("bid.avg-size", "1gb"),
            ("person.proportion", "0"),
            ("bid.hot-ratio.bidders", "0"),
            ("base-time", "yesterday"),
            ("seed", "-3"),
        ] {
            assert!(NexmarkConfig::from_options(&opts(&[(key, value)])).is_err(), "{key} = {value}");
        }
    }

    #[test]
    fn degenerate_splits_do_not_panic() {
        let projection = NexmarkProjection::all();
        assert!(NexmarkGenerator::new(bounded(5), 7, 3).next_batch(10, &projection).is_none());
        assert!(NexmarkGenerator::new(bounded(2), 2, 3).next_batch(10, &projection).is_none());
        let mut zero_splits = NexmarkGenerator::new(bounded(5), 0, 0);
        assert_eq!(zero_splits.next_batch(10, &projection).unwrap().num_rows(), 5);
        let mut unbounded = NexmarkGenerator::new(NexmarkConfig::default(), 0, 1);
        for position in [u64::MAX / 2, u64::MAX - 2] {
            unbounded.seek(position);
            assert_eq!(unbounded.next_batch(3, &projection).unwrap().num_rows(), 3);
        }
    }

    /// CPU time of the calling thread (Linux), so the figures hold on a busy machine.
    fn thread_cpu_seconds() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        let nanos: f64 = stat.split_whitespace().next()?.parse().ok()?;
        Some(nanos / 1e9)
    }

    fn measure(work: impl FnOnce() -> u64) -> String {
        let (wall, cpu) = (std::time::Instant::now(), thread_cpu_seconds());
        let events = work() as f64;
        let wall = wall.elapsed().as_secs_f64();
        let cpu = cpu.zip(thread_cpu_seconds()).map(|(a, b)| b - a);
        let per_cpu = cpu.map_or(String::new(), |cpu| format!(", {:.1} M/s of cpu time", events / cpu / 1e6));
        format!("{:.1} M/s wall{per_cpu}", events / wall / 1e6)
    }

    /// `cargo test --release -- --ignored --nocapture nexmark`
    #[test]
    #[ignore]
    fn bench_generation() {
        let cases = [
            (
                "event_type + bid{auction,bidder,price,dateTime,extra}",
                vec!["event_type", "bid.auction", "bid.bidder", "bid.price", "bid.dateTime", "bid.extra"],
            ),
            (
                "event_type + bid{auction,price,dateTime}",
                vec!["event_type", "bid.auction", "bid.price", "bid.dateTime"],
            ),
            ("all columns", vec!["event_type", "person", "auction", "bid"]),
        ];
        for (name, paths) in cases {
            let projection = NexmarkProjection::from_paths(&paths).unwrap();
            let mut generator = NexmarkGenerator::new(bounded(20_000_000), 0, 1);
            let rate = measure(|| {
                let mut rows = 0;
                while let Some(batch) = generator.next_batch(8192, &projection) {
                    rows += batch.num_rows() as u64;
                }
                rows
            });
            println!("nexmark arrow, {name}: {rate}");
        }
        let rate = measure(|| write_json_lines(&bounded(5_000_000), &mut io::sink()).unwrap());
        println!("nexmark json lines: {rate}");
        let start = std::time::Instant::now();
        drop(NexmarkGenerator::new(bounded(1), 0, 1));
        println!("nexmark generator setup: {:.2} ms", start.elapsed().as_secs_f64() * 1e3);
    }
}
