//! Ops: the op-builder registry and its JIT — compile, cache, lock, verify and load kernels.
//!
//! An op is a set of kernel sources plus what it takes to build them ([`OpSpec`]): its
//! sources (embedded in the library, so an installed `.so` can JIT anywhere), include
//! directories, defines and flags, the symbols the built library must export, and the
//! requirements checked by [`OpBuilder::is_compatible`]. The [registry] holds every built-in
//! op (DeepSpeed's `ALL_OPS`) and the ops hosts define at run time.
//!
//! [`load`] returns a [`LoadedOp`], in this order of preference:
//! 1. an op compiled into the library ahead of time (`DSRS_BUILD_OPS=1` at `cargo build`),
//!    when the running CPU can execute it;
//! 2. the op's build in the [cache], after its SHA-256 is verified against the
//!    manifest (a tampered or truncated artifact is rebuilt, with a warning, never loaded);
//! 3. a fresh build: C++ by the system compiler ([`compiler`], found like `cc` finds it),
//!    CUDA by NVRTC ([`nvrtc`]) — under a per-key `flock`, so processes racing on a cold
//!    cache compile once and all load, and a builder that dies releases the lock.
//!
//! Loaded libraries stay loaded for the life of the process (like Python extension modules):
//! symbol addresses never dangle, and unloading OpenMP runtimes is not safe anyway.
//!
//! The C ABI over this module is `dsrs_op_*` (`src/ffi/ops.rs`); the CLI is `dsrs build`
//! and `dsrs cache`. The design is in `docs/ops.md`.

pub mod builders;
pub mod cache;
pub mod compiler;
mod jit;
pub(crate) mod kernels;
pub mod nvrtc;
mod nvrtc_lib;
pub mod optim;
mod prebuilt;
mod progress;
pub mod quantizer;
pub mod registry;
pub mod spec;

use std::collections::HashMap;
use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use cache::{Cache, Manifest};
pub use registry::{define, define_json, get, list, register};
pub use spec::{Define, OpKind, OpSpec, SourceFile};

use crate::accelerator::cpu::cpu_info;
use crate::error::{Error, Result};

/// The op ABI version: every JIT-built op exports `dsrs_op_abi_version` with this value,
/// and the loader refuses a library that carries another (it was built by an incompatible
/// deepspeed_rs). Bump it when `kernels/include/dsrs_op.h` or a kernel's calling
/// convention changes.
pub const OP_ABI_VERSION: u32 = 1;

/// An op builder (DeepSpeed's `OpBuilder`): what to compile, and whether it can be compiled
/// and run here. Built-in ops and ops defined at run time are [`OpSpec`]s, which implement
/// this trait from their data; a Rust host can implement it for its own checks and add the
/// builder with [`register`].
pub trait OpBuilder: Send + Sync {
    /// The op's sources, flags and symbols.
    fn spec(&self) -> &OpSpec;

    /// The op's name.
    fn name(&self) -> &str {
        &self.spec().name
    }

    /// CPU or CUDA.
    fn kind(&self) -> OpKind {
        self.spec().kind
    }

    /// Every reason the op cannot be built and run on this machine (empty: compatible).
    /// The default checks the toolchain for the op's kind: a working C++ compiler that is
    /// recent enough for CPU ops; NVRTC (or `nvcc` when asked), and a GPU of at least
    /// [`OpSpec::min_compute_capability`] when one is present, for CUDA ops.
    fn is_compatible(&self, env: &BuildEnv) -> Vec<String> {
        default_compatibility(self.spec(), env)
    }
}

impl OpBuilder for OpSpec {
    fn spec(&self) -> &OpSpec {
        self
    }
}

fn default_compatibility(spec: &OpSpec, env: &BuildEnv) -> Vec<String> {
    let mut reasons = Vec::new();
    match spec.kind {
        OpKind::Cpu => match env.compiler() {
            Ok(c) => {
                if let Some(why) = c.too_old() {
                    reasons.push(why);
                }
            }
            Err(e) => reasons.push(e),
        },
        OpKind::Cuda => {
            if env.options.nvcc {
                if let Err(e) = nvrtc::find_nvcc() {
                    reasons.push(e.to_string());
                }
            } else if let Err(e) = nvrtc::info() {
                reasons.push(e.to_string());
            }
            if let Some(arch) = &env.options.cuda_arch {
                match nvrtc::parse_arch(arch) {
                    Ok((cc, _)) if cc < spec.min_compute_capability => reasons.push(format!(
                        "target {arch} is below the op's minimum compute capability {}.{}",
                        spec.min_compute_capability.0, spec.min_compute_capability.1
                    )),
                    Ok(_) => {}
                    Err(e) => reasons.push(e.to_string()),
                }
            } else {
                match nvrtc::device_compute_capability() {
                    Some(cc) if cc < spec.min_compute_capability => reasons.push(format!(
                        "the GPU's compute capability {}.{} is below the op's minimum {}.{}",
                        cc.0, cc.1, spec.min_compute_capability.0, spec.min_compute_capability.1
                    )),
                    Some(_) => {}
                    None => reasons.push(
                        "no CUDA device to build for; set DSRS_CUDA_ARCH=sm_XY (or the cuda_arch option) to build without one".into(),
                    ),
                }
            }
        }
    }
    reasons
}

/// How to build and load an op. The defaults come from the environment: `DSRS_JIT_PORTABLE`,
/// `DSRS_JIT_DEBUG`, `DSRS_CUDA_ARCH`, `DSRS_USE_NVCC`, `DSRS_PREBUILT`,
/// `DSRS_BUILD_LOCK_TIMEOUT` (seconds) and `DSRS_CACHE_DIR`. As JSON (the C ABI's
/// `options_json`) every field is optional and unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuildOptions {
    /// Build for the architecture's baseline instead of `-march=native` (a cache shared by
    /// different CPUs, or a binary to copy elsewhere). The SIMD level is then `scalar`.
    pub portable: bool,
    /// Compile with debug information (`-g`), still optimized.
    pub debug: bool,
    /// CPU ops: build for this SIMD level instead of the machine's widest (`"avx2"`,
    /// `"scalar"`, ...; it must be one this CPU runs), e.g. to test each code path on one
    /// machine. `DSRS_JIT_SIMD` sets the default. Ignored when `portable` (always scalar).
    pub simd: Option<String>,
    /// Rebuild even if the cache has the op.
    pub force_rebuild: bool,
    /// Use an op compiled into the library (`DSRS_BUILD_OPS=1`) when it is compatible.
    pub prebuilt: bool,
    /// CUDA ops: the target, `sm_XY` (CUBIN) or `compute_XY` (PTX); default: the current
    /// GPU's `sm_XY`.
    pub cuda_arch: Option<String>,
    /// CUDA ops: compile with `nvcc` (from `CUDA_HOME`/`PATH`) instead of NVRTC.
    pub nvcc: bool,
    /// How long to wait for another process building the same op, in seconds.
    pub lock_timeout_s: f64,
    /// The cache directory (default: [`cache::default_root`]).
    pub cache_dir: Option<PathBuf>,
}

fn env_flag(key: &str) -> Option<bool> {
    std::env::var(key).ok().map(|v| {
        let v = v.trim().to_ascii_lowercase();
        !(v.is_empty() || v == "0" || v == "false" || v == "no" || v == "off")
    })
}

impl Default for BuildOptions {
    fn default() -> BuildOptions {
        BuildOptions {
            portable: env_flag("DSRS_JIT_PORTABLE").unwrap_or(false),
            debug: env_flag("DSRS_JIT_DEBUG").unwrap_or(false),
            simd: std::env::var("DSRS_JIT_SIMD")
                .ok()
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty() && s != "native"),
            force_rebuild: false,
            prebuilt: env_flag("DSRS_PREBUILT").unwrap_or(true),
            cuda_arch: std::env::var("DSRS_CUDA_ARCH")
                .ok()
                .filter(|s| !s.trim().is_empty()),
            nvcc: env_flag("DSRS_USE_NVCC").unwrap_or(false),
            lock_timeout_s: std::env::var("DSRS_BUILD_LOCK_TIMEOUT")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(600.0),
            cache_dir: None,
        }
    }
}

impl BuildOptions {
    /// Options from a JSON object (`None` or `"{}"`: the defaults).
    pub fn from_json(text: Option<&str>) -> Result<BuildOptions> {
        let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
            return Ok(BuildOptions::default());
        };
        let v: Value = serde_json::from_str(text).map_err(|source| Error::Json {
            what: "op build options".into(),
            source,
        })?;
        let mut merged = serde_json::to_value(BuildOptions::default())
            .map_err(|e| Error::Internal(e.to_string()))?;
        let Value::Object(given) = v else {
            return Err(Error::config("op build options must be a JSON object"));
        };
        for (k, val) in given {
            if merged.get(&k).is_none() {
                return Err(Error::config(format!(
                    "op build options: unknown field '{k}'; known fields: portable, debug, simd, force_rebuild, prebuilt, cuda_arch, nvcc, lock_timeout_s, cache_dir"
                )));
            }
            let mut one = merged.clone();
            one[&k] = val.clone();
            if let Err(e) = serde_json::from_value::<BuildOptions>(one) {
                return Err(Error::config(format!("op build options: field '{k}': {e}")));
            }
            merged[k] = val;
        }
        let o: BuildOptions = serde_json::from_value(merged)
            .map_err(|e| Error::config(format!("op build options: {e}")))?;
        if !(o.lock_timeout_s.is_finite() && o.lock_timeout_s >= 0.0) {
            return Err(Error::config(format!(
                "op build options: lock_timeout_s must be a non-negative number of seconds, got {}",
                o.lock_timeout_s
            )));
        }
        if let Some(d) = &o.cache_dir
            && d.is_relative()
        {
            return Err(Error::config(format!(
                "op build options: cache_dir \"{}\" must be an absolute path",
                d.display()
            )));
        }
        if let Some(a) = &o.cuda_arch {
            nvrtc::parse_arch(a)?;
        }
        if let Some(l) = &o.simd {
            check_simd_level(l)?;
        }
        Ok(o)
    }

    /// The cache these options use.
    pub fn cache(&self) -> Result<Cache> {
        match &self.cache_dir {
            Some(d) => Cache::open(d),
            None => Cache::open_default(),
        }
    }

    fn lock_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.lock_timeout_s)
    }
}

/// Checks a forced SIMD level: known, and one this CPU can run.
pub fn check_simd_level(level: &str) -> Result<()> {
    let rank = |l: &str| match l {
        "scalar" => Some(0),
        "neon" | "avx2" => Some(1),
        "avx512" => Some(2),
        _ => None,
    };
    let here = cpu_info().simd.name();
    let Some(r) = rank(level) else {
        return Err(Error::config(format!(
            "op build options: simd \"{level}\" is not a SIMD level; use avx512, avx2, neon or scalar"
        )));
    };
    let same_family = level == "scalar"
        || (level == "neon") == (here == "neon")
            && rank(here).is_some_and(|h| h >= r)
            && here != "scalar";
    if !same_family {
        return Err(Error::config(format!(
            "op build options: simd \"{level}\" cannot run on this CPU, whose widest level is {here}"
        )));
    }
    Ok(())
}

/// The build environment, probed lazily and memoized per value: the C++ compiler, NVRTC.
pub struct BuildEnv {
    /// The options in force.
    pub options: BuildOptions,
    cache: std::result::Result<Cache, String>,
    compiler: OnceLock<std::result::Result<Arc<compiler::Compiler>, String>>,
}

impl BuildEnv {
    /// A build environment for `options`.
    pub fn new(options: BuildOptions) -> BuildEnv {
        let cache = options.cache().map_err(|e| e.to_string());
        BuildEnv {
            options,
            cache,
            compiler: OnceLock::new(),
        }
    }

    /// A build environment for looking only (reports): a cache that does not exist yet is
    /// not created, and nothing is memoized on disk.
    pub fn inspect(options: BuildOptions) -> BuildEnv {
        let root = match &options.cache_dir {
            Some(d) => Ok(d.clone()),
            None => cache::default_root(),
        };
        let cache = match root.and_then(|r| Cache::open_existing(&r).map(|c| (r, c))) {
            Ok((_, Some(c))) => Ok(c),
            Ok((r, None)) => Err(format!(
                "{} does not exist yet (it is created by the first build)",
                r.display()
            )),
            Err(e) => Err(e.to_string()),
        };
        BuildEnv {
            options,
            cache,
            compiler: OnceLock::new(),
        }
    }

    /// The cache, or why it cannot be used.
    pub fn cache(&self) -> Result<&Cache> {
        self.cache
            .as_ref()
            .map_err(|e| Error::UnsafeCache(e.clone()))
    }

    /// The C++ compiler, or why there is none.
    pub fn compiler(&self) -> std::result::Result<Arc<compiler::Compiler>, String> {
        self.compiler
            .get_or_init(|| {
                let memo = self.cache.as_ref().ok().map(|c| c.compilers_dir());
                compiler::find(memo.as_deref()).map_err(|e| e.to_string())
            })
            .clone()
    }

    /// The target of CPU builds: `native:<simd>` or `portable:scalar`.
    pub fn cpu_target(&self) -> String {
        if self.options.portable {
            "portable:scalar".into()
        } else {
            let simd = self
                .options
                .simd
                .as_deref()
                .unwrap_or(cpu_info().simd.name());
            format!("native:{simd}")
        }
    }
}

/// Where a [`LoadedOp`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Compiled into the library ahead of time (`DSRS_BUILD_OPS=1`).
    Prebuilt,
    /// Found in the cache, verified.
    Cached,
    /// Built by this call.
    Built,
}

impl Origin {
    /// `prebuilt`, `cached` or `built`.
    pub fn name(self) -> &'static str {
        match self {
            Origin::Prebuilt => "prebuilt",
            Origin::Cached => "cached",
            Origin::Built => "built",
        }
    }
}

enum Code {
    /// A shared library, kept loaded for the life of the process.
    Library(&'static libloading::Library),
    /// Functions compiled into deepspeed_rs.
    Prebuilt(&'static prebuilt::PrebuiltOp),
    /// A CUDA image (CUBIN or PTX) for one target.
    Cuda {
        image: Vec<u8>,
        modules: Mutex<HashMap<usize, Arc<cudarc::driver::CudaModule>>>,
    },
}

/// A built (or prebuilt) op, ready to use. Symbols stay valid for the life of the process.
pub struct LoadedOp {
    name: String,
    kind: OpKind,
    key: String,
    origin: Origin,
    target: String,
    dir: Option<PathBuf>,
    manifest: Option<Manifest>,
    declared: Vec<String>,
    load_ms: f64,
    code: Code,
}

impl std::fmt::Debug for LoadedOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedOp")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("origin", &self.origin)
            .field("target", &self.target)
            .finish()
    }
}

impl LoadedOp {
    /// The op's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// CPU or CUDA.
    pub fn kind(&self) -> OpKind {
        self.kind
    }

    /// The cache key (empty for prebuilt ops).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Where it came from.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The build target (`native:avx512`, `sm_90`, ...).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The cache directory holding the artifact (none for prebuilt ops).
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
    }

    /// The CUDA image (CUBIN or PTX bytes) of a CUDA op.
    pub fn cuda_image(&self) -> Option<&[u8]> {
        match &self.code {
            Code::Cuda { image, .. } => Some(image),
            _ => None,
        }
    }

    /// The address of an exported symbol of a CPU op. For a CUDA op, the kernel's
    /// `CUfunction` in the primary context of CUDA device `device` (the module is loaded
    /// there on first use).
    pub fn symbol(&self, symbol: &str, device: usize) -> Result<*mut c_void> {
        let missing = || Error::SymbolNotFound {
            op: self.name.clone(),
            symbol: symbol.to_string(),
            hint: if self.declared.is_empty() {
                String::new()
            } else {
                format!(" (it declares: {})", self.declared.join(", "))
            },
        };
        if symbol.is_empty() || symbol.contains('\0') {
            return Err(Error::invalid(format!(
                "symbol name {symbol:?} is empty or contains NUL"
            )));
        }
        match &self.code {
            Code::Library(lib) => {
                // SAFETY: we only read the symbol's address; its type is the caller's business.
                let sym = unsafe { lib.get::<*mut c_void>(symbol.as_bytes()) };
                match sym {
                    Ok(s) => {
                        let p = *s;
                        if p.is_null() { Err(missing()) } else { Ok(p) }
                    }
                    Err(_) => Err(missing()),
                }
            }
            Code::Prebuilt(p) => p
                .symbols
                .iter()
                .find(|(n, _)| *n == symbol)
                .map(|(_, f)| *f as *mut c_void)
                .ok_or_else(missing),
            Code::Cuda { image, modules } => {
                nvrtc::kernel(&self.name, image, modules, device, symbol)
            }
        }
    }

    /// A JSON description: name, kind, origin, key, target, directory, manifest, load time.
    pub fn describe(&self) -> Value {
        json!({
            "name": self.name,
            "kind": self.kind.name(),
            "origin": self.origin.name(),
            "key": self.key,
            "target": self.target,
            "dir": self.dir,
            "manifest": self.manifest,
            "symbols": self.declared,
            "load_ms": self.load_ms,
        })
    }
}

/// Length-prefixed SHA-256 over named fields: cache keys and fingerprints.
pub(crate) struct Hasher(Sha256);

impl Hasher {
    pub(crate) fn new(domain: &str) -> Hasher {
        let mut h = Hasher(Sha256::new());
        h.field("domain", domain);
        h
    }

    pub(crate) fn field(&mut self, name: &str, value: &str) {
        for part in [name.as_bytes(), value.as_bytes()] {
            self.0.update((part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
    }

    /// 32 hex digits (128 bits).
    pub(crate) fn finish(self) -> String {
        cache::hex(&self.0.finalize()[..16])
    }
}

type LoadedMap = Mutex<HashMap<(String, String), Arc<LoadedOp>>>;

fn loaded() -> &'static LoadedMap {
    static LOADED: OnceLock<LoadedMap> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

/// Loads op `name`: prebuilt, cached or freshly built (see the module docs).
pub fn load(name: &str, options: &BuildOptions) -> Result<Arc<LoadedOp>> {
    let builder = registry::get(name)?;
    let env = BuildEnv::new(options.clone());
    if options.prebuilt
        && !options.force_rebuild
        && (options.simd.is_none() || options.portable)
        && builder.kind() == OpKind::Cpu
        && let Some(p) = prebuilt::find(builder.spec())
    {
        let key = (name.to_string(), format!("prebuilt:{}", p.target));
        let mut map = loaded().lock();
        let op = map
            .entry(key)
            .or_insert_with(|| {
                Arc::new(LoadedOp {
                    name: name.to_string(),
                    kind: OpKind::Cpu,
                    key: String::new(),
                    origin: Origin::Prebuilt,
                    target: p.target.to_string(),
                    dir: None,
                    manifest: None,
                    declared: builder
                        .spec()
                        .symbols
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                    load_ms: 0.0,
                    code: Code::Prebuilt(p),
                })
            })
            .clone();
        return Ok(op);
    }
    let reasons = builder.is_compatible(&env);
    if !reasons.is_empty() {
        return Err(Error::Incompatible {
            op: name.to_string(),
            reasons,
        });
    }
    let cache = env.cache()?.clone();
    match builder.kind() {
        OpKind::Cpu => jit::load_cpu(builder.as_ref(), &env, &cache),
        OpKind::Cuda => nvrtc::load_cuda(builder.as_ref(), &env, &cache),
    }
}

/// The state of one op for `dsrs report`: compatible (and why not), prebuilt, cached.
#[derive(Debug, Clone, Serialize)]
pub struct OpStatus {
    /// The op's name.
    pub name: String,
    /// `cpu` or `cuda`.
    pub kind: &'static str,
    /// Built in, or defined at run time.
    pub builtin: bool,
    /// One line.
    pub description: String,
    /// Compiled into this library and usable on this CPU.
    pub prebuilt: bool,
    /// Every reason it cannot be built here (empty: compatible).
    pub incompatible: Vec<String>,
    /// The cache holds a build for the current compiler and target.
    pub cached: bool,
    /// That build's key, when known.
    pub key: Option<String>,
}

/// The status of every registered op.
pub fn status_all(options: &BuildOptions) -> Vec<OpStatus> {
    let env = BuildEnv::inspect(options.clone());
    registry::list()
        .into_iter()
        .map(|b| {
            let spec = b.spec();
            let incompatible = b.is_compatible(&env);
            let key = match spec.kind {
                OpKind::Cpu => env.compiler().ok().map(|c| jit::cache_key(spec, &env, &c)),
                OpKind::Cuda => nvrtc::cache_key_for_current(spec, &env).ok(),
            };
            let cached = match (&key, env.cache()) {
                (Some(k), Ok(c)) => c.key_dir(&spec.name, k).join(cache::MANIFEST).exists(),
                _ => false,
            };
            OpStatus {
                name: spec.name.to_string(),
                kind: spec.kind.name(),
                builtin: registry::is_builtin(&spec.name),
                description: spec.description.to_string(),
                prebuilt: spec.kind == OpKind::Cpu && prebuilt::find(spec).is_some(),
                incompatible,
                cached,
                key,
            }
        })
        .collect()
}

/// The build environment for `dsrs report`: compiler, NVRTC, CUDA driver, cache, SIMD.
pub fn environment(options: &BuildOptions) -> Value {
    let env = BuildEnv::inspect(options.clone());
    let compiler = match env.compiler() {
        Ok(c) => json!({
            "path": c.path,
            "origin": c.origin,
            "family": c.family,
            "version": c.version_line,
            "openmp": c.openmp,
            "too_old": c.too_old(),
        }),
        Err(e) => json!({ "error": e }),
    };
    let nvrtc = match nvrtc::info() {
        Ok(i) => {
            json!({ "version": format!("{}.{}", i.version.0, i.version.1), "library": i.library, "archs": i.archs })
        }
        Err(e) => json!({ "error": e.to_string() }),
    };
    let root = match &options.cache_dir {
        Some(d) => Ok(d.clone()),
        None => cache::default_root(),
    };
    let cache = match root {
        Err(e) => json!({ "dir": null, "ok": false, "error": e.to_string() }),
        Ok(r) => match Cache::open_existing(&r) {
            Ok(Some(_)) => json!({ "dir": r, "ok": true, "exists": true }),
            Ok(None) => json!({ "dir": r, "ok": true, "exists": false }),
            Err(e) => json!({ "dir": r, "ok": false, "error": e.to_string() }),
        },
    };
    let cuda = crate::accelerator::cuda::probe();
    json!({
        "compiler": compiler,
        "nvrtc": nvrtc,
        "cuda_driver": cuda.driver_version_string(),
        "cache": cache,
        "simd": cpu_info().simd.name(),
        "cpu_target": env.cpu_target(),
        "op_abi_version": OP_ABI_VERSION,
        "prebuilt_ops": prebuilt::names(),
    })
}
