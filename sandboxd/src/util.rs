//! Small helpers: ids, RFC 3339 times, name validation.

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{bad, ApiError};

/// Longest network or sandbox name.
pub const MAX_NAME: usize = 64;

/// A fresh 64-hex-digit id from the kernel's random source.
pub fn new_id() -> String {
    let mut buf = [0u8; 32];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    if !filled {
        // Not reachable on Linux in practice; fall back to time and pid so ids stay unique.
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let seed = t ^ (u128::from(std::process::id()) << 64);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8 ^ i as u8;
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Current time as RFC 3339 UTC with seconds precision.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    rfc3339(secs)
}

/// Format seconds since the epoch (civil-from-days, proleptic Gregorian).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Validate a network or sandbox name: 1–64 bytes of `[A-Za-z0-9][A-Za-z0-9_.-]*`. That excludes
/// `/`, `..`-only names and anything a shell or a path could misread; the name becomes a file
/// name (state, pin) and a CNI network name.
pub fn check_name(kind: &str, name: &str) -> Result<(), ApiError> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    let first_ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > MAX_NAME || !ok_chars || !first_ok {
        return Err(bad(format!(
            "invalid {kind} name {name:?}: use 1-{MAX_NAME} letters, digits, '_', '.', '-', starting with a letter or digit"
        )));
    }
    Ok(())
}

/// Whether `s` looks like an id or id prefix (at least 12 hex digits).
pub fn is_id_prefix(s: &str) -> bool {
    s.len() >= 12 && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_and_names() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert!(check_name("sandbox", "web-1.a_b").is_ok());
        for b in ["", "..", ".", "a/b", "-x", "a b", &"x".repeat(65)] {
            assert!(check_name("sandbox", b).is_err(), "{b}");
        }
        assert!(check_name("sandbox", &"x".repeat(64)).is_ok());
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert_ne!(id, new_id());
    }
}
