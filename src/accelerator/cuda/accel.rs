//! [`CudaAccelerator`]: DeepSpeed's accelerator surface on NVIDIA GPUs, over the CUDA driver
//! API (cudarc's `sys` bindings, loaded at run time).
//!
//! * One retained primary context per device — the one PyTorch and the CUDA runtime use —
//!   made current before each call, so any host thread may use any device.
//! * Device memory comes from one stream-ordered memory pool per device (created by us, so
//!   its statistics are ours only): allocations and frees are ordered on the calling
//!   thread's current stream; freed memory stays reserved in the pool until
//!   [`Accelerator::empty_cache`] (PyTorch's caching behaviour).
//! * Pinned host memory is `cuMemHostAlloc(PORTABLE)`: not write-combined, so the CPU reads
//!   it at full speed (optimizer offload reads it).
//! * Copies that touch host memory return when the copy is done; device-to-device copies,
//!   fills and random fills are ordered on the stream and return at once.
//! * Random numbers: the `philox_random` op's kernels (NVRTC), driven from the same
//!   per-device [`rng::State`] as the CPU, so bits match the CPU accelerator.

use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::ptr;
use std::sync::{Arc, OnceLock};

use cudarc::driver::sys::{self, CUdevice_attribute as Attr};
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::driver::{self, Raw, attribute, check};
use super::nvtx;
use super::stream::{CudaEvent, CudaGraph, CudaStream, Ownership, bind, downcast};
use crate::accelerator::counters::{Counters, Ranges};
use crate::accelerator::cpu::memory;
use crate::accelerator::rng::{self, Distribution};
use crate::accelerator::thread;
use crate::accelerator::{
    Accelerator, Allocation, DTypeSupport, DeviceProperties, Event, Graph, MemoryKind, MemoryStats,
    Stream, check_fill, fill_host, pattern_bytes,
};
use crate::dlpack::{TensorRef, kDLCPU, kDLCUDA, kDLCUDAHost};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::{dsrs_debug, dsrs_info, dsrs_warn};

/// The oldest driver supported: CUDA 12.0 (R525). The bindings are CUDA 12.8's (cudarc
/// feature `cuda-12080`), but only functions present since 12.0 are called.
pub const MIN_DRIVER_VERSION: i32 = 12000;

/// Device memory allocations are aligned to this many bytes.
const DEVICE_ALIGNMENT: usize = 256;

/// Options of the CUDA accelerator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CudaOptions {
    /// Initial RNG seed of every device (default [`rng::DEFAULT_SEED`]).
    pub seed: Option<u64>,
    /// Bytes each device's pool keeps reserved after frees (default: all of them, until
    /// `empty_cache`).
    pub release_threshold: Option<u64>,
}

impl CudaOptions {
    /// Reads options from a JSON value (`null` or an object); errors name the option.
    pub fn from_json(v: &Value) -> Result<CudaOptions> {
        let mut o = CudaOptions::default();
        let map = match v {
            Value::Null => return Ok(o),
            Value::Object(m) => m,
            other => {
                return Err(Error::config(format!(
                    "cuda accelerator options must be a JSON object, got {other}"
                )));
            }
        };
        for (k, v) in map {
            let n = v.as_u64().ok_or_else(|| {
                Error::config(format!(
                    "options.{k} must be a non-negative integer, got {v}"
                ))
            });
            match k.as_str() {
                "seed" => o.seed = Some(n?),
                "release_threshold" => o.release_threshold = Some(n?),
                _ => {
                    return Err(Error::config(format!(
                        "unknown option {k:?} for the cuda accelerator; valid options: seed, release_threshold"
                    )));
                }
            }
        }
        Ok(o)
    }
}

#[derive(Debug)]
struct Device {
    props: DeviceProperties,
    ctx: Raw<sys::CUcontext>,
    pool: Raw<sys::CUmemoryPool>,
    counters: Counters,
    rng: Mutex<rng::State>,
    default_stream: Arc<CudaStream>,
}

/// A live device allocation: the stream its free is ordered on.
#[derive(Debug)]
struct DeviceAlloc {
    stream: Arc<dyn Stream>,
}

/// The CUDA accelerator.
#[derive(Debug)]
pub struct CudaAccelerator {
    id: u64,
    driver_version: i32,
    devices: Vec<Device>,
    live: Mutex<HashMap<usize, DeviceAlloc>>,
    pinned: Ranges,
    philox: OnceLock<std::result::Result<Arc<crate::ops::LoadedOp>, String>>,
}

fn device_props(index: usize, dev: sys::CUdevice) -> Result<DeviceProperties> {
    let mut name = [0 as c_char; 256];
    check(
        || format!("cuDeviceGetName({index})"),
        // SAFETY: the buffer holds 256 bytes.
        || unsafe { sys::cuDeviceGetName(name.as_mut_ptr(), 256, dev) },
    )?;
    // SAFETY: the driver NUL-terminates within the buffer.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let mut uuid = sys::CUuuid { bytes: [0; 16] };
    check(
        || format!("cuDeviceGetUuid({index})"),
        // SAFETY: uuid is a valid out-pointer.
        || unsafe { sys::cuDeviceGetUuid_v2(&mut uuid, dev) },
    )?;
    let b: Vec<u8> = uuid.bytes.iter().map(|&c| c as u8).collect();
    let hex =
        |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    let uuid = format!(
        "GPU-{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    );
    let mut total = 0usize;
    check(
        || format!("cuDeviceTotalMem({index})"),
        // SAFETY: total is a valid out-pointer.
        || unsafe { sys::cuDeviceTotalMem_v2(&mut total, dev) },
    )?;
    let cc = (
        attribute(dev, Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)? as u32,
        attribute(dev, Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)? as u32,
    );
    let pci = format!(
        "{:04x}:{:02x}:{:02x}.0",
        attribute(dev, Attr::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID)?,
        attribute(dev, Attr::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID)?,
        attribute(dev, Attr::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID)?
    );
    Ok(DeviceProperties {
        index,
        name,
        uuid: Some(uuid),
        compute_capability: Some(cc),
        multiprocessors: Some(
            attribute(dev, Attr::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32,
        ),
        total_memory: total as u64,
        pci_bus_id: Some(pci),
    })
}

fn open_device(accel_id: u64, index: usize, options: &CudaOptions) -> Result<Device> {
    let mut dev = 0;
    check(
        || format!("cuDeviceGet({index})"),
        // SAFETY: dev is a valid out-pointer.
        || unsafe { sys::cuDeviceGet(&mut dev, index as i32) },
    )?;
    let props = device_props(index, dev)?;
    if attribute(dev, Attr::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED)? == 0 {
        return Err(Error::Unsupported(format!(
            "CUDA device {index} ({}) does not support stream-ordered allocation (memory pools), which the cuda accelerator needs",
            props.name
        )));
    }
    let mut ctx = ptr::null_mut();
    // The retain is never released: the primary context lives as long as the process, as
    // in the CUDA runtime (streams in thread-locals may outlive this accelerator).
    check(
        || format!("retaining the primary context of CUDA device {index}"),
        // SAFETY: ctx is a valid out-pointer.
        || unsafe { sys::cuDevicePrimaryCtxRetain(&mut ctx, dev) },
    )?;
    let ctx = Raw(ctx);
    bind(ctx)?;
    // SAFETY: all-zero is a valid value of this plain C struct; the fields that matter are
    // set below.
    let mut props_c: sys::CUmemPoolProps = unsafe { std::mem::zeroed() };
    props_c.allocType = sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
    props_c.handleTypes = sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_NONE;
    props_c.location.type_ = sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
    props_c.location.id = index as i32;
    let mut pool = ptr::null_mut();
    check(
        || format!("creating the memory pool of CUDA device {index}"),
        // SAFETY: the properties are initialised; pool is a valid out-pointer.
        || unsafe { sys::cuMemPoolCreate(&mut pool, &props_c) },
    )?;
    let mut threshold: u64 = options.release_threshold.unwrap_or(u64::MAX);
    check(
        || "setting the pool's release threshold".into(),
        // SAFETY: the attribute takes a cuuint64_t.
        || unsafe {
            sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut threshold as *mut u64 as *mut c_void,
            )
        },
    )?;
    Ok(Device {
        props,
        ctx,
        pool: Raw(pool),
        counters: Counters::default(),
        rng: Mutex::new(rng::State::new(options.seed.unwrap_or(rng::DEFAULT_SEED))),
        default_stream: Arc::new(CudaStream {
            accelerator_id: accel_id,
            device: index,
            ctx,
            handle: Raw(ptr::null_mut()),
            ownership: Ownership::Default,
        }),
    })
}

impl CudaAccelerator {
    /// Opens every CUDA device. Fails with `cuda unavailable: <reason>` when the driver is
    /// missing, too old or has no device.
    pub fn new(options: CudaOptions) -> Result<CudaAccelerator> {
        let probe = super::probe();
        if let Some(reason) = &probe.reason {
            return Err(Error::unavailable("cuda", reason.clone()));
        }
        check(
            || "cuInit".into(),
            // SAFETY: cuInit has no preconditions.
            || unsafe { sys::cuInit(0) },
        )?;
        let driver_version = driver::driver_version()?;
        let id = crate::accelerator::next_accelerator_id();
        let devices = (0..probe.device_count)
            .map(|d| open_device(id, d, &options))
            .collect::<Result<Vec<_>>>()?;
        dsrs_debug!(
            "accelerator",
            "cuda accelerator #{id}: {} device(s), driver {}",
            devices.len(),
            driver_version
        );
        Ok(CudaAccelerator {
            id,
            driver_version,
            devices,
            live: Mutex::new(HashMap::new()),
            pinned: Ranges::default(),
            philox: OnceLock::new(),
        })
    }

    fn dev(&self, device: Option<usize>) -> Result<&Device> {
        Ok(&self.devices[self.resolve_device(device)?])
    }

    /// Runs `f` on `stream`, or on the calling thread's current stream for `None`.
    fn with_stream<R>(
        &self,
        stream: Option<&dyn Stream>,
        f: impl FnOnce(&CudaStream) -> Result<R>,
    ) -> Result<R> {
        match stream {
            Some(s) => f(downcast(s, self.id)?),
            None => {
                let current = self.current_stream()?;
                f(downcast(current.as_ref(), self.id)?)
            }
        }
    }

    fn philox(&self) -> Result<Arc<crate::ops::LoadedOp>> {
        self.philox
            .get_or_init(|| {
                crate::ops::load("philox_random", &crate::ops::BuildOptions::default())
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|e| {
                Error::Unsupported(format!(
                    "random fills on CUDA need the philox_random op, which could not be built: {e}"
                ))
            })
    }

    fn launch_philox(
        &self,
        device: usize,
        stream: &CudaStream,
        tensor: &TensorRef,
        dist: Distribution,
        offset: u64,
        seed: u64,
    ) -> Result<()> {
        let (kernel, a, b) = match (dist, tensor.dtype) {
            (Distribution::Bits, DType::U32 | DType::I32) => ("dsrs_philox_bits_u32", None, None),
            (Distribution::Bits, _) => ("dsrs_philox_bits_u64", None, None),
            (Distribution::Uniform { low, high }, t) => (
                match t {
                    DType::F32 => "dsrs_philox_uniform_f32",
                    DType::F64 => "dsrs_philox_uniform_f64",
                    DType::F16 => "dsrs_philox_uniform_f16",
                    _ => "dsrs_philox_uniform_bf16",
                },
                Some(low),
                Some(high),
            ),
            (Distribution::Normal { mean, std }, t) => (
                match t {
                    DType::F32 => "dsrs_philox_normal_f32",
                    DType::F64 => "dsrs_philox_normal_f64",
                    DType::F16 => "dsrs_philox_normal_f16",
                    _ => "dsrs_philox_normal_bf16",
                },
                Some(mean),
                Some(std),
            ),
        };
        let op = self.philox()?;
        let f = op.symbol(kernel, device)? as sys::CUfunction;
        let mut out = tensor.ptr as u64;
        let mut n = tensor.numel as u64;
        let mut seed = seed;
        let mut offset = offset;
        let (mut a, mut b) = (a.unwrap_or(0.0), b.unwrap_or(0.0));
        let mut params: Vec<*mut c_void> = vec![
            &mut out as *mut u64 as *mut c_void,
            &mut n as *mut u64 as *mut c_void,
            &mut seed as *mut u64 as *mut c_void,
            &mut offset as *mut u64 as *mut c_void,
        ];
        if !matches!(dist, Distribution::Bits) {
            params.push(&mut a as *mut f64 as *mut c_void);
            params.push(&mut b as *mut f64 as *mut c_void);
        }
        let threads = 256u64;
        let items = tensor.numel as u64 / 2 + 1;
        let sms = u64::from(self.devices[device].props.multiprocessors.unwrap_or(1));
        let grid = items.div_ceil(threads).clamp(1, sms * 8) as u32;
        bind(stream.ctx)?;
        check(
            || format!("launching {kernel} on CUDA device {device}"),
            // SAFETY: f is a kernel of the philox op whose parameters are exactly `params`
            // (pointer, n, seed, offset[, a, b]); the tensor range is the caller's contract.
            || unsafe {
                sys::cuLaunchKernel(
                    f,
                    grid,
                    1,
                    1,
                    threads as u32,
                    1,
                    1,
                    0,
                    stream.handle.0,
                    params.as_mut_ptr(),
                    ptr::null_mut(),
                )
            },
        )
    }

    /// Refuses work that waits for the host on a stream that is capturing a graph.
    fn refuse_while_capturing(s: &CudaStream, what: &str) -> Result<()> {
        if s.is_capturing()? {
            return Err(Error::InvalidState(format!(
                "{what} cannot be captured into a graph (it waits for the host); capture device-side work only"
            )));
        }
        Ok(())
    }
}

impl Drop for CudaAccelerator {
    fn drop(&mut self) {
        for d in &self.devices {
            if bind(d.ctx).is_ok() {
                // SAFETY: every allocation from the pool was freed (buffers hold the
                // accelerator); synchronising first lets pending frees finish.
                let _ = check(String::new, || unsafe { sys::cuCtxSynchronize() });
                let _ = check(String::new, || unsafe { sys::cuMemPoolDestroy(d.pool.0) });
            }
        }
    }
}

fn pool_attr(pool: Raw<sys::CUmemoryPool>, attr: sys::CUmemPool_attribute) -> Result<u64> {
    let mut v: u64 = 0;
    check(
        || format!("cuMemPoolGetAttribute({attr:?})"),
        // SAFETY: these attributes are cuuint64_t.
        || unsafe { sys::cuMemPoolGetAttribute(pool.0, attr, &mut v as *mut u64 as *mut c_void) },
    )?;
    Ok(v)
}

impl Accelerator for CudaAccelerator {
    fn id(&self) -> u64 {
        self.id
    }
    fn name(&self) -> &str {
        "cuda"
    }
    fn dlpack_device_type(&self) -> i32 {
        kDLCUDA
    }
    fn is_host(&self) -> bool {
        false
    }
    fn is_available(&self) -> bool {
        true
    }
    fn communication_backend_name(&self) -> &str {
        "nccl"
    }
    fn is_synchronized_device(&self) -> bool {
        false
    }

    fn device_count(&self) -> usize {
        self.devices.len()
    }
    fn device_name(&self, device: Option<usize>) -> Result<String> {
        Ok(self.dev(device)?.props.name.clone())
    }
    fn device_properties(&self, device: Option<usize>) -> Result<DeviceProperties> {
        Ok(self.dev(device)?.props.clone())
    }
    fn set_device(&self, device: usize) -> Result<()> {
        let d = self.dev(Some(device))?;
        bind(d.ctx)?;
        thread::set_device(self.id, device);
        Ok(())
    }
    fn synchronize(&self, device: Option<usize>) -> Result<()> {
        let d = self.dev(device)?;
        bind(d.ctx)?;
        check(
            || format!("synchronizing CUDA device {}", d.props.index),
            // SAFETY: a context is current.
            || unsafe { sys::cuCtxSynchronize() },
        )
    }

    fn total_memory(&self, device: Option<usize>) -> Result<u64> {
        Ok(self.dev(device)?.props.total_memory)
    }
    fn available_memory(&self, device: Option<usize>) -> Result<u64> {
        let d = self.dev(device)?;
        bind(d.ctx)?;
        let (mut free, mut total) = (0usize, 0usize);
        check(
            || format!("cuMemGetInfo on CUDA device {}", d.props.index),
            // SAFETY: valid out-pointers; the device's context is current.
            || unsafe { sys::cuMemGetInfo_v2(&mut free, &mut total) },
        )?;
        Ok(free as u64)
    }
    fn memory_stats(&self, device: Option<usize>) -> Result<MemoryStats> {
        let d = self.dev(device)?;
        use sys::CUmemPool_attribute as P;
        let mut s = d.counters.stats(None);
        s.allocated_bytes = pool_attr(d.pool, P::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?;
        s.peak_allocated_bytes = pool_attr(d.pool, P::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?;
        s.reserved_bytes = pool_attr(d.pool, P::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)?;
        s.peak_reserved_bytes = pool_attr(d.pool, P::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH)?;
        Ok(s)
    }
    fn reset_peak_memory_stats(&self, device: Option<usize>) -> Result<()> {
        let d = self.dev(device)?;
        d.counters.reset_peaks();
        use sys::CUmemPool_attribute as P;
        for attr in [
            P::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
            P::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH,
        ] {
            let mut zero: u64 = 0;
            check(
                || format!("resetting {attr:?}"),
                // SAFETY: the high-water attributes take a cuuint64_t 0 (reset to current).
                || unsafe {
                    sys::cuMemPoolSetAttribute(d.pool.0, attr, &mut zero as *mut u64 as *mut c_void)
                },
            )?;
        }
        Ok(())
    }
    fn empty_cache(&self) -> Result<()> {
        for d in &self.devices {
            bind(d.ctx)?;
            // Pending frees must complete before their memory can be released.
            check(String::new, || unsafe { sys::cuCtxSynchronize() })?;
            check(
                || format!("trimming the memory pool of CUDA device {}", d.props.index),
                // SAFETY: the pool is live.
                || unsafe { sys::cuMemPoolTrimTo(d.pool.0, 0) },
            )?;
        }
        Ok(())
    }

    fn dtype_support(&self, dtype: DType) -> DTypeSupport {
        let cc = self
            .devices
            .iter()
            .filter_map(|d| d.props.compute_capability)
            .min()
            .unwrap_or((0, 0));
        let native = match dtype {
            DType::BF16 => cc >= (8, 0),
            DType::F16 => cc >= (5, 3),
            _ => true,
        };
        DTypeSupport {
            supported: true,
            native,
        }
    }

    fn manual_seed(&self, seed: u64) -> Result<()> {
        *self.dev(None)?.rng.lock() = rng::State::new(seed);
        Ok(())
    }
    fn initial_seed(&self) -> u64 {
        self.dev(None)
            .map(|d| d.rng.lock().seed)
            .unwrap_or(rng::DEFAULT_SEED)
    }
    fn rng_state(&self) -> Result<Vec<u8>> {
        Ok(self.dev(None)?.rng.lock().to_bytes())
    }
    fn set_rng_state(&self, state: &[u8]) -> Result<()> {
        let s = rng::State::from_bytes(state)?;
        *self.dev(None)?.rng.lock() = s;
        Ok(())
    }
    unsafe fn rng_fill(
        &self,
        tensor: &TensorRef,
        dist: Distribution,
        stream: Option<&dyn Stream>,
    ) -> Result<()> {
        if !tensor.contiguous {
            return Err(Error::invalid(
                "the tensor is not contiguous (strides must be NULL or compact row-major)",
            ));
        }
        self.with_stream(stream, |s| match tensor.device.device_type {
            kDLCUDA => {
                let device = usize::try_from(tensor.device.device_id)
                    .ok()
                    .filter(|&d| d < self.devices.len())
                    .ok_or_else(|| {
                        Error::range(format!(
                            "the tensor is on CUDA device {}, which this accelerator does not have",
                            tensor.device.device_id
                        ))
                    })?;
                if tensor.numel == 0 {
                    return dist.validate(tensor.dtype);
                }
                let d = &self.devices[device];
                let mut state = d.rng.lock();
                let before = *state;
                let offset = state.take(dist, tensor.dtype, tensor.numel)?;
                let r = self.launch_philox(device, s, tensor, dist, offset, before.seed);
                if r.is_err() {
                    *state = before;
                }
                r
            }
            kDLCPU | kDLCUDAHost => {
                // Host memory: the same generator, on the CPU, after the stream's work.
                Self::refuse_while_capturing(s, "a random fill of host memory")?;
                s.synchronize()?;
                let mut state = self.dev(None)?.rng.lock();
                // SAFETY: the caller guarantees tensor.nbytes writable bytes at tensor.ptr.
                unsafe {
                    rng::fill(
                        &mut state,
                        dist,
                        tensor.dtype,
                        tensor.ptr as *mut u8,
                        tensor.numel,
                    )
                }
            }
            other => Err(Error::invalid(format!(
                "the cuda accelerator cannot fill a tensor on DLPack device type {other}"
            ))),
        })
    }

    fn default_stream(&self) -> Result<Arc<dyn Stream>> {
        Ok(self.dev(None)?.default_stream.clone())
    }
    fn new_stream(&self) -> Result<Arc<dyn Stream>> {
        let d = self.dev(None)?;
        Ok(Arc::new(CudaStream::create(self.id, d.props.index, d.ctx)?))
    }
    fn set_current_stream(&self, stream: Arc<dyn Stream>) -> Result<()> {
        let s = downcast(stream.as_ref(), self.id)?;
        bind(s.ctx)?;
        thread::set_stream(self.id, stream);
        Ok(())
    }
    fn new_event(&self, timing: bool) -> Result<Arc<dyn Event>> {
        Ok(Arc::new(CudaEvent::create(
            self.id,
            self.dev(None)?.ctx,
            timing,
        )?))
    }
    unsafe fn wrap_stream(&self, native: *mut c_void) -> Result<Arc<dyn Stream>> {
        let d = self.dev(None)?;
        if native.is_null() {
            return Ok(d.default_stream.clone());
        }
        Ok(Arc::new(CudaStream {
            accelerator_id: self.id,
            device: d.props.index,
            ctx: d.ctx,
            handle: Raw(native as sys::CUstream),
            ownership: Ownership::Borrowed,
        }))
    }

    fn supports_graphs(&self) -> bool {
        true
    }
    fn begin_capture(&self, stream: &dyn Stream) -> Result<()> {
        let s = downcast(stream, self.id)?;
        if s.ownership == Ownership::Default {
            return Err(Error::invalid(
                "graphs cannot be captured on the default (legacy) stream; capture on a stream from dsrs_stream_new",
            ));
        }
        bind(s.ctx)?;
        check(
            || "beginning a graph capture (cuStreamBeginCapture)".into(),
            // SAFETY: the stream is live.
            || unsafe {
                sys::cuStreamBeginCapture_v2(
                    s.handle.0,
                    sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
                )
            },
        )
    }
    fn end_capture(&self, stream: Arc<dyn Stream>) -> Result<Arc<dyn Graph>> {
        Ok(Arc::new(CudaGraph::end_capture(stream, self.id)?))
    }

    fn range_push(&self, name: &str) -> Result<()> {
        thread::push_range(self.id, name);
        if let Ok(n) = nvtx::get() {
            n.push(name);
        }
        Ok(())
    }
    fn range_pop(&self) -> Result<()> {
        let (name, ms) = thread::pop_range(self.id)?;
        if let Ok(n) = nvtx::get() {
            n.pop();
        }
        dsrs_info!("range", "{name:?} took {ms:.3} ms (host time)");
        Ok(())
    }

    fn allocate(&self, size: usize, align: usize, kind: MemoryKind) -> Result<Allocation> {
        let device = self.current_device();
        let d = self.dev(Some(device))?;
        let ptr = match kind {
            MemoryKind::Device => {
                if align > DEVICE_ALIGNMENT {
                    return Err(Error::Unsupported(format!(
                        "CUDA device memory is aligned to {DEVICE_ALIGNMENT} bytes; alignment {align} is not available"
                    )));
                }
                if size == 0 {
                    0
                } else {
                    let stream = self.current_stream()?;
                    let s = downcast(stream.as_ref(), self.id)?;
                    if s.is_capturing()? {
                        return Err(Error::InvalidState(
                            "allocate buffers before beginning a graph capture on the current stream".into(),
                        ));
                    }
                    bind(d.ctx)?;
                    let mut p: sys::CUdeviceptr = 0;
                    let r = check(
                        || format!("allocating {size} bytes on CUDA device {device}"),
                        // SAFETY: the pool and stream are live; p is a valid out-pointer.
                        || unsafe {
                            sys::cuMemAllocFromPoolAsync(&mut p, size, d.pool.0, s.handle.0)
                        },
                    );
                    if let Err(e) = r {
                        d.counters.note_oom();
                        return Err(e);
                    }
                    // Buffers are zeroed, as on every accelerator.
                    check(
                        || "zeroing a new allocation".into(),
                        // SAFETY: p..p+size was just allocated in stream order.
                        || unsafe { sys::cuMemsetD8Async(p, 0, size, s.handle.0) },
                    )?;
                    self.live.lock().insert(p as usize, DeviceAlloc { stream });
                    p as usize
                }
            }
            MemoryKind::Pinned => {
                let page = crate::accelerator::cpu::sysinfo::page_size();
                if align > page {
                    return Err(Error::Unsupported(format!(
                        "pinned memory is page-aligned ({page} bytes); alignment {align} is not available"
                    )));
                }
                if size == 0 {
                    0
                } else {
                    bind(d.ctx)?;
                    let mut p: *mut c_void = ptr::null_mut();
                    let r = check(
                        || format!("allocating {size} bytes of pinned host memory"),
                        // SAFETY: p is a valid out-pointer. PORTABLE, not WRITECOMBINED: the
                        // CPU reads this memory.
                        || unsafe {
                            sys::cuMemHostAlloc(&mut p, size, sys::CU_MEMHOSTALLOC_PORTABLE)
                        },
                    );
                    if let Err(e) = r {
                        d.counters.note_oom();
                        return Err(e);
                    }
                    // SAFETY: p addresses size writable host bytes.
                    unsafe { ptr::write_bytes(p as *mut u8, 0, size) };
                    self.pinned.insert(p as usize, size);
                    d.counters.add_pinned(size as u64);
                    p as usize
                }
            }
            MemoryKind::Host => {
                memory::alloc_host(size, align).inspect_err(|_| d.counters.note_oom())?
            }
        };
        d.counters.reserve(size as u64, None, "cuda")?;
        Ok(Allocation {
            ptr,
            size,
            align,
            kind,
            device,
        })
    }
    unsafe fn deallocate(&self, a: &Allocation) {
        let Some(d) = self.devices.get(a.device) else {
            return;
        };
        d.counters.release(a.size as u64);
        match a.kind {
            MemoryKind::Device if a.ptr != 0 => {
                let rec = self.live.lock().remove(&a.ptr);
                let handle = rec
                    .as_ref()
                    .and_then(|r| r.stream.as_any().downcast_ref::<CudaStream>())
                    .map_or(ptr::null_mut(), |s| s.handle.0);
                let r = bind(d.ctx).and_then(|_| {
                    check(
                        || format!("freeing device memory at {:#x}", a.ptr),
                        // SAFETY: the allocation came from cuMemAllocFromPoolAsync and is freed
                        // once, ordered on the stream it was allocated on.
                        || unsafe { sys::cuMemFreeAsync(a.ptr as sys::CUdeviceptr, handle) },
                    )
                });
                if let Err(e) = r {
                    dsrs_warn!("accelerator", "{e}");
                }
            }
            MemoryKind::Pinned if a.ptr != 0 => {
                self.pinned.remove(a.ptr);
                d.counters.sub_pinned(a.size as u64);
                let r = bind(d.ctx).and_then(|_| {
                    check(
                        || "freeing pinned host memory".into(),
                        // SAFETY: the memory came from cuMemHostAlloc and is freed once.
                        || unsafe { sys::cuMemFreeHost(a.ptr as *mut c_void) },
                    )
                });
                if let Err(e) = r {
                    dsrs_warn!("accelerator", "{e}");
                }
            }
            // SAFETY: allocated by alloc_host with these figures.
            MemoryKind::Host => unsafe { memory::free_host(a.ptr, a.size, a.align) },
            _ => {}
        }
    }
    fn is_pinned(&self, ptr: usize) -> bool {
        if self.pinned.contains(ptr) {
            return true;
        }
        // Memory pinned by someone else (the host's cudaHostAlloc, cudaHostRegister).
        let Ok(d) = self.dev(None) else {
            return false;
        };
        let mut flags = 0u32;
        bind(d.ctx).is_ok()
            && check(String::new, || unsafe {
                // SAFETY: the driver only looks the address up.
                sys::cuMemHostGetFlags(&mut flags, ptr as *mut c_void)
            })
            .is_ok()
    }
    unsafe fn copy(
        &self,
        dst: usize,
        dst_on_device: bool,
        src: usize,
        src_on_device: bool,
        n: usize,
        stream: Option<&dyn Stream>,
    ) -> Result<()> {
        self.with_stream(stream, |s| {
            let touches_host = !dst_on_device || !src_on_device;
            if touches_host {
                Self::refuse_while_capturing(s, "a copy to or from host memory")?;
            }
            bind(s.ctx)?;
            check(
                || {
                    format!(
                        "copying {n} bytes {} to {} on CUDA device {}",
                        if src_on_device {
                            "from device"
                        } else {
                            "from host"
                        },
                        if dst_on_device { "device" } else { "host" },
                        s.device
                    )
                },
                // SAFETY: the caller guarantees both ranges; unified addressing tells the driver
                // which side is which.
                || unsafe {
                    sys::cuMemcpyAsync(
                        dst as sys::CUdeviceptr,
                        src as sys::CUdeviceptr,
                        n,
                        s.handle.0,
                    )
                },
            )?;
            if touches_host {
                // Host memory may be gone (or read) as soon as we return.
                s.synchronize()?;
            }
            Ok(())
        })
    }
    unsafe fn fill(
        &self,
        dst: usize,
        dst_on_device: bool,
        n: usize,
        pattern: &[u8],
        stream: Option<&dyn Stream>,
    ) -> Result<()> {
        check_fill(n, pattern)?;
        let p = pattern.len();
        self.with_stream(stream, |s| {
            if !dst_on_device {
                Self::refuse_while_capturing(s, "a fill of host memory")?;
                s.synchronize()?;
                // SAFETY: the caller guarantees the host range.
                return unsafe { fill_host(dst, n, pattern) };
            }
            bind(s.ctx)?;
            let h = s.handle.0;
            let d = dst as sys::CUdeviceptr;
            let word =
                |k: usize| u32::from_le_bytes(pattern[k..k + 4].try_into().expect("4 bytes"));
            let what = || format!("filling {n} bytes on CUDA device {}", s.device);
            // SAFETY (all arms): the caller guarantees dst..dst+n is device memory of ours.
            match p {
                1 => check(what, || unsafe {
                    sys::cuMemsetD8Async(d, pattern[0], n, h)
                }),
                2 if dst % 2 == 0 => check(what, || unsafe {
                    sys::cuMemsetD16Async(d, u16::from_le_bytes([pattern[0], pattern[1]]), n / 2, h)
                }),
                4 if dst % 4 == 0 => check(what, || unsafe {
                    sys::cuMemsetD32Async(d, word(0), n / 4, h)
                }),
                8 if dst % 4 == 0 => {
                    // Two strided 32-bit fills: the low words at 0, 8, 16..., the high at 4, 12...
                    check(what, || unsafe {
                        sys::cuMemsetD2D32Async(d, 8, word(0), 1, n / 8, h)
                    })?;
                    check(what, || unsafe {
                        sys::cuMemsetD2D32Async(d + 4, 8, word(4), 1, n / 8, h)
                    })
                }
                _ => {
                    // Misaligned for the pattern width: stage the bytes on the host.
                    Self::refuse_while_capturing(s, "a misaligned multi-byte fill")?;
                    let staged = pattern_bytes(n, pattern);
                    // SAFETY: staged holds n bytes; the device range is the caller's.
                    unsafe { self.copy(dst, true, staged.as_ptr() as usize, false, n, Some(s)) }
                }
            }
        })
    }

    fn extra_info(&self) -> Value {
        json!({
            "driver_version": format!("{}.{}", self.driver_version / 1000, self.driver_version % 1000 / 10),
            "oldest_supported_driver": "12.0",
            "cudarc_bindings": "cuda-12080",
            "nvtx": match nvtx::get() {
                Ok(n) => json!({"loaded": true, "path": n.path}),
                Err(e) => json!({"loaded": false, "reason": e}),
            },
            "memory": "stream-ordered pools (cuMemAllocFromPoolAsync), one per device",
            "pinned_memory": "cuMemHostAlloc(PORTABLE), not write-combined",
        })
    }
}
