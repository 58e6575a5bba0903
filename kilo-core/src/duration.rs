//! Go-style durations, as upstream's flags take them (`--resync-period=30s`, `1m30s`, `500ms`,
//! `2h`): one parser for `kg` and `kgctl`.

use std::time::Duration;

/// Why a duration does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The text is empty.
    #[error("the duration is empty")]
    Empty,
    /// A number without a unit, or a unit without a number.
    #[error("each number needs a unit and each unit a number")]
    Malformed,
    /// A unit other than `ms`, `s`, `m` or `h`.
    #[error("the unit is not one of ms, s, m, h")]
    UnknownUnit,
    /// A period of zero (see [`parse_period`]).
    #[error("the period is zero")]
    Zero,
}

/// Parses a sequence of `<number><unit>` (units `ms`, `s`, `m`, `h`), as Go's
/// `time.ParseDuration` for whole numbers: `30s`, `1m30s`, `250ms`, `0s`. A bare number is an
/// error. Overflow saturates.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or(DurationError::Malformed)?;
        let value: u64 = rest[..digits].parse().map_err(|_| DurationError::Malformed)?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let part = match &rest[..unit] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            _ => return Err(DurationError::UnknownUnit),
        };
        total = total.saturating_add(part);
        rest = &rest[unit..];
    }
    Ok(total)
}

/// A period (a resync interval): [`parse`], or a bare number of seconds; never zero.
pub fn parse_period(s: &str) -> Result<Duration, DurationError> {
    let period = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => parse(s)?,
    };
    if period.is_zero() { Err(DurationError::Zero) } else { Ok(period) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("30"), Err(DurationError::Malformed));
        assert_eq!(parse("s"), Err(DurationError::Malformed));
        assert_eq!(parse("10x"), Err(DurationError::UnknownUnit));
        assert_eq!(parse("soon"), Err(DurationError::Malformed));
        assert_eq!(parse(""), Err(DurationError::Empty));
    }

    #[test]
    fn periods_also_take_bare_seconds_and_are_never_zero() {
        assert_eq!(parse_period("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_period("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_period("0s"), Err(DurationError::Zero));
        assert_eq!(parse_period("0"), Err(DurationError::Zero));
        assert_eq!(parse_period(""), Err(DurationError::Empty));
    }

    #[test]
    fn huge_values_saturate() {
        assert_eq!(parse("18446744073709551615h"), Ok(Duration::from_secs(u64::MAX)));
        assert_eq!(parse("99999999999999999999s"), Err(DurationError::Malformed));
    }
}
