//! Go-compatible JSON decoding.
//!
//! Go's `encoding/json` matches object keys to struct fields case-insensitively (an exact match
//! is preferred) and treats `null` as "leave the field alone". Runtimes rely on this: containerd
//! sends `portMappings` as `{"HostPort":…,"ContainerPort":…,"Protocol":…,"HostIP":…}`. This module
//! is a `serde::Deserializer` adapter over `serde_json::Value` that does the same for any serde
//! struct, recursively, without per-type code: `deserialize_struct` renames keys that fold-match
//! one of the struct's fields and wraps every nested value in the adapter again.
//!
//! Limitation: fields behind `#[serde(flatten)]` are buffered by serde itself and so are matched
//! exactly (serde asks for a map, not a struct, and never tells us the field names).

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Value};

type Error = serde_json::Error;

/// Decode `v` into `T` with Go's key-matching rules.
pub fn from_value<T: DeserializeOwned>(v: Value) -> Result<T, serde_json::Error> {
    T::deserialize(GoValue(v))
}

/// Parse `b` as JSON and decode it into `T` with Go's key-matching rules.
pub fn from_slice<T: DeserializeOwned>(b: &[u8]) -> Result<T, serde_json::Error> {
    let v: Value = serde_json::from_slice(b)?;
    from_value(v)
}

/// The adapter: a JSON value that deserializes like Go's `encoding/json`.
pub struct GoValue(pub Value);

fn fold_eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || a.to_lowercase() == b.to_lowercase()
}

/// Rename keys of `obj` to the struct's field names when they only match case-insensitively and
/// the exact key is absent; drop `null` members (Go leaves the field at its zero value).
fn rename_keys(obj: Map<String, Value>, fields: &'static [&'static str]) -> Map<String, Value> {
    let mut out = Map::new();
    let mut folded: Vec<(String, Value)> = Vec::new();
    for (k, v) in obj {
        if v.is_null() {
            continue;
        }
        if fields.contains(&k.as_str()) {
            out.insert(k, v);
            continue;
        }
        match fields.iter().find(|f| fold_eq(f, &k)) {
            Some(f) => folded.push(((*f).to_string(), v)),
            None => {
                out.insert(k, v);
            }
        }
    }
    for (k, v) in folded {
        // The exact spelling wins over a case-folded one.
        out.entry(k).or_insert(v);
    }
    out
}

struct Seq(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Seq {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.0.next() {
            Some(v) => seed.deserialize(GoValue(v)).map(Some),
            None => Ok(None),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Obj {
    it: serde_json::map::IntoIter,
    pending: Option<Value>,
}

impl<'de> MapAccess<'de> for Obj {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.it.next() {
            Some((k, v)) => {
                self.pending = Some(v);
                seed.deserialize(k.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let v = self
            .pending
            .take()
            .ok_or_else(|| de::Error::custom("value requested before key"))?;
        seed.deserialize(GoValue(v))
    }
}

struct Enum {
    variant: String,
    content: Option<Value>,
}

impl<'de> EnumAccess<'de> for Enum {
    type Error = Error;
    type Variant = VariantContent;
    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, VariantContent), Error> {
        let d: de::value::StringDeserializer<Error> = self.variant.into_deserializer();
        let v = seed.deserialize(d)?;
        Ok((v, VariantContent(self.content)))
    }
}

struct VariantContent(Option<Value>);

impl<'de> VariantAccess<'de> for VariantContent {
    type Error = Error;
    fn unit_variant(self) -> Result<(), Error> {
        match self.0 {
            None | Some(Value::Null) => Ok(()),
            Some(_) => Err(de::Error::custom("expected a unit variant")),
        }
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(GoValue(self.0.unwrap_or(Value::Null)))
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_seq(GoValue(self.0.unwrap_or(Value::Null)), visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_struct(
            GoValue(self.0.unwrap_or(Value::Null)),
            "",
            fields,
            visitor,
        )
    }
}

impl<'de> de::Deserializer<'de> for GoValue {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else if let Some(f) = n.as_f64() {
                    visitor.visit_f64(f)
                } else {
                    Err(de::Error::custom("unrepresentable number"))
                }
            }
            Value::String(s) => visitor.visit_string(s),
            Value::Array(a) => visitor.visit_seq(Seq(a.into_iter())),
            Value::Object(o) => visitor.visit_map(Obj {
                it: o.into_iter(),
                pending: None,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            v => visitor.visit_some(GoValue(v)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::Object(o) => visitor.visit_map(Obj {
                it: rename_keys(o, fields).into_iter(),
                pending: None,
            }),
            other => GoValue(other).deserialize_any(visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(Enum {
                variant: s,
                content: None,
            }),
            Value::Object(o) if o.len() == 1 => {
                let Some((k, v)) = o.into_iter().next() else {
                    return Err(de::Error::custom("empty enum object"));
                };
                visitor.visit_enum(Enum {
                    variant: k,
                    content: Some(v),
                })
            }
            other => Err(de::Error::custom(format!(
                "expected a string or a single-key object for an enum, got {other}"
            ))),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Inner {
        #[serde(rename = "hostPort")]
        host_port: u16,
        #[serde(default)]
        name: String,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        #[serde(rename = "cniVersion")]
        cni_version: String,
        inner: Option<Inner>,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(default)]
        map: BTreeMap<String, Inner>,
        #[serde(default)]
        mtu: u32,
        kind: Option<Kind>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Alpha,
        Beta {
            #[serde(rename = "someValue")]
            some_value: u8,
        },
    }

    #[test]
    fn case_insensitive_nested() {
        let v = json!({
            "CNIVERSION": "1.0.0",
            "Inner": {"HOSTPORT": 80, "Name": "x"},
            "LIST": [{"hostport": 1}, {"HostPort": 2, "NAME": "b"}],
            "map": {"Key": {"HostPort": 3}},
            "MTU": null,
            "kind": {"beta": {"SOMEVALUE": 7}}
        });
        let o: Outer = from_value(v).unwrap();
        assert_eq!(o.cni_version, "1.0.0");
        assert_eq!(
            o.inner,
            Some(Inner {
                host_port: 80,
                name: "x".into()
            })
        );
        assert_eq!(
            o.list[1],
            Inner {
                host_port: 2,
                name: "b".into()
            }
        );
        assert_eq!(o.list[0].host_port, 1);
        // Map keys are data, not field names: kept verbatim.
        assert_eq!(o.map["Key"].host_port, 3);
        assert_eq!(o.mtu, 0);
        assert_eq!(o.kind, Some(Kind::Beta { some_value: 7 }));
    }

    #[test]
    fn exact_match_preferred_and_none() {
        let v = json!({"cniVersion": "a", "CNIVERSION": "b", "inner": null, "kind": "alpha"});
        let o: Outer = from_value(v).unwrap();
        assert_eq!(o.cni_version, "a");
        assert_eq!(o.inner, None);
        assert_eq!(o.kind, Some(Kind::Alpha));
        let e = from_slice::<Outer>(br#"{"cniVersion": 5}"#).unwrap_err();
        assert!(e.is_data());
        assert!(from_slice::<Outer>(b"{").unwrap_err().is_eof());
        let e = from_slice::<Inner>(br#"{"hostPort": 70000}"#).unwrap_err();
        assert!(e.is_data());
    }
}
