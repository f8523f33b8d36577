//! The multi-tensor CUDA optimizer ops `fused_adam`, `fused_lamb` and `fused_lion`.
//!
//! * With NVRTC (no GPU needed): each op builds for `sm_90`, its CUBIN holds every kernel
//!   its spec declares, and its PTX declares exactly those kernels and uses no local memory.
//!   Without NVRTC these tests print why and pass, unless `DSRS_REQUIRE_NVRTC=1`.
//! * With a GPU: Adam/AdamW and Lion agree with the pure-Rust reference bit for bit, LAMB's
//!   moments bit for bit and its trust ratios within 1 ulp (parameters bit for bit where the
//!   ratio is the same), over 5 steps, every dtype pair, odd lengths, misaligned tensors and
//!   steps split into several launches. These skip cleanly (printing why) where there is no
//!   CUDA device, unless `DSRS_REQUIRE_GPU=1`.
//!
//! Run on a GPU machine:
//! `DSRS_REQUIRE_GPU=1 DSRS_NVRTC_LIB=/path/libnvrtc.so.12 cargo test --release --test cuda_optim -- --nocapture`

use std::path::PathBuf;
use std::sync::Arc;

use deepspeed_rs::accelerator::cuda::CudaStream;
use deepspeed_rs::accelerator::{self, Accelerator, Buffer, MemoryKind, Stream};
use deepspeed_rs::dtype::DType;
use deepspeed_rs::ops::optim::cuda::CudaTensors;
use deepspeed_rs::ops::optim::lamb::{LambParams, lamb_step_reference};
use deepspeed_rs::ops::optim::{AdamParams, GradsRef, LionParams, ParamsMut, Ran, reference};
use deepspeed_rs::ops::{self, BuildOptions, builders, nvrtc};

// HostVec, Rng, PAIRS and the fp32 byte conversions, shared with the host-emulation tests in
// src/ops/optim/cuda.rs; the file takes DType, GradsRef and ParamsMut from here.
#[path = "support/optim_host.rs"]
mod optim_host;
use optim_host::{HostVec, PAIRS, Rng, f32_bytes, f32_from_bytes};

/// The step functions with the tests' safety argument made once: every test passes
/// addresses of live device buffers of the stream's device, with `len` elements each, and
/// keeps them alive until it synchronizes the stream (or passes invalid descriptions that
/// validation refuses before any launch).
mod optim_cuda {
    use deepspeed_rs::Result;
    use deepspeed_rs::accelerator::cuda::CudaStream;
    use deepspeed_rs::ops::BuildOptions;
    use deepspeed_rs::ops::optim::cuda::{self, CudaTensors};
    pub use deepspeed_rs::ops::optim::cuda::{CHUNK_SIZE, MAX_BLOCKS};
    use deepspeed_rs::ops::optim::lamb::LambParams;
    use deepspeed_rs::ops::optim::{AdamParams, LionParams, Ran};

    pub fn adam_step(
        s: &CudaStream,
        p: &AdamParams,
        t: &[CudaTensors],
        b: &BuildOptions,
    ) -> Result<Ran> {
        // SAFETY: see the module docs.
        unsafe { cuda::adam_step(s, p, t, b) }
    }

    pub fn lion_step(
        s: &CudaStream,
        p: &LionParams,
        t: &[CudaTensors],
        b: &BuildOptions,
    ) -> Result<Ran> {
        // SAFETY: see the module docs.
        unsafe { cuda::lion_step(s, p, t, b) }
    }

    pub fn lamb_step(
        s: &CudaStream,
        p: &LambParams,
        t: &[CudaTensors],
        b: &BuildOptions,
    ) -> Result<Ran> {
        // SAFETY: see the module docs.
        unsafe { cuda::lamb_step(s, p, t, b) }
    }

    pub fn lamb_step_with_ratios(
        s: &CudaStream,
        p: &LambParams,
        t: &[CudaTensors],
        ratios: u64,
        b: &BuildOptions,
    ) -> Result<Ran> {
        // SAFETY: see the module docs; `ratios` is a live device buffer of one f32 per tensor.
        unsafe { cuda::lamb_step_with_ratios(s, p, t, ratios, b) }
    }
}

// ---------------------------------------------------------------- without a GPU (NVRTC)

fn nvrtc_or_skip(test: &str) -> bool {
    match nvrtc::info() {
        Ok(i) => {
            eprintln!(
                "{test}: NVRTC {}.{} ({:?})",
                i.version.0, i.version.1, i.library
            );
            true
        }
        Err(e) => {
            if std::env::var("DSRS_REQUIRE_NVRTC").is_ok_and(|v| v == "1") {
                panic!("{test}: DSRS_REQUIRE_NVRTC=1 but {e}");
            }
            eprintln!("{test}: SKIPPED: {e}");
            false
        }
    }
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dsrs-cuda-optim-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The names of the kernels (`.text.<name>` sections) of a CUBIN whose name starts with
/// `prefix`.
fn cubin_kernels(image: &[u8], prefix: &str) -> Vec<String> {
    let marker = format!(".text.{prefix}");
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = image[i..]
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
    {
        let start = i + pos + ".text.".len();
        let end = start + image[start..].iter().position(|&b| b == 0).unwrap();
        out.push(String::from_utf8_lossy(&image[start..end]).into_owned());
        i = end;
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn every_declared_kernel_is_in_the_sm90_image() {
    if !nvrtc_or_skip("every_declared_kernel_is_in_the_sm90_image") {
        return;
    }
    let dir = scratch("image");
    let opts = BuildOptions {
        cache_dir: Some(dir.join("cache")),
        cuda_arch: Some("sm_90".into()),
        ..BuildOptions::default()
    };
    for name in ["fused_adam", "fused_lamb", "fused_lion"] {
        let spec = builders::ALL.iter().find(|s| s.name == name).unwrap();
        let mut declared: Vec<String> = spec.symbols.iter().map(|s| s.to_string()).collect();
        declared.sort();
        assert!(declared.len() >= 7, "{name}: {declared:?}");
        assert_eq!(spec.min_compute_capability, (7, 0), "{name}");

        let op = ops::load(name, &opts).unwrap();
        assert_eq!(op.target(), "sm_90");
        let image = op.cuda_image().unwrap();
        assert!(image.starts_with(b"\x7fELF"), "{name}: not a CUBIN");
        for sym in &declared {
            assert!(
                contains(image, format!(".text.{sym}\0").as_bytes()),
                "{name}: no kernel {sym} in the sm_90 image"
            );
        }
        assert_eq!(
            cubin_kernels(image, "dsrs_"),
            declared,
            "{name}: kernels in the CUBIN"
        );

        // The PTX declares exactly the declared kernels, each with the 512-thread bound,
        // and no kernel copies its parameter block to local memory.
        let work = dir.join(format!("{name}-ptx"));
        std::fs::create_dir_all(&work).unwrap();
        let (ptx, log) = nvrtc::compile(spec, "compute_80", &work, false).unwrap();
        assert!(!log.to_lowercase().contains("warning"), "{name}: {log}");
        let ptx = String::from_utf8(ptx).unwrap();
        let mut entries: Vec<String> = ptx
            .lines()
            .filter_map(|l| l.trim().strip_prefix(".visible .entry "))
            .map(|l| l.split('(').next().unwrap().to_string())
            .collect();
        entries.sort();
        assert_eq!(entries, declared, "{name}: PTX entries");
        assert_eq!(
            ptx.matches(".maxntid 512, 1, 1").count(),
            declared.len(),
            "{name}: every kernel is bounded to 512 threads"
        );
        assert!(
            !ptx.contains(".local"),
            "{name}: a kernel uses local memory"
        );
        assert!(
            !ptx.contains("fma.rn.f32"),
            "{name}: a float FMA was contracted"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- with a GPU

/// The CUDA accelerator, or `None` (with the reason printed) where there is no GPU.
fn cuda() -> Option<Arc<dyn Accelerator>> {
    let probe = accelerator::cuda::probe();
    if let Some(reason) = &probe.reason {
        if std::env::var("DSRS_REQUIRE_GPU").is_ok_and(|v| v == "1") {
            panic!("DSRS_REQUIRE_GPU=1 but CUDA is unavailable: {reason}");
        }
        eprintln!("skipped: CUDA unavailable: {reason}");
        return None;
    }
    Some(accelerator::create("cuda", None).expect("CUDA is probed available, so it must open"))
}

macro_rules! gpu_or_skip {
    () => {
        match cuda() {
            Some(a) => a,
            None => return,
        }
    };
}

fn cuda_stream(s: &Arc<dyn Stream>) -> &CudaStream {
    s.as_any()
        .downcast_ref::<CudaStream>()
        .expect("the cuda accelerator's streams are CudaStreams")
}

/// One tensor on the device and its host mirror (what the reference updates).
struct DevTensor {
    len: usize,
    /// Every array starts this many elements into its buffer (1: misaligned for vector loads).
    offset: usize,
    p: Buffer,
    g: Buffer,
    m: Buffer,
    v: Buffer,
    host_p: HostVec,
    host_g: HostVec,
    host_m: Vec<f32>,
    host_v: Vec<f32>,
}

impl DevTensor {
    fn new(
        a: &Arc<dyn Accelerator>,
        params: DType,
        grads: DType,
        len: usize,
        rng: &mut Rng,
        misaligned: bool,
    ) -> DevTensor {
        let offset = usize::from(misaligned);
        let buf =
            |size: usize| Buffer::new(a, (len + offset) * size, 0, MemoryKind::Device).unwrap();
        let t = DevTensor {
            len,
            offset,
            p: buf(params.size()),
            g: buf(grads.size()),
            m: buf(4),
            v: buf(4),
            host_p: HostVec::random(params, len, rng, 1.0),
            host_g: HostVec::random(grads, len, rng, 1.0),
            host_m: vec![0.0; len],
            host_v: vec![0.0; len],
        };
        t.upload_state();
        t
    }

    fn upload_state(&self) {
        let ps = self.host_p.dtype().size();
        self.p
            .write(self.offset * ps, &self.host_p.bytes())
            .unwrap();
        self.m
            .write(self.offset * 4, &f32_bytes(&self.host_m))
            .unwrap();
        self.v
            .write(self.offset * 4, &f32_bytes(&self.host_v))
            .unwrap();
    }

    /// New random gradients (scaled by `grad_scale`, so unscaled they are about 1).
    fn new_grads(&mut self, rng: &mut Rng, grad_scale: f32) {
        self.host_g = HostVec::random(self.host_g.dtype(), self.len, rng, grad_scale);
        let gs = self.host_g.dtype().size();
        self.g
            .write(self.offset * gs, &self.host_g.bytes())
            .unwrap();
    }

    fn desc(&self, second_moment: bool) -> CudaTensors {
        let ps = self.host_p.dtype().size();
        let gs = self.host_g.dtype().size();
        CudaTensors {
            params: (self.p.ptr() + self.offset * ps) as u64,
            params_dtype: self.host_p.dtype(),
            grads: (self.g.ptr() + self.offset * gs) as u64,
            grads_dtype: self.host_g.dtype(),
            exp_avg: (self.m.ptr() + self.offset * 4) as u64,
            exp_avg_sq: if second_moment {
                (self.v.ptr() + self.offset * 4) as u64
            } else {
                0
            },
            len: self.len,
        }
    }

    /// The device's parameters, exp_avg and exp_avg_sq.
    fn download(&self) -> (HostVec, Vec<f32>, Vec<f32>) {
        let ps = self.host_p.dtype().size();
        let mut p = vec![0u8; self.len * ps];
        self.p.read(self.offset * ps, &mut p).unwrap();
        let mut m = vec![0u8; self.len * 4];
        self.m.read(self.offset * 4, &mut m).unwrap();
        let mut v = vec![0u8; self.len * 4];
        self.v.read(self.offset * 4, &mut v).unwrap();
        (
            HostVec::from_bytes(self.host_p.dtype(), &p),
            f32_from_bytes(&m),
            f32_from_bytes(&v),
        )
    }

    fn label(&self) -> String {
        format!(
            "{}/{} x{}{}",
            self.host_p.dtype().name(),
            self.host_g.dtype().name(),
            self.len,
            if self.offset > 0 { " misaligned" } else { "" }
        )
    }
}

fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn assert_f32_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| !same_bits(got[i], want[i]))
        .collect();
    if let Some(&i) = bad.first() {
        panic!(
            "{what}: {} of {} elements differ; first [{i}]: device {:e} ({:#010x}), reference {:e} ({:#010x})",
            bad.len(),
            got.len(),
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

fn assert_params_bits(what: &str, got: &HostVec, want: &HostVec) {
    assert_eq!(got.len(), want.len(), "{what}");
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| {
            let ((gb, gv), (wb, wv)) = (got.at(i), want.at(i));
            gb != wb && !(gv.is_nan() && wv.is_nan())
        })
        .collect();
    if let Some(&i) = bad.first() {
        panic!(
            "{what}: {} of {} parameters differ; first [{i}]: device {:?}, reference {:?}",
            bad.len(),
            got.len(),
            got.at(i),
            want.at(i)
        );
    }
}

/// Every dtype pair at lengths 1, 7, 1023 and 1_000_003 (aligned) and 4099 (misaligned),
/// interleaved so one step mixes groups.
fn tensor_set(a: &Arc<dyn Accelerator>, rng: &mut Rng) -> Vec<DevTensor> {
    let mut out = Vec::new();
    for len in [1, 7, 1023, 1_000_003] {
        for (p, g) in PAIRS {
            out.push(DevTensor::new(a, p, g, len, rng, false));
        }
    }
    for (p, g) in PAIRS {
        out.push(DevTensor::new(a, p, g, 4099, rng, true));
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum Opt {
    Adam(AdamParams),
    Lion(LionParams),
    Lamb(LambParams),
}

impl Opt {
    fn grad_scale(&self) -> f32 {
        match self {
            Opt::Adam(p) => p.grad_scale,
            Opt::Lion(p) => p.grad_scale,
            Opt::Lamb(p) => p.grad_scale,
        }
    }
}

/// One step on the device and in the reference, then the comparison. Returns the number of
/// LAMB tensors whose trust ratio differed from the reference's by 1 ulp.
fn step_and_compare(
    a: &Arc<dyn Accelerator>,
    s: &Arc<dyn Stream>,
    tensors: &mut [DevTensor],
    opt: &Opt,
    rng: &mut Rng,
    label: &str,
) -> usize {
    let build = BuildOptions::default();
    for t in tensors.iter_mut() {
        t.new_grads(rng, opt.grad_scale());
    }
    let second_moment = !matches!(opt, Opt::Lion(_));
    let descs: Vec<CudaTensors> = tensors.iter().map(|t| t.desc(second_moment)).collect();
    let cs = cuda_stream(s);
    let ratios = Buffer::new(a, tensors.len() * 4, 0, MemoryKind::Device).unwrap();
    let ran = match opt {
        Opt::Adam(p) => optim_cuda::adam_step(cs, p, &descs, &build),
        Opt::Lion(p) => optim_cuda::lion_step(cs, p, &descs, &build),
        Opt::Lamb(p) => {
            optim_cuda::lamb_step_with_ratios(cs, p, &descs, ratios.ptr() as u64, &build)
        }
    }
    .unwrap_or_else(|e| panic!("{label}: {e}"));
    assert!(matches!(ran, Ran::Kernel(_)), "{ran:?}");

    // The reference, on the host, while the device works.
    let before: Vec<HostVec> = match opt {
        Opt::Lamb(_) => tensors.iter().map(|t| t.host_p.clone()).collect(),
        _ => Vec::new(),
    };
    let mut ref_ratios = Vec::new();
    for t in tensors.iter_mut() {
        match opt {
            Opt::Adam(p) => reference::adam_step(
                p,
                t.host_p.params_mut(),
                t.host_g.grads(),
                &mut t.host_m,
                &mut t.host_v,
                None,
            )
            .unwrap(),
            Opt::Lion(p) => reference::lion_step(
                p,
                t.host_p.params_mut(),
                t.host_g.grads(),
                &mut t.host_m,
                None,
            )
            .unwrap(),
            Opt::Lamb(p) => ref_ratios.push(
                lamb_step_reference(
                    p,
                    t.host_p.params_mut(),
                    t.host_g.grads(),
                    &mut t.host_m,
                    &mut t.host_v,
                )
                .unwrap(),
            ),
        }
    }
    s.synchronize().unwrap();

    let mut gpu_ratios = vec![0u8; tensors.len() * 4];
    if matches!(opt, Opt::Lamb(_)) {
        ratios.read(0, &mut gpu_ratios).unwrap();
    }
    let gpu_ratios = f32_from_bytes(&gpu_ratios);
    let mut ratio_ulps = 0;
    for (k, t) in tensors.iter_mut().enumerate() {
        let what = format!("{label}: tensors[{k}] ({})", t.label());
        let (p, m, v) = t.download();
        assert_f32_bits(&format!("{what} exp_avg"), &m, &t.host_m);
        // Lion leaves exp_avg_sq alone: it still equals the mirror, which Lion never changes.
        assert_f32_bits(&format!("{what} exp_avg_sq"), &v, &t.host_v);
        if let Opt::Lamb(_) = opt {
            let (g, r) = (gpu_ratios[k], ref_ratios[k]);
            let ulps = (i64::from(g.to_bits() as i32) - i64::from(r.to_bits() as i32)).abs();
            assert!(
                ulps <= 1,
                "{what}: trust ratio {g:e} on the device, {r:e} in the reference"
            );
            if ulps == 0 {
                assert_params_bits(&format!("{what} params"), &p, &t.host_p);
            } else {
                ratio_ulps += 1;
                // A 1-ulp ratio moves each parameter by at most about 2^-23 of its update,
                // plus one rounding of its dtype.
                let unit = match t.host_p.dtype() {
                    DType::F32 => f64::from(f32::EPSILON),
                    DType::F16 => 1.0 / 1024.0,
                    _ => 1.0 / 128.0,
                };
                for i in 0..t.len {
                    let (_, got) = p.at(i);
                    let (_, want) = t.host_p.at(i);
                    let (_, old) = before[k].at(i);
                    let tol = unit * want.abs()
                        + 2.0 * f64::from(f32::EPSILON) * (want - old).abs()
                        + 1e-7;
                    assert!(
                        (got - want).abs() <= tol,
                        "{what} params[{i}]: device {got:e}, reference {want:e}"
                    );
                }
                // Continue from the device's parameters, so the next step compares again
                // from equal inputs.
                t.host_p = p;
            }
        } else {
            assert_params_bits(&format!("{what} params"), &p, &t.host_p);
        }
    }
    ratio_ulps
}

#[test]
fn adam_and_adamw_match_the_reference_bit_for_bit() {
    let a = gpu_or_skip!();
    let s = a.current_stream().unwrap();
    for adamw_mode in [true, false] {
        let mut rng = Rng::new(if adamw_mode { 1 } else { 2 });
        let mut tensors = tensor_set(&a, &mut rng);
        for step in 1..=5u64 {
            let p = AdamParams {
                lr: 1e-2,
                weight_decay: 0.1,
                adamw_mode,
                step,
                // A power of two (exact reciprocal) and a scale whose reciprocal rounds.
                grad_scale: if step % 2 == 0 { 1024.0 } else { 3.0 },
                ..AdamParams::default()
            };
            let label = format!("adam (adamw_mode {adamw_mode}) step {step}");
            step_and_compare(&a, &s, &mut tensors, &Opt::Adam(p), &mut rng, &label);
        }
    }
    // No weight decay, no bias correction.
    let mut rng = Rng::new(3);
    let mut tensors = tensor_set(&a, &mut rng);
    for step in 1..=2u64 {
        let p = AdamParams {
            bias_correction: false,
            step,
            ..AdamParams::default()
        };
        step_and_compare(&a, &s, &mut tensors, &Opt::Adam(p), &mut rng, "adam plain");
    }
}

#[test]
fn lion_matches_the_reference_bit_for_bit() {
    let a = gpu_or_skip!();
    let s = a.current_stream().unwrap();
    for weight_decay in [0.0, 0.1] {
        let mut rng = Rng::new(10 + (weight_decay * 10.0) as u64);
        let mut tensors = tensor_set(&a, &mut rng);
        for step in 1..=5u64 {
            let p = LionParams {
                lr: 1e-3,
                weight_decay,
                grad_scale: if step % 2 == 0 { 1024.0 } else { 3.0 },
                ..LionParams::default()
            };
            let label = format!("lion (weight_decay {weight_decay}) step {step}");
            step_and_compare(&a, &s, &mut tensors, &Opt::Lion(p), &mut rng, &label);
        }
    }
}

#[test]
fn lamb_matches_the_reference() {
    let a = gpu_or_skip!();
    let s = a.current_stream().unwrap();
    let mut differing = 0;
    let mut compared = 0;
    for (k, eps_inside_sqrt) in [false, true].into_iter().enumerate() {
        let mut rng = Rng::new(20 + k as u64);
        let mut tensors = tensor_set(&a, &mut rng);
        for step in 1..=5u64 {
            let p = LambParams {
                lr: 1e-2,
                weight_decay: if k == 0 { 0.01 } else { 0.0 },
                eps_inside_sqrt,
                step,
                grad_scale: if step % 2 == 0 { 1024.0 } else { 3.0 },
                ..LambParams::default()
            };
            let label = format!("lamb (eps_inside_sqrt {eps_inside_sqrt}) step {step}");
            differing += step_and_compare(&a, &s, &mut tensors, &Opt::Lamb(p), &mut rng, &label);
            compared += tensors.len();
        }
    }
    eprintln!("lamb: {differing} of {compared} trust ratios differed from the reference by 1 ulp");
}

#[test]
fn lamb_ratios_clamp_and_empty_tensors_get_one() {
    let a = gpu_or_skip!();
    let s = a.current_stream().unwrap();
    let mut rng = Rng::new(30);
    let mut tensors = vec![
        DevTensor::new(&a, DType::F32, DType::F32, 5000, &mut rng, false),
        DevTensor::new(&a, DType::F32, DType::F32, 5000, &mut rng, false),
        DevTensor::new(&a, DType::BF16, DType::BF16, 5000, &mut rng, false),
    ];
    // Zero parameters: ratio 1; huge ones: max_coeff.
    tensors[0].host_p = HostVec::F32(vec![0.0; 5000]);
    tensors[1].host_p = HostVec::F32(vec![1e4; 5000]);
    for t in &tensors {
        t.upload_state();
    }
    let p = LambParams::default();
    step_and_compare(&a, &s, &mut tensors, &Opt::Lamb(p), &mut rng, "lamb clamp");

    // An empty tensor in the middle of the list gets ratio 1 (and zero parameters again).
    tensors[0].host_p = HostVec::F32(vec![0.0; 5000]);
    tensors[0].upload_state();
    let cs = cuda_stream(&s);
    let descs = [
        tensors[0].desc(true),
        CudaTensors {
            params: 0,
            params_dtype: DType::F32,
            grads: 0,
            grads_dtype: DType::F32,
            exp_avg: 0,
            exp_avg_sq: 0,
            len: 0,
        },
        tensors[1].desc(true),
    ];
    let ratios = Buffer::new(&a, 12, 0, MemoryKind::Device).unwrap();
    ratios.fill(0, 12, &[0xff; 4], None).unwrap();
    let p2 = LambParams { step: 2, ..p };
    optim_cuda::lamb_step_with_ratios(
        cs,
        &p2,
        &descs,
        ratios.ptr() as u64,
        &BuildOptions::default(),
    )
    .unwrap();
    s.synchronize().unwrap();
    let mut r = [0u8; 12];
    ratios.read(0, &mut r).unwrap();
    let r = f32_from_bytes(&r);
    assert_eq!(r[0], 1.0, "{r:?}");
    assert_eq!(r[1], 1.0, "{r:?}");
    assert_eq!(r[2], p.max_coeff, "{r:?}");
}

#[test]
fn steps_split_into_several_launches() {
    let a = gpu_or_skip!();
    let s = a.current_stream().unwrap();
    let mut rng = Rng::new(40);
    // 40 tensors (more than a launch's 32 slots) around one tensor of more chunks than a
    // launch's 384 blocks.
    let big = optim_cuda::MAX_BLOCKS * optim_cuda::CHUNK_SIZE + 777;
    let mut tensors = Vec::new();
    for k in 0..41 {
        let len = if k == 20 {
            big
        } else {
            1 + (k * 4111) % 70_000
        };
        tensors.push(DevTensor::new(
            &a,
            DType::F32,
            DType::BF16,
            len,
            &mut rng,
            k % 5 == 4,
        ));
    }
    let adam = AdamParams {
        weight_decay: 0.01,
        ..AdamParams::default()
    };
    step_and_compare(
        &a,
        &s,
        &mut tensors,
        &Opt::Adam(adam),
        &mut rng,
        "adam split",
    );
    step_and_compare(
        &a,
        &s,
        &mut tensors,
        &Opt::Lion(LionParams::default()),
        &mut rng,
        "lion split",
    );
    let lamb = LambParams {
        weight_decay: 0.01,
        ..LambParams::default()
    };
    step_and_compare(
        &a,
        &s,
        &mut tensors,
        &Opt::Lamb(lamb),
        &mut rng,
        "lamb split",
    );

    // LAMB is deterministic: the same step from the same state gives the same bits.
    let cs = cuda_stream(&s);
    let descs: Vec<CudaTensors> = tensors.iter().map(|t| t.desc(true)).collect();
    let mut results = Vec::new();
    for _ in 0..2 {
        for t in &tensors {
            t.upload_state();
        }
        let ratios = Buffer::new(&a, tensors.len() * 4, 0, MemoryKind::Device).unwrap();
        let p = LambParams { step: 2, ..lamb };
        optim_cuda::lamb_step_with_ratios(
            cs,
            &p,
            &descs,
            ratios.ptr() as u64,
            &BuildOptions::default(),
        )
        .unwrap();
        s.synchronize().unwrap();
        let mut r = vec![0u8; tensors.len() * 4];
        ratios.read(0, &mut r).unwrap();
        let params: Vec<HostVec> = tensors.iter().map(|t| t.download().0).collect();
        results.push((r, params));
    }
    assert!(results[0] == results[1], "two identical LAMB steps differ");
}

#[test]
fn invalid_steps_are_refused_before_anything_runs() {
    let a = gpu_or_skip!();
    let s = a.current_stream().unwrap();
    let cs = cuda_stream(&s);
    let mut rng = Rng::new(50);
    let t = DevTensor::new(&a, DType::F32, DType::F32, 100, &mut rng, false);
    let good = t.desc(true);
    let build = BuildOptions::default();
    let bad = [CudaTensors {
        exp_avg_sq: 0,
        ..good
    }];
    let e = optim_cuda::adam_step(cs, &AdamParams::default(), &bad, &build).unwrap_err();
    assert!(e.to_string().contains("tensors[0].exp_avg_sq is 0"), "{e}");
    let e = optim_cuda::lamb_step(cs, &LambParams::default(), &bad, &build).unwrap_err();
    assert!(e.to_string().contains("tensors[0].exp_avg_sq is 0"), "{e}");
    let e = optim_cuda::lion_step(
        cs,
        &LionParams {
            beta1: 2.0,
            ..LionParams::default()
        },
        &[good],
        &build,
    )
    .unwrap_err();
    assert!(e.to_string().contains("beta1"), "{e}");
    // Nothing was touched.
    s.synchronize().unwrap();
    let (p, m, _) = t.download();
    assert_eq!(p, t.host_p);
    assert!(m.iter().all(|&x| x == 0.0));
    // An empty step is fine.
    optim_cuda::adam_step(cs, &AdamParams::default(), &[], &build).unwrap();
    optim_cuda::lamb_step(cs, &LambParams::default(), &[], &build).unwrap();
}
