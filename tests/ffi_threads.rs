//! Handles under concurrency, through the C ABI: objects freed by one thread while others
//! use them must yield errors or correct results — never crashes — and nothing leaks.

use std::ffi::CString;
use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use deepspeed_rs::ffi::accelerator::*;
use deepspeed_rs::ffi::buffer::*;
use deepspeed_rs::ffi::dsrs_status::{self, *};
use deepspeed_rs::ffi::{dsrs_accelerator, dsrs_buffer};

/// Handles are plain integers to the test (they are never dereferenced).
#[derive(Clone, Copy)]
struct H(usize);

fn new_cpu(options: &str) -> *mut dsrs_accelerator {
    let name = CString::new("cpu").unwrap();
    let opts = CString::new(options).unwrap();
    let mut a = ptr::null_mut();
    assert_eq!(
        unsafe { dsrs_accelerator_new(name.as_ptr(), opts.as_ptr(), &mut a) },
        DSRS_STATUS_OK
    );
    a
}

/// A tiny xorshift generator: randomized but reproducible contents.
fn pattern(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn concurrent_use_and_free_never_crash_and_never_leak() {
    let accel = new_cpu(r#"{"seed": 11}"#);
    let accel_h = H(accel as usize);
    let live: Mutex<Vec<(H, u64, usize)>> = Mutex::new(Vec::new());
    let done = AtomicBool::new(false);
    let reads_ok = AtomicUsize::new(0);
    let stale_seen = AtomicUsize::new(0);

    std::thread::scope(|s| {
        // Producer: creates buffers with known random contents.
        s.spawn(|| {
            for i in 0..3000u64 {
                let n = 64 + (i as usize * 37) % 4000;
                let mut b: *mut dsrs_buffer = ptr::null_mut();
                let a = accel_h.0 as *mut dsrs_accelerator;
                assert_eq!(
                    unsafe { dsrs_buffer_new(a, n, 0, DSRS_MEMORY_DEVICE, &mut b) },
                    DSRS_STATUS_OK
                );
                let data = pattern(i, n);
                let st =
                    unsafe { dsrs_buffer_write(b, 0, data.as_ptr().cast(), n, ptr::null_mut()) };
                assert_eq!(st, DSRS_STATUS_OK);
                live.lock().unwrap().push((H(b as usize), i, n));
            }
            done.store(true, Ordering::Release);
        });
        // Reader: reads whatever is live; a handle freed meanwhile gives STALE_HANDLE.
        s.spawn(|| {
            let mut k = 0usize;
            while !done.load(Ordering::Acquire) || !live.lock().unwrap().is_empty() {
                let pick = {
                    let l = live.lock().unwrap();
                    if l.is_empty() {
                        None
                    } else {
                        Some(l[k % l.len()])
                    }
                };
                k += 7;
                let Some((h, seed, n)) = pick else { continue };
                let mut out = vec![0u8; n];
                let st = unsafe {
                    dsrs_buffer_read(
                        h.0 as *const dsrs_buffer,
                        0,
                        out.as_mut_ptr().cast(),
                        n,
                        ptr::null_mut(),
                    )
                };
                match st {
                    DSRS_STATUS_OK => {
                        assert_eq!(out, pattern(seed, n), "contents of buffer {seed}");
                        reads_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    DSRS_STATUS_STALE_HANDLE => {
                        stale_seen.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("unexpected status {other:?}"),
                }
            }
        });
        // Freer: frees buffers, sometimes twice (the second must be STALE_HANDLE).
        s.spawn(|| {
            let mut freed = 0;
            while !done.load(Ordering::Acquire) || !live.lock().unwrap().is_empty() {
                let victim = {
                    let mut l = live.lock().unwrap();
                    if l.len() > 8 || (done.load(Ordering::Acquire) && !l.is_empty()) {
                        Some(l.remove(0))
                    } else {
                        None
                    }
                };
                let Some((h, _, _)) = victim else {
                    std::thread::yield_now();
                    continue;
                };
                assert_eq!(
                    unsafe { dsrs_buffer_free(h.0 as *mut dsrs_buffer) },
                    DSRS_STATUS_OK
                );
                if freed % 10 == 0 {
                    let again: dsrs_status = unsafe { dsrs_buffer_free(h.0 as *mut dsrs_buffer) };
                    assert_eq!(again, DSRS_STATUS_STALE_HANDLE);
                }
                freed += 1;
            }
        });
    });

    assert!(reads_ok.load(Ordering::Relaxed) > 0);
    let mut allocated = u64::MAX;
    assert_eq!(
        unsafe { dsrs_accelerator_memory_allocated(accel, -1, &mut allocated) },
        DSRS_STATUS_OK
    );
    assert_eq!(allocated, 0, "every buffer's bytes were returned");
    let mut peak = 0u64;
    assert_eq!(
        unsafe { dsrs_accelerator_max_memory_allocated(accel, -1, &mut peak) },
        DSRS_STATUS_OK
    );
    assert!(peak >= 64, "{peak}");
    assert_eq!(unsafe { dsrs_accelerator_free(accel) }, DSRS_STATUS_OK);
}

#[test]
fn a_buffer_keeps_its_accelerator_alive() {
    let accel = new_cpu("");
    let mut b: *mut dsrs_buffer = ptr::null_mut();
    assert_eq!(
        unsafe { dsrs_buffer_new(accel, 100, 64, DSRS_MEMORY_HOST, &mut b) },
        DSRS_STATUS_OK
    );
    assert_eq!(unsafe { dsrs_accelerator_free(accel) }, DSRS_STATUS_OK);
    // The accelerator handle is gone, the buffer (and the accelerator under it) is not.
    let data = pattern(3, 100);
    assert_eq!(
        unsafe { dsrs_buffer_write(b, 0, data.as_ptr().cast(), 100, ptr::null_mut()) },
        DSRS_STATUS_OK
    );
    let mut owner: *mut dsrs_accelerator = ptr::null_mut();
    assert_eq!(
        unsafe { dsrs_buffer_accelerator(b, &mut owner) },
        DSRS_STATUS_OK
    );
    let mut allocated = 0u64;
    assert_eq!(
        unsafe { dsrs_accelerator_memory_allocated(owner, -1, &mut allocated) },
        DSRS_STATUS_OK
    );
    assert_eq!(allocated, 100);
    assert_eq!(unsafe { dsrs_buffer_free(b) }, DSRS_STATUS_OK);
    assert_eq!(
        unsafe { dsrs_accelerator_memory_allocated(owner, -1, &mut allocated) },
        DSRS_STATUS_OK
    );
    assert_eq!(allocated, 0);
    assert_eq!(unsafe { dsrs_accelerator_free(owner) }, DSRS_STATUS_OK);
    assert_eq!(
        unsafe { dsrs_accelerator_free(owner) },
        DSRS_STATUS_STALE_HANDLE
    );
}
