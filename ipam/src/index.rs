//! The owner index: who holds each lease, without reading every lease file on every call.
//!
//! ADD must refuse a second allocation for the same attachment and DEL must find the
//! attachment's leases; both need the owner of every lease of the network. Reading each lease
//! file (openat + read + close) made ADD and DEL grow with the number of containers: about
//! 3000 syscalls at 1000 leases. The index keeps, per lease name, the inode number and the
//! content seen last time, in one file `.rcni-owners` beside the leases.
//!
//! It stays drop-in: the directory is the truth and the index only a cache validated against
//! it. Each call lists the directory (one `getdents64` batch, names and inode numbers, no per
//! file syscall) and reads only the leases whose name or inode the index does not know, which
//! covers leases written, replaced or removed by the reference plugin, by an older version of
//! ours, or by a writer killed before it updated the index. Destructive decisions (DEL, a
//! duplicate refusal) re-read the few candidate files before acting, so a stale entry can never
//! make us remove or refuse someone else's lease. The reference ignores the file: its name does
//! not parse as an address, and its content never equals a `<cid>\r\n<ifname>` lease.
//!
//! Format: one line per lease, `<name>\t<inode>\t<content>`, with `\\`, `\t`, `\r` and `\n` of
//! the content escaped. Written with temp file + rename under the network lock.

use std::net::IpAddr;

/// Name of the index file in the network directory.
pub const INDEX_FILE: &str = ".rcni-owners";

/// One lease as the listing knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedLease {
    /// The address the file name holds.
    pub ip: IpAddr,
    /// The file name (the address as written by whoever created it).
    pub name: String,
    /// Inode number: a file replaced under the same name gets another one.
    pub ino: u64,
    /// The lease content (`<cid>\r\n<ifname>`, legacy `<cid>`, or empty).
    pub content: String,
}

/// The leases of a network directory with their owners, and whether the on-disk index needs
/// rewriting.
#[derive(Debug, Default)]
pub struct Listing {
    /// Every lease, sorted by name (the reference walks in lexical order).
    pub leases: Vec<IndexedLease>,
    /// The index on disk no longer matches `leases`.
    pub dirty: bool,
    /// Lease files read because the index did not know them (observability, tests).
    pub files_read: usize,
    /// Taken from the index alone: the directory was unchanged since the last sealed call.
    pub sealed: bool,
}

impl Listing {
    /// Leases whose cached content is exactly `content` (trimmed like the reference).
    pub fn held_by<'a>(&'a self, content: &'a str) -> impl Iterator<Item = &'a IndexedLease> + 'a {
        self.leases
            .iter()
            .filter(move |l| l.content.trim() == content)
    }

    /// Record a lease this process just created.
    pub fn insert(&mut self, lease: IndexedLease) {
        match self.leases.binary_search_by(|l| l.name.cmp(&lease.name)) {
            Ok(i) => self.leases[i] = lease,
            Err(i) => self.leases.insert(i, lease),
        }
        self.dirty = true;
    }

    /// Forget a lease this process just removed.
    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.leases.binary_search_by(|l| l.name.as_str().cmp(name)) {
            self.leases.remove(i);
            self.dirty = true;
        }
    }

    /// The index file's content for these leases.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.leases.len() * 48);
        for l in &self.leases {
            out.push_str(&l.name);
            out.push('\t');
            out.push_str(&l.ino.to_string());
            out.push('\t');
            escape_into(&l.content, &mut out);
            out.push('\n');
        }
        out
    }
}

/// Parse an index file into its leases, sorted by name. Malformed lines are dropped: the
/// entry is then simply re-read from its lease file.
pub fn decode(text: &str) -> Vec<IndexedLease> {
    let mut leases = Vec::with_capacity(text.len() / 40);
    for line in text.lines() {
        let mut parts = line.splitn(3, '\t');
        let (Some(name), Some(ino), Some(content)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Ok(ip), Ok(ino), Some(content)) = (
            name.parse::<IpAddr>(),
            ino.parse::<u64>(),
            unescape(content),
        ) else {
            continue;
        };
        leases.push(IndexedLease {
            ip,
            name: name.to_string(),
            ino,
            content,
        });
    }
    // Written sorted; sorting again only costs when someone else wrote the file.
    if !leases.is_sorted_by(|a, b| a.name < b.name) {
        leases.sort_by(|a, b| a.name.cmp(&b.name));
        leases.dedup_by(|a, b| a.name == b.name);
    }
    leases
}

/// The entry for `name` in decoded (sorted) leases.
pub fn find<'a>(leases: &'a [IndexedLease], name: &str) -> Option<&'a IndexedLease> {
    leases
        .binary_search_by(|l| l.name.as_str().cmp(name))
        .ok()
        .map(|i| &leases[i])
}

fn escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '\\' => '\\',
            't' => '\t',
            'r' => '\r',
            'n' => '\n',
            _ => return None,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn lease(name: &str, ino: u64, content: &str) -> IndexedLease {
        IndexedLease {
            ip: name.parse().unwrap(),
            name: name.into(),
            ino,
            content: content.into(),
        }
    }

    #[test]
    fn encode_decode_round_trip_keeps_odd_content() {
        let mut l = Listing::default();
        l.insert(lease("10.0.0.3", 7, "c\r\neth0"));
        l.insert(lease("10.0.0.2", 5, "legacy\\id\twith\ntabs"));
        l.insert(lease("fd00::2", 9, ""));
        assert_eq!(l.leases[0].name, "10.0.0.2", "kept sorted");
        let back = decode(&l.encode());
        assert_eq!(back, l.leases);
        let hit = find(&back, "10.0.0.2").unwrap();
        assert_eq!(
            (hit.ino, hit.content.as_str()),
            (5, "legacy\\id\twith\ntabs")
        );
        assert!(find(&back, "10.0.0.9").is_none());
    }

    #[test]
    fn malformed_lines_are_dropped_not_fatal() {
        let v = decode(
            "10.0.0.2\tx\tc\n10.0.0.3\t4\tbad\\q\n10.0.0.4\t4\nnot-ip\t5\tc\n10.0.0.5\t6\tok\n",
        );
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].name.as_str(), v[0].ino), ("10.0.0.5", 6));
    }

    #[test]
    fn held_by_matches_trimmed_content_and_remove_marks_dirty() {
        let mut l = Listing::default();
        l.insert(lease("10.0.0.2", 1, "a\r\neth0\n"));
        l.insert(lease("10.0.0.3", 2, "b\r\neth0"));
        l.dirty = false;
        let held: Vec<_> = l.held_by("a\r\neth0").map(|x| x.name.clone()).collect();
        assert_eq!(held, ["10.0.0.2"]);
        l.remove("10.0.0.9");
        assert!(!l.dirty);
        l.remove("10.0.0.2");
        assert!(l.dirty);
        assert_eq!(l.leases.len(), 1);
    }
}
