/*
 * deepspeed_rs.hpp — header-only C++17 RAII wrapper over the deepspeed_rs C ABI
 * (deepspeed_rs.h).
 *
 *   #include <deepspeed_rs.hpp>
 *   auto accel = dsrs::Accelerator::current();
 *   dsrs::Buffer buf(accel, 1024);
 *   buf.write(0, src, 1024);
 *
 * Conventions:
 *  - Every failing C call becomes a dsrs::Error (a std::runtime_error) carrying the
 *    dsrs_status and the library's last-error message (which names the function and the
 *    argument at fault).
 *  - Handle classes (Accelerator, Buffer, Stream, Event, Engine) are move-only and own one handle
 *    each; their destructors call the matching dsrs_*_free and ignore its status. A
 *    moved-from object holds no handle; calling methods on it throws
 *    (DSRS_STATUS_NULL_ARGUMENT).
 *  - get() exposes the raw handle for C calls the wrapper does not cover; release() gives
 *    up ownership; the explicit constructor from a raw handle adopts one.
 *  - Thread-safety is the C library's: handles may be used from several threads.
 */
#ifndef DEEPSPEED_RS_HPP
#define DEEPSPEED_RS_HPP

#if !defined(__cplusplus) || __cplusplus < 201703L
#error "deepspeed_rs.hpp needs C++17; from C, include deepspeed_rs.h"
#endif

#include "deepspeed_rs.h"

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace dsrs {

// ----------------------------------------------------------------------------------------
// Errors.

/// The name of a status value, e.g. "DSRS_STATUS_OUT_OF_RANGE" ("DSRS_STATUS_UNKNOWN" for a
/// value that is not a status).
inline const char *status_name(dsrs_status status) noexcept {
  return dsrs_status_str(static_cast<int32_t>(status));
}

/// The calling thread's last error message ("" if none, or if it cannot be read).
inline std::string last_error_message() {
  size_t needed = 0;
  if (dsrs_last_error_message(nullptr, 0, &needed) != DSRS_STATUS_OK || needed == 0) return {};
  std::vector<char> buf(needed);
  if (dsrs_last_error_message(buf.data(), buf.size(), &needed) != DSRS_STATUS_OK) return {};
  return std::string(buf.data());
}

/// A failed deepspeed_rs call: its status and the library's message for it. what() is
/// "<message> [<status name>]".
class Error : public std::runtime_error {
 public:
  /// An error with a status and a message.
  Error(dsrs_status status, const std::string &message)
      : std::runtime_error(message + " [" + dsrs::status_name(status) + "]"),
        status_(status),
        message_(message) {}

  /// The status the C function returned.
  dsrs_status status() const noexcept { return status_; }
  /// The status as a name ("DSRS_STATUS_...").
  const char *status_name() const noexcept { return dsrs::status_name(status_); }
  /// The library's message: the failing function and the argument or value at fault.
  const std::string &message() const noexcept { return message_; }

 private:
  dsrs_status status_;
  std::string message_;
};

/// Throws dsrs::Error (with the calling thread's last error message) unless `status` is
/// DSRS_STATUS_OK. Call it right after the C call, on the same thread.
inline void check(dsrs_status status) {
  if (status == DSRS_STATUS_OK) return;
  std::string message = last_error_message();
  if (message.empty()) message = dsrs::status_name(status);
  throw Error(status, message);
}

/// The two-call pattern for text: runs `call(char *buf, size_t len, size_t *needed)` once to
/// learn the size, then with a buffer of that size, retrying while the text grows between
/// the calls (live figures); returns the text without its NUL. Throws dsrs::Error.
///   std::string name = dsrs::read_string([&](char *b, size_t l, size_t *n) {
///     return dsrs_accelerator_name(accel.get(), b, l, n); });
template <class Call>
std::string read_string(Call &&call) {
  size_t needed = 0;
  check(call(nullptr, 0, &needed));
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::vector<char> buf(needed > 0 ? needed : 1);
    dsrs_status status = call(buf.data(), buf.size(), &needed);
    if (status == DSRS_STATUS_BUFFER_TOO_SMALL) continue;  // live figures grew: retry
    check(status);
    return std::string(buf.data(), needed > 0 ? needed - 1 : 0);
  }
  throw Error(DSRS_STATUS_BUFFER_TOO_SMALL, "dsrs::read_string: the output kept growing");
}

/// The two-call pattern for bytes (no NUL), e.g. dsrs_accelerator_rng_state.
template <class Call>
std::vector<uint8_t> read_bytes(Call &&call) {
  size_t needed = 0;
  check(call(nullptr, 0, &needed));
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::vector<uint8_t> buf(needed);
    dsrs_status status = call(buf.empty() ? nullptr : buf.data(), buf.size(), &needed);
    if (status == DSRS_STATUS_BUFFER_TOO_SMALL) continue;
    check(status);
    buf.resize(needed);
    return buf;
  }
  throw Error(DSRS_STATUS_BUFFER_TOO_SMALL, "dsrs::read_bytes: the output kept growing");
}

namespace detail {

/// Owns one handle of type T; Free::release(T*) frees it (ignoring the status). Move-only;
/// the building block of the public handle classes.
template <class T, class Free>
class Handle {
 public:
  /// No handle.
  Handle() noexcept = default;
  /// Adopts `handle`.
  explicit Handle(T *handle) noexcept : handle_(handle) {}
  Handle(const Handle &) = delete;
  Handle &operator=(const Handle &) = delete;
  Handle(Handle &&other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  Handle &operator=(Handle &&other) noexcept {
    if (this != &other) {
      reset();
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  /// Frees the handle.
  ~Handle() { reset(); }

  /// The raw handle (nullptr if none).
  T *get() const noexcept { return handle_; }
  /// Gives up ownership.
  T *release() noexcept { return std::exchange(handle_, nullptr); }
  /// Frees the handle now (ignoring the status).
  void reset() noexcept {
    if (handle_ != nullptr) Free::release(handle_);
    handle_ = nullptr;
  }

 private:
  T *handle_ = nullptr;
};

/// Free policies of the handle types.
struct FreeAccelerator {
  static void release(dsrs_accelerator *h) noexcept { (void)dsrs_accelerator_free(h); }
};
struct FreeBuffer {
  static void release(dsrs_buffer *h) noexcept { (void)dsrs_buffer_free(h); }
};
struct FreeStream {
  static void release(dsrs_stream *h) noexcept { (void)dsrs_stream_free(h); }
};
struct FreeEvent {
  static void release(dsrs_event *h) noexcept { (void)dsrs_event_free(h); }
};
struct FreeEngine {
  static void release(dsrs_engine *h) noexcept { (void)dsrs_engine_free(h); }
};

}  // namespace detail

// ----------------------------------------------------------------------------------------
// Library-wide functions.

/// The loaded library's version, e.g. "0.1.0".
inline std::string version() { return dsrs_version(); }

/// The loaded library's C ABI version; equals DSRS_ABI_VERSION when header and library match.
inline uint32_t abi_version() noexcept { return dsrs_abi_version(); }

/// The names of every accelerator, in detection order ("cuda", "cpu", ...).
inline std::vector<std::string> accelerator_names() {
  std::string all = read_string(
      [](char *buf, size_t len, size_t *needed) { return dsrs_accelerator_names(buf, len, needed); });
  std::vector<std::string> names;
  size_t start = 0;
  while (start <= all.size()) {
    size_t comma = all.find(',', start);
    if (comma == std::string::npos) comma = all.size();
    if (comma > start) names.push_back(all.substr(start, comma - start));
    start = comma + 1;
  }
  return names;
}

/// Loads an accelerator plugin (a shared library exporting dsrs_accelerator_plugin_entry)
/// and registers its accelerator, which then joins detection (before cuda and cpu) and can
/// be created by name. Loading the same file again is a no-op. Throws dsrs::Error
/// (DSRS_STATUS_PLUGIN_INVALID, naming the file and the problem).
inline void load_plugin(const std::string &path) {
  check(dsrs_accelerator_load_plugin(path.c_str()));
}

/// The environment report as JSON (what `dsrs report --json` prints).
inline std::string report_json() {
  return read_string(
      [](char *buf, size_t len, size_t *needed) { return dsrs_report_json(buf, len, needed); });
}

/// Sets the log level filter (DSRS_LOG_OFF .. DSRS_LOG_TRACE).
inline void set_log_level(dsrs_log_level level) { check(dsrs_set_log_level(level)); }

/// The current log level filter.
inline dsrs_log_level log_level() {
  dsrs_log_level level = DSRS_LOG_OFF;
  check(dsrs_get_log_level(&level));
  return level;
}

/// Emits a log record through the library's sink (target "host" when empty).
inline void log(dsrs_log_level level, const std::string &target, const std::string &message) {
  check(dsrs_log(level, target.empty() ? nullptr : target.c_str(), message.c_str()));
}

/// The DLPack element type of a C++ arithmetic type (float, double, int8_t ... uint64_t,
/// bool), for Buffer::view and DLTensors.
template <class T>
constexpr DLDataType dtype_of() noexcept {
  static_assert(std::is_arithmetic<T>::value, "dtype_of<T>: T must be an arithmetic type");
  return DLDataType{static_cast<uint8_t>(std::is_same<T, bool>::value        ? kDLBool
                                         : std::is_floating_point<T>::value ? kDLFloat
                                         : std::is_signed<T>::value         ? kDLInt
                                                                            : kDLUInt),
                    static_cast<uint8_t>(sizeof(T) * 8), 1};
}

class Stream;
class Event;

// ----------------------------------------------------------------------------------------

/// An accelerator (CPU, CUDA, a plugin): devices, memory, random numbers, profiling.
class Accelerator {
 public:
  /// A new handle to the process-wide current accelerator (selected on first use:
  /// DSRS_ACCELERATOR, else detection).
  static Accelerator current() {
    dsrs_accelerator *h = nullptr;
    check(dsrs_accelerator_get(&h));
    return Accelerator(h);
  }

  /// A new accelerator by name ("cpu", "cuda", a loaded plugin's; case-insensitive) with
  /// JSON options ("" for defaults; the CPU takes devices, memory_limit, seed). It is not
  /// made current.
  static Accelerator create(const std::string &name, const std::string &options_json = "") {
    dsrs_accelerator *h = nullptr;
    check(dsrs_accelerator_new(name.c_str(), options_json.c_str(), &h));
    return Accelerator(h);
  }

  /// Adopts a raw handle (freed by the destructor).
  explicit Accelerator(dsrs_accelerator *handle) noexcept : h_(handle) {}

  /// The raw handle (still owned by this object).
  dsrs_accelerator *get() const noexcept { return h_.get(); }
  /// Gives up ownership of the raw handle.
  dsrs_accelerator *release() noexcept { return h_.release(); }

  /// The accelerator's name ("cpu", ...).
  std::string name() const {
    return read_string(
        [this](char *b, size_t l, size_t *n) { return dsrs_accelerator_name(get(), b, l, n); });
  }
  /// Whether it is usable.
  bool is_available() const {
    bool out = false;
    check(dsrs_accelerator_is_available(get(), &out));
    return out;
  }
  /// The DLPack device type of its device memory (kDLCPU, kDLCUDA, ...).
  int32_t device_type() const {
    int32_t out = 0;
    check(dsrs_accelerator_device_type(get(), &out));
    return out;
  }
  /// The collective-communication backend ("mpi", "nccl").
  std::string communication_backend() const {
    return read_string([this](char *b, size_t l, size_t *n) {
      return dsrs_accelerator_communication_backend(get(), b, l, n);
    });
  }
  /// Whether work completes when it is submitted (the CPU).
  bool is_synchronized_device() const {
    bool out = false;
    check(dsrs_accelerator_is_synchronized_device(get(), &out));
    return out;
  }

  /// Number of devices.
  uint32_t device_count() const {
    uint32_t out = 0;
    check(dsrs_accelerator_device_count(get(), &out));
    return out;
  }
  /// A device's name; -1 is the current device.
  std::string device_name(int32_t device = -1) const {
    return read_string([this, device](char *b, size_t l, size_t *n) {
      return dsrs_accelerator_device_name(get(), device, b, l, n);
    });
  }
  /// A device's properties as a JSON object (index, name, uuid, compute_capability,
  /// multiprocessors, total_memory, pci_bus_id); -1 is the current device.
  std::string device_properties_json(int32_t device = -1) const {
    return read_string([this, device](char *b, size_t l, size_t *n) {
      return dsrs_accelerator_device_properties_json(get(), device, b, l, n);
    });
  }
  /// Makes `device` the calling thread's current device.
  void set_device(int32_t device) { check(dsrs_accelerator_set_device(get(), device)); }
  /// The calling thread's current device.
  int32_t current_device() const {
    int32_t out = -1;
    check(dsrs_accelerator_current_device(get(), &out));
    return out;
  }
  /// Waits for all work on `device` (-1: current).
  void synchronize(int32_t device = -1) const { check(dsrs_accelerator_synchronize(get(), device)); }

  /// Total memory of `device` (-1: current), bytes.
  uint64_t total_memory(int32_t device = -1) const {
    return u64(dsrs_accelerator_total_memory, device);
  }
  /// Memory available for new allocations on `device`, bytes.
  uint64_t available_memory(int32_t device = -1) const {
    return u64(dsrs_accelerator_available_memory, device);
  }
  /// Bytes the library has allocated on `device`.
  uint64_t memory_allocated(int32_t device = -1) const {
    return u64(dsrs_accelerator_memory_allocated, device);
  }
  /// Peak of memory_allocated since creation or the last reset.
  uint64_t max_memory_allocated(int32_t device = -1) const {
    return u64(dsrs_accelerator_max_memory_allocated, device);
  }
  /// Bytes reserved from the system on `device`.
  uint64_t memory_reserved(int32_t device = -1) const {
    return u64(dsrs_accelerator_memory_reserved, device);
  }
  /// Peak of memory_reserved since creation or the last reset.
  uint64_t max_memory_reserved(int32_t device = -1) const {
    return u64(dsrs_accelerator_max_memory_reserved, device);
  }
  /// Resets the peak statistics of `device` to the current values.
  void reset_peak_memory_stats(int32_t device = -1) {
    check(dsrs_accelerator_reset_peak_memory_stats(get(), device));
  }
  /// Returns cached, unused memory to the system.
  void empty_cache() { check(dsrs_accelerator_empty_cache(get())); }
  /// Memory statistics of `device` as JSON (PyTorch's key names).
  std::string memory_stats_json(int32_t device = -1) const {
    return read_string([this, device](char *b, size_t l, size_t *n) {
      return dsrs_accelerator_memory_stats_json(get(), device, b, l, n);
    });
  }
  /// A JSON description of the accelerator and its devices.
  std::string info_json() const {
    return read_string(
        [this](char *b, size_t l, size_t *n) { return dsrs_accelerator_info_json(get(), b, l, n); });
  }
  /// Whether `ptr` lies in page-locked memory allocated by this accelerator.
  bool is_pinned(const void *ptr) const {
    bool out = false;
    check(dsrs_accelerator_is_pinned(get(), ptr, &out));
    return out;
  }
  /// Whether `dtype` is supported (first) and native (second).
  std::pair<bool, bool> dtype_supported(DLDataType dtype) const {
    bool supported = false, native = false;
    check(dsrs_accelerator_dtype_supported(get(), dtype, &supported, &native));
    return {supported, native};
  }

  /// Seeds the current device's generator (offset back to 0).
  void manual_seed(uint64_t seed) { check(dsrs_accelerator_manual_seed(get(), seed)); }
  /// The seed of the current device's generator.
  uint64_t initial_seed() const {
    uint64_t out = 0;
    check(dsrs_accelerator_initial_seed(get(), &out));
    return out;
  }
  /// The generator's state (24 bytes), for set_rng_state.
  std::vector<uint8_t> rng_state() const {
    return read_bytes([this](uint8_t *b, size_t l, size_t *n) {
      return dsrs_accelerator_rng_state(get(), b, l, n);
    });
  }
  /// Restores a state from rng_state (malformed states throw DSRS_STATUS_FORMAT and leave
  /// the generator unchanged).
  void set_rng_state(const std::vector<uint8_t> &state) {
    check(dsrs_accelerator_set_rng_state(get(), state.empty() ? nullptr : state.data(),
                                         state.size()));
  }
  /// Fills a contiguous tensor with random numbers (DSRS_DISTRIBUTION_UNIFORM: [a, b);
  /// _NORMAL: mean a, std b; _BITS: raw bits) on `stream` (nullptr: current stream).
  inline void rng_fill(const DLTensor &tensor, dsrs_distribution distribution, double a = 0.0,
                       double b = 1.0, const Stream *stream = nullptr);

  /// Opens a named profiling range on the calling thread (see dsrs::Range).
  void range_push(const std::string &name) { check(dsrs_accelerator_range_push(get(), name.c_str())); }
  /// Closes the innermost range of the calling thread.
  void range_pop() { check(dsrs_accelerator_range_pop(get())); }

  /// Makes this accelerator the process-wide current one.
  void make_current() const { check(dsrs_accelerator_set(get())); }

  /// A handle to the current device's default stream.
  inline Stream default_stream() const;
  /// A handle to the calling thread's current stream.
  inline Stream current_stream() const;
  /// Makes `stream` (of this accelerator) the calling thread's current stream.
  inline void set_current_stream(const Stream &stream);

 private:
  uint64_t u64(dsrs_status (*fn)(const dsrs_accelerator *, int32_t, uint64_t *),
               int32_t device) const {
    uint64_t out = 0;
    check(fn(get(), device, &out));
    return out;
  }

  detail::Handle<dsrs_accelerator, detail::FreeAccelerator> h_;
};

// ----------------------------------------------------------------------------------------

/// A stream of an accelerator (work on host accelerators runs when it is submitted).
class Stream {
 public:
  /// A new stream on the accelerator's current device.
  explicit Stream(const Accelerator &accel) {
    dsrs_stream *h = nullptr;
    check(dsrs_stream_new(accel.get(), &h));
    h_ = detail::Handle<dsrs_stream, detail::FreeStream>(h);
  }
  /// Adopts a raw handle.
  explicit Stream(dsrs_stream *handle) noexcept : h_(handle) {}

  /// The raw handle (still owned by this object).
  dsrs_stream *get() const noexcept { return h_.get(); }
  /// Gives up ownership of the raw handle.
  dsrs_stream *release() noexcept { return h_.release(); }

  /// Blocks until all submitted work has finished.
  void synchronize() { check(dsrs_stream_synchronize(get())); }
  /// Whether all submitted work has finished.
  bool query() const {
    bool out = false;
    check(dsrs_stream_query(get(), &out));
    return out;
  }
  /// Makes later work on this stream wait for `event`.
  inline void wait_event(Event &event);
  /// The native stream (cudaStream_t), nullptr on host accelerators.
  void *native_handle() const {
    void *out = nullptr;
    check(dsrs_stream_native_handle(get(), &out));
    return out;
  }

 private:
  detail::Handle<dsrs_stream, detail::FreeStream> h_;
};

/// An event for ordering streams and timing work.
class Event {
 public:
  /// A new event; `enable_timing` makes elapsed_ms usable.
  explicit Event(const Accelerator &accel, bool enable_timing = true) {
    dsrs_event *h = nullptr;
    check(dsrs_event_new(accel.get(), enable_timing, &h));
    h_ = detail::Handle<dsrs_event, detail::FreeEvent>(h);
  }
  /// Adopts a raw handle.
  explicit Event(dsrs_event *handle) noexcept : h_(handle) {}

  /// The raw handle (still owned by this object).
  dsrs_event *get() const noexcept { return h_.get(); }
  /// Gives up ownership of the raw handle.
  dsrs_event *release() noexcept { return h_.release(); }

  /// Records the event on `stream` (nullptr: the accelerator's current stream).
  void record(const Stream *stream = nullptr) {
    check(dsrs_event_record(get(), stream != nullptr ? stream->get() : nullptr));
  }
  /// Records the event on `stream`.
  void record(const Stream &stream) { record(&stream); }
  /// Blocks until the work recorded before the event has finished.
  void synchronize() { check(dsrs_event_synchronize(get())); }
  /// Whether the work recorded before the event has finished.
  bool query() const {
    bool out = false;
    check(dsrs_event_query(get(), &out));
    return out;
  }
  /// Milliseconds from this (recorded, timing) event to `end`.
  double elapsed_ms(const Event &end) const {
    double out = 0.0;
    check(dsrs_event_elapsed_ms(get(), end.get(), &out));
    return out;
  }

 private:
  detail::Handle<dsrs_event, detail::FreeEvent> h_;
};

inline void Stream::wait_event(Event &event) { check(dsrs_stream_wait_event(get(), event.get())); }

inline Stream Accelerator::default_stream() const {
  dsrs_stream *h = nullptr;
  check(dsrs_accelerator_default_stream(get(), &h));
  return Stream(h);
}
inline Stream Accelerator::current_stream() const {
  dsrs_stream *h = nullptr;
  check(dsrs_accelerator_current_stream(get(), &h));
  return Stream(h);
}
inline void Accelerator::set_current_stream(const Stream &stream) {
  check(dsrs_accelerator_set_current_stream(get(), stream.get()));
}
inline void Accelerator::rng_fill(const DLTensor &tensor, dsrs_distribution distribution,
                                  double a, double b, const Stream *stream) {
  check(dsrs_accelerator_rng_fill(get(), &tensor, distribution, a, b,
                                  stream != nullptr ? stream->get() : nullptr));
}

// ----------------------------------------------------------------------------------------

/// Memory owned by an accelerator, zeroed at allocation. Copies are bounds-checked.
class Buffer {
 public:
  /// Allocates `size` bytes of `kind` memory on the accelerator's current device, aligned
  /// to `alignment` (a power of two; 0 = 256).
  Buffer(const Accelerator &accel, size_t size, size_t alignment = 0,
         dsrs_memory_kind kind = DSRS_MEMORY_DEVICE) {
    dsrs_buffer *h = nullptr;
    check(dsrs_buffer_new(accel.get(), size, alignment, kind, &h));
    h_ = detail::Handle<dsrs_buffer, detail::FreeBuffer>(h);
  }
  /// Adopts a raw handle.
  explicit Buffer(dsrs_buffer *handle) noexcept : h_(handle) {}

  /// The raw handle (still owned by this object).
  dsrs_buffer *get() const noexcept { return h_.get(); }
  /// Gives up ownership of the raw handle.
  dsrs_buffer *release() noexcept { return h_.release(); }

  /// Size in bytes.
  size_t size() const {
    size_t out = 0;
    check(dsrs_buffer_size(get(), &out));
    return out;
  }
  /// Address of the first byte (host pointer for host memory, device address otherwise;
  /// nullptr when empty).
  void *data() const {
    void *out = nullptr;
    check(dsrs_buffer_data(get(), &out));
    return out;
  }
  /// Kind of memory (DSRS_MEMORY_*).
  dsrs_memory_kind kind() const {
    dsrs_memory_kind out = DSRS_MEMORY_DEVICE;
    check(dsrs_buffer_kind(get(), &out));
    return out;
  }
  /// The DLPack device of the memory.
  DLDevice device() const {
    DLDevice out{};
    check(dsrs_buffer_device(get(), &out));
    return out;
  }
  /// A new handle to the accelerator that owns the buffer.
  Accelerator accelerator() const {
    dsrs_accelerator *h = nullptr;
    check(dsrs_buffer_accelerator(get(), &h));
    return Accelerator(h);
  }

  /// Copies `n` host bytes from `src` into the buffer at `offset`.
  void write(size_t offset, const void *src, size_t n, const Stream *stream = nullptr) {
    check(dsrs_buffer_write(get(), offset, src, n, stream_of(stream)));
  }
  /// Copies the elements of `values` into the buffer at byte `offset`.
  template <class T>
  void write(size_t offset, const std::vector<T> &values, const Stream *stream = nullptr) {
    static_assert(std::is_trivially_copyable<T>::value, "write: T must be trivially copyable");
    write(offset, values.data(), values.size() * sizeof(T), stream);
  }
  /// Copies `n` bytes at `offset` into host memory `dst`.
  void read(size_t offset, void *dst, size_t n, const Stream *stream = nullptr) const {
    check(dsrs_buffer_read(get(), offset, dst, n, stream_of(stream)));
  }
  /// Reads `count` elements of T from byte `offset`.
  template <class T>
  std::vector<T> read(size_t offset, size_t count, const Stream *stream = nullptr) const {
    static_assert(std::is_trivially_copyable<T>::value, "read: T must be trivially copyable");
    std::vector<T> out(count);
    read(offset, out.data(), count * sizeof(T), stream);
    return out;
  }
  /// Copies `n` bytes from `src` at `src_offset` to this buffer at `dst_offset` (the same
  /// buffer and overlapping ranges are allowed).
  void copy_from(size_t dst_offset, const Buffer &src, size_t src_offset, size_t n,
                 const Stream *stream = nullptr) {
    check(dsrs_buffer_copy(get(), dst_offset, src.get(), src_offset, n, stream_of(stream)));
  }
  /// Fills `n` bytes from `offset` with a 1-, 2-, 4- or 8-byte pattern.
  void fill(size_t offset, size_t n, const void *pattern, size_t pattern_size,
            const Stream *stream = nullptr) {
    check(dsrs_buffer_fill(get(), offset, n, pattern, pattern_size, stream_of(stream)));
  }
  /// Fills `count` elements of T (1, 2, 4 or 8 bytes) from byte `offset` with `value`.
  template <class T>
  void fill_value(size_t offset, size_t count, const T &value, const Stream *stream = nullptr) {
    static_assert(sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8,
                  "fill_value: T must be 1, 2, 4 or 8 bytes");
    fill(offset, count * sizeof(T), &value, sizeof(T), stream);
  }
  /// Copies a contiguous host tensor into the buffer at `offset`.
  void copy_from_tensor(size_t offset, const DLTensor &src, const Stream *stream = nullptr) {
    check(dsrs_buffer_copy_from_tensor(get(), offset, &src, stream_of(stream)));
  }
  /// Copies bytes at `offset` into a contiguous host tensor (its byte size decides how many).
  void copy_to_tensor(size_t offset, const DLTensor &dst, const Stream *stream = nullptr) const {
    check(dsrs_buffer_copy_to_tensor(get(), offset, &dst, stream_of(stream)));
  }

  /// A compact row-major DLTensor view of `shape` of `dtype` from `byte_offset`. The view's
  /// shape pointer is `shape.data()`: keep `shape` (and the buffer) alive while using it.
  DLTensor view(DLDataType dtype, const std::vector<int64_t> &shape, uint64_t byte_offset = 0) const {
    DLTensor out{};
    check(dsrs_buffer_view(get(), byte_offset, dtype, shape.empty() ? nullptr : shape.data(),
                           static_cast<int32_t>(shape.size()), &out));
    return out;
  }
  /// A zero-copy DLPack export (legacy DLManagedTensor) that keeps the memory alive until
  /// its deleter runs; the caller owns it (call `t->deleter(t)`).
  DLManagedTensor *to_dlpack(DLDataType dtype, const std::vector<int64_t> &shape,
                             uint64_t byte_offset = 0) const {
    DLManagedTensor *out = nullptr;
    check(dsrs_buffer_to_dlpack(get(), byte_offset, dtype, shape.empty() ? nullptr : shape.data(),
                                static_cast<int32_t>(shape.size()), &out));
    return out;
  }
  /// Like to_dlpack, as a DLPack 1.x DLManagedTensorVersioned.
  DLManagedTensorVersioned *to_dlpack_versioned(DLDataType dtype, const std::vector<int64_t> &shape,
                                                uint64_t byte_offset = 0,
                                                bool read_only = false) const {
    DLManagedTensorVersioned *out = nullptr;
    check(dsrs_buffer_to_dlpack_versioned(get(), byte_offset, dtype,
                                          shape.empty() ? nullptr : shape.data(),
                                          static_cast<int32_t>(shape.size()), read_only, &out));
    return out;
  }

 private:
  static dsrs_stream *stream_of(const Stream *stream) noexcept {
    return stream != nullptr ? stream->get() : nullptr;
  }

  detail::Handle<dsrs_buffer, detail::FreeBuffer> h_;
};

// ----------------------------------------------------------------------------------------
// The training engine.

/// The number of elements of a DLTensor (the product of its extents; 1 for a scalar).
inline int64_t numel(const DLTensor &t) noexcept {
  int64_t n = 1;
  for (int32_t i = 0; i < t.ndim; ++i) n *= t.shape[i];
  return n;
}

/// What one Engine::step did (dsrs_step_record with bools for the flags).
struct StepRecord {
  /// Optimizer steps so far, applied and skipped (DeepSpeed's global_steps).
  uint64_t global_step = 0;
  /// Micro steps so far.
  uint64_t micro_step = 0;
  /// Skipped optimizer steps so far.
  uint64_t skipped_steps = 0;
  /// This call ended a gradient-accumulation window.
  bool boundary = false;
  /// The optimizer step was applied (false off-boundary and when skipped).
  bool applied = false;
  /// Non-finite gradients were found: the step was skipped.
  bool overflow = false;
  /// The loss scale this window's gradients carried (1 without fp16).
  double loss_scale = 1.0;
  /// The learning rate the step used (off-boundary: the current one).
  double lr = 0.0;
  /// Global L2 norm of the averaged, unscaled gradients before clipping; NaN on overflow,
  /// -1 off-boundary.
  double grad_norm = -1.0;

  StepRecord() = default;
  /// From the C record.
  explicit StepRecord(const dsrs_step_record &r) noexcept
      : global_step(r.global_step),
        micro_step(r.micro_step),
        skipped_steps(r.skipped_steps),
        boundary(r.boundary != 0),
        applied(r.applied != 0),
        overflow(r.overflow != 0),
        loss_scale(r.loss_scale),
        lr(r.lr),
        grad_norm(r.grad_norm) {}
};

/// The resolved batch sizes: train = micro * accumulation steps * world size.
struct BatchSizes {
  uint64_t train_batch_size = 0;
  uint64_t micro_batch_size = 0;
  uint64_t gradient_accumulation_steps = 0;
};

/// A training engine configured by a DeepSpeed ds_config (JSON; comments and trailing
/// commas allowed): the host registers its parameters, finalizes, then per micro batch ADDS
/// its gradients (times loss_scale() under fp16) into grad(i) and calls step().
///
///   dsrs::Engine engine = dsrs::Engine::from_file("ds_config.json");
///   engine.register_param("w", w.data(), {4, 3});       // std::vector<float> w(12)
///   engine.finalize();
///   DLTensor g = engine.grad("w");                        // fp32 under fp32/bf16 training
///   static_cast<float *>(g.data)[0] += 0.5f;
///   dsrs::StepRecord r = engine.step();
class Engine {
 public:
  /// An engine from ds_config JSON text on the current accelerator.
  explicit Engine(const std::string &config_json) : Engine(nullptr, config_json) {}
  /// An engine from ds_config JSON text on `accel`.
  Engine(const Accelerator &accel, const std::string &config_json)
      : Engine(accel.get(), config_json) {}
  /// Adopts a raw handle (freed by the destructor).
  explicit Engine(dsrs_engine *handle) noexcept : h_(handle) {}

  /// An engine from ds_config JSON text (`accel`: nullptr for the current accelerator).
  static Engine from_json(const std::string &config_json, const Accelerator *accel = nullptr) {
    return Engine(accel != nullptr ? accel->get() : nullptr, config_json);
  }
  /// An engine from a ds_config file (`accel`: nullptr for the current accelerator).
  static Engine from_file(const std::string &path, const Accelerator *accel = nullptr) {
    dsrs_engine *h = nullptr;
    check(dsrs_engine_new_from_file(accel != nullptr ? accel->get() : nullptr, path.c_str(), &h));
    return Engine(h);
  }

  /// The raw handle (still owned by this object).
  dsrs_engine *get() const noexcept { return h_.get(); }
  /// Gives up ownership of the raw handle.
  dsrs_engine *release() noexcept { return h_.release(); }

  /// Registers a parameter from a contiguous host tensor of any float dtype (copied);
  /// returns its index. Trainable parameters are stored in the training precision, frozen
  /// ones keep their dtype. Only before finalize().
  size_t register_param(const std::string &name, const DLTensor &initial, bool trainable = true) {
    size_t index = 0;
    check(dsrs_engine_register_param(get(), name.c_str(), &initial, trainable ? 1 : 0, &index));
    return index;
  }
  /// Registers a parameter of `shape` from host values (float or double, row-major).
  template <class T>
  size_t register_param(const std::string &name, const T *values, const std::vector<int64_t> &shape,
                        bool trainable = true) {
    static_assert(std::is_floating_point<T>::value, "register_param: T must be float or double");
    std::vector<int64_t> dims(shape);
    DLTensor t{};
    t.data = const_cast<T *>(values);
    t.device = DLDevice{kDLCPU, 0};
    t.ndim = static_cast<int32_t>(dims.size());
    t.dtype = dtype_of<T>();
    t.shape = dims.empty() ? nullptr : dims.data();
    return register_param(name, t, trainable);
  }
  /// Allocates the flat buffers, master weights and optimizer state; ends registration.
  void finalize() { check(dsrs_engine_finalize(get())); }

  /// How many parameters are registered.
  size_t num_params() const {
    size_t out = 0;
    check(dsrs_engine_num_params(get(), &out));
    return out;
  }
  /// The index of a parameter by name.
  size_t param_index(const std::string &name) const {
    size_t out = 0;
    check(dsrs_engine_param_index(get(), name.c_str(), &out));
    return out;
  }
  /// The name of the parameter at `index`.
  std::string param_name(size_t index) const {
    return read_string([this, index](char *b, size_t l, size_t *n) {
      return dsrs_engine_param_name(get(), index, b, l, n);
    });
  }
  /// Every parameter's name, in index order.
  std::vector<std::string> param_names() const {
    std::vector<std::string> out;
    const size_t n = num_params();
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) out.push_back(param_name(i));
    return out;
  }

  /// A zero-copy view of a parameter in the compute dtype (its shape is owned by the
  /// engine and valid until it is freed; strides NULL). Writes are seen by the next step.
  DLTensor param(size_t index) const {
    DLTensor out{};
    check(dsrs_engine_param(get(), index, &out));
    return out;
  }
  DLTensor param(const std::string &name) const { return param(param_index(name)); }
  /// A zero-copy view of a trainable parameter's gradient accumulator: ADD into it.
  DLTensor grad(size_t index) const {
    DLTensor out{};
    check(dsrs_engine_grad(get(), index, &out));
    return out;
  }
  DLTensor grad(const std::string &name) const { return grad(param_index(name)); }
  /// A read-only fp32 view of an optimizer state ("exp_avg", "exp_avg_sq", "master",
  /// "momentum_buffer").
  DLTensor optimizer_state(size_t index, const std::string &state) const {
    DLTensor out{};
    check(dsrs_engine_optimizer_state(get(), index, state.c_str(), &out));
    return out;
  }
  DLTensor optimizer_state(const std::string &name, const std::string &state) const {
    return optimizer_state(param_index(name), state);
  }

  /// One micro step (at a boundary: average, unscale, overflow check, clip, optimizer,
  /// schedule, zero the gradients) on `stream` (nullptr: current).
  StepRecord step(const Stream *stream = nullptr) {
    dsrs_step_record r{};
    check(dsrs_engine_step(get(), stream != nullptr ? stream->get() : nullptr, &r));
    return StepRecord(r);
  }
  /// Multiply the loss by this before backward (1 without fp16).
  double loss_scale() const {
    double out = 0.0;
    check(dsrs_engine_loss_scale(get(), &out));
    return out;
  }
  /// The learning rate of the next step.
  double lr() const {
    double out = 0.0;
    check(dsrs_engine_get_lr(get(), &out));
    return out;
  }
  /// Sets the learning rate (a schedule overrides it at its next step).
  void set_lr(double lr) { check(dsrs_engine_set_lr(get(), lr)); }
  /// The micro batch's unscaled loss, for progress lines and monitors.
  void report_loss(double loss) { check(dsrs_engine_report_loss(get(), loss)); }
  /// The resolved batch sizes.
  BatchSizes batch_sizes() const {
    BatchSizes b;
    check(dsrs_engine_batch_sizes(get(), &b.train_batch_size, &b.micro_batch_size,
                                  &b.gradient_accumulation_steps));
    return b;
  }
  /// The resolved ds_config as JSON.
  std::string config_json() const {
    return read_string(
        [this](char *b, size_t l, size_t *n) { return dsrs_engine_config_json(get(), b, l, n); });
  }
  /// Counters, loss-scaler and LR-schedule state, timers and the optimizer implementation,
  /// as JSON.
  std::string stats_json() const {
    return read_string(
        [this](char *b, size_t l, size_t *n) { return dsrs_engine_stats_json(get(), b, l, n); });
  }

 private:
  Engine(dsrs_accelerator *accel, const std::string &config_json) {
    dsrs_engine *h = nullptr;
    check(dsrs_engine_new(accel, config_json.c_str(), &h));
    h_ = detail::Handle<dsrs_engine, detail::FreeEngine>(h);
  }

  detail::Handle<dsrs_engine, detail::FreeEngine> h_;
};

/// The resolved ds_config (JSON) for `world_size` ranks; throws dsrs::Error
/// (DSRS_STATUS_INVALID_CONFIG) whose message lists every problem, "path: message" per line.
inline std::string config_check(const std::string &config_json, uint64_t world_size = 1) {
  return read_string([&](char *b, size_t l, size_t *n) {
    return dsrs_config_check(config_json.c_str(), world_size, b, l, n);
  });
}

/// The paths holding "auto", as a JSON array of strings.
inline std::string config_auto_paths_json(const std::string &config_json) {
  return read_string([&](char *b, size_t l, size_t *n) {
    return dsrs_config_auto_paths(config_json.c_str(), b, l, n);
  });
}

/// The paths holding "auto" ("scheduler.params.total_num_steps", ...).
inline std::vector<std::string> config_auto_paths(const std::string &config_json) {
  const std::string json = config_auto_paths_json(config_json);
  std::vector<std::string> out;
  // A JSON array of strings; paths are keys joined by '.', so only \" and \\ need undoing.
  for (size_t i = 0; i < json.size(); ++i) {
    if (json[i] != '"') continue;
    std::string s;
    for (++i; i < json.size() && json[i] != '"'; ++i) {
      if (json[i] == '\\' && i + 1 < json.size()) ++i;
      s.push_back(json[i]);
    }
    out.push_back(std::move(s));
  }
  return out;
}

/// The document with the "auto" at `path` replaced by `value_json` (JSON text: "100",
/// "\"WarmupLR\"", ...).
inline std::string config_fill_auto(const std::string &config_json, const std::string &path,
                                    const std::string &value_json) {
  return read_string([&](char *b, size_t l, size_t *n) {
    return dsrs_config_fill_auto(config_json.c_str(), path.c_str(), value_json.c_str(), b, l, n);
  });
}

// ----------------------------------------------------------------------------------------

/// An RAII profiling range: pushes `name` on construction and pops it on destruction
/// (ignoring the status). It keeps the accelerator's raw handle, not a reference to the
/// Accelerator object; if that handle is freed first, the pop fails harmlessly.
class Range {
 public:
  /// Opens the range (throws if the push fails).
  Range(const Accelerator &accel, const std::string &name) : accel_(accel.get()) {
    check(dsrs_accelerator_range_push(accel_, name.c_str()));
  }
  Range(const Range &) = delete;
  Range &operator=(const Range &) = delete;
  /// Closes the range.
  ~Range() { (void)dsrs_accelerator_range_pop(accel_); }

 private:
  dsrs_accelerator *accel_;
};

}  // namespace dsrs

#endif  // DEEPSPEED_RS_HPP
