//! Text output helpers: relative times, fixed-width tables, bars; and the check of an id flag.

use std::time::{Duration, SystemTime};

use serde_json::Value;

/// A JSON value as table text: strings bare, null as `-`.
pub fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// "in 25 s" or "3 min ago" for an RFC 3339 time, relative to now; empty when unparsable.
pub fn relative(rfc3339: &str) -> String {
    let Ok(at) = humantime::parse_rfc3339_weak(rfc3339) else {
        return String::new();
    };
    relative_to(at, SystemTime::now())
}

/// [`relative`] with a chosen "now" (tests).
pub fn relative_to(at: SystemTime, now: SystemTime) -> String {
    match at.duration_since(now) {
        Ok(ahead) if ahead < Duration::from_secs(1) => "now".into(),
        Ok(ahead) => format!("in {}", span(ahead)),
        Err(past) if past.duration() < Duration::from_secs(1) => "just now".into(),
        Err(past) => format!("{} ago", span(past.duration())),
    }
}

/// A duration rounded for people: `25 s`, `3 min`, `2 h 5 min`, `4 d`.
pub fn span(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 if secs % 3600 >= 60 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        3600..86_400 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// An RFC 3339 time with its relative form: `2026-01-02T03:04:05.678Z (3 min ago)`.
pub fn when(value: &Value) -> String {
    match value.as_str() {
        Some(at) => match relative(at) {
            rel if rel.is_empty() => at.to_string(),
            rel => format!("{at} ({rel})"),
        },
        None => "-".into(),
    }
}

/// A bar `width` cells wide at most: `done` of `total` filled.
pub fn bar(done: u64, total: u64, width: usize) -> String {
    if total == 0 {
        return String::new();
    }
    let filled = ((done.min(total) as f64 / total as f64) * width as f64).round() as usize;
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

/// Cuts `s` to `max` characters, marking the cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let kept: String = s.chars().take(max.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// `--endpoint ID`: checked here, so that a mistyped id is named by its flag rather than by
/// the API's query parameter.
pub fn endpoint_id(value: &str) -> Result<String, String> {
    value
        .parse::<herald::EndpointId>()
        .map(|_| value.to_string())
        .map_err(|_| "not an endpoint id (ids come from `herald endpoints list`)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_like_speech() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let table = [
            (25, "in 25 s"),
            (-180, "3 min ago"),
            (-7500, "2 h 5 min ago"),
            (3600, "in 1 h"),
            (-4 * 86_400, "4 d ago"),
            (0, "now"),
        ];
        for (offset, expected) in table {
            let at = if offset >= 0 {
                now + Duration::from_secs(offset as u64)
            } else {
                now - Duration::from_secs((-offset) as u64)
            };
            assert_eq!(relative_to(at, now), expected, "{offset}");
        }
    }

    #[test]
    fn bars_fill_in_proportion() {
        assert_eq!(bar(0, 4, 4), "░░░░");
        assert_eq!(bar(2, 4, 4), "██░░");
        assert_eq!(bar(9, 4, 4), "████");
        assert_eq!(bar(1, 0, 4), "");
    }
}
