//! Accelerators: DeepSpeed's accelerator surface as a Rust trait, and its implementations.
//!
//! * [`Accelerator`] — what every device backend provides: devices, memory and its
//!   statistics, dtype support, a counter-based RNG, streams and events, profiling ranges,
//!   pinned memory and raw memory operations.
//! * [`factory`] — detection and selection of the process-wide accelerator
//!   (`DSRS_ACCELERATOR` override, then registered plugins, CUDA, CPU).
//! * [`cpu`] — the CPU accelerator. [`cuda`] — CUDA detection through cudarc.
//! * [`Buffer`] — memory owned by an accelerator, with bounds-checked copies and fills.
//! * [`rng`] — Philox4x32-10, the generator all accelerators share bit for bit.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::{Value, json};

use crate::dlpack::{DLDevice, TensorRef};
use crate::dtype::DType;
use crate::error::{Error, Result};

mod buffer;
pub mod counters;
pub mod cpu;
pub mod cuda;
pub mod factory;
pub mod plugin;
pub mod rng;
mod stream;
mod thread;

pub use buffer::{Buffer, DEFAULT_ALIGNMENT, MAX_ALIGNMENT};
pub use factory::{
    AcceleratorProvider, Candidate, Probe, Selection, SelectionMethod, create, current, names,
    probe_all, register_provider, selection, set_current,
};
pub use rng::Distribution;
pub use stream::{HostEvent, HostStream};

/// Where an allocation lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryKind {
    /// The accelerator's own memory (host memory for the CPU accelerator).
    Device,
    /// Ordinary pageable host memory, allocated and tracked by the accelerator.
    Host,
    /// Page-locked host memory (`mlock` on the CPU; `cuMemHostAlloc` on CUDA).
    Pinned,
}

impl MemoryKind {
    /// Whether the host CPU can read and write the memory directly.
    pub fn host_accessible(self, accelerator_is_host: bool) -> bool {
        match self {
            MemoryKind::Host | MemoryKind::Pinned => true,
            MemoryKind::Device => accelerator_is_host,
        }
    }
}

/// One allocation made by an accelerator. Returned by [`Accelerator::allocate`] and given
/// back to [`Accelerator::deallocate`]; [`Buffer`] does both for you.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// Address (host or device). 0 for an empty allocation.
    pub ptr: usize,
    /// Size in bytes as requested.
    pub size: usize,
    /// Alignment in bytes.
    pub align: usize,
    /// Kind of memory.
    pub kind: MemoryKind,
    /// Device index the allocation belongs to.
    pub device: usize,
}

/// Support for one element type on an accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DTypeSupport {
    /// Buffers and kernels accept the type.
    pub supported: bool,
    /// The hardware computes in (or converts to and from) the type natively, so training in
    /// it is efficient.
    pub native: bool,
}

/// Memory statistics of one device, over the allocations the library itself made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemoryStats {
    /// Bytes currently allocated.
    pub allocated_bytes: u64,
    /// Highest `allocated_bytes` since creation or the last peak reset.
    pub peak_allocated_bytes: u64,
    /// Bytes reserved from the system (≥ allocated when an allocator caches).
    pub reserved_bytes: u64,
    /// Highest `reserved_bytes` since creation or the last peak reset.
    pub peak_reserved_bytes: u64,
    /// Live allocations.
    pub allocations: u64,
    /// Highest `allocations` since creation or the last peak reset.
    pub peak_allocations: u64,
    /// Allocations made since creation.
    pub allocations_total: u64,
    /// Allocations freed since creation.
    pub frees_total: u64,
    /// Bytes allocated since creation.
    pub allocated_bytes_total: u64,
    /// Bytes freed since creation.
    pub freed_bytes_total: u64,
    /// Bytes of page-locked host memory currently allocated.
    pub pinned_bytes: u64,
    /// Highest `pinned_bytes` since creation or the last peak reset.
    pub peak_pinned_bytes: u64,
    /// Allocations refused for lack of memory.
    pub num_ooms: u64,
    /// The configured memory limit, if any.
    pub limit_bytes: Option<u64>,
}

impl MemoryStats {
    /// The statistics as a JSON object, with PyTorch's `memory_stats()` key names where one
    /// exists (`allocated_bytes.all.current`, ...), plus the device's total and available
    /// memory.
    pub fn to_json(&self, device: usize, total: u64, available: u64) -> Value {
        json!({
            "device": device,
            "allocated_bytes.all.current": self.allocated_bytes,
            "allocated_bytes.all.peak": self.peak_allocated_bytes,
            "allocated_bytes.all.allocated": self.allocated_bytes_total,
            "allocated_bytes.all.freed": self.freed_bytes_total,
            "reserved_bytes.all.current": self.reserved_bytes,
            "reserved_bytes.all.peak": self.peak_reserved_bytes,
            "allocation.all.current": self.allocations,
            "allocation.all.peak": self.peak_allocations,
            "allocation.all.allocated": self.allocations_total,
            "allocation.all.freed": self.frees_total,
            "pinned_bytes.all.current": self.pinned_bytes,
            "pinned_bytes.all.peak": self.peak_pinned_bytes,
            "num_ooms": self.num_ooms,
            "limit_bytes": self.limit_bytes,
            "total_bytes": total,
            "available_bytes": available,
        })
    }
}

/// A queue of work on one device. On host accelerators work runs synchronously when it is
/// submitted, so a stream is always idle; on CUDA it wraps a `CUstream`.
pub trait Stream: Send + Sync + fmt::Debug {
    /// The [`Accelerator::id`] of the accelerator that made the stream.
    fn accelerator_id(&self) -> u64;
    /// The device the stream belongs to.
    fn device(&self) -> usize;
    /// Whether this is the device's default stream.
    fn is_default(&self) -> bool;
    /// Blocks until all work submitted to the stream has finished.
    fn synchronize(&self) -> Result<()>;
    /// Whether all submitted work has finished.
    fn query(&self) -> Result<bool>;
    /// Makes future work on this stream wait for `event`.
    fn wait_event(&self, event: &dyn Event) -> Result<()>;
    /// The native handle (`cudaStream_t`) or NULL on host accelerators.
    fn native_handle(&self) -> *mut std::ffi::c_void {
        std::ptr::null_mut()
    }
    /// For downcasting by the owning backend.
    fn as_any(&self) -> &dyn Any;
}

/// A marker in a stream; records when the work before it finished.
pub trait Event: Send + Sync + fmt::Debug {
    /// The [`Accelerator::id`] of the accelerator that made the event.
    fn accelerator_id(&self) -> u64;
    /// Records the event on `stream`.
    fn record(&self, stream: &dyn Stream) -> Result<()>;
    /// Blocks until the recorded work has finished (returns at once if never recorded).
    fn synchronize(&self) -> Result<()>;
    /// Whether the recorded work has finished (true if never recorded, as in CUDA).
    fn query(&self) -> Result<bool>;
    /// Milliseconds from `self` to `end`; both must be recorded and created with timing.
    fn elapsed_ms(&self, end: &dyn Event) -> Result<f64>;
    /// For downcasting by the owning backend.
    fn as_any(&self) -> &dyn Any;
}

/// A captured sequence of work (a CUDA graph) that can be replayed on a stream.
pub trait Graph: Send + Sync + fmt::Debug {
    /// The [`Accelerator::id`] of the accelerator that captured it.
    fn accelerator_id(&self) -> u64;
    /// Launches the captured work on `stream` (the capturing stream's device's current
    /// stream for `None`).
    fn replay(&self, stream: Option<&dyn Stream>) -> Result<()>;
    /// The number of nodes (kernels, copies, fills...) in the graph.
    fn node_count(&self) -> Result<usize>;
}

/// Properties of one device (DeepSpeed's `get_device_properties`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceProperties {
    /// Device index.
    pub index: usize,
    /// Name (the GPU's or the CPU model).
    pub name: String,
    /// A stable identifier (`GPU-xxxxxxxx-...` for CUDA, as `nvidia-smi -L` shows).
    pub uuid: Option<String>,
    /// Compute capability `(major, minor)` of a CUDA device.
    pub compute_capability: Option<(u32, u32)>,
    /// Streaming multiprocessors (CUDA) or logical CPUs.
    pub multiprocessors: Option<u32>,
    /// Total memory in bytes.
    pub total_memory: u64,
    /// PCI location `domain:bus:device.0`, when the device has one.
    pub pci_bus_id: Option<String>,
}

/// Checks the arguments of [`Accelerator::fill`]: a 1-, 2-, 4- or 8-byte pattern and a length
/// that is a multiple of it.
pub(crate) fn check_fill(n: usize, pattern: &[u8]) -> Result<()> {
    let p = pattern.len();
    if !matches!(p, 1 | 2 | 4 | 8) || n % p != 0 {
        return Err(Error::invalid(format!(
            "fill of {n} bytes with a {p}-byte pattern"
        )));
    }
    Ok(())
}

/// Fills `n` bytes of host memory at `dst` with repetitions of `pattern` (checked).
///
/// # Safety
/// `dst` must be valid for writes of `n` bytes.
pub(crate) unsafe fn fill_host(dst: usize, n: usize, pattern: &[u8]) -> Result<()> {
    check_fill(n, pattern)?;
    // SAFETY: the caller guarantees the range.
    let out = unsafe { std::slice::from_raw_parts_mut(dst as *mut u8, n) };
    if pattern.iter().all(|&b| b == pattern[0]) {
        out.fill(pattern[0]);
    } else {
        for chunk in out.chunks_exact_mut(pattern.len()) {
            chunk.copy_from_slice(pattern);
        }
    }
    Ok(())
}

/// `n` bytes of repetitions of `pattern`, for backends that stage a fill through a copy.
pub(crate) fn pattern_bytes(n: usize, pattern: &[u8]) -> Vec<u8> {
    pattern.iter().copied().cycle().take(n).collect()
}

/// Checks that two events can be timed: both created with timing and both recorded.
pub(crate) fn check_elapsed(timing: [bool; 2], recorded: [bool; 2]) -> Result<()> {
    if !timing[0] || !timing[1] {
        return Err(Error::InvalidState(
            "elapsed time needs two events created with timing enabled".into(),
        ));
    }
    if !recorded[0] || !recorded[1] {
        return Err(Error::InvalidState(
            "elapsed time needs both events to have been recorded".into(),
        ));
    }
    Ok(())
}

static NEXT_ACCELERATOR_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh identifier for a new accelerator instance.
pub fn next_accelerator_id() -> u64 {
    NEXT_ACCELERATOR_ID.fetch_add(1, Ordering::Relaxed)
}

/// DeepSpeed's accelerator surface.
///
/// Implementations are internally synchronised: every method takes `&self` and may be
/// called from any thread. Methods taking `device: Option<usize>` use the calling thread's
/// current device for `None`.
pub trait Accelerator: Send + Sync + fmt::Debug {
    /// A process-unique identifier of this instance (streams and events remember it).
    fn id(&self) -> u64;
    /// The accelerator's name (`"cpu"`, `"cuda"`, a plugin's name).
    fn name(&self) -> &str;
    /// The DLPack device type of its device memory (`kDLCPU`, `kDLCUDA`, ...).
    fn dlpack_device_type(&self) -> i32;
    /// Whether device memory is host memory (the CPU accelerator).
    fn is_host(&self) -> bool;
    /// Whether the accelerator can be used.
    fn is_available(&self) -> bool;
    /// The collective-communication engine used with this accelerator (`"mpi"`, `"nccl"`).
    fn communication_backend_name(&self) -> &str;
    /// DeepSpeed's `is_synchronized_device`: work completes when submitted.
    fn is_synchronized_device(&self) -> bool;
    /// DeepSpeed's `use_host_timers`.
    fn use_host_timers(&self) -> bool {
        self.is_synchronized_device()
    }
    /// DeepSpeed's `resolves_data_dependency`.
    fn resolves_data_dependency(&self) -> bool {
        self.is_synchronized_device()
    }
    /// DeepSpeed's `handles_memory_backpressure`.
    fn handles_memory_backpressure(&self) -> bool {
        self.is_synchronized_device()
    }

    /// Number of devices.
    fn device_count(&self) -> usize;
    /// A device's name (the CPU model, the GPU's name).
    fn device_name(&self, device: Option<usize>) -> Result<String>;
    /// Properties of a device (name, UUID, compute capability, ...).
    fn device_properties(&self, device: Option<usize>) -> Result<DeviceProperties> {
        let d = self.resolve_device(device)?;
        Ok(DeviceProperties {
            index: d,
            name: self.device_name(Some(d))?,
            total_memory: self.total_memory(Some(d))?,
            ..DeviceProperties::default()
        })
    }
    /// Makes `device` the calling thread's current device.
    fn set_device(&self, device: usize) -> Result<()>;
    /// The calling thread's current device (0 until set; per thread, per instance).
    fn current_device(&self) -> usize {
        thread::with_thread(self.id(), |t| t.device)
    }
    /// Waits for all work on a device.
    fn synchronize(&self, device: Option<usize>) -> Result<()>;

    /// Total memory of a device, in bytes.
    fn total_memory(&self, device: Option<usize>) -> Result<u64>;
    /// Memory available for new allocations on a device, in bytes.
    fn available_memory(&self, device: Option<usize>) -> Result<u64>;
    /// Statistics over the library's own allocations on a device.
    fn memory_stats(&self, device: Option<usize>) -> Result<MemoryStats>;
    /// Resets the peak values of [`Accelerator::memory_stats`] to the current values.
    fn reset_peak_memory_stats(&self, device: Option<usize>) -> Result<()>;
    /// Returns cached, unused memory to the system.
    fn empty_cache(&self) -> Result<()>;
    /// Bytes currently allocated (`memory_stats().allocated_bytes`).
    fn memory_allocated(&self, device: Option<usize>) -> Result<u64> {
        Ok(self.memory_stats(device)?.allocated_bytes)
    }
    /// Peak bytes allocated.
    fn max_memory_allocated(&self, device: Option<usize>) -> Result<u64> {
        Ok(self.memory_stats(device)?.peak_allocated_bytes)
    }
    /// Bytes currently reserved.
    fn memory_reserved(&self, device: Option<usize>) -> Result<u64> {
        Ok(self.memory_stats(device)?.reserved_bytes)
    }
    /// Peak bytes reserved.
    fn max_memory_reserved(&self, device: Option<usize>) -> Result<u64> {
        Ok(self.memory_stats(device)?.peak_reserved_bytes)
    }
    /// The statistics as JSON (see [`MemoryStats::to_json`]).
    fn memory_stats_json(&self, device: Option<usize>) -> Result<Value> {
        let d = self.resolve_device(device)?;
        let stats = self.memory_stats(Some(d))?;
        Ok(stats.to_json(
            d,
            self.total_memory(Some(d))?,
            self.available_memory(Some(d))?,
        ))
    }

    /// How the accelerator supports an element type.
    fn dtype_support(&self, dtype: DType) -> DTypeSupport;
    /// Every supported element type.
    fn supported_dtypes(&self) -> Vec<DType> {
        DType::ALL
            .into_iter()
            .filter(|&t| self.dtype_support(t).supported)
            .collect()
    }
    /// DeepSpeed's `is_bf16_supported`: bf16 is natively supported.
    fn is_bf16_supported(&self) -> bool {
        self.dtype_support(DType::BF16).native
    }
    /// DeepSpeed's `is_fp16_supported`: fp16 is natively supported.
    fn is_fp16_supported(&self) -> bool {
        self.dtype_support(DType::F16).native
    }

    /// Seeds the current device's generator and resets its offset to 0.
    fn manual_seed(&self, seed: u64) -> Result<()>;
    /// The seed of the current device's generator.
    fn initial_seed(&self) -> u64;
    /// The generator's state as bytes (see [`rng::State`]).
    fn rng_state(&self) -> Result<Vec<u8>>;
    /// Restores a state from [`Accelerator::rng_state`].
    fn set_rng_state(&self, state: &[u8]) -> Result<()>;
    /// Fills a contiguous tensor on this accelerator with random numbers and advances the
    /// generator.
    ///
    /// # Safety
    /// `tensor.ptr` must address `tensor.nbytes` writable bytes of this accelerator's memory
    /// (or host memory it can access) for the duration of the call.
    unsafe fn rng_fill(
        &self,
        tensor: &TensorRef,
        dist: Distribution,
        stream: Option<&dyn Stream>,
    ) -> Result<()>;

    /// The current device's default stream.
    fn default_stream(&self) -> Result<Arc<dyn Stream>>;
    /// A new stream on the current device.
    fn new_stream(&self) -> Result<Arc<dyn Stream>>;
    /// The calling thread's current stream (the default stream until set).
    fn current_stream(&self) -> Result<Arc<dyn Stream>> {
        match thread::with_thread(self.id(), |t| t.stream.clone()) {
            Some(s) => Ok(s),
            None => self.default_stream(),
        }
    }
    /// Makes `stream` the calling thread's current stream; it must belong to this accelerator.
    fn set_current_stream(&self, stream: Arc<dyn Stream>) -> Result<()>;
    /// A new event; `timing` enables [`Event::elapsed_ms`].
    fn new_event(&self, timing: bool) -> Result<Arc<dyn Event>>;
    /// Wraps a stream the host created (a `cudaStream_t` as `void*`) on the current device.
    /// The returned stream never destroys it: the host keeps it alive while it is used.
    ///
    /// # Safety
    /// `native` must be a live native stream of this accelerator's current device.
    unsafe fn wrap_stream(&self, native: *mut std::ffi::c_void) -> Result<Arc<dyn Stream>> {
        let _ = native;
        Err(Error::Unsupported(format!(
            "the {} accelerator has no native streams to wrap",
            self.name()
        )))
    }

    /// Whether [`Accelerator::begin_capture`] can record graphs.
    fn supports_graphs(&self) -> bool {
        false
    }
    /// Starts capturing the work submitted to `stream` into a graph (nothing runs until the
    /// graph is replayed). Work from other threads is not captured.
    fn begin_capture(&self, stream: &dyn Stream) -> Result<()> {
        let _ = stream;
        Err(Error::Unsupported(format!(
            "the {} accelerator does not support graph capture",
            self.name()
        )))
    }
    /// Ends the capture started on `stream` and returns the graph, ready to replay.
    fn end_capture(&self, stream: Arc<dyn Stream>) -> Result<Arc<dyn Graph>> {
        let _ = stream;
        Err(Error::Unsupported(format!(
            "the {} accelerator does not support graph capture",
            self.name()
        )))
    }

    /// Opens a named profiling range on the calling thread.
    fn range_push(&self, name: &str) -> Result<()>;
    /// Closes the innermost range opened by [`Accelerator::range_push`] on this thread.
    fn range_pop(&self) -> Result<()>;

    /// Allocates `size` bytes aligned to `align` (a power of two).
    fn allocate(&self, size: usize, align: usize, kind: MemoryKind) -> Result<Allocation>;
    /// Frees an allocation from [`Accelerator::allocate`].
    ///
    /// # Safety
    /// `allocation` must come from this accelerator's `allocate` and not be freed already.
    unsafe fn deallocate(&self, allocation: &Allocation);
    /// Whether `ptr` lies in page-locked memory allocated by this accelerator.
    fn is_pinned(&self, ptr: usize) -> bool;
    /// Copies `n` bytes; each address is either device memory of this accelerator or host
    /// memory (`*_on_device` says which).
    ///
    /// # Safety
    /// Both ranges must be valid for `n` bytes for the duration of the copy.
    unsafe fn copy(
        &self,
        dst: usize,
        dst_on_device: bool,
        src: usize,
        src_on_device: bool,
        n: usize,
        stream: Option<&dyn Stream>,
    ) -> Result<()>;
    /// Fills `n` bytes at `dst` with repetitions of `pattern` (1, 2, 4 or 8 bytes).
    ///
    /// # Safety
    /// The range must be valid for writes for the duration of the call.
    unsafe fn fill(
        &self,
        dst: usize,
        dst_on_device: bool,
        n: usize,
        pattern: &[u8],
        stream: Option<&dyn Stream>,
    ) -> Result<()>;

    /// Backend-specific facts for reports (CPU model and features, driver versions...).
    fn extra_info(&self) -> Value {
        Value::Null
    }

    /// Resolves `None` to the current device and checks the index.
    fn resolve_device(&self, device: Option<usize>) -> Result<usize> {
        let d = device.unwrap_or_else(|| self.current_device());
        let n = self.device_count();
        if d >= n {
            return Err(Error::range(format!(
                "device {d} does not exist: the {} accelerator has {n} device(s)",
                self.name()
            )));
        }
        Ok(d)
    }

    /// The DLPack device of memory of `kind` on `device`.
    fn dlpack_device(&self, kind: MemoryKind, device: usize) -> DLDevice {
        match kind {
            // DLPack: host memory is device 0, whatever logical device (NUMA node) owns it.
            MemoryKind::Device => DLDevice {
                device_type: self.dlpack_device_type(),
                device_id: if self.is_host() { 0 } else { device as i32 },
            },
            MemoryKind::Host => DLDevice {
                device_type: crate::dlpack::kDLCPU,
                device_id: 0,
            },
            MemoryKind::Pinned => DLDevice {
                device_type: if self.is_host() {
                    crate::dlpack::kDLCPU
                } else {
                    crate::dlpack::kDLCUDAHost
                },
                device_id: 0,
            },
        }
    }

    /// A JSON description of the accelerator and each device (used by reports and bindings).
    fn describe(&self) -> Value {
        let devices: Vec<Value> = (0..self.device_count())
            .map(|d| {
                let mut v = match self.device_properties(Some(d)) {
                    Ok(p) => serde_json::to_value(p).unwrap_or(Value::Null),
                    Err(e) => json!({"index": d, "error": e.to_string()}),
                };
                if let Value::Object(m) = &mut v {
                    m.insert(
                        "available_memory".into(),
                        json!(self.available_memory(Some(d)).ok()),
                    );
                }
                v
            })
            .collect();
        let dtypes: Vec<Value> = DType::ALL
            .into_iter()
            .map(|t| {
                let s = self.dtype_support(t);
                json!({"name": t.name(), "supported": s.supported, "native": s.native})
            })
            .collect();
        json!({
            "name": self.name(),
            "available": self.is_available(),
            "dlpack_device_type": self.dlpack_device_type(),
            "device_count": self.device_count(),
            "current_device": self.current_device(),
            "devices": devices,
            "communication_backend": self.communication_backend_name(),
            "synchronized_device": self.is_synchronized_device(),
            "graphs": self.supports_graphs(),
            "bf16_supported": self.is_bf16_supported(),
            "fp16_supported": self.is_fp16_supported(),
            "dtypes": dtypes,
            "memory": self.memory_stats_json(None).unwrap_or(Value::Null),
            "details": self.extra_info(),
        })
    }
}
