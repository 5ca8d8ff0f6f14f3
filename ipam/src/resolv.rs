//! `resolvConf`: read a resolv.conf-style file into the result's DNS fields, like the reference
//! (`nameserver`, `domain`, `search`, `options`; `#`/`;` comments; lines with one field ignored).

use crate::error::ConfigError;

/// DNS settings read from a resolv.conf file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, in order.
    pub nameservers: Vec<String>,
    /// Last `domain` line.
    pub domain: Option<String>,
    /// All `search` entries.
    pub search: Vec<String>,
    /// All `options` entries.
    pub options: Vec<String>,
}

/// Parse resolv.conf text.
pub fn parse(text: &str) -> ResolvConf {
    let mut out = ResolvConf::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 2 {
            continue;
        }
        let rest = fields[1..].iter().map(|s| s.to_string());
        match fields[0] {
            "nameserver" => out.nameservers.push(fields[1].to_string()),
            "domain" => out.domain = Some(fields[1].to_string()),
            "search" => out.search.extend(rest),
            "options" => out.options.extend(rest),
            _ => {}
        }
    }
    out
}

/// Read and parse the file at `path`.
pub fn load(path: &str) -> Result<ResolvConf, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::ResolvConf {
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    Ok(parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_keys() {
        let r = parse(
            "# c\n; c\nnameserver 10.0.0.1\nnameserver  fd00::53 \ndomain example.com\n\
             search a.example b.example\noptions ndots:5 edns0\nbogus\nsortlist x\n",
        );
        assert_eq!(r.nameservers, ["10.0.0.1", "fd00::53"]);
        assert_eq!(r.domain.as_deref(), Some("example.com"));
        assert_eq!(r.search, ["a.example", "b.example"]);
        assert_eq!(r.options, ["ndots:5", "edns0"]);
    }
}
