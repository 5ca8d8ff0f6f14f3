//! Spec versions and version negotiation (the highest version both sides support, as libcni selects it).

use crate::error::{codes, CniError};

/// Every released spec version, oldest first. The Go library accepts all of them.
pub const SUPPORTED_VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// The newest spec version this library implements.
pub const CURRENT: &str = "1.1.0";

/// One of the released spec versions; ordered by release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(u8);

/// Result/prevResult version families: a prevResult must come from the config's family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// 0.1.0 and 0.2.0: `ip4`/`ip6` results.
    V02,
    /// 0.3.0, 0.3.1 and 0.4.0: `ips[].version` present.
    V04,
    /// 1.0.0 and 1.1.0.
    V1,
}

impl Family {
    /// The versions of this family, as Go prints them in its mismatch error.
    pub fn members(self) -> &'static [&'static str] {
        match self {
            Family::V02 => &["0.1.0", "0.2.0"],
            Family::V04 => &["0.3.0", "0.3.1", "0.4.0"],
            Family::V1 => &["1.0.0", "1.1.0"],
        }
    }
}

/// Parse "a.b.c" into a numeric triple; used to compare versions we do not support.
pub(crate) fn triple(s: &str) -> Option<(u64, u64, u64)> {
    let mut it = s.trim().split('.');
    let a = it.next()?.parse().ok()?;
    let b = it.next()?.parse().ok()?;
    let c = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((a, b, c))
}

impl Version {
    /// 0.1.0, the version assumed for a config without `cniVersion`.
    pub const V0_1_0: Version = Version(0);
    /// 0.2.0.
    pub const V0_2_0: Version = Version(1);
    /// 0.3.0.
    pub const V0_3_0: Version = Version(2);
    /// 0.3.1.
    pub const V0_3_1: Version = Version(3);
    /// 0.4.0 (CHECK).
    pub const V0_4_0: Version = Version(4);
    /// 1.0.0.
    pub const V1_0_0: Version = Version(5);
    /// 1.1.0 (GC, STATUS).
    pub const V1_1_0: Version = Version(6);

    /// Parse one of the released versions; anything else is code 1.
    pub fn parse(s: &str) -> Result<Version, CniError> {
        // Accept "1.0" style spellings Go's semver parser would also accept? No: Go compares
        // strings against version.All exactly, so do we.
        SUPPORTED_VERSIONS
            .iter()
            .position(|v| *v == s)
            .map(|i| Version(i as u8))
            .ok_or_else(|| {
                CniError::new(codes::INCOMPATIBLE_VERSION, "incompatible CNI versions")
                    .with_details(format!(
                        "config is {s:?}, plugin supports {}",
                        go_quoted_list(&SUPPORTED_VERSIONS)
                    ))
            })
    }

    /// The canonical spelling.
    pub fn as_str(&self) -> &'static str {
        SUPPORTED_VERSIONS[self.0 as usize]
    }

    /// CHECK exists from 0.4.0.
    pub fn supports_check(&self) -> bool {
        *self >= Version::V0_4_0
    }

    /// GC and STATUS exist from 1.1.0.
    pub fn supports_gc_status(&self) -> bool {
        *self >= Version::V1_1_0
    }

    /// prevResult on DEL exists from 0.4.0.
    pub fn supports_prev_result_on_del(&self) -> bool {
        *self >= Version::V0_4_0
    }

    /// The result family of this version.
    pub fn family(&self) -> Family {
        if *self >= Version::V1_0_0 {
            Family::V1
        } else if *self >= Version::V0_3_0 {
            Family::V04
        } else {
            Family::V02
        }
    }
}

impl Default for Version {
    fn default() -> Self {
        Version::V1_1_0
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Go's `%q` of a string slice: `["0.1.0" "0.2.0"]`, which the reference prints in details.
pub(crate) fn go_quoted_list<S: AsRef<str>>(items: &[S]) -> String {
    let inner: Vec<String> = items.iter().map(|s| format!("{:?}", s.as_ref())).collect();
    format!("[{}]", inner.join(" "))
}

/// Select the version to speak for a config.
///
/// SPEC 1.1 `cniVersions`: the highest of `cniVersion` ∪ `cniVersions` not newer than this
/// library ([`CURRENT`]) wins; newer entries are silently dropped (libcni). Among those we take
/// the highest the plugin supports (`supported`), so a plugin that only speaks ≥0.4.0 still
/// works with a list offering both. No version at all means 0.1.0. Nothing usable is code 1
/// with details listing what the plugin supports.
pub fn negotiate(
    cni_version: Option<&str>,
    cni_versions: &[String],
    supported: &[&str],
) -> Result<Version, CniError> {
    let mut given: Vec<&str> = Vec::new();
    if let Some(v) = cni_version.filter(|v| !v.is_empty()) {
        given.push(v);
    }
    given.extend(
        cni_versions
            .iter()
            .map(String::as_str)
            .filter(|v| !v.is_empty()),
    );
    if given.is_empty() {
        let v = Version::V0_1_0;
        if supported.contains(&v.as_str()) {
            return Ok(v);
        }
        return Err(incompatible("0.1.0", supported));
    }
    let current = triple(CURRENT).unwrap_or((1, 1, 0));
    let best = given
        .iter()
        .filter(|v| triple(v).is_some_and(|t| t <= current))
        .filter(|v| supported.contains(v))
        .filter_map(|v| Version::parse(v).ok())
        .max();
    match best {
        Some(v) => Ok(v),
        None => {
            // Name the version the config asked for first (its `cniVersion`).
            Err(incompatible(given[0], supported))
        }
    }
}

fn incompatible(config: &str, supported: &[&str]) -> CniError {
    CniError::new(codes::INCOMPATIBLE_VERSION, "incompatible CNI versions").with_details(format!(
        "config is {config:?}, plugin supports {}",
        go_quoted_list(supported)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_order() {
        for (i, s) in SUPPORTED_VERSIONS.iter().enumerate() {
            let v = Version::parse(s).unwrap();
            assert_eq!(v.as_str(), *s);
            assert_eq!(v.0 as usize, i);
        }
        assert!(Version::V0_3_1 < Version::V0_4_0);
        assert!(!Version::V0_3_1.supports_check());
        assert!(Version::V0_4_0.supports_check());
        assert!(!Version::V1_0_0.supports_gc_status());
        assert!(Version::V1_1_0.supports_gc_status());
        assert_eq!(Version::parse("9.9.9").unwrap_err().code, 1);
        assert_eq!(Version::V0_2_0.family(), Family::V02);
        assert_eq!(Version::V0_4_0.family(), Family::V04);
        assert_eq!(Version::V1_0_0.family(), Family::V1);
    }

    #[test]
    fn negotiation() {
        let all = &SUPPORTED_VERSIONS[..];
        assert_eq!(negotiate(None, &[], all).unwrap(), Version::V0_1_0);
        assert_eq!(negotiate(Some(""), &[], all).unwrap(), Version::V0_1_0);
        assert_eq!(negotiate(Some("0.3.1"), &[], all).unwrap(), Version::V0_3_1);
        let list = vec![
            "0.4.0".to_string(),
            "1.0.0".to_string(),
            "2.0.0".to_string(),
        ];
        assert_eq!(
            negotiate(Some("0.3.1"), &list, all).unwrap(),
            Version::V1_0_0
        );
        let e = negotiate(Some("9.9.9"), &[], all).unwrap_err();
        assert_eq!(e.code, codes::INCOMPATIBLE_VERSION);
        assert!(e.details.contains("\"1.1.0\""), "{}", e.details);
        assert!(e.details.contains("\"9.9.9\""), "{}", e.details);
        // A plugin that only speaks >=0.4.0 (like firewall).
        let fw = &SUPPORTED_VERSIONS[4..];
        assert_eq!(negotiate(Some("0.3.1"), &[], fw).unwrap_err().code, 1);
        assert_eq!(negotiate(None, &[], fw).unwrap_err().code, 1);
        assert_eq!(negotiate(Some("garbage"), &[], all).unwrap_err().code, 1);
    }
}
