//! Deterministic names derived from (network, container, ifname, subnet).
//!
//! Names are hashes so that any user string (quotes, spaces, unicode, long names) maps to a valid,
//! bounded chain name and never reaches a command line or a kernel name field unchecked.

use ipnet::IpNet;
use sha2::{Digest, Sha512};

/// Lower-case hex of sha512(`input`).
pub fn sha512_hex(input: &[u8]) -> String {
    let digest = Sha512::digest(input);
    let mut out = String::with_capacity(digest.len() * 2);
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Reference ipMasq chain (the reference bridge plugin's): `CNI-` + first 24 hex of
/// sha512(network + container id). Per (network, container), not per ifname, exactly like the
/// reference so existing rules are found and cleaned.
pub fn iptables_masq_chain(network: &str, container_id: &str) -> String {
    let h = sha512_hex(format!("{network}{container_id}").as_bytes());
    format!("CNI-{}", &h[..24])
}

/// Reference comment on every ipMasq iptables rule.
pub fn iptables_masq_comment(network: &str, container_id: &str) -> String {
    format!("name: \"{network}\" id: \"{container_id}\"")
}

/// 16 hex of sha512(network): the network part of our nftables names and owner tags.
pub fn network_hash(network: &str) -> String {
    sha512_hex(network.as_bytes())[..16].to_string()
}

/// 16 hex identifying one attachment inside a network. The NUL separator keeps
/// ("ab","c") and ("a","bc") apart.
pub fn owner_hash(container_id: &str, ifname: &str) -> String {
    sha512_hex(format!("{container_id}\0{ifname}").as_bytes())[..16].to_string()
}

/// Owner tag stored at the start of an nftables map element's comment:
/// `<network_hash>-<owner_hash>`. DEL and GC match on it, so they need no address.
pub fn owner_tag(network: &str, container_id: &str, ifname: &str) -> String {
    format!(
        "{}-{}",
        network_hash(network),
        owner_hash(container_id, ifname)
    )
}

/// Maximum comment length nftables stores (NFTNL_UDATA_COMMENT_MAXLEN, including the NUL).
pub const NFT_COMMENT_MAX: usize = 128;

/// Full element comment: the owner tag, then a human-readable part, cut at a char boundary so
/// the whole fits [`NFT_COMMENT_MAX`] with its NUL. Double quotes are dropped because `nft`
/// prints comments inside quotes.
pub fn owner_comment(network: &str, container_id: &str, ifname: &str) -> String {
    bounded_comment(format!(
        "{} net: {network}, id: {container_id}, if: {ifname}",
        owner_tag(network, container_id, ifname)
    ))
}

/// 16 hex identifying a container across all its networks and interfaces: carried by the
/// port-forwarding element comments so an attachment can tell whether a host port is held by
/// another attachment of the SAME container (Podman publishes a container's ports on every
/// network it joins) even when the readable `id:` part of the comment was truncated.
pub fn container_hash(container_id: &str) -> String {
    sha512_hex(format!("ctr\0{container_id}").as_bytes())[..16].to_string()
}

/// Cuts `s` (quotes dropped) so it fits [`NFT_COMMENT_MAX`] with its NUL, at a char boundary.
pub fn bounded_comment(mut s: String) -> String {
    s.retain(|c| c != '"');
    let max = NFT_COMMENT_MAX - 1;
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The owner tag at the start of a stored comment (text before the first space).
pub fn tag_of_comment(comment: &str) -> &str {
    comment.split(' ').next().unwrap_or("")
}

/// Tag of the per (network, subnet) exemption rule of the nftables base chain:
/// `<network_hash>:<subnet>` (one token, first in the rule comment).
pub fn subnet_tag(network: &str, subnet: &IpNet) -> String {
    format!("{}:{}", network_hash(network), subnet.trunc())
}

/// Full comment of that rule: the tag, then the readable network name (bounded like
/// [`owner_comment`]).
pub fn subnet_comment(network: &str, subnet: &IpNet) -> String {
    bounded_comment(format!("{} net: {network}", subnet_tag(network, subnet)))
}

/// Inverse of [`subnet_tag`]: (network hash, subnet).
pub fn parse_subnet_tag(tag: &str) -> Option<(&str, IpNet)> {
    let (h, sub) = tag.split_once(':')?;
    if h.len() != 16 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((h, sub.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_chain_name_example() {
        // Confirmed against the reference plugin.
        assert_eq!(
            iptables_masq_chain("s1net", "s1cid1"),
            "CNI-88a20ff1b49d3eeca9368247"
        );
    }

    #[test]
    fn reference_comment() {
        assert_eq!(
            iptables_masq_comment("s1net", "s1cid1"),
            "name: \"s1net\" id: \"s1cid1\""
        );
    }

    #[test]
    fn subnet_tags_roundtrip() {
        let sub: IpNet = "fd00:22::5/64".parse().unwrap();
        let tag = subnet_tag("n", &sub);
        assert_eq!(
            parse_subnet_tag(&tag),
            Some((network_hash("n").as_str(), "fd00:22::/64".parse().unwrap()))
        );
        assert_eq!(tag_of_comment(&subnet_comment("n", &sub)), tag);
        assert_eq!(parse_subnet_tag("rcni:fixed"), None);
    }

    #[test]
    fn owner_tags_distinguish_owners() {
        assert_ne!(owner_tag("n", "ab", "c"), owner_tag("n", "a", "bc"));
        assert_ne!(owner_tag("n1", "c", "eth0"), owner_tag("n2", "c", "eth0"));
        assert_eq!(owner_tag("n", "c", "eth0"), owner_tag("n", "c", "eth0"));
        let t = owner_tag("n", "c", "eth0");
        assert_eq!(t.len(), 33);
        assert!(t.starts_with(&network_hash("n")));
    }

    #[test]
    fn comment_is_bounded_and_starts_with_tag() {
        let long = "x".repeat(300);
        let c = owner_comment("net\"q", &long, "eth0");
        assert!(c.len() < NFT_COMMENT_MAX);
        assert!(!c.contains('"'));
        assert_eq!(tag_of_comment(&c), owner_tag("net\"q", &long, "eth0"));
        let u = owner_comment("né", &"é".repeat(100), "eth0");
        assert!(u.len() < NFT_COMMENT_MAX);
    }
}
