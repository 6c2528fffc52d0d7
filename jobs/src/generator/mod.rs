//! Event generators for the three sources (card transactions, insurance claims, IoT telemetry)
//! with planted fraud and anomaly patterns, late and out-of-order events, malformed messages, and
//! delayed ground-truth labels on a stream of their own.
//!
//! Output is a deterministic function of the [`GeneratorConfig`]: the same seed and options give
//! the same messages, byte for byte.

mod claims;
mod geo;
mod iot;
pub mod json;
mod malformed;
pub mod nexmark;
mod rng;
mod transactions;

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use claims::{Claim, ClaimModel};
use iot::{IotModel, Reading};
use json::JsonObject;
pub use malformed::Corruption;
use rng::Rng;
use transactions::{Transaction, TransactionModel};

/// One of the event streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// Card transactions.
    Transactions,
    /// Insurance claims.
    Claims,
    /// IoT telemetry.
    Telemetry,
}

impl Source {
    /// All sources, in the order of the default mix.
    pub const ALL: [Source; 3] = [Source::Transactions, Source::Claims, Source::Telemetry];

    /// The Kafka topic the source is published on.
    pub fn topic(self) -> &'static str {
        match self {
            Source::Transactions => "financial-transactions",
            Source::Claims => "insurance-claims",
            Source::Telemetry => "iot-telemetry",
        }
    }

    /// Partitions of the source's topic when we create it.
    pub fn partitions(self) -> i32 {
        match self {
            Source::Transactions | Source::Claims => 12,
            Source::Telemetry => 8,
        }
    }

    /// The value of `event_type` in the source's events and in `risk_scores`.
    pub fn event_type(self) -> &'static str {
        match self {
            Source::Transactions => "transaction",
            Source::Claims => "claim",
            Source::Telemetry => "telemetry",
        }
    }

    /// Name on the command line (`--source`).
    pub fn cli_name(self) -> &'static str {
        match self {
            Source::Transactions => "transactions",
            Source::Claims => "claims",
            Source::Telemetry => "iot",
        }
    }

    /// Share of the default mix: 40% transactions, 35% claims, 25% telemetry.
    pub fn default_share(self) -> f64 {
        match self {
            Source::Transactions => 0.40,
            Source::Claims => 0.35,
            Source::Telemetry => 0.25,
        }
    }

    /// The fraud or anomaly patterns planted in the source.
    pub fn patterns(self) -> &'static [&'static str] {
        match self {
            Source::Transactions => transactions::PATTERNS,
            Source::Claims => claims::PATTERNS,
            Source::Telemetry => iot::PATTERNS,
        }
    }

    fn event_id_prefix(self) -> &'static str {
        match self {
            Source::Transactions => "txn",
            Source::Claims => "clm",
            Source::Telemetry => "iot",
        }
    }
}

/// The labels topic: ground truth, published after a delay as chargebacks and investigations are.
pub const LABELS_TOPIC: &str = "fraud-labels";
/// Partitions of the labels topic when we create it.
pub const LABELS_PARTITIONS: i32 = 4;

/// Where a generated message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// An event of a source.
    Events(Source),
    /// A ground-truth label.
    Labels,
}

impl Stream {
    /// The Kafka topic of the stream.
    pub fn topic(self) -> &'static str {
        match self {
            Stream::Events(s) => s.topic(),
            Stream::Labels => LABELS_TOPIC,
        }
    }
}

/// Sizes of the simulated populations.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityCounts {
    /// Card holders (and policyholders).
    pub users: u64,
    /// Insurance policies.
    pub policies: u64,
    /// IoT devices.
    pub devices: u64,
}

impl Default for EntityCounts {
    fn default() -> Self {
        Self {
            users: 100_000,
            policies: 50_000,
            devices: 10_000,
        }
    }
}

/// Everything that decides the generated stream.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Sources and their relative shares.
    pub mix: Vec<(Source, f64)>,
    /// Fraction of events that belong to a planted fraud or anomaly pattern.
    pub fraud_rate: f64,
    /// Fraction of events whose event time lags the stream by up to 30 seconds.
    pub out_of_order_rate: f64,
    /// Fraction of events that arrive 2 to 30 minutes after their event time.
    pub late_rate: f64,
    /// Fraction of messages that are corrupted and cannot be decoded.
    pub malformed_rate: f64,
    /// Fraction of genuine events that also get a (negative) label, as reviewed cases do.
    pub negative_label_rate: f64,
    /// Typical (median) delay between an event and its label, in event-time milliseconds; delays
    /// spread log-normally around it, up to ten times as long.
    pub label_delay_ms: f64,
    /// Event time of the first event, milliseconds since the Unix epoch.
    pub start_ms: i64,
    /// Events per second of event time (the stream's simulated arrival rate).
    pub events_per_second: f64,
    /// Population sizes.
    pub entities: EntityCounts,
}

impl GeneratorConfig {
    /// The default mix of all three sources, starting at `start_ms`.
    pub fn new(seed: u64, start_ms: i64) -> Self {
        Self {
            seed,
            mix: Source::ALL
                .iter()
                .map(|s| (*s, s.default_share()))
                .collect(),
            fraud_rate: 0.02,
            out_of_order_rate: 0.05,
            late_rate: 0.005,
            malformed_rate: 0.005,
            negative_label_rate: 0.01,
            label_delay_ms: 10.0 * 60_000.0,
            start_ms,
            events_per_second: 1000.0,
            entities: EntityCounts::default(),
        }
    }

    /// Keeps only `sources` in the mix, with their default shares.
    pub fn with_sources(mut self, sources: &[Source]) -> Self {
        self.mix = sources.iter().map(|s| (*s, s.default_share())).collect();
        self
    }

    /// Checks rates and sizes, naming the option at fault.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("fraud-rate", self.fraud_rate),
            ("out-of-order", self.out_of_order_rate),
            ("late", self.late_rate),
            ("malformed", self.malformed_rate),
            ("negative-labels", self.negative_label_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("--{name} must be within [0, 1], got {v}"));
            }
        }
        if self.out_of_order_rate + self.late_rate > 1.0 {
            return Err("--out-of-order plus --late must not exceed 1".into());
        }
        if self.mix.is_empty() {
            return Err("--source selects no source".into());
        }
        if !(self.events_per_second > 0.0 && self.events_per_second.is_finite()) {
            return Err(format!(
                "--event-rate must be a positive number, got {}",
                self.events_per_second
            ));
        }
        if self.label_delay_ms < 0.0 {
            return Err("--label-delay must not be negative".into());
        }
        Ok(())
    }
}

/// One generated Kafka message, with buffers reused from call to call.
#[derive(Debug, Default, Clone)]
pub struct Message {
    /// Where it goes.
    pub stream: Option<Stream>,
    /// The entity id the message is keyed by.
    pub key: Vec<u8>,
    /// The JSON value (or the corrupted bytes of a malformed message).
    pub value: Vec<u8>,
    /// How the message was corrupted, if it was.
    pub corruption: Option<Corruption>,
}

/// An event of an episode: its offset from the episode's start and whether it is fraudulent.
#[derive(Debug, Clone)]
pub struct Planted<T> {
    offset_ms: i64,
    fraud: bool,
    event: T,
}

impl<T> Planted<T> {
    fn fraud(offset_ms: i64, event: T) -> Self {
        Self {
            offset_ms,
            fraud: true,
            event,
        }
    }

    fn genuine(offset_ms: i64, event: T) -> Self {
        Self {
            offset_ms,
            fraud: false,
            event,
        }
    }
}

#[derive(Debug, Clone)]
enum Event {
    Transaction(Transaction),
    Claim(Claim),
    Reading(Reading),
}

/// An event or a label waiting in time order.
#[derive(Debug)]
struct Scheduled<T> {
    at_ms: i64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Scheduled<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}
impl<T> Eq for Scheduled<T> {}
impl<T> PartialOrd for Scheduled<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Scheduled<T> {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at_ms, other.seq).cmp(&(self.at_ms, self.seq))
    }
}

#[derive(Debug)]
struct PendingEvent {
    event: Event,
    pattern: Option<&'static str>,
}

#[derive(Debug)]
struct Label {
    event_id: Vec<u8>,
    source: Source,
    key: Vec<u8>,
    event_ms: i64,
    fraud: bool,
    pattern: &'static str,
}

/// Counts of what was generated, per source; the ground truth tests check against.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SourceStats {
    /// Events generated, malformed ones included.
    pub events: u64,
    /// Events corrupted into undecodable messages.
    pub malformed: u64,
    /// Events belonging to a planted pattern (decodable ones only).
    pub fraud: u64,
    /// Events sent with an event time in the past (out of order or late).
    pub delayed: u64,
}

/// Totals of a run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GeneratorStats {
    /// Per source, in [`Source::ALL`] order.
    pub sources: [SourceStats; 3],
    /// Labels emitted so far.
    pub labels: u64,
    /// Positive labels emitted so far.
    pub positive_labels: u64,
}

impl GeneratorStats {
    /// The counts of one source.
    pub fn source(&self, source: Source) -> &SourceStats {
        &self.sources[source as usize]
    }

    /// All events generated, malformed ones included.
    pub fn events(&self) -> u64 {
        self.sources.iter().map(|s| s.events).sum()
    }

    /// Events that decode: the rows a scoring job must produce.
    pub fn valid_events(&self) -> u64 {
        self.sources.iter().map(|s| s.events - s.malformed).sum()
    }
}

/// The generator: call [`Generator::next_message`] for the stream, then [`Generator::drain_labels`]
/// once at the end for the labels still in flight.
pub struct Generator {
    cfg: GeneratorConfig,
    rng: Rng,
    run: u64,
    clock_ms: f64,
    seq: u64,
    shares: Vec<f64>,
    transactions: TransactionModel,
    claims: ClaimModel,
    iot: IotModel,
    pending: BinaryHeap<Scheduled<PendingEvent>>,
    labels: BinaryHeap<Scheduled<Label>>,
    episode_start_probability: f64,
    stats: GeneratorStats,
}

impl Generator {
    /// A generator for a validated configuration.
    pub fn new(cfg: GeneratorConfig) -> Result<Self, String> {
        cfg.validate()?;
        let seed = cfg.seed;
        Ok(Self {
            rng: Rng::new(seed),
            // Event ids carry the run: the same seed and start give the same ids, and runs started
            // at other times never collide on a shared topic or table.
            run: rng::mix(&[seed, cfg.start_ms as u64, 0x5EED]) & 0xffff_ffff,
            clock_ms: cfg.start_ms as f64,
            seq: 0,
            shares: cfg.mix.iter().map(|(_, w)| *w).collect(),
            transactions: TransactionModel::new(seed, &cfg.entities),
            claims: ClaimModel::new(seed, &cfg.entities, cfg.start_ms),
            iot: IotModel::new(seed, &cfg.entities, cfg.start_ms),
            pending: BinaryHeap::new(),
            labels: BinaryHeap::new(),
            episode_start_probability: 0.0,
            stats: GeneratorStats::default(),
            cfg,
        }
        .warmed_up())
    }

    /// Sets the episode start rate from the configured fraud rate and schedules the episodes that
    /// would be in flight had the stream been running for a while.
    ///
    /// Episodes span seconds to an hour of event time. Started on demand from an empty queue, the
    /// first hour would be short of fraud and the events of episodes still in flight at the end
    /// would never be sent, so short runs would fall well below the configured rate. Starting
    /// episodes as a stationary random process, with the queue pre-filled as if the stream had
    /// always run, makes every stretch of the stream carry the configured rate on average.
    fn warmed_up(mut self) -> Self {
        if self.cfg.fraud_rate <= 0.0 {
            return self;
        }
        // Measure the episodes with a separate stream, so warm-up leaves the main one untouched.
        let probe = Rng::new(rng::mix(&[self.cfg.seed, 0xE915_0DE5]));
        let main = std::mem::replace(&mut self.rng, probe);
        let samples = 300;
        let (mut fraud_events, mut max_span) = (0u64, 0i64);
        for _ in 0..samples {
            for (offset, fraud, _) in self.plan_episode() {
                fraud_events += u64::from(fraud.is_some());
                max_span = max_span.max(offset);
            }
        }
        let per_episode = (fraud_events as f64 / samples as f64).max(1.0);
        self.episode_start_probability = (self.cfg.fraud_rate / per_episode).min(1.0);

        let starts_per_ms = self.episode_start_probability * self.cfg.events_per_second / 1000.0;
        let warm = ((starts_per_ms * max_span as f64).round() as u64).min(100_000);
        let start = self.cfg.start_ms;
        for _ in 0..warm {
            let began = start - self.rng.below(max_span.max(1) as u64) as i64;
            for (offset, fraud, event) in self.plan_episode() {
                if began + offset >= start {
                    self.schedule(began + offset, fraud, event);
                }
            }
        }
        self.rng = main;
        self
    }

    /// What has been generated so far.
    pub fn stats(&self) -> &GeneratorStats {
        &self.stats
    }

    /// The configuration in use.
    pub fn config(&self) -> &GeneratorConfig {
        &self.cfg
    }

    /// Writes the next message into `msg`: a label whose time has come, else the next event.
    pub fn next_message(&mut self, msg: &mut Message) {
        if let Some(top) = self.labels.peek()
            && top.at_ms as f64 <= self.clock_ms
            && let Some(label) = self.labels.pop()
        {
            self.write_label(label, msg);
            return;
        }
        self.next_event(msg);
    }

    /// Writes the next label still in flight, in label-time order; false when none is left.
    pub fn drain_labels(&mut self, msg: &mut Message) -> bool {
        match self.labels.pop() {
            Some(label) => {
                self.write_label(label, msg);
                true
            }
            None => false,
        }
    }

    fn next_event(&mut self, msg: &mut Message) {
        self.clock_ms += self.rng.exp(1000.0 / self.cfg.events_per_second);
        let now = self.clock_ms as i64;
        if self.rng.chance(self.episode_start_probability) {
            for (offset, fraud, event) in self.plan_episode() {
                self.schedule(now + offset, fraud, event);
            }
        }
        let due = self.pending.peek().is_some_and(|p| p.at_ms <= now);
        let (event, pattern) = match if due { self.pending.pop() } else { None } {
            Some(p) => (p.item.event, p.item.pattern),
            None => (self.normal_event(), None),
        };
        self.emit(event, pattern, now, msg);
    }

    fn pick_source(&mut self) -> Source {
        let i = self.rng.weighted(&self.shares);
        self.cfg.mix[i].0
    }

    fn normal_event(&mut self) -> Event {
        match self.pick_source() {
            Source::Transactions => Event::Transaction(self.transactions.normal(&mut self.rng)),
            Source::Claims => Event::Claim(self.claims.normal(&mut self.rng)),
            Source::Telemetry => Event::Reading(self.iot.normal(&mut self.rng)),
        }
    }

    /// Draws an episode: a source, one of its patterns, and the episode's events with their offsets
    /// from its start and whether each is fraudulent (the pattern is recorded when scheduled).
    fn plan_episode(&mut self) -> Vec<(i64, Option<&'static str>, Event)> {
        let source = self.pick_source();
        let pattern = self.rng.pick(source.patterns());
        let tag = |fraud: bool| fraud.then_some(pattern);
        match source {
            Source::Transactions => self
                .transactions
                .episode(&mut self.rng, pattern)
                .into_iter()
                .map(|p| (p.offset_ms, tag(p.fraud), Event::Transaction(p.event)))
                .collect(),
            Source::Claims => self
                .claims
                .episode(&mut self.rng, pattern)
                .into_iter()
                .map(|p| (p.offset_ms, tag(p.fraud), Event::Claim(p.event)))
                .collect(),
            Source::Telemetry => self
                .iot
                .episode(&mut self.rng, pattern)
                .into_iter()
                .map(|p| (p.offset_ms, tag(p.fraud), Event::Reading(p.event)))
                .collect(),
        }
    }

    fn schedule(&mut self, at_ms: i64, pattern: Option<&'static str>, event: Event) {
        self.seq += 1;
        self.pending.push(Scheduled {
            at_ms,
            seq: self.seq,
            item: PendingEvent { event, pattern },
        });
    }

    fn emit(&mut self, event: Event, pattern: Option<&'static str>, now: i64, msg: &mut Message) {
        let source = match &event {
            Event::Transaction(_) => Source::Transactions,
            Event::Claim(_) => Source::Claims,
            Event::Reading(_) => Source::Telemetry,
        };
        let n = self.stats.sources[source as usize].events;
        let event_ms = self.event_time(now);

        msg.stream = Some(Stream::Events(source));
        msg.key.clear();
        msg.value.clear();
        {
            let key = &mut msg.key;
            match &event {
                Event::Transaction(t) => {
                    let (prefix, id) = t.entity();
                    key.extend_from_slice(prefix.as_bytes());
                    json::write_u64(key, id);
                }
                Event::Claim(c) => {
                    key.extend_from_slice(b"p_");
                    json::write_u64(key, c.policy_id());
                }
                Event::Reading(r) => {
                    key.extend_from_slice(b"dev_");
                    json::write_u64(key, r.device_id());
                }
            }
        }
        let mut o = JsonObject::begin(&mut msg.value);
        o.event_id("event_id", source.event_id_prefix(), self.run, n)
            .str("event_type", source.event_type())
            .timestamp("event_time", event_ms);
        match &event {
            Event::Transaction(t) => t.write(&mut o),
            Event::Claim(c) => c.write(&mut o, event_ms),
            Event::Reading(r) => r.write(&mut o),
        }
        o.end();

        let stats = &mut self.stats.sources[source as usize];
        stats.events += 1;
        if event_ms < now {
            stats.delayed += 1;
        }
        msg.corruption = None;
        if self.rng.chance(self.cfg.malformed_rate) {
            let corruption = malformed::corrupt(&mut self.rng, &mut msg.value);
            msg.corruption = Some(corruption);
            stats.malformed += 1;
            return;
        }
        let label = match pattern {
            Some(p) => Some((true, p)),
            None if self.rng.chance(self.cfg.negative_label_rate) => Some((false, "none")),
            None => None,
        };
        if pattern.is_some() {
            stats.fraud += 1;
        }
        if let Some((fraud, pattern)) = label {
            let mut event_id = Vec::with_capacity(24);
            json::write_event_id(&mut event_id, source.event_id_prefix(), self.run, n);
            let delay = self
                .rng
                .lognormal(self.cfg.label_delay_ms.max(1.0), 0.5)
                .min(self.cfg.label_delay_ms * 10.0);
            self.seq += 1;
            self.labels.push(Scheduled {
                at_ms: now + delay as i64,
                seq: self.seq,
                item: Label {
                    event_id,
                    source,
                    key: msg.key.clone(),
                    event_ms,
                    fraud,
                    pattern,
                },
            });
        }
    }

    /// The event time written into an event generated at `now`: usually `now`, sometimes earlier
    /// (out of order within half a minute, or late by minutes).
    fn event_time(&mut self, now: i64) -> i64 {
        let u = self.rng.f64();
        if u < self.cfg.late_rate {
            now - self.rng.between(2 * 60_000, 30 * 60_000)
        } else if u < self.cfg.late_rate + self.cfg.out_of_order_rate {
            now - self.rng.between(1, 30_000)
        } else {
            now
        }
    }

    fn write_label(&mut self, label: Scheduled<Label>, msg: &mut Message) {
        let l = label.item;
        self.stats.labels += 1;
        if l.fraud {
            self.stats.positive_labels += 1;
        }
        msg.stream = Some(Stream::Labels);
        msg.corruption = None;
        msg.key.clear();
        msg.key.extend_from_slice(&l.key);
        msg.value.clear();
        let mut o = JsonObject::begin(&mut msg.value);
        o.key_raw_str("event_id", &l.event_id)
            .str("event_type", l.source.event_type())
            .int("label", i64::from(l.fraud))
            .str("pattern", l.pattern)
            .timestamp("event_time", l.event_ms)
            .timestamp("label_time", label.at_ms);
        o.end();
    }
}

#[cfg(test)]
mod tests;
