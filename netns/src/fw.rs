//! Firewall entries that belong to an attachment, read back from our own objects only: the
//! `inet rcni` table (`nft -j list table inet rcni`) and the iptables nat table
//! (`iptables-save -t nat`, `ip6tables-save -t nat`) lines carrying the reference comment
//! `id: "<cid>"`. Exec'ing the tools is fine in a debugging CLI (plugins never do).

use std::process::Command;

use serde::Serialize;
use serde_json::Value;

/// Our nftables table.
pub const NFT_FAMILY: &str = "inet";
/// Our nftables table name.
pub const NFT_TABLE: &str = "rcni";

/// One firewall entry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FwEntry {
    /// Container ID of the attachment it belongs to.
    #[serde(rename = "containerId")]
    pub container_id: String,
    /// "nftables" or "iptables"/"ip6tables".
    pub backend: String,
    /// Where: `map masq4`, `chain CNI-…`, ...
    pub object: String,
    /// The element or rule.
    pub entry: String,
    /// Its comment.
    pub comment: String,
}

/// Identity of an attachment for matching.
#[derive(Debug, Clone)]
pub struct Owner {
    /// Network name.
    pub network: String,
    /// Container ID.
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

impl Owner {
    /// Whether an nftables comment names this attachment: our owner tag prefix (exact, survives
    /// truncation) or the readable `id: <cid>` part that other writers of the table use.
    pub fn matches_nft(&self, comment: &str) -> bool {
        let tag = firewall::names::owner_tag(&self.network, &self.container_id, &self.ifname);
        if firewall::names::tag_of_comment(comment) == tag {
            return true;
        }
        let id = format!("id: {}", self.container_id);
        comment.contains(&format!("{id},"))
            || comment.ends_with(&id)
            || comment.contains(&format!("id: \"{}\"", self.container_id))
    }

    /// Whether an iptables-save line carries this attachment's reference comment.
    pub fn matches_iptables(&self, line: &str) -> bool {
        let id = format!("id: \\\"{}\\\"", self.container_id);
        if !line.contains(&id) {
            return false;
        }
        // A container attached to two networks has rules for both; the comment names the net.
        !line.contains("name: \\\"") || line.contains(&format!("name: \\\"{}\\\"", self.network))
    }
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Render an nft JSON expression (set key or data) the way `nft list` prints it.
pub fn nft_expr(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => a.iter().map(nft_expr).collect::<Vec<_>>().join(", "),
        Value::Object(m) => {
            if let Some(e) = m.get("elem") {
                return nft_expr(e.get("val").unwrap_or(e));
            }
            if let Some(c) = m.get("concat").and_then(Value::as_array) {
                return c.iter().map(nft_expr).collect::<Vec<_>>().join(" . ");
            }
            if let Some(p) = m.get("prefix") {
                return format!("{}/{}", nft_expr(&p["addr"]), nft_expr(&p["len"]));
            }
            if let Some(r) = m.get("range").and_then(Value::as_array) {
                return r.iter().map(nft_expr).collect::<Vec<_>>().join("-");
            }
            for verdict in ["jump", "goto"] {
                if let Some(t) = m.get(verdict) {
                    return format!("{verdict} {}", nft_expr(t.get("target").unwrap_or(t)));
                }
            }
            if m.len() == 1 {
                if let Some((k, v)) = m.iter().next() {
                    if v.is_null() {
                        return k.clone();
                    }
                }
            }
            Value::Object(m.clone()).to_string()
        }
        other => other.to_string(),
    }
}

fn comment_of(key: &Value) -> Option<&str> {
    key.get("elem")?.get("comment")?.as_str()
}

/// Entries of `nft -j list table inet rcni` output owned by one of `owners`.
pub fn parse_nft(json: &str, owners: &[Owner]) -> Vec<FwEntry> {
    let Ok(v) = serde_json::from_str::<Value>(json) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        for kind in ["map", "set"] {
            let Some(obj) = item.get(kind) else { continue };
            let name = obj["name"].as_str().unwrap_or_default();
            for el in obj["elem"].as_array().into_iter().flatten() {
                let (key, data) = match el.as_array() {
                    Some(pair) if pair.len() == 2 => (&pair[0], Some(&pair[1])),
                    _ => (el, None),
                };
                let Some(comment) = comment_of(key) else {
                    continue;
                };
                for o in owners.iter().filter(|o| o.matches_nft(comment)) {
                    let entry = match data {
                        Some(d) => format!("{} : {}", nft_expr(key), nft_expr(d)),
                        None => nft_expr(key),
                    };
                    out.push(FwEntry {
                        container_id: o.container_id.clone(),
                        backend: "nftables".into(),
                        object: format!("{kind} {name}"),
                        entry,
                        comment: comment.to_string(),
                    });
                }
            }
        }
        if let Some(rule) = item.get("rule") {
            let Some(comment) = rule["comment"].as_str() else {
                continue;
            };
            for o in owners.iter().filter(|o| o.matches_nft(comment)) {
                out.push(FwEntry {
                    container_id: o.container_id.clone(),
                    backend: "nftables".into(),
                    object: format!("chain {}", rule["chain"].as_str().unwrap_or_default()),
                    entry: format!("rule handle {}", rule["handle"]),
                    comment: comment.to_string(),
                });
            }
        }
    }
    out
}

/// Lines of `iptables-save -t nat` owned by one of `owners`.
pub fn parse_iptables(save: &str, backend: &str, owners: &[Owner]) -> Vec<FwEntry> {
    let mut out = Vec::new();
    for line in save.lines().filter(|l| l.starts_with("-A ")) {
        for o in owners.iter().filter(|o| o.matches_iptables(line)) {
            let chain = line.split_whitespace().nth(1).unwrap_or_default();
            let comment = line
                .split_once("--comment \"")
                .and_then(|(_, rest)| rest.rsplit_once("\" "))
                .or_else(|| {
                    line.split_once("--comment \"")
                        .and_then(|(_, r)| r.rsplit_once('"'))
                })
                .map(|(c, _)| c.replace("\\\"", "\""))
                .unwrap_or_default();
            out.push(FwEntry {
                container_id: o.container_id.clone(),
                backend: backend.into(),
                object: format!("nat chain {chain}"),
                entry: line.to_string(),
                comment,
            });
        }
    }
    out
}

/// Read every backend and return the entries of `owners` (missing tools or tables: none).
pub fn collect(owners: &[Owner]) -> Vec<FwEntry> {
    if owners.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Some(j) = run("nft", &["-j", "list", "table", NFT_FAMILY, NFT_TABLE]) {
        out.extend(parse_nft(&j, owners));
    }
    for (tool, backend) in [
        ("iptables-save", "iptables"),
        ("ip6tables-save", "ip6tables"),
    ] {
        if let Some(s) = run(tool, &["-t", "nat"]) {
            out.extend(parse_iptables(&s, backend, owners));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(cid: &str) -> Owner {
        Owner {
            network: "demo".into(),
            container_id: cid.into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn nft_map_elements_by_owner() {
        let ours = firewall::names::owner_comment("demo", "web-id", "eth0");
        let other = firewall::names::owner_comment("demo", "web-id2", "eth0");
        let json = serde_json::json!({"nftables":[
            {"metainfo":{"json_schema_version":1}},
            {"table":{"family":"inet","name":"rcni","handle":1}},
            {"map":{"family":"inet","name":"masq4","table":"rcni","type":"ipv4_addr","handle":2,"map":"verdict",
                "elem":[
                    [{"elem":{"val":"10.22.0.5","comment":ours}},{"jump":{"target":"masq_abc"}}],
                    [{"elem":{"val":"10.22.0.6","comment":other}},{"jump":{"target":"masq_abc"}}],
                    ["10.22.0.7",{"jump":{"target":"masq_abc"}}]
                ]}},
            {"set":{"family":"inet","name":"ports","table":"rcni","type":["inet_proto","inet_service"],
                "elem":[{"elem":{"val":{"concat":["tcp",8080]},"comment":"x net: demo, id: web-id, if: eth0"}}]}},
            {"rule":{"family":"inet","table":"rcni","chain":"dnat","handle":9,"expr":[],"comment":"net: demo, id: web-id, if: eth0"}}
        ]})
        .to_string();
        let got = parse_nft(&json, &[owner("web-id")]);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].object, "map masq4");
        assert_eq!(got[0].entry, "10.22.0.5 : jump masq_abc");
        assert_eq!(got[0].comment, ours);
        assert_eq!(got[1].entry, "tcp . 8080");
        assert_eq!(got[2].object, "chain dnat");
        assert!(parse_nft("not json", &[owner("web-id")]).is_empty());
        assert_eq!(parse_nft(&json, &[owner("web-id2")]).len(), 1);
    }

    #[test]
    fn portmap_standby_elements_are_listed() {
        // A container publishing a host port on a second network: its mapping waits in
        // hostport-standby4 (shape as `nft -j` 1.0.6 prints it).
        let mut b = owner("web-id");
        b.network = "b".into();
        let c = firewall::portmap::nft::pm_comment("b", "web-id", "eth0");
        let json = serde_json::json!({"nftables":[
            {"map":{"family":"inet","name":"hostport-standby4","table":"rcni",
                "type":["ipv4_addr","inet_proto","inet_service","mark"],"map":"ipv4_addr . inet_service",
                "elem":[[{"elem":{"val":{"concat":["0.0.0.0","tcp",8087,3551612032u64]},"comment":c}},
                         {"concat":["10.33.0.2",80]}]]}}
        ]})
        .to_string();
        let got = parse_nft(&json, &[b]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].object, "map hostport-standby4");
        assert_eq!(
            got[0].entry,
            "0.0.0.0 . tcp . 8087 . 3551612032 : 10.33.0.2 . 80"
        );
    }

    #[test]
    fn iptables_lines_by_comment() {
        let save = "*nat\n\
            :CNI-abc - [0:0]\n\
            -A POSTROUTING -s 10.22.0.5/32 -m comment --comment \"name: \\\"demo\\\" id: \\\"web-id\\\"\" -j CNI-abc\n\
            -A POSTROUTING -s 10.22.0.6/32 -m comment --comment \"name: \\\"demo\\\" id: \\\"web-id2\\\"\" -j CNI-def\n\
            -A POSTROUTING -s 10.23.0.5/32 -m comment --comment \"name: \\\"other\\\" id: \\\"web-id\\\"\" -j CNI-ghi\n\
            -A CNI-abc ! -d 224.0.0.0/4 -m comment --comment \"name: \\\"demo\\\" id: \\\"web-id\\\"\" -j MASQUERADE\n\
            COMMIT\n";
        let got = parse_iptables(save, "iptables", &[owner("web-id")]);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].object, "nat chain POSTROUTING");
        assert_eq!(got[0].comment, "name: \"demo\" id: \"web-id\"");
        assert_eq!(got[1].object, "nat chain CNI-abc");
    }

    #[test]
    fn expr_rendering() {
        use serde_json::json;
        assert_eq!(
            nft_expr(&json!({"prefix":{"addr":"10.0.0.0","len":8}})),
            "10.0.0.0/8"
        );
        assert_eq!(nft_expr(&json!({"range":[1000,2000]})), "1000-2000");
        assert_eq!(nft_expr(&json!({"accept":null})), "accept");
        assert_eq!(nft_expr(&json!({"goto":{"target":"x"}})), "goto x");
    }
}
