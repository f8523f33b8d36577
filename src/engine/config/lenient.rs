//! Lenient JSON: comments and trailing commas (what DeepSpeed's hjson reader accepts in
//! JSON-looking configs), and duplicate keys rejected (DeepSpeed's
//! `dict_raise_error_on_duplicate_keys`).
//!
//! A preprocessor blanks comments and trailing commas out with spaces (newlines kept, so
//! byte offsets, lines and columns stay those of the original text), then serde_json parses
//! the result into a [`Value`] through a visitor that refuses a key given twice.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Reads JSON with comments and trailing commas; see [`super::read_lenient_json`].
pub(crate) fn read(text: &str, what: &str) -> Result<Value> {
    // An unterminated comment is a syntax error like any other: Error::Json.
    let clean = strip(text).map_err(|(line, col, msg)| Error::Json {
        what: what.to_string(),
        source: <serde_json::Error as serde::de::Error>::custom(format!(
            "{msg} at line {line} column {col}"
        )),
    })?;
    let mut de = serde_json::Deserializer::from_str(&clean);
    let value = ValueSeed {
        path: String::new(),
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v))
    .map_err(|source| Error::Json {
        what: what.to_string(),
        source,
    })?;
    Ok(value)
}

/// Line and column (1-based, columns in bytes as serde_json counts them) of byte `pos`.
fn line_col(text: &[u8], pos: usize) -> (usize, usize) {
    let before = &text[..pos];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = pos
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, col)
}

/// Blanks comments (`//`, `#`, `/* */`) and trailing commas outside strings.
fn strip(text: &str) -> std::result::Result<String, (usize, usize, String)> {
    let src = text.as_bytes();
    let mut out = src.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for b in &mut out[from..to] {
            if *b != b'\n' && *b != b'\r' {
                *b = b' ';
            }
        }
    };
    // Pass 1: comments.
    let mut i = 0;
    while i < src.len() {
        match src[i] {
            b'"' => {
                i += 1;
                while i < src.len() && src[i] != b'"' {
                    if src[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1; // the closing quote (or past the end: serde_json reports it)
            }
            b'#' => {
                let end = src[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(src.len(), |p| i + p);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if src.get(i + 1) == Some(&b'/') => {
                let end = src[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(src.len(), |p| i + p);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if src.get(i + 1) == Some(&b'*') => {
                let Some(p) = src[i + 2..].windows(2).position(|w| w == b"*/") else {
                    let (l, c) = line_col(src, i);
                    return Err((l, c, "unterminated /* comment".to_string()));
                };
                let end = i + 2 + p + 2;
                blank(&mut out, i, end);
                i = end;
            }
            _ => i += 1,
        }
    }
    // Pass 2: trailing commas (comments are blanks now).
    let mut i = 0;
    while i < out.len() {
        match out[i] {
            b'"' => {
                i += 1;
                while i < out.len() && out[i] != b'"' {
                    if out[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b',' => {
                let next = out[i + 1..].iter().find(|b| !b.is_ascii_whitespace());
                if matches!(next, Some(b'}') | Some(b']')) {
                    out[i] = b' ';
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    // Only ASCII bytes outside strings were replaced by spaces, and whole comments (every
    // byte of a multi-byte character in them) were: the text is still UTF-8.
    String::from_utf8(out).map_err(|_| (1, 1, "not UTF-8".to_string()))
}

/// Builds a [`Value`], rejecting duplicate keys (naming the key and its object's path).
struct ValueSeed {
    path: String,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(ValueSeed {
            path: format!("{}[{}]", self.path, items.len()),
        })? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let mut out = Map::new();
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                let place = if self.path.is_empty() {
                    "the top level".to_string()
                } else {
                    self.path.clone()
                };
                return Err(de::Error::custom(format!(
                    "duplicate key {key:?} in {place} (DeepSpeed rejects duplicate keys)"
                )));
            }
            let path = super::join(&self.path, &key);
            let v = map.next_value_seed(ValueSeed { path })?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_trailing_commas() {
        let v = read(
            "{\n  // a comment\n  \"a\": 1, # another\n  /* block\n  comment */ \"b\": [1, 2,],\n  \"c\": \"x // y # z /* w */\",\n}\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": 1, "b": [1, 2], "c": "x // y # z /* w */"})
        );
    }

    #[test]
    fn positions_are_kept() {
        let e = read("{\n // c\n \"a\": 1,\n \"b\" 2\n}", "f.json")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "invalid JSON in f.json: expected `:` at line 4 column 6");
        let err = read("{\"a\": 1 /* open", "f.json").unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::InvalidJson);
        let e = err.to_string();
        assert_eq!(
            e,
            "invalid JSON in f.json: unterminated /* comment at line 1 column 9"
        );
    }

    #[test]
    fn duplicates_are_errors() {
        let e = read("{\"o\": {\"p\": [{\"lr\": 1, \"lr\": 2}]}}", "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid JSON in f: duplicate key \"lr\" in o.p[0] (DeepSpeed rejects duplicate keys) at line 1"),
            "{e}"
        );
    }
}
