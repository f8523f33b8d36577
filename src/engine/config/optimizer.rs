//! The `optimizer` block.

use serde_json::Value;

use super::ctx::{Ctx, Obj, section, show};
use super::suggest;
use super::{OptimizerConfig, OptimizerKind};

/// DeepSpeed's own optimizer names (`DEEPSPEED_OPTIMIZERS`): `type` is lower-cased when its
/// lower-case form is one of them.
pub(crate) const DEEPSPEED_OPTIMIZERS: [&str; 11] = [
    "adagrad",
    "adam",
    "adamw",
    "lamb",
    "onebitadam",
    "zerooneadam",
    "onebitlamb",
    "muadam",
    "muadamw",
    "musgd",
    "lion",
];

/// `torch.optim`'s optimizer classes (DeepSpeed falls back to `getattr(torch.optim, type)`,
/// case-sensitive).
pub(crate) const TORCH_OPTIMIZERS: [&str; 15] = [
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "SparseAdam",
    "Adamax",
    "ASGD",
    "LBFGS",
    "NAdam",
    "RAdam",
    "RMSprop",
    "Rprop",
    "SGD",
    "Muon",
];

/// DeepSpeed's `ValueError` for `max_grad_norm` in `optimizer.params` (verbatim).
const MAX_GRAD_NORM: &str = "'max_grad_norm' is not supported as an optimizer parameter, please switch to using the deepspeed parameter 'gradient_clipping' see: https://www.deepspeed.ai/docs/config-json/#gradient-clipping for more details";

/// The optimizer family a `type` resolves to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Family {
    Adam { adamw: bool },
    Lamb,
    Lion,
    Adagrad,
    Sgd,
}

impl Family {
    /// Whether DeepSpeed's ZeRO treats it as tested (`is_zero_supported_optimizer`: torch
    /// Adam/AdamW/Adagrad, FusedAdam, DeepSpeedCPUAdam/Adagrad, FusedLion/DeepSpeedCPULion).
    pub fn zero_tested(self) -> bool {
        matches!(self, Family::Adam { .. } | Family::Adagrad | Family::Lion)
    }

    /// Whether a CPU implementation exists for optimizer offload.
    pub fn has_cpu_optimizer(self) -> bool {
        matches!(self, Family::Adam { .. } | Family::Adagrad | Family::Lion)
    }

    fn class(self) -> &'static str {
        match self {
            Family::Adam { .. } => "FusedAdam",
            Family::Lamb => "FusedLamb",
            Family::Lion => "FusedLion",
            Family::Adagrad => "torch.optim.Adagrad",
            Family::Sgd => "torch.optim.SGD",
        }
    }

    fn params(self) -> &'static [&'static str] {
        match self {
            Family::Adam { .. } => &[
                "lr",
                "betas",
                "eps",
                "weight_decay",
                "bias_correction",
                "adam_w_mode",
                "torch_adam",
                "amsgrad",
                "set_grad_none",
            ],
            Family::Lamb => &[
                "lr",
                "betas",
                "eps",
                "weight_decay",
                "bias_correction",
                "eps_inside_sqrt",
                "max_coeff",
                "min_coeff",
                "amsgrad",
            ],
            Family::Lion => &["lr", "betas", "weight_decay", "set_grad_none"],
            Family::Adagrad => &[
                "lr",
                "eps",
                "weight_decay",
                "lr_decay",
                "initial_accumulator_value",
            ],
            Family::Sgd => &[
                "lr",
                "momentum",
                "dampening",
                "weight_decay",
                "nesterov",
                "maximize",
            ],
        }
    }
}

/// Resolves `type` as DeepSpeed does; `None` (with an error) when unsupported.
fn resolve_type(ctx: &mut Ctx, path: &str, name: &str) -> Option<Family> {
    let lower = name.to_ascii_lowercase();
    if DEEPSPEED_OPTIMIZERS.contains(&lower.as_str()) {
        return match lower.as_str() {
            "adam" => Some(Family::Adam { adamw: false }),
            "adamw" => Some(Family::Adam { adamw: true }),
            "lamb" => Some(Family::Lamb),
            "lion" => Some(Family::Lion),
            "adagrad" => Some(Family::Adagrad),
            _ => {
                ctx.err(
                    path,
                    format!(
                        "{name} is not supported by deepspeed_rs yet (1-bit Adam/LAMB, 0/1 Adam and the mu-P optimizers are not implemented); supported: Adam, AdamW, Lamb, Lion, Adagrad, SGD"
                    ),
                );
                None
            }
        };
    }
    if name == "SGD" {
        return Some(Family::Sgd);
    }
    if TORCH_OPTIMIZERS.contains(&name) {
        ctx.err(
            path,
            format!(
                "torch.optim.{name} is not supported by deepspeed_rs yet; supported: Adam, AdamW, Lamb, Lion, Adagrad, SGD"
            ),
        );
        return None;
    }
    let mut msg = format!("{name} is not a supported DeepSpeed Optimizer");
    if let Some(t) = TORCH_OPTIMIZERS
        .iter()
        .find(|t| t.eq_ignore_ascii_case(name))
    {
        msg.push_str(&format!(
            " (torch.optim names are case-sensitive); did you mean {t}?"
        ));
    } else {
        let known = ["Adam", "AdamW", "Lamb", "Lion", "Adagrad", "SGD"];
        msg.push_str(&suggest::did_you_mean(name, known));
    }
    ctx.err(path, msg);
    None
}

fn betas(ctx: &mut Ctx, p: &Obj, default: (f64, f64)) -> (f64, f64) {
    let Some(v) = p.get("betas") else {
        return default;
    };
    let path = p.at("betas");
    let Some(a) = v.as_array().filter(|a| a.len() == 2) else {
        ctx.err(
            path,
            format!("expected two numbers [beta1, beta2], got {}", show(v)),
        );
        return default;
    };
    let mut out = [default.0, default.1];
    for (i, b) in a.iter().enumerate() {
        if super::ctx::is_auto(b) {
            continue;
        }
        match b.as_f64() {
            Some(x) if (0.0..1.0).contains(&x) => out[i] = x,
            _ => ctx.err(
                format!("{path}[{i}]"),
                format!("expected a number in [0, 1), got {}", show(b)),
            ),
        }
    }
    (out[0], out[1])
}

/// Parses the `optimizer` block of `top`.
pub(crate) fn parse(ctx: &mut Ctx, top: &Obj) -> Option<(OptimizerConfig, Family)> {
    let block = section(ctx, top, "optimizer")?;
    block.warn_extra(ctx, &["type", "params", "legacy_fusion"]);
    let _legacy_fusion = block.bool(ctx, "legacy_fusion", false);
    let type_name = match block.map.get("type") {
        None => {
            ctx.err(
                block.at("type"),
                "missing (DeepSpeed silently ignores an optimizer block without a type; give one of Adam, AdamW, Lamb, Lion, Adagrad, SGD)",
            );
            return None;
        }
        Some(v) if super::ctx::is_auto(v) => return None,
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            ctx.err(
                block.at("type"),
                format!("expected a string, got {}", show(v)),
            );
            return None;
        }
    };
    let family = resolve_type(ctx, &block.at("type"), &type_name);
    let empty = serde_json::Map::new();
    let params = match block.get("params") {
        None | Some(Value::Null) => Obj::new(&empty, &block.at("params")),
        Some(Value::Object(m)) => Obj::new(m, &block.at("params")),
        Some(v) => {
            ctx.err(
                block.at("params"),
                format!("expected an object, got {}", show(v)),
            );
            return None;
        }
    };
    if params.has("max_grad_norm") {
        ctx.err(params.at("max_grad_norm"), MAX_GRAD_NORM);
    }
    let family = family?;
    let known = family.params();
    for k in params.map.keys() {
        if k != "max_grad_norm" && !known.contains(&k.as_str()) {
            ctx.err(
                params.at(k),
                format!(
                    "unexpected keyword argument for {} (torch would raise TypeError: __init__() got an unexpected keyword argument '{k}'); valid: {}{}",
                    family.class(),
                    known.join(", "),
                    suggest::did_you_mean(k, known.iter().copied())
                ),
            );
        }
    }
    let nonneg = |x: f64| x >= 0.0;
    let pos = |x: f64| x > 0.0;
    let lr_default = match family {
        Family::Adagrad => 1e-2,
        _ => 1e-3,
    };
    if family == Family::Sgd && !params.has("lr") {
        ctx.err(
            params.at("lr"),
            "required for SGD (torch.optim.SGD has no usable default learning rate in the releases DeepSpeed supports)",
        );
    }
    let lr = params.num(ctx, "lr", lr_default, "a non-negative number", nonneg);
    let weight_decay = params.num(ctx, "weight_decay", 0.0, "a non-negative number", nonneg);
    let kind = match family {
        Family::Adam { adamw } => {
            if params.bool(ctx, "amsgrad", false) {
                ctx.err(
                    params.at("amsgrad"),
                    "FusedAdam does not support the AMSGrad variant.",
                );
            }
            let _ = params.bool(ctx, "set_grad_none", true);
            let (beta1, beta2) = betas(ctx, &params, (0.9, 0.999));
            let adam_w_mode = params.bool(ctx, "adam_w_mode", true);
            OptimizerKind::Adam {
                beta1,
                beta2,
                eps: params.num(ctx, "eps", 1e-8, "a positive number", pos),
                weight_decay,
                adamw_mode: adamw || adam_w_mode,
                bias_correction: params.bool(ctx, "bias_correction", true),
                torch_adam: params.bool(ctx, "torch_adam", false),
            }
        }
        Family::Lamb => {
            if params.bool(ctx, "amsgrad", false) {
                ctx.err(
                    params.at("amsgrad"),
                    "FusedLamb does not support the AMSGrad variant.",
                );
            }
            let (beta1, beta2) = betas(ctx, &params, (0.9, 0.999));
            let max_coeff = params.num(ctx, "max_coeff", 10.0, "a non-negative number", nonneg);
            let min_coeff = params.num(ctx, "min_coeff", 0.01, "a non-negative number", nonneg);
            if min_coeff > max_coeff {
                ctx.err(
                    params.at("min_coeff"),
                    format!("min_coeff {min_coeff} is greater than max_coeff {max_coeff}"),
                );
            }
            OptimizerKind::Lamb {
                beta1,
                beta2,
                eps: params.num(ctx, "eps", 1e-8, "a positive number", pos),
                weight_decay,
                bias_correction: params.bool(ctx, "bias_correction", true),
                eps_inside_sqrt: params.bool(ctx, "eps_inside_sqrt", false),
                max_coeff,
                min_coeff,
            }
        }
        Family::Lion => {
            let _ = params.bool(ctx, "set_grad_none", true);
            let (beta1, beta2) = betas(ctx, &params, (0.9, 0.999));
            OptimizerKind::Lion {
                beta1,
                beta2,
                weight_decay,
            }
        }
        Family::Adagrad => {
            for key in ["lr_decay", "initial_accumulator_value"] {
                let v = params.num(ctx, key, 0.0, "a non-negative number", nonneg);
                if v != 0.0 {
                    ctx.err(
                        params.at(key),
                        format!("{key} other than 0 is not supported by deepspeed_rs yet (DeepSpeedCPUAdagrad has no {key})"),
                    );
                }
            }
            OptimizerKind::Adagrad {
                eps: params.num(ctx, "eps", 1e-10, "a non-negative number", nonneg),
                weight_decay,
            }
        }
        Family::Sgd => {
            let momentum = params.num(ctx, "momentum", 0.0, "a non-negative number", nonneg);
            let dampening = params.num(ctx, "dampening", 0.0, "a number", |_| true);
            let nesterov = params.bool(ctx, "nesterov", false);
            if nesterov && (momentum <= 0.0 || dampening != 0.0) {
                ctx.err(
                    params.at("nesterov"),
                    "Nesterov momentum requires a momentum and zero dampening",
                );
            }
            if params.bool(ctx, "maximize", false) {
                ctx.err(
                    params.at("maximize"),
                    "maximize: true is not supported by deepspeed_rs yet",
                );
            }
            OptimizerKind::Sgd {
                momentum,
                dampening,
                weight_decay,
                nesterov,
            }
        }
    };
    Some((
        OptimizerConfig {
            type_name,
            lr,
            kind,
        },
        family,
    ))
}
