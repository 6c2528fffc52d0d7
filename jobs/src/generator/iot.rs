//! IoT telemetry: devices with stable operating ranges and the anomalies planted among their
//! readings: drift, spikes, flatlines and a reading that stops following the machine's load.

use super::geo::{CITIES, City};
use super::json::{DAY_MS, JsonObject};
use super::rng::Rng;
use super::{EntityCounts, Planted};

const KIND_DEVICE: u64 = 3;

/// Per device type: name, share of the fleet, unit, normal range and how much the reading moves
/// with load.
struct DeviceType {
    name: &'static str,
    weight: f64,
    unit: &'static str,
    min: f64,
    max: f64,
    load_gain: f64,
}

const TYPES: &[DeviceType] = &[
    DeviceType {
        name: "temperature",
        weight: 0.35,
        unit: "celsius",
        min: 20.0,
        max: 80.0,
        load_gain: 0.35,
    },
    DeviceType {
        name: "pressure",
        weight: 0.25,
        unit: "kpa",
        min: 180.0,
        max: 420.0,
        load_gain: 1.6,
    },
    DeviceType {
        name: "vibration",
        weight: 0.20,
        unit: "mm_s",
        min: 0.5,
        max: 12.0,
        load_gain: 0.07,
    },
    DeviceType {
        name: "environmental",
        weight: 0.20,
        unit: "ppm_co2",
        min: 400.0,
        max: 1500.0,
        load_gain: 6.0,
    },
];
const FIRMWARE: &[&str] = &["2.3.1", "2.4.0", "2.4.2", "3.0.1", "3.1.0"];
const CRITICALITY: &[&str] = &["low", "medium", "medium", "high", "critical"];
const ERROR_CODES: &[&str] = &["E101_SENSOR_TIMEOUT", "E204_CALIBRATION", "E310_POWER_DIP"];

struct Device {
    id: u64,
    kind: usize,
    site: u64,
    city: &'static City,
    lat: f64,
    lon: f64,
    firmware: &'static str,
    criticality: &'static str,
    baseline: f64,
    noise: f64,
    installed_day: i64,
    last_maintenance_day: i64,
    maintenance_interval: i64,
}

impl Device {
    fn new(seed: u64, id: u64, today: i64) -> Self {
        let mut rng = Rng::for_entity(seed, KIND_DEVICE, id);
        let kind = rng.weighted_by(TYPES, |_, t| t.weight);
        let t = &TYPES[kind];
        let site = id / 25;
        // Devices of one site share a city.
        let mut site_rng = Rng::for_entity(seed, KIND_DEVICE + 100, site);
        let city = &CITIES[site_rng.below(CITIES.len() as u64) as usize];
        let span = t.max - t.min;
        Self {
            id,
            kind,
            site,
            city,
            lat: city.lat + site_rng.range_f64(-0.2, 0.2),
            lon: city.lon + site_rng.range_f64(-0.2, 0.2),
            firmware: rng.pick(FIRMWARE),
            criticality: rng.pick(CRITICALITY),
            baseline: t.min + span * rng.range_f64(0.3, 0.5),
            noise: span * rng.range_f64(0.02, 0.05),
            installed_day: today - rng.between(30, 2000),
            last_maintenance_day: today - rng.between(1, 200),
            maintenance_interval: rng.pick(&[90, 180, 365]),
        }
    }
}

/// One reading, fully decided.
#[derive(Debug, Clone)]
pub struct Reading {
    device_id: u64,
    kind: usize,
    site: u64,
    city: &'static City,
    lat: f64,
    lon: f64,
    firmware: &'static str,
    criticality: &'static str,
    reading: f64,
    load_pct: f64,
    ambient_c: f64,
    humidity: f64,
    battery: f64,
    signal_dbm: i64,
    uptime_hours: i64,
    last_maintenance_day: i64,
    maintenance_due_day: i64,
    error_code: Option<&'static str>,
}

impl Reading {
    /// The device the reading is keyed by.
    pub fn device_id(&self) -> u64 {
        self.device_id
    }

    /// Writes the event's JSON (after the common fields).
    pub fn write(&self, o: &mut JsonObject<'_>) {
        let t = &TYPES[self.kind];
        o.id("device_id", "dev_", self.device_id)
            .str("device_type", t.name)
            .id("site_id", "site_", self.site)
            .str("city", self.city.name)
            .str("country", self.city.country)
            .fixed("latitude", self.lat, 5)
            .fixed("longitude", self.lon, 5)
            .str("firmware_version", self.firmware)
            .str("criticality", self.criticality)
            .fixed("reading", self.reading, 3)
            .str("unit", t.unit)
            .fixed("normal_min", t.min, 1)
            .fixed("normal_max", t.max, 1)
            .fixed("load_pct", self.load_pct, 1)
            .fixed("ambient_temp_c", self.ambient_c, 1)
            .fixed("humidity_pct", self.humidity, 1)
            .fixed("battery_pct", self.battery, 1)
            .int("signal_dbm", self.signal_dbm)
            .int("uptime_hours", self.uptime_hours)
            .date("last_maintenance", self.last_maintenance_day)
            .date("maintenance_due", self.maintenance_due_day);
        match self.error_code {
            Some(code) => o.str("error_code", code),
            None => o.null("error_code"),
        };
    }
}

/// Draws normal readings and anomaly episodes.
pub struct IotModel {
    seed: u64,
    devices: u64,
    today: i64,
}

/// Anomaly patterns in telemetry.
pub const PATTERNS: &[&str] = &[
    "sensor_drift",
    "sensor_spike",
    "sensor_flatline",
    "correlation_break",
];

impl IotModel {
    /// A model over `counts.devices` devices.
    pub fn new(seed: u64, counts: &EntityCounts, start_ms: i64) -> Self {
        Self {
            seed,
            devices: counts.devices.max(1),
            today: start_ms.div_euclid(DAY_MS),
        }
    }

    fn read(&self, rng: &mut Rng, d: &Device) -> Reading {
        let t = &TYPES[d.kind];
        let load = rng.range_f64(20.0, 95.0);
        let reading = d.baseline + t.load_gain * (load - 50.0) + rng.gauss(0.0, d.noise);
        Reading {
            device_id: d.id,
            kind: d.kind,
            site: d.site,
            city: d.city,
            lat: d.lat,
            lon: d.lon,
            firmware: d.firmware,
            criticality: d.criticality,
            reading: reading.clamp(t.min, t.max),
            load_pct: load,
            ambient_c: rng.gauss(22.0, 4.0),
            humidity: rng.range_f64(25.0, 70.0),
            battery: rng.range_f64(35.0, 100.0),
            signal_dbm: rng.between(-95, -45),
            uptime_hours: (self.today - d.installed_day) * 24 + rng.between(0, 23),
            last_maintenance_day: d.last_maintenance_day,
            maintenance_due_day: d.last_maintenance_day + d.maintenance_interval,
            error_code: rng.chance(0.002).then(|| rng.pick(ERROR_CODES)),
        }
    }

    /// A normal reading from a device drawn from the fleet.
    pub fn normal(&mut self, rng: &mut Rng) -> Reading {
        let d = Device::new(self.seed, rng.below(self.devices), self.today);
        self.read(rng, &d)
    }

    /// An anomaly episode of `pattern` on one device, with offsets from now in milliseconds.
    pub fn episode(&mut self, rng: &mut Rng, pattern: &'static str) -> Vec<Planted<Reading>> {
        let d = Device::new(self.seed, rng.below(self.devices), self.today);
        let t = &TYPES[d.kind];
        let span = t.max - t.min;
        let step_ms = rng.range_f64(5_000.0, 30_000.0);
        let mut out = Vec::new();
        match pattern {
            "sensor_drift" => {
                let n = rng.between(10, 20);
                for k in 0..n {
                    let mut r = self.read(rng, &d);
                    let frac = (k + 1) as f64 / n as f64;
                    r.reading = d.baseline + span * (0.3 + 0.6 * frac) + rng.gauss(0.0, d.noise);
                    out.push(Planted::fraud((k as f64 * step_ms) as i64, r));
                }
            }
            "sensor_spike" => {
                for k in 0..rng.between(1, 3) {
                    let mut r = self.read(rng, &d);
                    r.reading = t.max + span * rng.range_f64(1.0, 3.0);
                    out.push(Planted::fraud((k as f64 * step_ms) as i64, r));
                }
            }
            "sensor_flatline" => {
                let stuck = self.read(rng, &d).reading;
                for k in 0..rng.between(10, 20) {
                    let mut r = self.read(rng, &d);
                    r.reading = stuck;
                    out.push(Planted::fraud((k as f64 * step_ms) as i64, r));
                }
            }
            _ => {
                // The reading moves against the load it normally follows.
                for k in 0..rng.between(8, 15) {
                    let mut r = self.read(rng, &d);
                    r.reading = (d.baseline - 2.0 * t.load_gain * (r.load_pct - 50.0)
                        + rng.gauss(0.0, d.noise))
                    .clamp(t.min, t.max);
                    out.push(Planted::fraud((k as f64 * step_ms) as i64, r));
                }
            }
        }
        out
    }
}
