//! Cost of one trivial C ABI call, including the panic boundary and handle validation.
//!
//! `cargo bench --bench abi_call` — reports ns/call for:
//! * `dsrs_abi_version` — an exported function with no arguments (the floor);
//! * `dsrs_accelerator_device_count` / `dsrs_buffer_size` — a handle lookup (tag, slot,
//!   generation check, `Arc` clone) plus an out-parameter, inside the panic boundary;
//! * the same call from two threads at once (shared registry lock and `Arc` counter);
//! * the direct Rust trait call it wraps (no ABI), for the ratio;
//! * a failing call (stale handle): error path with message formatting.

use std::hint::black_box;
use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use deepspeed_rs::accelerator::{self, Accelerator};
use deepspeed_rs::ffi::accelerator::{
    dsrs_accelerator_device_count, dsrs_accelerator_free, dsrs_accelerator_new,
};
use deepspeed_rs::ffi::buffer::{
    DSRS_MEMORY_DEVICE, dsrs_buffer_free, dsrs_buffer_new, dsrs_buffer_size,
};
use deepspeed_rs::ffi::common::dsrs_abi_version;
use deepspeed_rs::ffi::{dsrs_accelerator, dsrs_buffer};

#[derive(Clone, Copy)]
struct H(usize);

fn bench(c: &mut Criterion) {
    let mut accel: *mut dsrs_accelerator = ptr::null_mut();
    unsafe { dsrs_accelerator_new(c"cpu".as_ptr(), ptr::null(), &mut accel) };
    let mut buf: *mut dsrs_buffer = ptr::null_mut();
    unsafe { dsrs_buffer_new(accel, 4096, 0, DSRS_MEMORY_DEVICE, &mut buf) };
    let mut g = c.benchmark_group("abi_call");
    g.measurement_time(Duration::from_secs(3));

    g.bench_function("dsrs_abi_version (no handle)", |b| {
        b.iter(|| black_box(dsrs_abi_version()))
    });
    g.bench_function("dsrs_accelerator_device_count", |b| {
        let mut n = 0u32;
        b.iter(|| unsafe { black_box(dsrs_accelerator_device_count(black_box(accel), &mut n)) })
    });
    g.bench_function("dsrs_buffer_size", |b| {
        let mut n = 0usize;
        b.iter(|| unsafe { black_box(dsrs_buffer_size(black_box(buf), &mut n)) })
    });
    let h = H(accel as usize);
    g.bench_function("dsrs_accelerator_device_count, 2 threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(move || {
                        let mut n = 0u32;
                        for _ in 0..iters {
                            unsafe {
                                black_box(dsrs_accelerator_device_count(
                                    h.0 as *const dsrs_accelerator,
                                    &mut n,
                                ))
                            };
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    let direct: Arc<dyn Accelerator> = accelerator::create("cpu", None).unwrap();
    g.bench_function("direct Rust device_count (no ABI)", |b| {
        b.iter(|| black_box(black_box(&direct).device_count()))
    });

    let mut stale: *mut dsrs_buffer = ptr::null_mut();
    unsafe { dsrs_buffer_new(accel, 16, 0, DSRS_MEMORY_DEVICE, &mut stale) };
    unsafe { dsrs_buffer_free(stale) };
    g.bench_function("dsrs_buffer_size on a stale handle (error path)", |b| {
        let mut n = 0usize;
        b.iter(|| unsafe { black_box(dsrs_buffer_size(black_box(stale), &mut n)) })
    });
    g.finish();
    unsafe {
        dsrs_buffer_free(buf);
        dsrs_accelerator_free(accel);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
