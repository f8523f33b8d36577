//! Accelerator plugins through the Rust API: the example plugin (examples/plugin_hostmem)
//! built by the test, loaded, validated and driven like any accelerator; plugins that lie
//! about their ABI, fail to initialise or are not plugins at all get clear errors.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use deepspeed_rs::ErrorKind;
use deepspeed_rs::accelerator::{self, Accelerator, Buffer, Distribution, MemoryKind, plugin};
use deepspeed_rs::dtype::DType;

/// Builds examples/plugin_hostmem with `defines` into `name`.so; `None` without a compiler
/// (a compiler that fails is a test failure).
fn build_plugin(name: &str, defines: &[&str]) -> Option<PathBuf> {
    // Built once per process: rewriting a library that is loaded would corrupt it.
    static BUILT: Mutex<Vec<(String, Option<PathBuf>)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap();
    if let Some((_, p)) = built.iter().find(|(n, _)| n == name) {
        return p.clone();
    }
    let p = compile_plugin(name, defines);
    built.push((name.to_string(), p.clone()));
    p
}

fn compile_plugin(name: &str, defines: &[&str]) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugins");
    std::fs::create_dir_all(&dir).ok()?;
    let out = dir.join(format!("lib{name}.so"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(cc)
        .args(["-std=c11", "-O1", "-fPIC", "-shared", "-Wall", "-Werror"])
        .arg("-I")
        .arg(root.join("include"))
        .args(defines)
        .arg("-o")
        .arg(&out)
        .arg(root.join("examples/plugin_hostmem/hostmem_plugin.c"))
        .arg("-lpthread")
        .status()
        .ok()?;
    assert!(
        status.success(),
        "building the example plugin {name} failed"
    );
    Some(out)
}

/// The good plugin, loaded once per test process.
fn hostmem() -> Option<Arc<dyn Accelerator>> {
    static LOADED: OnceLock<Option<String>> = OnceLock::new();
    let name = LOADED.get_or_init(|| {
        let path = build_plugin("dsrs_hostmem", &[])?;
        Some(plugin::load_plugin(&path).expect("the example plugin loads"))
    });
    let name = name.as_ref()?;
    assert_eq!(name, "hostmem");
    Some(accelerator::create("hostmem", Some(r#"{"devices": 2, "capacity": 8388608}"#)).unwrap())
}

macro_rules! plugin_or_skip {
    () => {
        match hostmem() {
            Some(a) => a,
            None => {
                eprintln!("skipped: no C compiler to build the example plugin");
                return;
            }
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
            x as u8
        })
        .collect()
}

#[test]
fn the_plugin_joins_detection_and_describes_itself() {
    let a = plugin_or_skip!();
    let names = accelerator::names();
    let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert!(
        pos("hostmem") < pos("cuda") && pos("cuda") < pos("cpu"),
        "{names:?}"
    );
    let c = accelerator::probe_all()
        .into_iter()
        .find(|c| c.name == "hostmem")
        .unwrap();
    assert!(c.probe.available && !c.builtin, "{c:?}");
    assert!(c.probe.detail.contains("caching allocator"), "{c:?}");
    assert_eq!(a.name(), "hostmem");
    assert_eq!(a.device_count(), 2);
    assert_eq!(a.communication_backend_name(), "gloo");
    assert!(!a.is_host() && !a.is_synchronized_device());
    assert_eq!(
        a.device_name(Some(1)).unwrap(),
        "hostmem device 1 (host RAM)"
    );
    let p = a.device_properties(Some(1)).unwrap();
    assert_eq!((p.index, p.total_memory), (1, 8 << 20));
    assert!(
        a.device_name(Some(2))
            .unwrap_err()
            .to_string()
            .contains("device 2 does not exist")
    );
    // Loading the same file again is a no-op that returns the name.
    let again = build_plugin("dsrs_hostmem", &[]).unwrap();
    assert_eq!(plugin::load_plugin(again).unwrap(), "hostmem");
    let info = a.describe();
    assert_eq!(info["details"]["plugin_abi_version"], 1);
    assert!(
        info["details"]["optional_entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "memory_stats")
    );
}

#[test]
fn memory_copies_and_fills_go_through_the_plugin() {
    let a = plugin_or_skip!();
    let data = random_bytes(10_000, 7);
    let b = Buffer::new(&a, data.len(), 0, MemoryKind::Device).unwrap();
    assert_eq!(b.dl_device().device_type, 12, "kDLExtDev");
    let mut zeros = vec![1u8; data.len()];
    b.read(0, &mut zeros).unwrap();
    assert!(zeros.iter().all(|&x| x == 0), "new buffers are zeroed");
    b.write(0, &data).unwrap();
    let c = Buffer::new(&a, data.len(), 0, MemoryKind::Device).unwrap();
    c.copy_from(100, &b, 0, 9_000, None).unwrap();
    let mut back = vec![0u8; data.len()];
    c.read(0, &mut back).unwrap();
    assert_eq!(&back[100..9_100], &data[..9_000]);
    assert!(back[..100].iter().all(|&x| x == 0));
    for pattern in [
        &[0xabu8][..],
        &[1, 2],
        &[1, 2, 3, 4],
        &[9, 8, 7, 6, 5, 4, 3, 2],
    ] {
        c.fill(16, 64, pattern, None).unwrap();
        c.read(0, &mut back).unwrap();
        for (i, &x) in back[16..80].iter().enumerate() {
            assert_eq!(x, pattern[i % pattern.len()]);
        }
    }
    // Pinned memory: this plugin has none, and says so.
    let e = Buffer::new(&a, 64, 0, MemoryKind::Pinned).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(
        e.to_string()
            .contains("hostmem: memory kind 2 is not supported"),
        "{e}"
    );
}

#[test]
fn memory_statistics_come_from_the_plugin_allocator() {
    let a = plugin_or_skip!();
    a.set_device(1).unwrap();
    let before = a.memory_stats(None).unwrap();
    assert_eq!(before.allocated_bytes, 0);
    let b = Buffer::new(&a, 1000, 0, MemoryKind::Device).unwrap();
    let s = a.memory_stats(None).unwrap();
    assert_eq!(
        s.allocated_bytes, 1024,
        "rounded to the plugin's 512-byte granule"
    );
    assert_eq!((s.reserved_bytes, s.allocations), (1024, 1));
    assert_eq!(a.available_memory(None).unwrap(), (8 << 20) - 1024);
    drop(b);
    let s = a.memory_stats(None).unwrap();
    assert_eq!((s.allocated_bytes, s.peak_allocated_bytes), (0, 1024));
    assert_eq!(s.reserved_bytes, 1024, "freed blocks stay cached");
    a.reset_peak_memory_stats(None).unwrap();
    assert_eq!(a.memory_stats(None).unwrap().peak_allocated_bytes, 0);
    a.empty_cache().unwrap();
    assert_eq!(a.memory_stats(None).unwrap().reserved_bytes, 0);
    // Past the capacity: the plugin's out-of-memory, counted and explained.
    let e = Buffer::new(&a, 9 << 20, 0, MemoryKind::Device).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfMemory);
    assert!(e.to_string().contains("out of device memory"), "{e}");
    assert_eq!(a.memory_stats(None).unwrap().num_ooms, 1);
    assert_eq!(
        a.memory_stats(Some(0)).unwrap().num_ooms,
        0,
        "device 0 untouched"
    );
}

#[test]
fn random_fills_match_the_cpu_bit_for_bit() {
    let a = plugin_or_skip!();
    let cpu = accelerator::create("cpu", None).unwrap();
    for (dtype, dist) in [
        (DType::U32, Distribution::Bits),
        (
            DType::F32,
            Distribution::Normal {
                mean: 1.0,
                std: 2.0,
            },
        ),
        (
            DType::BF16,
            Distribution::Uniform {
                low: -1.0,
                high: 3.0,
            },
        ),
        (
            DType::F64,
            Distribution::Normal {
                mean: 0.0,
                std: 1.0,
            },
        ),
    ] {
        let n = 1001;
        let bytes = n * dtype.size();
        a.manual_seed(42).unwrap();
        cpu.manual_seed(42).unwrap();
        let on_plugin = Buffer::new(&a, bytes, 0, MemoryKind::Device).unwrap();
        let on_cpu = Buffer::new(&cpu, bytes, 0, MemoryKind::Device).unwrap();
        for _ in 0..2 {
            // The second round checks that the offsets advanced alike.
            on_plugin.fill_random(0, dtype, n, dist, None).unwrap();
            on_cpu.fill_random(0, dtype, n, dist, None).unwrap();
            let (mut x, mut y) = (vec![0u8; bytes], vec![0u8; bytes]);
            on_plugin.read(0, &mut x).unwrap();
            on_cpu.read(0, &mut y).unwrap();
            assert_eq!(x, y, "{dtype} {dist:?}");
            assert!(x.iter().any(|&b| b != 0));
        }
        assert_eq!(a.rng_state().unwrap(), cpu.rng_state().unwrap());
    }
}

#[test]
fn streams_events_and_ranges_are_the_plugins() {
    let a = plugin_or_skip!();
    let s = a.new_stream().unwrap();
    assert!(!s.is_default() && !s.native_handle().is_null());
    a.set_current_stream(s.clone()).unwrap();
    let b = Buffer::new(&a, 4096, 0, MemoryKind::Device).unwrap();
    let data = random_bytes(4096, 3);
    b.write_on(0, &data, Some(s.as_ref())).unwrap();
    // The example's streams count the operations submitted to them.
    let ops = unsafe { *(s.native_handle() as *const u64) };
    assert!(ops >= 1, "{ops}");
    assert!(s.query().unwrap());
    s.synchronize().unwrap();
    let (e0, e1) = (a.new_event(true).unwrap(), a.new_event(true).unwrap());
    e0.record(s.as_ref()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    e1.record(s.as_ref()).unwrap();
    e1.synchronize().unwrap();
    let ms = e0.elapsed_ms(e1.as_ref()).unwrap();
    assert!((19.0..5_000.0).contains(&ms), "{ms}");
    let untimed = a.new_event(false).unwrap();
    untimed.record(s.as_ref()).unwrap();
    assert!(untimed.elapsed_ms(e1.as_ref()).is_err());
    s.wait_event(e1.as_ref()).unwrap();
    a.range_push("step").unwrap();
    a.range_pop().unwrap();
    assert_eq!(a.range_pop().unwrap_err().kind(), ErrorKind::InvalidState);
    // No graphs or foreign streams on this plugin: a clear "unsupported".
    assert_eq!(
        a.begin_capture(s.as_ref()).unwrap_err().kind(),
        ErrorKind::Unsupported
    );
    let e = unsafe { a.wrap_stream(std::ptr::null_mut()) }.unwrap_err();
    assert!(e.to_string().contains("no native streams"), "{e}");
    // dtype support as the plugin declares it.
    assert!(a.dtype_support(DType::BF16).supported && !a.is_bf16_supported());
    assert!(!a.dtype_support(DType::C64).supported);
    assert!(a.dtype_support(DType::F32).native);
}

#[test]
fn a_plugin_that_lies_about_its_abi_is_refused() {
    let Some(path) = build_plugin(
        "dsrs_hostmem_abi99",
        &[
            "-DHOSTMEM_ABI_VERSION=99",
            "-DHOSTMEM_NAME=\"hostmem_abi99\"",
        ],
    ) else {
        return;
    };
    let e = plugin::load_plugin(&path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PluginInvalid);
    let m = e.to_string();
    assert!(m.contains(&path.display().to_string()), "{m}");
    assert!(
        m.contains("declares plugin ABI version 99") && m.contains("implements version 1"),
        "{m}"
    );
    assert!(!accelerator::names().contains(&"hostmem_abi99".to_string()));
}

#[test]
fn a_plugin_that_fails_to_initialize_is_unavailable_with_its_message() {
    let Some(path) = build_plugin(
        "dsrs_hostmem_failinit",
        &["-DHOSTMEM_FAIL_INIT", "-DHOSTMEM_NAME=\"hostmem_failinit\""],
    ) else {
        return;
    };
    assert_eq!(plugin::load_plugin(&path).unwrap(), "hostmem_failinit");
    let e = accelerator::create("hostmem_failinit", None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    let m = e.to_string();
    assert!(
        m.starts_with("hostmem_failinit unavailable: failed to initialize"),
        "{m}"
    );
    assert!(
        m.contains("simulated fault") && m.contains("status 404"),
        "{m}"
    );
}

#[test]
fn files_that_are_not_plugins_are_named_in_the_error() {
    let e = plugin::load_plugin("/nonexistent/libnothing.so").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PluginInvalid);
    assert!(e.to_string().contains("/nonexistent/libnothing.so"), "{e}");
    // A shared library without the entry symbol.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("not_a_plugin.c");
    std::fs::write(&src, "int answer(void) { return 42; }\n").unwrap();
    let so = dir.join("libnot_a_plugin.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let Ok(status) = Command::new(cc)
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&src)
        .status()
    else {
        return;
    };
    assert!(status.success());
    let e = plugin::load_plugin(&so).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PluginInvalid);
    assert!(
        e.to_string()
            .contains("does not export dsrs_accelerator_plugin_entry"),
        "{e}"
    );
    // A text file is not a shared library.
    let e = plugin::load_plugin(&src).unwrap_err();
    assert!(
        e.to_string().starts_with("cannot load accelerator plugin"),
        "{e}"
    );
}

/// The environment route, in a child process: `DSRS_ACCELERATOR_PLUGINS` loads the good
/// plugin (picked by detection) and reports the bad one.
#[test]
fn the_environment_loads_plugins_and_reports_failures() {
    let (Some(good), Some(bad)) = (
        build_plugin("dsrs_hostmem", &[]),
        build_plugin(
            "dsrs_hostmem_abi99",
            &[
                "-DHOSTMEM_ABI_VERSION=99",
                "-DHOSTMEM_NAME=\"hostmem_abi99\"",
            ],
        ),
    ) else {
        return;
    };
    let list = format!("{}:{}", good.display(), bad.display());
    let run = |extra: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dsrs"));
        c.args(["report", "--json"])
            .env_remove("DSRS_ACCELERATOR")
            .env("DSRS_ACCELERATOR_PLUGINS", &list);
        for (k, v) in extra {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let v = run(&[]);
    assert_eq!(v["accelerator"]["name"], "hostmem", "{v}");
    assert_eq!(v["selection"]["method"], "detected");
    let candidates = v["candidates"].as_array().unwrap();
    let bad_entry = candidates
        .iter()
        .find(|c| c["name"].as_str().unwrap().starts_with("plugin:"))
        .expect("the failed plugin is listed");
    assert_eq!(bad_entry["available"], false);
    assert!(
        bad_entry["detail"]
            .as_str()
            .unwrap()
            .contains("ABI version 99"),
        "{bad_entry}"
    );
    let v = run(&[("DSRS_ACCELERATOR", "cpu")]);
    assert_eq!(v["accelerator"]["name"], "cpu");
    let v = run(&[("HOSTMEM_UNAVAILABLE", "1")]);
    assert_eq!(
        v["accelerator"]["name"], "cpu",
        "an unavailable plugin is skipped"
    );
    let hm = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "hostmem")
        .unwrap();
    assert!(
        hm["detail"]
            .as_str()
            .unwrap()
            .contains("HOSTMEM_UNAVAILABLE is set"),
        "{hm}"
    );
}
