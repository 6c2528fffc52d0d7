//! `riskstream generate`: runs the event generator at a given rate into Kafka, a JSON-lines file,
//! standard output or nowhere (to measure the generator itself), with live throughput and a final
//! delivery summary.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{JobError, Result};
use crate::generator::{
    Generator, GeneratorConfig, GeneratorStats, LABELS_PARTITIONS, Message, Source, Stream,
};
use crate::kafka::{KafkaEventSink, ensure_topics, parse_bootstrap};

/// Where generated messages go.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A Kafka cluster, by bootstrap servers.
    Kafka(String),
    /// JSON lines: one file, or one `<topic>.jsonl` per topic when the path is a folder.
    File(PathBuf),
    /// JSON lines on standard output.
    Stdout,
    /// Discarded: measures the generator alone.
    Null,
}

impl Target {
    /// Parses `kafka://HOST:PORT`, `file:PATH`, `stdout` or `null`.
    pub fn parse(s: &str) -> Result<Self> {
        if s.starts_with("kafka://") {
            return Ok(Target::Kafka(parse_bootstrap(s, "--to")?));
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(JobError::config("--to", "file: needs a path (file:PATH)"));
            }
            return Ok(Target::File(PathBuf::from(path)));
        }
        match s {
            "stdout" | "-" => Ok(Target::Stdout),
            "null" => Ok(Target::Null),
            other => Err(JobError::config(
                "--to",
                format!("`{other}` is not kafka://HOST:PORT, file:PATH, stdout or null"),
            )),
        }
    }
}

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// After this many events (labels not counted).
    Count(u64),
    /// After this much wall-clock time.
    Duration(Duration),
    /// Until stopped (Ctrl-C).
    Unbounded,
}

/// A generator run.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// What to generate.
    pub generator: GeneratorConfig,
    /// Where to send it.
    pub target: Target,
    /// Events per second; 0 for as fast as possible.
    pub rate: f64,
    /// When to stop.
    pub limit: Limit,
    /// Print throughput every second to standard error.
    pub progress: bool,
    /// Prepended to every topic name (and file name), so that runs can share a cluster.
    pub topic_prefix: String,
}

impl GenerateOptions {
    /// The topic (or file stem) `stream` is written to.
    pub fn topic(&self, stream: Stream) -> String {
        format!("{}{}", self.topic_prefix, stream.topic())
    }

    fn topics(&self) -> [String; 4] {
        STREAMS.map(|s| self.topic(s))
    }
}

/// Per-stream delivery results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDelivery {
    /// The topic.
    pub topic: String,
    /// Messages handed to the sink.
    pub sent: u64,
    /// Messages the sink confirmed (Kafka acks; writes for files).
    pub acknowledged: u64,
    /// Messages that failed.
    pub failed: u64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct GenerateSummary {
    /// The generator's ground truth.
    pub stats: GeneratorStats,
    /// Delivery per topic.
    pub delivery: Vec<StreamDelivery>,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Bytes of message values produced.
    pub bytes: u64,
    /// Why the run stopped early (a send or flush that failed), if it did.
    pub error: Option<String>,
}

impl GenerateSummary {
    /// Events per second over the run.
    pub fn events_per_second(&self) -> f64 {
        self.stats.events() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Total failed deliveries.
    pub fn failed(&self) -> u64 {
        self.delivery.iter().map(|d| d.failed).sum()
    }
}

/// Paces events at a fixed rate against an absolute schedule (no drift), allowing at most one
/// second of catch-up after a stall.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    start: Instant,
    issued: u64,
}

impl RateLimiter {
    /// A limiter for `rate` events per second; 0 means no limit.
    pub fn new(rate: f64) -> Self {
        Self {
            rate,
            start: Instant::now(),
            issued: 0,
        }
    }

    /// Waits until the next event is due.
    pub fn acquire(&mut self) {
        if self.rate <= 0.0 {
            return;
        }
        self.issued += 1;
        // Clamped so that absurdly small rates cannot overflow a Duration.
        let due = Duration::from_secs_f64((self.issued as f64 / self.rate).min(1e9));
        let elapsed = self.start.elapsed();
        if due > elapsed {
            let wait = due - elapsed;
            // Sleeping is coarse; spin through the last stretch so high rates stay accurate.
            if wait > Duration::from_micros(200) {
                std::thread::sleep(wait - Duration::from_micros(100));
            }
            while self.start.elapsed() < due {
                std::hint::spin_loop();
            }
        } else if elapsed - due > Duration::from_secs(1) {
            // Far behind (the sink stalled): forget the backlog rather than burst to catch up.
            self.issued = (elapsed.as_secs_f64() * self.rate) as u64;
        }
    }
}

type LineWriter = BufWriter<Box<dyn Write + Send>>;

enum Sink {
    Kafka(KafkaEventSink),
    /// One writer shared by all streams, or one per stream in [`STREAMS`] order.
    Lines(Vec<LineWriter>, PathBuf),
    Null,
}

const STREAMS: [Stream; 4] = [
    Stream::Events(Source::Transactions),
    Stream::Events(Source::Claims),
    Stream::Events(Source::Telemetry),
    Stream::Labels,
];

fn stream_index(stream: Stream) -> usize {
    match stream {
        Stream::Events(s) => s as usize,
        Stream::Labels => 3,
    }
}

fn open_lines(target: &Target, names: &[String; 4]) -> Result<Sink> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| JobError::Io { path, source }
    };
    let buffered = |w: Box<dyn Write + Send>| BufWriter::with_capacity(1 << 20, w);
    match target {
        Target::Stdout => Ok(Sink::Lines(
            vec![buffered(Box::new(std::io::stdout()))],
            PathBuf::from("stdout"),
        )),
        Target::File(path) if path.is_dir() || path.to_string_lossy().ends_with('/') => {
            std::fs::create_dir_all(path).map_err(io(path))?;
            let mut writers = Vec::new();
            for name in names {
                let file = path.join(format!("{name}.jsonl"));
                writers.push(buffered(Box::new(File::create(&file).map_err(io(&file))?)));
            }
            Ok(Sink::Lines(writers, path.clone()))
        }
        Target::File(path) => {
            let f = File::create(path).map_err(io(path))?;
            Ok(Sink::Lines(vec![buffered(Box::new(f))], path.clone()))
        }
        Target::Kafka(_) | Target::Null => Ok(Sink::Null),
    }
}

/// Creates the topics a run will write (Kafka targets only), failing fast when the broker cannot
/// be reached.
pub async fn prepare_target(options: &GenerateOptions) -> Result<()> {
    if let Target::Kafka(brokers) = &options.target {
        let mut topics: Vec<(String, i32)> = options
            .generator
            .mix
            .iter()
            .map(|(s, _)| (options.topic(Stream::Events(*s)), s.partitions()))
            .collect();
        topics.push((options.topic(Stream::Labels), LABELS_PARTITIONS));
        let topics: Vec<(&str, i32)> = topics.iter().map(|(t, p)| (t.as_str(), *p)).collect();
        ensure_topics(brokers, &topics).await?;
    }
    Ok(())
}

/// Runs the generator to completion or until `stop` is set (blocking; call [`prepare_target`]
/// first for Kafka).
pub fn run(options: &GenerateOptions, stop: &AtomicBool) -> Result<GenerateSummary> {
    let mut generator = Generator::new(options.generator.clone())
        .map_err(|reason| JobError::config("generator", reason))?;
    let names = options.topics();
    let mut sink = match &options.target {
        Target::Kafka(brokers) => {
            let topics: Vec<&str> = names.iter().map(String::as_str).collect();
            Sink::Kafka(KafkaEventSink::new(brokers, &topics)?)
        }
        Target::Null => Sink::Null,
        other => open_lines(other, &names)?,
    };
    let mut sent = [0u64; 4];
    let mut bytes = 0u64;
    let mut limiter = RateLimiter::new(options.rate);
    let start = Instant::now();
    let mut last_report = start;
    let mut last_sent = 0u64;
    let mut msg = Message::default();
    let mut events = 0u64;

    let deliver =
        |sink: &mut Sink, msg: &Message, sent: &mut [u64; 4], bytes: &mut u64| -> Result<()> {
            let Some(stream) = msg.stream else {
                return Ok(());
            };
            sent[stream_index(stream)] += 1;
            *bytes += msg.value.len() as u64;
            match sink {
                Sink::Kafka(k) => k.send(&names[stream_index(stream)], &msg.key, &msg.value),
                Sink::Lines(writers, path) => {
                    let w = if writers.len() == 1 {
                        &mut writers[0]
                    } else {
                        &mut writers[stream_index(stream)]
                    };
                    write_line(w, &msg.value).map_err(|source| JobError::Io {
                        path: path.display().to_string(),
                        source,
                    })
                }
                Sink::Null => Ok(()),
            }
        };

    // A send that fails ends the run, but what was queued is still flushed and reported.
    let mut failure: Option<JobError> = None;
    loop {
        // Clock and flag checks every event when paced (events are slow then), every 256 when not.
        let check = options.rate > 0.0 || events.is_multiple_of(256);
        let done = match options.limit {
            Limit::Count(n) => events >= n,
            Limit::Duration(d) => check && start.elapsed() >= d,
            Limit::Unbounded => false,
        } || (check && stop.load(Ordering::Relaxed));
        if done {
            break;
        }
        generator.next_message(&mut msg);
        if !matches!(msg.stream, Some(Stream::Labels)) {
            limiter.acquire();
            events += 1;
        }
        if let Err(e) = deliver(&mut sink, &msg, &mut sent, &mut bytes) {
            failure = Some(e);
            break;
        }
        if options.progress && check && last_report.elapsed() >= Duration::from_secs(1) {
            let total: u64 = sent.iter().sum();
            let secs = last_report.elapsed().as_secs_f64();
            let acked = match &sink {
                Sink::Kafka(k) => names.iter().map(|t| k.counts(t).0).sum::<u64>(),
                _ => total,
            };
            eprintln!(
                "  {:>6.1}s  {:>10.0} msg/s  sent {:>11}  acknowledged {:>11}",
                start.elapsed().as_secs_f64(),
                (total - last_sent) as f64 / secs,
                total,
                acked
            );
            last_sent = total;
            last_report = Instant::now();
        }
    }
    if failure.is_none() {
        while generator.drain_labels(&mut msg) {
            if let Err(e) = deliver(&mut sink, &msg, &mut sent, &mut bytes) {
                failure = Some(e);
                break;
            }
        }
    }

    let delivery = match &mut sink {
        Sink::Kafka(k) => {
            if let Err(e) = k.flush(Duration::from_secs(120)) {
                failure.get_or_insert(e);
            }
            STREAMS
                .iter()
                .map(|s| {
                    let topic = &names[stream_index(*s)];
                    let (acknowledged, failed) = k.counts(topic);
                    StreamDelivery {
                        topic: topic.clone(),
                        sent: sent[stream_index(*s)],
                        acknowledged,
                        failed,
                    }
                })
                .collect()
        }
        Sink::Lines(writers, path) => {
            for w in writers.iter_mut() {
                if let Err(source) = w.flush() {
                    failure.get_or_insert(JobError::Io {
                        path: path.display().to_string(),
                        source,
                    });
                }
            }
            written(&sent, &names)
        }
        Sink::Null => written(&sent, &names),
    };
    Ok(GenerateSummary {
        stats: generator.stats().clone(),
        delivery,
        elapsed: start.elapsed(),
        bytes,
        error: failure.map(|e| e.to_string()),
    })
}

fn written(sent: &[u64; 4], names: &[String; 4]) -> Vec<StreamDelivery> {
    STREAMS
        .iter()
        .map(|s| StreamDelivery {
            topic: names[stream_index(*s)].clone(),
            sent: sent[stream_index(*s)],
            acknowledged: sent[stream_index(*s)],
            failed: 0,
        })
        .collect()
}

/// Writes one message as a line; a corrupted message's line breaks become spaces so that it
/// stays one (still undecodable) line.
fn write_line(w: &mut impl Write, value: &[u8]) -> std::io::Result<()> {
    if value.contains(&b'\n') {
        let cleaned: Vec<u8> = value
            .iter()
            .map(|b| if *b == b'\n' { b' ' } else { *b })
            .collect();
        w.write_all(&cleaned)?;
    } else {
        w.write_all(value)?;
    }
    w.write_all(b"\n")
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_bad_ones_name_the_flag() {
        assert_eq!(Target::parse("null").unwrap(), Target::Null);
        assert_eq!(Target::parse("stdout").unwrap(), Target::Stdout);
        assert_eq!(
            Target::parse("kafka://127.0.0.1:9092").unwrap(),
            Target::Kafka("127.0.0.1:9092".into())
        );
        assert_eq!(
            Target::parse("file:/tmp/x.jsonl").unwrap(),
            Target::File("/tmp/x.jsonl".into())
        );
        let err = Target::parse("http://x").unwrap_err().to_string();
        assert!(err.starts_with("--to") && err.contains("http://x"), "{err}");
    }

    #[test]
    fn rate_limiter_paces_to_the_schedule() {
        // Not a timing assertion on the code under test's speed: the limiter must never let events
        // run ahead of the schedule it was given.
        let mut limiter = RateLimiter::new(2000.0);
        let start = Instant::now();
        for _ in 0..200 {
            limiter.acquire();
        }
        assert!(start.elapsed() >= Duration::from_millis(99));
    }
}
