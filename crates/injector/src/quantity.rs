//! Kubernetes resource quantities (`100m`, `0.5`, `128Mi`, `1G`, `1e3`) for the sidecar's CPU and memory
//! annotations: checked here so a bad value is refused naming its annotation, instead of failing later as an
//! API-server validation error about `spec.containers[n].resources`.
//!
//! Owns: the syntax of `resource.Quantity` (non-negative values only) and an approximate numeric value, enough to
//! compare a request with its limit. Does not own canonical formatting: the text is passed on as the user wrote
//! it, and the API server canonicalises it.

/// The value of a quantity in base units (cores, bytes), or `None` if `text` is not a non-negative quantity.
pub fn parse(text: &str) -> Option<f64> {
    let text = text.trim();
    if text.is_empty() || text.len() > 64 {
        return None;
    }
    let text = text.strip_prefix('+').unwrap_or(text);
    let number_len = text.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
    let (number, suffix) = text.split_at(number_len);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return None;
    }
    let base: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent => {
            let digits = exponent.strip_prefix(['e', 'E'])?;
            let digits_only = digits.strip_prefix(['+', '-']).unwrap_or(digits);
            if digits_only.is_empty() || !digits_only.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let power: i32 = digits.parse().ok()?;
            10f64.powi(power)
        }
    };
    let value = base * multiplier;
    value.is_finite().then_some(value)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn kubernetes_quantities() {
        assert_eq!(parse("100m"), Some(0.1));
        assert_eq!(parse("0.5"), Some(0.5));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("128Mi"), Some(128.0 * 1024.0 * 1024.0));
        assert_eq!(parse("1G"), Some(1e9));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse(".5"), Some(0.5));
        for bad in ["", "-1", "1.2.3", "12MB", "Mi", "1x", "1e", "1e+", "abc", "1 Gi"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
