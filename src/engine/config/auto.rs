//! `"auto"` placeholders: finding them and filling them in.

use serde_json::Value;

use crate::error::{Error, Result};

/// Values that are `"auto"` in DeepSpeed's own schema, not a placeholder for the host
/// (`pipeline.stages` defaults to `"auto"`; `replace_method` is an inference option).
fn is_native_auto(path: &str) -> bool {
    path == "pipeline.stages" || path == "replace_method" || path.ends_with(".replace_method")
}

pub(crate) fn collect(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s == "auto" && !is_native_auto(path) => out.push(path.to_string()),
        Value::Object(m) => {
            for (k, c) in m {
                collect(c, &super::join(path, k), out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                collect(c, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// One step of a path: a key or an array index.
#[derive(Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

fn parse_path(path: &str) -> Result<Vec<Step>> {
    let bad = || {
        Error::invalid(format!(
            "config path {path:?}: expected keys separated by '.', with [i] for array elements (optimizer.params.betas[0])"
        ))
    };
    let mut steps = Vec::new();
    if path.is_empty() {
        return Err(bad());
    }
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if key.is_empty() {
            return Err(bad());
        }
        steps.push(Step::Key(key.to_string()));
        while !rest.is_empty() {
            let close = rest.find(']').ok_or_else(bad)?;
            if !rest.starts_with('[') {
                return Err(bad());
            }
            let i: usize = rest[1..close].parse().map_err(|_| bad())?;
            steps.push(Step::Index(i));
            rest = &rest[close + 1..];
        }
    }
    Ok(steps)
}

pub(crate) fn fill(doc: &mut Value, path: &str, value: Value) -> Result<()> {
    if value.as_str() == Some("auto") {
        return Err(Error::invalid(format!(
            "{path}: the value to fill in must not itself be \"auto\""
        )));
    }
    let steps = parse_path(path)?;
    let mut cur = doc;
    let mut at = String::new();
    for step in steps {
        cur = match step {
            Step::Key(k) => {
                at = super::join(&at, &k);
                cur.as_object_mut()
                    .and_then(|m| m.get_mut(&k))
                    .ok_or_else(|| {
                        Error::config(format!(
                            "{path}: no such key in the config ({at} is missing)"
                        ))
                    })?
            }
            Step::Index(i) => {
                at = format!("{at}[{i}]");
                cur.as_array_mut()
                    .and_then(|a| a.get_mut(i))
                    .ok_or_else(|| {
                        Error::config(format!(
                            "{path}: no such element in the config ({at} is missing)"
                        ))
                    })?
            }
        };
    }
    if cur.as_str() != Some("auto") {
        return Err(Error::config(format!(
            "{path}: holds {cur}, not \"auto\"; only \"auto\" values are filled in"
        )));
    }
    *cur = value;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("a.b[1][2].c").unwrap(),
            vec![
                Step::Key("a".into()),
                Step::Key("b".into()),
                Step::Index(1),
                Step::Index(2),
                Step::Key("c".into())
            ]
        );
        for bad in ["", "a..b", "a[x]", "a[1", "[1]", "a[1]b"] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fill_and_collect() {
        let mut doc = json!({"o": {"p": {"betas": ["auto", 0.9]}}, "pipeline": {"stages": "auto"}});
        let mut found = Vec::new();
        collect(&doc, "", &mut found);
        assert_eq!(found, ["o.p.betas[0]"]);
        fill(&mut doc, "o.p.betas[0]", json!(0.8)).unwrap();
        assert_eq!(doc["o"]["p"]["betas"][0], json!(0.8));
        let e = fill(&mut doc, "o.p.betas[0]", json!(0.8)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "o.p.betas[0]: holds 0.8, not \"auto\"; only \"auto\" values are filled in"
        );
        let e = fill(&mut doc, "o.q", json!(1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "o.q: no such key in the config (o.q is missing)"
        );
    }
}
