//! MAC address helpers and random host-side veth names (`veth` + 8 hex digits, the
//! reference bridge plugin's naming).

use crate::error::{Error, Result};

/// Parse `aa:bb:cc:dd:ee:ff` (also accepts `-` separators, any case).
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let invalid = |reason: &str| Error::Invalid {
        what: "MAC address",
        reason: format!("{s:?}: {reason}"),
    };
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(invalid("expected 6 octets"));
    }
    let mut mac = [0u8; 6];
    for (slot, part) in mac.iter_mut().zip(&parts) {
        if part.len() != 2 {
            return Err(invalid("each octet must be 2 hex digits"));
        }
        *slot = u8::from_str_radix(part, 16).map_err(|_| invalid("not hexadecimal"))?;
    }
    Ok(mac)
}

/// Format as lowercase `aa:bb:cc:dd:ee:ff` (the form CNI results use).
pub fn format_mac(mac: &[u8; 6]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

/// Fill `buf` from getrandom(2).
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe the writable tail of `buf`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::io("getrandom", err));
        }
        filled += n as usize;
    }
    Ok(())
}

/// A random host-side veth name, `veth` followed by 8 lowercase hex digits (12 bytes, within
/// IFNAMSIZ). Falls back to a time/pid mix only if getrandom(2) is unavailable.
pub fn random_veth_name() -> String {
    let mut b = [0u8; 4];
    if random_bytes(&mut b).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        b = (nanos ^ std::process::id().rotate_left(16)).to_be_bytes();
    }
    format!("veth{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3])
}

/// A random locally administered unicast MAC (bit 1 of the first octet set, bit 0 clear).
pub fn random_mac() -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    random_bytes(&mut mac)?;
    mac[0] = (mac[0] & 0xfe) | 0x02;
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format_roundtrip() {
        let m = parse_mac("AA:bb:0C:dd:ee:0f").unwrap();
        assert_eq!(m, [0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0x0f]);
        assert_eq!(format_mac(&m), "aa:bb:0c:dd:ee:0f");
        assert_eq!(parse_mac("02-00-00-00-00-01").unwrap(), [2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn parse_rejects_garbage() {
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "zz:bb:cc:dd:ee:ff",
            "a:bb:cc:dd:ee:ff",
            "aaa:b:cc:dd:ee:ff",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn veth_names_have_reference_shape() {
        let a = random_veth_name();
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("veth"));
        assert!(a[4..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        // 32 random bits: two equal names in a row would mean the generator is broken.
        let names: std::collections::HashSet<String> =
            (0..16).map(|_| random_veth_name()).collect();
        assert!(names.len() > 1);
    }

    #[test]
    fn random_mac_is_local_unicast() {
        let m = random_mac().unwrap();
        assert_eq!(m[0] & 0x03, 0x02);
    }
}
