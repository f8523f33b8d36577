//! The op registry (DeepSpeed's `ALL_OPS`): every built-in op, and the ops defined at run
//! time by hosts (from Rust with [`register`]/[`define`], from C and Python with a JSON
//! description, [`define_json`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use serde::Deserialize;

use super::spec::{COMMON_HEADERS, Define, OpKind, OpSpec, SourceFile};
use super::{OpBuilder, builders};
use crate::error::{Error, Result};

type Custom = RwLock<BTreeMap<String, Arc<dyn OpBuilder>>>;

fn custom() -> &'static Custom {
    static CUSTOM: OnceLock<Custom> = OnceLock::new();
    CUSTOM.get_or_init(Default::default)
}

/// A built-in op's spec, with its sources read from `DSRS_KERNEL_DIR` when that development
/// override is set (so kernel edits are picked up without rebuilding the library).
fn builtin(spec: &'static OpSpec) -> Arc<dyn OpBuilder> {
    match std::env::var_os("DSRS_KERNEL_DIR").filter(|d| !d.is_empty()) {
        None => Arc::new(spec.clone()),
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let reread = |files: &[SourceFile]| -> Vec<SourceFile> {
                files
                    .iter()
                    .map(|f| SourceFile {
                        path: f.path.clone(),
                        text: match std::fs::read_to_string(dir.join(f.path.as_ref())) {
                            Ok(t) => Cow::Owned(t),
                            Err(e) => {
                                crate::dsrs_warn!(
                                    "ops",
                                    "DSRS_KERNEL_DIR: cannot read {}: {e}; using the embedded copy",
                                    dir.join(f.path.as_ref()).display()
                                );
                                f.text.clone()
                            }
                        },
                    })
                    .collect()
            };
            let mut s = spec.clone();
            s.sources = Cow::Owned(reread(&spec.sources));
            s.headers = Cow::Owned(reread(&spec.headers));
            Arc::new(s)
        }
    }
}

/// Whether `name` is a built-in op.
pub fn is_builtin(name: &str) -> bool {
    builders::ALL.iter().any(|s| s.name == name)
}

/// The op named `name`.
pub fn get(name: &str) -> Result<Arc<dyn OpBuilder>> {
    if let Some(s) = builders::ALL.iter().find(|s| s.name == name) {
        return Ok(builtin(s));
    }
    if let Some(b) = custom().read().get(name) {
        return Ok(b.clone());
    }
    Err(Error::UnknownOp {
        name: name.to_string(),
        known: list().iter().map(|b| b.name().to_string()).collect(),
    })
}

/// Every op: the built-ins in their order, then the ops defined at run time by name.
pub fn list() -> Vec<Arc<dyn OpBuilder>> {
    let mut v: Vec<Arc<dyn OpBuilder>> = builders::ALL.iter().map(|s| builtin(s)).collect();
    v.extend(custom().read().values().cloned());
    v
}

/// Checks an op name: 1–64 of `[a-z0-9_]`, starting with a letter.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "op name {name:?} is invalid: use 1-64 lowercase letters, digits and '_', starting with a letter"
        )))
    }
}

/// Adds (or replaces) an op defined at run time. Built-in ops cannot be replaced.
pub fn register(builder: Arc<dyn OpBuilder>) -> Result<()> {
    let name = builder.name().to_string();
    check_name(&name)?;
    if is_builtin(&name) {
        return Err(Error::config(format!(
            "op '{name}' is built in and cannot be redefined; choose another name"
        )));
    }
    check_spec(builder.spec())?;
    custom().write().insert(name, builder);
    Ok(())
}

/// Adds (or replaces) an op from its spec.
pub fn define(spec: OpSpec) -> Result<()> {
    register(Arc::new(spec))
}

fn check_spec(spec: &OpSpec) -> Result<()> {
    let name = &spec.name;
    if spec.sources.is_empty() {
        return Err(Error::config(format!("op '{name}': 'sources' is empty")));
    }
    if spec.kind == OpKind::Cuda && spec.sources.len() != 1 {
        return Err(Error::config(format!(
            "op '{name}': a CUDA op has exactly one source (NVRTC compiles one translation unit), got {}",
            spec.sources.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for f in spec
        .sources
        .iter()
        .chain(spec.headers.iter())
        .chain(COMMON_HEADERS.iter())
    {
        check_rel_path(name, &f.path)?;
        if !seen.insert(f.path.as_ref()) {
            return Err(Error::config(format!(
                "op '{name}': file '{}' appears twice (or shadows a built-in header)",
                f.path
            )));
        }
    }
    for s in spec.symbols.iter() {
        if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::config(format!(
                "op '{name}': symbol {s:?} is not a C identifier"
            )));
        }
    }
    for d in spec.defines.iter() {
        if d.name.is_empty()
            || !d
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::config(format!(
                "op '{name}': define {:?} is not a C identifier",
                d.name
            )));
        }
    }
    Ok(())
}

fn check_rel_path(op: &str, p: &str) -> Result<()> {
    let path = Path::new(p);
    let bad = p.is_empty()
        || path.is_absolute()
        || path
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)));
    if bad {
        return Err(Error::config(format!(
            "op '{op}': source name {p:?} must be a relative path without '..' (it is written into the build directory)"
        )));
    }
    Ok(())
}

/// The JSON form of an op defined at run time.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpJson {
    name: String,
    #[serde(default = "default_kind")]
    kind: String,
    #[serde(default)]
    description: String,
    sources: Vec<FileJson>,
    #[serde(default)]
    headers: Vec<FileJson>,
    #[serde(default)]
    include_dirs: Vec<String>,
    #[serde(default)]
    defines: BTreeMap<String, String>,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    symbols: Vec<String>,
    #[serde(default)]
    min_compute_capability: Option<String>,
}

fn default_kind() -> String {
    "cpu".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJson {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    path: Option<String>,
}

impl FileJson {
    fn into_source(self, op: &str, what: &str, index: usize) -> Result<SourceFile> {
        match (self.text, self.path) {
            (Some(text), None) => {
                let name = self.name.ok_or_else(|| {
                    Error::config(format!(
                        "op '{op}': {what}[{index}] has 'text' but no 'name' (the file name to compile it as)"
                    ))
                })?;
                Ok(SourceFile {
                    path: Cow::Owned(name),
                    text: Cow::Owned(text),
                })
            }
            (None, Some(path)) => {
                let p = PathBuf::from(&path);
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    Error::config(format!(
                        "op '{op}': {what}[{index}]: cannot read '{path}': {e}"
                    ))
                })?;
                let name = match self.name {
                    Some(n) => n,
                    None => p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .ok_or_else(|| {
                            Error::config(format!(
                                "op '{op}': {what}[{index}]: '{path}' has no file name"
                            ))
                        })?,
                };
                Ok(SourceFile {
                    path: Cow::Owned(name),
                    text: Cow::Owned(text),
                })
            }
            _ => Err(Error::config(format!(
                "op '{op}': {what}[{index}] needs exactly one of 'text' (with 'name') or 'path'"
            ))),
        }
    }
}

/// Defines an op from JSON and returns its name:
///
/// ```json
/// { "name": "my_op", "kind": "cpu",
///   "sources": [ { "name": "my_op.cpp", "text": "..." }, { "path": "/abs/other.cpp" } ],
///   "headers": [ { "name": "my_op.h", "text": "..." } ],
///   "include_dirs": ["/opt/x/include"], "defines": { "N": "4" }, "flags": ["-ffast-math"],
///   "symbols": ["my_op_run"], "min_compute_capability": "8.0" }
/// ```
/// Only `name` and `sources` are required; `kind` defaults to `cpu`.
pub fn define_json(text: &str) -> Result<String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|source| Error::Json {
        what: "op definition".into(),
        source,
    })?;
    if !v.is_object() {
        return Err(Error::config("op definition must be a JSON object"));
    }
    let j: OpJson =
        serde_json::from_value(v).map_err(|e| Error::config(format!("op definition: {e}")))?;
    check_name(&j.name)?;
    let op = j.name.clone();
    let kind = match j.kind.as_str() {
        "cpu" => OpKind::Cpu,
        "cuda" => OpKind::Cuda,
        other => {
            return Err(Error::config(format!(
                "op '{op}': kind {other:?} is not one of \"cpu\", \"cuda\""
            )));
        }
    };
    let sources = j
        .sources
        .into_iter()
        .enumerate()
        .map(|(i, f)| f.into_source(&op, "sources", i))
        .collect::<Result<Vec<_>>>()?;
    let headers = j
        .headers
        .into_iter()
        .enumerate()
        .map(|(i, f)| f.into_source(&op, "headers", i))
        .collect::<Result<Vec<_>>>()?;
    for d in &j.include_dirs {
        if !Path::new(d).is_absolute() {
            return Err(Error::config(format!(
                "op '{op}': include_dirs entry {d:?} must be an absolute path"
            )));
        }
    }
    let min_cc = match &j.min_compute_capability {
        None => (0, 0),
        Some(s) => parse_cc(s).ok_or_else(|| {
            Error::config(format!(
                "op '{op}': min_compute_capability {s:?} is not of the form \"8.0\""
            ))
        })?,
    };
    let spec = OpSpec {
        name: Cow::Owned(op.clone()),
        kind,
        description: Cow::Owned(if j.description.is_empty() {
            "defined at run time".into()
        } else {
            j.description
        }),
        sources: Cow::Owned(sources),
        headers: Cow::Owned(headers),
        include_dirs: Cow::Owned(j.include_dirs.into_iter().map(Cow::Owned).collect()),
        defines: Cow::Owned(
            j.defines
                .into_iter()
                .map(|(k, v)| Define {
                    name: Cow::Owned(k),
                    value: Cow::Owned(v),
                })
                .collect(),
        ),
        flags: Cow::Owned(j.flags.into_iter().map(Cow::Owned).collect()),
        symbols: Cow::Owned(j.symbols.into_iter().map(Cow::Owned).collect()),
        min_compute_capability: min_cc,
    };
    define(spec)?;
    Ok(op)
}

fn parse_cc(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_listed_and_found_and_unknown_names_list_the_known() {
        let names: Vec<String> = list().iter().map(|b| b.name().to_string()).collect();
        assert!(names.contains(&"cpu_adam".to_string()), "{names:?}");
        assert_eq!(get("cpu_adam").unwrap().kind(), OpKind::Cpu);
        let e = get("no_such_op").err().unwrap().to_string();
        assert!(e.contains("no_such_op") && e.contains("cpu_adam"), "{e}");
    }

    #[test]
    fn bad_definitions_name_the_field() {
        let cases = [
            (
                r#"{"name":"Bad Name","sources":[{"name":"a.cpp","text":""}]}"#,
                "invalid",
            ),
            (
                r#"{"name":"cpu_adam","sources":[{"name":"a.cpp","text":""}]}"#,
                "built in",
            ),
            (r#"{"name":"x1","sources":[]}"#, "'sources' is empty"),
            (
                r#"{"name":"x2","sources":[{"text":"int x;"}]}"#,
                "no 'name'",
            ),
            (
                r#"{"name":"x3","sources":[{"name":"../a.cpp","text":""}]}"#,
                "relative path",
            ),
            (
                r#"{"name":"x4","kind":"tpu","sources":[{"name":"a.cpp","text":""}]}"#,
                "tpu",
            ),
            (
                r#"{"name":"x5","sources":[{"path":"/nonexistent/a.cpp"}]}"#,
                "/nonexistent/a.cpp",
            ),
            (
                r#"{"name":"x6","sources":[{"name":"a.cpp","text":""}],"symbols":["a b"]}"#,
                "C identifier",
            ),
            (
                r#"{"name":"x7","sources":[{"name":"a.cpp","text":""}],"bogus":1}"#,
                "bogus",
            ),
        ];
        for (json, want) in cases {
            let e = define_json(json).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
    }
}
