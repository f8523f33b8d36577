//! The resolved configuration as a ds_config document ([`DsConfig::to_json`]).

use serde_json::{Map, Value, json};

use super::{DsConfig, OffloadConfig, OptimizerKind, Precision};
use crate::dtype::DType;

/// DeepSpeed's short spelling of a floating type.
fn ds_dtype(d: DType) -> Value {
    Value::from(match d {
        DType::F16 => "fp16",
        DType::BF16 => "bf16",
        DType::F32 => "fp32",
        other => other.name(),
    })
}

fn offload(o: &OffloadConfig, optimizer: bool) -> Value {
    let mut m = Map::new();
    m.insert("device".into(), json!(o.device));
    m.insert("nvme_path".into(), json!(o.nvme_path));
    m.insert("buffer_count".into(), json!(o.buffer_count));
    m.insert("pin_memory".into(), json!(o.pin_memory));
    for (k, v) in &o.other {
        m.insert(k.clone(), v.clone());
    }
    if optimizer {
        m.insert("ratio".into(), json!(o.ratio));
    }
    Value::Object(m)
}

pub(crate) fn to_json(c: &DsConfig) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("train_batch_size", json!(c.batch.train_batch_size));
    put(
        "train_micro_batch_size_per_gpu",
        json!(c.batch.train_micro_batch_size_per_gpu),
    );
    put(
        "gradient_accumulation_steps",
        json!(c.batch.gradient_accumulation_steps),
    );
    if let Some(o) = &c.optimizer {
        let params = match &o.kind {
            OptimizerKind::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                adamw_mode,
                bias_correction,
                torch_adam,
            } => {
                json!({"lr": o.lr, "betas": [beta1, beta2], "eps": eps, "weight_decay": weight_decay,
                "adam_w_mode": adamw_mode, "bias_correction": bias_correction, "torch_adam": torch_adam})
            }
            OptimizerKind::Lamb {
                beta1,
                beta2,
                eps,
                weight_decay,
                bias_correction,
                eps_inside_sqrt,
                max_coeff,
                min_coeff,
            } => {
                json!({"lr": o.lr, "betas": [beta1, beta2], "eps": eps, "weight_decay": weight_decay,
                "bias_correction": bias_correction, "eps_inside_sqrt": eps_inside_sqrt,
                "max_coeff": max_coeff, "min_coeff": min_coeff})
            }
            OptimizerKind::Lion {
                beta1,
                beta2,
                weight_decay,
            } => json!({"lr": o.lr, "betas": [beta1, beta2], "weight_decay": weight_decay}),
            OptimizerKind::Adagrad { eps, weight_decay } => {
                json!({"lr": o.lr, "eps": eps, "weight_decay": weight_decay})
            }
            OptimizerKind::Sgd {
                momentum,
                dampening,
                weight_decay,
                nesterov,
            } => json!({"lr": o.lr, "momentum": momentum, "dampening": dampening,
                "weight_decay": weight_decay, "nesterov": nesterov}),
        };
        put("optimizer", json!({"type": o.type_name, "params": params}));
    }
    if let Some(s) = &c.scheduler {
        // Serialized as {"WarmupLR": {...}}; the warmup type as DeepSpeed spells it.
        let mut params = serde_json::to_value(&s.schedule)
            .ok()
            .and_then(|v| v.as_object().and_then(|o| o.values().next().cloned()))
            .unwrap_or_else(|| json!({}));
        if let Some(p) = params.as_object_mut()
            && let Some(t) = p.get_mut("warmup_type")
        {
            *t = json!(t.as_str().unwrap_or("log").to_lowercase());
        }
        put("scheduler", json!({"type": s.type_name, "params": params}));
    }
    match &c.precision {
        Precision::Fp16 { loss_scaler } => {
            let mut f = serde_json::to_value(loss_scaler).unwrap_or_else(|_| json!({}));
            f["auto_cast"] = json!(c.fp16_auto_cast);
            f["fp16_master_weights_and_grads"] = json!(false);
            put("fp16", f);
            put(
                "bf16",
                json!({"enabled": false, "immediate_grad_update": c.bf16_immediate_grad_update}),
            );
        }
        Precision::Bf16 {
            check_grad_overflow,
        } => {
            put(
                "fp16",
                json!({"enabled": false, "auto_cast": c.fp16_auto_cast}),
            );
            put(
                "bf16",
                json!({"enabled": true, "immediate_grad_update": c.bf16_immediate_grad_update,
                    "check_grad_overflow": check_grad_overflow}),
            );
        }
        // The disabled blocks keep their settings, so the output parses back to itself.
        Precision::Fp32 => {
            put(
                "fp16",
                json!({"enabled": false, "auto_cast": c.fp16_auto_cast}),
            );
            put(
                "bf16",
                json!({"enabled": false, "immediate_grad_update": c.bf16_immediate_grad_update}),
            );
        }
    }
    put(
        "data_types",
        json!({"grad_accum_dtype": c.grad_accum_dtype.map(ds_dtype)}),
    );
    put(
        "communication_data_type",
        c.communication_data_type
            .map(ds_dtype)
            .unwrap_or(Value::Null),
    );
    put(
        "seq_parallel_communication_data_type",
        ds_dtype(c.seq_parallel_communication_data_type),
    );
    put("gradient_clipping", json!(c.gradient_clipping));
    put("prescale_gradients", json!(c.prescale_gradients));
    put(
        "gradient_predivide_factor",
        json!(c.gradient_predivide_factor),
    );
    put("disable_allgather", json!(c.disable_allgather));
    put("steps_per_print", json!(c.steps_per_print));
    put("wall_clock_breakdown", json!(c.wall_clock_breakdown));
    put("memory_breakdown", json!(c.memory_breakdown));
    put("dump_state", json!(c.dump_state));
    put(
        "zero_allow_untested_optimizer",
        json!(c.zero_allow_untested_optimizer),
    );
    put(
        "zero_force_ds_cpu_optimizer",
        json!(c.zero_force_ds_cpu_optimizer),
    );
    put("dataloader_drop_last", json!(c.dataloader_drop_last));
    put(
        "checkpoint",
        json!({"tag_validation": c.checkpoint.tag_validation.name(),
            "load_universal": c.checkpoint.load_universal,
            "use_node_local_storage": c.checkpoint.use_node_local_storage,
            "parallel_write": {"pipeline_stage": c.checkpoint.parallel_write_pipeline_stage}}),
    );
    put(
        "timers",
        json!({"throughput": {"enabled": c.throughput_timer.enabled,
            "synchronized": c.throughput_timer.synchronized}}),
    );
    put(
        "comms_logger",
        serde_json::to_value(&c.comms_logger).unwrap_or(Value::Null),
    );
    put(
        "csv_monitor",
        serde_json::to_value(&c.csv_monitor).unwrap_or(Value::Null),
    );
    if let Some(v) = c.vocabulary_size {
        put("vocabulary_size", json!(v));
    }
    let z = &c.zero;
    let mut zm = Map::new();
    zm.insert("stage".into(), json!(z.stage));
    zm.insert("contiguous_gradients".into(), json!(z.contiguous_gradients));
    zm.insert("overlap_comm".into(), json!(z.overlap_comm));
    zm.insert("reduce_scatter".into(), json!(z.reduce_scatter));
    zm.insert("reduce_bucket_size".into(), json!(z.reduce_bucket_size));
    zm.insert("allgather_partitions".into(), json!(z.allgather_partitions));
    zm.insert(
        "allgather_bucket_size".into(),
        json!(z.allgather_bucket_size),
    );
    zm.insert(
        "offload_optimizer".into(),
        z.offload_optimizer
            .as_ref()
            .map_or(Value::Null, |o| offload(o, true)),
    );
    zm.insert(
        "offload_param".into(),
        z.offload_param
            .as_ref()
            .map_or(Value::Null, |o| offload(o, false)),
    );
    for (k, v) in &z.other {
        zm.insert(k.clone(), v.clone());
    }
    put("zero_optimization", Value::Object(zm));
    Value::Object(m)
}
