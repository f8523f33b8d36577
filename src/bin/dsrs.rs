//! `dsrs`: the deepspeed_rs command-line tool.
//!
//! ```text
//! dsrs report [--json]              the environment report (accelerators, devices, memory,
//!                                   CPU, CUDA, the op table and the build environment)
//! dsrs build [OP...] [options]      build ops into the cache (all built-in ops by default)
//! dsrs cache list|verify|clean      manage the op cache
//! dsrs config check FILE            validate a ds_config and print it resolved
//! dsrs config fill-auto FILE P=V... replace "auto" values
//! dsrs --version                    the version
//! ```
//! Exit status: 0 on success; 1 when the report could not select an accelerator (for
//! example `DSRS_ACCELERATOR=bogus`), an op asked for failed to build, or the cache failed
//! verification, or `config check` found errors in the config; 2 for a usage error (or a
//! config file that cannot be read).

use std::io::Write;
use std::process::ExitCode;

use deepspeed_rs::ops::{self, BuildOptions, OpKind, cache::EntryKind};
use deepspeed_rs::report::Report;
use serde_json::json;

const USAGE: &str = "\
usage: dsrs <command> [options]

commands:
  report [--json]   show the accelerator, every accelerator considered, devices, memory,
                    CPU features, CUDA driver, versions, and the op table with the build
                    environment (DeepSpeed's ds_report)
  build [OP...]     build ops into the cache (default: every built-in op compatible here)
      --spec FILE     define an op from a JSON file (as dsrs_op_define) and build it
      --portable      build for the architecture's baseline, not -march=native
      --simd LEVEL    CPU ops: build this SIMD level's code path (avx2, scalar, ...)
      --debug         add debug information
      --force         rebuild even when cached
      --no-prebuilt   ignore ops compiled into the library
      --cuda-arch A   CUDA target: sm_XY (CUBIN) or compute_XY (PTX)
      --nvcc          compile CUDA ops with nvcc instead of NVRTC
      --json          one JSON object per op on standard output
  cache list        list the cached builds, builds in progress and failure logs
  cache verify      check every cached artifact against its manifest's SHA-256
  cache clean [--all]
                    remove failed and unusable builds and leftovers of dead builders
                    (--all: everything)
  config check FILE [--world-size N] [--json]
                    validate a DeepSpeed ds_config (comments and trailing commas are
                    accepted): warnings and errors on standard error as
                    `warning|error: <json path>: <message>`, then the resolved config
                    (every default filled in) as JSON on standard output; exit 1 on errors
      --world-size N  the data-parallel world size of the batch rule (default 1)
      --json          one JSON object with ok, errors, warnings and config instead
  config fill-auto FILE PATH=VALUE...
                    replace \"auto\" values (PATH dotted, [i] for array elements; VALUE is
                    JSON, or else a string) and print the document
  help              show this help

options:
  -V, --version     print the version
  -h, --help        show this help

environment:
  DSRS_ACCELERATOR  force an accelerator (cpu, cuda, or a plugin's name)
  DSRS_LOG          log level on standard error: off, error, warn (default), info, debug, trace
  DSRS_CACHE_DIR    the op cache (default $XDG_CACHE_HOME/deepspeed_rs or ~/.cache/deepspeed_rs)
  CXX, CXXFLAGS     the C++ compiler and flags for CPU ops
  DSRS_NVRTC_LIB    the libnvrtc.so to use for CUDA ops
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] | ["help"] | ["-h"] | ["--help"] => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        ["-V"] | ["--version"] | ["version"] => {
            println!(
                "dsrs {} (deepspeed_rs, C ABI {})",
                deepspeed_rs::VERSION,
                deepspeed_rs::ABI_VERSION
            );
            ExitCode::SUCCESS
        }
        ["report", rest @ ..] => report(rest),
        ["build", rest @ ..] => build(rest),
        ["cache", rest @ ..] => cache(rest),
        ["config", rest @ ..] => config(rest),
        [other, ..] => {
            eprintln!("dsrs: unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn report(args: &[&str]) -> ExitCode {
    let mut json = false;
    for a in args {
        match *a {
            "--json" => json = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("dsrs report: unknown option {other:?} (expected --json)");
                return ExitCode::from(2);
            }
        }
    }
    let r = Report::gather();
    let mut stdout = std::io::stdout().lock();
    let written = if json {
        writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(&r.to_json()).unwrap_or_default()
        )
    } else {
        write!(stdout, "{}", r.to_text())
    };
    if written.is_err() {
        return ExitCode::from(1); // stdout closed (a pipe); nothing more to say
    }
    if let Err(e) = &r.accelerator {
        eprintln!("dsrs: error: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn build(args: &[&str]) -> ExitCode {
    let mut options = BuildOptions::default();
    let mut names: Vec<String> = Vec::new();
    let mut json = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--json" => json = true,
            "--portable" => options.portable = true,
            "--debug" => options.debug = true,
            "--force" => options.force_rebuild = true,
            "--no-prebuilt" => options.prebuilt = false,
            "--nvcc" => options.nvcc = true,
            "--simd" => match it.next() {
                Some(v) => {
                    if let Err(e) = deepspeed_rs::ops::check_simd_level(v) {
                        return usage_error("build", &e.to_string());
                    }
                    options.simd = Some(v.to_string());
                }
                None => return usage_error("build", "--simd needs a level (avx512, avx2, scalar)"),
            },
            "--cuda-arch" => match it.next() {
                Some(v) => options.cuda_arch = Some(v.to_string()),
                None => {
                    return usage_error("build", "--cuda-arch needs a value (sm_90, compute_80)");
                }
            },
            "--spec" => {
                let Some(path) = it.next() else {
                    return usage_error("build", "--spec needs a JSON file");
                };
                let text = match std::fs::read_to_string(path) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("dsrs build: cannot read {path}: {e}");
                        return ExitCode::from(1);
                    }
                };
                match ops::define_json(&text) {
                    Ok(name) => names.push(name),
                    Err(e) => {
                        eprintln!("dsrs build: {path}: {e}");
                        return ExitCode::from(1);
                    }
                }
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            o if o.starts_with('-') => {
                return usage_error("build", &format!("unknown option {o:?}"));
            }
            name => names.push(name.to_string()),
        }
    }
    if let Some(a) = &options.cuda_arch
        && let Err(e) = ops::nvrtc::parse_arch(a)
    {
        return usage_error("build", &e.to_string());
    }
    let explicit = !names.is_empty();
    if !explicit {
        names = ops::builders::ALL
            .iter()
            .map(|s| s.name.to_string())
            .collect();
    }
    let statuses = ops::status_all(&options);
    let mut failed = false;
    for name in &names {
        if !explicit
            && let Some(s) = statuses.iter().find(|s| &s.name == name)
            && !s.incompatible.is_empty()
        {
            let why = s.incompatible.join("; ");
            if json {
                println!(
                    "{}",
                    json!({"op": name, "status": "skipped", "reason": why})
                );
            } else {
                println!("{name:<16} skipped: {why}");
            }
            continue;
        }
        let start = std::time::Instant::now();
        match ops::load(name, &options) {
            Ok(op) => {
                let ms = start.elapsed().as_secs_f64() * 1e3;
                if json {
                    let mut d = op.describe();
                    d["op"] = json!(name);
                    d["status"] = json!("ok");
                    d["ms"] = json!(ms);
                    println!("{d}");
                } else {
                    let kind = if op.kind() == OpKind::Cuda {
                        "cuda"
                    } else {
                        "cpu"
                    };
                    println!(
                        "{name:<16} {:<8} {kind:<4} {:<16} {ms:>9.1} ms  {}",
                        op.origin().name(),
                        op.target(),
                        op.dir()
                            .map(|d| d.display().to_string())
                            .unwrap_or_else(|| "(in the library)".into())
                    );
                }
            }
            Err(e) => {
                failed = true;
                if json {
                    println!(
                        "{}",
                        json!({"op": name, "status": "failed", "error": e.to_string()})
                    );
                } else {
                    eprintln!("dsrs build: {e}");
                }
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn usage_error(cmd: &str, msg: &str) -> ExitCode {
    eprintln!("dsrs {cmd}: {msg}\n\n{USAGE}");
    ExitCode::from(2)
}

fn cache(args: &[&str]) -> ExitCode {
    let (sub, rest) = match args.split_first() {
        Some((s, r)) => (*s, r),
        None => return usage_error("cache", "expected list, verify or clean"),
    };
    let mut json = false;
    let mut all = false;
    for a in rest {
        match *a {
            "--json" => json = true,
            "--all" if sub == "clean" => all = true,
            o => return usage_error("cache", &format!("unknown option {o:?}")),
        }
    }
    let cache = match ops::Cache::open_default() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dsrs cache: {e}");
            return ExitCode::from(1);
        }
    };
    let entries = match cache.entries() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("dsrs cache: {e}");
            return ExitCode::from(1);
        }
    };
    match sub {
        "list" => {
            if !json {
                println!("cache: {}", cache.root().display());
            }
            for e in &entries {
                let v = match &e.kind {
                    EntryKind::Build(Ok(m)) => {
                        json!({"op": e.op, "type": "build", "key": e.name, "target": m.target,
                        "size": m.size, "compiler": m.compiler, "created": m.created, "build_ms": m.build_ms,
                        "built_by": m.built_by, "path": e.path})
                    }
                    EntryKind::Build(Err(err)) => {
                        json!({"op": e.op, "type": "build", "key": e.name, "error": err, "path": e.path})
                    }
                    EntryKind::Temporary { pid } => {
                        json!({"op": e.op, "type": "temporary", "pid": pid,
                        "alive": ops::cache::pid_alive(*pid), "path": e.path})
                    }
                    EntryKind::FailedLog => {
                        json!({"op": e.op, "type": "failed_log", "path": e.path})
                    }
                };
                if json {
                    println!("{v}");
                } else {
                    match &e.kind {
                        EntryKind::Build(Ok(m)) => println!(
                            "  {:<16} {}  {:<16} {:>9}  {}",
                            e.op,
                            e.name,
                            m.target,
                            deepspeed_rs::report::human(Some(m.size)),
                            m.compiler
                        ),
                        EntryKind::Build(Err(err)) => {
                            println!("  {:<16} {}  UNREADABLE: {err}", e.op, e.name)
                        }
                        EntryKind::Temporary { pid } => println!(
                            "  {:<16} {}  build in progress by pid {pid}{}",
                            e.op,
                            e.name,
                            if ops::cache::pid_alive(*pid) {
                                ""
                            } else {
                                " (dead: `dsrs cache clean` removes it)"
                            }
                        ),
                        EntryKind::FailedLog => {
                            println!("  {:<16} {}  failed build log", e.op, e.name)
                        }
                    }
                }
            }
            ExitCode::SUCCESS
        }
        "verify" => {
            let mut bad = 0;
            for e in &entries {
                if let EntryKind::Build(m) = &e.kind {
                    let result = m
                        .clone()
                        .map_err(|x| x.to_string())
                        .and_then(|m| m.verify(&e.path).map(|_| ()).map_err(|x| x.to_string()));
                    match result {
                        Ok(()) => {
                            if json {
                                println!("{}", json!({"op": e.op, "key": e.name, "ok": true}));
                            } else {
                                println!("  OK   {:<16} {}", e.op, e.name);
                            }
                        }
                        Err(err) => {
                            bad += 1;
                            if json {
                                println!(
                                    "{}",
                                    json!({"op": e.op, "key": e.name, "ok": false, "error": err})
                                );
                            } else {
                                println!("  BAD  {:<16} {}  {err}", e.op, e.name);
                            }
                        }
                    }
                }
            }
            if bad > 0 {
                eprintln!(
                    "dsrs cache verify: {bad} build(s) failed verification; they are rebuilt on next use, or run `dsrs cache clean`"
                );
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        "clean" => {
            let mut removed = 0u64;
            let mut remove = |p: &std::path::Path| {
                let r = if p.is_dir() {
                    std::fs::remove_dir_all(p)
                } else {
                    std::fs::remove_file(p)
                };
                match r {
                    Ok(()) => {
                        removed += 1;
                        if !json {
                            println!("  removed {}", p.display());
                        }
                    }
                    Err(e) => eprintln!("dsrs cache clean: {}: {e}", p.display()),
                }
            };
            if all {
                for sub in [ops::cache::LAYOUT, "compilers"] {
                    let p = cache.root().join(sub);
                    if p.exists() {
                        remove(&p);
                    }
                }
            } else {
                for e in &entries {
                    let stale = match &e.kind {
                        EntryKind::Build(Ok(m)) => {
                            m.verify(&e.path).is_err() || m.op_abi != ops::OP_ABI_VERSION
                        }
                        EntryKind::Build(Err(_)) => true,
                        EntryKind::Temporary { pid } => !ops::cache::pid_alive(*pid),
                        EntryKind::FailedLog => true,
                    };
                    if stale {
                        remove(&e.path);
                    }
                }
            }
            if json {
                println!("{}", json!({"removed": removed}));
            } else {
                println!("{removed} item(s) removed from {}", cache.root().display());
            }
            ExitCode::SUCCESS
        }
        other => usage_error(
            "cache",
            &format!("unknown subcommand {other:?} (expected list, verify or clean)"),
        ),
    }
}

fn config(args: &[&str]) -> ExitCode {
    use deepspeed_rs::engine::config::{self, DsConfig, ParseOptions};

    let (sub, rest) = match args.split_first() {
        Some((s, r)) => (*s, r),
        None => return usage_error("config", "expected check or fill-auto"),
    };
    if matches!(sub, "-h" | "--help") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if sub != "check" && sub != "fill-auto" {
        return usage_error(
            "config",
            &format!("unknown subcommand {sub:?} (expected check or fill-auto)"),
        );
    }
    let mut file = None;
    let mut json_out = false;
    let mut world_size = 1u64;
    let mut fills = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match *a {
            "--json" if sub == "check" => json_out = true,
            "--world-size" if sub == "check" => match it.next().and_then(|v| v.parse().ok()) {
                Some(n) if n >= 1 => world_size = n,
                _ => return usage_error("config check", "--world-size needs a positive integer"),
            },
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            o if o.starts_with("--") => {
                return usage_error(&format!("config {sub}"), &format!("unknown option {o:?}"));
            }
            f if file.is_none() => file = Some(f),
            fill if sub == "fill-auto" => match fill.split_once('=') {
                Some((path, value)) => fills.push((path, value)),
                None => {
                    return usage_error(
                        "config fill-auto",
                        &format!("expected PATH=VALUE, got {fill:?}"),
                    );
                }
            },
            extra => {
                return usage_error(
                    &format!("config {sub}"),
                    &format!("unexpected argument {extra:?} (one FILE)"),
                );
            }
        }
    }
    let Some(file) = file else {
        return usage_error(&format!("config {sub}"), "expected a config FILE");
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("dsrs config {sub}: cannot read {file}: {e}");
            return ExitCode::from(2);
        }
    };
    let doc = config::read_lenient_json(&text, file);
    if sub == "fill-auto" {
        let mut doc = match doc {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: <top>: {e}");
                return ExitCode::from(1);
            }
        };
        for (path, value) in fills {
            let v = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
            if let Err(e) = config::fill_auto(&mut doc, path, v) {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
        for p in config::auto_paths(&doc) {
            eprintln!("warning: {p}: still \"auto\"");
        }
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let checked = match doc {
        Ok(doc) => DsConfig::check(&doc, &ParseOptions { world_size }),
        Err(e) => config::Checked {
            config: None,
            errors: vec![config::Diagnostic {
                path: "<top>".into(),
                message: e.to_string(),
            }],
            warnings: Vec::new(),
        },
    };
    let ok = checked.errors.is_empty();
    if json_out {
        let v = json!({
            "ok": ok,
            "errors": checked.errors,
            "warnings": checked.warnings,
            "config": checked.config.as_ref().map(DsConfig::to_json),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for w in &checked.warnings {
            eprintln!("warning: {}: {}", w.path, w.message);
        }
        for e in &checked.errors {
            eprintln!("error: {}: {}", e.path, e.message);
        }
        if let Some(c) = &checked.config {
            println!(
                "{}",
                serde_json::to_string_pretty(&c.to_json()).unwrap_or_default()
            );
        } else {
            eprintln!(
                "dsrs config check: {file}: {} error(s)",
                checked.errors.len()
            );
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
