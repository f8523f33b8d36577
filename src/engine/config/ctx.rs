//! The parser's state: collected diagnostics and typed access to a JSON object, with every
//! error naming its path.

use serde_json::{Map, Value};

use super::{Diagnostic, join, suggest};

/// Where every finding goes.
#[derive(Default)]
pub(crate) struct Ctx {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl Ctx {
    pub fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Diagnostic {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Diagnostic {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// A JSON value as messages show it (`2.5`, `"x"`, `null`).
pub(crate) fn show(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "?".into())
}

/// Whether `v` is the `"auto"` placeholder.
pub(crate) fn is_auto(v: &Value) -> bool {
    v.as_str() == Some("auto")
}

/// A JSON number with an integral value (`3`, `-1`, `5e8`), else `None`.
pub(crate) fn integral(v: &Value) -> Option<i128> {
    if let Some(i) = v.as_i64() {
        return Some(i as i128);
    }
    if let Some(u) = v.as_u64() {
        return Some(u as i128);
    }
    let x = v.as_f64()?;
    (x.is_finite() && x.fract() == 0.0 && x.abs() < 1e36).then_some(x as i128)
}

/// Why `v` is not an integer, for the message.
fn int_problem(v: &Value, expected: &str) -> String {
    match v {
        Value::Number(n)
            if n.as_f64()
                .is_some_and(|x| x.is_finite() && x.fract() != 0.0) =>
        {
            format!(
                "expected {expected}, got {v} (integer fields reject fractional values, as pydantic does; round it)"
            )
        }
        _ => format!("expected {expected}, got {}", show(v)),
    }
}

/// An object being read, with its path (`""` for the document).
pub(crate) struct Obj<'a> {
    pub map: &'a Map<String, Value>,
    pub path: String,
}

impl<'a> Obj<'a> {
    pub fn new(map: &'a Map<String, Value>, path: &str) -> Self {
        Obj {
            map,
            path: path.to_string(),
        }
    }

    /// The path of `key` in this object.
    pub fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value of `key`, or `None` when absent or `"auto"` (reported once, elsewhere).
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !is_auto(v))
    }

    /// Whether `key` is present (any value, `"auto"` included).
    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn bool(&self, ctx: &mut Ctx, key: &str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                ctx.err(
                    self.at(key),
                    format!("expected true or false, got {}", show(v)),
                );
                default
            }
        }
    }

    /// A bool whose `null` means `None`.
    pub fn opt_bool(&self, ctx: &mut Ctx, key: &str) -> Option<bool> {
        match self.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(v) => {
                ctx.err(
                    self.at(key),
                    format!("expected true, false or null, got {}", show(v)),
                );
                None
            }
        }
    }

    /// An integer in `[min, max]` (integral floats such as `5e8` accepted).
    pub fn int(&self, ctx: &mut Ctx, key: &str, default: i128, min: i128, max: i128) -> i128 {
        match self.get(key) {
            None => default,
            Some(v) => match integral(v) {
                Some(n) if n >= min && n <= max => n,
                Some(_) => {
                    let expected = match (min, max) {
                        (0, m) if m >= u64::MAX as i128 => "a non-negative integer".to_string(),
                        (1, m) if m >= u64::MAX as i128 => "a positive integer".to_string(),
                        (lo, hi) if hi >= i64::MAX as i128 => format!("an integer >= {lo}"),
                        (lo, hi) => format!("an integer from {lo} to {hi}"),
                    };
                    ctx.err(
                        self.at(key),
                        format!("expected {expected}, got {}", show(v)),
                    );
                    default
                }
                None => {
                    ctx.err(self.at(key), int_problem(v, "an integer"));
                    default
                }
            },
        }
    }

    /// A non-negative integer.
    pub fn uint(&self, ctx: &mut Ctx, key: &str, default: u64) -> u64 {
        self.int(ctx, key, default as i128, 0, u64::MAX as i128) as u64
    }

    /// A finite number satisfying `ok` (described by `what` in the error).
    pub fn num(
        &self,
        ctx: &mut Ctx,
        key: &str,
        default: f64,
        what: &str,
        ok: impl Fn(f64) -> bool,
    ) -> f64 {
        match self.get(key) {
            None => default,
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && ok(x) => x,
                _ => {
                    ctx.err(self.at(key), format!("expected {what}, got {}", show(v)));
                    default
                }
            },
        }
    }

    /// A string (`null` → `None`).
    pub fn opt_str(&self, ctx: &mut Ctx, key: &str) -> Option<&'a str> {
        match self.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(v) => {
                ctx.err(self.at(key), format!("expected a string, got {}", show(v)));
                None
            }
        }
    }

    /// A string, `default` when absent.
    pub fn str(&self, ctx: &mut Ctx, key: &str, default: &'a str) -> &'a str {
        match self.get(key) {
            None => default,
            Some(Value::String(s)) => s,
            Some(v) => {
                ctx.err(self.at(key), format!("expected a string, got {}", show(v)));
                default
            }
        }
    }

    /// Unknown keys of a strict (pydantic, `extra="forbid"`) section: errors.
    pub fn forbid_extra(&self, ctx: &mut Ctx, known: &[&str]) {
        for k in self.map.keys() {
            if !known.contains(&k.as_str()) {
                ctx.err(
                    self.at(k),
                    format!(
                        "Extra inputs are not permitted ({k:?} is not a {} key{})",
                        self.path,
                        suggest::did_you_mean(k, known.iter().copied())
                    ),
                );
            }
        }
    }

    /// Unknown keys of a section DeepSpeed reads with `dict.get`: warnings.
    pub fn warn_extra(&self, ctx: &mut Ctx, known: &[&str]) {
        for k in self.map.keys() {
            if !known.contains(&k.as_str()) {
                ctx.warn(
                    self.at(k),
                    format!(
                        "unknown key, ignored as DeepSpeed ignores it{}",
                        suggest::did_you_mean(k, known.iter().copied())
                    ),
                );
            }
        }
    }
}

/// The object under `key` of `parent`: `None` when absent, `null` or `"auto"`; an error
/// (and `None`) when it is not an object.
pub(crate) fn section<'a>(ctx: &mut Ctx, parent: &Obj<'a>, key: &str) -> Option<Obj<'a>> {
    match parent.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(Obj::new(m, &parent.at(key))),
        Some(v) => {
            ctx.err(
                parent.at(key),
                format!("expected an object, got {}", show(v)),
            );
            None
        }
    }
}
