//! Accelerator plugins: third-party shared libraries that fill in the versioned C table
//! [`dsrs_accelerator_plugin_v1`] and export it through one entry symbol,
//! `dsrs_accelerator_plugin_entry`. The format and rules are in `docs/plugins.md`.
//!
//! A plugin is loaded by path ([`load_plugin`], `dsrs_accelerator_load_plugin`, or the
//! `DSRS_ACCELERATOR_PLUGINS=path:path` list read on first use of the factory), validated
//! (ABI version, table size, name, required entries, complete optional groups), and
//! registered as an [`AcceleratorProvider`]: it takes part in detection before the
//! built-in accelerators and can be named by `DSRS_ACCELERATOR`. Its memory, streams and
//! events then flow through the same API as CUDA's and the CPU's. Loaded libraries are
//! never unloaded.

#![allow(non_camel_case_types)]

use std::any::Any;
use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_char, c_void};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use serde_json::{Value, json};

use super::counters::{Counters, Ranges};
use super::factory::{AcceleratorProvider, Probe};
use super::rng::{self, Distribution};
use super::stream::{HostEvent, HostStream};
use super::thread;
use super::{
    Accelerator, Allocation, DTypeSupport, Event, MemoryKind, MemoryStats, Stream, check_elapsed,
    check_fill, pattern_bytes,
};
use crate::dlpack::{DLDataType, TensorRef, kDLCPU, kDLCUDAHost};
use crate::dtype::DType;
use crate::error::{Error, ErrorKind, Result};
use crate::{dsrs_info, dsrs_warn};

/// The plugin ABI version this library implements (`dsrs_accelerator_plugin_v1`).
pub const DSRS_ACCELERATOR_PLUGIN_ABI_VERSION: u32 = 1;
/// The symbol a plugin exports:
/// `const dsrs_accelerator_plugin_v1 *dsrs_accelerator_plugin_entry(uint32_t host_abi_version)`.
pub const DSRS_ACCELERATOR_PLUGIN_ENTRY: &str = "dsrs_accelerator_plugin_entry";
/// Flag: the plugin's device memory is ordinary host memory the CPU may read and write.
pub const DSRS_PLUGIN_HOST_MEMORY: u32 = 1;
/// Flag: work completes when it is submitted (DeepSpeed's `is_synchronized_device`).
pub const DSRS_PLUGIN_SYNCHRONOUS: u32 = 2;
/// `dtype_support` result bit: buffers and kernels accept the type.
pub const DSRS_PLUGIN_DTYPE_SUPPORTED: u32 = 1;
/// `dtype_support` result bit: the hardware computes in the type natively.
pub const DSRS_PLUGIN_DTYPE_NATIVE: u32 = 2;

/// Memory statistics a plugin reports for one device (`memory_stats` entry).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct dsrs_plugin_memory_stats {
    /// Bytes currently allocated.
    pub allocated_bytes: u64,
    /// Highest `allocated_bytes` since creation or the last peak reset.
    pub peak_allocated_bytes: u64,
    /// Bytes reserved from the system (≥ allocated when the plugin caches).
    pub reserved_bytes: u64,
    /// Highest `reserved_bytes` since creation or the last peak reset.
    pub peak_reserved_bytes: u64,
    /// Live allocations.
    pub allocations: u64,
    /// Highest `allocations` since creation or the last peak reset.
    pub peak_allocations: u64,
    /// Allocations refused for lack of memory.
    pub num_ooms: u64,
}

/// The table a plugin fills in (ABI version 1).
///
/// Every entry returns an `int32_t` status: 0 on success, else a `dsrs_status` value
/// (`DSRS_STATUS_OUT_OF_MEMORY`, `DSRS_STATUS_UNSUPPORTED`, ... keep their meaning; any other
/// nonzero value is reported as `DSRS_STATUS_DEVICE_ERROR`), with `last_error` explaining.
/// Entries may be called from any thread, concurrently: the plugin must be thread-safe.
/// `state` is what `init` returned. `device` is a device index below `device_count`.
/// `stream` is a stream from `stream_create`, or NULL for the device's default stream.
///
/// Required: `init`, `destroy`, `device_count`, `memory_info`, `allocate`, `deallocate`,
/// `copy`, and `synchronize` unless `flags` has `DSRS_PLUGIN_SYNCHRONOUS`. Optional
/// entries may be NULL; `stream_create`/`stream_destroy`/`stream_synchronize` come together
/// (without them streams are host streams), and so do `event_create`/`event_destroy`/
/// `event_record`/`event_synchronize`/`event_elapsed_ms` (without them events read the
/// host clock).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dsrs_accelerator_plugin_v1 {
    /// `DSRS_ACCELERATOR_PLUGIN_ABI_VERSION` as the plugin was built.
    pub abi_version: u32,
    /// `sizeof(dsrs_accelerator_plugin_v1)` as the plugin was built.
    pub struct_size: u32,
    /// The accelerator's name: ASCII letters, digits, '_' or '-' (e.g. `"hostmem"`).
    pub name: *const c_char,
    /// `DSRS_PLUGIN_HOST_MEMORY` | `DSRS_PLUGIN_SYNCHRONOUS`.
    pub flags: u32,
    /// DLPack device type of its device memory (`kDLExtDev`, `kDLOneAPI`, ...).
    pub dlpack_device_type: i32,
    /// Collective-communication engine name (`"hccl"`, `"ccl"`); NULL means `"mpi"`.
    pub communication_backend: *const c_char,
    /// Whether the accelerator can be used here: returns 1 (available) or 0, and may write
    /// a NUL-terminated reason into `detail` (`len` bytes). NULL: always available.
    pub probe: Option<unsafe extern "C" fn(detail: *mut c_char, len: usize) -> i32>,
    /// Creates an instance from options (a JSON object, or NULL) and writes its state.
    pub init:
        Option<unsafe extern "C" fn(options_json: *const c_char, state: *mut *mut c_void) -> i32>,
    /// Destroys an instance (after every allocation, stream and event is released).
    pub destroy: Option<unsafe extern "C" fn(state: *mut c_void)>,
    /// The last error on the calling thread, NUL-terminated (`state` is NULL after a
    /// failed `init`). NULL entry: messages carry the status only.
    pub last_error: Option<unsafe extern "C" fn(state: *mut c_void) -> *const c_char>,
    /// Number of devices (≥ 1).
    pub device_count: Option<unsafe extern "C" fn(state: *mut c_void, out: *mut u32) -> i32>,
    /// A device's name, NUL-terminated into `buf` (`len` bytes). NULL: `"<name>:<index>"`.
    pub device_name: Option<
        unsafe extern "C" fn(state: *mut c_void, device: u32, buf: *mut c_char, len: usize) -> i32,
    >,
    /// Total and available memory of a device, in bytes.
    pub memory_info: Option<
        unsafe extern "C" fn(
            state: *mut c_void,
            device: u32,
            total: *mut u64,
            available: *mut u64,
        ) -> i32,
    >,
    /// Allocates `size` (> 0) bytes aligned to `align` of `kind` (`DSRS_MEMORY_DEVICE` or
    /// `DSRS_MEMORY_PINNED`; pageable host memory is allocated by deepspeed_rs itself).
    /// The memory must be zeroed.
    pub allocate: Option<
        unsafe extern "C" fn(
            state: *mut c_void,
            device: u32,
            size: usize,
            align: usize,
            kind: i32,
            out: *mut *mut c_void,
        ) -> i32,
    >,
    /// Frees an allocation (same device, size and kind as allocated).
    pub deallocate: Option<
        unsafe extern "C" fn(
            state: *mut c_void,
            device: u32,
            ptr: *mut c_void,
            size: usize,
            kind: i32,
        ) -> i32,
    >,
    /// Copies `n` bytes; `*_on_device` says whether each side is the plugin's device memory
    /// (else host memory). Copies touching host memory must be complete on return.
    pub copy: Option<
        unsafe extern "C" fn(
            state: *mut c_void,
            device: u32,
            dst: *mut c_void,
            dst_on_device: bool,
            src: *const c_void,
            src_on_device: bool,
            n: usize,
            stream: *mut c_void,
        ) -> i32,
    >,
    /// Waits for all work on a device.
    pub synchronize: Option<unsafe extern "C" fn(state: *mut c_void, device: u32) -> i32>,
    /// Fills `n` bytes of device memory with repetitions of a 1-, 2-, 4- or 8-byte
    /// pattern. NULL: deepspeed_rs stages the bytes and uses `copy`.
    pub fill: Option<
        unsafe extern "C" fn(
            state: *mut c_void,
            device: u32,
            dst: *mut c_void,
            n: usize,
            pattern: *const c_void,
            pattern_size: usize,
            stream: *mut c_void,
        ) -> i32,
    >,
    /// The plugin allocator's statistics. NULL: deepspeed_rs counts the allocations.
    pub memory_stats: Option<
        unsafe extern "C" fn(
            state: *mut c_void,
            device: u32,
            out: *mut dsrs_plugin_memory_stats,
        ) -> i32,
    >,
    /// Resets the peaks of `memory_stats` to the current values.
    pub reset_peak_memory_stats:
        Option<unsafe extern "C" fn(state: *mut c_void, device: u32) -> i32>,
    /// Returns cached, unused memory to the system.
    pub empty_cache: Option<unsafe extern "C" fn(state: *mut c_void) -> i32>,
    /// `DSRS_PLUGIN_DTYPE_SUPPORTED` | `DSRS_PLUGIN_DTYPE_NATIVE` for an element type.
    /// NULL: every type supported, native except float16 and bfloat16.
    pub dtype_support: Option<unsafe extern "C" fn(state: *mut c_void, dtype: DLDataType) -> u32>,
    /// Creates a stream on a device.
    pub stream_create:
        Option<unsafe extern "C" fn(state: *mut c_void, device: u32, out: *mut *mut c_void) -> i32>,
    /// Destroys a stream from `stream_create`.
    pub stream_destroy:
        Option<unsafe extern "C" fn(state: *mut c_void, device: u32, stream: *mut c_void)>,
    /// Waits for the work on a stream.
    pub stream_synchronize:
        Option<unsafe extern "C" fn(state: *mut c_void, device: u32, stream: *mut c_void) -> i32>,
    /// Writes whether a stream's work has finished. NULL: synchronizes and answers true.
    pub stream_query: Option<
        unsafe extern "C" fn(
            state: *mut c_void,
            device: u32,
            stream: *mut c_void,
            out: *mut bool,
        ) -> i32,
    >,
    /// Makes future work on `stream` wait for `event`. NULL: waits on the host.
    pub stream_wait_event: Option<
        unsafe extern "C" fn(
            state: *mut c_void,
            device: u32,
            stream: *mut c_void,
            event: *mut c_void,
        ) -> i32,
    >,
    /// Creates an event; `timing` enables `event_elapsed_ms`.
    pub event_create: Option<
        unsafe extern "C" fn(
            state: *mut c_void,
            device: u32,
            timing: bool,
            out: *mut *mut c_void,
        ) -> i32,
    >,
    /// Destroys an event.
    pub event_destroy: Option<unsafe extern "C" fn(state: *mut c_void, event: *mut c_void)>,
    /// Records an event on a stream.
    pub event_record: Option<
        unsafe extern "C" fn(state: *mut c_void, event: *mut c_void, stream: *mut c_void) -> i32,
    >,
    /// Waits for a recorded event.
    pub event_synchronize:
        Option<unsafe extern "C" fn(state: *mut c_void, event: *mut c_void) -> i32>,
    /// Writes whether an event's work has finished. NULL: synchronizes and answers true.
    pub event_query:
        Option<unsafe extern "C" fn(state: *mut c_void, event: *mut c_void, out: *mut bool) -> i32>,
    /// Milliseconds between two recorded timing events.
    pub event_elapsed_ms: Option<
        unsafe extern "C" fn(
            state: *mut c_void,
            start: *mut c_void,
            end: *mut c_void,
            out: *mut f64,
        ) -> i32,
    >,
    /// Opens a named profiling range on the calling thread.
    pub range_push: Option<unsafe extern "C" fn(state: *mut c_void, name: *const c_char) -> i32>,
    /// Closes the innermost range of the calling thread.
    pub range_pop: Option<unsafe extern "C" fn(state: *mut c_void) -> i32>,
}

/// The type of the one symbol a plugin exports, `dsrs_accelerator_plugin_entry`: given the
/// plugin ABI version of the loading library, it returns the plugin's table (static
/// storage; the library is never unloaded), or NULL if it cannot serve that version.
pub type dsrs_accelerator_plugin_entry_fn =
    unsafe extern "C" fn(host_abi_version: u32) -> *const dsrs_accelerator_plugin_v1;

type EntryFn = dsrs_accelerator_plugin_entry_fn;

fn plugin_error(what: impl Into<String>) -> Error {
    Error::PluginInvalid(what.into())
}

/// A validated plugin: its table, name and library.
struct Plugin {
    name: String,
    path: PathBuf,
    table: dsrs_accelerator_plugin_v1,
    communication_backend: String,
    _lib: libloading::Library,
}

// SAFETY: the table holds function pointers and pointers to static strings of a library
// that is never unloaded; the plugin contract requires its entries to be thread-safe.
unsafe impl Send for Plugin {}
// SAFETY: as above.
unsafe impl Sync for Plugin {}

fn c_string(p: *const c_char) -> Option<String> {
    // SAFETY: plugin strings are NUL-terminated by contract; checked non-NULL.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Checks a table against ABI version 1. `path` names the file in messages.
fn validate(t: &dsrs_accelerator_plugin_v1, path: &Path) -> Result<String> {
    let p = path.display();
    let name = c_string(t.name)
        .ok_or_else(|| plugin_error(format!("plugin {p}: its table has no name")))?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(plugin_error(format!(
            "plugin {p}: name {name:?} must be non-empty ASCII letters, digits, '_' or '-'"
        )));
    }
    let mut missing = Vec::new();
    macro_rules! need {
        ($($f:ident),*) => { $( if t.$f.is_none() { missing.push(stringify!($f)); } )* };
    }
    need!(
        init,
        destroy,
        device_count,
        memory_info,
        allocate,
        deallocate,
        copy
    );
    if t.flags & DSRS_PLUGIN_SYNCHRONOUS == 0 && t.synchronize.is_none() {
        missing.push("synchronize (required unless flags has DSRS_PLUGIN_SYNCHRONOUS)");
    }
    if !missing.is_empty() {
        return Err(plugin_error(format!(
            "plugin {p} ({name}): required entries are NULL: {}",
            missing.join(", ")
        )));
    }
    let groups: [(&str, Vec<(&str, bool)>); 2] = [
        (
            "stream",
            vec![
                ("stream_create", t.stream_create.is_some()),
                ("stream_destroy", t.stream_destroy.is_some()),
                ("stream_synchronize", t.stream_synchronize.is_some()),
            ],
        ),
        (
            "event",
            vec![
                ("event_create", t.event_create.is_some()),
                ("event_destroy", t.event_destroy.is_some()),
                ("event_record", t.event_record.is_some()),
                ("event_synchronize", t.event_synchronize.is_some()),
                ("event_elapsed_ms", t.event_elapsed_ms.is_some()),
            ],
        ),
    ];
    for (group, entries) in groups {
        let set = entries.iter().filter(|e| e.1).count();
        if set != 0 && set != entries.len() {
            let absent: Vec<&str> = entries.iter().filter(|e| !e.1).map(|e| e.0).collect();
            return Err(plugin_error(format!(
                "plugin {p} ({name}): the {group} entries come together, but {} are NULL",
                absent.join(", ")
            )));
        }
    }
    Ok(name)
}

/// Reads and validates the table of the library at `path`.
fn open(path: &Path) -> Result<Plugin> {
    let p = path.display();
    // SAFETY: loading a library runs its initialisers; loading a plugin is trusting it.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| {
        plugin_error(format!(
            "cannot load accelerator plugin {p}: {}",
            crate::error::with_sources(&e)
        ))
    })?;
    // SAFETY: the entry's signature is fixed by the plugin ABI.
    let entry: EntryFn = unsafe { lib.get::<EntryFn>(DSRS_ACCELERATOR_PLUGIN_ENTRY.as_bytes()) }
        .map(|s| *s)
        .map_err(|_| {
            plugin_error(format!(
                "{p} does not export {DSRS_ACCELERATOR_PLUGIN_ENTRY}, so it is not a deepspeed_rs accelerator plugin"
            ))
        })?;
    // SAFETY: calling the plugin's entry as its ABI specifies.
    let ptr = unsafe { entry(DSRS_ACCELERATOR_PLUGIN_ABI_VERSION) };
    if ptr.is_null() {
        return Err(plugin_error(format!(
            "plugin {p}: {DSRS_ACCELERATOR_PLUGIN_ENTRY} returned NULL (it does not support plugin ABI {DSRS_ACCELERATOR_PLUGIN_ABI_VERSION})"
        )));
    }
    // Read the two leading fields first: a table of another version may be shorter.
    // SAFETY: every version starts with abi_version and struct_size.
    let (abi, size) = unsafe { ((*ptr).abi_version, (*ptr).struct_size) };
    if abi != DSRS_ACCELERATOR_PLUGIN_ABI_VERSION {
        return Err(plugin_error(format!(
            "plugin {p} declares plugin ABI version {abi}, but this deepspeed_rs implements version {DSRS_ACCELERATOR_PLUGIN_ABI_VERSION}; rebuild the plugin against this deepspeed_rs.h"
        )));
    }
    let need = std::mem::size_of::<dsrs_accelerator_plugin_v1>();
    if (size as usize) < need {
        return Err(plugin_error(format!(
            "plugin {p}: its table is {size} bytes, but plugin ABI {abi} needs {need} (struct_size must be sizeof(dsrs_accelerator_plugin_v1))"
        )));
    }
    // SAFETY: the plugin promises `size` ≥ `need` readable bytes.
    let table = unsafe { *ptr };
    let name = validate(&table, path)?;
    Ok(Plugin {
        communication_backend: c_string(table.communication_backend)
            .unwrap_or_else(|| "mpi".into()),
        name,
        path: path.to_path_buf(),
        table,
        _lib: lib,
    })
}

/// Plugins loaded so far: canonical path → name.
static LOADED: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());

/// Plugins from `DSRS_ACCELERATOR_PLUGINS` that failed to load: (path, error).
static ENV_FAILURES: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Loads a plugin library, validates it and registers its accelerator; returns its name.
/// Loading the same file again returns the name without loading twice.
pub fn load_plugin(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    let canonical = std::fs::canonicalize(path).map_err(|e| {
        plugin_error(format!(
            "cannot load accelerator plugin {}: {e}",
            path.display()
        ))
    })?;
    let mut loaded = LOADED.lock();
    if let Some((_, name)) = loaded.iter().find(|(p, _)| *p == canonical) {
        return Ok(name.clone());
    }
    let plugin = open(&canonical)?;
    let name = plugin.name.clone();
    super::factory::register_provider(Arc::new(PluginProvider {
        plugin: Arc::new(plugin),
    }))
    .map_err(|e| plugin_error(format!("plugin {}: {e}", canonical.display())))?;
    loaded.push((canonical.clone(), name.clone()));
    dsrs_info!(
        "accelerator",
        "loaded accelerator plugin {name:?} from {}",
        canonical.display()
    );
    Ok(name)
}

/// The environment variable listing plugins to load on first use of the factory.
pub const ENV_PLUGINS: &str = "DSRS_ACCELERATOR_PLUGINS";

/// Loads the plugins named by `DSRS_ACCELERATOR_PLUGINS` (once per process). Failures are
/// logged and reported by [`env_failures`]; they do not stop the others.
pub(crate) fn load_env_plugins() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let Some(list) = std::env::var_os(ENV_PLUGINS) else {
            return;
        };
        for path in std::env::split_paths(&list) {
            if path.as_os_str().is_empty() {
                continue;
            }
            if let Err(e) = load_plugin(&path) {
                dsrs_warn!("accelerator", "{ENV_PLUGINS}: {e}");
                ENV_FAILURES
                    .lock()
                    .push((path.display().to_string(), e.to_string()));
            }
        }
    });
}

/// Plugins from `DSRS_ACCELERATOR_PLUGINS` that failed to load: (path, error).
pub fn env_failures() -> Vec<(String, String)> {
    ENV_FAILURES.lock().clone()
}

struct PluginProvider {
    plugin: Arc<Plugin>,
}

impl AcceleratorProvider for PluginProvider {
    fn name(&self) -> &str {
        &self.plugin.name
    }
    fn probe(&self) -> Probe {
        let path = self.plugin.path.display();
        match self.plugin.table.probe {
            None => Probe {
                available: true,
                detail: format!("plugin {path}"),
            },
            Some(probe) => {
                let mut buf = [0 as c_char; 512];
                // SAFETY: the buffer holds 512 bytes; its last byte stays NUL below.
                let ok = unsafe { probe(buf.as_mut_ptr(), buf.len() - 1) };
                buf[511] = 0;
                let detail = c_string(buf.as_ptr()).unwrap_or_default();
                Probe {
                    available: ok == 1,
                    detail: if detail.is_empty() {
                        format!("plugin {path}")
                    } else {
                        format!("{detail} (plugin {path})")
                    },
                }
            }
        }
    }
    fn create(&self, options: &Value) -> Result<Arc<dyn Accelerator>> {
        Ok(Arc::new(PluginAccelerator::new(
            Arc::clone(&self.plugin),
            options,
        )?))
    }
}

/// One initialised plugin instance; `destroy` runs when the last user goes.
struct Instance {
    plugin: Arc<Plugin>,
    state: *mut c_void,
}

// SAFETY: plugins are thread-safe by contract; the state pointer is opaque to us.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Instance({})", self.plugin.name)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(destroy) = self.plugin.table.destroy {
            // SAFETY: state came from init and is destroyed once.
            unsafe { destroy(self.state) };
        }
    }
}

impl Instance {
    /// Turns an entry's status into a result.
    fn check(&self, entry: &str, status: i32) -> Result<()> {
        check_status(&self.plugin, self.state, entry, status)
    }
}

fn check_status(plugin: &Plugin, state: *mut c_void, entry: &str, status: i32) -> Result<()> {
    if status == 0 {
        return Ok(());
    }
    let detail = plugin
        .table
        .last_error
        // SAFETY: last_error takes the state (or NULL) and returns a string or NULL.
        .and_then(|f| c_string(unsafe { f(state) }))
        .filter(|s| !s.is_empty())
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    let msg = format!(
        "accelerator plugin '{}': {entry} failed with status {status}{detail}",
        plugin.name
    );
    // dsrs_status values keep their meaning (src/ffi/status.rs); anything else is a
    // device error.
    Err(match status {
        100 | 101 => Error::invalid(msg),
        102 => Error::range(msg),
        203 => Error::InvalidState(msg),
        300 | 301 => Error::config(msg),
        401 => Error::unavailable(plugin.name.clone(), msg),
        402 => Error::OutOfMemory(msg),
        403 => Error::Unsupported(msg),
        _ => Error::Device(msg),
    })
}

/// A plugin stream (or a host stream when the plugin has none).
#[derive(Debug)]
struct PluginStream {
    instance: Arc<Instance>,
    accelerator_id: u64,
    device: usize,
    handle: *mut c_void,
    default: bool,
}

// SAFETY: plugin handles are opaque and the plugin is thread-safe by contract.
unsafe impl Send for PluginStream {}
// SAFETY: as above.
unsafe impl Sync for PluginStream {}

impl Drop for PluginStream {
    fn drop(&mut self) {
        if !self.default
            && let Some(f) = self.instance.plugin.table.stream_destroy
        {
            // SAFETY: the stream came from stream_create and is destroyed once.
            unsafe { f(self.instance.state, self.device as u32, self.handle) };
        }
    }
}

impl Stream for PluginStream {
    fn accelerator_id(&self) -> u64 {
        self.accelerator_id
    }
    fn device(&self) -> usize {
        self.device
    }
    fn is_default(&self) -> bool {
        self.default
    }
    fn synchronize(&self) -> Result<()> {
        let f = self
            .instance
            .plugin
            .table
            .stream_synchronize
            .expect("validated group");
        // SAFETY: a live stream of this instance.
        let st = unsafe { f(self.instance.state, self.device as u32, self.handle) };
        self.instance.check("stream_synchronize", st)
    }
    fn query(&self) -> Result<bool> {
        match self.instance.plugin.table.stream_query {
            Some(f) => {
                let mut done = false;
                // SAFETY: a live stream; done is a valid out-pointer.
                let st = unsafe {
                    f(
                        self.instance.state,
                        self.device as u32,
                        self.handle,
                        &mut done,
                    )
                };
                self.instance.check("stream_query", st)?;
                Ok(done)
            }
            None => self.synchronize().map(|_| true),
        }
    }
    fn wait_event(&self, event: &dyn Event) -> Result<()> {
        let e = event
            .as_any()
            .downcast_ref::<PluginEvent>()
            .filter(|e| e.accelerator_id == self.accelerator_id);
        match (e, self.instance.plugin.table.stream_wait_event) {
            (Some(e), Some(f)) => {
                // SAFETY: live stream and event of this instance.
                let st = unsafe {
                    f(
                        self.instance.state,
                        self.device as u32,
                        self.handle,
                        e.handle,
                    )
                };
                self.instance.check("stream_wait_event", st)
            }
            (Some(_), None) => event.synchronize(),
            (None, _) if event.accelerator_id() == self.accelerator_id => event.synchronize(),
            (None, _) => Err(Error::invalid(
                "the event belongs to a different accelerator",
            )),
        }
    }
    fn native_handle(&self) -> *mut c_void {
        self.handle
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[derive(Debug)]
struct PluginEvent {
    instance: Arc<Instance>,
    accelerator_id: u64,
    handle: *mut c_void,
    timing: bool,
    recorded: AtomicBool,
}

// SAFETY: plugin handles are opaque and the plugin is thread-safe by contract.
unsafe impl Send for PluginEvent {}
// SAFETY: as above.
unsafe impl Sync for PluginEvent {}

impl Drop for PluginEvent {
    fn drop(&mut self) {
        if let Some(f) = self.instance.plugin.table.event_destroy {
            // SAFETY: the event came from event_create and is destroyed once.
            unsafe { f(self.instance.state, self.handle) };
        }
    }
}

impl Event for PluginEvent {
    fn accelerator_id(&self) -> u64 {
        self.accelerator_id
    }
    fn record(&self, stream: &dyn Stream) -> Result<()> {
        if stream.accelerator_id() != self.accelerator_id {
            return Err(Error::invalid(
                "the stream belongs to a different accelerator",
            ));
        }
        // A host stream (a plugin without stream entries) is the plugin's NULL stream.
        let handle = stream
            .as_any()
            .downcast_ref::<PluginStream>()
            .map_or(std::ptr::null_mut(), |s| s.handle);
        let f = self
            .instance
            .plugin
            .table
            .event_record
            .expect("validated group");
        // SAFETY: live event and stream of this instance.
        let st = unsafe { f(self.instance.state, self.handle, handle) };
        self.instance.check("event_record", st)?;
        self.recorded.store(true, Ordering::Release);
        Ok(())
    }
    fn synchronize(&self) -> Result<()> {
        if !self.recorded.load(Ordering::Acquire) {
            return Ok(());
        }
        let f = self
            .instance
            .plugin
            .table
            .event_synchronize
            .expect("validated group");
        // SAFETY: a live event.
        let st = unsafe { f(self.instance.state, self.handle) };
        self.instance.check("event_synchronize", st)
    }
    fn query(&self) -> Result<bool> {
        if !self.recorded.load(Ordering::Acquire) {
            return Ok(true);
        }
        match self.instance.plugin.table.event_query {
            Some(f) => {
                let mut done = false;
                // SAFETY: a live event; done is a valid out-pointer.
                let st = unsafe { f(self.instance.state, self.handle, &mut done) };
                self.instance.check("event_query", st)?;
                Ok(done)
            }
            None => self.synchronize().map(|_| true),
        }
    }
    fn elapsed_ms(&self, end: &dyn Event) -> Result<f64> {
        let end = end
            .as_any()
            .downcast_ref::<PluginEvent>()
            .filter(|e| e.accelerator_id == self.accelerator_id)
            .ok_or_else(|| Error::invalid("the end event belongs to a different accelerator"))?;
        check_elapsed(
            [self.timing, end.timing],
            [
                self.recorded.load(Ordering::Acquire),
                end.recorded.load(Ordering::Acquire),
            ],
        )?;
        let f = self
            .instance
            .plugin
            .table
            .event_elapsed_ms
            .expect("validated group");
        let mut ms = 0f64;
        // SAFETY: live events; ms is a valid out-pointer.
        let st = unsafe { f(self.instance.state, self.handle, end.handle, &mut ms) };
        self.instance.check("event_elapsed_ms", st)?;
        Ok(ms)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// An accelerator provided by a plugin.
#[derive(Debug)]
pub struct PluginAccelerator {
    id: u64,
    instance: Arc<Instance>,
    devices: usize,
    counters: Vec<Counters>,
    rngs: Vec<Mutex<rng::State>>,
    default_streams: Vec<Arc<dyn Stream>>,
    pinned: Ranges,
    /// The plugin's allocations: start → (length, device), so an operation goes to the
    /// device that owns its memory whatever the thread's current device.
    owners: Mutex<BTreeMap<usize, (usize, usize)>>,
}

impl PluginAccelerator {
    fn new(plugin: Arc<Plugin>, options: &Value) -> Result<PluginAccelerator> {
        let t = plugin.table;
        let json = if options.is_null() {
            None
        } else {
            Some(CString::new(options.to_string()).expect("JSON has no NUL"))
        };
        let mut state: *mut c_void = std::ptr::null_mut();
        let init = t.init.expect("validated");
        // SAFETY: the options string (or NULL) and the out-pointer are valid for the call.
        let st = unsafe {
            init(
                json.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                &mut state,
            )
        };
        if st != 0 {
            let e = check_status(&plugin, std::ptr::null_mut(), "init", st).unwrap_err();
            // Options the plugin refuses keep their kind (INVALID_CONFIG...); a device
            // that cannot start makes the accelerator unavailable.
            return Err(match e.kind() {
                ErrorKind::InvalidConfig
                | ErrorKind::InvalidArgument
                | ErrorKind::OutOfRange
                | ErrorKind::Unavailable => e,
                _ => Error::unavailable(plugin.name.clone(), format!("failed to initialize: {e}")),
            });
        }
        let instance = Arc::new(Instance { plugin, state });
        let mut n = 0u32;
        let count = t.device_count.expect("validated");
        // SAFETY: n is a valid out-pointer.
        instance.check("device_count", unsafe { count(state, &mut n) })?;
        if n == 0 {
            return Err(Error::unavailable(
                instance.plugin.name.clone(),
                "the plugin reports no device",
            ));
        }
        let devices = n as usize;
        let id = super::next_accelerator_id();
        let default_streams = (0..devices)
            .map(|d| -> Arc<dyn Stream> {
                if t.stream_create.is_some() {
                    Arc::new(PluginStream {
                        instance: Arc::clone(&instance),
                        accelerator_id: id,
                        device: d,
                        handle: std::ptr::null_mut(),
                        default: true,
                    })
                } else {
                    Arc::new(HostStream::new(id, d, true))
                }
            })
            .collect();
        Ok(PluginAccelerator {
            id,
            devices,
            counters: (0..devices).map(|_| Counters::default()).collect(),
            rngs: (0..devices)
                .map(|_| Mutex::new(rng::State::new(rng::DEFAULT_SEED)))
                .collect(),
            default_streams,
            pinned: Ranges::default(),
            owners: Mutex::new(BTreeMap::new()),
            instance,
        })
    }

    fn table(&self) -> &dsrs_accelerator_plugin_v1 {
        &self.instance.plugin.table
    }

    fn state(&self) -> *mut c_void {
        self.instance.state
    }

    /// The plugin's handle for a stream of ours (NULL: the default stream).
    fn stream_handle(&self, stream: Option<&dyn Stream>) -> Result<*mut c_void> {
        let current;
        let s = match stream {
            Some(s) => s,
            None => {
                current = self.current_stream()?;
                current.as_ref()
            }
        };
        if s.accelerator_id() != self.id {
            return Err(Error::invalid(
                "the stream belongs to a different accelerator",
            ));
        }
        Ok(s.as_any()
            .downcast_ref::<PluginStream>()
            .map_or(std::ptr::null_mut(), |p| p.handle))
    }
}

impl Accelerator for PluginAccelerator {
    fn id(&self) -> u64 {
        self.id
    }
    fn name(&self) -> &str {
        &self.instance.plugin.name
    }
    fn dlpack_device_type(&self) -> i32 {
        self.table().dlpack_device_type
    }
    fn is_host(&self) -> bool {
        self.table().flags & DSRS_PLUGIN_HOST_MEMORY != 0
    }
    fn is_available(&self) -> bool {
        true
    }
    fn communication_backend_name(&self) -> &str {
        &self.instance.plugin.communication_backend
    }
    fn is_synchronized_device(&self) -> bool {
        self.table().flags & DSRS_PLUGIN_SYNCHRONOUS != 0
    }

    fn device_count(&self) -> usize {
        self.devices
    }
    fn device_name(&self, device: Option<usize>) -> Result<String> {
        let d = self.resolve_device(device)?;
        match self.table().device_name {
            Some(f) => {
                let mut buf = [0 as c_char; 256];
                // SAFETY: the buffer holds 256 bytes; the last stays NUL.
                let st = unsafe { f(self.state(), d as u32, buf.as_mut_ptr(), 255) };
                self.instance.check("device_name", st)?;
                buf[255] = 0;
                Ok(c_string(buf.as_ptr()).unwrap_or_default())
            }
            None => Ok(format!("{}:{d}", self.name())),
        }
    }
    fn set_device(&self, device: usize) -> Result<()> {
        self.resolve_device(Some(device))?;
        thread::set_device(self.id, device);
        Ok(())
    }
    fn synchronize(&self, device: Option<usize>) -> Result<()> {
        let d = self.resolve_device(device)?;
        match self.table().synchronize {
            // SAFETY: a valid device index.
            Some(f) => self
                .instance
                .check("synchronize", unsafe { f(self.state(), d as u32) }),
            None => Ok(()),
        }
    }

    fn total_memory(&self, device: Option<usize>) -> Result<u64> {
        Ok(self.memory_info(device)?.0)
    }
    fn available_memory(&self, device: Option<usize>) -> Result<u64> {
        Ok(self.memory_info(device)?.1)
    }
    fn memory_stats(&self, device: Option<usize>) -> Result<MemoryStats> {
        let d = self.resolve_device(device)?;
        let mut s = self.counters[d].stats(None);
        if let Some(f) = self.table().memory_stats {
            let mut p = dsrs_plugin_memory_stats::default();
            // SAFETY: p is a valid out-pointer.
            self.instance
                .check("memory_stats", unsafe { f(self.state(), d as u32, &mut p) })?;
            s.allocated_bytes = p.allocated_bytes;
            s.peak_allocated_bytes = p.peak_allocated_bytes;
            s.reserved_bytes = p.reserved_bytes;
            s.peak_reserved_bytes = p.peak_reserved_bytes;
            s.allocations = p.allocations;
            s.peak_allocations = p.peak_allocations;
            s.num_ooms = p.num_ooms;
        }
        Ok(s)
    }
    fn reset_peak_memory_stats(&self, device: Option<usize>) -> Result<()> {
        let d = self.resolve_device(device)?;
        self.counters[d].reset_peaks();
        match self.table().reset_peak_memory_stats {
            // SAFETY: a valid device index.
            Some(f) => self.instance.check("reset_peak_memory_stats", unsafe {
                f(self.state(), d as u32)
            }),
            None => Ok(()),
        }
    }
    fn empty_cache(&self) -> Result<()> {
        match self.table().empty_cache {
            // SAFETY: the state is live.
            Some(f) => self
                .instance
                .check("empty_cache", unsafe { f(self.state()) }),
            None => Ok(()),
        }
    }

    fn dtype_support(&self, dtype: DType) -> DTypeSupport {
        match self.table().dtype_support {
            Some(f) => {
                // SAFETY: plain value arguments.
                let bits = unsafe { f(self.state(), dtype.to_dl()) };
                DTypeSupport {
                    supported: bits & DSRS_PLUGIN_DTYPE_SUPPORTED != 0,
                    native: bits & DSRS_PLUGIN_DTYPE_NATIVE != 0,
                }
            }
            None => DTypeSupport {
                supported: true,
                native: !matches!(dtype, DType::F16 | DType::BF16),
            },
        }
    }

    fn manual_seed(&self, seed: u64) -> Result<()> {
        let d = self.resolve_device(None)?;
        *self.rngs[d].lock() = rng::State::new(seed);
        Ok(())
    }
    fn initial_seed(&self) -> u64 {
        self.resolve_device(None)
            .map(|d| self.rngs[d].lock().seed)
            .unwrap_or(rng::DEFAULT_SEED)
    }
    fn rng_state(&self) -> Result<Vec<u8>> {
        let d = self.resolve_device(None)?;
        Ok(self.rngs[d].lock().to_bytes())
    }
    fn set_rng_state(&self, state: &[u8]) -> Result<()> {
        let d = self.resolve_device(None)?;
        *self.rngs[d].lock() = rng::State::from_bytes(state)?;
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
        let on_host = matches!(tensor.device.device_type, kDLCPU | kDLCUDAHost) || self.is_host();
        if !on_host && tensor.device.device_type != self.dlpack_device_type() {
            return Err(Error::invalid(format!(
                "the {} accelerator cannot fill a tensor on DLPack device type {}",
                self.name(),
                tensor.device.device_type
            )));
        }
        // The generator of the device that owns the memory (torch: the tensor's device).
        let d = match self.device_of(tensor.ptr) {
            Some(d) => d,
            None => self.resolve_device(None)?,
        };
        let mut state = self.rngs[d].lock();
        if on_host {
            // SAFETY: the caller guarantees tensor.nbytes writable host bytes.
            return unsafe {
                rng::fill(
                    &mut state,
                    dist,
                    tensor.dtype,
                    tensor.ptr as *mut u8,
                    tensor.numel,
                )
            };
        }
        // Device memory: the same bits, generated on the host and copied over.
        let mut staged = vec![0u8; tensor.nbytes];
        let before = *state;
        // SAFETY: staged holds nbytes = numel * dtype size bytes.
        unsafe {
            rng::fill(
                &mut state,
                dist,
                tensor.dtype,
                staged.as_mut_ptr(),
                tensor.numel,
            )?
        };
        // SAFETY: the device range is the caller's contract; staged is live for the copy.
        let r = unsafe {
            self.copy(
                tensor.ptr,
                true,
                staged.as_ptr() as usize,
                false,
                tensor.nbytes,
                stream,
            )
        };
        if r.is_err() {
            *state = before;
        }
        r
    }

    fn default_stream(&self) -> Result<Arc<dyn Stream>> {
        Ok(self.default_streams[self.resolve_device(None)?].clone())
    }
    fn new_stream(&self) -> Result<Arc<dyn Stream>> {
        let d = self.resolve_device(None)?;
        match self.table().stream_create {
            Some(f) => {
                let mut h = std::ptr::null_mut();
                // SAFETY: h is a valid out-pointer.
                self.instance.check("stream_create", unsafe {
                    f(self.state(), d as u32, &mut h)
                })?;
                Ok(Arc::new(PluginStream {
                    instance: Arc::clone(&self.instance),
                    accelerator_id: self.id,
                    device: d,
                    handle: h,
                    default: false,
                }))
            }
            None => Ok(Arc::new(HostStream::new(self.id, d, false))),
        }
    }
    fn set_current_stream(&self, stream: Arc<dyn Stream>) -> Result<()> {
        if stream.accelerator_id() != self.id {
            return Err(Error::invalid(
                "the stream belongs to a different accelerator",
            ));
        }
        thread::set_stream(self.id, stream);
        Ok(())
    }
    fn new_event(&self, timing: bool) -> Result<Arc<dyn Event>> {
        let d = self.resolve_device(None)?;
        match self.table().event_create {
            Some(f) => {
                let mut h = std::ptr::null_mut();
                // SAFETY: h is a valid out-pointer.
                self.instance.check("event_create", unsafe {
                    f(self.state(), d as u32, timing, &mut h)
                })?;
                Ok(Arc::new(PluginEvent {
                    instance: Arc::clone(&self.instance),
                    accelerator_id: self.id,
                    handle: h,
                    timing,
                    recorded: AtomicBool::new(false),
                }))
            }
            None => Ok(Arc::new(HostEvent::new(self.id, timing))),
        }
    }

    fn range_push(&self, name: &str) -> Result<()> {
        if let Some(f) = self.table().range_push {
            let c = CString::new(name.replace('\0', " ")).expect("no NUL");
            // SAFETY: c is a valid string for the call.
            self.instance
                .check("range_push", unsafe { f(self.state(), c.as_ptr()) })?;
        }
        thread::push_range(self.id, name);
        Ok(())
    }
    fn range_pop(&self) -> Result<()> {
        if thread::range_depth(self.id) == 0 {
            return thread::pop_range(self.id).map(|_| ()); // the "without a push" error
        }
        if let Some(f) = self.table().range_pop {
            // SAFETY: the state is live.
            self.instance
                .check("range_pop", unsafe { f(self.state()) })?;
        }
        let (name, ms) = thread::pop_range(self.id)?;
        dsrs_info!("range", "{name:?} took {ms:.3} ms");
        Ok(())
    }

    fn allocate(&self, size: usize, align: usize, kind: MemoryKind) -> Result<Allocation> {
        let device = self.current_device();
        let d = self.resolve_device(Some(device))?;
        let ptr = if size == 0 {
            0
        } else if kind == MemoryKind::Host {
            super::cpu::memory::alloc_host(size, align)
                .inspect_err(|_| self.counters[d].note_oom())?
        } else {
            let f = self.table().allocate.expect("validated");
            let code = if kind == MemoryKind::Pinned { 2 } else { 0 };
            let mut p = std::ptr::null_mut();
            // SAFETY: p is a valid out-pointer.
            let st = unsafe { f(self.state(), d as u32, size, align, code, &mut p) };
            if let Err(e) = self.instance.check("allocate", st) {
                if e.kind() == crate::ErrorKind::OutOfMemory {
                    self.counters[d].note_oom();
                }
                return Err(e);
            }
            if p.is_null() || (p as usize) % align != 0 {
                return Err(Error::Device(format!(
                    "accelerator plugin '{}': allocate returned {p:?}, which is not a {align}-byte aligned address",
                    self.name()
                )));
            }
            if kind == MemoryKind::Pinned {
                self.pinned.insert(p as usize, size);
                self.counters[d].add_pinned(size as u64);
            }
            self.owners.lock().insert(p as usize, (size, d));
            p as usize
        };
        self.counters[d].reserve(size as u64, None, self.name())?;
        Ok(Allocation {
            ptr,
            size,
            align,
            kind,
            device,
        })
    }
    unsafe fn deallocate(&self, a: &Allocation) {
        if a.device >= self.devices {
            return;
        }
        self.counters[a.device].release(a.size as u64);
        if a.ptr == 0 {
            return;
        }
        if a.kind == MemoryKind::Host {
            // SAFETY: allocated by alloc_host with these figures.
            unsafe { super::cpu::memory::free_host(a.ptr, a.size, a.align) };
            return;
        }
        if a.kind == MemoryKind::Pinned {
            self.pinned.remove(a.ptr);
            self.counters[a.device].sub_pinned(a.size as u64);
        }
        self.owners.lock().remove(&a.ptr);
        let f = self.table().deallocate.expect("validated");
        let code = if a.kind == MemoryKind::Pinned { 2 } else { 0 };
        // SAFETY: the allocation came from the plugin's allocate and is freed once.
        let st = unsafe {
            f(
                self.state(),
                a.device as u32,
                a.ptr as *mut c_void,
                a.size,
                code,
            )
        };
        if let Err(e) = self.instance.check("deallocate", st) {
            dsrs_warn!("accelerator", "{e}");
        }
    }
    fn is_pinned(&self, ptr: usize) -> bool {
        self.pinned.contains(ptr)
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
        let h = self.stream_handle(stream)?;
        let dst_dev = if dst_on_device {
            self.device_of(dst)
        } else {
            None
        };
        let src_dev = if src_on_device {
            self.device_of(src)
        } else {
            None
        };
        if let (Some(a), Some(b)) = (dst_dev, src_dev)
            && a != b
        {
            // Between two devices of the plugin: through host memory (one call names one
            // device).
            let mut staged = vec![0u8; n];
            // SAFETY: staged holds n bytes; the ranges are the caller's contract.
            unsafe {
                self.copy(staged.as_mut_ptr() as usize, false, src, true, n, stream)?;
                return self.copy(dst, true, staged.as_ptr() as usize, false, n, stream);
            }
        }
        let d = dst_dev.or(src_dev).unwrap_or_else(|| self.current_device());
        let f = self.table().copy.expect("validated");
        // SAFETY: the caller guarantees both ranges.
        let st = unsafe {
            f(
                self.state(),
                d as u32,
                dst as *mut c_void,
                dst_on_device,
                src as *const c_void,
                src_on_device,
                n,
                h,
            )
        };
        self.instance.check("copy", st)
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
        match (dst_on_device, self.table().fill) {
            (true, Some(f)) => {
                let h = self.stream_handle(stream)?;
                let d = self.device_of(dst).unwrap_or_else(|| self.current_device());
                // SAFETY: the caller guarantees the device range; pattern is live.
                let st = unsafe {
                    f(
                        self.state(),
                        d as u32,
                        dst as *mut c_void,
                        n,
                        pattern.as_ptr() as *const c_void,
                        p,
                        h,
                    )
                };
                self.instance.check("fill", st)
            }
            _ => {
                let staged = pattern_bytes(n, pattern);
                // SAFETY: staged holds n bytes; the destination is the caller's contract.
                unsafe {
                    self.copy(
                        dst,
                        dst_on_device,
                        staged.as_ptr() as usize,
                        false,
                        n,
                        stream,
                    )
                }
            }
        }
    }

    fn extra_info(&self) -> Value {
        let t = self.table();
        let optional: Vec<&str> = [
            ("probe", t.probe.is_some()),
            ("last_error", t.last_error.is_some()),
            ("device_name", t.device_name.is_some()),
            ("fill", t.fill.is_some()),
            ("memory_stats", t.memory_stats.is_some()),
            ("empty_cache", t.empty_cache.is_some()),
            ("dtype_support", t.dtype_support.is_some()),
            ("streams", t.stream_create.is_some()),
            ("events", t.event_create.is_some()),
            ("ranges", t.range_push.is_some()),
        ]
        .into_iter()
        .filter(|e| e.1)
        .map(|e| e.0)
        .collect();
        json!({
            "plugin_path": self.instance.plugin.path.display().to_string(),
            "plugin_abi_version": t.abi_version,
            "host_memory": self.is_host(),
            "optional_entries": optional,
        })
    }
}

impl PluginAccelerator {
    /// The device owning the plugin allocation that contains `ptr`.
    fn device_of(&self, ptr: usize) -> Option<usize> {
        self.owners
            .lock()
            .range(..=ptr)
            .next_back()
            .filter(|(start, (len, _))| ptr < *start + (*len).max(1))
            .map(|(_, &(_, device))| device)
    }

    fn memory_info(&self, device: Option<usize>) -> Result<(u64, u64)> {
        let d = self.resolve_device(device)?;
        let f = self.table().memory_info.expect("validated");
        let (mut total, mut avail) = (0u64, 0u64);
        // SAFETY: valid out-pointers.
        self.instance.check("memory_info", unsafe {
            f(self.state(), d as u32, &mut total, &mut avail)
        })?;
        Ok((total, avail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout is the ABI: two u32s, a pointer, a u32 and an i32, a pointer, then 29
    /// function pointers. A change here must come with a new ABI version.
    #[test]
    fn the_v1_table_layout_is_fixed() {
        let p = std::mem::size_of::<usize>();
        assert_eq!(
            std::mem::size_of::<dsrs_accelerator_plugin_v1>(),
            8 + p + 8 + p + 29 * p
        );
        assert_eq!(
            std::mem::offset_of!(dsrs_accelerator_plugin_v1, probe),
            8 + p + 8 + p
        );
        assert_eq!(std::mem::size_of::<dsrs_plugin_memory_stats>(), 7 * 8);
    }

    fn empty_table() -> dsrs_accelerator_plugin_v1 {
        // SAFETY: all-zero is a valid table (NULL pointers, None entries).
        unsafe { std::mem::zeroed() }
    }

    #[test]
    fn validation_names_what_is_missing() {
        let mut t = empty_table();
        let path = Path::new("/p/libx.so");
        let e = validate(&t, path).unwrap_err();
        assert_eq!(e.to_string(), "plugin /p/libx.so: its table has no name");
        t.name = c"bad name".as_ptr();
        assert!(
            validate(&t, path)
                .unwrap_err()
                .to_string()
                .contains("must be non-empty ASCII")
        );
        t.name = c"x".as_ptr();
        let e = validate(&t, path).unwrap_err().to_string();
        assert!(
            e.contains("required entries are NULL: init, destroy, device_count, memory_info, allocate, deallocate, copy, synchronize"),
            "{e}"
        );
        unsafe extern "C" fn sync(_: *mut c_void, _: u32) -> i32 {
            0
        }
        unsafe extern "C" fn create(_: *mut c_void, _: u32, _: *mut *mut c_void) -> i32 {
            0
        }
        t.synchronize = Some(sync);
        t.stream_create = Some(create);
        let e = validate(&t, path).unwrap_err().to_string();
        assert!(e.contains("required entries are NULL: init,"), "{e}");
        assert!(!e.contains("synchronize"), "{e}");
    }
}
