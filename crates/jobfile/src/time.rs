//! TOML date-times to Unix seconds, without a calendar crate.

use toml::value::{Datetime, Offset};

/// Converts a TOML offset date-time to Unix seconds (UTC). Refuses local
/// date-times and bare dates or times: a reservation window must be an
/// unambiguous instant.
pub(crate) fn unix_seconds(dt: &Datetime) -> Result<i64, String> {
    let (Some(date), Some(time)) = (dt.date, dt.time) else {
        return Err(format!(
            "`{dt}` is not a full date and time; write e.g. 2030-01-31T08:00:00Z"
        ));
    };
    let Some(offset) = dt.offset else {
        return Err(format!(
            "`{dt}` has no time zone; add `Z` for UTC or an offset such as +01:00"
        ));
    };
    let offset_minutes: i64 = match offset {
        Offset::Z => 0,
        Offset::Custom { minutes } => i64::from(minutes),
    };
    let days = days_from_civil(
        i64::from(date.year),
        i64::from(date.month),
        i64::from(date.day),
    );
    let seconds = days * 86_400
        + i64::from(time.hour) * 3_600
        + i64::from(time.minute) * 60
        + i64::from(time.second);
    Ok(seconds - offset_minutes * 60)
}

/// Days since 1970-01-01 of a proleptic Gregorian date. Eras of 400 years
/// repeat exactly, so the count is computed within one era and shifted.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Treat January and February as months 10 and 11 of the previous year so
    // that the leap day falls at the end of the counting year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719_468 days separate 0000-03-01 from 1970-01-01.
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Datetime {
        s.parse().expect("test literal is a valid TOML date-time")
    }

    #[test]
    fn known_instants() {
        assert_eq!(unix_seconds(&parse("1970-01-01T00:00:00Z")), Ok(0));
        assert_eq!(
            unix_seconds(&parse("2000-03-01T00:00:00Z")),
            Ok(951_868_800)
        );
        assert_eq!(
            unix_seconds(&parse("2024-02-29T12:34:56Z")),
            Ok(1_709_210_096)
        );
        assert_eq!(
            unix_seconds(&parse("2030-01-01T01:00:00+01:00")),
            Ok(1_893_456_000)
        );
        assert_eq!(unix_seconds(&parse("1969-12-31T23:59:59Z")), Ok(-1));
    }

    #[test]
    fn local_and_partial_times_are_refused() {
        assert!(unix_seconds(&parse("2030-01-01T00:00:00")).is_err());
        assert!(unix_seconds(&parse("2030-01-01")).is_err());
        assert!(unix_seconds(&parse("08:00:00")).is_err());
    }
}
