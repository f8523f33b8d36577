//! The CPU accelerator: DeepSpeed's accelerator surface where it means something on a CPU.
//!
//! * Devices are the NUMA nodes that have CPUs (DeepSpeed's rule), unless the `devices`
//!   option or the `LOCAL_SIZE` environment variable says otherwise. They share one memory
//!   pool, so memory figures are the same for every device.
//! * Memory: total and available come from the OS (tightened by a cgroup limit and by the
//!   optional `memory_limit`); allocated/peak/reset count the accelerator's own allocations.
//! * Work runs synchronously: streams are always idle, events record the host clock.
//! * Random numbers come from Philox4x32-10 ([`crate::accelerator::rng`]).
//! * Pinned memory is page-locked with `mlock`.
//!
//! Options (JSON object, all optional): `devices` (≥ 1), `memory_limit` (bytes),
//! `seed` (initial RNG seed).

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Value, json};

use super::rng::{self, Distribution};
use super::stream::{HostEvent, HostStream};
use super::thread;
use super::{Accelerator, Allocation, DTypeSupport, Event, MemoryKind, MemoryStats, Stream};
use crate::dlpack::{TensorRef, kDLCPU, kDLCUDAHost};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::{dsrs_debug, dsrs_info};

pub(crate) mod memory;
pub mod sysinfo;

use memory::Tracker;
pub use sysinfo::{CpuFeatures, CpuInfo, SimdLevel, SystemMemory, cpu_info, system_memory};

/// Options of the CPU accelerator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuOptions {
    /// Number of logical devices (default: `LOCAL_SIZE`, else NUMA nodes with CPUs).
    pub devices: Option<usize>,
    /// Cap on the bytes the accelerator allocates.
    pub memory_limit: Option<u64>,
    /// Initial RNG seed (default [`rng::DEFAULT_SEED`]).
    pub seed: Option<u64>,
}

const OPTION_NAMES: &str = "devices, memory_limit, seed";

impl CpuOptions {
    /// Reads options from a JSON value (`null` or an object); errors name the option.
    pub fn from_json(v: &Value) -> Result<CpuOptions> {
        let mut o = CpuOptions::default();
        let map = match v {
            Value::Null => return Ok(o),
            Value::Object(m) => m,
            other => {
                return Err(Error::config(format!(
                    "cpu accelerator options must be a JSON object, got {other}"
                )));
            }
        };
        for (k, v) in map {
            let as_u64 = |what: &str| {
                v.as_u64()
                    .ok_or_else(|| Error::config(format!("options.{k} must be {what}, got {v}")))
            };
            match k.as_str() {
                "devices" => {
                    let n = as_u64("an integer >= 1")?;
                    if n == 0 || n > 4096 {
                        return Err(Error::config(format!(
                            "options.devices must be between 1 and 4096, got {n}"
                        )));
                    }
                    o.devices = Some(n as usize);
                }
                "memory_limit" => {
                    o.memory_limit = Some(as_u64("a byte count (a non-negative integer)")?)
                }
                "seed" => o.seed = Some(as_u64("a non-negative integer")?),
                _ => {
                    return Err(Error::config(format!(
                        "unknown option {k:?} for the cpu accelerator; valid options: {OPTION_NAMES}"
                    )));
                }
            }
        }
        Ok(o)
    }
}

/// The CPU accelerator.
#[derive(Debug)]
pub struct CpuAccelerator {
    id: u64,
    info: &'static CpuInfo,
    devices: usize,
    tracker: Tracker,
    rng: Mutex<rng::State>,
    default_streams: Vec<Arc<HostStream>>,
}

impl CpuAccelerator {
    /// A CPU accelerator with the given options.
    pub fn new(options: CpuOptions) -> CpuAccelerator {
        let id = super::next_accelerator_id();
        let devices = options.devices.unwrap_or_else(default_device_count);
        let seed = options.seed.unwrap_or(rng::DEFAULT_SEED);
        let default_streams = (0..devices)
            .map(|d| Arc::new(HostStream::new(id, d, true)))
            .collect();
        dsrs_debug!(
            "accelerator",
            "cpu accelerator #{id}: {devices} device(s), memory limit {:?}",
            options.memory_limit
        );
        CpuAccelerator {
            id,
            info: cpu_info(),
            devices,
            tracker: Tracker::new(options.memory_limit),
            rng: Mutex::new(rng::State::new(seed)),
            default_streams,
        }
    }

    /// The host CPU's description.
    pub fn cpu_info(&self) -> &'static CpuInfo {
        self.info
    }

    fn check_stream(&self, stream: Option<&dyn Stream>) -> Result<()> {
        if let Some(s) = stream {
            if s.accelerator_id() != self.id {
                return Err(Error::invalid(
                    "the stream belongs to a different accelerator",
                ));
            }
        }
        Ok(())
    }
}

fn default_device_count() -> usize {
    if let Some(n) = std::env::var("LOCAL_SIZE")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
    {
        if n > 0 {
            return n;
        }
    }
    cpu_info().numa_nodes
}

impl Accelerator for CpuAccelerator {
    fn id(&self) -> u64 {
        self.id
    }
    fn name(&self) -> &str {
        "cpu"
    }
    fn dlpack_device_type(&self) -> i32 {
        kDLCPU
    }
    fn is_host(&self) -> bool {
        true
    }
    fn is_available(&self) -> bool {
        true
    }
    fn communication_backend_name(&self) -> &str {
        "mpi"
    }
    fn is_synchronized_device(&self) -> bool {
        true
    }

    fn device_count(&self) -> usize {
        self.devices
    }
    fn device_name(&self, device: Option<usize>) -> Result<String> {
        self.resolve_device(device)?;
        Ok(self.info.model.clone())
    }
    fn device_properties(&self, device: Option<usize>) -> Result<super::DeviceProperties> {
        let d = self.resolve_device(device)?;
        Ok(super::DeviceProperties {
            index: d,
            name: self.info.model.clone(),
            multiprocessors: u32::try_from(self.info.logical_cpus).ok(),
            total_memory: self.total_memory(Some(d))?,
            ..super::DeviceProperties::default()
        })
    }
    fn set_device(&self, device: usize) -> Result<()> {
        self.resolve_device(Some(device))?;
        thread::set_device(self.id, device);
        Ok(())
    }
    fn synchronize(&self, device: Option<usize>) -> Result<()> {
        self.resolve_device(device).map(|_| ())
    }

    fn total_memory(&self, device: Option<usize>) -> Result<u64> {
        self.resolve_device(device)?;
        let total = system_memory().total;
        Ok(self.tracker.limit().map_or(total, |l| l.min(total)))
    }
    fn available_memory(&self, device: Option<usize>) -> Result<u64> {
        self.resolve_device(device)?;
        let available = system_memory().available;
        Ok(match self.tracker.limit() {
            Some(l) => available.min(l.saturating_sub(self.tracker.stats().allocated_bytes)),
            None => available,
        })
    }
    fn memory_stats(&self, device: Option<usize>) -> Result<MemoryStats> {
        self.resolve_device(device)?;
        Ok(self.tracker.stats())
    }
    fn reset_peak_memory_stats(&self, device: Option<usize>) -> Result<()> {
        self.resolve_device(device)?;
        self.tracker.reset_peaks();
        Ok(())
    }
    fn empty_cache(&self) -> Result<()> {
        Ok(()) // nothing is cached
    }

    fn dtype_support(&self, dtype: DType) -> DTypeSupport {
        let f = &self.info.features;
        let native = match dtype {
            DType::BF16 => f.bf16_native(),
            DType::F16 => f.fp16_native(),
            _ => true,
        };
        DTypeSupport {
            supported: true,
            native,
        }
    }

    fn manual_seed(&self, seed: u64) -> Result<()> {
        *self.rng.lock() = rng::State::new(seed);
        Ok(())
    }
    fn initial_seed(&self) -> u64 {
        self.rng.lock().seed
    }
    fn rng_state(&self) -> Result<Vec<u8>> {
        Ok(self.rng.lock().to_bytes())
    }
    fn set_rng_state(&self, state: &[u8]) -> Result<()> {
        let s = rng::State::from_bytes(state)?;
        *self.rng.lock() = s;
        Ok(())
    }
    unsafe fn rng_fill(
        &self,
        tensor: &TensorRef,
        dist: Distribution,
        stream: Option<&dyn Stream>,
    ) -> Result<()> {
        self.check_stream(stream)?;
        if !matches!(tensor.device.device_type, kDLCPU | kDLCUDAHost) {
            return Err(Error::invalid(format!(
                "the cpu accelerator cannot fill a tensor on DLPack device type {}",
                tensor.device.device_type
            )));
        }
        if !tensor.contiguous {
            return Err(Error::invalid(
                "the tensor is not contiguous (strides must be NULL or compact row-major)",
            ));
        }
        let mut state = self.rng.lock();
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

    fn default_stream(&self) -> Result<Arc<dyn Stream>> {
        let d = self.current_device();
        Ok(self.default_streams[d].clone())
    }
    fn new_stream(&self) -> Result<Arc<dyn Stream>> {
        Ok(Arc::new(HostStream::new(
            self.id,
            self.current_device(),
            false,
        )))
    }
    fn set_current_stream(&self, stream: Arc<dyn Stream>) -> Result<()> {
        self.check_stream(Some(stream.as_ref()))?;
        thread::set_stream(self.id, stream);
        Ok(())
    }
    fn new_event(&self, timing: bool) -> Result<Arc<dyn Event>> {
        Ok(Arc::new(HostEvent::new(self.id, timing)))
    }

    fn range_push(&self, name: &str) -> Result<()> {
        dsrs_debug!("range", "push {name:?}");
        thread::push_range(self.id, name);
        Ok(())
    }
    fn range_pop(&self) -> Result<()> {
        let (name, ms) = thread::pop_range(self.id)?;
        dsrs_info!("range", "{name:?} took {ms:.3} ms");
        Ok(())
    }

    fn allocate(&self, size: usize, align: usize, kind: MemoryKind) -> Result<Allocation> {
        let device = self.current_device();
        self.tracker.allocate(size, align, kind, device)
    }
    unsafe fn deallocate(&self, allocation: &Allocation) {
        // SAFETY: forwarded contract.
        unsafe { self.tracker.deallocate(allocation) }
    }
    fn is_pinned(&self, ptr: usize) -> bool {
        self.tracker.is_pinned(ptr)
    }
    unsafe fn copy(
        &self,
        dst: usize,
        _dst_on_device: bool,
        src: usize,
        _src_on_device: bool,
        n: usize,
        stream: Option<&dyn Stream>,
    ) -> Result<()> {
        self.check_stream(stream)?;
        // SAFETY: the caller guarantees both ranges; overlap is allowed (memmove).
        unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, n) };
        Ok(())
    }
    unsafe fn fill(
        &self,
        dst: usize,
        _dst_on_device: bool,
        n: usize,
        pattern: &[u8],
        stream: Option<&dyn Stream>,
    ) -> Result<()> {
        self.check_stream(stream)?;
        // SAFETY: the caller guarantees the range.
        unsafe { super::fill_host(dst, n, pattern) }
    }

    fn extra_info(&self) -> Value {
        let mem = system_memory();
        json!({
            "cpu_model": self.info.model,
            "arch": self.info.arch,
            "logical_cpus": self.info.logical_cpus,
            "numa_nodes": self.info.numa_nodes,
            "simd": self.info.simd.name(),
            "features": self.info.features.names(),
            "system_memory_total": mem.total,
            "system_memory_available": mem.available,
            "cgroup_memory_limit": mem.cgroup_limit,
            "memlock_limit": sysinfo::memlock_limit(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu() -> CpuAccelerator {
        CpuAccelerator::new(CpuOptions {
            devices: Some(2),
            ..CpuOptions::default()
        })
    }

    #[test]
    fn options_are_validated_by_name() {
        let o = CpuOptions::from_json(
            &serde_json::json!({"devices": 3, "memory_limit": 1024, "seed": 5}),
        )
        .unwrap();
        assert_eq!(
            o,
            CpuOptions {
                devices: Some(3),
                memory_limit: Some(1024),
                seed: Some(5)
            }
        );
        let e = CpuOptions::from_json(&serde_json::json!({"memory_limit": "lots"})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "options.memory_limit must be a byte count (a non-negative integer), got \"lots\""
        );
        let e = CpuOptions::from_json(&serde_json::json!({"device": 2})).unwrap_err();
        assert!(e.to_string().contains("unknown option \"device\""), "{e}");
        assert!(CpuOptions::from_json(&serde_json::json!({"devices": 0})).is_err());
        assert!(CpuOptions::from_json(&serde_json::json!([1])).is_err());
    }

    #[test]
    fn devices_are_per_thread_and_range_checked() {
        let a = cpu();
        assert_eq!(a.device_count(), 2);
        a.set_device(1).unwrap();
        assert_eq!(a.current_device(), 1);
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(a.current_device(), 0));
        });
        let e = a.set_device(2).unwrap_err();
        assert!(
            e.to_string()
                .contains("device 2 does not exist: the cpu accelerator has 2 device(s)")
        );
        assert!(!a.device_name(None).unwrap().is_empty());
    }

    #[test]
    fn memory_limit_shapes_total_and_available() {
        let a = CpuAccelerator::new(CpuOptions {
            memory_limit: Some(1 << 20),
            ..CpuOptions::default()
        });
        assert_eq!(a.total_memory(None).unwrap(), 1 << 20);
        let al = a.allocate(1 << 19, 64, MemoryKind::Device).unwrap();
        assert!(a.available_memory(None).unwrap() <= 1 << 19);
        unsafe { a.deallocate(&al) };
    }

    #[test]
    fn rng_state_and_seed_behave_like_torch() {
        let a = cpu();
        assert_eq!(a.initial_seed(), rng::DEFAULT_SEED);
        a.manual_seed(1234).unwrap();
        let state = a.rng_state().unwrap();
        let mut x = [0f32; 10];
        let t = TensorRef {
            ptr: x.as_mut_ptr() as usize,
            device: crate::dlpack::DLDevice {
                device_type: kDLCPU,
                device_id: 0,
            },
            dtype: DType::F32,
            shape: vec![10],
            contiguous: true,
            numel: 10,
            nbytes: 40,
        };
        unsafe {
            a.rng_fill(
                &t,
                Distribution::Normal {
                    mean: 0.0,
                    std: 1.0,
                },
                None,
            )
        }
        .unwrap();
        let first = x;
        unsafe {
            a.rng_fill(
                &t,
                Distribution::Normal {
                    mean: 0.0,
                    std: 1.0,
                },
                None,
            )
        }
        .unwrap();
        assert_ne!(first, x);
        a.set_rng_state(&state).unwrap();
        unsafe {
            a.rng_fill(
                &t,
                Distribution::Normal {
                    mean: 0.0,
                    std: 1.0,
                },
                None,
            )
        }
        .unwrap();
        assert_eq!(first, x);
        assert_eq!(a.initial_seed(), 1234);
    }

    #[test]
    fn streams_follow_the_thread_and_ranges_nest() {
        let a = cpu();
        let s = a.new_stream().unwrap();
        assert!(!s.is_default());
        a.set_current_stream(s.clone()).unwrap();
        assert!(Arc::ptr_eq(&a.current_stream().unwrap(), &s));
        let other = cpu();
        assert!(
            a.set_current_stream(other.default_stream().unwrap())
                .is_err()
        );
        a.range_push("outer").unwrap();
        a.range_push("inner").unwrap();
        a.range_pop().unwrap();
        a.range_pop().unwrap();
        assert!(
            a.range_pop()
                .unwrap_err()
                .to_string()
                .contains("without a matching range_push")
        );
    }
}
