//! The Go-style JSON decoder (case-insensitive keys, `null` leaves the field alone) over a set
//! of shapes: nested structs, options, sequences, maps, enums, numbers of every width.
//! Properties: no panic, no hang; the canonical encoding of a value (what serde writes for it)
//! decodes through the adapter to that same value (the adapter only adds leniency: other key
//! cases and nulls, which serde_json alone would treat differently); and, as in Go, the same
//! encoding with every struct key's case changed decodes to that value too.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, Serialize, PartialEq)]
enum Kind {
    Unit,
    Newtype(u16),
    Tuple(i8, String),
    Struct { a: Option<bool> },
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Inner {
    host_port: Option<i64>,
    container_port: Option<u16>,
    protocol: Option<String>,
    #[serde(default)]
    list: Vec<i32>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
struct Outer {
    name: Option<String>,
    #[serde(rename = "cniVersion")]
    cni_version: Option<String>,
    #[serde(default)]
    inner: Option<Inner>,
    #[serde(default)]
    many: Vec<Inner>,
    #[serde(default)]
    map: BTreeMap<String, u8>,
    kind: Option<Kind>,
    tuple: Option<(u32, Option<char>)>,
    bytes: Option<Vec<u8>>,
}

/// Only structs, options, sequences and tuples: every JSON object in its encoding is a struct,
/// so every key is a field name whose case Go ignores.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
struct Folded {
    name: Option<String>,
    #[serde(rename = "cniVersion")]
    cni_version: Option<String>,
    #[serde(default)]
    inner: Option<Inner>,
    #[serde(default)]
    many: Vec<Inner>,
    tuple: Option<(u32, Option<char>)>,
}

/// `v` with the case of every object key changed: upper case when `upper`, else swapped.
fn recase(v: &serde_json::Value, upper: bool) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let k = if upper {
                        k.to_uppercase()
                    } else {
                        k.chars()
                            .map(|c| {
                                if c.is_ascii_lowercase() {
                                    c.to_ascii_uppercase()
                                } else {
                                    c.to_ascii_lowercase()
                                }
                            })
                            .collect()
                    };
                    (k, recase(v, upper))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| recase(v, upper)).collect()),
        other => other.clone(),
    }
}

/// Shapes only decoded (no round trip: floats and units do not survive one exactly).
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Loose {
    float: Option<f64>,
    unit: Option<()>,
    nested: Option<Box<Loose>>,
    signed: Option<i128>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let go = cni::gojson::from_value::<Outer>(v.clone());
    let _ = cni::gojson::from_value::<Vec<Kind>>(v.clone());
    let _ = cni::gojson::from_value::<BTreeMap<String, Inner>>(v.clone());
    let _ = cni::gojson::from_value::<cni::PortMapping>(v.clone());
    let _ = cni::gojson::from_value::<Vec<cni::skel::Attachment>>(v.clone());
    let _ = cni::gojson::from_value::<Loose>(v.clone());
    let _ = go;
    if let Ok(exact) = serde_json::from_value::<Folded>(v.clone()) {
        let canonical = serde_json::to_value(&exact).expect("serialize");
        for upper in [true, false] {
            let other_case = recase(&canonical, upper);
            match cni::gojson::from_value::<Folded>(other_case.clone()) {
                Ok(go) => assert_eq!(go, exact, "case-changed {other_case} decodes differently"),
                Err(e) => panic!("the adapter fails on case-changed {other_case}: {e}"),
            }
        }
    }
    if let Ok(exact) = serde_json::from_value::<Outer>(v) {
        let canonical = serde_json::to_value(&exact).expect("serialize");
        match cni::gojson::from_value::<Outer>(canonical.clone()) {
            Ok(go) => assert_eq!(go, exact, "adapter decodes {canonical} differently"),
            Err(e) => panic!("the adapter fails on the canonical {canonical}: {e}"),
        }
    }
});
