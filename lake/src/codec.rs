//! The compression of the Parquet files a table's appends write, named as Spark names it (the
//! Parquet writer's `compression` option, `spark.sql.parquet.compression.codec`).

use std::fmt;
use std::str::FromStr;

use deltalake::parquet::basic::{Compression, GzipLevel, ZstdLevel};

/// A Parquet compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Codec {
    /// Spark's default codec; here files a third larger than zstd's and no faster to write
    /// (BENCHMARKS.md, "Parquet codecs").
    Snappy,
    /// Zstandard at level 1, the default: on the feature job's output as fast to write as snappy
    /// (the smaller files cost less to copy) and a quarter smaller.
    #[default]
    Zstd,
    /// LZ4 as Parquet frames it (not Hadoop's `lz4`).
    Lz4Raw,
    /// Gzip at level 6: the smallest files, the slowest by far.
    Gzip,
    /// No compression (Spark's `none` or `uncompressed`).
    Uncompressed,
}

impl Codec {
    /// Every codec, in the order messages list them.
    pub const ALL: [Codec; 5] = [
        Self::Uncompressed,
        Self::Snappy,
        Self::Zstd,
        Self::Lz4Raw,
        Self::Gzip,
    ];

    /// Spark's name of the codec (`none` is taken too, for `uncompressed`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Snappy => "snappy",
            Self::Zstd => "zstd",
            Self::Lz4Raw => "lz4_raw",
            Self::Gzip => "gzip",
            Self::Uncompressed => "uncompressed",
        }
    }

    /// The Parquet writer's setting, at each codec's default level (zstd 1, gzip 6).
    pub fn compression(self) -> Compression {
        match self {
            Self::Snappy => Compression::SNAPPY,
            Self::Zstd => Compression::ZSTD(ZstdLevel::default()),
            Self::Lz4Raw => Compression::LZ4_RAW,
            Self::Gzip => Compression::GZIP(GzipLevel::default()),
            Self::Uncompressed => Compression::UNCOMPRESSED,
        }
    }
}

impl FromStr for Codec {
    type Err = String;

    /// Spark's names, any case. Spark's `lz4` is Hadoop's framing of LZ4, which the Parquet
    /// format has deprecated; `lz4_raw` is the one to use.
    fn from_str(s: &str) -> Result<Self, String> {
        let wanted = s.trim().to_ascii_lowercase();
        match wanted.as_str() {
            "none" => return Ok(Self::Uncompressed),
            "lz4" => {
                return Err(
                    "`lz4` (Hadoop's LZ4 framing) is deprecated in Parquet: use lz4_raw".into(),
                );
            }
            _ => {}
        }
        Self::ALL
            .into_iter()
            .find(|codec| codec.name() == wanted)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|c| c.name()).collect();
                format!(
                    "`{s}` is not a Parquet codec (one of: none, {})",
                    names.join(", ")
                )
            })
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn spark_names_parse_in_any_case_and_others_are_refused_by_name() {
        assert_eq!("SNAPPY".parse::<Codec>(), Ok(Codec::Snappy));
        assert_eq!(" zstd".parse::<Codec>(), Ok(Codec::Zstd));
        assert_eq!("none".parse::<Codec>(), Ok(Codec::Uncompressed));
        assert_eq!("uncompressed".parse::<Codec>(), Ok(Codec::Uncompressed));
        assert_eq!("lz4_raw".parse::<Codec>(), Ok(Codec::Lz4Raw));
        assert_eq!("gzip".parse::<Codec>(), Ok(Codec::Gzip));
        assert!("lz4".parse::<Codec>().unwrap_err().contains("lz4_raw"));
        let unknown = "lzo".parse::<Codec>().unwrap_err();
        assert!(unknown.contains("`lzo`"), "{unknown}");
        assert!(unknown.contains("lz4_raw, gzip"), "{unknown}");
        for codec in Codec::ALL {
            assert_eq!(codec.to_string().parse::<Codec>(), Ok(codec));
        }
    }
}
