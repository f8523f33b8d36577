//! The CUDA JIT: NVRTC (loaded at run time) compiles an op's `.cu` source to CUBIN
//! (`sm_XY`) or PTX (`compute_XY`) — no nvcc, no toolkit, no ninja. `nvcc` is used instead
//! when asked (`DSRS_USE_NVCC=1`, or the `nvcc` build option). Modules are loaded into a
//! device's context through cudarc's driver API.
//!
//! NVRTC is loaded by us (`nvrtc_lib`), not by cudarc, whose loader only knows the library
//! names of the CUDA version it was built for. `DSRS_NVRTC_LIB=/abs/path/libnvrtc.so.*`
//! names the file — for example the `nvidia-cuda-nvrtc-cu12` wheel's, or a CUDA 13
//! toolkit's `libnvrtc.so.13`; otherwise `$CUDA_HOME/lib64` and `/usr/local/cuda/lib64` are
//! searched for `libnvrtc.so`, `.so.13`, `.so.12`, `.so.11`, then those names on the loader
//! path. A missing NVRTC is an error that lists what was tried, never a panic.
//!
//! Kernels compile with one include path, the work directory's `include/`, where the op's
//! `spec.headers` are written (e.g. `dsrs_mt_apply.cuh`, shared by the `fused_*` optimizer
//! ops). Built-in kernels and their headers include no CUDA or system header (they carry
//! their own fp16/bf16 conversions), so only `libnvrtc` is needed.

use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::cache::{self, Cache, Manifest};
use super::jit::{hash_spec, obtain, run_build, write_sources};
use super::nvrtc_lib;
use super::progress::Progress;
use super::spec::OpSpec;
use super::{BuildEnv, Code, Hasher, LoadedOp, OP_ABI_VERSION, OpBuilder};
use crate::error::{Error, Result};

/// What NVRTC is, once found.
#[derive(Debug, Clone)]
pub struct NvrtcInfo {
    /// `(major, minor)` from `nvrtcVersion`.
    pub version: (i32, i32),
    /// The library loaded: a path, or the name the loader resolved on its path.
    pub library: Option<PathBuf>,
    /// The real architectures it can target (`nvrtcGetSupportedArchs`), e.g. `[75, 80, 90]`.
    pub archs: Vec<i32>,
}

/// What an architecture string asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchOutput {
    /// `sm_XY[a|f]`: a CUBIN for that GPU.
    Cubin,
    /// `compute_XY[a|f]`: PTX, JIT-compiled by the driver.
    Ptx,
}

/// Parses `sm_90`, `sm_90a`, `compute_80`: the compute capability and the output kind.
pub fn parse_arch(arch: &str) -> Result<((u32, u32), ArchOutput)> {
    let bad = || {
        Error::config(format!(
            "CUDA architecture {arch:?} is not of the form sm_XY or compute_XY (e.g. sm_90, sm_90a, compute_80)"
        ))
    };
    let (rest, out) = if let Some(r) = arch.strip_prefix("sm_") {
        (r, ArchOutput::Cubin)
    } else if let Some(r) = arch.strip_prefix("compute_") {
        (r, ArchOutput::Ptx)
    } else {
        return Err(bad());
    };
    let digits = rest.trim_end_matches(['a', 'f']);
    if digits.len() < 2
        || rest.len() - digits.len() > 1
        || !digits.chars().all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let (maj, min) = digits.split_at(digits.len() - 1);
    Ok((
        (
            maj.parse().map_err(|_| bad())?,
            min.parse().map_err(|_| bad())?,
        ),
        out,
    ))
}

fn candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("DSRS_NVRTC_LIB").filter(|p| !p.is_empty()) {
        v.push(PathBuf::from(p));
        return v;
    }
    let mut dirs = Vec::new();
    if let Some(h) = std::env::var_os("CUDA_HOME").or_else(|| std::env::var_os("CUDA_PATH")) {
        dirs.push(PathBuf::from(h).join("lib64"));
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    const NAMES: [&str; 4] = [
        "libnvrtc.so",
        "libnvrtc.so.13",
        "libnvrtc.so.12",
        "libnvrtc.so.11",
    ];
    for d in dirs {
        for name in NAMES {
            let p = d.join(name);
            if p.exists() {
                v.push(p);
            }
        }
    }
    // Then by name, on the loader path (LD_LIBRARY_PATH, the ld.so cache).
    v.extend(NAMES.iter().map(PathBuf::from));
    v
}

/// The loaded NVRTC library (memoized for the process).
fn lib() -> std::result::Result<&'static nvrtc_lib::Lib, String> {
    static LIB: OnceLock<std::result::Result<nvrtc_lib::Lib, String>> = OnceLock::new();
    LIB.get_or_init(|| {
        let explicit = std::env::var_os("DSRS_NVRTC_LIB").is_some_and(|p| !p.is_empty());
        let mut tried = Vec::new();
        for p in candidates() {
            match nvrtc_lib::Lib::open(&p) {
                Ok(l) => return Ok(l),
                Err(e) if explicit => {
                    return Err(format!(
                        "DSRS_NVRTC_LIB=\"{}\" could not be loaded: {e}",
                        p.display()
                    ));
                }
                Err(e) => tried.push(format!("{}: {e}", p.display())),
            }
        }
        Err(format!(
            "libnvrtc.so was not found (tried: {}); install the CUDA toolkit's NVRTC or `pip install nvidia-cuda-nvrtc-cu12`, and point DSRS_NVRTC_LIB at its libnvrtc.so.*",
            tried.join("; ")
        ))
    })
    .as_ref()
    .map_err(|e| e.clone())
}

fn find() -> std::result::Result<NvrtcInfo, String> {
    let l = lib()?;
    let version = l.version()?;
    Ok(NvrtcInfo {
        version,
        library: Some(l.path.clone()),
        archs: l.supported_archs(),
    })
}

/// NVRTC, found and identified (memoized for the process).
pub fn info() -> Result<&'static NvrtcInfo> {
    static INFO: OnceLock<std::result::Result<NvrtcInfo, String>> = OnceLock::new();
    INFO.get_or_init(find)
        .as_ref()
        .map_err(|e| Error::unavailable("NVRTC", e.clone()))
}

/// `nvcc`, from `CUDA_HOME`/`CUDA_PATH` or `PATH`.
pub fn find_nvcc() -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(h) = std::env::var_os("CUDA_HOME").or_else(|| std::env::var_os("CUDA_PATH")) {
        candidates.push(PathBuf::from(h).join("bin").join("nvcc"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("nvcc")));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/bin/nvcc"));
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::unavailable(
                "nvcc",
                "not found in $CUDA_HOME/bin, on PATH or in /usr/local/cuda/bin (it was asked for with DSRS_USE_NVCC / the nvcc option; NVRTC needs no toolkit)",
            )
        })
}

/// The compute capability of CUDA device 0, if a driver with a device is present. Uses
/// `cuDeviceGetAttribute` only: no context is created.
pub fn device_compute_capability() -> Option<(u32, u32)> {
    static CC: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *CC.get_or_init(|| {
        let probe = crate::accelerator::cuda::probe();
        if !probe.driver_loaded || probe.device_count == 0 {
            return None;
        }
        std::panic::catch_unwind(|| {
            use cudarc::driver::{result, sys::CUdevice_attribute};
            result::init().ok()?;
            let dev = result::device::get(0).ok()?;
            // SAFETY: dev came from cuDeviceGet.
            let major = unsafe {
                result::device::get_attribute(
                    dev,
                    CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                )
            }
            .ok()?;
            let minor = unsafe {
                result::device::get_attribute(
                    dev,
                    CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                )
            }
            .ok()?;
            Some((major as u32, minor as u32))
        })
        .ok()
        .flatten()
    })
}

/// The target for a build: the option, else the GPU's `sm_XY`.
fn target_arch(env: &BuildEnv) -> Result<String> {
    if let Some(a) = &env.options.cuda_arch {
        parse_arch(a)?;
        return Ok(a.clone());
    }
    match device_compute_capability() {
        Some((a, b)) => Ok(format!("sm_{a}{b}")),
        None => Err(Error::unavailable(
            "CUDA",
            format!(
                "no GPU to build for ({}); name a target with DSRS_CUDA_ARCH=sm_90 (or the cuda_arch option) to build without one",
                crate::accelerator::cuda::probe()
                    .reason
                    .clone()
                    .unwrap_or_else(|| "no device".into())
            ),
        )),
    }
}

fn compiler_identity(env: &BuildEnv) -> Result<String> {
    if env.options.nvcc {
        let nvcc = find_nvcc()?;
        let out = std::process::Command::new(&nvcc)
            .arg("--version")
            .output()
            .map_err(|e| Error::io(&nvcc, e))?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(format!(
            "nvcc {} ({})",
            text.lines().last().unwrap_or("").trim(),
            nvcc.display()
        ))
    } else {
        let i = info()?;
        Ok(format!("nvrtc {}.{}", i.version.0, i.version.1))
    }
}

fn cuda_key(spec: &OpSpec, arch: &str, compiler: &str, env: &BuildEnv) -> String {
    let mut h = Hasher::new("cuda-op");
    h.field("op_abi", &OP_ABI_VERSION.to_string());
    hash_spec(&mut h, spec);
    h.field("compiler", compiler);
    h.field("arch", arch);
    h.field("debug", if env.options.debug { "1" } else { "0" });
    h.finish()
}

/// The cache key for the current target (for reports); an error when there is none.
pub(crate) fn cache_key_for_current(spec: &OpSpec, env: &BuildEnv) -> Result<String> {
    let arch = target_arch(env)?;
    Ok(cuda_key(spec, &arch, &compiler_identity(env)?, env))
}

/// The NVRTC options for an op and target.
fn nvrtc_options(spec: &OpSpec, arch: &str, include: &Path, debug: bool) -> Vec<String> {
    let mut o = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
        format!("--include-path={}", include.display()),
        format!("-DDSRS_OP_NAME=\"{}\"", spec.name),
    ];
    if debug {
        o.push("--device-debug".into());
    }
    o.extend(spec.defines.iter().map(|d| d.flag()));
    for d in spec.include_dirs.iter() {
        o.push(format!("--include-path={d}"));
    }
    o.extend(spec.flags.iter().map(|f| f.to_string()));
    o
}

/// Compiles one CUDA source with NVRTC (`debug`: `--device-debug`, the `debug` build
/// option); returns the image (CUBIN or PTX without its NUL) and NVRTC's log. On failure
/// the error carries the options and the log.
pub fn compile(
    spec: &OpSpec,
    arch: &str,
    work_dir: &Path,
    debug: bool,
) -> Result<(Vec<u8>, String)> {
    info()?;
    let (_, output) = parse_arch(arch)?;
    let source = spec
        .sources
        .first()
        .ok_or_else(|| Error::config(format!("op '{}' has no source", spec.name)))?;
    write_sources(spec, work_dir)?;
    let options = nvrtc_options(spec, arch, &work_dir.join("include"), debug);
    let src = CString::new(source.text.as_bytes()).map_err(|_| {
        Error::config(format!(
            "op '{}': {} contains a NUL byte",
            spec.name, source.path
        ))
    })?;
    let name = CString::new(source.path.as_bytes()).unwrap_or_default();
    let copts: Vec<CString> = options
        .iter()
        .map(|o| CString::new(o.as_bytes()).unwrap_or_default())
        .collect();
    let lib = lib().map_err(|e| Error::unavailable("NVRTC", e))?;
    let (image, log) = lib.compile(&src, &name, &copts, output == ArchOutput::Ptx);
    let result = image
        .map(|i| (i, log.clone()))
        .map_err(|e| format!("{e}\n{log}"));
    result.map_err(|log| {
        Error::BuildFailed(format!(
            "NVRTC could not compile op '{}' ({}) for {arch}\n  options: {}\n  log:\n{}",
            spec.name,
            source.path,
            options.join(" "),
            log.lines()
                .filter(|l| !l.trim().is_empty())
                .take(20)
                .map(|l| format!("  | {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        ))
    })
}

/// Builds, caches and "loads" a CUDA op: the image is verified and kept; modules are loaded
/// on a device when a kernel is first asked for.
pub(crate) fn load_cuda(
    builder: &dyn OpBuilder,
    env: &BuildEnv,
    cache: &Cache,
) -> Result<Arc<LoadedOp>> {
    let spec = builder.spec();
    let arch = target_arch(env)?;
    let (_, output) = parse_arch(&arch)?;
    let compiler = compiler_identity(env)?;
    let key = cuda_key(spec, &arch, &compiler, env);
    let artifact = format!(
        "{}.{}",
        spec.name,
        if output == ArchOutput::Cubin {
            "cubin"
        } else {
            "ptx"
        }
    );
    let build = |dir: &Path, failed_log: &Path, progress: &Progress| -> Result<Manifest> {
        let command;
        let bytes = if env.options.nvcc {
            let nvcc = find_nvcc()?;
            let srcs = write_sources(spec, &dir.join("src"))?;
            let mut argv = vec![nvcc.to_string_lossy().into_owned()];
            argv.push(if output == ArchOutput::Cubin {
                "-cubin".into()
            } else {
                "-ptx".into()
            });
            argv.push(format!("-arch={arch}"));
            argv.extend(["-O3".to_string(), "-std=c++17".to_string()]);
            if env.options.debug {
                argv.push("-G".into());
            }
            argv.push(format!("-I{}", dir.join("src/include").display()));
            argv.extend(spec.defines.iter().map(|d| d.flag()));
            argv.extend(spec.flags.iter().map(|f| f.to_string()));
            argv.push(srcs[0].to_string_lossy().into_owned());
            argv.push("-o".into());
            argv.push(dir.join(&artifact).to_string_lossy().into_owned());
            progress.step(&format!("compiling with nvcc for {arch}"));
            run_build(&spec.name, &argv, dir, failed_log, "nvcc")?;
            command = argv;
            fs::read(dir.join(&artifact)).map_err(|e| Error::io(dir.join(&artifact), e))?
        } else {
            progress.step(&format!("compiling with {compiler} for {arch}"));
            let (image, log) = match compile(spec, &arch, &dir.join("src"), env.options.debug) {
                Ok(v) => v,
                Err(e) => {
                    let _ = cache::write_private(failed_log, e.to_string().as_bytes());
                    return Err(Error::BuildFailed(format!(
                        "{e}\n  full log: {}",
                        failed_log.display()
                    )));
                }
            };
            cache::write_private(&dir.join("build.log"), log.as_bytes())?;
            cache::write_private(&dir.join(&artifact), &image)?;
            command = nvrtc_options(
                spec,
                &arch,
                Path::new("<build>/src/include"),
                env.options.debug,
            );
            image
        };
        Ok(Manifest {
            format: 1,
            op: spec.name.to_string(),
            kind: "cuda".into(),
            key: key.clone(),
            artifact: artifact.clone(),
            sha256: cache::sha256_hex(&bytes),
            size: bytes.len() as u64,
            op_abi: OP_ABI_VERSION,
            built_by: crate::VERSION.into(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            build_ms: progress.elapsed_ms() as u64,
            compiler: compiler.clone(),
            target: arch.clone(),
            command,
        })
    };
    let open = |_dir: &Path, _m: &Manifest, bytes: Vec<u8>| -> Result<Code> {
        Ok(Code::Cuda {
            image: bytes,
            modules: Mutex::new(HashMap::new()),
        })
    };
    obtain(spec, &key, &arch, env, cache, build, open)
}

/// A kernel of a CUDA op as a `CUfunction` in device `device`'s primary context.
pub(crate) fn kernel(
    op: &str,
    image: &[u8],
    modules: &Mutex<HashMap<usize, Arc<cudarc::driver::CudaModule>>>,
    device: usize,
    symbol: &str,
) -> Result<*mut c_void> {
    let probe = crate::accelerator::cuda::probe();
    if !probe.driver_loaded || probe.device_count == 0 {
        return Err(Error::unavailable(
            "CUDA",
            probe.reason.clone().unwrap_or_else(|| "no device".into()),
        ));
    }
    let load = || -> std::result::Result<*mut c_void, String> {
        let module = {
            let mut m = modules.lock();
            match m.get(&device) {
                Some(module) => module.clone(),
                None => {
                    let ctx =
                        cudarc::driver::CudaContext::new(device).map_err(|e| format!("{e:?}"))?;
                    let ptx = if image.starts_with(b"\x7fELF") {
                        cudarc::nvrtc::Ptx::from_binary(image.to_vec())
                    } else {
                        cudarc::nvrtc::Ptx::from_src(String::from_utf8_lossy(image).into_owned())
                    };
                    let module = ctx.load_module(ptx).map_err(|e| format!("{e:?}"))?;
                    m.insert(device, module.clone());
                    module
                }
            }
        };
        let f = module.load_function(symbol).map_err(|e| format!("{e:?}"))?;
        Ok(f.cu_function() as *mut c_void)
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(load))
        .map_err(|_| Error::Internal("cudarc panicked while loading a module".into()))?
        .map_err(|e| {
            if e.contains("NOT_FOUND") {
                Error::SymbolNotFound {
                    op: op.to_string(),
                    symbol: symbol.to_string(),
                    hint: String::new(),
                }
            } else {
                Error::Device(format!(
                    "op '{op}': loading kernel '{symbol}' on CUDA device {device}: {e}"
                ))
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archs_parse() {
        assert_eq!(parse_arch("sm_90").unwrap(), ((9, 0), ArchOutput::Cubin));
        assert_eq!(parse_arch("sm_90a").unwrap(), ((9, 0), ArchOutput::Cubin));
        assert_eq!(parse_arch("compute_80").unwrap(), ((8, 0), ArchOutput::Ptx));
        assert_eq!(parse_arch("sm_120").unwrap(), ((12, 0), ArchOutput::Cubin));
        for bad in ["sm90", "sm_", "sm_9", "gfx90a", "compute_8x", "sm_90ab"] {
            assert!(
                parse_arch(bad).unwrap_err().to_string().contains(bad),
                "{bad}"
            );
        }
    }
}
