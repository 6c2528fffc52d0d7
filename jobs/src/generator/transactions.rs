//! Card transactions: stable customer profiles (home city, spending level, cards, devices, active
//! hours) and the fraud patterns planted among their purchases.

use super::geo::{CITIES, City, home_weight};
use super::json::JsonObject;
use super::rng::Rng;
use super::{EntityCounts, Planted};

const KIND_USER: u64 = 1;

/// Merchant category: ISO 18245 code, a readable name, and how it scales a customer's usual spend.
struct Mcc {
    code: &'static str,
    category: &'static str,
    amount_factor: f64,
}

const fn mcc(code: &'static str, category: &'static str, f: f64) -> Mcc {
    Mcc {
        code,
        category,
        amount_factor: f,
    }
}

const MCCS: &[Mcc] = &[
    mcc("5411", "grocery", 1.0),
    mcc("5812", "restaurants", 0.8),
    mcc("5814", "fast_food", 0.3),
    mcc("5541", "fuel", 1.0),
    mcc("5311", "department_stores", 1.6),
    mcc("5691", "clothing", 1.5),
    mcc("5912", "pharmacy", 0.6),
    mcc("4121", "taxi_rideshare", 0.5),
    mcc("5815", "digital_media", 0.3),
    mcc("5999", "misc_retail", 1.0),
    mcc("4511", "airlines", 8.0),
    mcc("7011", "hotels", 5.0),
    mcc("5732", "electronics", 4.0),
    mcc("5944", "jewelry", 6.0),
    mcc("4829", "money_transfer", 3.0),
    mcc("7995", "gambling", 2.0),
    mcc("5967", "direct_marketing", 0.8),
    mcc("6011", "atm_cash", 2.0),
];
const EVERYDAY_MCCS: usize = 10;
// Electronics, money transfer, gambling, direct marketing: where stolen cards are tested.
const HIGH_RISK_ECOM: [usize; 4] = [12, 14, 15, 16];

const BRANDS: &[&str] = &[
    "Northwind",
    "Bluebird",
    "Harbor",
    "Summit",
    "Maple",
    "Orbit",
    "Cedar",
    "Atlas",
    "Lumen",
    "Copper",
    "Pioneer",
    "Willow",
    "Keystone",
    "Nova",
    "Riverside",
    "Granite",
];
const EMAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "outlook.com",
    "yahoo.com",
    "icloud.com",
    "gmx.de",
];
const DISPOSABLE_DOMAINS: &[&str] = &["mailinator.com", "tempmail.io", "guerrillamail.com"];
const CARD_TYPES: &[&str] = &["debit", "credit", "credit", "prepaid"];

/// A customer's stable profile, derived from the seed and the user id alone.
struct Customer {
    id: u64,
    home: &'static City,
    lat: f64,
    lon: f64,
    spend_median: f64,
    cards: u64,
    devices: u64,
    card_type: &'static str,
    account_age_days: i64,
    email: &'static str,
    favourite_mccs: [usize; 4],
}

fn pick_home(rng: &mut Rng) -> usize {
    rng.weighted_by(CITIES, |i, _| home_weight(i))
}

impl Customer {
    fn new(seed: u64, id: u64) -> Self {
        let mut rng = Rng::for_entity(seed, KIND_USER, id);
        let home = &CITIES[pick_home(&mut rng)];
        let mut favourite_mccs = [0; 4];
        for m in &mut favourite_mccs {
            *m = rng.below(EVERYDAY_MCCS as u64) as usize;
        }
        Self {
            id,
            home,
            lat: home.lat + rng.range_f64(-0.08, 0.08),
            lon: home.lon + rng.range_f64(-0.08, 0.08),
            spend_median: rng.lognormal(35.0, 0.5),
            cards: 1 + rng.below(3),
            devices: 1 + rng.below(2),
            card_type: rng.pick(CARD_TYPES),
            account_age_days: rng.between(60, 5000),
            email: rng.pick(EMAIL_DOMAINS),
            favourite_mccs,
        }
    }

    fn card(&self, k: u64) -> u64 {
        self.id * 4 + k % self.cards
    }

    fn device(&self, k: u64) -> u64 {
        self.id * 4 + k % self.devices
    }
}

/// One transaction, fully decided, waiting to be written.
#[derive(Debug, Clone)]
pub struct Transaction {
    user_id: u64,
    synthetic: bool,
    card_id: u64,
    merchant_id: u64,
    brand: &'static str,
    mcc: usize,
    amount: f64,
    currency: &'static str,
    channel: &'static str,
    payment_method: &'static str,
    card_type: &'static str,
    device_id: u64,
    ip: [u8; 4],
    lat: f64,
    lon: f64,
    city: &'static City,
    card_country: &'static str,
    account_age_days: i64,
    email: &'static str,
}

impl Transaction {
    /// The user the transaction is keyed by.
    pub fn entity(&self) -> (&'static str, u64) {
        (if self.synthetic { "su_" } else { "u_" }, self.user_id)
    }

    /// Writes the event's JSON (after the common id, type and time fields).
    pub fn write(&self, o: &mut JsonObject<'_>) {
        let m = &MCCS[self.mcc];
        let (prefix, user) = self.entity();
        o.id("user_id", prefix, user)
            .id("card_id", "c_", self.card_id)
            .id("merchant_id", "m_", self.merchant_id)
            .str_parts("merchant_name", &[self.brand, " ", m.category])
            .str("mcc", m.code)
            .str("merchant_category", m.category)
            .fixed("amount", self.amount, 2)
            .str("currency", self.currency)
            .str("channel", self.channel)
            .str("payment_method", self.payment_method)
            .str("card_type", self.card_type)
            .id("device_id", "d_", self.device_id)
            .ipv4("ip_address", self.ip)
            .fixed("latitude", self.lat, 5)
            .fixed("longitude", self.lon, 5)
            .str("city", self.city.name)
            .str("country", self.city.country)
            .str("card_country", self.card_country)
            .int("account_age_days", self.account_age_days)
            .str("email_domain", self.email);
    }
}

/// Draws normal transactions and fraud episodes.
pub struct TransactionModel {
    seed: u64,
    users: u64,
    next_synthetic: u64,
}

/// Fraud patterns in card transactions.
pub const PATTERNS: &[&str] = &[
    "card_testing",
    "account_takeover",
    "impossible_travel",
    "velocity_burst",
    "synthetic_identity",
];

impl TransactionModel {
    /// A model over `counts.users` customers.
    pub fn new(seed: u64, counts: &EntityCounts) -> Self {
        Self {
            seed,
            users: counts.users.max(1),
            next_synthetic: 0,
        }
    }

    fn merchant(rng: &mut Rng, city: usize, mcc: usize) -> (u64, &'static str) {
        let k = rng.below(40);
        let id = (city as u64 * 100 + mcc as u64) * 100 + k;
        (id, BRANDS[(id % BRANDS.len() as u64) as usize])
    }

    fn ip_in(rng: &mut Rng, city: &City, device: u64) -> [u8; 4] {
        let h = device.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ rng.below(4);
        [
            city.ip_block,
            (h >> 8) as u8,
            (h >> 16) as u8,
            (h >> 24) as u8 | 1,
        ]
    }

    fn channel(rng: &mut Rng, mcc: usize) -> (&'static str, &'static str) {
        if MCCS[mcc].code == "6011" {
            return ("atm", "chip");
        }
        match rng.weighted(&[0.55, 0.3, 0.15]) {
            0 => (
                "pos",
                rng.pick(&["chip", "contactless", "contactless", "swipe"]),
            ),
            1 => ("ecommerce", "card_not_present"),
            _ => ("mobile", rng.pick(&["wallet", "card_not_present"])),
        }
    }

    fn city_index(city: &'static City) -> usize {
        CITIES
            .iter()
            .position(|c| std::ptr::eq(c, city))
            .unwrap_or_default()
    }

    /// A normal purchase by a customer drawn from the population.
    pub fn normal(&mut self, rng: &mut Rng) -> Transaction {
        let c = Customer::new(self.seed, rng.skewed(self.users));
        let travelling = rng.chance(0.03);
        let city_idx = if travelling {
            rng.below(CITIES.len() as u64) as usize
        } else {
            Self::city_index(c.home)
        };
        let mcc = if rng.chance(0.85) {
            rng.pick(&c.favourite_mccs)
        } else {
            rng.below(MCCS.len() as u64) as usize
        };
        self.purchase(rng, &c, city_idx, mcc, 1.0, travelling)
    }

    fn purchase(
        &self,
        rng: &mut Rng,
        c: &Customer,
        city_idx: usize,
        mcc: usize,
        amount_scale: f64,
        away: bool,
    ) -> Transaction {
        let city = &CITIES[city_idx];
        let (channel, payment_method) = Self::channel(rng, mcc);
        let (merchant_id, brand) = Self::merchant(rng, city_idx, mcc);
        let device_id = c.device(rng.below(4));
        let (lat, lon) = if away {
            (
                city.lat + rng.range_f64(-0.1, 0.1),
                city.lon + rng.range_f64(-0.1, 0.1),
            )
        } else {
            (
                c.lat + rng.range_f64(-0.05, 0.05),
                c.lon + rng.range_f64(-0.05, 0.05),
            )
        };
        let amount =
            (rng.lognormal(c.spend_median * MCCS[mcc].amount_factor, 0.6) * amount_scale).max(0.5);
        Transaction {
            user_id: c.id,
            synthetic: false,
            card_id: c.card(rng.below(4)),
            merchant_id,
            brand,
            mcc,
            amount,
            currency: city.currency,
            channel,
            payment_method,
            card_type: c.card_type,
            device_id,
            ip: Self::ip_in(rng, if channel == "pos" { city } else { c.home }, device_id),
            lat,
            lon,
            city,
            card_country: c.home.country,
            account_age_days: c.account_age_days,
            email: c.email,
        }
    }

    /// A fraud episode of `pattern`: the events with their offsets from now in milliseconds, and
    /// which of them are fraudulent (impossible travel starts with the customer's own purchase).
    pub fn episode(&mut self, rng: &mut Rng, pattern: &'static str) -> Vec<Planted<Transaction>> {
        let c = Customer::new(self.seed, rng.skewed(self.users));
        let home_idx = Self::city_index(c.home);
        let far_city = |rng: &mut Rng| loop {
            let i = rng.below(CITIES.len() as u64) as usize;
            let d = riskstream_udfs::haversine_km(c.lat, c.lon, CITIES[i].lat, CITIES[i].lon);
            if d > 3000.0 {
                return i;
            }
        };
        let mut out = Vec::new();
        match pattern {
            "card_testing" => {
                // Small probes of a stolen card at one online merchant, from a foreign device.
                let mcc = rng.pick(&HIGH_RISK_ECOM);
                let fraud_city = far_city(rng);
                let (merchant_id, brand) = Self::merchant(rng, fraud_city, mcc);
                let device_id = 1_000_000_000 + rng.below(1_000_000_000);
                let card = c.card(rng.below(4));
                let mut t_ms = 0.0;
                for _ in 0..rng.between(5, 15) {
                    let mut t = self.purchase(rng, &c, home_idx, mcc, 1.0, false);
                    t.card_id = card;
                    t.merchant_id = merchant_id;
                    t.brand = brand;
                    t.amount = rng.range_f64(0.5, 5.0);
                    t.channel = "ecommerce";
                    t.payment_method = "card_not_present";
                    t.device_id = device_id;
                    t.ip = Self::ip_in(rng, &CITIES[fraud_city], device_id);
                    out.push(Planted::fraud(t_ms as i64, t));
                    t_ms += rng.exp(20_000.0);
                }
            }
            "account_takeover" => {
                // New device, far-away location, several large purchases in quick succession.
                let city = far_city(rng);
                let device_id = 1_000_000_000 + rng.below(1_000_000_000);
                let mut t_ms = 0.0;
                for _ in 0..rng.between(2, 5) {
                    let mcc = rng.pick(&[12, 13, 14]);
                    let scale = rng.range_f64(5.0, 20.0);
                    let mut t = self.purchase(rng, &c, city, mcc, scale, true);
                    t.device_id = device_id;
                    t.channel = "ecommerce";
                    t.payment_method = "card_not_present";
                    t.ip = Self::ip_in(rng, &CITIES[city], device_id);
                    out.push(Planted::fraud(t_ms as i64, t));
                    t_ms += rng.exp(120_000.0);
                }
            }
            "impossible_travel" => {
                // A genuine purchase at home, then a card-present one thousands of km away within the
                // hour: only the second is fraud.
                let mcc = rng.pick(&c.favourite_mccs);
                out.push(Planted::genuine(
                    0,
                    self.purchase(rng, &c, home_idx, mcc, 1.0, false),
                ));
                let city = far_city(rng);
                let scale = rng.range_f64(2.0, 8.0);
                let mut t = self.purchase(rng, &c, city, 12, scale, true);
                t.channel = "pos";
                t.payment_method = "swipe";
                out.push(Planted::fraud(rng.between(5 * 60_000, 60 * 60_000), t));
            }
            "velocity_burst" => {
                let mut t_ms = 0.0;
                for _ in 0..rng.between(8, 25) {
                    let mcc = rng.below(MCCS.len() as u64) as usize;
                    let t = self.purchase(rng, &c, home_idx, mcc, 1.0, false);
                    out.push(Planted::fraud(t_ms as i64, t));
                    t_ms += rng.exp(10_000.0);
                }
            }
            _ => {
                // A synthetic identity: a brand-new account outside the population, disposable email,
                // escalating purchases.
                // Ids above the population, so the identity's cards and devices are its own.
                self.next_synthetic += 1;
                let mut fake = Customer::new(self.seed, self.users + self.next_synthetic);
                let fake_home = Self::city_index(fake.home);
                fake.account_age_days = rng.between(0, 20);
                fake.email = rng.pick(DISPOSABLE_DOMAINS);
                let mut t_ms = 0.0;
                let mut scale = 1.0;
                for _ in 0..rng.between(3, 8) {
                    let mcc = rng.pick(&[12, 13, 14, 4]);
                    let mut t = self.purchase(rng, &fake, fake_home, mcc, scale, false);
                    t.synthetic = true;
                    out.push(Planted::fraud(t_ms as i64, t));
                    t_ms += rng.exp(300_000.0);
                    scale *= rng.range_f64(1.3, 2.2);
                }
            }
        }
        out
    }
}
