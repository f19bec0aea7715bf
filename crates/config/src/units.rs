//! Parsers for the two unit-bearing string formats Dapr resources use: Go durations (`24h`, `1h30m`, `500ms`, as
//! Go's `time.ParseDuration` reads them) and Kubernetes quantities for byte sizes (`4Mi`, `512k`).
//!
//! Owns only the syntax. Negative durations are refused because no Dapr setting that ward reads means anything
//! negative. Errors are short phrases; the caller adds file, resource and field.

use std::time::Duration;

/// Parse a Go duration string: `[0-9]*(\.[0-9]*)?unit` repeated, units `ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`;
/// `0` alone is allowed without a unit. Unlike Go, a leading `-` is refused and `+` is accepted.
pub fn parse_go_duration(input: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid duration {:?} (expected e.g. \"15m\", \"1h30m\", \"500ms\")", crate::yaml::truncate(input, 40))
    };
    let mut s = input.strip_prefix('+').unwrap_or(input);
    if s.starts_with('-') {
        return Err(format!("duration {:?} must not be negative", crate::yaml::truncate(input, 40)));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    // Go's limit is an i64 of nanoseconds (~292 years); anything larger is a typo.
    const MAX_NANOS: u128 = i64::MAX as u128;
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, rest) = s.split_at(int_len);
        let (frac_part, rest) = match rest.strip_prefix('.') {
            Some(after) => {
                let n = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(n)
            }
            None => ("", rest),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let unit_len =
            rest.char_indices().find(|(_, c)| c.is_ascii_digit() || *c == '.').map_or(rest.len(), |(i, _)| i);
        let (unit, rest) = rest.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => return Err(bad()),
        };
        let int_value: u128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| bad())? };
        let mut nanos = int_value.checked_mul(unit_nanos).ok_or_else(bad)?;
        // Fraction digits beyond what a nanosecond can resolve are dropped, as Go does.
        let mut scale: u128 = 1;
        let mut frac: u128 = 0;
        for d in frac_part.bytes().take(18) {
            frac = frac * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        nanos += frac * unit_nanos / scale;
        total = total.checked_add(nanos).ok_or_else(bad)?;
        if total > MAX_NANOS {
            return Err(format!("duration {:?} is too large", crate::yaml::truncate(input, 40)));
        }
        s = rest;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad())?;
    let sub = u32::try_from(total % 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, sub))
}

/// Parse a Kubernetes-style quantity of bytes: a decimal number and an optional suffix, binary (`Ki`, `Mi`, `Gi`,
/// `Ti`, `Pi`, `Ei`) or decimal (`k`, `M`, `G`, `T`, `P`, `E`). A fractional result is rounded up, as Kubernetes does.
pub fn parse_byte_quantity(input: &str) -> Result<u64, String> {
    let bad = || {
        format!("invalid size {:?} (expected e.g. \"4Mi\", \"512Ki\", \"1048576\")", crate::yaml::truncate(input, 40))
    };
    let s = input.trim();
    let num_len = s.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
    let (number, suffix) = s.split_at(num_len);
    let multiplier: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        _ => return Err(bad()),
    };
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty()
        || frac_part.contains('.')
        || frac_part.len() > 9
        || int_part.len() > 20
    {
        return Err(bad());
    }
    let int_value: u128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| bad())? };
    let frac_value: u128 = if frac_part.is_empty() { 0 } else { frac_part.parse().map_err(|_| bad())? };
    let scale = 10u128.pow(u32::try_from(frac_part.len()).map_err(|_| bad())?);
    let scaled = (int_value * scale + frac_value).checked_mul(multiplier).ok_or_else(bad)?;
    let bytes = scaled.div_ceil(scale);
    u64::try_from(bytes).map_err(|_| format!("size {:?} is too large", crate::yaml::truncate(input, 40)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ok = [
            ("0", Duration::ZERO),
            ("24h", Duration::from_secs(86_400)),
            ("15m", Duration::from_secs(900)),
            ("1h30m", Duration::from_secs(5_400)),
            ("500ms", Duration::from_millis(500)),
            ("1.5s", Duration::from_millis(1_500)),
            (".5s", Duration::from_millis(500)),
            ("2h45m10s", Duration::from_secs(2 * 3600 + 45 * 60 + 10)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("+1s", Duration::from_secs(1)),
        ];
        for (input, expected) in ok {
            assert_eq!(parse_go_duration(input), Ok(expected), "{input}");
        }
        for bad in ["", "1", "h", "1d", "-1s", "1 h", "1.s.", "1hh", "s1", "99999999999h", "1.2.3s", "."] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn byte_quantities() {
        let ok = [
            ("4Mi", 4 << 20),
            ("512Ki", 512 << 10),
            ("1048576", 1_048_576),
            ("1k", 1_000),
            ("1.5Ki", 1_536),
            ("0.5", 1),
            ("2G", 2_000_000_000),
        ];
        for (input, expected) in ok {
            assert_eq!(parse_byte_quantity(input), Ok(expected), "{input}");
        }
        for bad in ["", "4MB", "4mi", "Mi", "-1", "1.2.3", "99999999999Ei", "4 Mi x", "."] {
            assert!(parse_byte_quantity(bad).is_err(), "{bad:?} should fail");
        }
    }
}
