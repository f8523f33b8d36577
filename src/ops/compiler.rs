//! The host C++ compiler for CPU ops.
//!
//! The compiler is found the way Cargo build scripts find it — through the `cc` crate, which
//! honours `CXX` (and `CXX_<target>`, `TARGET_CXX`), `CXXFLAGS` (and its variants) and
//! compiler wrappers — then identified (`--version`) and probed once for OpenMP. Finding and
//! probing spawns the compiler a few times, so the result is memoized: in the process, and
//! on disk in the cache (`compilers/<fingerprint>.json`), keyed by a fingerprint of the
//! environment variables `cc` reads and the compiler executable's path, size and
//! modification time. A warm load therefore never runs the compiler.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::UNIX_EPOCH;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The oldest compilers that build the kernels (C++17, OpenMP 4 `simd`).
const MIN_GCC: (u32, u32) = (7, 0);
const MIN_CLANG: (u32, u32) = (6, 0);

/// The target the library was built for; the compiler is asked to build for it too.
const TARGET: &str = env!("DSRS_BUILD_TARGET");

/// A C++ compiler, identified and probed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Compiler {
    /// The executable (resolved on `PATH`, symlinks followed).
    pub path: PathBuf,
    /// How it was chosen: `CXX="..."` or `default (c++)`.
    pub origin: String,
    /// The arguments `cc` adds (target flags, then `CXXFLAGS`).
    pub args: Vec<String>,
    /// `gnu`, `clang` or `other`.
    pub family: String,
    /// The first line of `--version`.
    pub version_line: String,
    /// The parsed version, `[major, minor, patch]`, when it could be read.
    pub version: Option<[u32; 3]>,
    /// Whether `-fopenmp` compiles and links a program that includes `<omp.h>`.
    pub openmp: bool,
    /// Whether the user's `CXXFLAGS` choose the instruction set (`-march=`, `-mcpu=`); the
    /// JIT then does not add `-march=native`.
    #[serde(default)]
    pub user_isa: bool,
}

impl Compiler {
    /// `g++ 12.2.0` — family-ish name and version, for reports.
    pub fn display(&self) -> String {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string());
        match self.version {
            Some([a, b, c]) => format!("{name} {a}.{b}.{c} ({})", self.family),
            None => format!("{name} ({})", self.version_line),
        }
    }

    /// Why this compiler cannot build the kernels, if it cannot.
    pub fn too_old(&self) -> Option<String> {
        let [major, minor, _] = self.version?;
        let min = match self.family.as_str() {
            "gnu" => MIN_GCC,
            "clang" => MIN_CLANG,
            _ => return None,
        };
        ((major, minor) < min).then(|| {
            format!(
                "C++ compiler {} is too old: version {major}.{minor} < {}.{} (C++17 is needed)",
                self.path.display(),
                min.0,
                min.1
            )
        })
    }
}

/// The names `cc` looks a variable up under, most specific first: `CXX_<target>`,
/// `CXX_<target with underscores>`, `TARGET_CXX`, `CXX`.
fn cc_var_names(base: &str) -> [String; 4] {
    [
        format!("{base}_{TARGET}"),
        format!("{base}_{}", TARGET.replace('-', "_")),
        format!("TARGET_{base}"),
        base.to_string(),
    ]
}

/// The environment variables `cc` reads to choose the C++ compiler and its flags.
fn env_keys() -> Vec<String> {
    let mut keys: Vec<String> = cc_var_names("CXX").into_iter().collect();
    keys.extend(cc_var_names("CXXFLAGS"));
    keys.push("CRATE_CC_NO_DEFAULTS".into());
    keys
}

/// The compiler command the user asked for, and where the request came from.
fn requested() -> (String, String) {
    for key in cc_var_names("CXX") {
        if let Ok(v) = std::env::var(&key)
            && !v.trim().is_empty()
        {
            return (v.clone(), format!("{key}=\"{v}\""));
        }
    }
    ("c++".into(), "default (c++)".into())
}

/// Resolves a command name on `PATH` (or checks a path), following symlinks.
fn resolve(cmd: &str, origin: &str) -> Result<PathBuf> {
    let not_found = |why: String| {
        Error::unavailable(
            "C++ compiler",
            format!(
                "'{cmd}' (from {origin}) {why}; install a C++ compiler (g++ or clang++) or set CXX to one"
            ),
        )
    };
    let candidate = if cmd.contains('/') {
        PathBuf::from(cmd)
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|d| d.join(cmd))
            .find(|p| is_executable(p))
            .ok_or_else(|| not_found("is not on PATH".into()))?
    };
    if !candidate.exists() {
        return Err(not_found("does not exist".into()));
    }
    if !is_executable(&candidate) {
        return Err(not_found("is not an executable file".into()));
    }
    std::fs::canonicalize(&candidate).map_err(|e| Error::io(&candidate, e))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A fingerprint of everything that decides which compiler and flags `cc` would use.
fn fingerprint(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = super::Hasher::new("compiler");
    h.field("target", TARGET);
    for key in env_keys() {
        h.field(&key, &std::env::var(&key).unwrap_or_default());
    }
    h.field("path", &path.to_string_lossy());
    h.field("size", &meta.len().to_string());
    h.field("mtime", &mtime.to_string());
    Ok(h.finish())
}

static MEMO: OnceLock<Mutex<HashMap<String, Arc<Compiler>>>> = OnceLock::new();

/// Finds, identifies and probes the C++ compiler; memoized in the process and, when
/// `memo_dir` is given, on disk.
pub fn find(memo_dir: Option<&Path>) -> Result<Arc<Compiler>> {
    let (cmd, origin) = requested();
    let first = cmd.split_whitespace().next().unwrap_or("").to_string();
    let path = resolve(&first, &origin)?;
    let fp = fingerprint(&path)?;
    let memo = MEMO.get_or_init(Default::default);
    if let Some(c) = memo.lock().get(&fp) {
        return Ok(c.clone());
    }
    let file = memo_dir.map(|d| d.join(format!("{fp}.json")));
    if let Some(f) = &file
        && let Ok(text) = std::fs::read_to_string(f)
        && let Ok(c) = serde_json::from_str::<Compiler>(&text)
    {
        let c = Arc::new(c);
        memo.lock().insert(fp, c.clone());
        return Ok(c);
    }
    let c = Arc::new(probe(&path, &origin)?);
    if let (Some(dir), Some(f)) = (memo_dir, &file) {
        // Best effort: a failure here costs a probe next time, nothing else.
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .and_then(|_| {
                let tmp = dir.join(format!(".{fp}.{}.tmp", std::process::id()));
                std::fs::write(&tmp, serde_json::to_vec_pretty(&*c).unwrap_or_default())?;
                std::fs::rename(&tmp, f)
            });
    }
    memo.lock().insert(fp, c.clone());
    Ok(c)
}

/// Runs `cc` to get the compiler and its flags, then `--version` and the OpenMP probe.
fn probe(path: &Path, origin: &str) -> Result<Compiler> {
    let scratch = super::cache::scratch_dir("cc-probe")?;
    let result = probe_in(path, origin, scratch.path());
    drop(scratch);
    result
}

fn probe_in(path: &Path, origin: &str, scratch: &Path) -> Result<Compiler> {
    let tool = std::panic::catch_unwind(|| {
        cc::Build::new()
            .cpp(true)
            .target(TARGET)
            .host(TARGET)
            .opt_level(3)
            .debug(false)
            .cargo_metadata(false)
            .cargo_warnings(false)
            .cargo_output(false)
            .emit_rerun_if_env_changed(false)
            .out_dir(scratch)
            .try_get_compiler()
    })
    .map_err(|_| Error::Internal("the cc crate panicked while finding the C++ compiler".into()))?
    .map_err(|e| {
        Error::unavailable(
            "C++ compiler",
            format!("{origin}: the cc crate could not set it up: {e}"),
        )
    })?;
    let args: Vec<String> = tool
        .args()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let family = if tool.is_like_clang() {
        "clang"
    } else if tool.is_like_gnu() {
        "gnu"
    } else {
        "other"
    };
    let out = Command::new(path)
        .arg("--version")
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| {
            Error::unavailable(
                "C++ compiler",
                format!("{} (from {origin}) could not be run: {e}", path.display()),
            )
        })?;
    if !out.status.success() {
        return Err(Error::unavailable(
            "C++ compiler",
            format!(
                "`{} --version` (from {origin}) failed with {}: {}",
                path.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let version_line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let version = parse_version(&version_line);
    // OpenMP: compile and link a tiny shared library that uses the runtime.
    let probe_src = scratch.join("omp_probe.cpp");
    std::fs::write(
        &probe_src,
        "#include <omp.h>\nextern \"C\" int dsrs_omp_probe(void) { return omp_get_max_threads(); }\n",
    )
    .map_err(|e| Error::io(&probe_src, e))?;
    let openmp = Command::new(path)
        .args(&args)
        .args(["-fopenmp", "-shared", "-fPIC", "-o"])
        .arg(scratch.join("omp_probe.so"))
        .arg(&probe_src)
        .env("LC_ALL", "C")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let user_isa = cc_var_names("CXXFLAGS")
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .any(|v| {
            v.split_whitespace()
                .any(|f| f.starts_with("-march=") || f.starts_with("-mcpu="))
        });
    Ok(Compiler {
        user_isa,
        path: path.to_path_buf(),
        origin: origin.to_string(),
        args,
        family: family.into(),
        version_line,
        version,
        openmp,
    })
}

/// The last `N.N[.N]` token of a `--version` line.
fn parse_version(line: &str) -> Option<[u32; 3]> {
    line.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|tok| {
            let tok = tok.trim_end_matches(|c: char| !c.is_ascii_digit());
            let parts: Vec<&str> = tok.split('.').collect();
            if parts.len() < 2 || parts.len() > 3 {
                return None;
            }
            let mut v = [0u32; 3];
            for (i, p) in parts.iter().enumerate() {
                v[i] = p.parse().ok()?;
            }
            Some(v)
        })
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_common_banners() {
        assert_eq!(
            parse_version("c++ (Debian 12.2.0-14) 12.2.0"),
            Some([12, 2, 0])
        );
        assert_eq!(
            parse_version("Debian clang version 14.0.6"),
            Some([14, 0, 6])
        );
        assert_eq!(parse_version("g++ (GCC) 7.5"), Some([7, 5, 0]));
        assert_eq!(parse_version("mystery compiler"), None);
    }

    #[test]
    fn old_compilers_are_named_with_their_version() {
        let c = Compiler {
            path: "/usr/bin/g++-5".into(),
            origin: "CXX".into(),
            args: vec![],
            family: "gnu".into(),
            version_line: "g++ 5.4.0".into(),
            version: Some([5, 4, 0]),
            openmp: true,
            user_isa: false,
        };
        let why = c.too_old().unwrap();
        assert!(why.contains("g++-5") && why.contains("5.4"), "{why}");
    }
}
