//! The `dsrs` command line, run as a separate process.

use std::path::PathBuf;
use std::process::{Command, Output};

fn dsrs(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dsrs"));
    c.args(args)
        .env_remove("DSRS_ACCELERATOR")
        .env_remove("DSRS_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("dsrs runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn version_matches_the_crate() {
    let o = dsrs(&["--version"], &[]);
    assert!(o.status.success());
    assert_eq!(
        text(&o.stdout).trim(),
        format!("dsrs {} (deepspeed_rs, C ABI 1)", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn report_selects_the_cpu_and_lists_every_candidate() {
    let o = dsrs(&["report"], &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("accelerator ............. cpu (detected"),
        "{out}"
    );
    assert!(out.contains("cuda       [NO]"), "{out}");
    assert!(out.contains("cpu        [OKAY]"), "{out}");
    assert!(out.contains("simd level"), "{out}");
}

#[test]
fn report_json_is_machine_readable() {
    let o = dsrs(&["report", "--json"], &[("DSRS_ACCELERATOR", "cpu")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    assert_eq!(v["accelerator"]["name"], "cpu");
    assert_eq!(v["selection"]["method"], "override");
    assert_eq!(v["selection"]["reason"], "override: DSRS_ACCELERATOR=cpu");
    assert_eq!(v["deepspeed_rs"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        v["accelerator"]["devices"][0]["total_memory"]
            .as_u64()
            .unwrap()
            > 0
    );
    let names: Vec<&str> = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cuda", "cpu"]);
}

#[test]
fn a_bogus_override_fails_naming_the_valid_accelerators() {
    let o = dsrs(&["report"], &[("DSRS_ACCELERATOR", "bogus")]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains(
            "DSRS_ACCELERATOR=\"bogus\" is not a known accelerator; valid accelerators: cuda, cpu"
        ),
        "{err}"
    );
    // The candidates are still shown, so the user sees what could be chosen.
    assert!(text(&o.stdout).contains("cpu        [OKAY]"));
}

#[test]
fn an_unavailable_override_says_why_and_what_is_available() {
    let o = dsrs(&["report", "--json"], &[("DSRS_ACCELERATOR", "cuda")]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    let e = v["error"].as_str().unwrap();
    assert!(e.starts_with("cuda unavailable: "), "{e}");
    assert!(
        e.ends_with("(requested by DSRS_ACCELERATOR=cuda; available accelerators: cpu)"),
        "{e}"
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(dsrs(&["frobnicate"], &[]).status.code(), Some(2));
    assert_eq!(dsrs(&["report", "--yaml"], &[]).status.code(), Some(2));
    assert!(dsrs(&["--help"], &[]).status.success());
}

/// Builds a stand-in `libcuda.so.1` whose `cuInit` reports `CUDA_ERROR_NO_DEVICE` (100),
/// as a driver on a machine without GPUs does. Returns its directory, or `None` when no C
/// compiler is available.
fn fake_libcuda() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fake-cuda");
    std::fs::create_dir_all(&dir).ok()?;
    let src = dir.join("fake_cuda.c");
    std::fs::write(
        &src,
        "int cuInit(unsigned f) { (void)f; return 100; }\n\
         int cuDeviceGetCount(int *n) { *n = 0; return 100; }\n\
         int cuGetErrorString(int e, const char **s) { (void)e; *s = \"no CUDA-capable device is detected\"; return 0; }\n\
         int cuGetErrorName(int e, const char **s) { (void)e; *s = \"CUDA_ERROR_NO_DEVICE\"; return 0; }\n",
    )
    .ok()?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(cc)
        .args(["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o"])
        .arg(dir.join("libcuda.so.1"))
        .arg(&src)
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let _ = std::os::unix::fs::symlink("libcuda.so.1", dir.join("libcuda.so"));
    Some(dir)
}

#[test]
fn cuda_without_a_driver_is_a_clean_unavailable() {
    // This machine class has no libcuda; on a GPU machine the driver would be found.
    if deepspeed_rs::accelerator::cuda::probe().driver_loaded {
        eprintln!("skipped: a real CUDA driver is installed here");
        return;
    }
    let o = dsrs(&["report", "--json"], &[]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["cuda"]["driver_loaded"], false);
    assert!(
        v["cuda"]["reason"]
            .as_str()
            .unwrap()
            .contains("libcuda.so.1) was not found")
    );
}

#[test]
fn cuda_driver_without_devices_is_a_clean_unavailable() {
    if deepspeed_rs::accelerator::cuda::probe().driver_loaded {
        eprintln!("skipped: a real CUDA driver is installed here");
        return;
    }
    let Some(dir) = fake_libcuda() else {
        eprintln!("skipped: no C compiler to build the stand-in libcuda");
        return;
    };
    let ld = match std::env::var("LD_LIBRARY_PATH") {
        Ok(old) if !old.is_empty() => format!("{}:{old}", dir.display()),
        _ => dir.display().to_string(),
    };
    let o = dsrs(&["report", "--json"], &[("LD_LIBRARY_PATH", &ld)]);
    assert!(
        o.status.success(),
        "CPU is still selected: {}",
        text(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["cuda"]["driver_loaded"], true, "{v}");
    assert_eq!(v["cuda"]["device_count"], 0);
    let reason = v["cuda"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("no CUDA-capable device is detected (CUDA_ERROR_NO_DEVICE)"),
        "{reason}"
    );
    assert_eq!(v["accelerator"]["name"], "cpu");
    assert!(
        !text(&o.stderr).contains("panicked"),
        "no panic noise: {}",
        text(&o.stderr)
    );

    let o = dsrs(
        &["report"],
        &[("LD_LIBRARY_PATH", &ld), ("DSRS_ACCELERATOR", "cuda")],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr)
            .contains("cuda unavailable: the CUDA driver loaded but reports no usable device")
    );
}

fn ds_config(name: &str) -> String {
    format!("{}/tests/data/ds_config/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn config_check_passes_the_valid_samples() {
    for (name, world) in [
        ("cifar10_fp16.json", "1"),
        ("bert_lamb.json", "64"),
        ("zero2_legacy_names.json", "2"),
    ] {
        let o = dsrs(
            &["config", "check", &ds_config(name), "--world-size", world],
            &[],
        );
        assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
        assert!(v["train_batch_size"].as_u64().unwrap() > 0, "{name}");
        assert!(v["zero_optimization"]["stage"].is_u64(), "{name}");
        let err = text(&o.stderr);
        assert!(
            err.lines().all(|l| l.starts_with("warning: ")),
            "{name}: {err}"
        );
    }
    let o = dsrs(
        &[
            "config",
            "check",
            &ds_config("zero2_legacy_names.json"),
            "--world-size",
            "2",
        ],
        &[],
    );
    assert!(text(&o.stderr).contains(
        "warning: train_micro_batch_size: unknown key, ignored as DeepSpeed ignores it; did you mean train_micro_batch_size_per_gpu?"
    ));
}

#[test]
fn config_check_reports_every_error_and_exits_1() {
    let o = dsrs(&["config", "check", &ds_config("invalid_many.json")], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    let err = text(&o.stderr);
    assert!(err.contains("error: <top>: Check batch related parameters. train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size 8 != 2 * 1 * 1\n"), "{err}");
    assert!(err.contains("error: pipeline: deepspeed_rs does not support pipeline parallelism yet; remove the \"pipeline\" section\n"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error: ")).count(),
        10,
        "{err}"
    );
    assert!(err.ends_with("invalid_many.json: 10 error(s)\n"), "{err}");

    let o = dsrs(
        &[
            "config",
            "check",
            &ds_config("hf_zero3_auto.json"),
            "--json",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"].as_array().unwrap().len(), 15);
    assert_eq!(v["errors"][0]["path"], "fp16.enabled");
    assert!(v["config"].is_null());
}

#[test]
fn config_fill_auto_then_check() {
    let dir = std::env::temp_dir().join(format!("dsrs-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let o = dsrs(
        &[
            "config",
            "fill-auto",
            &ds_config("hf_zero3_auto.json"),
            "fp16.enabled=false",
            "gradient_accumulation_steps=1",
            "gradient_clipping=1.0",
            "optimizer.params.betas=[0.9,0.999]",
            "optimizer.params.eps=1e-8",
            "optimizer.params.lr=3e-5",
            "optimizer.params.weight_decay=0",
            "scheduler.params.warmup_min_lr=0",
            "scheduler.params.warmup_max_lr=3e-5",
            "scheduler.params.warmup_num_steps=10",
            "train_batch_size=8",
            "train_micro_batch_size_per_gpu=8",
            "zero_optimization.reduce_bucket_size=1048576",
            "zero_optimization.stage3_prefetch_bucket_size=943718",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stderr),
        "warning: zero_optimization.stage3_param_persistence_threshold: still \"auto\"\n"
    );
    let filled = dir.join("filled.json");
    std::fs::write(&filled, &o.stdout).unwrap();
    let o = dsrs(&["config", "check", filled.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains(
        "error: zero_optimization.stage3_param_persistence_threshold: \"auto\" must be resolved"
    ));
    let o = dsrs(
        &[
            "config",
            "fill-auto",
            &ds_config("hf_zero3_auto.json"),
            "train_batch_size=8",
            "train_batch_size=8",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        "error: train_batch_size: holds 8, not \"auto\"; only \"auto\" values are filled in\n"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn config_usage_errors_exit_2() {
    for args in [
        &["config"][..],
        &["config", "lint"],
        &["config", "check"],
        &["config", "check", "/nonexistent/ds_config.json"],
        &["config", "check", "x.json", "--world-size", "0"],
        &["config", "check", "x.json", "--verbose"],
        &["config", "fill-auto", "x.json", "novalue"],
    ] {
        let o = dsrs(args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
    }
    let o = dsrs(&["config", "check", "/nonexistent/ds_config.json"], &[]);
    assert!(
        text(&o.stderr).starts_with("dsrs config check: cannot read /nonexistent/ds_config.json: ")
    );
}
