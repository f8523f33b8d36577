//! The ds_config parser (`deepspeed_rs::engine::config`): sample configs resolve to the
//! expected values, invalid ones give every error with its exact text and path.

use deepspeed_rs::dtype::DType;
use deepspeed_rs::engine::config::{
    self, Diagnostic, DsConfig, OptimizerKind, ParseOptions, Precision, TagValidation,
};
use deepspeed_rs::engine::lr_schedule::Schedule;
use serde_json::{Value, json};

const AUTO: &str = "\"auto\" must be resolved by the host before the engine sees the config (Hugging Face's Trainer does this); use dsrs_config_fill_auto or deepspeed_rs.config.fill_auto";

fn data(name: &str) -> String {
    let p = format!("{}/tests/data/ds_config/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn w(n: u64) -> ParseOptions {
    ParseOptions { world_size: n }
}

fn parse(v: Value) -> DsConfig {
    DsConfig::from_value(&v, &w(1)).unwrap_or_else(|e| panic!("{v}: {:?}", e.0))
}

/// The errors of `v`, as (path, message) pairs.
fn errors(v: Value) -> Vec<(String, String)> {
    errors_w(v, 1)
}

fn errors_w(v: Value, world: u64) -> Vec<(String, String)> {
    match DsConfig::from_value(&v, &w(world)) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.into_iter().map(|d| (d.path, d.message)).collect(),
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(p, m)| (p.to_string(), m.to_string()))
        .collect()
}

fn warnings(v: Value) -> Vec<(String, String)> {
    DsConfig::check(&v, &w(1))
        .warnings
        .into_iter()
        .map(|d| (d.path, d.message))
        .collect()
}

/// A config with only a batch size and whatever `extra` adds.
fn with(extra: Value) -> Value {
    let mut v = json!({"train_batch_size": 8});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

// ---------------------------------------------------------------- sample configs

#[test]
fn cifar10_example_with_comments_and_trailing_commas() {
    let cfg = DsConfig::parse_str(&data("cifar10_fp16.json"), &w(1)).unwrap();
    assert_eq!(
        (
            cfg.batch.train_batch_size,
            cfg.batch.train_micro_batch_size_per_gpu
        ),
        (16, 16)
    );
    assert_eq!(cfg.batch.gradient_accumulation_steps, 1);
    let opt = cfg.optimizer.as_ref().unwrap();
    assert_eq!(opt.type_name, "Adam");
    assert_eq!(opt.lr, 0.001);
    assert_eq!(
        opt.kind,
        OptimizerKind::Adam {
            beta1: 0.8,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 3e-7,
            adamw_mode: true,
            bias_correction: true,
            torch_adam: false
        }
    );
    let sched = cfg.scheduler.as_ref().unwrap();
    assert_eq!(sched.type_name, "WarmupLR");
    assert!(matches!(
        sched.schedule,
        Schedule::WarmupLR { warmup_max_lr: Some(m), warmup_num_steps: 1000, .. } if m == 0.001
    ));
    let Precision::Fp16 { loss_scaler } = &cfg.precision else {
        panic!("{:?}", cfg.precision)
    };
    assert_eq!(
        (
            loss_scaler.initial_scale_power,
            loss_scaler.loss_scale_window,
            loss_scaler.hysteresis
        ),
        (15, 500, 2)
    );
    assert!(loss_scaler.enabled && loss_scaler.is_dynamic());
    assert_eq!(cfg.gradient_clipping, 1.0);
    assert_eq!(cfg.steps_per_print, Some(2000));
    assert_eq!(cfg.zero.stage, 0);
    assert!(cfg.zero.overlap_comm);
    assert_eq!(cfg.zero.allgather_bucket_size, 50_000_000);
    assert_eq!(cfg.zero.offload_optimizer, None);
    assert_eq!(
        cfg.warnings,
        vec![Diagnostic {
            path: "zero_optimization.cpu_offload".into(),
            message: "Config parameter cpu_offload is deprecated use offload_optimizer instead"
                .into()
        }]
    );
}

#[test]
fn bert_lamb_example_at_two_world_sizes() {
    let text = data("bert_lamb.json");
    let cfg = DsConfig::parse_str(&text, &w(64)).unwrap();
    assert_eq!(cfg.batch.gradient_accumulation_steps, 1);
    let cfg = DsConfig::parse_str(&text, &w(1)).unwrap();
    assert_eq!(cfg.batch.gradient_accumulation_steps, 64);
    assert_eq!(cfg.batch.world_size, 1);
    let opt = cfg.optimizer.unwrap();
    assert_eq!(opt.lr, 11e-3);
    assert_eq!(
        opt.kind,
        OptimizerKind::Lamb {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            bias_correction: false,
            eps_inside_sqrt: false,
            max_coeff: 0.3,
            min_coeff: 0.01
        }
    );
    assert_eq!(cfg.checkpoint.tag_validation, TagValidation::Fail);
    assert!(cfg.csv_monitor.enabled);
    assert_eq!(cfg.csv_monitor.output_path, "logs/");
    assert_eq!(cfg.csv_monitor.job_name, "bert_lamb");
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    // W = 3 does not divide 4096 // 64: GAS = 4096 // 64 // 3 = 21.
    assert_eq!(
        DsConfig::parse_str(&text, &w(3)).unwrap_err().0,
        vec![Diagnostic {
            path: "<top>".into(),
            message: "Check batch related parameters. train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size 4096 != 64 * 21 * 3".into()
        }]
    );
}

#[test]
fn hf_config_reports_every_auto_then_resolves_once_filled() {
    let mut doc = config::read_lenient_json(&data("hf_zero3_auto.json"), "hf").unwrap();
    let expected = [
        "fp16.enabled",
        "gradient_accumulation_steps",
        "gradient_clipping",
        "optimizer.params.betas",
        "optimizer.params.eps",
        "optimizer.params.lr",
        "optimizer.params.weight_decay",
        "scheduler.params.warmup_max_lr",
        "scheduler.params.warmup_min_lr",
        "scheduler.params.warmup_num_steps",
        "train_batch_size",
        "train_micro_batch_size_per_gpu",
        "zero_optimization.reduce_bucket_size",
        "zero_optimization.stage3_param_persistence_threshold",
        "zero_optimization.stage3_prefetch_bucket_size",
    ];
    assert_eq!(config::auto_paths(&doc), expected);
    let errs = errors(doc.clone());
    let want: Vec<(String, String)> = expected
        .iter()
        .map(|p| (p.to_string(), AUTO.to_string()))
        .collect();
    assert_eq!(errs, want);

    // What HF's Trainer fills in (hidden size 1024, 4 GPUs' worth on one process).
    let h = 1024u64;
    for (path, value) in [
        ("fp16.enabled", json!(false)),
        ("gradient_accumulation_steps", json!(2)),
        ("gradient_clipping", json!(1.0)),
        ("optimizer.params.betas", json!([0.9, 0.95])),
        ("optimizer.params.eps", json!(1e-8)),
        ("optimizer.params.lr", json!(5e-5)),
        ("optimizer.params.weight_decay", json!(0.1)),
        ("scheduler.params.warmup_max_lr", json!(5e-5)),
        ("scheduler.params.warmup_min_lr", json!(0)),
        ("scheduler.params.warmup_num_steps", json!(100)),
        ("train_batch_size", json!(16)),
        ("train_micro_batch_size_per_gpu", json!(8)),
        ("zero_optimization.reduce_bucket_size", json!(h * h)),
        (
            "zero_optimization.stage3_param_persistence_threshold",
            json!(10 * h),
        ),
        // 0.9·h² is fractional for most h; accelerate rounds it (PR #2814).
        (
            "zero_optimization.stage3_prefetch_bucket_size",
            json!((0.9 * (h * h) as f64) as u64),
        ),
    ] {
        config::fill_auto(&mut doc, path, value).unwrap();
    }
    assert!(config::auto_paths(&doc).is_empty());
    let cfg = DsConfig::from_value(&doc, &w(1)).unwrap();
    assert_eq!(cfg.batch.gradient_accumulation_steps, 2);
    assert_eq!(cfg.precision, Precision::Fp32);
    let opt = cfg.optimizer.unwrap();
    assert_eq!(opt.lr, 5e-5);
    assert!(matches!(
        opt.kind,
        OptimizerKind::Adam {
            beta2: 0.95,
            adamw_mode: true,
            weight_decay: 0.1,
            ..
        }
    ));
    assert_eq!(cfg.zero.stage, 3);
    assert!(cfg.zero.cpu_offload_optimizer());
    assert!(cfg.zero.offload_optimizer.as_ref().unwrap().pin_memory);
    assert_eq!(cfg.zero.reduce_bucket_size, h * h);
    assert_eq!(cfg.zero.other["stage3_prefetch_bucket_size"], json!(943718));
    assert_eq!(
        cfg.zero.other["stage3_param_persistence_threshold"],
        json!(10240)
    );
    assert_eq!(
        cfg.zero.other["stage3_max_live_parameters"],
        json!(1_000_000_000)
    );
    assert_eq!(cfg.zero.other["sub_group_size"], json!(1_000_000_000));
    assert_eq!(
        cfg.zero.other["stage3_gather_16bit_weights_on_model_save"],
        json!(true)
    );

    // HF's unrounded 0.9·h² is rejected with the path, as pydantic v2 does.
    let mut d2 = doc.clone();
    d2["zero_optimization"]["stage3_prefetch_bucket_size"] = json!(900900.225);
    assert_eq!(
        errors(d2),
        pairs(&[(
            "zero_optimization.stage3_prefetch_bucket_size",
            "expected an integer, got 900900.225 (integer fields reject fractional values, as pydantic does; round it)"
        )])
    );
}

#[test]
fn fill_auto_errors_name_the_path() {
    let mut doc = json!({"optimizer": {"params": {"lr": 0.1, "betas": ["auto", 0.9]}}});
    config::fill_auto(&mut doc, "optimizer.params.betas[0]", json!(0.8)).unwrap();
    assert_eq!(doc["optimizer"]["params"]["betas"], json!([0.8, 0.9]));
    assert_eq!(
        config::fill_auto(&mut doc, "optimizer.params.lr", json!(1))
            .unwrap_err()
            .to_string(),
        "optimizer.params.lr: holds 0.1, not \"auto\"; only \"auto\" values are filled in"
    );
    assert_eq!(
        config::fill_auto(&mut doc, "optimizer.params.eps", json!(1))
            .unwrap_err()
            .to_string(),
        "optimizer.params.eps: no such key in the config (optimizer.params.eps is missing)"
    );
    assert_eq!(
        config::fill_auto(&mut doc, "optimizer.params.betas[5]", json!(1))
            .unwrap_err()
            .to_string(),
        "optimizer.params.betas[5]: no such element in the config (optimizer.params.betas[5] is missing)"
    );
    assert!(config::fill_auto(&mut doc, "optimizer..lr", json!(1)).is_err());
}

#[test]
fn zero2_with_aliases_and_deprecated_names() {
    let cfg = DsConfig::parse_str(&data("zero2_legacy_names.json"), &w(2)).unwrap();
    assert_eq!(cfg.batch.train_batch_size, 16);
    assert!(matches!(
        cfg.precision,
        Precision::Bf16 {
            check_grad_overflow: true
        }
    ));
    assert_eq!(cfg.grad_accum_dtype, Some(DType::F32));
    assert_eq!(cfg.zero.stage, 2);
    assert!(!cfg.zero.overlap_comm);
    let off = cfg.zero.offload_optimizer.as_ref().unwrap();
    assert_eq!(
        (
            off.device.as_str(),
            off.buffer_count,
            off.pin_memory,
            off.ratio
        ),
        ("cpu", 4, false, 1.0)
    );
    assert_eq!(
        cfg.zero.other["stage3_prefetch_bucket_size"],
        json!(50_000_000)
    );
    assert_eq!(
        cfg.zero.other["stage3_gather_16bit_weights_on_model_save"],
        json!(true)
    );
    assert_eq!(cfg.zero.allgather_bucket_size, 200_000_000);
    let opt = cfg.optimizer.as_ref().unwrap();
    assert_eq!(opt.type_name, "adamw");
    let w: Vec<(String, String)> = cfg
        .warnings
        .iter()
        .map(|d| (d.path.clone(), d.message.clone()))
        .collect();
    assert_eq!(
        w,
        pairs(&[
            (
                "cuda_visible_devices",
                "not a DeepSpeed key: DeepSpeed ignores it (choose devices with CUDA_VISIBLE_DEVICES in the environment)"
            ),
            (
                "train_micro_batch_size",
                "unknown key, ignored as DeepSpeed ignores it; did you mean train_micro_batch_size_per_gpu?"
            ),
            (
                "zero_optimization.cpu_offload",
                "Config parameter cpu_offload is deprecated use offload_optimizer instead"
            ),
            (
                "zero_optimization.cpu_offload_use_pin_memory",
                "Config parameter cpu_offload_use_pin_memory is deprecated use offload_param or offload_optimizer instead (ignored; set pin_memory in those blocks)"
            ),
            (
                "zero_optimization.stage3_gather_fp16_weights_on_model_save",
                "Config parameter stage3_gather_fp16_weights_on_model_save is deprecated use stage3_gather_16bit_weights_on_model_save instead"
            ),
        ])
    );
}

#[test]
fn invalid_sample_reports_every_error() {
    let e = DsConfig::parse_str(&data("invalid_many.json"), &w(1)).unwrap_err();
    let mut got: Vec<(String, String)> = e.0.into_iter().map(|d| (d.path, d.message)).collect();
    got.sort();
    let mut want = pairs(&[
        (
            "<top>",
            "Check batch related parameters. train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size 8 != 2 * 1 * 1",
        ),
        (
            "<top>",
            "bfloat16 and fp16 modes cannot be simultaneously enabled",
        ),
        (
            "communication_data_type",
            "Invalid communication_data_type. Supported data types: ['fp16', 'bf16', 'fp32']. Got: bfp16",
        ),
        (
            "fp16.loss_scale_windw",
            "Extra inputs are not permitted (\"loss_scale_windw\" is not a fp16 key; did you mean loss_scale_window?)",
        ),
        (
            "optimizer.type",
            "sgd is not a supported DeepSpeed Optimizer (torch.optim names are case-sensitive); did you mean SGD?",
        ),
        (
            "pipeline",
            "deepspeed_rs does not support pipeline parallelism yet; remove the \"pipeline\" section",
        ),
        (
            "tensorboard.enabled",
            "deepspeed_rs does not support the tensorboard monitor yet (only csv_monitor); set enabled to false",
        ),
        (
            "zero_optimization.offload_optimizer.device",
            "deepspeed_rs does not support NVMe offload (ZeRO-Infinity) yet; use \"cpu\" or \"none\"",
        ),
        (
            "zero_optimization.stage3_param_persitence_threshold",
            "Extra inputs are not permitted (\"stage3_param_persitence_threshold\" is not a zero_optimization key; did you mean stage3_param_persistence_threshold?)",
        ),
        (
            "zero_optimization.stage3_prefetch_bucket_size",
            "expected an integer, got 943718.4 (integer fields reject fractional values, as pydantic does; round it)",
        ),
    ]);
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn resolved_config_parses_back_to_itself() {
    for (name, world) in [
        ("cifar10_fp16.json", 1),
        ("bert_lamb.json", 64),
        ("zero2_legacy_names.json", 2),
    ] {
        let cfg = DsConfig::parse_str(&data(name), &w(world)).unwrap();
        let out = cfg.to_json();
        let back = DsConfig::from_value(&out, &w(world))
            .unwrap_or_else(|e| panic!("{name}: {:?}\n{out:#}", e.0));
        assert!(back.warnings.is_empty(), "{name}: {:?}", back.warnings);
        assert_eq!(
            DsConfig {
                warnings: vec![],
                ..back
            },
            DsConfig {
                warnings: vec![],
                ..cfg
            },
            "{name}"
        );
    }
    // Settings of disabled precision blocks survive the round trip too.
    for doc in [
        json!({"train_batch_size": 4, "fp16": {"enabled": false, "auto_cast": true},
               "bf16": {"enabled": false, "immediate_grad_update": true}}),
        json!({"train_batch_size": 4, "fp16": {"enabled": true, "auto_cast": true},
               "bf16": {"enabled": false, "immediate_grad_update": true}}),
        json!({"train_batch_size": 4, "fp16": {"enabled": false, "auto_cast": true},
               "bf16": {"enabled": true, "immediate_grad_update": true}}),
    ] {
        let cfg = parse(doc.clone());
        let back = DsConfig::from_value(&cfg.to_json(), &w(1)).unwrap();
        assert_eq!(back, cfg, "{doc}");
    }
    let out = parse(json!({"train_batch_size": 4})).to_json();
    assert_eq!(out["zero_optimization"]["stage"], json!(0));
    assert_eq!(out["zero_optimization"]["overlap_comm"], json!(false));
    assert_eq!(
        out["zero_optimization"]["stage3_prefetch_bucket_size"],
        json!(50_000_000)
    );
    assert_eq!(
        out["zero_optimization"]["stage3_model_persistence_threshold"],
        json!(i64::MAX)
    );
    assert_eq!(out["steps_per_print"], Value::Null);
    assert_eq!(
        out["csv_monitor"],
        json!({"enabled": false, "output_path": "", "job_name": "DeepSpeedJobName"})
    );
    assert_eq!(
        out["timers"],
        json!({"throughput": {"enabled": true, "synchronized": true}})
    );
    assert!(out.get("optimizer").is_none());
}

// ---------------------------------------------------------------- lenient JSON

#[test]
fn lenient_json_and_duplicates() {
    let v = config::read_lenient_json("{\"a\": \"http://x#y\", # c\n \"b\": [1,/* c */ 2,],}", "f")
        .unwrap();
    assert_eq!(v, json!({"a": "http://x#y", "b": [1, 2]}));
    let e = config::read_lenient_json("{\n  \"x\": 1,\n  \"x\": 2\n}", "ds.json").unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid JSON in ds.json: duplicate key \"x\" in the top level (DeepSpeed rejects duplicate keys) at line 3 column 5"
    );
    let e = DsConfig::parse_str("{\"train_batch_size\": 8,,}", &w(1)).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].path, "<top>");
    assert!(
        e.0[0].message.starts_with("invalid JSON in ds_config: "),
        "{}",
        e.0[0].message
    );
    assert!(
        e.0[0]
            .message
            .ends_with("trailing comma at line 1 column 25"),
        "{}",
        e.0[0].message
    );
}

// ---------------------------------------------------------------- batch rule

/// DeepSpeed's batch rule as the reference describes it (section 2.1), independently.
fn reference_rule(
    tb: Option<u64>,
    mb: Option<u64>,
    gas: Option<u64>,
    w: u64,
) -> Result<(u64, u64, u64), Vec<String>> {
    let (tb, mb, gas) = match (tb, mb, gas) {
        (Some(t), Some(m), Some(g)) => (t, m, g),
        (Some(t), Some(m), None) => (t, m, t / m / w),
        (Some(t), None, Some(g)) => (t, t / w / g, g),
        (None, Some(m), Some(g)) => (m * g * w, m, g),
        (Some(t), None, None) => (t, t / w, 1),
        (None, Some(m), None) => (m * w, m, 1),
        _ => {
            return Err(vec![
                "Either train_batch_size or train_micro_batch_size_per_gpu needs to be provided"
                    .into(),
            ]);
        }
    };
    let mut errs = Vec::new();
    if tb == 0 {
        errs.push(format!("Train batch size: {tb} has to be greater than 0"));
    }
    if mb == 0 {
        errs.push(format!(
            "Micro batch size per gpu: {mb} has to be greater than 0"
        ));
    }
    if gas == 0 {
        errs.push(format!(
            "Gradient accumulation steps: {gas} has to be greater than 0"
        ));
    }
    if errs.is_empty() && tb != mb * gas * w {
        errs.push(format!("Check batch related parameters. train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size {tb} != {mb} * {gas} * {w}"));
    }
    if errs.is_empty() {
        Ok((tb, mb, gas))
    } else {
        Err(errs)
    }
}

#[test]
fn batch_rule_matches_the_reference_over_every_combination() {
    let values = [1u64, 2, 3, 4, 6, 8, 16, 32];
    let mut checked = 0;
    let mut failures = 0;
    for mask in 1u8..8 {
        for world in [1u64, 2, 3, 4, 8] {
            for &a in &values {
                for &b in &values {
                    for &c in &[1u64, 2, 4] {
                        let tb = (mask & 1 != 0).then_some(a * 4);
                        let mb = (mask & 2 != 0).then_some(b);
                        let gas = (mask & 4 != 0).then_some(c);
                        let mut doc = json!({});
                        if let Some(x) = tb {
                            doc["train_batch_size"] = json!(x);
                        }
                        if let Some(x) = mb {
                            doc["train_micro_batch_size_per_gpu"] = json!(x);
                        }
                        if let Some(x) = gas {
                            doc["gradient_accumulation_steps"] = json!(x);
                        }
                        let want = reference_rule(tb, mb, gas, world);
                        let got = DsConfig::from_value(&doc, &w(world))
                            .map(|c| {
                                (
                                    c.batch.train_batch_size,
                                    c.batch.train_micro_batch_size_per_gpu,
                                    c.batch.gradient_accumulation_steps,
                                )
                            })
                            .map_err(|e| e.0.into_iter().map(|d| d.message).collect::<Vec<_>>());
                        assert_eq!(got, want, "{doc} at W={world}");
                        if let Ok(c) = DsConfig::from_value(&doc, &w(world)) {
                            assert_eq!(c.batch.world_size, world);
                        } else {
                            failures += 1;
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 7 * 5 * 8 * 8 * 3);
    assert!(
        failures > 100 && failures < checked - 100,
        "{failures} of {checked}"
    );
    // only GAS, or nothing
    for doc in [json!({"gradient_accumulation_steps": 4}), json!({})] {
        assert_eq!(
            errors(doc),
            pairs(&[(
                "<top>",
                "Either train_batch_size or train_micro_batch_size_per_gpu needs to be provided"
            )])
        );
    }
}

#[test]
fn batch_messages_are_deepspeeds() {
    assert_eq!(
        errors(json!({"train_batch_size": 0})),
        pairs(&[
            (
                "train_batch_size",
                "Train batch size: 0 has to be greater than 0"
            ),
            (
                "train_micro_batch_size_per_gpu",
                "Micro batch size per gpu: 0 has to be greater than 0"
            ),
        ])
    );
    // 2 // 4 == 0: the quotient fails
    assert_eq!(
        errors_w(json!({"train_batch_size": 2}), 4),
        pairs(&[(
            "train_micro_batch_size_per_gpu",
            "Micro batch size per gpu: 0 has to be greater than 0"
        )])
    );
    assert_eq!(
        errors(
            json!({"train_batch_size": 8, "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 0})
        ),
        pairs(&[(
            "gradient_accumulation_steps",
            "Gradient accumulation steps: 0 has to be greater than 0"
        )])
    );
    // a zero divisor (ZeroDivisionError in DeepSpeed) is reported as the positivity check
    assert_eq!(
        errors(json!({"train_batch_size": 8, "train_micro_batch_size_per_gpu": 0})),
        pairs(&[(
            "train_micro_batch_size_per_gpu",
            "Micro batch size per gpu: 0 has to be greater than 0"
        )])
    );
    // integral floats are integers; fractional, negative and bool values are not
    let c = parse(json!({"train_batch_size": 1e3, "train_micro_batch_size_per_gpu": 1.25e2}));
    assert_eq!(c.batch.gradient_accumulation_steps, 8);
    assert_eq!(
        errors(
            json!({"train_batch_size": 2.5, "train_micro_batch_size_per_gpu": -1, "gradient_accumulation_steps": true})
        ),
        pairs(&[
            (
                "train_batch_size",
                "expected a non-negative integer, got 2.5 (a batch size is a whole number)"
            ),
            (
                "train_micro_batch_size_per_gpu",
                "expected a non-negative integer, got -1"
            ),
            (
                "gradient_accumulation_steps",
                "expected a non-negative integer, got true"
            ),
        ])
    );
    assert_eq!(
        errors_w(json!({"train_batch_size": 8}), 0),
        pairs(&[("<top>", "the world size must be at least 1")])
    );
}

// ---------------------------------------------------------------- optimizer

fn opt(ty: &str, params: Value) -> Value {
    with(json!({"optimizer": {"type": ty, "params": params}}))
}

#[test]
fn optimizer_type_resolution() {
    for (ty, adamw) in [
        ("Adam", true),
        ("ADAM", true),
        ("adamw", true),
        ("AdamW", true),
    ] {
        let c = parse(opt(ty, json!({})));
        let o = c.optimizer.unwrap();
        assert_eq!(o.type_name, ty);
        assert_eq!(o.lr, 1e-3);
        assert!(
            matches!(o.kind, OptimizerKind::Adam { adamw_mode, eps, .. } if adamw_mode == adamw && eps == 1e-8)
        );
    }
    // "Adam" with adam_w_mode false is L2 Adam; "AdamW" is AdamW whatever adam_w_mode says.
    let o = parse(opt("Adam", json!({"adam_w_mode": false})))
        .optimizer
        .unwrap();
    assert!(matches!(
        o.kind,
        OptimizerKind::Adam {
            adamw_mode: false,
            ..
        }
    ));
    let o = parse(opt("AdamW", json!({"adam_w_mode": false})))
        .optimizer
        .unwrap();
    assert!(matches!(
        o.kind,
        OptimizerKind::Adam {
            adamw_mode: true,
            ..
        }
    ));
    let o = parse(opt("Adagrad", json!({}))).optimizer.unwrap();
    assert_eq!(o.lr, 1e-2);
    assert_eq!(
        o.kind,
        OptimizerKind::Adagrad {
            eps: 1e-10,
            weight_decay: 0.0
        }
    );
    let o = parse(opt("Lion", json!({"betas": [0.95, 0.98]})))
        .optimizer
        .unwrap();
    assert_eq!(
        o.kind,
        OptimizerKind::Lion {
            beta1: 0.95,
            beta2: 0.98,
            weight_decay: 0.0
        }
    );
    let o = parse(opt(
        "SGD",
        json!({"lr": 0.1, "momentum": 0.9, "nesterov": true}),
    ))
    .optimizer
    .unwrap();
    assert_eq!(
        o.kind,
        OptimizerKind::Sgd {
            momentum: 0.9,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: true
        }
    );
    assert!(parse(with(json!({}))).optimizer.is_none());

    let cases = [
        (
            "sgd",
            "sgd is not a supported DeepSpeed Optimizer (torch.optim names are case-sensitive); did you mean SGD?",
        ),
        (
            "Adma",
            "Adma is not a supported DeepSpeed Optimizer; did you mean Adam?",
        ),
        (
            "Frobnicate",
            "Frobnicate is not a supported DeepSpeed Optimizer",
        ),
        (
            "RMSprop",
            "torch.optim.RMSprop is not supported by deepspeed_rs yet; supported: Adam, AdamW, Lamb, Lion, Adagrad, SGD",
        ),
        (
            "OneBitAdam",
            "OneBitAdam is not supported by deepspeed_rs yet (1-bit Adam/LAMB, 0/1 Adam and the mu-P optimizers are not implemented); supported: Adam, AdamW, Lamb, Lion, Adagrad, SGD",
        ),
    ];
    for (ty, msg) in cases {
        assert_eq!(
            errors(opt(ty, json!({"lr": 0.1}))),
            pairs(&[("optimizer.type", msg)]),
            "{ty}"
        );
    }
    for ty in ["ZeroOneAdam", "onebitlamb", "MuAdam", "muadamw", "MuSGD"] {
        assert_eq!(errors(opt(ty, json!({}))).len(), 1, "{ty}");
    }
    assert_eq!(
        errors(with(json!({"optimizer": {"params": {"lr": 1}}}))),
        pairs(&[(
            "optimizer.type",
            "missing (DeepSpeed silently ignores an optimizer block without a type; give one of Adam, AdamW, Lamb, Lion, Adagrad, SGD)"
        )])
    );
}

#[test]
fn optimizer_params_are_checked() {
    assert_eq!(
        errors(opt("Adam", json!({"max_grad_norm": 1.0}))),
        pairs(&[(
            "optimizer.params.max_grad_norm",
            "'max_grad_norm' is not supported as an optimizer parameter, please switch to using the deepspeed parameter 'gradient_clipping' see: https://www.deepspeed.ai/docs/config-json/#gradient-clipping for more details"
        )])
    );
    assert_eq!(errors(opt("Lamb", json!({"max_grad_norm": 1.0}))).len(), 1);
    assert_eq!(
        errors(opt("Adam", json!({"amsgrad": true}))),
        pairs(&[(
            "optimizer.params.amsgrad",
            "FusedAdam does not support the AMSGrad variant."
        )])
    );
    assert_eq!(
        errors(opt("Adam", json!({"weight_decy": 0.1}))),
        pairs(&[(
            "optimizer.params.weight_decy",
            "unexpected keyword argument for FusedAdam (torch would raise TypeError: __init__() got an unexpected keyword argument 'weight_decy'); valid: lr, betas, eps, weight_decay, bias_correction, adam_w_mode, torch_adam, amsgrad, set_grad_none; did you mean weight_decay?"
        )])
    );
    assert_eq!(
        errors(opt(
            "Adam",
            json!({"betas": [0.9, 1.5], "eps": 0, "lr": -1, "weight_decay": -0.1})
        )),
        pairs(&[
            (
                "optimizer.params.lr",
                "expected a non-negative number, got -1"
            ),
            (
                "optimizer.params.weight_decay",
                "expected a non-negative number, got -0.1"
            ),
            (
                "optimizer.params.betas[1]",
                "expected a number in [0, 1), got 1.5"
            ),
            ("optimizer.params.eps", "expected a positive number, got 0"),
        ])
    );
    assert_eq!(
        errors(opt("Adam", json!({"betas": [0.9]}))),
        pairs(&[(
            "optimizer.params.betas",
            "expected two numbers [beta1, beta2], got [0.9]"
        )])
    );
    assert_eq!(
        errors(opt("SGD", json!({"momentum": 0.9}))),
        pairs(&[(
            "optimizer.params.lr",
            "required for SGD (torch.optim.SGD has no usable default learning rate in the releases DeepSpeed supports)"
        )])
    );
    assert_eq!(
        errors(opt(
            "SGD",
            json!({"lr": 0.1, "nesterov": true, "momentum": 0.9, "dampening": 0.1})
        )),
        pairs(&[(
            "optimizer.params.nesterov",
            "Nesterov momentum requires a momentum and zero dampening"
        )])
    );
    assert_eq!(
        errors(opt("SGD", json!({"lr": 0.1, "nesterov": true}))),
        pairs(&[(
            "optimizer.params.nesterov",
            "Nesterov momentum requires a momentum and zero dampening"
        )])
    );
    assert_eq!(
        errors(opt("Lamb", json!({"bias_correction": "yes"}))),
        pairs(&[(
            "optimizer.params.bias_correction",
            "expected true or false, got \"yes\""
        )])
    );
    // accepted: torch_adam, legacy_fusion
    let c = parse(with(
        json!({"optimizer": {"type": "Adam", "legacy_fusion": false, "params": {"torch_adam": true}}}),
    ));
    assert!(matches!(
        c.optimizer.unwrap().kind,
        OptimizerKind::Adam {
            torch_adam: true,
            ..
        }
    ));
}

#[test]
fn untested_optimizers_under_zero() {
    let msg = "You are using an untested ZeRO Optimizer. Please add <\"zero_allow_untested_optimizer\": true> in the configuration file to use it.";
    for ty in ["Lamb", "SGD"] {
        let doc = with(
            json!({"optimizer": {"type": ty, "params": {"lr": 0.1}}, "zero_optimization": {"stage": 1}}),
        );
        assert_eq!(
            errors(doc.clone()),
            pairs(&[("optimizer.type", msg)]),
            "{ty}"
        );
        let mut ok = doc;
        ok["zero_allow_untested_optimizer"] = json!(true);
        assert!(parse(ok).zero_allow_untested_optimizer);
    }
    for ty in ["Adam", "AdamW", "Adagrad", "Lion"] {
        parse(with(
            json!({"optimizer": {"type": ty}, "zero_optimization": {"stage": 2}}),
        ));
    }
    assert_eq!(
        errors(with(
            json!({"optimizer": {"type": "Lamb"}, "zero_allow_untested_optimizer": true,
            "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}})
        )),
        pairs(&[(
            "zero_optimization.offload_optimizer.device",
            "optimizer offload needs a CPU optimizer, and there is none for Lamb (offload works with Adam, AdamW, Adagrad and Lion)"
        )])
    );
}

// ---------------------------------------------------------------- precision and scalars

#[test]
fn precision_blocks() {
    assert_eq!(parse(with(json!({}))).precision, Precision::Fp32);
    assert_eq!(
        parse(with(json!({"fp16": {"enabled": false}}))).precision,
        Precision::Fp32
    );
    let c = parse(with(json!({"fp16": {"enabled": true, "auto_cast": true}})));
    assert!(c.fp16_auto_cast);
    let Precision::Fp16 { loss_scaler } = c.precision else {
        panic!()
    };
    assert_eq!(
        (loss_scaler.initial_scale_power, loss_scaler.hysteresis),
        (16, 2)
    );
    let c = parse(with(
        json!({"bf16": {"enabled": true, "check_grad_overflow": false, "immediate_grad_update": true}}),
    ));
    assert_eq!(
        c.precision,
        Precision::Bf16 {
            check_grad_overflow: false
        }
    );
    assert!(c.bf16_immediate_grad_update);
    assert_eq!(
        parse(with(json!({"bfloat16": {"enabled": true}}))).precision,
        Precision::Bf16 {
            check_grad_overflow: true
        }
    );
    assert_eq!(
        errors(with(
            json!({"bf16": {"enabled": true}, "bfloat16": {"enabled": true}})
        )),
        pairs(&[(
            "bfloat16",
            "bf16 and bfloat16 are the same section (bfloat16 is the legacy spelling); give only one"
        )])
    );
    assert_eq!(
        errors(with(json!({"bf16": {"enabled": true, "loss_scale": 0}}))),
        pairs(&[(
            "bf16.loss_scale",
            "Extra inputs are not permitted (\"loss_scale\" is not a bf16 key)"
        )])
    );
    assert_eq!(
        errors(with(
            json!({"bf16": {"enabled": true, "bf16_optimizer_states": true}})
        )),
        pairs(&[(
            "bf16.bf16_optimizer_states",
            "bf16_optimizer_states is not supported by deepspeed_rs yet; set it to false (master weights and optimizer states are fp32)"
        )])
    );
    assert_eq!(
        errors(with(
            json!({"fp16": {"enabled": true, "loss_scale_window": 0}})
        )),
        pairs(&[(
            "fp16.loss_scale_window",
            "expected a positive integer, got 0"
        )])
    );
    assert_eq!(
        errors(with(
            json!({"fp16": {"enabled": true, "fp16_master_weights_and_grads": true}})
        )),
        pairs(&[(
            "fp16.fp16_master_weights_and_grads",
            "Fp16_master_weights_and_grads is only supported with ZeRO Stage 2 for now."
        )])
    );
    assert_eq!(
        errors(with(
            json!({"fp16": {"enabled": true, "fp16_master_weights_and_grads": true},
            "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}})
        )),
        pairs(&[(
            "fp16.fp16_master_weights_and_grads",
            "fp16_master_weights_and_grads is not supported by deepspeed_rs yet; set it to false"
        )])
    );
    assert_eq!(
        errors(with(json!({"amp": {"enabled": true, "opt_level": "O1"}}))),
        pairs(&[(
            "amp.enabled",
            "deepspeed_rs does not support Apex AMP; use the \"fp16\" or \"bf16\" section instead"
        )])
    );
    parse(with(json!({"amp": {"enabled": false}})));
}

#[test]
fn data_types_and_scalars() {
    for (s, t) in [
        ("fp32", DType::F32),
        ("float", DType::F32),
        ("torch.float16", DType::F16),
        ("half", DType::F16),
        ("bf16", DType::BF16),
        ("bfloat16", DType::BF16),
    ] {
        assert_eq!(
            parse(with(json!({"data_types": {"grad_accum_dtype": s}}))).grad_accum_dtype,
            Some(t),
            "{s}"
        );
    }
    assert_eq!(
        errors(with(json!({"data_types": {"grad_accum_dtype": "int8"}}))),
        pairs(&[(
            "data_types.grad_accum_dtype",
            "\"int8\" is not a valid DtypeEnum; expected \"fp32\", \"fp16\" or \"bf16\" (or float32, float, float16, half, bfloat16, torch.float32, ...)"
        )])
    );
    let c = parse(with(
        json!({"communication_data_type": "FP16", "seq_parallel_comm_data_type": "bf16"}),
    ));
    assert_eq!(c.communication_data_type, Some(DType::F16));
    assert_eq!(c.seq_parallel_communication_data_type, DType::BF16);
    let c = parse(with(
        json!({"seq_parallel_communication_data_type": "fp16"}),
    ));
    assert_eq!(c.seq_parallel_communication_data_type, DType::F16);
    assert_eq!(
        errors(with(json!({"seq_parallel_comm_data_type": "fp8"}))),
        pairs(&[(
            "seq_parallel_comm_data_type",
            "Invalid communication_data_type. Supported data types: ['fp16', 'bf16', 'fp32']. Got: fp8"
        )])
    );
    let c = parse(with(json!({})));
    assert_eq!(
        (
            c.gradient_clipping,
            c.gradient_predivide_factor,
            c.steps_per_print
        ),
        (0.0, 1.0, None)
    );
    assert!(c.zero_force_ds_cpu_optimizer && !c.zero_allow_untested_optimizer);
    assert_eq!(c.checkpoint.tag_validation, TagValidation::Warn);
    let c = parse(with(
        json!({"steps_per_print": 1e5, "gradient_clipping": 1, "memory_breakdown": true,
        "dump_state": true, "dataloader_drop_last": true, "checkpoint": {"tag_validation": "IGNORE", "load_universal": true},
        "timers": {"throughput": {"enabled": false}}, "comms_logger": {"enabled": true, "prof_ops": ["all_reduce"]}}),
    ));
    assert_eq!(c.steps_per_print, Some(100000));
    assert_eq!(c.gradient_clipping, 1.0);
    assert!(c.memory_breakdown && c.dump_state && c.dataloader_drop_last);
    assert_eq!(c.checkpoint.tag_validation, TagValidation::Ignore);
    assert!(c.checkpoint.load_universal);
    assert!(!c.throughput_timer.enabled && c.throughput_timer.synchronized);
    assert_eq!(c.comms_logger.prof_ops, ["all_reduce"]);
    assert_eq!(
        errors(with(
            json!({"gradient_clipping": -1, "gradient_predivide_factor": 0, "steps_per_print": 0,
            "prescale_gradients": 1, "checkpoint": {"tag_validation": "Strict"}})
        )),
        pairs(&[
            (
                "gradient_clipping",
                "expected a non-negative number, got -1"
            ),
            ("prescale_gradients", "expected true or false, got 1"),
            (
                "gradient_predivide_factor",
                "expected a positive number, got 0"
            ),
            ("steps_per_print", "expected a positive integer, got 0"),
            (
                "checkpoint.tag_validation",
                "Checkpoint config contains invalid tag_validation value of STRICT, expecting one of ['WARN', 'IGNORE', 'FAIL']"
            ),
        ])
    );
    assert_eq!(
        warnings(with(json!({"vocabulary_size": 50257}))),
        pairs(&[(
            "vocabulary_size",
            "DeepSpeedConfig: vocabulary size 50257 is not aligned to 8, may import tensor core utilization."
        )])
    );
    assert_eq!(
        errors(with(
            json!({"zero_optimization": {"stage": 2}, "gradient_predivide_factor": 2.0, "prescale_gradients": true})
        )),
        pairs(&[
            (
                "gradient_predivide_factor",
                "gradient_predivide_factor != 1.0 is not yet supported with ZeRO-2 with reduce scatter enabled"
            ),
            (
                "prescale_gradients",
                "pre-scale gradients is not yet supported with ZeRO-2 with reduce scatter enabled"
            ),
        ])
    );
}

#[test]
fn monitors_are_strict() {
    let c = parse(with(
        json!({"csv_monitor": {"enabled": true}, "tensorboard": {"enabled": false, "output_path": "x"},
        "wandb": {"enabled": false, "project": "p"}, "comet": {"enabled": false}}),
    ));
    assert_eq!(c.csv_monitor.job_name, "DeepSpeedJobName");
    assert_eq!(c.csv_monitor.output_path, "");
    assert_eq!(
        errors(with(
            json!({"csv_monitor": {"enabled": true, "output_dir": "x"}, "wandb": {"enabled": true}, "comet": {"enabled": true}})
        )),
        pairs(&[
            (
                "wandb.enabled",
                "deepspeed_rs does not support the wandb monitor yet (only csv_monitor); set enabled to false"
            ),
            (
                "comet.enabled",
                "deepspeed_rs does not support the comet monitor yet (only csv_monitor); set enabled to false"
            ),
            (
                "csv_monitor.output_dir",
                "Extra inputs are not permitted (\"output_dir\" is not a csv_monitor key; did you mean output_path?)"
            ),
        ])
    );
    assert_eq!(
        errors(with(
            json!({"timers": {"throughput": {"enabled": true, "sync": true}}})
        )),
        pairs(&[(
            "timers.throughput.sync",
            "Extra inputs are not permitted (\"sync\" is not a timers.throughput key)"
        )])
    );
}

#[test]
fn unknown_top_level_keys_are_warnings_with_suggestions() {
    assert_eq!(
        warnings(with(
            json!({"gradient_cliping": 1.0, "monitor_config": {"csv_monitor": {"enabled": true}},
            "comms_config": {}, "zero_optimisation": {"stage": 1}, "something_else": 1})
        )),
        pairs(&[
            (
                "comms_config",
                "not a DeepSpeed key: DeepSpeed ignores it; the communication logger is the top-level comms_logger"
            ),
            (
                "gradient_cliping",
                "unknown key, ignored as DeepSpeed ignores it; did you mean gradient_clipping?"
            ),
            (
                "monitor_config",
                "not a DeepSpeed key: DeepSpeed ignores it, so monitors nested in it do nothing; put csv_monitor, tensorboard or wandb at the top level"
            ),
            (
                "something_else",
                "unknown key, ignored as DeepSpeed ignores it"
            ),
            (
                "zero_optimisation",
                "unknown key, ignored as DeepSpeed ignores it; did you mean zero_optimization?"
            ),
        ])
    );
    // old-style sections warn too
    assert_eq!(
        warnings(with(
            json!({"checkpoint": {"tag_validaton": "Warn"}, "optimizer": {"type": "Adam", "parms": {}}})
        )),
        pairs(&[
            (
                "optimizer.parms",
                "unknown key, ignored as DeepSpeed ignores it; did you mean params?"
            ),
            (
                "checkpoint.tag_validaton",
                "unknown key, ignored as DeepSpeed ignores it; did you mean tag_validation?"
            ),
        ])
    );
}

#[test]
fn every_unsupported_feature_is_named() {
    let cases: &[(Value, &str, &str)] = &[
        (
            json!({"pipeline": {"stages": 2}}),
            "pipeline",
            "deepspeed_rs does not support pipeline parallelism yet; remove the \"pipeline\" section",
        ),
        (
            json!({"moe": {"ep_size": 2}}),
            "moe",
            "deepspeed_rs does not support mixture of experts (expert parallelism) yet; remove the \"moe\" section",
        ),
        (
            json!({"expert_parallel_size": 2}),
            "expert_parallel_size",
            "deepspeed_rs does not support mixture of experts (expert parallelism) yet; remove the key",
        ),
        (
            json!({"sparse_attention": {"mode": "fixed"}}),
            "sparse_attention",
            "deepspeed_rs does not support sparse attention yet; remove the \"sparse_attention\" section",
        ),
        (
            json!({"aio": {"block_size": 1048576}}),
            "aio",
            "deepspeed_rs does not support asynchronous I/O (it serves NVMe offload) yet; remove the \"aio\" section",
        ),
        (
            json!({"compression_training": {"weight_quantization": {}}}),
            "compression_training",
            "deepspeed_rs does not support compression training yet; remove the \"compression_training\" section",
        ),
        (
            json!({"elasticity": {"enabled": true}}),
            "elasticity.enabled",
            "deepspeed_rs does not support elastic training yet; set enabled to false or remove the \"elasticity\" section",
        ),
        (
            json!({"autotuning": {"enabled": true}}),
            "autotuning.enabled",
            "deepspeed_rs does not support autotuning yet; set enabled to false or remove the \"autotuning\" section",
        ),
        (
            json!({"hybrid_engine": {"enabled": true}}),
            "hybrid_engine.enabled",
            "deepspeed_rs does not support the hybrid engine yet; set enabled to false or remove the \"hybrid_engine\" section",
        ),
        (
            json!({"data_efficiency": {"enabled": true}}),
            "data_efficiency.enabled",
            "deepspeed_rs does not support data efficiency (curriculum learning, random-LTD) yet; set enabled to false or remove the \"data_efficiency\" section",
        ),
        (
            json!({"curriculum_learning": {"enabled": true}}),
            "curriculum_learning.enabled",
            "deepspeed_rs does not support curriculum learning yet; set enabled to false or remove the \"curriculum_learning\" section",
        ),
        (
            json!({"progressive_layer_drop": {"enabled": true}}),
            "progressive_layer_drop.enabled",
            "deepspeed_rs does not support progressive layer drop yet; set enabled to false or remove the \"progressive_layer_drop\" section",
        ),
        (
            json!({"eigenvalue": {"enabled": true}}),
            "eigenvalue.enabled",
            "deepspeed_rs does not support eigenvalue computation yet; set enabled to false or remove the \"eigenvalue\" section",
        ),
        (
            json!({"quantize_training": {"enabled": true}}),
            "quantize_training.enabled",
            "deepspeed_rs does not support quantization-aware training yet; set enabled to false or remove the \"quantize_training\" section",
        ),
        (
            json!({"flops_profiler": {"enabled": true}}),
            "flops_profiler.enabled",
            "deepspeed_rs does not support the flops profiler yet; set enabled to false or remove the \"flops_profiler\" section",
        ),
        (
            json!({"tensor_parallel": {"autotp_size": 2}}),
            "tensor_parallel.autotp_size",
            "deepspeed_rs does not support tensor parallelism (AutoTP) yet; got 2, use 0 or 1",
        ),
        (
            json!({"sparse_gradients": true}),
            "sparse_gradients",
            "deepspeed_rs does not support sparse gradients yet; set it to false",
        ),
        (
            json!({"zero_optimization": {"stage": 3, "zero_quantized_weights": true}}),
            "zero_optimization.zero_quantized_weights",
            "deepspeed_rs does not support ZeRO++ quantized communication yet; set it to false",
        ),
        (
            json!({"zero_optimization": {"stage": 3, "zero_quantized_gradients": true}}),
            "zero_optimization.zero_quantized_gradients",
            "deepspeed_rs does not support ZeRO++ quantized communication yet; set it to false",
        ),
        (
            json!({"zero_optimization": {"stage": 3, "zero_hpz_partition_size": 8}}),
            "zero_optimization.zero_hpz_partition_size",
            "deepspeed_rs does not support ZeRO++ hierarchical partitioning (hpZ) yet; got 8, use 1",
        ),
        (
            json!({"zero_optimization": {"stage": 3, "mics_shard_size": 8}}),
            "zero_optimization.mics_shard_size",
            "deepspeed_rs does not support MiCS yet; got 8, use -1",
        ),
        (
            json!({"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}}}),
            "zero_optimization.offload_param.device",
            "deepspeed_rs does not support parameter offload (ZeRO-3 offload_param to cpu) yet; remove offload_param or set its device to \"none\"",
        ),
        (
            json!({"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "nvme", "nvme_path": "/nvme"}}}),
            "zero_optimization.offload_optimizer.device",
            "deepspeed_rs does not support NVMe offload (ZeRO-Infinity) yet; use \"cpu\" or \"none\"",
        ),
    ];
    for (extra, path, msg) in cases {
        assert_eq!(
            errors(with(extra.clone())),
            pairs(&[(path, msg)]),
            "{extra}"
        );
    }
    // disabled or empty: fine
    parse(with(
        json!({"elasticity": {"enabled": false}, "pipeline": {}, "tensor_parallel": {"autotp_size": 1},
        "flops_profiler": {"enabled": false, "profile_step": 1}, "tensorboard": {"enabled": false}}),
    ));
    // activation checkpointing belongs to the host: a warning
    assert_eq!(
        warnings(with(
            json!({"activation_checkpointing": {"partition_activations": true, "number_checkpoints": 4}})
        )),
        pairs(&[(
            "activation_checkpointing",
            "has no effect in deepspeed_rs: the host runs the forward pass, so activation checkpointing is the host's to do (DeepSpeed applies these settings only through deepspeed.checkpointing, which the model calls)"
        )])
    );
}

// ---------------------------------------------------------------- zero_optimization

fn zero(z: Value) -> Value {
    with(json!({"zero_optimization": z}))
}

#[test]
fn zero_defaults_and_aliases() {
    let c = parse(zero(json!({"stage": 3})));
    assert!(c.zero.overlap_comm && c.zero.contiguous_gradients && c.zero.reduce_scatter);
    assert_eq!(c.zero.reduce_bucket_size, 500_000_000);
    assert_eq!(
        c.zero.other["stage3_param_persistence_threshold"],
        json!(100_000)
    );
    assert_eq!(c.zero.other["mics_shard_size"], json!(-1));
    assert_eq!(c.zero.other["zeropp_loco_param"], Value::Null);
    assert!(!parse(zero(json!({"stage": 2}))).zero.overlap_comm);
    assert!(
        !parse(zero(json!({"stage": 3, "overlap_comm": false})))
            .zero
            .overlap_comm
    );
    // populate_by_name: the un-prefixed names
    let c = parse(zero(
        json!({"stage": 3, "max_live_parameters": 3e8, "gather_16bit_weights_on_model_save": true}),
    ));
    assert_eq!(
        c.zero.other["stage3_max_live_parameters"],
        json!(300_000_000)
    );
    assert_eq!(
        c.zero.other["stage3_gather_16bit_weights_on_model_save"],
        json!(true)
    );
    // old bool form: stage 1, allgather_size from the top level
    let c = parse(with(
        json!({"zero_optimization": true, "allgather_size": 1e8}),
    ));
    assert_eq!(
        (c.zero.stage, c.zero.allgather_bucket_size),
        (1, 100_000_000)
    );
    assert_eq!(
        warnings(with(json!({"zero_optimization": false}))),
        pairs(&[(
            "zero_optimization",
            "this format of ZeRO optimization setup is deprecated (a bool means stage 1); use {\"stage\": 1} and the other zero_optimization keys"
        )])
    );
    // cpu_offload_param maps to offload_param (then unsupported)
    assert_eq!(
        errors(zero(json!({"stage": 3, "cpu_offload_param": true}))),
        pairs(&[(
            "zero_optimization.offload_param.device",
            "deepspeed_rs does not support parameter offload (ZeRO-3 offload_param to cpu) yet; remove offload_param or set its device to \"none\""
        )])
    );
    let c = parse(zero(
        json!({"stage": 1, "offload_optimizer": {"device": "none"}}),
    ));
    assert!(!c.zero.cpu_offload_optimizer());
    assert!(!c.zero.offload_optimizer.unwrap().is_enabled());
    let c = parse(zero(
        json!({"stage": 3, "offload_optimizer": {"device": "cpu", "ratio": 0.3, "buffer_count": 8, "fast_init": true}}),
    ));
    let o = c.zero.offload_optimizer.unwrap();
    assert_eq!(
        (o.ratio, o.buffer_count, &o.other["fast_init"]),
        (0.3, 8, &json!(true))
    );
}

#[test]
fn zero_errors() {
    let cases: &[(Value, &[(&str, &str)])] = &[
        (
            json!({"stage": 4}),
            &[(
                "zero_optimization.stage",
                "DeepSpeedConfig: Maximum supported ZeRO stage is 3 (got 4)",
            )],
        ),
        (
            json!({"stage": "2"}),
            &[(
                "zero_optimization.stage",
                "expected 0, 1, 2 or 3, got \"2\"",
            )],
        ),
        (
            json!({"stage": 3, "stage3_prefetch_bucket_size": 1, "prefetch_bucket_size": 2}),
            &[(
                "zero_optimization.prefetch_bucket_size",
                "given twice, as stage3_prefetch_bucket_size and as prefetch_bucket_size (the same field); keep one",
            )],
        ),
        (
            json!({"stage": 2, "cpu_offload": true, "offload_optimizer": {"device": "cpu"}}),
            &[(
                "zero_optimization.cpu_offload",
                "Cannot provide deprecated parameter 'cpu_offload' and replacing parameter 'offload_optimizer' together",
            )],
        ),
        (
            json!({"stage": 3, "stage3_gather_fp16_weights_on_model_save": true, "stage3_gather_16bit_weights_on_model_save": true}),
            &[(
                "zero_optimization.stage3_gather_fp16_weights_on_model_save",
                "Cannot provide deprecated parameter 'stage3_gather_fp16_weights_on_model_save' and replacing parameter 'stage3_gather_16bit_weights_on_model_save' together",
            )],
        ),
        (
            json!({"stage": 3, "stage3_param_persitance_threshold": 1e5}),
            &[(
                "zero_optimization.stage3_param_persitance_threshold",
                "Extra inputs are not permitted (\"stage3_param_persitance_threshold\" is not a zero_optimization key; did you mean stage3_param_persistence_threshold?)",
            )],
        ),
        (
            json!({"stage": 3, "aio": {}}),
            &[(
                "zero_optimization.aio",
                "Extra inputs are not permitted (\"aio\" is not a zero_optimization key; aio is a top-level key, not part of zero_optimization)",
            )],
        ),
        (
            json!({"stage": 2, "reduce_bucket_size": 2.5e7 * 0.9 + 0.5}),
            &[(
                "zero_optimization.reduce_bucket_size",
                "expected an integer, got 22500000.5 (integer fields reject fractional values, as pydantic does; round it)",
            )],
        ),
        (
            json!({"stage": 2, "reduce_bucket_size": -1, "contiguous_gradients": "true"}),
            &[
                (
                    "zero_optimization.contiguous_gradients",
                    "expected true or false, got \"true\"",
                ),
                (
                    "zero_optimization.reduce_bucket_size",
                    "expected a non-negative integer, got -1",
                ),
            ],
        ),
        (
            json!({"stage": 2, "allgather_bucket_size": 500000001}),
            &[(
                "zero_optimization.allgather_bucket_size",
                "allgather_bucket_size must be a multiple of nccl_start_alignment_factor, 2",
            )],
        ),
        (
            json!({"stage": 2, "offload_optimizer": {"device": "cpu", "ratio": 0.5}}),
            &[(
                "zero_optimization.offload_optimizer.ratio",
                "Partial offloading only supported for ZeRO Stage 3.",
            )],
        ),
        (
            json!({"stage": 3, "offload_optimizer": {"device": "CPU", "ratio": 2, "pin_memroy": true}}),
            &[
                (
                    "zero_optimization.offload_optimizer.pin_memroy",
                    "Extra inputs are not permitted (\"pin_memroy\" is not a zero_optimization.offload_optimizer key; did you mean pin_memory?)",
                ),
                (
                    "zero_optimization.offload_optimizer.device",
                    "expected \"none\", \"cpu\" or \"nvme\", got \"CPU\"",
                ),
                (
                    "zero_optimization.offload_optimizer.ratio",
                    "expected a number from 0 to 1, got 2",
                ),
            ],
        ),
        (
            json!({"stage": 0, "offload_optimizer": {"device": "cpu"}}),
            &[(
                "zero_optimization.offload_optimizer.device",
                "optimizer offload needs ZeRO stage 1, 2 or 3 (zero_optimization.stage is 0)",
            )],
        ),
        (
            json!({"stage": 1, "legacy_stage1": true}),
            &[(
                "zero_optimization.legacy_stage1",
                "the legacy stage 1 implementation is no longer supported (DeepSpeed raises too); remove the key",
            )],
        ),
    ];
    for (z, want) in cases {
        let mut got = errors(zero(z.clone()));
        got.sort();
        let mut want = pairs(want);
        want.sort();
        assert_eq!(got, want, "{z}");
    }
    assert_eq!(
        errors(with(json!({"zero_optimization": 2}))),
        pairs(&[(
            "zero_optimization",
            "expected an object (or the deprecated true/false), got 2"
        )])
    );
}

#[test]
fn scheduler_block() {
    let c = parse(with(
        json!({"scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": 100, "warmup_num_steps": 10}}}),
    ));
    assert_eq!(c.scheduler.unwrap().type_name, "WarmupDecayLR");
    assert_eq!(
        errors(with(
            json!({"scheduler": {"type": "WarmupLr", "params": {}}})
        )),
        pairs(&[(
            "scheduler.type",
            "DeepSpeed does not recognize LR scheduler WarmupLr; did you mean WarmupLR?"
        )])
    );
    assert_eq!(
        errors(with(
            json!({"scheduler": {"type": "StepLR", "params": {"step_size": 10}}})
        )),
        pairs(&[(
            "scheduler.type",
            "torch.optim.lr_scheduler.StepLR is not supported by deepspeed_rs yet; supported: WarmupLR, WarmupDecayLR, WarmupCosineLR, OneCycle, LRRangeTest"
        )])
    );
    // errors of Schedule::from_json keep their path
    assert_eq!(
        errors(with(
            json!({"scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": -1}}})
        )),
        pairs(&[(
            "scheduler.params.warmup_num_steps",
            "expected a non-negative integer, got -1"
        )])
    );
    assert_eq!(
        errors(with(
            json!({"scheduler": {"type": "WarmupDecayLR", "params": {}}})
        )),
        pairs(&[(
            "scheduler.params.total_num_steps",
            "required for WarmupDecayLR"
        )])
    );
}

#[test]
fn errors_convert_to_one_crate_error() {
    let e: deepspeed_rs::Error = DsConfig::from_value(
        &json!({"train_batch_size": 0, "gradient_clipping": "x"}),
        &w(1),
    )
    .unwrap_err()
    .into();
    assert_eq!(e.kind(), deepspeed_rs::ErrorKind::InvalidConfig);
    assert_eq!(
        e.to_string(),
        "train_batch_size: Train batch size: 0 has to be greater than 0\ntrain_micro_batch_size_per_gpu: Micro batch size per gpu: 0 has to be greater than 0\ngradient_clipping: expected a non-negative number, got \"x\""
    );
    assert_eq!(
        errors(json!([1, 2])),
        pairs(&[("<top>", "expected a JSON object, got [1,2]")])
    );
}
