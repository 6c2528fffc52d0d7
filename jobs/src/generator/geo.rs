//! Cities the event models place people, merchants, policies and devices in, and distances
//! between points on the Earth.

/// A city with its country, currency and centre.
#[derive(Debug, Clone, Copy)]
pub struct City {
    /// City name.
    pub name: &'static str,
    /// ISO 3166-1 alpha-2 country code.
    pub country: &'static str,
    /// ISO 4217 currency code used there.
    pub currency: &'static str,
    /// Latitude of the centre, degrees.
    pub lat: f64,
    /// Longitude of the centre, degrees.
    pub lon: f64,
    /// First octet of the IPv4 addresses we hand out there, so an IP roughly says where it is.
    pub ip_block: u8,
}

const fn city(
    name: &'static str,
    country: &'static str,
    currency: &'static str,
    lat: f64,
    lon: f64,
    ip_block: u8,
) -> City {
    City {
        name,
        country,
        currency,
        lat,
        lon,
        ip_block,
    }
}

/// The cities, weighted towards where the seeds' customers live (North America and Europe first).
pub const CITIES: &[City] = &[
    city("New York", "US", "USD", 40.7128, -74.0060, 23),
    city("Los Angeles", "US", "USD", 34.0522, -118.2437, 24),
    city("Chicago", "US", "USD", 41.8781, -87.6298, 45),
    city("Houston", "US", "USD", 29.7604, -95.3698, 50),
    city("Phoenix", "US", "USD", 33.4484, -112.0740, 63),
    city("Seattle", "US", "USD", 47.6062, -122.3321, 64),
    city("Miami", "US", "USD", 25.7617, -80.1918, 65),
    city("Toronto", "CA", "CAD", 43.6532, -79.3832, 99),
    city("Vancouver", "CA", "CAD", 49.2827, -123.1207, 142),
    city("London", "GB", "GBP", 51.5074, -0.1278, 81),
    city("Manchester", "GB", "GBP", 53.4808, -2.2426, 82),
    city("Paris", "FR", "EUR", 48.8566, 2.3522, 90),
    city("Lyon", "FR", "EUR", 45.7640, 4.8357, 92),
    city("Berlin", "DE", "EUR", 52.5200, 13.4050, 85),
    city("Munich", "DE", "EUR", 48.1351, 11.5820, 87),
    city("Madrid", "ES", "EUR", 40.4168, -3.7038, 88),
    city("Rome", "IT", "EUR", 41.9028, 12.4964, 93),
    city("Amsterdam", "NL", "EUR", 52.3676, 4.9041, 94),
    city("Stockholm", "SE", "SEK", 59.3293, 18.0686, 95),
    city("Warsaw", "PL", "PLN", 52.2297, 21.0122, 83),
    city("Zurich", "CH", "CHF", 47.3769, 8.5417, 84),
    city("Dublin", "IE", "EUR", 53.3498, -6.2603, 86),
    city("Mexico City", "MX", "MXN", 19.4326, -99.1332, 187),
    city("Sao Paulo", "BR", "BRL", -23.5505, -46.6333, 177),
    city("Buenos Aires", "AR", "ARS", -34.6037, -58.3816, 181),
    city("Lagos", "NG", "NGN", 6.5244, 3.3792, 105),
    city("Johannesburg", "ZA", "ZAR", -26.2041, 28.0473, 102),
    city("Cairo", "EG", "EGP", 30.0444, 31.2357, 156),
    city("Dubai", "AE", "AED", 25.2048, 55.2708, 94),
    city("Mumbai", "IN", "INR", 19.0760, 72.8777, 103),
    city("Singapore", "SG", "SGD", 1.3521, 103.8198, 111),
    city("Hong Kong", "HK", "HKD", 22.3193, 114.1694, 112),
    city("Tokyo", "JP", "JPY", 35.6762, 139.6503, 126),
    city("Seoul", "KR", "KRW", 37.5665, 126.9780, 121),
    city("Sydney", "AU", "AUD", -33.8688, 151.2093, 101),
    city("Moscow", "RU", "RUB", 55.7558, 37.6173, 95),
];

/// Relative weight of each city as a home: the first 22 (North America and Europe) hold most of
/// the population.
pub fn home_weight(index: usize) -> f64 {
    if index < 22 { 4.0 } else { 1.0 }
}
