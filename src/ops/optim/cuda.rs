//! Adam/AdamW, LAMB and Lion steps on CUDA: the host side of the multi-tensor `fused_adam`,
//! `fused_lamb` and `fused_lion` ops (`kernels/cuda/fused_*.cu`).
//!
//! A step takes any number of tensors in device memory ([`CudaTensors`]: addresses, dtypes,
//! length). Everything is validated first (the error names the tensor and the field:
//! `adam: tensors[3].exp_avg is 0 ...`); then the tensors are grouped by
//! (parameter dtype, gradient dtype), each group is cut into launches by [`plan`] (apex's and
//! DeepSpeed's multi-tensor apply: per launch up to [`MAX_TENSORS`] tensors and
//! [`MAX_BLOCKS`] blocks, each block one chunk of [`CHUNK_SIZE`] elements of one tensor;
//! the addresses, lengths and the block → (tensor, chunk) table travel by value in the
//! kernel's parameter block, under the 4 KB every CUDA 12 driver accepts), and the launches
//! are enqueued on the given stream. Nothing synchronizes: the step returns as soon as its
//! work is enqueued, and it may be captured into a graph.
//!
//! The per-element float operations are those of the CPU ops and of
//! [`super::reference`] (and [`super::lamb::lamb_step_reference`]), with every constant
//! derived here with the same f32 operations, so Adam and Lion agree with the reference bit
//! for bit; LAMB's trust ratio may differ in the last bit (see [`super::lamb`]).
//!
//! LAMB scratch memory (the per-chunk partial sums of squares and, unless the caller wants
//! them, the trust ratios) is allocated and freed in stream order (`cuMemAllocAsync` /
//! `cuMemFreeAsync`, the device's default memory pool) around the step's launches.
//!
//! The loaded ops are memoized per [`BuildOptions`], so a step does not hash the kernel
//! sources again (a changed `force_rebuild` takes effect once per process).

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, OnceLock};

use cudarc::driver::sys;
use parking_lot::Mutex;

use super::lamb::LambParams;
use super::{AdamParams, LionParams, Ran, check_dtypes, inv_grad_scale};
use crate::accelerator::cuda::CudaStream;
use crate::accelerator::cuda::driver::check;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::{BuildOptions, LoadedOp};

/// Elements per chunk: one block updates one chunk of one tensor.
pub const CHUNK_SIZE: usize = 65536;
/// Threads per block of every optimizer kernel (`DSRS_MT_THREADS`).
pub const THREADS: u32 = 512;
/// Tensors per launch (`DSRS_MT_MAX_TENSORS`).
pub const MAX_TENSORS: usize = 32;
/// Blocks per launch (`DSRS_MT_MAX_BLOCKS`).
pub const MAX_BLOCKS: usize = 384;
/// Tensors per trust-ratio launch of LAMB (`DSRS_LAMB_MAX_RATIOS`).
pub const MAX_RATIOS: usize = 384;

/// One tensor of a step: device addresses in the stream's context, dtypes and length.
///
/// The addresses must be device memory (or memory the device may access) holding `len`
/// elements each, not overlapping each other or another tensor's; this cannot be checked
/// without synchronizing, so a wrong address faults on the device (and such a fault ruins
/// the CUDA context).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaTensors {
    /// The parameters, updated in place (fp32, fp16 or bf16).
    pub params: u64,
    /// The parameters' dtype.
    pub params_dtype: DType,
    /// The gradients (fp32 or the parameters' dtype; fp32 parameters also take fp16/bf16).
    pub grads: u64,
    /// The gradients' dtype.
    pub grads_dtype: DType,
    /// The first moment (fp32): Adam, LAMB and Lion (its momentum); 0 if unused.
    pub exp_avg: u64,
    /// The second moment (fp32): Adam and LAMB; 0 if unused (Lion ignores it).
    pub exp_avg_sq: u64,
    /// Elements; an empty tensor is skipped (its addresses may then be 0).
    pub len: usize,
}

/// The limits of one multi-tensor launch, for [`plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Elements per chunk (one block each); a positive multiple of 4.
    pub chunk_size: usize,
    /// Tensors per launch, 1 to 256.
    pub max_tensors: usize,
    /// Blocks per launch, at least 1.
    pub max_blocks: usize,
}

/// The limits the kernels are compiled for.
pub const LIMITS: PlanLimits = PlanLimits {
    chunk_size: CHUNK_SIZE,
    max_tensors: MAX_TENSORS,
    max_blocks: MAX_BLOCKS,
};

/// One kernel launch of a multi-tensor step.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Launch {
    /// The launch's tensors, as indices into the planned list, in slot order.
    pub tensors: Vec<usize>,
    /// One entry per block: its tensor's slot in [`Launch::tensors`] and the chunk number
    /// within that tensor (elements `chunk * chunk_size ..`).
    pub blocks: Vec<(u8, u32)>,
}

/// Splits tensors of lengths `lens` into launches: every element of every tensor belongs to
/// exactly one block of one launch; empty tensors get none. Tensors keep their order; a
/// tensor with more chunks than a launch has room for continues in the next launch (again
/// in slot 0). Fails when a limit is invalid or a tensor has more than 2^32 chunks.
pub fn plan(lens: &[usize], limits: &PlanLimits) -> Result<Vec<Launch>> {
    let PlanLimits {
        chunk_size,
        max_tensors,
        max_blocks,
    } = *limits;
    if chunk_size == 0 || chunk_size % 4 != 0 {
        return Err(Error::invalid(format!(
            "multi-tensor plan: chunk_size {chunk_size} must be a positive multiple of 4"
        )));
    }
    if !(1..=256).contains(&max_tensors) || max_blocks == 0 {
        return Err(Error::invalid(format!(
            "multi-tensor plan: max_tensors {max_tensors} must be in 1..=256 and max_blocks {max_blocks} at least 1"
        )));
    }
    let mut launches = Vec::new();
    let mut cur = Launch::default();
    for (index, &len) in lens.iter().enumerate() {
        if len == 0 {
            continue;
        }
        let chunks = len.div_ceil(chunk_size) as u64;
        if chunks > u64::from(u32::MAX) + 1 {
            return Err(Error::invalid(format!(
                "multi-tensor plan: tensor {index} has {len} elements, more than 2^32 chunks of {chunk_size}"
            )));
        }
        let mut next = 0u64;
        while next < chunks {
            if cur.tensors.len() == max_tensors || cur.blocks.len() == max_blocks {
                launches.push(std::mem::take(&mut cur));
            }
            let slot = cur.tensors.len() as u8;
            cur.tensors.push(index);
            let take = (chunks - next).min((max_blocks - cur.blocks.len()) as u64);
            cur.blocks
                .extend((next..next + take).map(|c| (slot, c as u32)));
            next += take;
        }
    }
    if !cur.blocks.is_empty() {
        launches.push(cur);
    }
    Ok(launches)
}

// ---- the kernels' parameter blocks (layouts asserted in the .cu files too)

/// `dsrs_mt_args`.
#[repr(C)]
#[derive(Clone, Copy)]
struct MtArgs {
    params: [u64; MAX_TENSORS],
    grads: [u64; MAX_TENSORS],
    exp_avg: [u64; MAX_TENSORS],
    exp_avg_sq: [u64; MAX_TENSORS],
    len: [u64; MAX_TENSORS],
    partial_base: [u32; MAX_TENSORS],
    tensor_index: [u32; MAX_TENSORS],
    block_chunk: [u32; MAX_BLOCKS],
    block_tensor: [u8; MAX_BLOCKS],
    chunk_size: u32,
    num_blocks: u32,
}

const _: () = {
    assert!(std::mem::size_of::<MtArgs>() == 3464);
    assert!(std::mem::offset_of!(MtArgs, partial_base) == 1280);
    assert!(std::mem::offset_of!(MtArgs, block_chunk) == 1536);
    assert!(std::mem::offset_of!(MtArgs, block_tensor) == 3072);
    assert!(std::mem::offset_of!(MtArgs, chunk_size) == 3456);
    assert!(CHUNK_SIZE % 4 == 0 && CHUNK_SIZE <= u32::MAX as usize);
    assert!(MAX_TENSORS <= 256);
};

/// `dsrs_adam_hyper`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
struct AdamHyper {
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    eps: f32,
    bc2: f32,
    step_size: f32,
    weight_decay: f32,
    decoupled: f32,
    inv_grad_scale: f32,
    mode: u32,
    reserved: u32,
}

/// `dsrs_lion_hyper`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
struct LionHyper {
    lr: f32,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    decay: f32,
    inv_grad_scale: f32,
    use_decay: u32,
}

/// `dsrs_lamb_hyper`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
struct LambHyper {
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    eps: f32,
    weight_decay: f32,
    step_size: f32,
    inv_grad_scale: f32,
    eps_inside_sqrt: u32,
    use_weight_decay: u32,
}

/// `dsrs_lamb_ratio_args`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LambRatioArgs {
    partials: u64,
    ratios: u64,
    begin: [u32; MAX_RATIOS],
    count: [u32; MAX_RATIOS],
    first_tensor: u32,
    num_blocks: u32,
    max_coeff: f32,
    min_coeff: f32,
}

const _: () = {
    assert!(std::mem::size_of::<AdamHyper>() == 48);
    assert!(std::mem::size_of::<LionHyper>() == 32);
    assert!(std::mem::size_of::<LambHyper>() == 40);
    assert!(std::mem::size_of::<LambRatioArgs>() == 3104);
    // Every kernel's parameters stay under the 4 KB limit of CUDA 12.0 drivers.
    assert!(std::mem::size_of::<MtArgs>() + 48 + 8 < 4096);
};

impl AdamHyper {
    fn new(p: &AdamParams) -> AdamHyper {
        let (bc1, bc2) = p.bias_corrections();
        AdamHyper {
            beta1: p.beta1,
            one_minus_beta1: 1.0 - p.beta1,
            beta2: p.beta2,
            one_minus_beta2: 1.0 - p.beta2,
            eps: p.eps,
            bc2,
            step_size: -p.lr / bc1,
            weight_decay: p.weight_decay,
            decoupled: -p.lr * p.weight_decay,
            inv_grad_scale: inv_grad_scale(p.grad_scale),
            mode: match (p.weight_decay > 0.0, p.adamw_mode) {
                (false, _) => 0,
                (true, false) => 1,
                (true, true) => 2,
            },
            reserved: 0,
        }
    }
}

impl LionHyper {
    fn new(p: &LionParams) -> LionHyper {
        LionHyper {
            lr: p.lr,
            beta1: p.beta1,
            one_minus_beta1: 1.0 - p.beta1,
            beta2: p.beta2,
            one_minus_beta2: 1.0 - p.beta2,
            decay: 1.0 - p.lr * p.weight_decay,
            inv_grad_scale: inv_grad_scale(p.grad_scale),
            use_decay: u32::from(p.weight_decay > 0.0),
        }
    }
}

impl LambHyper {
    fn new(p: &LambParams) -> LambHyper {
        LambHyper {
            beta1: p.beta1,
            one_minus_beta1: 1.0 - p.beta1,
            beta2: p.beta2,
            one_minus_beta2: 1.0 - p.beta2,
            eps: p.eps,
            weight_decay: p.weight_decay,
            step_size: p.step_size(),
            inv_grad_scale: inv_grad_scale(p.grad_scale),
            eps_inside_sqrt: u32::from(p.eps_inside_sqrt),
            use_weight_decay: u32::from(p.weight_decay > 0.0),
        }
    }
}

// ---- validation and grouping

/// The tensors of one (parameter dtype, gradient dtype), as indices into the step's list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    params: DType,
    grads: DType,
    members: Vec<usize>,
}

fn dtype_tag(t: DType) -> &'static str {
    match t {
        DType::F32 => "f32",
        DType::F16 => "f16",
        _ => "bf16",
    }
}

/// Validates every tensor of a step and groups the non-empty ones by dtypes (in order of
/// first appearance). `second_moment`: whether `exp_avg_sq` is used.
fn prepare(what: &str, tensors: &[CudaTensors], second_moment: bool) -> Result<Vec<Group>> {
    let mut groups: Vec<Group> = Vec::new();
    let mut seen: [HashMap<u64, usize>; 3] = Default::default();
    for (i, t) in tensors.iter().enumerate() {
        check_dtypes(
            &format!("{what}: tensors[{i}]"),
            t.params_dtype,
            t.grads_dtype,
            None,
        )?;
        if t.len == 0 {
            continue;
        }
        let mut fields = vec![
            ("params", t.params, t.params_dtype.size()),
            ("grads", t.grads, t.grads_dtype.size()),
            ("exp_avg", t.exp_avg, 4),
        ];
        if second_moment {
            fields.push(("exp_avg_sq", t.exp_avg_sq, 4));
        }
        for (field, addr, size) in &fields {
            if *addr == 0 {
                return Err(Error::invalid(format!(
                    "{what}: tensors[{i}].{field} is 0 (a null device address) but the tensor has {} elements",
                    t.len
                )));
            }
            if addr % *size as u64 != 0 {
                return Err(Error::invalid(format!(
                    "{what}: tensors[{i}].{field} = {addr:#x} is not aligned to {size} bytes (the size of its elements)"
                )));
            }
            let fits = (t.len as u64)
                .checked_mul(*size as u64)
                .and_then(|bytes| addr.checked_add(bytes))
                .is_some();
            if !fits {
                return Err(Error::invalid(format!(
                    "{what}: tensors[{i}].{field} = {addr:#x} with {} elements of {size} bytes runs past the end of the address space",
                    t.len
                )));
            }
        }
        // The same tensor twice would be updated twice, racing with itself.
        for (field, addr, _) in &fields {
            let k = match *field {
                "params" => 0,
                "exp_avg" => 1,
                "exp_avg_sq" => 2,
                _ => continue,
            };
            if let Some(j) = seen[k].insert(*addr, i) {
                return Err(Error::invalid(format!(
                    "{what}: tensors[{i}].{field} is the same address ({addr:#x}) as tensors[{j}].{field}; each tensor may appear once in a step"
                )));
            }
        }
        match groups
            .iter_mut()
            .find(|g| g.params == t.params_dtype && g.grads == t.grads_dtype)
        {
            Some(g) => g.members.push(i),
            None => groups.push(Group {
                params: t.params_dtype,
                grads: t.grads_dtype,
                members: vec![i],
            }),
        }
    }
    Ok(groups)
}

/// A validated, grouped and planned step: everything that can fail before the device is
/// touched.
struct Work {
    groups: Vec<Group>,
    plans: Vec<Vec<Launch>>,
    chunk_size: usize,
}

impl Work {
    fn new(
        what: &str,
        tensors: &[CudaTensors],
        second_moment: bool,
        limits: &PlanLimits,
    ) -> Result<Work> {
        let groups = prepare(what, tensors, second_moment)?;
        let plans = groups
            .iter()
            .map(|g| plan_group(tensors, g, limits))
            .collect::<Result<Vec<_>>>()?;
        Ok(Work {
            groups,
            plans,
            chunk_size: limits.chunk_size,
        })
    }
}

/// A group's launches, with the step-wide tensor index in place of the group-local one.
fn plan_group(tensors: &[CudaTensors], group: &Group, limits: &PlanLimits) -> Result<Vec<Launch>> {
    let lens: Vec<usize> = group.members.iter().map(|&i| tensors[i].len).collect();
    let mut launches = plan(&lens, limits)?;
    for l in &mut launches {
        for t in &mut l.tensors {
            *t = group.members[*t];
        }
    }
    Ok(launches)
}

/// The parameter block of one launch (`tensors` indices are step-wide).
fn mt_args(
    tensors: &[CudaTensors],
    launch: &Launch,
    chunk_size: usize,
    partial_base: Option<&[u64]>,
) -> MtArgs {
    let mut a = MtArgs {
        params: [0; MAX_TENSORS],
        grads: [0; MAX_TENSORS],
        exp_avg: [0; MAX_TENSORS],
        exp_avg_sq: [0; MAX_TENSORS],
        len: [0; MAX_TENSORS],
        partial_base: [0; MAX_TENSORS],
        tensor_index: [0; MAX_TENSORS],
        block_chunk: [0; MAX_BLOCKS],
        block_tensor: [0; MAX_BLOCKS],
        chunk_size: chunk_size as u32,
        num_blocks: launch.blocks.len() as u32,
    };
    for (slot, &i) in launch.tensors.iter().enumerate() {
        let t = &tensors[i];
        a.params[slot] = t.params;
        a.grads[slot] = t.grads;
        a.exp_avg[slot] = t.exp_avg;
        a.exp_avg_sq[slot] = t.exp_avg_sq;
        a.len[slot] = t.len as u64;
        // lamb_partials checked that every partial index fits in u32.
        a.partial_base[slot] = partial_base.map_or(0, |b| b[i] as u32);
        a.tensor_index[slot] = i as u32;
    }
    for (b, &(slot, chunk)) in launch.blocks.iter().enumerate() {
        a.block_tensor[b] = slot;
        a.block_chunk[b] = chunk;
    }
    a
}

// ---- ops and launches

type Memo = Mutex<Vec<(&'static str, BuildOptions, Arc<LoadedOp>)>>;

/// Loads op `name` once per [`BuildOptions`] (the last 16 option sets are kept).
fn load_op(name: &'static str, build: &BuildOptions) -> Result<Arc<LoadedOp>> {
    static MEMO: OnceLock<Memo> = OnceLock::new();
    let memo = MEMO.get_or_init(Default::default);
    if let Some((_, _, op)) = memo
        .lock()
        .iter()
        .find(|(n, b, _)| *n == name && b == build)
    {
        return Ok(op.clone());
    }
    // Outside the lock: a first build may take seconds.
    let op = crate::ops::load(name, build)?;
    let mut m = memo.lock();
    if !m.iter().any(|(n, b, _)| *n == name && b == build) {
        if m.len() >= 16 {
            m.remove(0);
        }
        m.push((name, build.clone(), op.clone()));
    }
    Ok(op)
}

/// A resolved kernel.
struct Kernel {
    name: String,
    f: *mut c_void,
}

/// Where a step's kernels run: the CUDA driver on a stream, or (in the tests) the kernel
/// sources compiled for the host.
trait Device {
    /// Resolves a kernel (all are resolved before anything is enqueued).
    fn kernel(&self, name: String) -> Result<Kernel>;
    /// Makes the device's context current; called once before the first launch.
    fn bind(&self) -> Result<()>;
    /// Enqueues `grid` blocks of [`THREADS`] threads of `k`.
    ///
    /// # Safety
    ///
    /// `params` points to the kernel's parameters, each of its exact type, and the
    /// addresses in them are valid for the kernel.
    unsafe fn launch(&self, k: &Kernel, grid: usize, params: &mut [*mut c_void]) -> Result<()>;
    /// Allocates `bytes` (> 0) of scratch memory, in stream order.
    fn alloc(&self, bytes: usize) -> Result<u64>;
    /// Frees scratch memory from [`Device::alloc`], in stream order.
    fn free(&self, ptr: u64) -> Result<()>;
}

/// The CUDA driver: one stream, one loaded op.
struct Cuda<'a> {
    stream: &'a CudaStream,
    op: &'a LoadedOp,
}

impl Device for Cuda<'_> {
    fn kernel(&self, name: String) -> Result<Kernel> {
        let f = self.op.symbol(&name, self.stream.device)?;
        Ok(Kernel { name, f })
    }

    fn bind(&self) -> Result<()> {
        let s = self.stream;
        check(
            || format!("making CUDA device {}'s context current", s.device),
            // SAFETY: the stream's context is a retained primary context.
            || unsafe { sys::cuCtxSetCurrent(s.ctx.0) },
        )
    }

    unsafe fn launch(&self, k: &Kernel, grid: usize, params: &mut [*mut c_void]) -> Result<()> {
        let s = self.stream;
        check(
            || {
                format!(
                    "launching {} ({grid} blocks) on CUDA device {}",
                    k.name, s.device
                )
            },
            // SAFETY: k.f is a CUfunction of the op, params are its parameters (the caller's
            // contract); the grid is 1..=MAX_BLOCKS blocks of THREADS threads.
            || unsafe {
                sys::cuLaunchKernel(
                    k.f as sys::CUfunction,
                    grid as u32,
                    1,
                    1,
                    THREADS,
                    1,
                    1,
                    0,
                    s.handle.0,
                    params.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            },
        )
    }

    fn alloc(&self, bytes: usize) -> Result<u64> {
        let s = self.stream;
        let mut p: sys::CUdeviceptr = 0;
        check(
            || {
                format!(
                    "allocating {bytes} bytes of scratch memory on CUDA device {}",
                    s.device
                )
            },
            // SAFETY: p is a valid out-pointer; the stream is live and its context current.
            || unsafe { sys::cuMemAllocAsync(&mut p, bytes, s.handle.0) },
        )?;
        Ok(p)
    }

    fn free(&self, ptr: u64) -> Result<()> {
        let s = self.stream;
        check(
            || format!("freeing scratch memory on CUDA device {}", s.device),
            // SAFETY: ptr came from cuMemAllocAsync on this stream and is freed once, in
            // stream order after the launches that use it.
            || unsafe { sys::cuMemFreeAsync(ptr, s.handle.0) },
        )
    }
}

fn as_param<T>(v: &mut T) -> *mut c_void {
    (v as *mut T).cast()
}

fn pair_kernels(dev: &impl Device, prefix: &str, work: &Work) -> Result<Vec<Kernel>> {
    work.groups
        .iter()
        .map(|g| {
            dev.kernel(format!(
                "{prefix}_{}_{}",
                dtype_tag(g.params),
                dtype_tag(g.grads)
            ))
        })
        .collect()
}

/// An Adam-like step (Adam, Lion): one kernel per dtype pair, taking (dsrs_mt_args, hyper).
struct SimpleOp {
    /// The step's name in errors.
    what: &'static str,
    /// The op; its kernels are `dsrs_<op>_<params>_<grads>`.
    op: &'static str,
    /// Whether the kernels use `exp_avg_sq`.
    second_moment: bool,
}

const ADAM: SimpleOp = SimpleOp {
    what: "adam",
    op: "fused_adam",
    second_moment: true,
};

const LION: SimpleOp = SimpleOp {
    what: "lion",
    op: "fused_lion",
    second_moment: false,
};

impl SimpleOp {
    /// Checks the tensors and plans the launches.
    fn work(&self, tensors: &[CudaTensors], limits: &PlanLimits) -> Result<Work> {
        Work::new(self.what, tensors, self.second_moment, limits)
    }

    /// Enqueues the launches: (mt_args, hyper) per launch.
    fn run<H>(
        &self,
        dev: &impl Device,
        tensors: &[CudaTensors],
        work: &Work,
        hyper: &mut H,
    ) -> Result<()> {
        let kernels = pair_kernels(dev, &format!("dsrs_{}", self.op), work)?;
        if !work.groups.is_empty() {
            dev.bind()?;
        }
        for (k, launches) in kernels.iter().zip(&work.plans) {
            for l in launches {
                let mut args = mt_args(tensors, l, work.chunk_size, None);
                let mut params = [as_param(&mut args), as_param(hyper)];
                // SAFETY: (dsrs_mt_args, hyper) is the kernel's signature (H is AdamHyper
                // for the Adam kernels and LionHyper for the Lion kernels); the addresses
                // were validated and are the caller's contract.
                unsafe { dev.launch(k, l.blocks.len(), &mut params)? };
            }
        }
        Ok(())
    }

    /// The step once its hyper-parameters are validated: checks the tensors, loads the op
    /// with `build` and enqueues the launches on `stream`.
    ///
    /// # Safety
    /// As for [`adam_step`]: every address in `tensors` is device memory the kernels may
    /// read and write until the enqueued work completes.
    unsafe fn step<H>(
        &self,
        stream: &CudaStream,
        tensors: &[CudaTensors],
        build: &BuildOptions,
        mut hyper: H,
    ) -> Result<Ran> {
        let work = self.work(tensors, &LIMITS)?;
        let op = load_op(self.op, build)?;
        self.run(&Cuda { stream, op: &op }, tensors, &work, &mut hyper)?;
        Ok(Ran::Kernel(op.target().to_string()))
    }
}

/// One Adam/AdamW step (DeepSpeed's `FusedAdam`) over `tensors`, enqueued on `stream`.
///
/// Every tensor needs `exp_avg` and `exp_avg_sq`. The hyper-parameters and tensors are
/// validated before anything is loaded or enqueued; the `fused_adam` op is loaded (built on
/// first use) with `build`. Returns the CUDA target the kernels were built for.
///
/// # Safety
/// Every address in `tensors` must be device memory of the stream's device (or memory the
/// device may access) holding `len` elements of its dtype, valid until the enqueued work
/// completes; the kernels read and write it.
pub unsafe fn adam_step(
    stream: &CudaStream,
    p: &AdamParams,
    tensors: &[CudaTensors],
    build: &BuildOptions,
) -> Result<Ran> {
    p.validate()?;
    // SAFETY: the caller's contract, passed on.
    unsafe { ADAM.step(stream, tensors, build, AdamHyper::new(p)) }
}

/// One Lion step (DeepSpeed's `cpu_lion` semantics) over `tensors`, enqueued on `stream`.
///
/// Every tensor needs `exp_avg` (the momentum); `exp_avg_sq` is ignored. Validation, op
/// loading and the result are as for [`adam_step`].
///
/// # Safety
/// Every address in `tensors` must be device memory of the stream's device (or memory the
/// device may access) holding `len` elements of its dtype, valid until the enqueued work
/// completes; the kernels read and write it.
pub unsafe fn lion_step(
    stream: &CudaStream,
    p: &LionParams,
    tensors: &[CudaTensors],
    build: &BuildOptions,
) -> Result<Ran> {
    p.validate()?;
    // SAFETY: the caller's contract, passed on.
    unsafe { LION.step(stream, tensors, build, LionHyper::new(p)) }
}

/// One LAMB step (DeepSpeed's `FusedLamb`, see [`super::lamb`]) over `tensors`, with one
/// trust ratio per tensor, enqueued on `stream`.
///
/// Every tensor needs `exp_avg` and `exp_avg_sq`. Validation, op loading and the result are
/// as for [`adam_step`]. Same as [`lamb_step_with_ratios`] with no ratio output.
///
/// # Safety
/// Every address in `tensors` must be device memory of the stream's device (or memory the
/// device may access) holding `len` elements of its dtype, valid until the enqueued work
/// completes; the kernels read and write it.
pub unsafe fn lamb_step(
    stream: &CudaStream,
    p: &LambParams,
    tensors: &[CudaTensors],
    build: &BuildOptions,
) -> Result<Ran> {
    // SAFETY: the caller's contract, passed on (no ratio output).
    unsafe { lamb_step_with_ratios(stream, p, tensors, 0, build) }
}

/// The partial-sum layout of a LAMB step: the first partial slot of every tensor, the
/// number of slots (chunks) of each, and their total.
fn lamb_partials(tensors: &[CudaTensors], chunk_size: usize) -> Result<(Vec<u64>, Vec<u64>, u64)> {
    let mut base = Vec::with_capacity(tensors.len());
    let mut count = Vec::with_capacity(tensors.len());
    let mut total = 0u64;
    for t in tensors {
        let chunks = t.len.div_ceil(chunk_size) as u64;
        base.push(total);
        count.push(chunks);
        total += chunks;
    }
    if total > u64::from(u32::MAX) {
        return Err(Error::invalid(format!(
            "lamb: the step has {total} chunks of {chunk_size} elements; at most 2^32 - 1 are supported"
        )));
    }
    Ok((base, count, total))
}

/// [`lamb_step`], also writing the trust ratio of every tensor (`tensors.len()` floats; 1
/// for an empty tensor) to device address `ratios` (0: not wanted), as DeepSpeed's
/// `get_lamb_coeffs`. The ratios are written in stream order, before the parameters are
/// updated.
///
/// # Safety
/// Every address in `tensors` must be device memory of the stream's device (or memory the
/// device may access) holding `len` elements of its dtype, valid until the enqueued work
/// completes; the kernels read and write it.
pub unsafe fn lamb_step_with_ratios(
    stream: &CudaStream,
    p: &LambParams,
    tensors: &[CudaTensors],
    ratios: u64,
    build: &BuildOptions,
) -> Result<Ran> {
    let work = lamb_work(p, tensors, ratios, &LIMITS)?;
    let op = load_op("fused_lamb", build)?;
    run_lamb(&Cuda { stream, op: &op }, p, tensors, ratios, &work)?;
    Ok(Ran::Kernel(op.target().to_string()))
}

/// A validated LAMB step: the plan and the partial-sum layout.
struct LambWork {
    work: Work,
    base: Vec<u64>,
    count: Vec<u64>,
    total: u64,
}

fn lamb_work(
    p: &LambParams,
    tensors: &[CudaTensors],
    ratios: u64,
    limits: &PlanLimits,
) -> Result<LambWork> {
    p.validate()?;
    if ratios % 4 != 0 {
        return Err(Error::invalid(format!(
            "lamb: ratios = {ratios:#x} is not aligned to 4 bytes (an array of floats)"
        )));
    }
    let work = Work::new("lamb", tensors, true, limits)?;
    let (base, count, total) = lamb_partials(tensors, limits.chunk_size)?;
    Ok(LambWork {
        work,
        base,
        count,
        total,
    })
}

fn run_lamb(
    dev: &impl Device,
    p: &LambParams,
    tensors: &[CudaTensors],
    ratios: u64,
    lw: &LambWork,
) -> Result<()> {
    let LambWork {
        work,
        base,
        count,
        total,
    } = lw;
    let moments = pair_kernels(dev, "dsrs_fused_lamb_moments", work)?;
    let applies = work
        .groups
        .iter()
        .map(|g| dev.kernel(format!("dsrs_fused_lamb_apply_{}", dtype_tag(g.params))))
        .collect::<Result<Vec<_>>>()?;
    let ratio_kernel = dev.kernel("dsrs_fused_lamb_ratios".into())?;
    if tensors.is_empty() || (work.groups.is_empty() && ratios == 0) {
        return Ok(());
    }

    // Scratch: 2 doubles per chunk, then (unless the caller's) one float per tensor.
    let n = tensors.len() as u64;
    let partial_bytes = total * 16;
    let scratch_bytes = partial_bytes + if ratios == 0 { n * 4 } else { 0 };
    dev.bind()?;
    let scratch = if scratch_bytes > 0 {
        dev.alloc(scratch_bytes as usize)?
    } else {
        0
    };
    let mut partials: u64 = if partial_bytes > 0 { scratch } else { 0 };
    let mut ratio_ptr: u64 = if ratios == 0 {
        scratch + partial_bytes
    } else {
        ratios
    };
    let mut hyper = LambHyper::new(p);
    let mut run = || -> Result<()> {
        // 1. Moments and per-chunk sums of squares.
        for (k, launches) in moments.iter().zip(&work.plans) {
            for l in launches {
                let mut args = mt_args(tensors, l, work.chunk_size, Some(base));
                let mut params = [
                    as_param(&mut args),
                    as_param(&mut hyper),
                    as_param(&mut partials),
                ];
                // SAFETY: (dsrs_mt_args, dsrs_lamb_hyper, double*) is the kernel's
                // signature; every partial slot it writes is inside the scratch.
                unsafe { dev.launch(k, l.blocks.len(), &mut params)? };
            }
        }
        // 2. One trust ratio per tensor (empty tensors included: 1).
        for first in (0..tensors.len()).step_by(MAX_RATIOS) {
            let num = (tensors.len() - first).min(MAX_RATIOS);
            let mut args = LambRatioArgs {
                partials,
                ratios: ratio_ptr,
                begin: [0; MAX_RATIOS],
                count: [0; MAX_RATIOS],
                first_tensor: first as u32,
                num_blocks: num as u32,
                max_coeff: p.max_coeff,
                min_coeff: p.min_coeff,
            };
            for k in 0..num {
                args.begin[k] = base[first + k] as u32;
                args.count[k] = count[first + k] as u32;
            }
            let mut params = [as_param(&mut args)];
            // SAFETY: (dsrs_lamb_ratio_args) is the kernel's signature; it reads the
            // partials written above and writes tensors.len() floats at ratio_ptr.
            unsafe { dev.launch(&ratio_kernel, num, &mut params)? };
        }
        // 3. The parameters.
        for (k, launches) in applies.iter().zip(&work.plans) {
            for l in launches {
                let mut args = mt_args(tensors, l, work.chunk_size, Some(base));
                let mut params = [
                    as_param(&mut args),
                    as_param(&mut hyper),
                    as_param(&mut ratio_ptr),
                ];
                // SAFETY: (dsrs_mt_args, dsrs_lamb_hyper, const float*) is the kernel's
                // signature; it reads the ratios written above.
                unsafe { dev.launch(k, l.blocks.len(), &mut params)? };
            }
        }
        Ok(())
    };
    let result = run();
    if scratch != 0 {
        let freed = dev.free(scratch);
        result?;
        freed
    } else {
        result
    }
}

// The tests' host values (HostVec, Rng, PAIRS, fp32 bytes), shared with
// tests/cuda_optim.rs; the file takes DType, GradsRef and ParamsMut from this module.
#[cfg(test)]
#[path = "../../../tests/support/optim_host.rs"]
mod optim_host;
#[cfg(test)]
use super::{GradsRef, ParamsMut};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::ops::builders;

    /// Every element of every tensor is covered exactly once, in launches within the limits.
    fn check_coverage(lens: &[usize], limits: &PlanLimits, launches: &[Launch]) {
        let mut ranges: Vec<Vec<(usize, usize)>> = vec![Vec::new(); lens.len()];
        for (li, l) in launches.iter().enumerate() {
            assert!(!l.blocks.is_empty(), "launch {li} has no blocks");
            assert!(l.tensors.len() <= limits.max_tensors, "launch {li}");
            assert!(l.blocks.len() <= limits.max_blocks, "launch {li}");
            let mut used = vec![false; l.tensors.len()];
            for &(slot, chunk) in &l.blocks {
                let t = l.tensors[slot as usize];
                used[slot as usize] = true;
                let begin = chunk as usize * limits.chunk_size;
                assert!(
                    begin < lens[t],
                    "launch {li}: chunk {chunk} of tensor {t} is empty"
                );
                ranges[t].push((begin, (begin + limits.chunk_size).min(lens[t])));
            }
            assert!(
                used.iter().all(|&u| u),
                "launch {li} has a tensor with no block"
            );
        }
        for (t, r) in ranges.iter_mut().enumerate() {
            r.sort_unstable();
            let mut next = 0;
            for &(b, e) in r.iter() {
                assert_eq!(b, next, "tensor {t}: gap or overlap at {b}");
                next = e;
            }
            assert_eq!(next, lens[t], "tensor {t} is not covered to its end");
        }
    }

    #[test]
    fn many_tiny_tensors_fill_launches_by_tensor_count() {
        let lens: Vec<usize> = (0..1000).map(|i| 1 + i % 7).collect();
        let launches = plan(&lens, &LIMITS).unwrap();
        check_coverage(&lens, &LIMITS, &launches);
        assert_eq!(launches.len(), 1000usize.div_ceil(MAX_TENSORS));
        assert!(
            launches[..launches.len() - 1]
                .iter()
                .all(|l| l.tensors.len() == MAX_TENSORS && l.blocks.len() == MAX_TENSORS)
        );
        // Order is kept.
        let order: Vec<usize> = launches.iter().flat_map(|l| l.tensors.clone()).collect();
        assert_eq!(order, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn a_huge_tensor_spans_launches() {
        let huge = (1usize << 31) + 12345;
        let lens = [3, huge, 5];
        let launches = plan(&lens, &LIMITS).unwrap();
        check_coverage(&lens, &LIMITS, &launches);
        let chunks = huge.div_ceil(CHUNK_SIZE);
        let blocks: usize = launches.iter().map(|l| l.blocks.len()).sum();
        assert_eq!(blocks, chunks + 2);
        // Full launches in the middle, the huge tensor alone in them, in slot 0.
        for l in &launches[1..launches.len() - 1] {
            assert_eq!(l.tensors, vec![1]);
            assert_eq!(l.blocks.len(), MAX_BLOCKS);
        }
        assert_eq!(launches[0].tensors, vec![0, 1]);
        let last = launches.last().unwrap();
        assert_eq!(last.tensors.last(), Some(&2));
        // The last chunk number is the highest.
        let max_chunk = launches
            .iter()
            .flat_map(|l| l.blocks.iter().filter(|b| l.tensors[b.0 as usize] == 1))
            .map(|b| b.1)
            .max()
            .unwrap();
        assert_eq!(max_chunk as usize, chunks - 1);
    }

    #[test]
    fn empty_tensors_are_skipped_and_odd_limits_hold() {
        let lens = [0, 0, 7, 0, 1, 200_000, 0, 65536, 65537, 0];
        let launches = plan(&lens, &LIMITS).unwrap();
        check_coverage(&lens, &LIMITS, &launches);
        for l in &launches {
            assert!(l.tensors.iter().all(|&t| lens[t] > 0));
        }
        assert!(plan(&[0, 0], &LIMITS).unwrap().is_empty());
        assert!(plan(&[], &LIMITS).unwrap().is_empty());
        // Small limits force every kind of split.
        for (chunk, max_t, max_b) in [(4, 1, 1), (4, 2, 3), (8, 3, 2), (12, 256, 5)] {
            let limits = PlanLimits {
                chunk_size: chunk,
                max_tensors: max_t,
                max_blocks: max_b,
            };
            let lens: Vec<usize> = (0..60).map(|i| (i * 7919) % 53).collect();
            let launches = plan(&lens, &limits).unwrap();
            check_coverage(&lens, &limits, &launches);
        }
        for bad in [
            PlanLimits {
                chunk_size: 6,
                ..LIMITS
            },
            PlanLimits {
                chunk_size: 0,
                ..LIMITS
            },
            PlanLimits {
                max_tensors: 0,
                ..LIMITS
            },
            PlanLimits {
                max_tensors: 257,
                ..LIMITS
            },
            PlanLimits {
                max_blocks: 0,
                ..LIMITS
            },
        ] {
            assert!(plan(&[1], &bad).is_err(), "{bad:?}");
        }
        let tiny_chunks = PlanLimits {
            chunk_size: 4,
            ..LIMITS
        };
        #[cfg(target_pointer_width = "64")]
        assert!(plan(&[(1usize << 34) + 4], &tiny_chunks).is_err());
    }

    fn tensor(base: u64, dtype: DType, grads: DType, len: usize) -> CudaTensors {
        CudaTensors {
            params: base,
            params_dtype: dtype,
            grads: base + 0x1000_0000,
            grads_dtype: grads,
            exp_avg: base + 0x2000_0000,
            exp_avg_sq: base + 0x3000_0000,
            len,
        }
    }

    #[test]
    fn validation_names_the_tensor_and_the_field() {
        let ok = tensor(0x10_0000_0000, DType::F32, DType::F32, 10);
        let cases: Vec<(CudaTensors, bool, &str)> = vec![
            (
                CudaTensors { exp_avg: 0, ..ok },
                true,
                "tensors[1].exp_avg is 0",
            ),
            (
                CudaTensors {
                    exp_avg_sq: 0,
                    ..ok
                },
                true,
                "tensors[1].exp_avg_sq is 0",
            ),
            (
                CudaTensors { params: 0, ..ok },
                false,
                "tensors[1].params is 0",
            ),
            (
                CudaTensors {
                    grads: ok.grads + 2,
                    ..ok
                },
                true,
                "tensors[1].grads = 0x",
            ),
            (
                CudaTensors {
                    params: u64::MAX - 3,
                    ..ok
                },
                true,
                "tensors[1].params = 0xfffffffffffffffc with 10 elements",
            ),
            (
                CudaTensors {
                    params_dtype: DType::F64,
                    ..ok
                },
                true,
                "tensors[1]: parameters of dtype",
            ),
            (
                CudaTensors {
                    params_dtype: DType::BF16,
                    grads_dtype: DType::F16,
                    ..ok
                },
                true,
                "tensors[1]: float16 gradients with bfloat16 parameters",
            ),
        ];
        let first = tensor(0x20_0000_0000, DType::BF16, DType::F32, 5);
        for (bad, second_moment, msg) in cases {
            let e = prepare("adam", &[first, bad], second_moment).unwrap_err();
            assert!(e.to_string().contains(msg), "{msg}: {e}");
            assert!(e.to_string().starts_with("adam: "), "{e}");
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::InvalidArgument | ErrorKind::Unsupported
                ),
                "{e}"
            );
        }
        // Lion does not need exp_avg_sq.
        prepare(
            "lion",
            &[
                first,
                CudaTensors {
                    exp_avg_sq: 0,
                    ..ok
                },
            ],
            false,
        )
        .unwrap();
        // Empty tensors need no addresses, but still valid dtypes.
        let empty = CudaTensors {
            params: 0,
            grads: 0,
            exp_avg: 0,
            exp_avg_sq: 0,
            len: 0,
            ..ok
        };
        assert!(prepare("adam", &[empty], true).unwrap().is_empty());
        // The same parameters twice.
        let e = prepare(
            "adam",
            &[
                ok,
                CudaTensors {
                    exp_avg: 8,
                    exp_avg_sq: 16,
                    ..ok
                },
            ],
            true,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("tensors[1].params is the same address"),
            "{e}"
        );
        let dup_m = CudaTensors {
            params: 4,
            exp_avg_sq: 64,
            ..ok
        };
        let e = prepare("adam", &[ok, dup_m], true).unwrap_err();
        assert!(
            e.to_string()
                .contains("tensors[1].exp_avg is the same address"),
            "{e}"
        );
    }

    #[test]
    fn tensors_are_grouped_by_dtypes_in_order() {
        let t = |k: u64, p, g| tensor(k << 32, p, g, 3);
        let list = [
            t(1, DType::F32, DType::F32),
            t(2, DType::BF16, DType::BF16),
            t(3, DType::F32, DType::F32),
            t(4, DType::F32, DType::BF16),
            t(5, DType::BF16, DType::BF16),
        ];
        let groups = prepare("adam", &list, true).unwrap();
        let summary: Vec<(DType, DType, Vec<usize>)> = groups
            .iter()
            .map(|g| (g.params, g.grads, g.members.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (DType::F32, DType::F32, vec![0, 2]),
                (DType::BF16, DType::BF16, vec![1, 4]),
                (DType::F32, DType::BF16, vec![3]),
            ]
        );
        // A launch's arguments use step-wide indices.
        let plans = plan_group(&list, &groups[1], &LIMITS).unwrap();
        assert_eq!(plans[0].tensors, vec![1, 4]);
        let (base, count, total) = lamb_partials(&list, CHUNK_SIZE).unwrap();
        assert_eq!((base[4], count[4], total), (4, 1, 5));
        let a = mt_args(&list, &plans[0], CHUNK_SIZE, Some(&base));
        assert_eq!(a.params[..2], [list[1].params, list[4].params]);
        assert_eq!(a.exp_avg_sq[1], list[4].exp_avg_sq);
        assert_eq!(a.len[..3], [3, 3, 0]);
        assert_eq!(a.partial_base[..2], [1, 4]);
        assert_eq!(a.tensor_index[..2], [1, 4]);
        assert_eq!((a.num_blocks, a.chunk_size), (2, CHUNK_SIZE as u32));
        assert_eq!(a.block_tensor[..2], [0, 1]);
    }

    #[test]
    fn host_constants_are_the_f32_operations_of_the_reference() {
        let p = AdamParams {
            lr: 3e-4,
            weight_decay: 0.01,
            adamw_mode: true,
            step: 5,
            grad_scale: 3.0,
            ..AdamParams::default()
        };
        let h = AdamHyper::new(&p);
        let (bc1, bc2) = p.bias_corrections();
        assert_eq!(h.one_minus_beta1, 1.0 - p.beta1);
        assert_eq!(h.step_size, -p.lr / bc1);
        assert_eq!(h.bc2, bc2);
        assert_eq!(h.decoupled, -p.lr * p.weight_decay);
        assert_eq!(h.inv_grad_scale, (1.0f64 / 3.0) as f32);
        assert_eq!(h.mode, 2);
        assert_eq!(
            AdamHyper::new(&AdamParams {
                adamw_mode: false,
                ..p
            })
            .mode,
            1
        );
        assert_eq!(
            AdamHyper::new(&AdamParams {
                weight_decay: 0.0,
                ..p
            })
            .mode,
            0
        );
        let l = LionHyper::new(&LionParams {
            weight_decay: 0.1,
            ..LionParams::default()
        });
        assert_eq!(l.decay, 1.0 - 1e-4f32 * 0.1);
        assert_eq!(l.use_decay, 1);
    }

    /// The `#define`s and struct sizes of the kernel sources agree with this file, and the
    /// three sources include the common multi-tensor header, which their specs carry.
    #[test]
    fn kernel_sources_agree_with_the_host_layouts() {
        let specs = [
            &builders::fused_adam::SPEC,
            &builders::fused_lamb::SPEC,
            &builders::fused_lion::SPEC,
        ];
        let common = builders::fused_adam::MT_APPLY_HEADERS;
        for spec in specs {
            assert!(
                spec.sources[0]
                    .text
                    .contains("\n#include \"dsrs_mt_apply.cuh\"\n"),
                "{} does not include dsrs_mt_apply.cuh",
                spec.name
            );
            assert_eq!(&*spec.headers, common, "{}'s headers", spec.name);
        }
        let srcs = specs.map(|s| s.sources[0].text.to_string());
        let c = &common[0].text;
        for (name, value) in [
            ("DSRS_MT_THREADS", THREADS as usize),
            ("DSRS_MT_MAX_TENSORS", MAX_TENSORS),
            ("DSRS_MT_MAX_BLOCKS", MAX_BLOCKS),
        ] {
            assert!(c.contains(&format!("#define {name} {value}\n")), "{name}");
        }
        assert!(c.contains(&format!(
            "sizeof(dsrs_mt_args) == {}",
            std::mem::size_of::<MtArgs>()
        )));
        assert!(srcs[0].contains(&format!(
            "sizeof(dsrs_adam_hyper) == {}",
            std::mem::size_of::<AdamHyper>()
        )));
        assert!(srcs[2].contains(&format!(
            "sizeof(dsrs_lion_hyper) == {}",
            std::mem::size_of::<LionHyper>()
        )));
        assert!(srcs[1].contains(&format!(
            "sizeof(dsrs_lamb_hyper) == {}",
            std::mem::size_of::<LambHyper>()
        )));
        assert!(srcs[1].contains(&format!(
            "sizeof(dsrs_lamb_ratio_args) == {}",
            std::mem::size_of::<LambRatioArgs>()
        )));
        assert!(srcs[1].contains(&format!("#define DSRS_LAMB_MAX_RATIOS {MAX_RATIOS}\n")));
        // Every kernel name the host builds is declared by its op.
        let declared = |spec: &crate::ops::OpSpec, name: &str| {
            assert!(
                spec.symbols.iter().any(|s| s == name),
                "{} does not declare {name}",
                spec.name
            )
        };
        let pairs = super::optim_host::PAIRS;
        for (p, g) in pairs {
            check_dtypes("pair", p, g, None).unwrap();
            let (p, g) = (dtype_tag(p), dtype_tag(g));
            declared(
                &builders::fused_adam::SPEC,
                &format!("dsrs_fused_adam_{p}_{g}"),
            );
            declared(
                &builders::fused_lion::SPEC,
                &format!("dsrs_fused_lion_{p}_{g}"),
            );
            declared(
                &builders::fused_lamb::SPEC,
                &format!("dsrs_fused_lamb_moments_{p}_{g}"),
            );
            declared(
                &builders::fused_lamb::SPEC,
                &format!("dsrs_fused_lamb_apply_{p}"),
            );
        }
        declared(&builders::fused_lamb::SPEC, "dsrs_fused_lamb_ratios");
        // And these are all the pairs check_dtypes accepts.
        let floats = [DType::F32, DType::F16, DType::BF16];
        let accepted = floats
            .iter()
            .flat_map(|&p| floats.iter().map(move |&g| (p, g)))
            .filter(|&(p, g)| check_dtypes("pair", p, g, None).is_ok())
            .count();
        assert_eq!(accepted, pairs.len());
    }
}

/// The kernels themselves, compiled for the host with the system C++ compiler
/// (`DSRS_HOST_EMULATION`: a shim maps the CUDA built-ins to host code and runs every
/// block's 512 threads, as coroutines where a kernel synchronizes), driven by the same
/// host code as the GPU path (validation, planner, parameter blocks) and compared with the
/// pure-Rust references. This checks the kernels' indexing, vector and tail paths,
/// multi-tensor tables and LAMB's reductions without a GPU; the GPU tests
/// (`tests/cuda_optim.rs`) check the rest.
#[cfg(all(test, target_os = "linux"))]
mod emulation {
    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::{Mutex as StdMutex, OnceLock};

    use half::bf16;

    use super::optim_host::{HostVec, PAIRS, Rng, f32_bytes, f32_from_bytes as f32s};
    use super::*;
    use crate::ops::OpSpec;
    use crate::ops::builders;
    use crate::ops::optim::lamb::lamb_step_reference;
    use crate::ops::optim::reference;

    const SHIM: &str = r#"
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>
#include <ucontext.h>
#define DSRS_HOST_EMULATION 1
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static
struct dsrs_emu_dim3 { unsigned x, y, z; };
static dsrs_emu_dim3 threadIdx, blockIdx;
static dsrs_emu_dim3 blockDim = {512, 1, 1}, gridDim = {1, 1, 1};
// The threads of a block that synchronizes run as coroutines: __syncthreads yields to the
// scheduler, which resumes every thread of the block in turn (a barrier).
static ucontext_t dsrs_emu_main;
static ucontext_t dsrs_emu_ctx[512];
static bool dsrs_emu_done[512];
static bool dsrs_emu_threaded = false;
static inline void __syncthreads() {
    if (!dsrs_emu_threaded) std::abort();  // a kernel run serially must not synchronize
    swapcontext(&dsrs_emu_ctx[threadIdx.x], &dsrs_emu_main);
}
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float a) { return std::sqrt(a); }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __dsqrt_rn(double a) { return std::sqrt(a); }
static inline float __double2float_rn(double a) { return (float)a; }
static inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
#define DSRS_F16_TO_F32(h, f) do { _Float16 t_; std::memcpy(&t_, &(h), 2); (f) = (float)t_; } while (0)
#define DSRS_F32_TO_F16(f, h) do { _Float16 t_ = (_Float16)(f); std::memcpy(&(h), &t_, 2); } while (0)
"#;

    const HARNESS: &str = r#"
static const std::function<void()>* dsrs_emu_body;
static void dsrs_emu_entry() {
    (*dsrs_emu_body)();
    dsrs_emu_done[threadIdx.x] = true;
}  // returns to uc_link: the scheduler
static void dsrs_emu_run(unsigned grid, bool threaded, const std::function<void()>& body) {
    static std::vector<char> stacks(512u * 65536u);
    gridDim.x = grid;
    dsrs_emu_body = &body;
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx.x = b;
        if (!threaded) {
            for (unsigned t = 0; t < blockDim.x; ++t) {
                threadIdx.x = t;
                body();
            }
            continue;
        }
        dsrs_emu_threaded = true;
        for (unsigned t = 0; t < blockDim.x; ++t) {
            getcontext(&dsrs_emu_ctx[t]);
            dsrs_emu_ctx[t].uc_stack.ss_sp = &stacks[t * 65536u];
            dsrs_emu_ctx[t].uc_stack.ss_size = 65536u;
            dsrs_emu_ctx[t].uc_link = &dsrs_emu_main;
            makecontext(&dsrs_emu_ctx[t], dsrs_emu_entry, 0);
            dsrs_emu_done[t] = false;
        }
        for (bool running = true; running;) {
            running = false;
            for (unsigned t = 0; t < blockDim.x; ++t) {
                if (dsrs_emu_done[t]) continue;
                running = true;
                threadIdx.x = t;
                swapcontext(&dsrs_emu_main, &dsrs_emu_ctx[t]);
            }
        }
        dsrs_emu_threaded = false;
    }
}
#define DSRS_EMU1(NAME, T0, THREADED)                                         \
    extern "C" void dsrs_emu_##NAME(unsigned grid, void** p) {                \
        T0 a0; std::memcpy(&a0, p[0], sizeof a0);                             \
        dsrs_emu_run(grid, THREADED, [&] { NAME(a0); });                      \
    }
#define DSRS_EMU2(NAME, T0, T1, THREADED)                                     \
    extern "C" void dsrs_emu_##NAME(unsigned grid, void** p) {                \
        T0 a0; std::memcpy(&a0, p[0], sizeof a0);                             \
        T1 a1; std::memcpy(&a1, p[1], sizeof a1);                             \
        dsrs_emu_run(grid, THREADED, [&] { NAME(a0, a1); });                  \
    }
#define DSRS_EMU3(NAME, T0, T1, T2, THREADED)                                 \
    extern "C" void dsrs_emu_##NAME(unsigned grid, void** p) {                \
        T0 a0; std::memcpy(&a0, p[0], sizeof a0);                             \
        T1 a1; std::memcpy(&a1, p[1], sizeof a1);                             \
        T2 a2; std::memcpy(&a2, p[2], sizeof a2);                             \
        dsrs_emu_run(grid, THREADED, [&] { NAME(a0, a1, a2); });              \
    }
"#;

    /// The emulation wrapper of one kernel, from its name.
    fn wrapper(name: &str) -> String {
        if name.starts_with("dsrs_fused_adam_") {
            format!("DSRS_EMU2({name}, dsrs_mt_args, dsrs_adam_hyper, false)\n")
        } else if name.starts_with("dsrs_fused_lion_") {
            format!("DSRS_EMU2({name}, dsrs_mt_args, dsrs_lion_hyper, false)\n")
        } else if name.starts_with("dsrs_fused_lamb_moments_") {
            format!("DSRS_EMU3({name}, dsrs_mt_args, dsrs_lamb_hyper, double*, true)\n")
        } else if name.starts_with("dsrs_fused_lamb_apply_") {
            format!("DSRS_EMU3({name}, dsrs_mt_args, dsrs_lamb_hyper, const float*, false)\n")
        } else if name == "dsrs_fused_lamb_ratios" {
            format!("DSRS_EMU1({name}, dsrs_lamb_ratio_args, true)\n")
        } else {
            panic!("no emulation signature for {name}")
        }
    }

    struct Emu {
        lib: libloading::Library,
        /// One launch at a time (the shim's block state is global).
        lock: StdMutex<()>,
        scratch: StdMutex<Vec<(u64, Vec<u64>)>>,
    }

    impl Device for Emu {
        fn kernel(&self, name: String) -> Result<Kernel> {
            let sym = format!("dsrs_emu_{name}");
            // SAFETY: the symbol is a function of the harness; only its address is read.
            let f = unsafe { self.lib.get::<*mut c_void>(sym.as_bytes()) }
                .map(|s| *s)
                .map_err(|e| Error::Internal(format!("{sym}: {e}")))?;
            Ok(Kernel { name, f })
        }
        fn bind(&self) -> Result<()> {
            Ok(())
        }
        unsafe fn launch(&self, k: &Kernel, grid: usize, params: &mut [*mut c_void]) -> Result<()> {
            assert!(
                (1..=MAX_BLOCKS.max(MAX_RATIOS)).contains(&grid),
                "{}: grid {grid}",
                k.name
            );
            let _l = self.lock.lock().unwrap();
            // SAFETY: every dsrs_emu_* wrapper has this signature and copies the kernel's
            // parameters out of `params` (the cuLaunchKernel convention).
            let f: unsafe extern "C" fn(u32, *mut *mut c_void) =
                unsafe { std::mem::transmute(k.f) };
            unsafe { f(grid as u32, params.as_mut_ptr()) };
            Ok(())
        }
        fn alloc(&self, bytes: usize) -> Result<u64> {
            let v = vec![0x5a5a_5a5a_5a5a_5a5au64; bytes.div_ceil(8)];
            let p = v.as_ptr() as u64;
            self.scratch.lock().unwrap().push((p, v));
            Ok(p)
        }
        fn free(&self, ptr: u64) -> Result<()> {
            let mut s = self.scratch.lock().unwrap();
            let i = s
                .iter()
                .position(|(p, _)| *p == ptr)
                .expect("freeing unknown scratch");
            s.remove(i);
            Ok(())
        }
    }

    /// The op's kernels compiled for the host, once per process; `None` (printed) without a
    /// C++ compiler.
    fn emu(spec: &OpSpec) -> Option<&'static Emu> {
        static EMUS: OnceLock<StdMutex<Vec<(String, &'static Emu)>>> = OnceLock::new();
        let emus = EMUS.get_or_init(Default::default);
        let mut emus = emus.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, e)) = emus.iter().find(|(n, _)| n == spec.name.as_ref()) {
            return Some(e);
        }
        let dir: PathBuf =
            std::env::temp_dir().join(format!("dsrs-emu-{}-{}", spec.name, std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The op's headers under dir/include, as NVRTC sees them.
        crate::ops::jit::write_sources(spec, &dir).unwrap();
        let mut text = String::from(SHIM);
        text.push_str(&spec.sources[0].text);
        text.push_str(HARNESS);
        for s in spec.symbols.iter() {
            text.push_str(&wrapper(s));
        }
        let src = dir.join("emu.cpp");
        std::fs::write(&src, text).unwrap();
        let lib = dir.join("libemu.so");
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let out = Command::new(&cxx)
            .args([
                "-std=c++17",
                "-O2",
                "-ffp-contract=off",
                "-fno-strict-aliasing",
                "-fPIC",
                "-shared",
                "-pthread",
            ])
            .arg(format!("-I{}", dir.join("include").display()))
            .arg("-o")
            .arg(&lib)
            .arg(&src)
            .output();
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                eprintln!("SKIPPED: no C++ compiler ({cxx}: {e})");
                return None;
            }
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && stderr.contains("_Float16") {
            eprintln!("SKIPPED: {cxx} has no _Float16 (GCC 12 or Clang 15 has it):\n{stderr}");
            return None;
        }
        assert!(
            out.status.success(),
            "compiling {} for the host failed:\n{}",
            spec.name,
            stderr
        );
        // SAFETY: our own library, with no initialisers beyond the C++ runtime's.
        let lib = unsafe { libloading::Library::new(&lib) }.unwrap();
        let e: &'static Emu = Box::leak(Box::new(Emu {
            lib,
            lock: StdMutex::new(()),
            scratch: StdMutex::new(Vec::new()),
        }));
        let _ = std::fs::remove_dir_all(&dir);
        emus.push((spec.name.to_string(), e));
        Some(e)
    }

    // ---- host "device memory" with guard bytes

    const GUARD: usize = 64;

    /// 16-byte-aligned bytes with a guard band on each side.
    struct Mem(Vec<u128>);

    impl Mem {
        fn new(bytes: usize) -> Mem {
            let mut m = Mem(vec![0; (bytes + 2 * GUARD).div_ceil(16)]);
            m.bytes_mut().fill(0xA5);
            m
        }
        fn bytes_mut(&mut self) -> &mut [u8] {
            let n = self.0.len() * 16;
            // SAFETY: the Vec<u128> owns n bytes.
            unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), n) }
        }
        fn bytes(&self) -> &[u8] {
            // SAFETY: as above.
            unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), self.0.len() * 16) }
        }
        fn addr(&self, offset: usize) -> u64 {
            self.0.as_ptr() as u64 + (GUARD + offset) as u64
        }
        fn write(&mut self, offset: usize, data: &[u8]) {
            self.bytes_mut()[GUARD + offset..GUARD + offset + data.len()].copy_from_slice(data);
        }
        fn read(&self, offset: usize, len: usize) -> Vec<u8> {
            self.bytes()[GUARD + offset..GUARD + offset + len].to_vec()
        }
        /// The bytes outside [offset, offset + len) are still the fill pattern.
        fn check_guards(&self, what: &str, offset: usize, len: usize) {
            let b = self.bytes();
            let inside = GUARD + offset..GUARD + offset + len;
            let bad = (0..b.len()).find(|i| !inside.contains(i) && b[*i] != 0xA5);
            assert!(
                bad.is_none(),
                "{what}: a kernel wrote outside the tensor (byte {bad:?})"
            );
        }
    }

    /// One tensor in host "device memory" and its mirror for the reference.
    struct T {
        len: usize,
        off: usize,
        p: Mem,
        g: Mem,
        m: Mem,
        v: Mem,
        hp: HostVec,
        hg: HostVec,
        hm: Vec<f32>,
        hv: Vec<f32>,
    }

    impl T {
        fn new(pd: DType, gd: DType, len: usize, misaligned: bool, rng: &mut Rng) -> T {
            let off = usize::from(misaligned);
            let hp = HostVec::random(pd, len, rng, 1.0);
            let hg = HostVec::random(gd, len, rng, 1.0);
            let mut t = T {
                len,
                off,
                p: Mem::new((len + off) * pd.size()),
                g: Mem::new((len + off) * gd.size()),
                m: Mem::new((len + off) * 4),
                v: Mem::new((len + off) * 4),
                hp,
                hg,
                hm: vec![0.0; len],
                hv: vec![0.0; len],
            };
            let ps = pd.size();
            t.p.write(off * ps, &t.hp.bytes());
            t.m.write(off * 4, &f32_bytes(&t.hm));
            t.v.write(off * 4, &f32_bytes(&t.hv));
            t
        }
        fn new_grads(&mut self, rng: &mut Rng, scale: f32) {
            self.hg = HostVec::random(self.hg.dtype(), self.len, rng, scale);
            let gs = self.hg.dtype().size();
            let bytes = self.hg.bytes();
            self.g.write(self.off * gs, &bytes);
        }
        fn desc(&self, second_moment: bool) -> CudaTensors {
            let (ps, gs) = (self.hp.dtype().size(), self.hg.dtype().size());
            CudaTensors {
                params: self.p.addr(self.off * ps),
                params_dtype: self.hp.dtype(),
                grads: self.g.addr(self.off * gs),
                grads_dtype: self.hg.dtype(),
                exp_avg: self.m.addr(self.off * 4),
                exp_avg_sq: if second_moment {
                    self.v.addr(self.off * 4)
                } else {
                    0
                },
                len: self.len,
            }
        }
        fn check(&self, what: &str) {
            let ps = self.hp.dtype().size();
            let gs = self.hg.dtype().size();
            self.p
                .check_guards(&format!("{what} params"), self.off * ps, self.len * ps);
            self.g
                .check_guards(&format!("{what} grads"), self.off * gs, self.len * gs);
            self.m
                .check_guards(&format!("{what} exp_avg"), self.off * 4, self.len * 4);
            self.v
                .check_guards(&format!("{what} exp_avg_sq"), self.off * 4, self.len * 4);
            let p =
                HostVec::from_bytes(self.hp.dtype(), &self.p.read(self.off * ps, self.len * ps));
            let m = f32s(&self.m.read(self.off * 4, self.len * 4));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(p == self.hp, "{what}: parameters differ from the reference");
            assert_eq!(bits(&m), bits(&self.hm), "{what}: exp_avg differs");
            // (Lion leaves exp_avg_sq, all zeros, alone.)
            let v = f32s(&self.v.read(self.off * 4, self.len * 4));
            assert_eq!(bits(&v), bits(&self.hv), "{what}: exp_avg_sq differs");
        }
    }

    /// Every dtype pair at the given lengths (aligned), plus one misaligned tensor each.
    fn tensors(lens: &[usize], misaligned_len: usize, rng: &mut Rng) -> Vec<T> {
        let mut out = Vec::new();
        for &len in lens {
            for (p, g) in PAIRS {
                out.push(T::new(p, g, len, false, rng));
            }
        }
        for (p, g) in PAIRS {
            out.push(T::new(p, g, misaligned_len, true, rng));
        }
        out
    }

    /// Small chunks and launches, so every split happens with few elements.
    const SMALL: PlanLimits = PlanLimits {
        chunk_size: 1024,
        max_tensors: 5,
        max_blocks: 7,
    };

    #[test]
    fn adam_kernels_match_the_reference_bit_for_bit() {
        let Some(dev) = emu(&builders::fused_adam::SPEC) else {
            return;
        };
        let mut rng = Rng(0x1234_5678);
        for (limits, lens) in [
            (SMALL, &[1usize, 7, 1023, 5000][..]),
            (LIMITS, &[3, 70_001][..]),
        ] {
            for adamw_mode in [true, false] {
                let mut ts = tensors(lens, 2051, &mut rng);
                for step in 1..=3u64 {
                    let p = AdamParams {
                        lr: 1e-2,
                        weight_decay: 0.1,
                        adamw_mode,
                        step,
                        grad_scale: if step == 2 { 1024.0 } else { 3.0 },
                        ..AdamParams::default()
                    };
                    for t in &mut ts {
                        t.new_grads(&mut rng, p.grad_scale);
                    }
                    let descs: Vec<CudaTensors> = ts.iter().map(|t| t.desc(true)).collect();
                    p.validate().unwrap();
                    let work = ADAM.work(&descs, &limits).unwrap();
                    ADAM.run(dev, &descs, &work, &mut AdamHyper::new(&p))
                        .unwrap();
                    for (k, t) in ts.iter_mut().enumerate() {
                        reference::adam_step(
                            &p,
                            t.hp.params_mut(),
                            t.hg.grads(),
                            &mut t.hm,
                            &mut t.hv,
                            None,
                        )
                        .unwrap();
                        t.check(
                            &format!("adam (adamw {adamw_mode}, {limits:?}) step {step} tensors[{k}] {:?}/{:?} x{}", t.hp.dtype(), t.hg.dtype(), t.len),
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn lion_kernels_match_the_reference_bit_for_bit() {
        let Some(dev) = emu(&builders::fused_lion::SPEC) else {
            return;
        };
        let mut rng = Rng(0x9876_5432);
        for weight_decay in [0.0f32, 0.1] {
            let mut ts = tensors(&[1, 7, 1023, 5000], 2051, &mut rng);
            for step in 1..=3u64 {
                let p = LionParams {
                    lr: 1e-3,
                    weight_decay,
                    grad_scale: if step == 2 { 1024.0 } else { 3.0 },
                    ..LionParams::default()
                };
                for t in &mut ts {
                    t.new_grads(&mut rng, p.grad_scale);
                }
                let descs: Vec<CudaTensors> = ts.iter().map(|t| t.desc(false)).collect();
                let work = LION.work(&descs, &SMALL).unwrap();
                LION.run(dev, &descs, &work, &mut LionHyper::new(&p))
                    .unwrap();
                for (k, t) in ts.iter_mut().enumerate() {
                    reference::lion_step(&p, t.hp.params_mut(), t.hg.grads(), &mut t.hm, None)
                        .unwrap();
                    t.check(&format!(
                        "lion (wd {weight_decay}) step {step} tensors[{k}] {:?}/{:?} x{}",
                        t.hp.dtype(),
                        t.hg.dtype(),
                        t.len
                    ));
                }
            }
        }
    }

    #[test]
    fn lamb_kernels_match_the_reference() {
        let Some(dev) = emu(&builders::fused_lamb::SPEC) else {
            return;
        };
        let mut rng = Rng(0x5555_1111);
        let mut differing = 0;
        for (k, eps_inside_sqrt) in [false, true].into_iter().enumerate() {
            let mut ts = tensors(&[1, 7, 3001], 2051, &mut rng);
            // An empty tensor and an all-zero one (ratio 1) in the list too.
            ts.insert(3, T::new(DType::F32, DType::F32, 0, false, &mut rng));
            let mut zero = T::new(DType::BF16, DType::F32, 100, false, &mut rng);
            zero.hp = HostVec::BF16(vec![bf16::ZERO; 100]);
            zero.p.write(0, &zero.hp.bytes());
            ts.push(zero);
            for step in 1..=2u64 {
                let p = LambParams {
                    lr: 1e-2,
                    weight_decay: if k == 0 { 0.01 } else { 0.0 },
                    eps_inside_sqrt,
                    step,
                    grad_scale: if step == 2 { 1024.0 } else { 3.0 },
                    ..LambParams::default()
                };
                for t in &mut ts {
                    t.new_grads(&mut rng, p.grad_scale);
                }
                let descs: Vec<CudaTensors> = ts.iter().map(|t| t.desc(true)).collect();
                let ratios = Mem::new(descs.len() * 4);
                let ratios_addr = if step == 1 { ratios.addr(0) } else { 0 };
                let lw = lamb_work(&p, &descs, ratios_addr, &SMALL).unwrap();
                run_lamb(dev, &p, &descs, ratios_addr, &lw).unwrap();
                if step == 1 {
                    ratios.check_guards("ratios", 0, descs.len() * 4);
                }
                let got_ratios = f32s(&ratios.read(0, descs.len() * 4));
                assert!(dev.scratch.lock().unwrap().is_empty(), "scratch not freed");
                for (i, t) in ts.iter_mut().enumerate() {
                    let what = format!(
                        "lamb (eps_inside_sqrt {eps_inside_sqrt}) step {step} tensors[{i}] {:?}/{:?} x{}",
                        t.hp.dtype(),
                        t.hg.dtype(),
                        t.len
                    );
                    let r = lamb_step_reference(
                        &p,
                        t.hp.params_mut(),
                        t.hg.grads(),
                        &mut t.hm,
                        &mut t.hv,
                    )
                    .unwrap();
                    if step == 1 {
                        let g = got_ratios[i];
                        let ulps = (g.to_bits() as i64 - r.to_bits() as i64).abs();
                        assert!(ulps <= 1, "{what}: ratio {g} vs reference {r}");
                        if t.len == 0 || t.len == 100 {
                            assert_eq!(g, 1.0, "{what}");
                        }
                        if ulps != 0 {
                            // Continue from the kernel's parameters (the moments agree).
                            differing += 1;
                            let ps = t.hp.dtype().size();
                            t.hp = HostVec::from_bytes(
                                t.hp.dtype(),
                                &t.p.read(t.off * ps, t.len * ps),
                            );
                        }
                    }
                    t.check(&what);
                }
            }
        }
        eprintln!("lamb emulation: {differing} trust ratios differed by 1 ulp");
    }

    #[test]
    fn a_tensor_continues_across_launches_in_the_kernels() {
        // One tensor of 23 chunks with 7 blocks per launch: 4 launches, slot 0 each time,
        // chunk numbers beyond the first launch's.
        let Some(dev) = emu(&builders::fused_adam::SPEC) else {
            return;
        };
        let mut rng = Rng(77);
        let mut ts = vec![
            T::new(DType::F32, DType::F32, 3, false, &mut rng),
            T::new(DType::BF16, DType::F32, 23 * 1024 - 5, false, &mut rng),
            T::new(DType::BF16, DType::F32, 9, false, &mut rng),
        ];
        let p = AdamParams::default();
        for t in &mut ts {
            t.new_grads(&mut rng, 1.0);
        }
        let descs: Vec<CudaTensors> = ts.iter().map(|t| t.desc(true)).collect();
        let work = ADAM.work(&descs, &SMALL).unwrap();
        assert_eq!(work.plans[1].len(), 4);
        ADAM.run(dev, &descs, &work, &mut AdamHyper::new(&p))
            .unwrap();
        for (k, t) in ts.iter_mut().enumerate() {
            reference::adam_step(
                &p,
                t.hp.params_mut(),
                t.hg.grads(),
                &mut t.hm,
                &mut t.hv,
                None,
            )
            .unwrap();
            t.check(&format!("tensors[{k}]"));
        }
    }
}
