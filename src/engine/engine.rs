//! The training engine of one process: DeepSpeed's `deepspeed.initialize` for hosts that own
//! their model's forward and backward.
//!
//! A host creates an [`Engine`] from an accelerator and a ds_config, registers its named
//! parameters with their initial values, and [finalizes](Engine::finalize) it. The engine
//! then owns the parameters in flat buffers and hands out zero-copy views of each
//! parameter (in the compute dtype) and of each gradient. Every micro step the host runs its
//! forward and backward, **accumulates** (`+=`) its gradients into the gradient views (with
//! the loss multiplied by [`Engine::loss_scale`] under fp16), and calls [`Engine::step`]. At
//! each gradient-accumulation boundary the step
//!
//! 1. reads the gradients once: their global L2 norm (f64) and whether any is
//!    inf or NaN;
//! 2. on a non-finite gradient — under fp16 as DeepSpeed does, and also under bf16 and fp32,
//!    where DeepSpeed would apply a NaN update — skips the step: parameters, optimizer state
//!    and the LR schedule stay bit-identical, the dynamic loss scale backs off;
//! 3. otherwise folds averaging over the accumulation steps, unscaling and clipping into
//!    one divisor that the optimizer kernel applies while it updates (no extra pass);
//! 4. runs the optimizer through the op registry's kernels (`cpu_adam`, `cpu_adagrad`,
//!    `cpu_lion`), which write the compute-dtype copy of fp32 master weights in the same
//!    pass, with the pure-Rust reference as fallback (logged once);
//! 5. zeroes the gradients inside the same kernel pass (each tile right after it was read,
//!    while in cache), and steps the LR schedule and the loss scaler.
//!
//! # Storage
//!
//! Parameters are grouped by role and dtype: one trainable group (compute dtype =
//! training precision) and one frozen group per dtype. Each group is one flat buffer per
//! kind (compute copy, fp32 master weights under fp16/bf16, gradients, each optimizer state),
//! with every parameter at an offset aligned to [`PARAM_ALIGN_ELEMENTS`] elements and the
//! group padded to a multiple of it: the layout ZeRO partitions (equal, aligned shards of
//! flat buffers) without copying. Padding is zero in the gradients and ignored elsewhere.
//! The buffers of a group start at staggered offsets modulo 4 KiB, so streams read and
//! written together do not alias in the cache.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use half::{bf16, f16};
use serde::Serialize;
use serde_json::{Value, json};

use crate::accelerator::{Accelerator, Buffer, MemoryKind};
use crate::dtype::DType;
use crate::engine::config::{DsConfig, OptimizerConfig, OptimizerKind, ParseOptions, Precision};
use crate::engine::loss_scaler::{LossScaler, LossScalerConfig};
use crate::engine::lr_schedule::LrScheduler;
use crate::error::{Error, Result};
use crate::ops::optim::lamb::{LambParams, lamb_step_reference};
use crate::ops::optim::{
    AdagradParams, AdamParams, CopyMut, Exec, GradsMut, GradsRef, LionParams, ParamsMut, Ran, cpu,
};

/// Every parameter's offset in its group's flat buffers is a multiple of this many elements
/// (256 bytes of fp32), and so is each group's padded length.
pub const PARAM_ALIGN_ELEMENTS: usize = 64;

/// Elements per block of the gradient scan: the norm's partial sums are taken per block and
/// added in block order, so the norm does not depend on the number of threads.
const SCAN_BLOCK: usize = 1 << 16;

/// Byte offsets (mod 4 KiB) at which the flat buffers of a group start, in allocation order.
const STAGGER: [usize; 6] = [0, 1280, 2560, 3840, 768, 2048];

/// Which optimizer state a view shows (see [`Engine::state_tensor`]).
pub const STATE_NAMES: [&str; 4] = ["exp_avg", "exp_avg_sq", "master", "momentum_buffer"];

/// Initial values of a parameter: a dtype and the bytes of a contiguous row-major array.
#[derive(Debug, Clone, Copy)]
pub struct ParamData<'a> {
    /// Element type of `bytes`.
    pub dtype: DType,
    /// The values, `numel * dtype.size()` bytes.
    pub bytes: &'a [u8],
}

impl<'a> ParamData<'a> {
    /// fp32 values.
    pub fn f32(values: &'a [f32]) -> Self {
        ParamData {
            dtype: DType::F32,
            // SAFETY: f32 has no padding; the bytes live as long as `values`.
            bytes: unsafe {
                std::slice::from_raw_parts(values.as_ptr().cast(), std::mem::size_of_val(values))
            },
        }
    }

    /// f64 values (rounded to the storage dtype).
    pub fn f64(values: &'a [f64]) -> Self {
        ParamData {
            dtype: DType::F64,
            // SAFETY: as for f32.
            bytes: unsafe {
                std::slice::from_raw_parts(values.as_ptr().cast(), std::mem::size_of_val(values))
            },
        }
    }
}

/// A zero-copy view of engine memory: where, what type, what shape.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    /// Address of the first element (host memory).
    pub ptr: usize,
    /// Element type.
    pub dtype: DType,
    /// Extents (owned by the engine; stable until it is dropped).
    pub shape: &'a [i64],
    /// Number of elements.
    pub numel: usize,
    /// The DLPack device of the memory.
    pub device: crate::dlpack::DLDevice,
}

/// What one call of [`Engine::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepRecord {
    /// Optimizer steps so far, applied and skipped (DeepSpeed's `global_steps`).
    pub global_step: u64,
    /// Micro steps so far.
    pub micro_step: u64,
    /// Skipped optimizer steps so far.
    pub skipped_steps: u64,
    /// Whether this call ended a gradient-accumulation window.
    pub boundary: bool,
    /// Whether an optimizer step was applied.
    pub applied: bool,
    /// Whether non-finite gradients were found (the step was skipped).
    pub overflow: bool,
    /// The loss scale this window's gradients carried (1 without fp16).
    pub loss_scale: f64,
    /// The learning rate the step used (off the boundary: the current one).
    pub lr: f64,
    /// Global L2 norm of the averaged, unscaled gradients before clipping; NaN when they
    /// were not finite; -1 off the boundary.
    pub grad_norm: f64,
}

#[derive(Debug, Clone)]
struct ParamInfo {
    name: String,
    shape: Box<[i64]>,
    numel: usize,
    trainable: bool,
    /// The dtype the parameter is stored in (compute dtype for trainable ones).
    dtype: DType,
    /// Index of its group, once finalized.
    group: usize,
    /// Offset in elements inside its group's buffers.
    offset: usize,
}

/// A flat buffer with its staggered start.
struct Flat {
    buf: Buffer,
    start: usize,
    dtype: DType,
    len: usize,
}

impl Flat {
    fn new(accel: &Arc<dyn Accelerator>, dtype: DType, len: usize, stagger: usize) -> Result<Flat> {
        let bytes = len.checked_mul(dtype.size()).ok_or_else(|| {
            Error::range(format!(
                "a flat buffer of {len} {} is too large",
                dtype.name()
            ))
        })?;
        let start = STAGGER[stagger % STAGGER.len()];
        let buf = Buffer::new(accel, bytes + start, 4096, MemoryKind::Device)?;
        Ok(Flat {
            buf,
            start,
            dtype,
            len,
        })
    }

    fn ptr(&self) -> usize {
        self.buf.ptr() + self.start
    }

    /// # Safety
    /// No other live reference to the range; `T` matches `dtype`.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice_mut<T>(&self, offset: usize, len: usize) -> &mut [T] {
        debug_assert!(offset + len <= self.len);
        debug_assert_eq!(std::mem::size_of::<T>(), self.dtype.size());
        if len == 0 {
            return &mut [];
        }
        // SAFETY: the range is inside the allocation (checked above in debug builds; callers
        // pass offsets of registered parameters), host memory, aligned for T.
        unsafe { std::slice::from_raw_parts_mut((self.ptr() as *mut T).add(offset), len) }
    }

    /// # Safety
    /// As [`Flat::slice_mut`], for shared access.
    unsafe fn slice<T>(&self, offset: usize, len: usize) -> &[T] {
        debug_assert!(offset + len <= self.len);
        if len == 0 {
            return &[];
        }
        // SAFETY: as slice_mut.
        unsafe { std::slice::from_raw_parts((self.ptr() as *const T).add(offset), len) }
    }
}

/// A group whose compute copy holds the initial values, before the rest is allocated.
struct Staged {
    trainable: bool,
    dtype: DType,
    len: usize,
    params: Vec<usize>,
    compute: Flat,
}

struct Group {
    trainable: bool,
    dtype: DType,
    /// Padded length in elements.
    len: usize,
    params: Vec<usize>,
    compute: Flat,
    master: Option<Flat>,
    grads: Option<Flat>,
    states: Vec<(&'static str, Flat)>,
}

/// Wall-clock timers of the boundary's phases (milliseconds), `wall_clock_breakdown`.
#[derive(Debug, Clone, Default, Serialize)]
struct Timers {
    /// name → (total ms, count) since creation.
    total: Vec<(&'static str, f64, u64)>,
    /// name → (ms, count) since the last print.
    window: Vec<(&'static str, f64, u64)>,
}

impl Timers {
    fn add(&mut self, name: &'static str, ms: f64) {
        for list in [&mut self.total, &mut self.window] {
            match list.iter_mut().find(|(n, _, _)| *n == name) {
                Some(e) => {
                    e.1 += ms;
                    e.2 += 1;
                }
                None => list.push((name, ms, 1)),
            }
        }
    }

    fn line(&mut self) -> String {
        let mut s = String::from("time (ms)");
        for (n, ms, c) in &self.window {
            let _ = write!(s, " | {n}: {:.2}", ms / (*c).max(1) as f64);
        }
        self.window.clear();
        s
    }
}

/// The csv_monitor: one file per event, as DeepSpeed's `csvMonitor` writes them.
struct CsvMonitor {
    dir: PathBuf,
    written: Vec<String>,
}

impl CsvMonitor {
    fn write(&mut self, tag: &str, step: u64, value: f64) -> Result<()> {
        let header = tag.rsplit('/').next().unwrap_or(tag);
        let file = tag.replace(['/', ' '], "_");
        let path = self.dir.join(format!("{file}.csv"));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut text = String::new();
        if !self.written.contains(&file) {
            self.written.push(file);
            let _ = write!(text, "step,{header}\r\n");
        }
        let _ = write!(text, "{step},{}\r\n", python_float(value));
        f.write_all(text.as_bytes())
            .map_err(|e| Error::io(&path, e))
    }
}

/// `repr(float)` as Python writes it (what DeepSpeed's csv files hold): the shortest
/// round-trip digits, `.0` on integral values, exponent form below 1e-4 and from 1e16.
pub fn python_float(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    let sci = format!("{v:e}"); // shortest digits: "1.5e-5", "-2e16"
    let (mant, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    if !(-4..16).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", exp.abs());
    }
    let s = format!("{v}");
    if s.contains('.') { s } else { format!("{s}.0") }
}

/// The optimizer with its hyper-parameters (lr comes from the schedule).
#[derive(Debug, Clone, PartialEq)]
struct Optimizer {
    type_name: String,
    kind: OptimizerKind,
}

impl Optimizer {
    fn state_names(&self) -> &'static [&'static str] {
        match &self.kind {
            OptimizerKind::Adam { .. } | OptimizerKind::Lamb { .. } => &["exp_avg", "exp_avg_sq"],
            OptimizerKind::Lion { .. } => &["exp_avg"],
            OptimizerKind::Adagrad { .. } => &["exp_avg_sq"],
            OptimizerKind::Sgd { momentum, .. } => {
                if *momentum > 0.0 {
                    &["momentum_buffer"]
                } else {
                    &[]
                }
            }
        }
    }

    /// `mom=[...]` of the progress line: Adam-like betas, or SGD's momentum.
    fn mom_text(&self, beta1_override: Option<f64>) -> String {
        match &self.kind {
            OptimizerKind::Adam { beta1, beta2, .. }
            | OptimizerKind::Lamb { beta1, beta2, .. }
            | OptimizerKind::Lion { beta1, beta2, .. } => {
                // OneCycle's momentum replaces beta1, and DeepSpeed then sets beta2 = 0.99.
                let (b1, b2) = match beta1_override {
                    Some(m) => (m, 0.99),
                    None => (*beta1, *beta2),
                };
                format!("[({}, {})]", python_float(b1), python_float(b2))
            }
            OptimizerKind::Adagrad { .. } => "[0.0]".into(),
            // DeepSpeed does not cycle the momentum of optimizers without betas.
            OptimizerKind::Sgd { momentum, .. } => format!("[{}]", python_float(*momentum)),
        }
    }
}

/// The training engine (see the [module documentation](self)).
pub struct Engine {
    accel: Arc<dyn Accelerator>,
    config: DsConfig,
    compute_dtype: DType,
    grad_dtype: DType,
    check_overflow: bool,
    optimizer: Optimizer,
    base_lr: f64,
    lr_override: Option<f64>,
    scheduler: Option<LrScheduler>,
    loss_scaler: LossScaler,
    params: Vec<ParamInfo>,
    names: HashMap<String, usize>,
    pending: Vec<Option<Vec<u8>>>,
    groups: Vec<Group>,
    staged: Option<Vec<Staged>>,
    finalized: bool,
    exec: Exec,
    global_steps: u64,
    micro_steps: u64,
    skipped_steps: u64,
    applied_steps: u64,
    loss_sum: f64,
    loss_count: u64,
    last_record: Option<StepRecord>,
    ran: Option<Ran>,
    timers: Timers,
    csv: Option<CsvMonitor>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("accelerator", &self.accel.name())
            .field("params", &self.params.len())
            .field("finalized", &self.finalized)
            .field("global_steps", &self.global_steps)
            .finish()
    }
}

fn dtype_of_precision(p: &Precision) -> DType {
    match p {
        Precision::Fp32 => DType::F32,
        Precision::Fp16 { .. } => DType::F16,
        Precision::Bf16 { .. } => DType::BF16,
    }
}

fn f32_of(v: f64, what: &str) -> Result<f32> {
    let f = v as f32;
    if v.is_finite() && !f.is_finite() {
        return Err(Error::config(format!(
            "{what} = {v} does not fit in float32"
        )));
    }
    Ok(f)
}

impl Engine {
    /// An engine on `accel` with a parsed ds_config. The config must have an `optimizer`
    /// block; the accelerator's memory must be host memory (the CPU accelerator).
    pub fn new(accel: Arc<dyn Accelerator>, config: DsConfig) -> Result<Engine> {
        if !accel.is_host() {
            return Err(Error::Unsupported(format!(
                "the training engine runs on host-memory accelerators (cpu) in this version; \
                 accelerator '{}' keeps its memory on the device, and the engine's device \
                 path (fused kernels on the device's stream) is not built yet; pass the cpu \
                 accelerator (or set DSRS_ACCELERATOR=cpu)",
                accel.name()
            )));
        }
        let Some(OptimizerConfig {
            type_name,
            lr,
            kind,
        }) = config.optimizer.clone()
        else {
            return Err(Error::config(
                "optimizer: missing; the engine creates its optimizer from the ds_config \
                 (e.g. \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 1e-3}})",
            ));
        };
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(Error::config(format!(
                "optimizer.params.lr: must be finite and >= 0, got {lr}"
            )));
        }
        let compute_dtype = dtype_of_precision(&config.precision);
        let grad_dtype = match (config.grad_accum_dtype, &config.precision) {
            (Some(d), _) => d,
            // DeepSpeed: gradients accumulate in the model's dtype, except bf16 without
            // ZeRO, where they accumulate in fp32 (BF16_Optimizer).
            (None, Precision::Bf16 { .. }) => DType::F32,
            (None, _) => compute_dtype,
        };
        if !matches!(grad_dtype, DType::F32) && grad_dtype != compute_dtype {
            return Err(Error::config(format!(
                "data_types.grad_accum_dtype: {} gradients with {} parameters are not \
                 supported (fp32, or the training dtype)",
                grad_dtype.name(),
                compute_dtype.name()
            )));
        }
        let check_overflow = match &config.precision {
            Precision::Bf16 {
                check_grad_overflow,
            } => *check_grad_overflow,
            _ => true,
        };
        let loss_scaler = match &config.precision {
            Precision::Fp16 { loss_scaler } => LossScaler::from_config(loss_scaler)?,
            _ => LossScaler::from_config(&LossScalerConfig::default())?,
        };
        let scheduler = config
            .scheduler
            .as_ref()
            .map(|s| LrScheduler::new(s.schedule.clone(), lr));
        let csv = if config.csv_monitor.enabled {
            let dir = Path::new(&config.csv_monitor.output_path).join(&config.csv_monitor.job_name);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            Some(CsvMonitor {
                dir,
                written: Vec::new(),
            })
        } else {
            None
        };
        for w in &config.warnings {
            crate::dsrs_warn!("engine", "ds_config: {}: {}", w.path, w.message);
        }
        // DeepSpeed's schedules start at last_batch_iteration = -1 and are not stepped at
        // construction: the first optimizer step uses the value at -1.
        Ok(Engine {
            accel,
            compute_dtype,
            grad_dtype,
            check_overflow,
            optimizer: Optimizer { type_name, kind },
            base_lr: lr,
            lr_override: None,
            scheduler,
            loss_scaler,
            params: Vec::new(),
            names: HashMap::new(),
            pending: Vec::new(),
            groups: Vec::new(),
            staged: None,
            finalized: false,
            exec: Exec::default(),
            global_steps: 0,
            micro_steps: 0,
            skipped_steps: 0,
            applied_steps: 0,
            loss_sum: 0.0,
            loss_count: 0,
            last_record: None,
            ran: None,
            timers: Timers::default(),
            csv,
            config,
        })
    }

    /// [`Engine::new`] from ds_config text (JSON with comments and trailing commas).
    pub fn from_json_str(accel: Arc<dyn Accelerator>, text: &str) -> Result<Engine> {
        Engine::new(
            accel,
            DsConfig::load(text, "ds_config", &ParseOptions::default())?,
        )
    }

    /// [`Engine::new`] from a ds_config file.
    pub fn from_file(accel: Arc<dyn Accelerator>, path: &Path) -> Result<Engine> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let name = path.display().to_string();
        let config =
            DsConfig::load(&text, &name, &ParseOptions::default()).map_err(|e| match e {
                Error::Config(m) => Error::config(format!("{name}: {m}")),
                e => e,
            })?;
        Engine::new(accel, config)
    }

    /// Sets how the CPU optimizer kernels run (backend, threads, build options).
    pub fn set_exec(&mut self, exec: Exec) {
        self.exec = exec;
    }

    /// The resolved configuration.
    pub fn config(&self) -> &DsConfig {
        &self.config
    }

    /// The accelerator.
    pub fn accelerator(&self) -> &Arc<dyn Accelerator> {
        &self.accel
    }

    /// The dtype of trainable parameters' views (the training precision).
    pub fn compute_dtype(&self) -> DType {
        self.compute_dtype
    }

    /// The dtype of gradient views.
    pub fn grad_dtype(&self) -> DType {
        self.grad_dtype
    }

    /// Registers a parameter (before [`finalize`](Self::finalize)): a unique non-empty
    /// name, its shape and initial values (any float dtype; trainable parameters are
    /// rounded to the compute dtype, frozen ones keep theirs). Returns its index.
    pub fn register_param(
        &mut self,
        name: &str,
        shape: &[i64],
        init: ParamData<'_>,
        trainable: bool,
    ) -> Result<usize> {
        if self.finalized || self.staged.is_some() {
            return Err(Error::InvalidState(format!(
                "register_param('{name}'): the engine is finalized (or finalize has started \
                 and must be called again); register every parameter before finalize"
            )));
        }
        if name.is_empty() {
            return Err(Error::invalid("register_param: the name is empty"));
        }
        if self.names.contains_key(name) {
            return Err(Error::invalid(format!(
                "register_param('{name}'): a parameter of this name is already registered"
            )));
        }
        let mut numel: usize = 1;
        for (i, &d) in shape.iter().enumerate() {
            if d < 0 {
                return Err(Error::range(format!(
                    "register_param('{name}'): shape[{i}] = {d} is negative"
                )));
            }
            numel = numel.checked_mul(d as usize).ok_or_else(|| {
                Error::range(format!(
                    "register_param('{name}'): the shape {shape:?} overflows"
                ))
            })?;
        }
        if !init.dtype.is_float() {
            return Err(Error::invalid(format!(
                "register_param('{name}'): initial values of dtype {} — parameters are \
                 floating point (float16, bfloat16, float32, float64)",
                init.dtype.name()
            )));
        }
        let want = numel.checked_mul(init.dtype.size()).ok_or_else(|| {
            Error::range(format!(
                "register_param('{name}'): the shape {shape:?} overflows"
            ))
        })?;
        if init.bytes.len() != want {
            return Err(Error::invalid(format!(
                "register_param('{name}'): {} bytes of initial values for shape {shape:?} of \
                 {} ({} bytes expected)",
                init.bytes.len(),
                init.dtype.name(),
                want
            )));
        }
        let dtype = if trainable {
            self.compute_dtype
        } else {
            init.dtype
        };
        let stored = convert(init, dtype, name)?;
        let index = self.params.len();
        self.params.push(ParamInfo {
            name: name.to_string(),
            shape: shape.into(),
            numel,
            trainable,
            dtype,
            group: usize::MAX,
            offset: 0,
        });
        self.pending.push(Some(stored));
        self.names.insert(name.to_string(), index);
        Ok(index)
    }

    /// Lays the parameters out in flat buffers on the accelerator, creates the fp32 master
    /// weights (fp16/bf16 training), the gradients and the optimizer state (zero), and
    /// frees the copies of the initial values. At least one trainable parameter is needed.
    ///
    /// It allocates the compute copies first and moves the initial values into them (one
    /// parameter at a time, so the model is never held twice), then the rest. An
    /// allocation failure (a memory limit) loses nothing: after freeing memory, call
    /// `finalize` again and it resumes; registering more parameters is then refused.
    pub fn finalize(&mut self) -> Result<()> {
        if self.finalized {
            return Err(Error::InvalidState(
                "finalize: the engine is already finalized".into(),
            ));
        }
        if self.staged.is_none() {
            self.stage()?;
        }
        let staged = self.staged.as_ref().expect("staged above");
        let mut rest = Vec::with_capacity(staged.len());
        for st in staged {
            if !st.trainable {
                rest.push((None, None, Vec::new()));
                continue;
            }
            let mut stagger = 1;
            let mut next = || {
                stagger += 1;
                stagger - 1
            };
            let master = if st.dtype != DType::F32 {
                Some(Flat::new(&self.accel, DType::F32, st.len, next())?)
            } else {
                None
            };
            let grads = Flat::new(&self.accel, self.grad_dtype, st.len, next())?;
            let mut states = Vec::new();
            for &name in self.optimizer.state_names() {
                states.push((name, Flat::new(&self.accel, DType::F32, st.len, next())?));
            }
            rest.push((master, Some(grads), states));
        }
        // Everything is allocated: nothing below can fail.
        let staged = self.staged.take().expect("staged above");
        let mut groups = Vec::with_capacity(staged.len());
        for (st, (master, grads, states)) in staged.into_iter().zip(rest) {
            let len = st.len;
            // SAFETY (all slices): fresh buffers of `len` elements of their dtypes, not
            // shared yet.
            if let Some(m) = &master {
                let dst: &mut [f32] = unsafe { m.slice_mut(0, len) };
                match st.dtype {
                    DType::F16 => {
                        let src: &[f16] = unsafe { st.compute.slice(0, len) };
                        dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.to_f32());
                    }
                    DType::BF16 => {
                        let src: &[bf16] = unsafe { st.compute.slice(0, len) };
                        dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.to_f32());
                    }
                    _ => unreachable!("compute dtypes are fp32, fp16, bf16"),
                }
            }
            // Gradients and states start at zero (explicitly: allocators need not zero).
            for f in grads.iter().chain(states.iter().map(|(_, f)| f)) {
                unsafe { std::ptr::write_bytes(f.ptr() as *mut u8, 0, len * f.dtype.size()) };
            }
            groups.push(Group {
                trainable: st.trainable,
                dtype: st.dtype,
                len,
                params: st.params,
                compute: st.compute,
                master,
                grads,
                states,
            });
        }
        self.groups = groups;
        self.pending = Vec::new();
        self.finalized = true;
        Ok(())
    }

    /// The first half of finalize: the layout, and the compute copies holding the initial
    /// values (then freed).
    fn stage(&mut self) -> Result<()> {
        if !self.params.iter().any(|p| p.trainable) {
            return Err(Error::InvalidState(
                "finalize: no trainable parameter is registered".into(),
            ));
        }
        // Groups: trainable first, then frozen by dtype in order of first appearance.
        let mut keys: Vec<(bool, DType)> = vec![(true, self.compute_dtype)];
        for p in &self.params {
            if !p.trainable && !keys.contains(&(false, p.dtype)) {
                keys.push((false, p.dtype));
            }
        }
        let mut layout: Vec<(usize, usize)> = vec![(0, 0); self.params.len()];
        let mut groups: Vec<(bool, DType, usize, Vec<usize>)> = Vec::new();
        for &(trainable, dtype) in &keys {
            let mut len = 0usize;
            let mut members = Vec::new();
            for (i, p) in self.params.iter().enumerate() {
                if p.trainable == trainable && (trainable || p.dtype == dtype) {
                    layout[i] = (groups.len(), len);
                    len = len
                        .checked_add(p.numel.next_multiple_of(PARAM_ALIGN_ELEMENTS))
                        .ok_or_else(|| Error::range("finalize: too many parameter elements"))?;
                    members.push(i);
                }
            }
            groups.push((trainable, dtype, len.max(PARAM_ALIGN_ELEMENTS), members));
        }
        let mut computes = Vec::with_capacity(groups.len());
        for (_, dtype, len, _) in &groups {
            computes.push(Flat::new(&self.accel, *dtype, *len, 0)?);
        }
        // Allocated: from here on nothing fails. Move the initial values in.
        for (p, (group, offset)) in self.params.iter_mut().zip(layout) {
            p.group = group;
            p.offset = offset;
        }
        let mut staged = Vec::with_capacity(groups.len());
        for ((trainable, dtype, len, members), compute) in groups.into_iter().zip(computes) {
            // The padding is zero, so it stays finite under every optimizer.
            // SAFETY: a fresh buffer of `len` elements.
            unsafe { std::ptr::write_bytes(compute.ptr() as *mut u8, 0, len * dtype.size()) };
            for &i in &members {
                let p = &self.params[i];
                let bytes = self.pending[i]
                    .take()
                    .expect("pending values until finalize");
                let dst = compute.ptr() + p.offset * dtype.size();
                // SAFETY: dst..dst+len is inside the compute buffer (offset + numel <= len).
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst as *mut u8, bytes.len())
                };
            }
            staged.push(Staged {
                trainable,
                dtype,
                len,
                params: members,
                compute,
            });
        }
        self.staged = Some(staged);
        Ok(())
    }

    /// Whether [`finalize`](Self::finalize) has run.
    pub fn is_finalized(&self) -> bool {
        self.finalized
    }

    /// The number of registered parameters.
    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    /// The index of the parameter called `name`.
    pub fn param_index(&self, name: &str) -> Result<usize> {
        self.names
            .get(name)
            .copied()
            .ok_or_else(|| Error::invalid(format!("no parameter is called '{name}'")))
    }

    /// The name of parameter `index`.
    pub fn param_name(&self, index: usize) -> Result<&str> {
        Ok(&self.info(index)?.name)
    }

    /// Elements in trainable parameters.
    pub fn trainable_numel(&self) -> usize {
        self.params
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.numel)
            .sum()
    }

    fn info(&self, index: usize) -> Result<&ParamInfo> {
        self.params.get(index).ok_or_else(|| {
            Error::range(format!(
                "parameter index {index} is out of range ({} parameters)",
                self.params.len()
            ))
        })
    }

    fn need_finalized(&self, what: &str) -> Result<()> {
        if self.finalized {
            Ok(())
        } else {
            Err(Error::InvalidState(format!(
                "{what}: the engine is not finalized yet; call finalize after registering \
                 the parameters"
            )))
        }
    }

    fn view<'a>(&'a self, p: &'a ParamInfo, flat: &Flat) -> TensorView<'a> {
        TensorView {
            ptr: flat.ptr() + p.offset * flat.dtype.size(),
            dtype: flat.dtype,
            shape: &p.shape,
            numel: p.numel,
            device: flat.buf.dl_device(),
        }
    }

    /// A zero-copy view of parameter `index` in its compute dtype. The host may read it
    /// between steps (and write it, to change the model: under fp16/bf16 the fp32 master
    /// weights are not updated from such writes).
    pub fn param_tensor(&self, index: usize) -> Result<TensorView<'_>> {
        self.need_finalized("param")?;
        let p = self.info(index)?;
        Ok(self.view(p, &self.groups[p.group].compute))
    }

    /// A zero-copy view of the gradient of trainable parameter `index`: the host adds its
    /// micro-batch gradients into it; the engine zeroes it after each boundary.
    pub fn grad_tensor(&self, index: usize) -> Result<TensorView<'_>> {
        self.need_finalized("grad")?;
        let p = self.info(index)?;
        let g = self.groups[p.group].grads.as_ref().ok_or_else(|| {
            Error::invalid(format!(
                "parameter '{}' is frozen (registered with trainable = false): it has no \
                 gradient",
                p.name
            ))
        })?;
        Ok(self.view(p, g))
    }

    /// A view of optimizer state `state` (one of [`STATE_NAMES`]) of trainable parameter
    /// `index`, fp32. `master` exists under fp16/bf16 training.
    pub fn state_tensor(&self, index: usize, state: &str) -> Result<TensorView<'_>> {
        self.need_finalized("optimizer_state")?;
        let p = self.info(index)?;
        let g = &self.groups[p.group];
        if !g.trainable {
            return Err(Error::invalid(format!(
                "parameter '{}' is frozen: it has no optimizer state",
                p.name
            )));
        }
        if state == "master" {
            return match &g.master {
                Some(m) => Ok(self.view(p, m)),
                None => Err(Error::invalid(format!(
                    "optimizer state 'master': fp32 training keeps no separate master \
                     weights (the parameter is its own master); the engine trains in {}",
                    self.compute_dtype.name()
                ))),
            };
        }
        match g.states.iter().find(|(n, _)| *n == state) {
            Some((_, f)) => Ok(self.view(p, f)),
            None => {
                let have: Vec<&str> = g.states.iter().map(|(n, _)| *n).collect();
                Err(Error::invalid(format!(
                    "optimizer state '{state}': the {} optimizer keeps {}",
                    self.optimizer.type_name,
                    if have.is_empty() {
                        "no state".to_string()
                    } else {
                        format!("{:?}", have)
                    }
                )))
            }
        }
    }

    /// The gradient of parameter `index` as `f32`s (fp32 gradients only), for hosts in
    /// Rust.
    pub fn grad_f32_mut(&mut self, index: usize) -> Result<&mut [f32]> {
        let v = self.grad_tensor(index)?;
        if v.dtype != DType::F32 {
            return Err(Error::invalid(format!(
                "grad_f32_mut: the gradients are {}",
                v.dtype.name()
            )));
        }
        // SAFETY: the view is inside the engine's gradient buffer; &mut self is exclusive.
        Ok(unsafe { std::slice::from_raw_parts_mut(v.ptr as *mut f32, v.numel) })
    }

    /// Parameter `index` (compute copy) converted to f64.
    pub fn param_values(&self, index: usize) -> Result<Vec<f64>> {
        let v = self.param_tensor(index)?;
        Ok(read_f64(&v))
    }

    /// Optimizer state `state` of parameter `index`, as f64 (see
    /// [`state_tensor`](Self::state_tensor)).
    pub fn state_values(&self, index: usize, state: &str) -> Result<Vec<f64>> {
        let v = self.state_tensor(index, state)?;
        Ok(read_f64(&v))
    }

    /// The scale the host multiplies its loss by before backward (1 without fp16).
    pub fn loss_scale(&self) -> f64 {
        f64::from(self.loss_scaler.scale())
    }

    /// The loss scaler (its state, for checkpoints and inspection).
    pub fn loss_scaler(&self) -> &LossScaler {
        &self.loss_scaler
    }

    /// The LR scheduler, if the config has one.
    pub fn lr_scheduler(&self) -> Option<&LrScheduler> {
        self.scheduler.as_ref()
    }

    /// The learning rate the next optimizer step uses.
    pub fn lr(&self) -> f64 {
        if let Some(lr) = self.lr_override {
            return lr;
        }
        match &self.scheduler {
            Some(s) => s.get_lr(),
            None => self.base_lr,
        }
    }

    /// Sets the learning rate. Without a scheduler it stays; with one it holds until the
    /// scheduler's next step replaces it (as setting a torch param group's lr does).
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        if !(lr.is_finite() && lr >= 0.0 && lr <= f64::from(f32::MAX)) {
            return Err(Error::range(format!(
                "argument 'lr' must be finite, >= 0 and representable as float32, got {lr}"
            )));
        }
        if self.scheduler.is_some() {
            self.lr_override = Some(lr);
        } else {
            self.base_lr = lr;
        }
        Ok(())
    }

    /// Records the (unscaled) loss of a micro batch, for progress lines and csv_monitor.
    pub fn report_loss(&mut self, loss: f64) {
        self.loss_sum += loss;
        self.loss_count += 1;
    }

    /// `(train_batch_size, train_micro_batch_size_per_gpu, gradient_accumulation_steps)`.
    pub fn batch_sizes(&self) -> (u64, u64, u64) {
        let b = &self.config.batch;
        (
            b.train_batch_size,
            b.train_micro_batch_size_per_gpu,
            b.gradient_accumulation_steps,
        )
    }

    /// Optimizer steps so far (applied and skipped).
    pub fn global_steps(&self) -> u64 {
        self.global_steps
    }

    /// Micro steps so far.
    pub fn micro_steps(&self) -> u64 {
        self.micro_steps
    }

    /// Skipped optimizer steps so far.
    pub fn skipped_steps(&self) -> u64 {
        self.skipped_steps
    }

    /// The record of the last accumulation boundary, if any.
    pub fn last_step_record(&self) -> Option<StepRecord> {
        self.last_record
    }

    /// Whether the next [`step`](Self::step) ends an accumulation window.
    pub fn is_gradient_accumulation_boundary(&self) -> bool {
        (self.micro_steps + 1) % self.config.batch.gradient_accumulation_steps == 0
    }

    /// Counters, loss-scaler and scheduler state, timers and the optimizer implementation,
    /// as JSON.
    pub fn stats_json(&self) -> Value {
        let timers: serde_json::Map<String, Value> = self
            .timers
            .total
            .iter()
            .map(|(n, ms, c)| {
                (
                    n.to_string(),
                    json!({"total_ms": ms, "count": c, "mean_ms": ms / (*c).max(1) as f64}),
                )
            })
            .collect();
        json!({
            "global_steps": self.global_steps,
            "micro_steps": self.micro_steps,
            "skipped_steps": self.skipped_steps,
            "applied_steps": self.applied_steps,
            "global_samples": self.global_steps * self.config.batch.train_batch_size,
            "lr": self.lr(),
            "loss_scale": self.loss_scale(),
            "loss_scaler": serde_json::to_value(self.loss_scaler.state_dict()).unwrap_or(Value::Null),
            "lr_scheduler": self.scheduler.as_ref().map(|s| json!({
                "type": s.schedule().name(),
                "last_batch_iteration": s.last_batch_iteration(),
            })),
            "optimizer": {
                "type": self.optimizer.type_name,
                "implementation": match &self.ran {
                    None => Value::Null,
                    Some(Ran::Kernel(simd)) => json!(format!("kernel ({simd})")),
                    Some(Ran::Reference) => json!("reference (pure Rust)"),
                },
            },
            "compute_dtype": self.compute_dtype.name(),
            "grad_dtype": self.grad_dtype.name(),
            "trainable_params": self.trainable_numel(),
            "last_step": self.last_record,
            "timers_ms": timers,
        })
    }

    /// One micro step. Off the accumulation boundary it only counts; at the boundary it
    /// runs the optimizer step described in the [module documentation](self).
    ///
    /// Errors leave the engine as it was before the call (counters, gradients,
    /// parameters, optimizer state, schedules), so the host can fix the cause (an lr,
    /// say) and call again: not finalized; a hyper-parameter the optimizer refuses (a
    /// OneCycle momentum reaching 1, an lr beyond float32); an op that must be built and
    /// cannot (`Backend::Kernel`). The exception is fp16's overflow at the minimum loss
    /// scale (DeepSpeed's "Current loss scale already at minimum"): the window is
    /// consumed and its gradients zeroed, the parameters are untouched.
    pub fn step(&mut self) -> Result<StepRecord> {
        self.need_finalized("step")?;
        let gas = self.config.batch.gradient_accumulation_steps;
        if (self.micro_steps + 1) % gas != 0 {
            self.micro_steps += 1;
            return Ok(StepRecord {
                global_step: self.global_steps,
                micro_step: self.micro_steps,
                skipped_steps: self.skipped_steps,
                boundary: false,
                applied: false,
                overflow: false,
                loss_scale: self.loss_scale(),
                lr: self.lr(),
                grad_norm: -1.0,
            });
        }
        let t_step = Instant::now();
        let loss_scale = self.loss_scale();
        let lr = self.lr();
        // Everything that can refuse the step is checked before anything changes.
        let hp = self.prepare_optimizer(lr)?;

        let t = Instant::now();
        let (sumsq, finite) = self.scan_grads();
        self.timers.add("compute_norm", ms_since(t));

        let divisor = loss_scale * gas as f64;
        let grad_norm = if finite {
            sumsq.sqrt() / divisor
        } else {
            f64::NAN
        };
        // DeepSpeed: clip = (norm + 1e-6) / max_norm; if clip > 1 the gradients are
        // divided by clip as well as by the scale.
        let mut total = divisor;
        let max_norm = self.config.gradient_clipping;
        if max_norm > 0.0 && grad_norm.is_finite() {
            let clip = (grad_norm + 1e-6) / max_norm;
            if clip > 1.0 {
                total *= clip;
            }
        }
        // Gradients so large that the divisor leaves float32 cannot be applied either.
        let representable = (total as f32).is_finite();
        let overflow = (self.check_overflow && !finite) || (finite && !representable);
        let loss = self.take_window_loss();
        let applied = !overflow;
        self.micro_steps += 1;
        if overflow {
            let t = Instant::now();
            self.zero_grads();
            self.timers.add("zero_grad", ms_since(t));
            // The scaler first: at the minimum scale it refuses, before anything is counted.
            let outcome = self.loss_scaler.update(true)?;
            self.global_steps += 1;
            self.skipped_steps += 1;
            crate::dsrs_info!(
                "engine",
                "[deepspeed_rs] OVERFLOW! Skipping step {}: {} gradients ({}). Attempted loss \
                 scale: {}, reducing to {}",
                self.global_steps,
                if finite { "too large" } else { "non-finite" },
                self.grad_dtype.name(),
                outcome.previous_scale,
                outcome.scale
            );
        } else {
            let t = Instant::now();
            let ran = self.run_optimizer(hp, total as f32);
            // The step zeroes the gradients in its own pass: no separate zero_grad.
            self.timers.add("optimizer_step", ms_since(t));
            if let Err(e) = ran {
                // Kernels validate before writing: nothing changed; the host may retry.
                self.micro_steps -= 1;
                if let Some(l) = loss {
                    self.loss_sum = l.0;
                    self.loss_count = l.1;
                }
                return Err(e);
            }
            self.applied_steps += 1;
            self.global_steps += 1;
            // A clean step never errors (only overflows at the minimum scale do).
            self.loss_scaler.update(false)?;
            if let Some(s) = self.scheduler.as_mut() {
                s.step();
                self.lr_override = None;
            }
        }
        self.timers.add("step", ms_since(t_step));
        let record = StepRecord {
            global_step: self.global_steps,
            micro_step: self.micro_steps,
            skipped_steps: self.skipped_steps,
            boundary: true,
            applied,
            overflow,
            loss_scale,
            lr,
            grad_norm,
        };
        self.last_record = Some(record);
        self.report(&record, loss.map(|l| l.0 / l.1 as f64));
        Ok(record)
    }

    /// The reported losses of the window ending now, `(sum, count)`, reset.
    fn take_window_loss(&mut self) -> Option<(f64, u64)> {
        let l = (self.loss_count > 0).then_some((self.loss_sum, self.loss_count));
        self.loss_sum = 0.0;
        self.loss_count = 0;
        l
    }

    /// Progress lines, timers and csv_monitor events at a boundary. Monitor failures (a
    /// full disk) are warnings: the step itself has happened.
    fn report(&mut self, r: &StepRecord, loss: Option<f64>) {
        if let Some(spp) = self.config.steps_per_print
            && self.global_steps % spp == 0
        {
            let mom = self.scheduler.as_ref().and_then(|s| s.get_momentum());
            let mut line = format!(
                "step={}, skipped={}, lr=[{}], mom={}",
                self.global_steps,
                self.skipped_steps,
                python_float(self.lr()),
                self.optimizer.mom_text(mom)
            );
            if let Some(l) = loss {
                let _ = write!(line, ", loss={l:.6}");
            }
            if r.grad_norm >= 0.0 {
                let _ = write!(line, ", grad_norm={:.6}", r.grad_norm);
            }
            if matches!(self.config.precision, Precision::Fp16 { .. }) {
                let _ = write!(line, ", loss_scale={}", python_float(self.loss_scale()));
            }
            crate::dsrs_info!("engine", "{line}");
            if self.config.wall_clock_breakdown {
                let t = self.timers.line();
                crate::dsrs_info!("engine", "{t}");
            }
        } else if self.config.wall_clock_breakdown && self.config.steps_per_print.is_none() {
            let t = self.timers.line();
            crate::dsrs_info!("engine", "{t}");
        }
        let (lr, scale) = (self.lr(), self.loss_scale());
        if let Some(csv) = self.csv.as_mut() {
            // As DeepSpeed: x = global samples; the lr and scale after this step's updates.
            let samples = self.global_steps * self.config.batch.train_batch_size;
            let mut events = Vec::new();
            if let Some(l) = loss {
                events.push(("Train/Samples/train_loss", l));
            }
            events.push(("Train/Samples/lr", lr));
            if matches!(self.config.precision, Precision::Fp16 { .. }) {
                events.push(("Train/Samples/loss_scale", scale));
            }
            for (tag, v) in events {
                if let Err(e) = csv.write(tag, samples, v) {
                    crate::dsrs_warn!("engine", "csv_monitor: {e}");
                }
            }
        }
    }

    /// Sum of squares (f64, per-block partials added in block order) and finiteness of
    /// every gradient.
    ///
    /// On the calling thread, on purpose: right after a step the kernels' OpenMP workers
    /// spin-wait on the other cores (libgomp's default), and a second scan thread competing
    /// with them made the scan 3x slower (3.0 ms against 1.0 ms at 10M fp32 on 2 vCPUs); one
    /// thread reads at close to the memory bandwidth. The fixed blocks keep the bits
    /// independent of how a future parallel scan splits the work.
    fn scan_grads(&self) -> (f64, bool) {
        let g = &self.groups[0];
        let grads = g.grads.as_ref().expect("trainable group has gradients");
        let mut sum = 0f64;
        for lo in (0..g.len).step_by(SCAN_BLOCK) {
            let hi = (lo + SCAN_BLOCK).min(g.len);
            // SAFETY: lo..hi is inside the gradient buffer; the host does not write
            // gradients during step (the documented contract).
            sum += unsafe { sum_squares(grads.ptr(), grads.dtype, lo, hi) };
        }
        (sum, sum.is_finite())
    }

    /// Zeroes the gradient buffer (a skipped step; applied steps zero inside the
    /// optimizer's pass).
    fn zero_grads(&self) {
        let g = &self.groups[0];
        let grads = g.grads.as_ref().expect("trainable group has gradients");
        // SAFETY: the whole gradient buffer; no other reference during step.
        unsafe { std::ptr::write_bytes(grads.ptr() as *mut u8, 0, g.len * grads.dtype.size()) };
    }

    /// The optimizer's hyper-parameters for the next step at `lr`, validated (nothing is
    /// touched): `grad_scale` is filled in by [`run_optimizer`](Self::run_optimizer).
    fn prepare_optimizer(&self, lr: f64) -> Result<Hyper> {
        let lr = f32_of(lr, "lr")?;
        let step = self.applied_steps + 1;
        // OneCycle's cycle_momentum drives beta1 of optimizers with betas, and DeepSpeed
        // then sets beta2 to 0.99; optimizers without betas (SGD, Adagrad) are left alone,
        // as DeepSpeed turns momentum cycling off for them.
        let mom = self.scheduler.as_ref().and_then(|s| s.get_momentum());
        let betas = |b1: f64, b2: f64| -> Result<(f32, f32)> {
            match mom {
                Some(m) => Ok((f32_of(m, "momentum")?, 0.99)),
                None => Ok((f32_of(b1, "beta1")?, f32_of(b2, "beta2")?)),
            }
        };
        let hp = match self.optimizer.kind.clone() {
            OptimizerKind::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                adamw_mode,
                bias_correction,
                torch_adam: _,
            } => {
                let (beta1, beta2) = betas(beta1, beta2)?;
                let hp = AdamParams {
                    lr,
                    beta1,
                    beta2,
                    eps: f32_of(eps, "eps")?,
                    weight_decay: f32_of(weight_decay, "weight_decay")?,
                    adamw_mode,
                    bias_correction,
                    step,
                    grad_scale: 1.0,
                };
                hp.validate()?;
                Hyper::Adam(hp)
            }
            OptimizerKind::Adagrad { eps, weight_decay } => {
                let hp = AdagradParams {
                    lr,
                    eps: f32_of(eps, "eps")?,
                    weight_decay: f32_of(weight_decay, "weight_decay")?,
                    grad_scale: 1.0,
                };
                hp.validate()?;
                Hyper::Adagrad(hp)
            }
            OptimizerKind::Lion {
                beta1,
                beta2,
                weight_decay,
            } => {
                let (beta1, beta2) = betas(beta1, beta2)?;
                let hp = LionParams {
                    lr,
                    beta1,
                    beta2,
                    weight_decay: f32_of(weight_decay, "weight_decay")?,
                    grad_scale: 1.0,
                };
                hp.validate()?;
                Hyper::Lion(hp)
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
                let (beta1, beta2) = betas(beta1, beta2)?;
                let hp = LambParams {
                    lr,
                    beta1,
                    beta2,
                    eps: f32_of(eps, "eps")?,
                    weight_decay: f32_of(weight_decay, "weight_decay")?,
                    bias_correction,
                    step,
                    max_coeff: f32_of(max_coeff, "max_coeff")?,
                    min_coeff: f32_of(min_coeff, "min_coeff")?,
                    eps_inside_sqrt,
                    grad_scale: 1.0,
                };
                hp.validate()?;
                Hyper::Lamb(hp)
            }
            OptimizerKind::Sgd {
                momentum,
                dampening,
                weight_decay,
                nesterov,
            } => Hyper::Sgd(SgdParams {
                lr,
                momentum: f32_of(momentum, "momentum")?,
                dampening: f32_of(dampening, "dampening")?,
                weight_decay: f32_of(weight_decay, "weight_decay")?,
                nesterov,
                first: step == 1,
                inv_scale: 1.0,
            }),
        };
        Ok(hp)
    }

    /// The optimizer over the trainable group, gradients divided by `gs` (finite, > 0),
    /// then zeroed (by the kernels in the same pass, tile by tile while in cache).
    fn run_optimizer(&mut self, hp: Hyper, gs: f32) -> Result<()> {
        let g = &self.groups[0];
        let n = g.len;
        let grads_flat = g.grads.as_ref().expect("trainable group has gradients");
        // SAFETY (all slices below): disjoint engine buffers of `n` elements of their
        // dtypes; `&mut self` excludes other engine access, and the host does not touch
        // them during step.
        let mut grads: GradsMut<'_> = unsafe {
            match grads_flat.dtype {
                DType::F32 => GradsMut::F32(grads_flat.slice_mut(0, n)),
                DType::F16 => GradsMut::F16(grads_flat.slice_mut(0, n)),
                DType::BF16 => GradsMut::BF16(grads_flat.slice_mut(0, n)),
                d => return Err(Error::Internal(format!("gradient dtype {}", d.name()))),
            }
        };
        let (params, copy): (ParamsMut<'_>, Option<CopyMut<'_>>) = unsafe {
            match (&g.master, g.dtype) {
                (None, DType::F32) => (ParamsMut::F32(g.compute.slice_mut(0, n)), None),
                (Some(m), DType::F16) => (
                    ParamsMut::F32(m.slice_mut(0, n)),
                    Some(CopyMut::F16(g.compute.slice_mut(0, n))),
                ),
                (Some(m), DType::BF16) => (
                    ParamsMut::F32(m.slice_mut(0, n)),
                    Some(CopyMut::BF16(g.compute.slice_mut(0, n))),
                ),
                (_, d) => return Err(Error::Internal(format!("compute dtype {}", d.name()))),
            }
        };
        let state = |name: &str| -> &mut [f32] {
            let f = &g
                .states
                .iter()
                .find(|(s, _)| *s == name)
                .expect("state allocated")
                .1;
            // SAFETY: as above; each state is borrowed once.
            unsafe { f.slice_mut(0, n) }
        };
        let ran = match hp {
            Hyper::Adam(mut hp) => {
                hp.grad_scale = gs;
                let (m, v) = (state("exp_avg"), state("exp_avg_sq"));
                cpu::adam_step(&hp, params, grads, m, v, copy, &self.exec)?
            }
            Hyper::Adagrad(mut hp) => {
                hp.grad_scale = gs;
                cpu::adagrad_step(&hp, params, grads, state("exp_avg_sq"), copy, &self.exec)?
            }
            Hyper::Lion(mut hp) => {
                hp.grad_scale = gs;
                cpu::lion_step(&hp, params, grads, state("exp_avg"), copy, &self.exec)?
            }
            Hyper::Lamb(mut hp) => {
                hp.grad_scale = gs;
                // LAMB's trust ratio is per tensor: one call per parameter.
                let (m_all, v_all) = (state("exp_avg"), state("exp_avg_sq"));
                let ParamsMut::F32(master) = params else {
                    unreachable!("LAMB runs on fp32 parameters or masters")
                };
                let all = grads.as_ref();
                for &i in &g.params {
                    let p = &self.params[i];
                    let r = p.offset..p.offset + p.numel;
                    let gr = match all {
                        GradsRef::F32(s) => GradsRef::F32(&s[r.clone()]),
                        GradsRef::F16(s) => GradsRef::F16(&s[r.clone()]),
                        GradsRef::BF16(s) => GradsRef::BF16(&s[r.clone()]),
                    };
                    lamb_step_reference(
                        &hp,
                        ParamsMut::F32(&mut master[r.clone()]),
                        gr,
                        &mut m_all[r.clone()],
                        &mut v_all[r],
                    )?;
                }
                if let Some(mut c) = copy {
                    copy_down(master, &mut c);
                }
                grads.zero();
                Ran::Reference
            }
            Hyper::Sgd(mut hp) => {
                hp.inv_scale = crate::ops::optim::inv_grad_scale(gs);
                let buf = if g.states.is_empty() {
                    None
                } else {
                    Some(state("momentum_buffer"))
                };
                let ParamsMut::F32(p) = params else {
                    unreachable!("SGD runs on fp32 parameters or masters")
                };
                sgd_step(p, grads.as_ref(), buf, hp);
                if let Some(mut c) = copy {
                    copy_down(p, &mut c);
                }
                grads.zero();
                Ran::Reference
            }
        };
        self.ran = Some(ran);
        Ok(())
    }
}

/// Validated hyper-parameters of the next optimizer step.
enum Hyper {
    Adam(AdamParams),
    Adagrad(AdagradParams),
    Lion(LionParams),
    Lamb(LambParams),
    Sgd(SgdParams),
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Sum of squares of `s` (as f64) in 32 lanes (enough independent additions to hide their
/// latency), added lane by lane in a fixed order: the same bits however the compiler
/// vectorizes it.
#[inline(always)]
fn lanes<T: Copy>(s: &[T], f: impl Fn(T) -> f64) -> f64 {
    const L: usize = 32;
    let mut acc = [0f64; L];
    let mut it = s.chunks_exact(L);
    for c in &mut it {
        for j in 0..L {
            let x = f(c[j]);
            acc[j] += x * x;
        }
    }
    for (j, &v) in it.remainder().iter().enumerate() {
        let x = f(v);
        acc[j] += x * x;
    }
    let mut w = L;
    while w > 1 {
        w /= 2;
        for j in 0..w {
            acc[j] += acc[j + w];
        }
    }
    acc[0]
}

fn sum_squares_f32(s: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn avx2(s: &[f32]) -> f64 {
            lanes(s, f64::from)
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked above).
            return unsafe { avx2(s) };
        }
    }
    lanes(s, f64::from)
}

/// # Safety
/// `base` holds at least `hi` elements of `dtype`, readable.
unsafe fn sum_squares(base: usize, dtype: DType, lo: usize, hi: usize) -> f64 {
    let len = hi - lo;
    // SAFETY: the caller's contract.
    unsafe {
        match dtype {
            DType::F32 => sum_squares_f32(std::slice::from_raw_parts(
                (base as *const f32).add(lo),
                len,
            )),
            DType::F16 => lanes(
                std::slice::from_raw_parts((base as *const f16).add(lo), len),
                |v: f16| f64::from(v.to_f32()),
            ),
            DType::BF16 => lanes(
                std::slice::from_raw_parts((base as *const u16).add(lo), len),
                |v: u16| f64::from(f32::from_bits(u32::from(v) << 16)),
            ),
            _ => f64::NAN,
        }
    }
}

/// Rounds fp32 master weights into the compute copy (nearest even).
fn copy_down(master: &[f32], copy: &mut CopyMut<'_>) {
    match copy {
        CopyMut::F16(c) => c
            .iter_mut()
            .zip(master)
            .for_each(|(d, s)| *d = f16::from_f32(*s)),
        CopyMut::BF16(c) => c
            .iter_mut()
            .zip(master)
            .for_each(|(d, s)| *d = bf16::from_f32(*s)),
    }
}

struct SgdParams {
    lr: f32,
    momentum: f32,
    dampening: f32,
    weight_decay: f32,
    nesterov: bool,
    first: bool,
    inv_scale: f32,
}

/// torch.optim.SGD (foreach=False semantics, in f32): `g = g/scale + wd·p`; with momentum
/// `buf = g` on the first step, else `buf = momentum·buf + (1 - dampening)·g`, and
/// `g = g + momentum·buf` (Nesterov) or `g = buf`; `p -= lr·g`.
fn sgd_step(p: &mut [f32], grads: GradsRef<'_>, mut buf: Option<&mut [f32]>, hp: SgdParams) {
    let g_at = |i: usize| -> f32 {
        match grads {
            GradsRef::F32(s) => s[i],
            GradsRef::F16(s) => s[i].to_f32(),
            GradsRef::BF16(s) => s[i].to_f32(),
        }
    };
    for i in 0..p.len() {
        let mut g = g_at(i) * hp.inv_scale;
        if hp.weight_decay != 0.0 {
            g += hp.weight_decay * p[i];
        }
        if let Some(b) = buf.as_deref_mut() {
            let m = if hp.first {
                g
            } else {
                hp.momentum * b[i] + (1.0 - hp.dampening) * g
            };
            b[i] = m;
            g = if hp.nesterov { g + hp.momentum * m } else { m };
        }
        p[i] -= hp.lr * g;
    }
}

fn read_f64(v: &TensorView<'_>) -> Vec<f64> {
    // SAFETY: the view is inside an engine buffer of its dtype.
    unsafe {
        match v.dtype {
            DType::F32 => std::slice::from_raw_parts(v.ptr as *const f32, v.numel)
                .iter()
                .map(|&x| f64::from(x))
                .collect(),
            DType::F16 => std::slice::from_raw_parts(v.ptr as *const f16, v.numel)
                .iter()
                .map(|x| f64::from(x.to_f32()))
                .collect(),
            DType::BF16 => std::slice::from_raw_parts(v.ptr as *const bf16, v.numel)
                .iter()
                .map(|x| f64::from(x.to_f32()))
                .collect(),
            DType::F64 => std::slice::from_raw_parts(v.ptr as *const f64, v.numel).to_vec(),
            _ => Vec::new(),
        }
    }
}

/// Converts initial values to `to` (round to nearest even), as bytes.
fn convert(init: ParamData<'_>, to: DType, name: &str) -> Result<Vec<u8>> {
    if init.dtype == to {
        return Ok(init.bytes.to_vec());
    }
    let n = init.bytes.len() / init.dtype.size();
    let get = |i: usize| -> f64 {
        let b = &init.bytes[i * init.dtype.size()..(i + 1) * init.dtype.size()];
        match init.dtype {
            DType::F32 => f64::from(f32::from_ne_bytes(b.try_into().expect("4 bytes"))),
            DType::F64 => f64::from_ne_bytes(b.try_into().expect("8 bytes")),
            DType::F16 => f64::from(f16::from_ne_bytes(b.try_into().expect("2 bytes")).to_f32()),
            DType::BF16 => f64::from(bf16::from_ne_bytes(b.try_into().expect("2 bytes")).to_f32()),
            _ => f64::NAN,
        }
    };
    let mut out = Vec::with_capacity(n * to.size());
    for i in 0..n {
        let v = get(i);
        match to {
            DType::F32 => out.extend_from_slice(&(v as f32).to_ne_bytes()),
            DType::F64 => out.extend_from_slice(&v.to_ne_bytes()),
            DType::F16 => out.extend_from_slice(&f16::from_f64(v).to_ne_bytes()),
            DType::BF16 => out.extend_from_slice(&bf16::from_f64(v).to_ne_bytes()),
            d => {
                return Err(Error::invalid(format!(
                    "register_param('{name}'): cannot store a parameter as {}",
                    d.name()
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_matches_repr() {
        for (v, s) in [
            (0.001, "0.001"),
            (65536.0, "65536.0"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (123456789012345.0, "123456789012345.0"),
            (-2.5, "-2.5"),
            (0.1 + 0.2, "0.30000000000000004"),
        ] {
            assert_eq!(python_float(v), s, "{v}");
        }
    }
}
