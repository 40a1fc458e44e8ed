//! Human units in scenario files: durations (`50ms`), sizes (`64MiB`) and thresholds that
//! carry either. Values are normalised to nanoseconds and bytes so checks compare numbers
//! in one base unit whatever the author wrote.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The unit a metric is recorded in. Latencies are nanoseconds, memory is bytes, and
/// everything else is a plain count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Ns,
    Bytes,
    #[default]
    Count,
    /// A fraction (0.25 = a quarter), e.g. CPU received over CPU allowed.
    Ratio,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Ns => "ns",
            Unit::Bytes => "bytes",
            Unit::Count => "count",
            Unit::Ratio => "ratio",
        }
    }

    /// Formats a value of this unit for people (`1.25ms`, `12.0MiB`, `1000`).
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::Ns => format_ns(value),
            Unit::Bytes => format_bytes(value),
            Unit::Count => {
                if value.fract() == 0.0 && value.abs() < 1e15 {
                    format!("{value:.0}")
                } else {
                    format!("{value:.2}")
                }
            }
            Unit::Ratio => format!("{value:.3}"),
        }
    }
}

display_as_str!(Unit);

/// Parses `"50ms"`, `"2s"`, `"1m 30s"`. Bare numbers are rejected: a scenario that says
/// `settle = 5` is ambiguous and we would rather ask than guess.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "`{text}` has no unit; write it like `500ms`, `10s` or `2m`"
        ));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write it like `500ms`, `10s` or `2m`")
    })
}

/// Parses `"64MiB"`, `"1GiB"`, `"1.5KiB"`, `"4096"` (bytes). Units are case-insensitive:
/// `k`/`kB` are powers of 1000, `Ki`/`KiB` powers of 1024 (up to `E`/`EiB`). A size that
/// does not fit in 64 bits, a negative one or a fraction of a byte is refused: a silently
/// saturated `99999999999999999999EiB` once became `-m 17592186044415`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let hint = "write it like `4KiB`, `64MiB` or `1GiB`";
    if let Ok(bytes) = text.replace('_', "").parse::<u64>() {
        return Ok(bytes);
    }
    let (value, suffix) =
        split_number(text).map_err(|_| format!("`{text}` is not a size; {hint}"))?;
    let scale = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024f64.powi(2),
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024f64.powi(3),
        "t" | "tb" => 1e12,
        "ti" | "tib" => 1024f64.powi(4),
        "p" | "pb" => 1e15,
        "pi" | "pib" => 1024f64.powi(5),
        "e" | "eb" => 1e18,
        "ei" | "eib" => 1024f64.powi(6),
        other => {
            return Err(format!(
                "`{text}`: unknown size unit `{other}`; use B, KiB, MiB, GiB, TiB (or kB, MB, GB)"
            ))
        }
    };
    let bytes = value * scale;
    if !bytes.is_finite() || bytes >= 2f64.powi(64) {
        return Err(format!("`{text}` is too large: sizes end at 16EiB"));
    }
    if bytes < 0.0 {
        return Err(format!("`{text}` is negative; {hint}"));
    }
    if bytes.fract() != 0.0 {
        return Err(format!("`{text}` is not a whole number of bytes"));
    }
    // In range and whole, checked above.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(bytes as u64)
}

/// Splits `"50ms"` into the number and the unit suffix.
fn split_number(text: &str) -> Result<(f64, &str), String> {
    let text = text.trim();
    let end = text
        .char_indices()
        .find(|&(i, c)| {
            !(c.is_ascii_digit() || c == '.' || c == '_' || (i == 0 && (c == '-' || c == '+')))
        })
        .map_or(text.len(), |(i, _)| i);
    let (num, suffix) = text.split_at(end);
    let num: String = num.chars().filter(|&c| c != '_').collect();
    let value = num
        .parse::<f64>()
        .map_err(|_| format!("`{text}` does not start with a number"))?;
    Ok((value, suffix.trim()))
}

/// Converts a threshold such as `50ms`, `1.5MiB` or `100` into `unit`'s base (ns, bytes,
/// count). The suffix must fit the unit: a latency compared against `100` (no unit) is
/// almost always a mistake, so it is an error.
pub fn parse_threshold(text: &str, unit: Unit) -> Result<f64, String> {
    let (value, suffix) = split_number(text)?;
    let scale = match unit {
        Unit::Ns => match suffix {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "" => {
                return Err(format!(
                    "`{text}` needs a time unit (ns, us, ms, s): the metric is a latency"
                ))
            }
            other => {
                return Err(format!(
                    "unit `{other}` does not fit a latency; use ns, us, ms or s"
                ))
            }
        },
        Unit::Bytes => match suffix {
            "" | "B" => 1.0,
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            "kB" | "KB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            other => {
                return Err(format!(
                    "unit `{other}` does not fit a size; use B, KiB, MiB or GiB"
                ))
            }
        },
        Unit::Count => match suffix {
            "" => 1.0,
            other => {
                return Err(format!(
                    "unit `{other}` does not fit a count; write a plain number"
                ))
            }
        },
        Unit::Ratio => match suffix {
            "" => 1.0,
            "%" => 0.01,
            other => {
                return Err(format!(
                    "unit `{other}` does not fit a ratio; write 0.5 or 50%"
                ))
            }
        },
    };
    Ok(value * scale)
}

/// `1234567.0` → `"1.23ms"`.
pub fn format_ns(ns: f64) -> String {
    let abs = ns.abs();
    if abs >= 1e9 {
        format!("{:.2}s", ns / 1e9)
    } else if abs >= 1e6 {
        format!("{:.2}ms", ns / 1e6)
    } else if abs >= 1e3 {
        format!("{:.1}us", ns / 1e3)
    } else {
        format!("{ns:.0}ns")
    }
}

/// `1572864.0` → `"1.5MiB"`.
pub fn format_bytes(bytes: f64) -> String {
    const K: f64 = 1024.0;
    let abs = bytes.abs();
    if abs >= K * K * K {
        format!("{:.2}GiB", bytes / (K * K * K))
    } else if abs >= K * K {
        format!("{:.1}MiB", bytes / (K * K))
    } else if abs >= K {
        format!("{:.1}KiB", bytes / K)
    } else {
        format!("{bytes:.0}B")
    }
}

/// Serde helper: durations travel as integer milliseconds on the wire and in results,
/// which is what scripts reading `results.json` expect.
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Like [`duration_ms`] for optional durations.
pub mod opt_duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn sizes_accept_binary_and_decimal_units() {
        for (text, bytes) in [
            ("64MiB", 64 << 20),
            ("4096", 4096),
            ("4 KiB", 4096),
            ("1.5KiB", 1536),
            ("2kb", 2000),
            ("1GiB", 1 << 30),
            ("18446744073709551615", u64::MAX),
            ("1_000", 1000),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn sizes_that_cannot_be_represented_are_refused_not_saturated() {
        for (text, why) in [
            ("lots", "not a size"),
            ("99999999999999999999EiB", "too large"),
            ("16EiB", "too large"),
            ("-1MiB", "negative"),
            ("0.5B", "whole number"),
            ("3 parsecs", "unknown size unit"),
        ] {
            let e = parse_size(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn thresholds_convert_to_the_metric_base_unit() {
        assert_eq!(parse_threshold("50ms", Unit::Ns), Ok(50e6));
        assert_eq!(parse_threshold("1.5us", Unit::Ns), Ok(1500.0));
        assert_eq!(
            parse_threshold("2MiB", Unit::Bytes),
            Ok(2.0 * 1024.0 * 1024.0)
        );
        assert_eq!(parse_threshold("1_000", Unit::Count), Ok(1000.0));
        assert!(parse_threshold("50", Unit::Ns)
            .unwrap_err()
            .contains("needs a time unit"));
        assert!(parse_threshold("5ms", Unit::Count).is_err());
        assert_eq!(parse_threshold("50%", Unit::Ratio), Ok(0.5));
        assert_eq!(parse_threshold("0.8", Unit::Ratio), Ok(0.8));
        assert!(parse_threshold("ms", Unit::Ns).is_err());
    }

    #[test]
    fn formatting_picks_a_readable_scale() {
        assert_eq!(format_ns(1_234_567.0), "1.23ms");
        assert_eq!(format_ns(999.0), "999ns");
        assert_eq!(format_bytes(1_572_864.0), "1.5MiB");
        assert_eq!(Unit::Count.format(1000.0), "1000");
    }
}
