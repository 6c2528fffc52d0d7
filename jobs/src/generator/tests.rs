//! The generator's contract: schemas, determinism, rates of patterns, labels, malformed and
//! delayed events.

#![expect(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};

use datafusion::arrow::array::BinaryArray;

use super::*;
use crate::decode::JsonDecoder;
use crate::schemas::{labels_schema, source_schema};

const START: i64 = 1_793_491_200_000; // 2026-11-01T00:00:00Z

fn generate(cfg: GeneratorConfig, events: usize) -> (Vec<Message>, GeneratorStats) {
    let mut g = Generator::new(cfg).unwrap();
    let mut out = Vec::new();
    let mut msg = Message::default();
    let mut n = 0;
    while n < events {
        g.next_message(&mut msg);
        if msg.stream != Some(Stream::Labels) {
            n += 1;
        }
        out.push(msg.clone());
    }
    while g.drain_labels(&mut msg) {
        out.push(msg.clone());
    }
    (out, g.stats().clone())
}

fn by_stream(messages: &[Message]) -> HashMap<Stream, Vec<&Message>> {
    let mut map: HashMap<Stream, Vec<&Message>> = HashMap::new();
    for m in messages {
        map.entry(m.stream.unwrap()).or_default().push(m);
    }
    map
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let (a, sa) = generate(GeneratorConfig::new(9, START), 20_000);
    let (b, sb) = generate(GeneratorConfig::new(9, START), 20_000);
    assert_eq!(sa, sb);
    assert_eq!(a.len(), b.len());
    assert!(
        a.iter()
            .zip(&b)
            .all(|(x, y)| x.key == y.key && x.value == y.value)
    );
    let (c, _) = generate(GeneratorConfig::new(10, START), 20_000);
    assert!(a.iter().zip(&c).any(|(x, y)| x.value != y.value));
}

#[test]
fn every_valid_event_decodes_with_its_declared_schema_and_every_malformed_one_is_rejected() {
    let (messages, stats) = generate(GeneratorConfig::new(1, START), 60_000);
    let streams = by_stream(&messages);
    for source in Source::ALL {
        let msgs = &streams[&Stream::Events(source)];
        let values = BinaryArray::from_iter_values(msgs.iter().map(|m| m.value.as_slice()));
        let decoded = JsonDecoder::new(source_schema(source))
            .unwrap()
            .decode(&values)
            .unwrap();
        let rejected: HashSet<u32> = decoded.rejected.iter().map(|r| r.index).collect();
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(
                m.corruption.is_some(),
                rejected.contains(&(i as u32)),
                "{source:?} message {i} ({:?}): {}",
                m.corruption,
                String::from_utf8_lossy(&m.value)
            );
        }
        let st = stats.source(source);
        assert_eq!(decoded.num_rows() as u64, st.events - st.malformed);
        // No field of the declared schema is always missing.
        for batch in &decoded.batches {
            for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
                if !["error_code", "vehicle_age_years"].contains(&field.name().as_str()) {
                    assert!(
                        column.null_count() < column.len(),
                        "{source:?}.{} is all null",
                        field.name()
                    );
                }
            }
        }
    }
    let labels = &streams[&Stream::Labels];
    let values = BinaryArray::from_iter_values(labels.iter().map(|m| m.value.as_slice()));
    let decoded = JsonDecoder::new(labels_schema())
        .unwrap()
        .decode(&values)
        .unwrap();
    assert!(decoded.rejected.is_empty());
    assert_eq!(decoded.num_rows() as u64, stats.labels);
}

#[test]
fn sources_carry_the_attributes_the_seeds_ask_for() {
    assert!(source_schema(Source::Transactions).fields().len() >= 20);
    assert!(source_schema(Source::Claims).fields().len() >= 25);
    assert!(source_schema(Source::Telemetry).fields().len() >= 20);
    let (messages, _) = generate(GeneratorConfig::new(2, START), 3_000);
    for m in messages.iter().filter(|m| m.corruption.is_none()) {
        let v: serde_json::Value = serde_json::from_slice(&m.value).unwrap();
        let fields = v.as_object().unwrap().len();
        match m.stream.unwrap() {
            Stream::Events(s) => assert_eq!(fields, source_schema(s).fields().len(), "{s:?}"),
            Stream::Labels => assert_eq!(fields, labels_schema().fields().len()),
        }
    }
}

#[test]
fn pattern_label_malformed_and_delay_rates_follow_the_configuration() {
    let mut cfg = GeneratorConfig::new(3, START);
    cfg.fraud_rate = 0.05;
    cfg.malformed_rate = 0.01;
    cfg.out_of_order_rate = 0.1;
    cfg.late_rate = 0.02;
    cfg.negative_label_rate = 0.02;
    let n = 200_000;
    let (messages, stats) = generate(cfg, n);
    let total = stats.events() as f64;
    assert_eq!(stats.events(), n as u64);

    // The mix: 40 / 35 / 25.
    for (source, share) in [
        (Source::Transactions, 0.40),
        (Source::Claims, 0.35),
        (Source::Telemetry, 0.25),
    ] {
        let got = stats.source(source).events as f64 / total;
        assert!((got - share).abs() < 0.03, "{source:?} share {got}");
    }
    let malformed: u64 = stats.sources.iter().map(|s| s.malformed).sum();
    assert!(
        (malformed as f64 / total - 0.01).abs() < 0.002,
        "malformed {malformed}"
    );
    let delayed: u64 = stats.sources.iter().map(|s| s.delayed).sum();
    assert!(
        (delayed as f64 / total - 0.12).abs() < 0.01,
        "delayed {delayed}"
    );
    let fraud: u64 = stats.sources.iter().map(|s| s.fraud).sum();
    assert!((fraud as f64 / total - 0.05).abs() < 0.01, "fraud {fraud}");

    // One positive label per decodable fraud event, plus sampled negatives; every pattern appears.
    assert_eq!(stats.positive_labels, fraud);
    let negatives = stats.labels - stats.positive_labels;
    assert!(
        (negatives as f64 / (total - fraud as f64) - 0.02).abs() < 0.005,
        "negatives {negatives}"
    );
    let mut patterns: HashSet<String> = HashSet::new();
    let mut label_after_event = 0;
    for m in messages.iter().filter(|m| m.stream == Some(Stream::Labels)) {
        let v: serde_json::Value = serde_json::from_slice(&m.value).unwrap();
        patterns.insert(v["pattern"].as_str().unwrap().to_string());
        if v["label_time"].as_str() > v["event_time"].as_str() {
            label_after_event += 1;
        }
    }
    assert_eq!(label_after_event, stats.labels);
    for source in Source::ALL {
        for p in source.patterns() {
            assert!(patterns.contains(*p), "pattern {p} never planted");
        }
    }
    // Labels never travel inside events.
    for m in messages.iter().filter(|m| m.stream != Some(Stream::Labels)) {
        let text = String::from_utf8_lossy(&m.value);
        assert!(!text.contains("\"label\"") && !text.contains("\"pattern\""));
    }
}

#[test]
fn keys_are_the_entity_of_each_source() {
    let (messages, _) = generate(GeneratorConfig::new(4, START), 5_000);
    for m in messages.iter().filter(|m| m.corruption.is_none()) {
        let v: serde_json::Value = serde_json::from_slice(&m.value).unwrap();
        let key = String::from_utf8(m.key.clone()).unwrap();
        match m.stream.unwrap() {
            Stream::Events(Source::Transactions) => assert_eq!(v["user_id"], key.as_str()),
            Stream::Events(Source::Claims) => assert_eq!(v["policy_id"], key.as_str()),
            Stream::Events(Source::Telemetry) => assert_eq!(v["device_id"], key.as_str()),
            Stream::Labels => {}
        }
    }
}

#[test]
fn bad_rates_are_rejected_naming_the_option() {
    let mut cfg = GeneratorConfig::new(1, START);
    cfg.malformed_rate = 1.5;
    assert!(cfg.validate().unwrap_err().contains("--malformed"));
    let cfg = GeneratorConfig::new(1, START).with_sources(&[]);
    assert!(cfg.validate().unwrap_err().contains("--source"));
}
