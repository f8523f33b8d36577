//! The CUDA accelerator on a real GPU. Every test skips cleanly (printing why) where there
//! is no CUDA device — CI has none — unless `DSRS_REQUIRE_GPU=1`, which makes a missing GPU
//! a failure (set it on GPU machines; docs/gpu-validation.md records the runs).
//!
//! Run on a GPU machine: `DSRS_REQUIRE_GPU=1 cargo test --release --test cuda_gpu -- --nocapture`
//! (NVRTC must be loadable for the RNG and graph tests: `DSRS_NVRTC_LIB=/path/libnvrtc.so.12`).

use std::sync::Arc;
use std::time::Instant;

use deepspeed_rs::accelerator::{self, Accelerator, Buffer, Distribution, MemoryKind};
use deepspeed_rs::dtype::DType;

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

#[test]
fn device_properties_are_the_drivers() {
    let a = gpu_or_skip!();
    assert_eq!(a.name(), "cuda");
    assert_eq!(a.communication_backend_name(), "nccl");
    assert!(!a.is_host() && !a.is_synchronized_device());
    assert_eq!(a.device_count(), accelerator::cuda::probe().device_count);
    for d in 0..a.device_count() {
        let p = a.device_properties(Some(d)).unwrap();
        println!("device {d}: {p:?}");
        assert!(!p.name.is_empty());
        let uuid = p.uuid.unwrap();
        assert!(uuid.starts_with("GPU-") && uuid.len() == 40, "{uuid}");
        let (major, _) = p.compute_capability.unwrap();
        assert!(major >= 5);
        assert!(p.multiprocessors.unwrap() > 0);
        let avail = a.available_memory(Some(d)).unwrap();
        assert!(
            avail > 0 && avail <= p.total_memory,
            "{avail} of {}",
            p.total_memory
        );
    }
    let cc = a
        .device_properties(Some(0))
        .unwrap()
        .compute_capability
        .unwrap();
    assert_eq!(
        a.is_bf16_supported(),
        cc >= (8, 0),
        "bf16 is native from 8.0"
    );
    assert!(a.supports_graphs());
    // The current device is per host thread.
    if a.device_count() > 1 {
        a.set_device(1).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(a.current_device(), 0));
        });
        assert_eq!(a.current_device(), 1);
        a.set_device(0).unwrap();
    }
    assert!(a.set_device(a.device_count()).is_err());
}

#[test]
fn copies_both_ways_match_host_data() {
    let a = gpu_or_skip!();
    let n = 10 << 20;
    let data = random_bytes(n, 11);
    let b = Buffer::new(&a, n, 0, MemoryKind::Device).unwrap();
    assert_eq!(b.dl_device().device_type, 2, "kDLCUDA");
    let mut back = vec![1u8; n];
    b.read(0, &mut back).unwrap();
    assert!(back.iter().all(|&x| x == 0), "device buffers start zeroed");
    b.write(0, &data).unwrap();
    b.read(0, &mut back).unwrap();
    assert!(back == data, "host → device → host round trip");
    // Device to device, with offsets, and within one buffer (overlapping).
    let c = Buffer::new(&a, n, 0, MemoryKind::Device).unwrap();
    c.copy_from(4096, &b, 1000, n - 8192, None).unwrap();
    c.read(0, &mut back).unwrap();
    assert!(back[4096..n - 4096] == data[1000..n - 7192]);
    assert!(back[..4096].iter().all(|&x| x == 0));
    // Bounds are checked before anything reaches the driver.
    assert!(b.write(n - 10, &data[..11]).is_err());
    assert!(c.copy_from(0, &b, 1, n, None).is_err());
    // Fills of every pattern width, aligned and not.
    for (offset, pattern) in [
        (0usize, &[0x5au8][..]),
        (2, &[1, 2]),
        (4, &[1, 2, 3, 4]),
        (8, &[1, 2, 3, 4, 5, 6, 7, 8]),
        (3, &[9, 8, 7, 6, 5, 4, 3, 2]),
    ] {
        c.fill(offset, 4096, pattern, None).unwrap();
        c.read(0, &mut back[..8192]).unwrap();
        for (i, &x) in back[offset..offset + 4096].iter().enumerate() {
            assert_eq!(
                x,
                pattern[i % pattern.len()],
                "offset {offset} pattern {pattern:?}"
            );
        }
    }
    // Pinned memory is host memory the CPU reads directly, and known as pinned.
    let p = Buffer::new(&a, 1 << 20, 0, MemoryKind::Pinned).unwrap();
    assert!(a.is_pinned(p.ptr()) && a.is_pinned(p.ptr() + (1 << 20) - 1));
    assert_eq!(p.dl_device().device_type, 3, "kDLCUDAHost");
    p.copy_from(0, &b, 0, 1 << 20, None).unwrap();
    // SAFETY: pinned memory is host-accessible and the copy has completed.
    let host = unsafe { std::slice::from_raw_parts(p.ptr() as *const u8, 1 << 20) };
    assert!(host == &data[..1 << 20]);
    let pageable = [0u8; 64];
    assert!(!a.is_pinned(pageable.as_ptr() as usize));
}

#[test]
fn memory_statistics_follow_the_pool() {
    let a = gpu_or_skip!();
    a.synchronize(None).unwrap();
    a.empty_cache().unwrap();
    a.reset_peak_memory_stats(None).unwrap();
    let s0 = a.memory_stats(None).unwrap();
    let size = 64 << 20;
    let b = Buffer::new(&a, size, 0, MemoryKind::Device).unwrap();
    let s1 = a.memory_stats(None).unwrap();
    assert!(
        s1.allocated_bytes >= s0.allocated_bytes + size as u64,
        "{s0:?} {s1:?}"
    );
    assert!(s1.reserved_bytes >= s1.allocated_bytes);
    assert!(s1.peak_allocated_bytes >= s1.allocated_bytes);
    assert_eq!(s1.allocations, s0.allocations + 1);
    drop(b);
    a.synchronize(None).unwrap();
    let s2 = a.memory_stats(None).unwrap();
    assert_eq!(s2.allocated_bytes, s0.allocated_bytes, "{s2:?}");
    assert!(
        s2.peak_allocated_bytes >= s1.allocated_bytes,
        "the peak remembers"
    );
    assert!(
        s2.reserved_bytes >= size as u64,
        "the pool keeps freed memory cached"
    );
    a.reset_peak_memory_stats(None).unwrap();
    assert_eq!(
        a.memory_stats(None).unwrap().peak_allocated_bytes,
        s2.allocated_bytes
    );
    a.empty_cache().unwrap();
    let s3 = a.memory_stats(None).unwrap();
    assert!(
        s3.reserved_bytes < size as u64,
        "empty_cache trims the pool: {s3:?}"
    );
    // Pinned bytes are counted too.
    let p = Buffer::new(&a, 1 << 20, 0, MemoryKind::Pinned).unwrap();
    assert!(a.memory_stats(None).unwrap().pinned_bytes >= 1 << 20);
    drop(p);
    // An impossible allocation is a clean out-of-memory.
    let total = a.total_memory(None).unwrap() as usize;
    let e = Buffer::new(&a, total * 2, 0, MemoryKind::Device).unwrap_err();
    assert_eq!(e.kind(), deepspeed_rs::ErrorKind::OutOfMemory, "{e}");
    println!("stats json: {}", a.memory_stats_json(None).unwrap());
}

#[test]
fn streams_and_events_time_device_work() {
    let a = gpu_or_skip!();
    let s = a.new_stream().unwrap();
    assert!(!s.native_handle().is_null() && !s.is_default());
    assert!(a.default_stream().unwrap().is_default());
    a.set_current_stream(s.clone()).unwrap();
    assert!(Arc::ptr_eq(&a.current_stream().unwrap(), &s));
    let n = 256 << 20;
    let x = Buffer::new(&a, n, 0, MemoryKind::Device).unwrap();
    let y = Buffer::new(&a, n, 0, MemoryKind::Device).unwrap();
    let (e0, e1) = (a.new_event(true).unwrap(), a.new_event(true).unwrap());
    e0.record(s.as_ref()).unwrap();
    for _ in 0..10 {
        y.copy_from(0, &x, 0, n, Some(s.as_ref())).unwrap();
    }
    e1.record(s.as_ref()).unwrap();
    e1.synchronize().unwrap();
    assert!(e1.query().unwrap() && s.query().unwrap());
    let ms = e0.elapsed_ms(e1.as_ref()).unwrap();
    assert!(ms > 0.0, "{ms}");
    println!(
        "device-to-device copy: {:.1} GB/s (10 × {} MiB in {ms:.3} ms, events)",
        10.0 * n as f64 * 2.0 / (ms / 1e3) / 1e9,
        n >> 20
    );
    // A second stream waits for an event of the first.
    let s2 = a.new_stream().unwrap();
    s2.wait_event(e1.as_ref()).unwrap();
    s2.synchronize().unwrap();
    // Wrapping the host's stream: the same CUstream, never destroyed by us.
    let wrapped = unsafe { a.wrap_stream(s.native_handle()) }.unwrap();
    assert_eq!(wrapped.native_handle(), s.native_handle());
    drop(wrapped);
    s.synchronize().unwrap(); // still alive
    a.range_push("gpu test").unwrap();
    a.range_pop().unwrap();
    a.set_current_stream(a.default_stream().unwrap()).unwrap();
}

#[test]
fn pinned_copies_are_faster_than_pageable_ones() {
    let a = gpu_or_skip!();
    let n = 256 << 20;
    let dev = Buffer::new(&a, n, 0, MemoryKind::Device).unwrap();
    let pinned = Buffer::new(&a, n, 0, MemoryKind::Pinned).unwrap();
    let pageable = Buffer::new(&a, n, 0, MemoryKind::Host).unwrap();
    let data = random_bytes(n, 5);
    pinned.write(0, &data).unwrap();
    pageable.write(0, &data).unwrap();
    let mut rates = Vec::new();
    for (label, host) in [("pinned", &pinned), ("pageable", &pageable)] {
        let mut best_h2d = f64::MAX;
        let mut best_d2h = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            dev.copy_from(0, host, 0, n, None).unwrap(); // returns when done
            best_h2d = best_h2d.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            host.copy_from(0, &dev, 0, n, None).unwrap();
            best_d2h = best_d2h.min(t.elapsed().as_secs_f64());
        }
        let (h2d, d2h) = (n as f64 / best_h2d / 1e9, n as f64 / best_d2h / 1e9);
        println!(
            "{label:>8}: host→device {h2d:.1} GB/s, device→host {d2h:.1} GB/s (256 MiB, best of 5)"
        );
        rates.push((h2d, d2h));
    }
    println!(
        "pinned / pageable: host→device {:.2}×, device→host {:.2}×",
        rates[0].0 / rates[1].0,
        rates[0].1 / rates[1].1
    );
    // The data survived every round trip.
    let mut back = vec![0u8; 4096];
    pageable.read(n - 4096, &mut back).unwrap();
    assert!(back == data[n - 4096..]);
}

/// CPU and GPU fill the same elements for the same seed and offset: bits and uniform values
/// exactly; normal values within an ulp or two (`ln`/`sin`/`cos` may round differently,
/// docs/accelerators.md), with the count of differing elements printed.
#[test]
fn gpu_random_numbers_match_the_cpu() {
    let a = gpu_or_skip!();
    let cpu = accelerator::create("cpu", None).unwrap();
    let cases = [
        (DType::U32, Distribution::Bits),
        (DType::I64, Distribution::Bits),
        (
            DType::F32,
            Distribution::Uniform {
                low: -2.0,
                high: 5.0,
            },
        ),
        (
            DType::F64,
            Distribution::Uniform {
                low: 0.0,
                high: 1.0,
            },
        ),
        (
            DType::F16,
            Distribution::Uniform {
                low: -1.0,
                high: 1.0,
            },
        ),
        (
            DType::BF16,
            Distribution::Uniform {
                low: 0.0,
                high: 10.0,
            },
        ),
        (
            DType::F32,
            Distribution::Normal {
                mean: 0.5,
                std: 2.0,
            },
        ),
        (
            DType::F64,
            Distribution::Normal {
                mean: 0.0,
                std: 1.0,
            },
        ),
        (
            DType::BF16,
            Distribution::Normal {
                mean: 0.0,
                std: 1.0,
            },
        ),
    ];
    for (dtype, dist) in cases {
        let n = 1_000_003;
        let bytes = n * dtype.size();
        a.manual_seed(2024).unwrap();
        cpu.manual_seed(2024).unwrap();
        let g = Buffer::new(&a, bytes, 0, MemoryKind::Device).unwrap();
        let c = Buffer::new(&cpu, bytes, 0, MemoryKind::Device).unwrap();
        for round in 0..2 {
            g.fill_random(0, dtype, n, dist, None).unwrap();
            c.fill_random(0, dtype, n, dist, None).unwrap();
            let (mut x, mut y) = (vec![0u8; bytes], vec![0u8; bytes]);
            g.read(0, &mut x).unwrap();
            c.read(0, &mut y).unwrap();
            if matches!(dist, Distribution::Normal { .. }) {
                let differing = compare_close(dtype, &x, &y);
                println!(
                    "{dtype} {dist:?} round {round}: {differing} of {n} elements differ by ≤ 2 ulp"
                );
                assert!(differing * 1000 < n, "too many differences: {differing}");
            } else {
                assert!(
                    x == y,
                    "{dtype} {dist:?} round {round}: GPU and CPU bits differ"
                );
            }
        }
        assert_eq!(
            a.rng_state().unwrap(),
            cpu.rng_state().unwrap(),
            "offsets advance alike"
        );
    }
}

/// Counts elements that differ, asserting each difference is at most 2 ulp.
fn compare_close(dtype: DType, x: &[u8], y: &[u8]) -> usize {
    let w = dtype.size();
    let mut differing = 0;
    for (a, b) in x.chunks_exact(w).zip(y.chunks_exact(w)) {
        if a == b {
            continue;
        }
        differing += 1;
        let (ia, ib): (i64, i64) = match w {
            2 => (
                i16::from_le_bytes([a[0], a[1]]).into(),
                i16::from_le_bytes([b[0], b[1]]).into(),
            ),
            4 => (
                i32::from_le_bytes(a.try_into().unwrap()).into(),
                i32::from_le_bytes(b.try_into().unwrap()).into(),
            ),
            _ => (
                i64::from_le_bytes(a.try_into().unwrap()),
                i64::from_le_bytes(b.try_into().unwrap()),
            ),
        };
        assert!((ia - ib).abs() <= 2, "{dtype}: {a:?} vs {b:?}");
    }
    differing
}

/// A captured kernel launch (a random fill) and a fill replay without running at capture.
#[test]
fn graphs_capture_and_replay_a_kernel_launch() {
    let a = gpu_or_skip!();
    let cpu = accelerator::create("cpu", None).unwrap();
    let n = 1 << 20;
    let bytes = n * 4;
    let g = Buffer::new(&a, bytes, 0, MemoryKind::Device).unwrap();
    // Warm up (builds and loads the Philox kernels) before capturing.
    g.fill_random(0, DType::U32, 16, Distribution::Bits, None)
        .unwrap();
    let s = a.new_stream().unwrap();
    let sentinel = vec![0xeeu8; bytes];
    g.write(0, &sentinel).unwrap();
    a.manual_seed(7).unwrap();
    a.begin_capture(s.as_ref()).unwrap();
    g.fill(0, bytes, &[0, 0, 0, 0], Some(s.as_ref())).unwrap();
    g.fill_random(
        0,
        DType::F32,
        n,
        Distribution::Uniform {
            low: -1.0,
            high: 1.0,
        },
        Some(s.as_ref()),
    )
    .unwrap();
    // Host copies cannot be captured; the capture stays valid after the refusal.
    let e = g
        .write_on(0, &sentinel[..16], Some(s.as_ref()))
        .unwrap_err();
    assert!(e.to_string().contains("cannot be captured"), "{e}");
    let graph = a.end_capture(s.clone()).unwrap();
    assert!(graph.node_count().unwrap() >= 2);
    let mut back = vec![0u8; bytes];
    g.read(0, &mut back).unwrap();
    assert!(back == sentinel, "capturing does not run the work");
    // The captured launch used the generator's state at capture time (seed 7, offset 0).
    cpu.manual_seed(7).unwrap();
    let c = Buffer::new(&cpu, bytes, 0, MemoryKind::Device).unwrap();
    c.fill_random(
        0,
        DType::F32,
        n,
        Distribution::Uniform {
            low: -1.0,
            high: 1.0,
        },
        None,
    )
    .unwrap();
    let mut expected = vec![0u8; bytes];
    c.read(0, &mut expected).unwrap();
    for _ in 0..3 {
        g.write(0, &sentinel).unwrap();
        graph.replay(None).unwrap();
        s.synchronize().unwrap();
        g.read(0, &mut back).unwrap();
        assert!(back == expected, "each replay reruns the captured kernel");
    }
    // Replaying on another stream of the same device works too.
    let other = a.new_stream().unwrap();
    graph.replay(Some(other.as_ref())).unwrap();
    other.synchronize().unwrap();
    // The default stream cannot capture.
    assert!(
        a.begin_capture(a.default_stream().unwrap().as_ref())
            .is_err()
    );
}
