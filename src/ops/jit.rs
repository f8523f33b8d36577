//! The JIT for CPU ops (C++ → shared library), and the cache protocol shared with CUDA ops:
//! look up, verify, lock, build in a temporary directory, check, commit by rename, load.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::cache::{self, Cache, KeyLock, Manifest};
use super::compiler::Compiler;
use super::progress::Progress;
use super::spec::{COMMON_HEADERS, OpSpec, SourceFile};
use super::{BuildEnv, Code, Hasher, LoadedOp, OP_ABI_VERSION, OpBuilder, Origin, loaded};
use crate::accelerator::cpu::cpu_info;
use crate::error::{Error, Result};

/// The version of the recipe that turns a spec into a compiler command line. Bump it when
/// the flags or their order change, so builds made by an older recipe are not reused.
const RECIPE: &str = "2";

/// How many lines of compiler output a build error quotes.
const ERROR_LINES: usize = 20;

/// The cache key of a CPU op for this compiler and target.
pub(crate) fn cache_key(spec: &OpSpec, env: &BuildEnv, c: &Compiler) -> String {
    let mut h = Hasher::new("cpu-op");
    h.field("op_abi", &OP_ABI_VERSION.to_string());
    h.field("recipe", RECIPE);
    hash_spec(&mut h, spec);
    h.field("compiler.path", &c.path.to_string_lossy());
    h.field("compiler.user_isa", if c.user_isa { "1" } else { "0" });
    h.field("compiler.version", &c.version_line);
    h.field("compiler.args", &c.args.join("\u{1f}"));
    h.field("compiler.openmp", if c.openmp { "1" } else { "0" });
    let target = env.cpu_target();
    h.field("target", &target);
    if !env.options.portable {
        // -march=native: the exact CPU decides the code, so a shared cache never hands one
        // machine's build to another model.
        let cpu = cpu_info();
        h.field("cpu.model", &cpu.model);
        h.field("cpu.features", &cpu.features.names().join(","));
    }
    h.field("debug", if env.options.debug { "1" } else { "0" });
    h.finish()
}

/// Hashes everything in a spec that affects the build.
pub(crate) fn hash_spec(h: &mut Hasher, spec: &OpSpec) {
    h.field("name", &spec.name);
    h.field("kind", spec.kind.name());
    for (what, files) in [
        ("source", &spec.sources[..]),
        ("header", &spec.headers[..]),
        ("common", COMMON_HEADERS),
    ] {
        for f in files {
            h.field(what, &f.path);
            h.field("text", &f.text);
        }
    }
    for d in spec.include_dirs.iter() {
        h.field("include_dir", d);
    }
    for d in spec.defines.iter() {
        h.field("define", &format!("{}={}", d.name, d.value));
    }
    for f in spec.flags.iter() {
        h.field("flag", f);
    }
    for s in spec.symbols.iter() {
        h.field("symbol", s);
    }
}

/// Writes the op's files (common headers, headers, sources) under `dir`.
pub(crate) fn write_sources(spec: &OpSpec, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut sources = Vec::new();
    let all = COMMON_HEADERS
        .iter()
        .chain(spec.headers.iter())
        .map(|f| (f, false))
        .chain(spec.sources.iter().map(|f| (f, true)));
    for (f, is_source) in all {
        let p = dir.join(f.path.as_ref());
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        fs::write(&p, f.text.as_bytes()).map_err(|e| Error::io(&p, e))?;
        if is_source {
            sources.push(p);
        }
    }
    Ok(sources)
}

/// `a 'b c'` — a command line a user can paste into a shell.
pub(crate) fn shell_line(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a build command, writing `<dir>/build.log`. On failure the log is also kept as
/// `<op dir>/<key>.failed.log` and the error quotes the command and the first lines.
pub(crate) fn run_build(
    op: &str,
    argv: &[String],
    dir: &Path,
    failed_log: &Path,
    what: &str,
) -> Result<()> {
    let line = shell_line(argv);
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(dir)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| {
            Error::BuildFailed(format!(
                "building op '{op}' failed: {what} '{}' could not be started: {e}\n  command: {line}",
                argv[0]
            ))
        })?;
    let mut log = format!("$ {line}\n").into_bytes();
    log.extend_from_slice(&out.stdout);
    log.extend_from_slice(&out.stderr);
    let log_path = dir.join("build.log");
    cache::write_private(&log_path, &log)?;
    if out.status.success() {
        return Ok(());
    }
    let _ = fs::copy(&log_path, failed_log);
    Err(build_error(
        op,
        &line,
        &format!("{}", out.status),
        &log,
        failed_log,
    ))
}

/// A `BuildFailed` error: the command, the status, the first lines of output, the log path.
pub(crate) fn build_error(
    op: &str,
    line: &str,
    status: &str,
    log: &[u8],
    log_path: &Path,
) -> Error {
    let text = String::from_utf8_lossy(log);
    let lines: Vec<&str> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let head: Vec<String> = lines
        .iter()
        .take(ERROR_LINES)
        .map(|l| format!("  | {l}"))
        .collect();
    let more = if lines.len() > ERROR_LINES {
        format!("\n  | ... ({} more lines)", lines.len() - ERROR_LINES)
    } else {
        String::new()
    };
    Error::BuildFailed(format!(
        "building op '{op}' failed ({status})\n  command: {line}\n  output:\n{}{more}\n  full log: {}",
        head.join("\n"),
        log_path.display()
    ))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The generated translation unit every JIT-built CPU op gets: the op ABI version and name
/// the loader checks.
fn abi_source(op: &str) -> SourceFile {
    SourceFile {
        path: "dsrs_op_abi.cpp".into(),
        text: format!(
            "// Generated by deepspeed_rs: checked by the loader.\n\
             extern \"C\" __attribute__((visibility(\"default\"))) const unsigned int dsrs_op_abi_version = {OP_ABI_VERSION}u;\n\
             extern \"C\" __attribute__((visibility(\"default\"))) const char dsrs_op_name[] = \"{op}\";\n"
        )
        .into(),
    }
}

/// Builds, caches and loads a CPU op.
pub(crate) fn load_cpu(
    builder: &dyn OpBuilder,
    env: &BuildEnv,
    cache: &Cache,
) -> Result<Arc<LoadedOp>> {
    let spec = builder.spec();
    let compiler = env.compiler().map_err(|reason| Error::Incompatible {
        op: spec.name.to_string(),
        reasons: vec![reason],
    })?;
    let key = cache_key(spec, env, &compiler);
    let target = env.cpu_target();
    let artifact = format!("lib{}.so", spec.name);
    let build = |dir: &Path, failed_log: &Path, progress: &Progress| -> Result<Manifest> {
        let src_dir = dir.join("src");
        let mut sources = write_sources(spec, &src_dir)?;
        let abi = abi_source(&spec.name);
        let abi_path = src_dir.join(abi.path.as_ref());
        fs::write(&abi_path, abi.text.as_bytes()).map_err(|e| Error::io(&abi_path, e))?;
        sources.push(abi_path);
        let simd = target.split(':').nth(1).unwrap_or("scalar");
        let mut argv: Vec<String> = vec![compiler.path.to_string_lossy().into_owned()];
        argv.extend(
            [
                "-std=c++17",
                "-O3",
                "-fPIC",
                "-shared",
                "-fvisibility=hidden",
            ]
            .map(String::from),
        );
        if compiler.openmp {
            argv.push("-fopenmp".into());
        }
        if env.options.debug {
            argv.push("-g".into());
        }
        // cc's flags come after ours, so the user's CXXFLAGS (last among them) win...
        argv.extend(compiler.args.iter().cloned());
        // ...except cc's default target ISA (`-march=x86-64`): -march=native goes after it,
        // unless the user chose an ISA in CXXFLAGS.
        if !env.options.portable && !compiler.user_isa {
            argv.push("-march=native".into());
        }
        argv.push(format!("-DDSRS_SIMD_{}", simd.to_ascii_uppercase()));
        argv.push(format!("-DDSRS_SIMD_LEVEL=\"{simd}\""));
        argv.push(format!("-I{}", src_dir.join("include").display()));
        argv.push(format!("-I{}", src_dir.display()));
        for d in spec.include_dirs.iter() {
            argv.push(format!("-I{d}"));
        }
        argv.extend(spec.defines.iter().map(|d| d.flag()));
        argv.extend(spec.flags.iter().map(|f| f.to_string()));
        argv.extend(sources.iter().map(|p| p.to_string_lossy().into_owned()));
        argv.push("-o".into());
        argv.push(dir.join(&artifact).to_string_lossy().into_owned());
        progress.step(&format!("compiling with {}", compiler.display()));
        run_build(&spec.name, &argv, dir, failed_log, "the C++ compiler")?;
        let bytes = fs::read(dir.join(&artifact)).map_err(|e| Error::io(dir.join(&artifact), e))?;
        Ok(Manifest {
            format: 1,
            op: spec.name.to_string(),
            kind: "cpu".into(),
            key: key.clone(),
            artifact: artifact.clone(),
            sha256: cache::sha256_hex(&bytes),
            size: bytes.len() as u64,
            op_abi: OP_ABI_VERSION,
            built_by: crate::VERSION.into(),
            created: now_unix(),
            build_ms: progress.elapsed_ms() as u64,
            compiler: compiler.display(),
            target: target.clone(),
            command: argv,
        })
    };
    let open = |dir: &Path, m: &Manifest, bytes: Vec<u8>| -> Result<Code> {
        open_library(spec, dir, m, &bytes)
    };
    obtain(spec, &key, &target, env, cache, build, open)
}

/// A sealed in-memory copy of verified bytes, to load from: the code that runs is exactly
/// the code that was hashed, even if the cache file is modified in place later (a library
/// mapped from a file that is rewritten in place would change under the process). The
/// descriptor is kept open for the life of the process (loaded ops are never unloaded), so
/// its `/proc/self/fd/N` name is never reused — glibc recognizes loaded libraries by name.
fn memfd_copy(name: &str, bytes: &[u8]) -> Option<(std::os::fd::OwnedFd, PathBuf)> {
    use std::io::Write;
    use std::os::fd::{FromRawFd, OwnedFd};
    let cname = std::ffi::CString::new(format!("dsrs-op-{name}")).ok()?;
    // SAFETY: a valid C string; the returned descriptor is owned below.
    let fd =
        unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a new descriptor we own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut f = File::from(owned);
    f.write_all(bytes).ok()?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our descriptor.
    unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::F_ADD_SEALS,
            seals,
        )
    };
    let path = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&f)
    ));
    path.exists().then(|| (OwnedFd::from(f), path))
}

/// dlopens a verified artifact (from a sealed in-memory copy of the verified bytes when the
/// system allows, else from its path) and checks the op ABI version, the op name and every
/// declared symbol.
fn open_library(spec: &OpSpec, dir: &Path, m: &Manifest, bytes: &[u8]) -> Result<Code> {
    let path = dir.join(&m.artifact);
    let memfd = memfd_copy(&spec.name, bytes);
    let open_path = memfd
        .as_ref()
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| path.clone());
    // SAFETY: loading a library runs its initializers; this one was built by us from the
    // op's sources, and its bytes were verified against the manifest just now.
    let lib = unsafe {
        libloading::os::unix::Library::open(
            Some(&open_path),
            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
        )
    }
    .map_err(|e| {
        Error::LoadFailed(format!(
            "op '{}': cannot load {}: {e}",
            spec.name,
            path.display()
        ))
    })?;
    let lib: libloading::Library = lib.into();
    // SAFETY: the generated ABI unit defines these as a const unsigned int and a char array.
    let abi = unsafe { lib.get::<*const u32>(b"dsrs_op_abi_version") }
        .ok()
        .map(|s| unsafe { (*s).read() });
    match abi {
        Some(OP_ABI_VERSION) => {}
        Some(v) => {
            return Err(Error::LoadFailed(format!(
                "op '{}': {} was built for op ABI {v}, this library needs {OP_ABI_VERSION}; it will be rebuilt",
                spec.name,
                path.display()
            )));
        }
        None => {
            return Err(Error::LoadFailed(format!(
                "op '{}': {} does not export dsrs_op_abi_version (not built by deepspeed_rs)",
                spec.name,
                path.display()
            )));
        }
    }
    let name_ok = unsafe { lib.get::<*const std::ffi::c_char>(b"dsrs_op_name") }
        .ok()
        .map(|s| unsafe { std::ffi::CStr::from_ptr(*s) }.to_bytes() == spec.name.as_bytes())
        .unwrap_or(false);
    if !name_ok {
        return Err(Error::LoadFailed(format!(
            "op '{}': {} was built for another op",
            spec.name,
            path.display()
        )));
    }
    let missing: Vec<&str> = spec
        .symbols
        .iter()
        .filter(|s| unsafe { lib.get::<*mut std::ffi::c_void>(s.as_bytes()) }.is_err())
        .map(|s| s.as_ref())
        .collect();
    if !missing.is_empty() {
        return Err(Error::LoadFailed(format!(
            "op '{}': the built library does not export {} that the op declares (are they `extern \"C\"` with DSRS_OP_EXPORT?)",
            spec.name,
            missing
                .iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    // Loaded ops stay loaded: keep the library and the descriptor it was loaded from.
    if let Some((fd, _)) = memfd {
        std::mem::forget(fd);
    }
    Ok(Code::Library(Box::leak(Box::new(lib))))
}

/// The cache protocol. `build` fills a fresh temporary directory and returns its manifest;
/// `open` turns a verified artifact into loadable code.
pub(crate) fn obtain(
    spec: &OpSpec,
    key: &str,
    target: &str,
    env: &BuildEnv,
    cache: &Cache,
    build: impl FnOnce(&Path, &Path, &Progress) -> Result<Manifest>,
    open: impl Fn(&Path, &Manifest, Vec<u8>) -> Result<Code>,
) -> Result<Arc<LoadedOp>> {
    let name = spec.name.to_string();
    let force = env.options.force_rebuild;
    // One loaded op per key *and cache*: another cache_dir gets (and fills) its own.
    let map_key = (name.clone(), format!("{key}@{}", cache.root().display()));
    if !force && let Some(op) = loaded().lock().get(&map_key) {
        return Ok(op.clone());
    }
    let op_dir = cache.ensure_op_dir(&name)?;
    let dir = cache.key_dir(&name, key);
    let progress = Progress::new(&name);
    let finish = |code: Code, m: Manifest, origin: Origin, progress: &Progress| -> Arc<LoadedOp> {
        let op = Arc::new(LoadedOp {
            name: name.clone(),
            kind: spec.kind,
            key: key.to_string(),
            origin,
            target: target.to_string(),
            dir: Some(dir.clone()),
            manifest: Some(m),
            declared: spec.symbols.iter().map(|s| s.to_string()).collect(),
            load_ms: progress.elapsed_ms(),
            code,
        });
        loaded().lock().insert(map_key.clone(), op.clone());
        op
    };
    let try_open = |progress: &Progress| -> Result<Option<Arc<LoadedOp>>> {
        if !dir.exists() {
            return Ok(None);
        }
        let m = Manifest::read(&dir)?;
        if m.key != key || m.op != name || m.op_abi != OP_ABI_VERSION {
            return Err(Error::Format(format!(
                "{} describes op '{}' key {} ABI {}, not op '{name}' key {key} ABI {OP_ABI_VERSION}",
                dir.join(cache::MANIFEST).display(),
                m.op,
                m.key,
                m.op_abi
            )));
        }
        let bytes = m.verify(&dir)?;
        let code = open(&dir, &m, bytes)?;
        Ok(Some(finish(code, m, Origin::Cached, progress)))
    };
    // Unlocked first: the common case, a cached build, takes no lock. A failure here is
    // retried (and reported) under the lock, where another process may have rebuilt it.
    if !force && let Ok(Some(op)) = try_open(&progress) {
        return Ok(op);
    }
    let lock_path = op_dir.join(format!("{key}.lock"));
    let _lock = KeyLock::acquire(&lock_path, env.options.lock_timeout(), |pid| {
        progress.step(&format!(
            "waiting for the build by pid {} ({})",
            pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
            lock_path.display()
        ))
    })?;
    if !force {
        match try_open(&progress) {
            Ok(Some(op)) => return Ok(op),
            Ok(None) => {}
            Err(e) => crate::dsrs_warn!(
                "ops",
                "op {name}: the cached build in {} is unusable and will be rebuilt: {e}",
                dir.display()
            ),
        }
    }
    remove_stale(&op_dir, key, &dir)?;
    let tmp = cache::scratch_dir_in(&op_dir, &format!(".tmp-{key}-{}", std::process::id()))?;
    let failed_log = op_dir.join(format!("{key}.failed.log"));
    let m = build(tmp.path(), &failed_log, &progress)?;
    m.write(tmp.path())?;
    progress.step("verifying and loading");
    let bytes = m.verify(tmp.path())?;
    let code = open(tmp.path(), &m, bytes)?;
    fs::rename(tmp.path(), &dir).map_err(|e| Error::io(&dir, e))?;
    tmp.keep();
    let _ = fs::remove_file(&failed_log);
    progress.step(&format!("built and cached in {}", dir.display()));
    Ok(finish(code, m, Origin::Built, &progress))
}

/// Under the key's lock: removes an unusable committed build of this key, and temporary
/// directories left by builders that died.
fn remove_stale(op_dir: &Path, key: &str, dir: &Path) -> Result<()> {
    if dir.exists() {
        let trash = op_dir.join(format!(".tmp-{key}-{}-stale", std::process::id()));
        fs::rename(dir, &trash).map_err(|e| Error::io(dir, e))?;
        let _ = fs::remove_dir_all(&trash);
    }
    if let Ok(items) = fs::read_dir(op_dir) {
        for item in items.flatten() {
            let n = item.file_name().to_string_lossy().into_owned();
            if let Some(rest) = n.strip_prefix(".tmp-")
                && let Some(pid) = rest.split('-').nth(1).and_then(|p| p.parse::<u32>().ok())
                && pid != std::process::id()
                && !cache::pid_alive(pid)
            {
                let _ = fs::remove_dir_all(item.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_lines_quote_what_needs_quoting() {
        let v = ["c++", "-DX=\"a b\"", "it's", "-O3"].map(String::from);
        assert_eq!(shell_line(&v), r#"c++ '-DX="a b"' 'it'\''s' -O3"#);
    }

    #[test]
    fn build_errors_quote_the_command_the_first_lines_and_the_log() {
        let mut log = b"$ c++ x.cpp\n".to_vec();
        for i in 0..30 {
            log.extend_from_slice(format!("x.cpp:{i}: error: bad\n").as_bytes());
        }
        let e = build_error(
            "x",
            "c++ x.cpp",
            "exit status: 1",
            &log,
            Path::new("/l/x.log"),
        )
        .to_string();
        assert!(e.contains("command: c++ x.cpp"), "{e}");
        assert!(
            e.contains("x.cpp:0: error") && e.contains("x.cpp:19: error"),
            "{e}"
        );
        assert!(
            !e.contains("x.cpp:20: error") && e.contains("10 more lines"),
            "{e}"
        );
        assert!(e.contains("full log: /l/x.log"), "{e}");
    }
}
