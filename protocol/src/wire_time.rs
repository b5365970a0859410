//! The envelope's `timestamp` without chrono's general parser and formatter, for its common
//! shape: `2024-01-15T12:00:03Z`, with 3, 6 or 9 digits of fraction when there is one (what
//! chrono's `Serialize` writes for a `DateTime<Utc>` from year 0 to 9999).
//!
//! Both give way to chrono for anything else, so the results are chrono's: [`write`] declines a
//! time outside that range (a leap second, a year past 9999) and [`Timestamp`] hands every
//! string it does not recognise to chrono's RFC 3339 parser. Chrono's parse and format were
//! about a fifth of a relayed telemetry frame's instructions (issue 14 session 7).

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike, Utc};
use serde::{Deserialize, Deserializer};

/// Appends `ts` as a JSON string, byte for byte as serde_json writes chrono's `Serialize` for
/// it; `false` (and nothing written) when `ts` is outside the shape this writes.
pub(crate) fn write(out: &mut Vec<u8>, ts: &DateTime<Utc>) -> bool {
    let t = ts.naive_utc();
    let (year, nano) = (t.year(), t.nanosecond());
    let Ok(year) = u32::try_from(year) else {
        return false;
    };
    if year > 9999 || nano >= 1_000_000_000 {
        return false;
    }
    out.push(b'"');
    digits(out, year, 4);
    out.push(b'-');
    digits(out, t.month(), 2);
    out.push(b'-');
    digits(out, t.day(), 2);
    out.push(b'T');
    digits(out, t.hour(), 2);
    out.push(b':');
    digits(out, t.minute(), 2);
    out.push(b':');
    digits(out, t.second(), 2);
    // chrono's `SecondsFormat::AutoSi`: as few of 0, 3, 6 or 9 digits as say it exactly
    if nano != 0 {
        out.push(b'.');
        if nano % 1_000_000 == 0 {
            digits(out, nano / 1_000_000, 3);
        } else if nano % 1_000 == 0 {
            digits(out, nano / 1_000, 6);
        } else {
            digits(out, nano, 9);
        }
    }
    out.extend_from_slice(b"Z\"");
    true
}

/// `value`'s last `width` decimal digits, zero-padded.
fn digits(out: &mut Vec<u8>, value: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = (value / 10u32.pow(place)) % 10;
        out.push(b'0' + digit as u8);
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` as a time, if `s` is exactly that and a valid time (no leap
/// second); `None` for everything else, which chrono then reads.
pub(crate) fn parse(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    let number = |from: usize, to: usize| -> Option<u32> {
        b.get(from..to)?.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':')) {
        return None;
    }
    let year = i32::try_from(number(0, 4)?).ok()?;
    let (month, day) = (number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    let mut rest = b.get(19..)?;
    let mut nano = 0;
    if let [b'.', fraction @ ..] = rest {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return None;
        }
        nano = number(20, 20 + n)? * 10u32.pow(9 - n as u32);
        rest = fraction.get(n..)?;
    }
    if rest != b"Z" || second >= 60 {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(year, month, day)?;
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nano)?;
    Some(date.and_time(time).and_utc())
}

/// A `DateTime<Utc>` deserialised as chrono does it (RFC 3339, any offset, converted to UTC),
/// with the common shape read by [`parse`] first.
pub(crate) struct Timestamp(pub(crate) DateTime<Utc>);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Timestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                // chrono's words
                f.write_str("an RFC 3339 formatted date and time string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                match parse(v) {
                    Some(t) => Ok(Timestamp(t)),
                    None => v
                        .parse::<DateTime<chrono::FixedOffset>>()
                        .map(|t| Timestamp(t.with_timezone(&Utc)))
                        .map_err(E::custom),
                }
            }
        }
        d.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn chrono_text(t: &DateTime<Utc>) -> String {
        serde_json::to_string(t).unwrap()
    }

    fn ours(t: &DateTime<Utc>) -> Option<String> {
        let mut out = Vec::new();
        write(&mut out, t).then(|| String::from_utf8(out).unwrap())
    }

    fn chrono_parse(s: &str) -> Option<DateTime<Utc>> {
        serde_json::from_value::<DateTime<Utc>>(serde_json::Value::from(s)).ok()
    }

    fn time() -> impl Strategy<Value = DateTime<Utc>> {
        // years 0..=9999 and a little past; nanoseconds with 0, 3, 6 and 9 significant digits
        (
            -62_167_219_200i64..253_402_300_800 + 86_400 * 400,
            prop_oneof![
                Just(0u32),
                (0u32..1000).prop_map(|ms| ms * 1_000_000),
                (0u32..1_000_000).prop_map(|us| us * 1000),
                0u32..1_000_000_000,
                // a leap second
                1_000_000_000u32..2_000_000_000,
            ],
        )
            .prop_filter_map("a time", |(s, ns)| Utc.timestamp_opt(s, ns).single())
    }

    #[test]
    fn edges_written_as_chrono_writes_them() {
        for text in [
            "2024-01-15T12:00:03Z",
            "2024-01-15T12:00:03.100Z",
            "2024-01-15T12:00:03.000100Z",
            "2024-01-15T12:00:03.000000001Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
        ] {
            let t = chrono_parse(text).unwrap();
            assert_eq!(ours(&t).as_deref(), Some(format!("\"{text}\"").as_str()));
            assert_eq!(parse(text), Some(t), "{text}");
        }
        let leap = chrono_parse("2016-12-31T23:59:60.5Z").unwrap();
        assert_eq!(ours(&leap), None);
    }

    #[test]
    fn only_what_chrono_reads_the_same() {
        for text in [
            "2024-01-15t12:00:03Z",
            "2024-01-15 12:00:03Z",
            "2024-01-15T12:00:03+03:00",
            "2024-01-15T12:00:03.Z",
            "2024-01-15T12:00:03.1234567891Z",
            "2024-01-15T12:00:60Z",
            "2024-01-15T24:00:00Z",
            "2023-02-29T12:00:00Z",
            "2024-13-01T12:00:00Z",
            "2024-01-15T12:00:03Z ",
            "2024-01-15T12:00:03",
            "+2024-01-15T12:00:03Z",
            "2024-1-15T12:00:03Z",
            "",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
        assert_eq!(
            parse("2024-02-29T12:00:00.5Z"),
            chrono_parse("2024-02-29T12:00:00.5Z")
        );
    }

    proptest! {
        #[test]
        fn writes_what_chrono_writes(t in time()) {
            if let Some(text) = ours(&t) {
                prop_assert_eq!(text, chrono_text(&t));
            } else {
                let year = t.year();
                prop_assert!(!(0..=9999).contains(&year) || t.nanosecond() >= 1_000_000_000);
            }
        }

        #[test]
        fn reads_what_chrono_reads(t in time(), digits in 1usize..=9, cut in any::<bool>()) {
            // chrono's own text, and the same with a fraction of any length
            let text = chrono_text(&t);
            let text = text.trim_matches('"');
            let mut variants = vec![text.to_owned()];
            if let Some(base) = text.get(..19) {
                let frac = format!("{:09}", t.nanosecond() % 1_000_000_000);
                let n = if cut { digits } else { 9 };
                variants.push(format!("{base}.{}Z", &frac[..n]));
            }
            for text in variants {
                if let Some(ours) = parse(&text) {
                    prop_assert_eq!(Some(ours), chrono_parse(&text), "{}", text);
                }
            }
        }
    }
}
