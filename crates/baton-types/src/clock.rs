//! Wall-clock time as epoch milliseconds, the unit every stored timestamp uses.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// RFC 3339 with milliseconds, in UTC: the form the HTTP API shows.
pub fn rfc3339(epoch_ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(epoch_ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

/// Epoch milliseconds of an RFC 3339 time (None: not one).
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_renders_milliseconds_in_utc() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
