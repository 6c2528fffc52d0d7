//! Insurance claims: stable policies (type, start date, cover, home) and the fraud patterns planted
//! among their claims: inflated amounts, claims soon after inception, repeated claims and rings of
//! claims around one provider.

use super::geo::{CITIES, City, home_weight};
use super::json::{DAY_MS, JsonObject};
use super::rng::Rng;
use super::{EntityCounts, Planted};

const KIND_POLICY: u64 = 2;

/// Per claim type: name, weight in the book, median claim, coverage limit, premium, incident
/// types, provider type.
struct ClaimType {
    name: &'static str,
    weight: f64,
    median: f64,
    limit: f64,
    premium: f64,
    incidents: &'static [&'static str],
    provider: &'static str,
}

const TYPES: &[ClaimType] = &[
    ClaimType {
        name: "auto",
        weight: 0.45,
        median: 3_500.0,
        limit: 50_000.0,
        premium: 1_200.0,
        incidents: &["collision", "theft", "vandalism", "glass", "hail_damage"],
        provider: "repair_shop",
    },
    ClaimType {
        name: "property",
        weight: 0.30,
        median: 8_000.0,
        limit: 400_000.0,
        premium: 1_500.0,
        incidents: &["water_damage", "fire", "burglary", "storm_damage"],
        provider: "contractor",
    },
    ClaimType {
        name: "health",
        weight: 0.20,
        median: 2_500.0,
        limit: 100_000.0,
        premium: 4_000.0,
        incidents: &["illness", "injury", "surgery", "emergency_visit"],
        provider: "hospital",
    },
    ClaimType {
        name: "life",
        weight: 0.05,
        median: 60_000.0,
        limit: 500_000.0,
        premium: 600.0,
        incidents: &["death", "critical_illness"],
        provider: "funeral_home",
    },
];
const WEATHER: &[&str] = &[
    "clear", "clear", "clear", "cloudy", "rain", "snow", "fog", "storm",
];
const CHANNELS: &[&str] = &["agent", "online", "phone", "app"];

struct Policy {
    id: u64,
    user_id: u64,
    kind: usize,
    start_day: i64,
    premium: f64,
    limit: f64,
    deductible: f64,
    home: &'static City,
    lat: f64,
    lon: f64,
    vehicle_age: i64,
}

impl Policy {
    fn new(seed: u64, id: u64, users: u64, today: i64) -> Self {
        let mut rng = Rng::for_entity(seed, KIND_POLICY, id);
        let kind = rng.weighted_by(TYPES, |_, t| t.weight);
        let t = &TYPES[kind];
        let home = &CITIES[rng.weighted_by(CITIES, |i, _| home_weight(i))];
        Self {
            id,
            user_id: rng.below(users.max(1)),
            kind,
            start_day: today - rng.between(60, 3650),
            premium: t.premium * rng.range_f64(0.6, 1.8),
            limit: t.limit * rng.pick(&[0.5, 1.0, 1.0, 2.0]),
            deductible: rng.pick(&[250.0, 500.0, 1000.0, 2500.0]),
            home,
            lat: home.lat + rng.range_f64(-0.08, 0.08),
            lon: home.lon + rng.range_f64(-0.08, 0.08),
            vehicle_age: rng.between(0, 18),
        }
    }
}

/// One claim, fully decided.
#[derive(Debug, Clone)]
pub struct Claim {
    claim_id: u64,
    policy_id: u64,
    user_id: u64,
    kind: usize,
    amount: f64,
    currency: &'static str,
    policy_start_day: i64,
    premium: f64,
    limit: f64,
    deductible: f64,
    report_delay_days: i64,
    incident_type: &'static str,
    prior_claims: i64,
    lat: f64,
    lon: f64,
    city: &'static City,
    weather: &'static str,
    provider_id: u64,
    adjuster_id: u64,
    police_report: bool,
    witnesses: i64,
    channel: &'static str,
    injury_involved: bool,
    vehicle_age: Option<i64>,
}

impl Claim {
    /// The policy the claim is keyed by.
    pub fn policy_id(&self) -> u64 {
        self.policy_id
    }

    /// Writes the event's JSON (after the common fields).
    pub fn write(&self, o: &mut JsonObject<'_>, event_ms: i64) {
        let t = &TYPES[self.kind];
        let report_day = event_ms.div_euclid(DAY_MS);
        o.id("claim_id", "clm_", self.claim_id)
            .id("policy_id", "p_", self.policy_id)
            .id("user_id", "u_", self.user_id)
            .str("claim_type", t.name)
            .str("incident_type", self.incident_type)
            .fixed("claim_amount", self.amount, 2)
            .str("currency", self.currency)
            .date("policy_start_date", self.policy_start_day)
            .fixed("policy_premium", self.premium, 2)
            .fixed("coverage_limit", self.limit, 2)
            .fixed("deductible", self.deductible, 2)
            .date("incident_date", report_day - self.report_delay_days)
            .date("report_date", report_day)
            .int("prior_claims", self.prior_claims)
            .fixed("latitude", self.lat, 5)
            .fixed("longitude", self.lon, 5)
            .str("city", self.city.name)
            .str("country", self.city.country)
            .str("weather", self.weather)
            .id("provider_id", "prov_", self.provider_id)
            .str("provider_type", t.provider)
            .id("adjuster_id", "adj_", self.adjuster_id)
            .bool("police_report", self.police_report)
            .int("witnesses", self.witnesses)
            .str("channel", self.channel)
            .bool("injury_involved", self.injury_involved);
        match self.vehicle_age {
            Some(age) => o.int("vehicle_age_years", age),
            None => o.null("vehicle_age_years"),
        };
    }
}

/// Draws normal claims and fraud episodes.
pub struct ClaimModel {
    seed: u64,
    policies: u64,
    users: u64,
    today: i64,
    next_claim: u64,
    next_new_policy: u64,
}

/// Fraud patterns in insurance claims.
pub const PATTERNS: &[&str] = &[
    "inflated_claim",
    "early_claim",
    "repeated_claims",
    "claim_cluster",
];

impl ClaimModel {
    /// A model over `counts.policies` policies, dated relative to `start_ms`.
    pub fn new(seed: u64, counts: &EntityCounts, start_ms: i64) -> Self {
        Self {
            seed,
            policies: counts.policies.max(1),
            users: counts.users.max(1),
            today: start_ms.div_euclid(DAY_MS),
            next_claim: 0,
            next_new_policy: 0,
        }
    }

    fn provider(rng: &mut Rng, city: &'static City, kind: usize) -> u64 {
        let city_idx = CITIES
            .iter()
            .position(|c| std::ptr::eq(c, city))
            .unwrap_or_default() as u64;
        (city_idx * 10 + kind as u64) * 100 + rng.below(30)
    }

    fn claim(&mut self, rng: &mut Rng, p: &Policy) -> Claim {
        let t = &TYPES[p.kind];
        self.next_claim += 1;
        let delay = rng.exp(4.0).min(60.0) as i64;
        let incident = rng.pick(t.incidents);
        let auto = t.name == "auto";
        Claim {
            claim_id: self.next_claim,
            policy_id: p.id,
            user_id: p.user_id,
            kind: p.kind,
            amount: rng.lognormal(t.median, 0.7).clamp(100.0, p.limit * 0.9),
            currency: p.home.currency,
            policy_start_day: p.start_day,
            premium: p.premium,
            limit: p.limit,
            deductible: p.deductible,
            report_delay_days: delay,
            incident_type: incident,
            prior_claims: rng.weighted(&[0.7, 0.2, 0.08, 0.02]) as i64,
            lat: p.lat + rng.range_f64(-0.05, 0.05),
            lon: p.lon + rng.range_f64(-0.05, 0.05),
            city: p.home,
            weather: rng.pick(WEATHER),
            provider_id: Self::provider(rng, p.home, p.kind),
            adjuster_id: rng.below(200),
            police_report: auto && matches!(incident, "collision" | "theft") && rng.chance(0.85)
                || incident == "burglary" && rng.chance(0.9),
            witnesses: if auto { rng.between(0, 3) } else { 0 },
            channel: rng.pick(CHANNELS),
            injury_involved: matches!(incident, "collision" | "injury") && rng.chance(0.3),
            vehicle_age: auto.then_some(p.vehicle_age),
        }
    }

    fn policy(&self, rng: &mut Rng) -> Policy {
        Policy::new(self.seed, rng.skewed(self.policies), self.users, self.today)
    }

    /// A normal claim on a policy drawn from the book.
    pub fn normal(&mut self, rng: &mut Rng) -> Claim {
        let p = self.policy(rng);
        self.claim(rng, &p)
    }

    /// A fraud episode of `pattern`, with offsets from now in milliseconds.
    pub fn episode(&mut self, rng: &mut Rng, pattern: &'static str) -> Vec<Planted<Claim>> {
        let mut out = Vec::new();
        match pattern {
            "inflated_claim" => {
                let p = self.policy(rng);
                let mut c = self.claim(rng, &p);
                c.amount = (TYPES[p.kind].median * rng.range_f64(3.0, 8.0)).min(p.limit * 0.98);
                c.police_report = false;
                c.witnesses = 0;
                out.push(Planted::fraud(0, c));
            }
            "early_claim" => {
                // A new policy, claimed on within weeks of inception.
                self.next_new_policy += 1;
                let mut p = Policy::new(
                    self.seed,
                    self.policies + self.next_new_policy,
                    self.users,
                    self.today,
                );
                p.id = self.policies + self.next_new_policy;
                let mut c = self.claim(rng, &p);
                c.policy_start_day = self.today - c.report_delay_days - rng.between(1, 30);
                c.amount = (c.amount * rng.range_f64(1.5, 4.0)).min(p.limit * 0.95);
                out.push(Planted::fraud(0, c));
            }
            "repeated_claims" => {
                let p = self.policy(rng);
                let base = rng.between(2, 4);
                let mut t_ms = 0.0;
                for k in 0..rng.between(3, 5) {
                    let mut c = self.claim(rng, &p);
                    c.prior_claims = base + k;
                    out.push(Planted::fraud(t_ms as i64, c));
                    t_ms += rng.exp(15.0 * 60_000.0);
                }
            }
            _ => {
                // A ring: several policies in one city, one provider, one incident date.
                let lead = self.policy(rng);
                let provider = Self::provider(rng, lead.home, lead.kind);
                let delay = rng.between(1, 10);
                let amount = TYPES[lead.kind].median * rng.range_f64(1.5, 3.0);
                let mut t_ms = 0.0;
                for _ in 0..rng.between(4, 8) {
                    let mut p = self.policy(rng);
                    p.kind = lead.kind;
                    p.home = lead.home;
                    p.lat = lead.lat;
                    p.lon = lead.lon;
                    let mut c = self.claim(rng, &p);
                    c.provider_id = provider;
                    c.report_delay_days = delay;
                    c.incident_type = TYPES[lead.kind].incidents[0];
                    c.amount = (amount * rng.range_f64(0.95, 1.05)).min(p.limit * 0.9);
                    out.push(Planted::fraud(t_ms as i64, c));
                    t_ms += rng.exp(10.0 * 60_000.0);
                }
            }
        }
        out
    }
}
