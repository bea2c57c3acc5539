//! Durations in settings, written for people: `"250ms"`, `"30s"`, `"10m"`, `"1h"`, `"2d"`, or
//! parts added up such as `"1m30s"`. A bare number is refused: its unit would be a guess.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// The units a duration may be written in, for error messages.
pub(crate) const UNITS: &str = "ms, s, m, h or d";

/// Parses `"1h"`, `"250ms"` or `"1m30s"`; the error says what is wrong and which units exist.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let invalid = |why: &str| {
        format!(
            "invalid duration {text:?}: {why} (durations are written as a number and a unit: {UNITS}, e.g. \"30s\", \"250ms\" or \"1m30s\")"
        )
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid("it is empty"));
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid("expected a number"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| invalid("the number is too large"))?;
        rest = rest[digits..].trim_start();
        let letters = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let part = match &rest[..letters] {
            "ms" => Some(Duration::from_millis(number)),
            "s" => Some(Duration::from_secs(number)),
            "m" => number.checked_mul(60).map(Duration::from_secs),
            "h" => number.checked_mul(3600).map(Duration::from_secs),
            "d" => number.checked_mul(86_400).map(Duration::from_secs),
            "" => {
                return Err(match rest.chars().next() {
                    None => invalid("a number needs a unit"),
                    Some(c) => invalid(&format!("unexpected {c:?}")),
                });
            }
            unit => return Err(invalid(&format!("unknown unit {unit:?}"))),
        };
        total = part
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| invalid("it is too long"))?;
        rest = rest[letters..].trim_start();
    }
    Ok(total)
}

/// Writes a duration in the largest unit that is exact: `"1h"`, `"30s"`, `"250ms"`.
pub(crate) fn format(duration: Duration) -> String {
    let ms = duration.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// `#[serde(with = "duration")]`: any duration, zero included.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// Writes the duration as [`format`] does, so that what is written reads back the same.
pub(crate) fn serialize<S: Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*duration))
}

/// `#[serde(with = "duration::positive")]`: a duration longer than zero (an interval or a
/// timeout of zero would spin or never succeed).
pub(crate) mod positive {
    use std::time::Duration;

    use serde::Deserializer;

    pub(crate) use super::serialize;

    /// As [`super::deserialize`], refusing zero.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let duration = super::deserialize(deserializer)?;
        if duration.is_zero() {
            return Err(serde::de::Error::custom(
                "must be longer than 0, e.g. \"250ms\"",
            ));
        }
        Ok(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_units_and_sums() {
        for (text, expected) in [
            ("250ms", Duration::from_millis(250)),
            ("30s", Duration::from_secs(30)),
            ("10m", Duration::from_secs(600)),
            ("1h", Duration::from_secs(3600)),
            ("2d", Duration::from_secs(172_800)),
            ("1m30s", Duration::from_secs(90)),
            (" 1h 30m ", Duration::from_secs(5400)),
            ("1 h", Duration::from_secs(3600)),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for (text, why) in [
            ("30", "a number needs a unit"),
            ("", "it is empty"),
            ("s", "expected a number"),
            ("3 weeks", "unknown unit \"weeks\""),
            ("1.5s", "unexpected '.'"),
            ("-1s", "expected a number"),
            ("99999999999999999999s", "too large"),
            ("999999999999999999d", "too long"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(why) && err.contains(UNITS), "{text}: {err}");
        }
    }

    #[test]
    fn writes_what_it_reads() {
        for ms in [0, 1, 250, 1000, 1500, 60_000, 90_000, 3_600_000, 86_400_000] {
            let duration = Duration::from_millis(ms);
            assert_eq!(parse(&format(duration)), Ok(duration), "{ms}");
        }
        assert_eq!(format(Duration::from_secs(3600)), "1h");
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format(Duration::ZERO), "0ms");
    }
}
