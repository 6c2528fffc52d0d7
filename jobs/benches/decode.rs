//! JSON decoding speed on one core (`cargo bench -p riskstream-jobs --bench decode`): generated
//! transactions (their malformed messages included, as the jobs see them) decoded into the
//! declared schema's columns, whole and as the windowed-spend benchmark builds them (three
//! columns, every field still read and checked).
//!
//! Options (after `--`): `--events N --runs N`.

use std::time::Instant;

use datafusion::arrow::array::BinaryBuilder;
use riskstream_jobs::decode::JsonDecoder;
use riskstream_jobs::generator::{Generator, GeneratorConfig, Message, Source, Stream};
use riskstream_jobs::schemas::source_schema;

type CommandError = Box<dyn std::error::Error>;

fn main() -> Result<(), CommandError> {
    let (mut events, mut runs) = (500_000u64, 7u64);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let target = match flag.as_str() {
            "--events" => &mut events,
            "--runs" => &mut runs,
            // cargo bench passes --bench; anything else is a mistake worth naming.
            "--bench" => continue,
            other => return Err(format!("unknown option {other}").into()),
        };
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        *target = value
            .parse()
            .map_err(|_| format!("{flag} {value}: not a number"))?;
    }
    if events == 0 || runs == 0 {
        return Err("events and runs must be positive".into());
    }

    let config = GeneratorConfig::new(1, 1_767_225_600_000).with_sources(&[Source::Transactions]);
    let mut generator = Generator::new(config)?;
    let mut values = BinaryBuilder::new();
    let (mut msg, mut made, mut bytes) = (Message::default(), 0, 0);
    while made < events {
        generator.next_message(&mut msg);
        if let Some(Stream::Events(_)) = msg.stream {
            values.append_value(&msg.value);
            bytes += msg.value.len();
            made += 1;
        }
    }
    let values = values.finish();

    let schema = source_schema(Source::Transactions);
    let whole = JsonDecoder::new(schema.clone())?;
    let columns: Vec<usize> = ["event_time", "user_id", "amount"]
        .iter()
        .map(|name| schema.index_of(name))
        .collect::<Result<_, _>>()?;
    let mut sorted = columns.clone();
    sorted.sort_unstable();
    let three = whole.building(&sorted)?;

    println!(
        "{events} transactions, {:.0} bytes each on average; best and median of {runs} runs",
        bytes as f64 / events as f64
    );
    for (name, decoder) in [("every column", &whole), ("three columns", &three)] {
        let mut times = Vec::new();
        let mut rejected = 0;
        for _ in 0..runs {
            let started = Instant::now();
            let decoded = decoder.decode(&values)?;
            times.push(started.elapsed().as_secs_f64());
            rejected = decoded.rejected.len();
        }
        times.sort_by(f64::total_cmp);
        let (best, median) = (times[0], times[times.len() / 2]);
        println!(
            "{name:>14}: {:.0} ns/message, {:.0} MB/s best; {:.0} ns/message median \
             ({rejected} malformed set aside)",
            best * 1e9 / events as f64,
            bytes as f64 / best / 1e6,
            median * 1e9 / events as f64,
        );
    }
    Ok(())
}
