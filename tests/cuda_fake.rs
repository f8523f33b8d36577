//! The CUDA accelerator against a stand-in driver (`tests/support/fake_cuda_driver.c`), so
//! its own logic — contexts, pools and their statistics, copies, fill patterns, streams,
//! events, error mapping, the oldest-driver check — runs in CI without a GPU. The stand-in
//! keeps "device" memory in host RAM; kernel launches and graphs answer NOT_SUPPORTED (the
//! real-GPU suite is `tests/cuda_gpu.rs`).
//!
//! The driver is loaded once per process by name, so each test re-runs this test binary
//! as a child with `LD_LIBRARY_PATH` pointing at the stand-in.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use deepspeed_rs::ErrorKind;
use deepspeed_rs::accelerator::{self, Accelerator, Buffer, MemoryKind};

const CHILD: &str = "DSRS_FAKE_CUDA_CHILD";

/// Builds the stand-in driver once per process (children have it loaded; rewriting it
/// would corrupt them); `None` without a C compiler.
fn fake_driver() -> Option<PathBuf> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT.get_or_init(build_fake_driver).clone()
}

fn build_fake_driver() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fake-cuda-driver");
    std::fs::create_dir_all(&dir).ok()?;
    let out = dir.join("libcuda.so.1");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(cc)
        .args(["-std=c11", "-O1", "-shared", "-fPIC", "-Wall", "-Werror"])
        .args(["-Wl,-soname,libcuda.so.1", "-o"])
        .arg(&out)
        .arg(root.join("tests/support/fake_cuda_driver.c"))
        .arg("-lpthread")
        .status()
        .ok()?;
    assert!(status.success(), "the stand-in driver does not build");
    let _ = std::os::unix::fs::symlink("libcuda.so.1", dir.join("libcuda.so"));
    Some(dir)
}

/// In the parent: runs `test` in a child with the stand-in driver and `env`. In the child:
/// returns true (run the body).
fn in_child(test: &str, env: &[(&str, &str)]) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let Some(dir) = fake_driver() else {
        eprintln!("skipped: no C compiler to build the stand-in driver");
        return false;
    };
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("LD_LIBRARY_PATH", &dir)
        // NVRTC itself loads libcuda.so.1 and crashes on this stand-in: no NVRTC here.
        .env("DSRS_NVRTC_LIB", "/nonexistent/libnvrtc.so.12")
        .env_remove("DSRS_ACCELERATOR");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("1 passed"),
        "child {test} failed:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    false
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn cuda() -> Arc<dyn Accelerator> {
    let p = accelerator::cuda::probe();
    assert!(p.reason.is_none(), "{p:?}");
    assert_eq!(p.driver_version, Some(12080));
    accelerator::create("cuda", None).unwrap()
}

#[test]
fn detection_picks_cuda_and_describes_the_devices() {
    if !in_child("detection_picks_cuda_and_describes_the_devices", &[]) {
        return;
    }
    let current = accelerator::current().unwrap();
    assert_eq!(current.name(), "cuda", "detection prefers cuda over cpu");
    let a = cuda();
    assert_eq!(a.device_count(), 2);
    let p = a.device_properties(Some(1)).unwrap();
    assert_eq!(p.name, "Fake GPU 1");
    assert_eq!(
        p.uuid.as_deref(),
        Some("GPU-10111213-1415-1617-1819-1a1b1c1d1e1f")
    );
    assert_eq!(p.compute_capability, Some((7, 5)));
    assert_eq!(p.multiprocessors, Some(132));
    assert_eq!(p.pci_bus_id.as_deref(), Some("0000:41:00.0"));
    assert_eq!(
        a.device_properties(Some(0)).unwrap().compute_capability,
        Some((9, 0))
    );
    // bf16 is native only if every device has compute capability 8.0 (device 1 is 7.5).
    assert!(a.dtype_support(deepspeed_rs::dtype::DType::BF16).supported);
    assert!(!a.is_bf16_supported() && a.is_fp16_supported());
    assert_eq!(a.communication_backend_name(), "nccl");
    assert_eq!(a.dlpack_device_type(), 2);
    let info = a.describe();
    assert_eq!(info["details"]["driver_version"], "12.8");
    assert_eq!(info["graphs"], true);
    // The current device is per thread.
    a.set_device(1).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(a.current_device(), 0));
    });
    assert_eq!(a.device_name(None).unwrap(), "Fake GPU 1");
    let e = a.set_device(2).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfRange);
}

#[test]
fn buffers_copy_and_fill_through_the_driver() {
    if !in_child("buffers_copy_and_fill_through_the_driver", &[]) {
        return;
    }
    let a = cuda();
    let n = 100_000;
    let data = random_bytes(n, 9);
    let b = Buffer::new(&a, n, 0, MemoryKind::Device).unwrap();
    assert_eq!(b.dl_device().device_type, 2);
    let mut back = vec![1u8; n];
    b.read(0, &mut back).unwrap();
    assert!(
        back.iter().all(|&x| x == 0),
        "allocations are zeroed (the driver hands out 0xcd)"
    );
    b.write(0, &data).unwrap();
    b.read(0, &mut back).unwrap();
    assert!(back == data);
    let c = Buffer::new(&a, n, 0, MemoryKind::Device).unwrap();
    c.copy_from(10, &b, 20, n - 100, None).unwrap();
    c.read(0, &mut back).unwrap();
    assert!(back[10..n - 90] == data[20..n - 80]);
    // Every pattern width, at aligned and odd offsets (the 8-byte fill is two strided
    // 32-bit fills; odd offsets are staged through the host).
    for (offset, pattern) in [
        (0usize, &[0x11u8][..]),
        (2, &[1, 2]),
        (1, &[3, 4]),
        (4, &[1, 2, 3, 4]),
        (6, &[5, 6, 7, 8]),
        (8, &[1, 2, 3, 4, 5, 6, 7, 8]),
        (12, &[8, 7, 6, 5, 4, 3, 2, 1]),
        (3, &[9, 9, 9, 9, 1, 1, 1, 1]),
    ] {
        c.fill(offset, 800, pattern, None).unwrap();
        c.read(0, &mut back[..1000]).unwrap();
        for (i, &x) in back[offset..offset + 800].iter().enumerate() {
            assert_eq!(
                x,
                pattern[i % pattern.len()],
                "offset {offset} pattern {pattern:?}"
            );
        }
    }
    // Pinned memory: PORTABLE (the stand-in refuses write-combined), known as pinned.
    let p = Buffer::new(&a, 5000, 0, MemoryKind::Pinned).unwrap();
    assert!(a.is_pinned(p.ptr()) && a.is_pinned(p.ptr() + 4999));
    assert_eq!(p.dl_device().device_type, 3);
    p.copy_from(0, &b, 0, 5000, None).unwrap();
    let host = unsafe { std::slice::from_raw_parts(p.ptr() as *const u8, 5000) };
    assert!(host == &data[..5000]);
    let h = Buffer::new(&a, 64, 0, MemoryKind::Host).unwrap();
    assert!(!a.is_pinned(h.ptr()));
    assert_eq!(h.dl_device().device_type, 1);
    // Alignments the driver cannot give are refused up front.
    assert_eq!(
        Buffer::new(&a, 64, 4096, MemoryKind::Device)
            .unwrap_err()
            .kind(),
        ErrorKind::Unsupported
    );
}

#[test]
fn pool_statistics_move_as_the_pool_does() {
    if !in_child("pool_statistics_move_as_the_pool_does", &[]) {
        return;
    }
    let a = cuda();
    let s0 = a.memory_stats(None).unwrap();
    assert_eq!((s0.allocated_bytes, s0.reserved_bytes), (0, 0));
    let b = Buffer::new(&a, 3 << 20, 0, MemoryKind::Device).unwrap();
    let s1 = a.memory_stats(None).unwrap();
    assert_eq!(s1.allocated_bytes, 3 << 20);
    assert_eq!(s1.reserved_bytes, 4 << 20, "the pool grows in 2 MiB steps");
    assert_eq!((s1.allocations, s1.allocations_total), (1, 1));
    assert_eq!(a.available_memory(None).unwrap(), (1 << 30) - (4 << 20));
    drop(b);
    let s2 = a.memory_stats(None).unwrap();
    assert_eq!((s2.allocated_bytes, s2.peak_allocated_bytes), (0, 3 << 20));
    assert_eq!(s2.reserved_bytes, 4 << 20, "freed memory stays in the pool");
    assert_eq!(s2.frees_total, 1);
    a.reset_peak_memory_stats(None).unwrap();
    let s3 = a.memory_stats(None).unwrap();
    assert_eq!(
        (s3.peak_allocated_bytes, s3.peak_reserved_bytes),
        (0, 4 << 20)
    );
    a.empty_cache().unwrap();
    assert_eq!(
        a.memory_stats(None).unwrap().reserved_bytes,
        0,
        "empty_cache trims"
    );
    // Device 1 has its own pool.
    a.set_device(1).unwrap();
    let d1 = Buffer::new(&a, 1000, 0, MemoryKind::Device).unwrap();
    assert_eq!(d1.device(), 1);
    assert_eq!(a.memory_stats(Some(1)).unwrap().allocated_bytes, 1024);
    assert_eq!(a.memory_stats(Some(0)).unwrap().allocated_bytes, 0);
    drop(d1);
    a.set_device(0).unwrap();
    // Pinned bytes are counted.
    let p = Buffer::new(&a, 10_000, 0, MemoryKind::Pinned).unwrap();
    assert_eq!(a.memory_stats(None).unwrap().pinned_bytes, 10_000);
    drop(p);
    assert_eq!(a.memory_stats(None).unwrap().pinned_bytes, 0);
    // Out of memory: the driver's error, named, counted, with its own status.
    let e = Buffer::new(&a, 2 << 30, 0, MemoryKind::Device).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfMemory);
    let m = e.to_string();
    assert!(
        m.contains(
            "allocating 2147483648 bytes on CUDA device 0: CUDA_ERROR_OUT_OF_MEMORY: out of memory"
        ),
        "{m}"
    );
    assert_eq!(a.memory_stats(None).unwrap().num_ooms, 1);
    let json = a.memory_stats_json(None).unwrap();
    assert_eq!(json["num_ooms"], 1);
    assert_eq!(json["total_bytes"], 1u64 << 30);
}

#[test]
fn a_release_threshold_returns_memory_at_free() {
    if !in_child("a_release_threshold_returns_memory_at_free", &[]) {
        return;
    }
    let a = accelerator::create("cuda", Some(r#"{"release_threshold": 0}"#)).unwrap();
    let b = Buffer::new(&a, 1 << 20, 0, MemoryKind::Device).unwrap();
    drop(b);
    assert_eq!(a.memory_stats(None).unwrap().reserved_bytes, 0);
    let e = accelerator::create("cuda", Some(r#"{"release": 0}"#)).unwrap_err();
    assert!(e.to_string().contains("unknown option \"release\""), "{e}");
}

#[test]
fn streams_events_and_ranges() {
    if !in_child("streams_events_and_ranges", &[]) {
        return;
    }
    let a = cuda();
    let d = a.default_stream().unwrap();
    assert!(d.is_default() && d.native_handle().is_null());
    let s = a.new_stream().unwrap();
    assert!(!s.is_default() && !s.native_handle().is_null());
    a.set_current_stream(s.clone()).unwrap();
    assert!(Arc::ptr_eq(&a.current_stream().unwrap(), &s));
    // A buffer allocated on the current stream is freed on it, after the stream handle
    // given to the thread is replaced.
    let b = Buffer::new(&a, 4096, 0, MemoryKind::Device).unwrap();
    a.set_current_stream(d.clone()).unwrap();
    drop(b);
    let (e0, e1) = (a.new_event(true).unwrap(), a.new_event(true).unwrap());
    e0.record(s.as_ref()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(15));
    e1.record(s.as_ref()).unwrap();
    e1.synchronize().unwrap();
    let ms = e0.elapsed_ms(e1.as_ref()).unwrap();
    assert!((14.0..5000.0).contains(&ms), "{ms}");
    let plain = a.new_event(false).unwrap();
    assert_eq!(
        plain.elapsed_ms(e1.as_ref()).unwrap_err().kind(),
        ErrorKind::InvalidState
    );
    s.wait_event(e1.as_ref()).unwrap();
    assert!(s.query().unwrap() && e1.query().unwrap());
    // Another accelerator's stream is refused.
    let cpu = accelerator::create("cpu", None).unwrap();
    assert!(a.set_current_stream(cpu.default_stream().unwrap()).is_err());
    // A borrowed (wrapped) stream is never destroyed by us.
    let wrapped = unsafe { a.wrap_stream(s.native_handle()) }.unwrap();
    assert_eq!(wrapped.native_handle(), s.native_handle());
    drop(wrapped);
    s.synchronize().unwrap();
    // Graph capture and kernels need a real driver: the errors say what failed.
    let e = a.begin_capture(s.as_ref()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("cuStreamBeginCapture"), "{e}");
    assert!(
        a.begin_capture(d.as_ref())
            .unwrap_err()
            .to_string()
            .contains("default (legacy) stream")
    );
    a.range_push("fake").unwrap();
    a.range_pop().unwrap();
    assert!(a.range_pop().is_err());
    // Streams and events are released when their last reference goes.
    drop((e0, e1, plain, s));
    let live = |sym: &[u8]| -> i32 {
        let lib = unsafe { libloading::Library::new("libcuda.so.1") }.unwrap();
        let f = unsafe { lib.get::<unsafe extern "C" fn() -> i32>(sym) }.unwrap();
        unsafe { f() }
    };
    assert_eq!(live(b"fake_cuda_live_events\0"), 0);
    // The accelerator's thread state still holds no stream of ours (we set the default).
    assert_eq!(live(b"fake_cuda_live_streams\0"), 0);
}

#[test]
fn an_old_driver_is_a_clean_unavailable() {
    if !in_child(
        "an_old_driver_is_a_clean_unavailable",
        &[("FAKE_CUDA_DRIVER_VERSION", "11040")],
    ) {
        return;
    }
    let p = accelerator::cuda::probe();
    let reason = p.reason.clone().unwrap();
    assert!(
        reason.contains("CUDA 11.4, older than the oldest supported, 12.0"),
        "{reason}"
    );
    let e = accelerator::create("cuda", None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(
        e.to_string()
            .starts_with("cuda unavailable: the CUDA driver supports CUDA 11.4"),
        "{e}"
    );
    assert_eq!(accelerator::current().unwrap().name(), "cpu");
}

#[test]
fn random_fills_of_host_memory_use_the_shared_generator() {
    if !in_child("random_fills_of_host_memory_use_the_shared_generator", &[]) {
        return;
    }
    use deepspeed_rs::accelerator::Distribution;
    use deepspeed_rs::dtype::DType;
    let a = cuda();
    let cpu = accelerator::create("cpu", None).unwrap();
    a.manual_seed(5).unwrap();
    cpu.manual_seed(5).unwrap();
    let p = Buffer::new(&a, 4000, 0, MemoryKind::Pinned).unwrap();
    let c = Buffer::new(&cpu, 4000, 0, MemoryKind::Device).unwrap();
    let dist = Distribution::Uniform {
        low: 0.0,
        high: 1.0,
    };
    p.fill_random(0, DType::F32, 1000, dist, None).unwrap();
    c.fill_random(0, DType::F32, 1000, dist, None).unwrap();
    let (mut x, mut y) = (vec![0u8; 4000], vec![0u8; 4000]);
    p.read(0, &mut x).unwrap();
    c.read(0, &mut y).unwrap();
    assert!(x == y);
    // Device memory needs the Philox kernels, built by NVRTC, which these children do not
    // have: the error says why and the generator does not advance.
    let before = a.rng_state().unwrap();
    let d = Buffer::new(&a, 4000, 0, MemoryKind::Device).unwrap();
    let e = d.fill_random(0, DType::F32, 1000, dist, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("need the philox_random op"), "{e}");
    assert_eq!(a.rng_state().unwrap(), before, "{e}");
}
