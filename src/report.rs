//! The environment report behind `dsrs report` (DeepSpeed's `ds_report`): the selected
//! accelerator and why, every accelerator considered, devices, memory, CPU features,
//! CUDA driver, versions. [`Report::to_json`] is the machine-readable form (`--json`, and
//! `dsrs_report_json` in the C ABI); [`Report::to_text`] is for people.

use serde_json::{Value, json};

use crate::accelerator::{self, Candidate, Selection, cpu::cpu_info, cuda};
use crate::ops;

/// Everything `dsrs report` shows.
#[derive(Debug, Clone)]
pub struct Report {
    /// The current accelerator's description, or the error that prevented selecting one.
    pub accelerator: std::result::Result<Value, String>,
    /// How the current accelerator was chosen.
    pub selection: Option<Selection>,
    /// Every accelerator considered, in detection order.
    pub candidates: Vec<Candidate>,
    /// Every op: prebuilt, compatible (or why not), cached.
    pub ops: Vec<ops::OpStatus>,
    /// The build environment: compiler, NVRTC, CUDA driver, cache, SIMD level.
    pub build: Value,
}

impl Report {
    /// Gathers the report, selecting the current accelerator if none is yet.
    pub fn gather() -> Report {
        let accelerator = accelerator::current()
            .map(|a| a.describe())
            .map_err(|e| e.to_string());
        Report {
            accelerator,
            selection: accelerator::selection(),
            candidates: accelerator::probe_all(),
            ops: ops::status_all(&ops::BuildOptions::default()),
            build: ops::environment(&ops::BuildOptions::default()),
        }
    }

    /// Whether an accelerator could be selected.
    pub fn ok(&self) -> bool {
        self.accelerator.is_ok()
    }

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        let (accel, error) = match &self.accelerator {
            Ok(v) => (v.clone(), Value::Null),
            Err(e) => (Value::Null, Value::String(e.clone())),
        };
        let cuda = cuda::probe();
        json!({
            "deepspeed_rs": {
                "version": crate::VERSION,
                "abi_version": crate::ABI_VERSION,
                "soversion": env!("DSRS_SOVERSION"),
                "target": env!("DSRS_BUILD_TARGET"),
                "profile": env!("DSRS_BUILD_PROFILE"),
            },
            "accelerator": accel,
            "selection": self.selection,
            "error": error,
            "candidates": self.candidates,
            "cpu": cpu_info(),
            "cuda": {
                "driver_loaded": cuda.driver_loaded,
                "driver_version": cuda.driver_version_string(),
                "device_count": cuda.device_count,
                "reason": cuda.reason,
            },
            "ops": self.ops,
            "build_environment": self.build,
            "environment": {
                "DSRS_ACCELERATOR": std::env::var("DSRS_ACCELERATOR").ok(),
                "DSRS_ACCELERATOR_PLUGINS": std::env::var("DSRS_ACCELERATOR_PLUGINS").ok(),
                "DSRS_CACHE_DIR": std::env::var("DSRS_CACHE_DIR").ok(),
                "CXX": std::env::var("CXX").ok(),
                "DSRS_NVRTC_LIB": std::env::var("DSRS_NVRTC_LIB").ok(),
                "DSRS_LOG": std::env::var("DSRS_LOG").ok(),
                "LOCAL_SIZE": std::env::var("LOCAL_SIZE").ok(),
            },
        })
    }

    /// The report as text, in the style of DeepSpeed's `ds_report`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let rule = "-".repeat(60);
        let line = |out: &mut String, key: &str, val: &str| {
            let dots = ".".repeat(24usize.saturating_sub(key.len()).max(2));
            out.push_str(&format!("{key} {dots} {val}\n"));
        };
        out.push_str(&format!(
            "{rule}\ndeepspeed_rs environment report\n{rule}\n"
        ));
        match (&self.accelerator, &self.selection) {
            (Ok(a), Some(sel)) => line(
                &mut out,
                "accelerator",
                &format!("{} ({})", a["name"].as_str().unwrap_or("?"), sel.reason),
            ),
            (Ok(a), None) => line(&mut out, "accelerator", a["name"].as_str().unwrap_or("?")),
            (Err(e), _) => line(&mut out, "accelerator", &format!("ERROR: {e}")),
        }
        out.push_str("accelerators considered (detection order):\n");
        for c in &self.candidates {
            let tag = if c.probe.available { "[OKAY]" } else { "[NO]" };
            out.push_str(&format!("  {:<10} {:<7} {}\n", c.name, tag, c.probe.detail));
        }
        if let Ok(a) = &self.accelerator {
            out.push_str(&format!("{rule}\n"));
            for d in a["devices"].as_array().into_iter().flatten() {
                line(
                    &mut out,
                    &format!(
                        "device {}:{}",
                        a["name"].as_str().unwrap_or("?"),
                        d["index"]
                    ),
                    &format!(
                        "{} ({} total, {} available)",
                        d["name"].as_str().unwrap_or("?"),
                        human(d["total_memory"].as_u64()),
                        human(d["available_memory"].as_u64())
                    ),
                );
            }
            let m = &a["memory"];
            line(
                &mut out,
                "library allocations",
                &format!(
                    "{} allocated, {} peak, {} pinned",
                    human(m["allocated_bytes.all.current"].as_u64()),
                    human(m["allocated_bytes.all.peak"].as_u64()),
                    human(m["pinned_bytes.all.current"].as_u64())
                ),
            );
            line(
                &mut out,
                "communication backend",
                a["communication_backend"].as_str().unwrap_or("?"),
            );
            let mut dtypes = Vec::new();
            for s in a["dtypes"].as_array().into_iter().flatten() {
                if s["supported"].as_bool() == Some(true) {
                    let native = if s["native"].as_bool() == Some(true) {
                        ""
                    } else {
                        " (emulated)"
                    };
                    dtypes.push(format!("{}{native}", s["name"].as_str().unwrap_or("?")));
                }
            }
            line(&mut out, "dtypes", &dtypes.join(", "));
            line(
                &mut out,
                "bf16 / fp16 native",
                &format!("{} / {}", a["bf16_supported"], a["fp16_supported"]),
            );
        }
        out.push_str(&format!("{rule}\n"));
        let cpu = cpu_info();
        line(&mut out, "cpu model", &cpu.model);
        line(&mut out, "logical cpus", &cpu.logical_cpus.to_string());
        line(&mut out, "numa nodes", &cpu.numa_nodes.to_string());
        line(&mut out, "simd level", cpu.simd.name());
        line(&mut out, "cpu features", &cpu.features.names().join(" "));
        let cuda = cuda::probe();
        let cuda_text = match (&cuda.reason, cuda.driver_version_string()) {
            (Some(r), _) => format!("unavailable: {r}"),
            (None, v) => format!(
                "driver {} with {} device(s)",
                v.unwrap_or_else(|| "?".into()),
                cuda.device_count
            ),
        };
        line(&mut out, "cuda", &cuda_text);
        out.push_str(&self.ops_text(&rule));
        out.push_str(&format!("{rule}\n"));
        line(
            &mut out,
            "deepspeed_rs version",
            &format!(
                "{} (ABI {}, libdeepspeed_rs.so.{})",
                crate::VERSION,
                crate::ABI_VERSION,
                env!("DSRS_SOVERSION")
            ),
        );
        line(
            &mut out,
            "build",
            &format!(
                "{}, {}",
                env!("DSRS_BUILD_TARGET"),
                env!("DSRS_BUILD_PROFILE")
            ),
        );
        out
    }
}

impl Report {
    /// DeepSpeed's op table and the build environment, as text.
    fn ops_text(&self, rule: &str) -> String {
        let mut out = String::new();
        let yes_no = |b: bool| if b { "[YES]" } else { "[NO]" };
        out.push_str(&format!(
            "{rule}\nop name ............ prebuilt .. compatible .. cached\n{rule}\n"
        ));
        for op in &self.ops {
            let dots = ".".repeat(19usize.saturating_sub(op.name.len()).max(2));
            let compat = if op.incompatible.is_empty() {
                "[OKAY]"
            } else {
                "[NO]"
            };
            out.push_str(&format!(
                "{} {dots} {:<6} .... {:<6} ...... {}\n",
                op.name,
                yes_no(op.prebuilt),
                compat,
                yes_no(op.cached)
            ));
            for why in &op.incompatible {
                out.push_str(&format!("    {why}\n"));
            }
        }
        out.push_str(&format!("{rule}\n"));
        let b = &self.build;
        let line = |out: &mut String, key: &str, val: String| {
            let dots = ".".repeat(24usize.saturating_sub(key.len()).max(2));
            out.push_str(&format!("{key} {dots} {val}\n"));
        };
        let c = &b["compiler"];
        line(
            &mut out,
            "c++ compiler",
            match c["error"].as_str() {
                Some(e) => format!("NOT FOUND: {e}"),
                None => format!(
                    "{} ({}; {}; OpenMP {})",
                    c["version"].as_str().unwrap_or("?"),
                    c["path"].as_str().unwrap_or("?"),
                    c["origin"].as_str().unwrap_or("?"),
                    if c["openmp"].as_bool() == Some(true) {
                        "yes"
                    } else {
                        "no"
                    }
                ),
            },
        );
        let n = &b["nvrtc"];
        line(
            &mut out,
            "nvrtc",
            match n["error"].as_str() {
                Some(e) => format!("not available: {e}"),
                None => format!(
                    "{}{}",
                    n["version"].as_str().unwrap_or("?"),
                    n["library"]
                        .as_str()
                        .map(|l| format!(" ({l})"))
                        .unwrap_or_default()
                ),
            },
        );
        line(
            &mut out,
            "cuda driver",
            b["cuda_driver"]
                .as_str()
                .unwrap_or("not loaded")
                .to_string(),
        );
        let cache = &b["cache"];
        line(
            &mut out,
            "op cache",
            match cache["error"].as_str() {
                Some(e) => format!("UNUSABLE: {e}"),
                None if cache["exists"] == false => {
                    format!("{} (not created yet)", cache["dir"].as_str().unwrap_or("?"))
                }
                None => cache["dir"].as_str().unwrap_or("?").to_string(),
            },
        );
        line(
            &mut out,
            "simd level",
            b["simd"].as_str().unwrap_or("?").to_string(),
        );
        line(
            &mut out,
            "cpu op target",
            b["cpu_target"].as_str().unwrap_or("?").to_string(),
        );
        out
    }
}

/// Bytes in binary units (`"1.5 GiB"`); `"?"` when unknown.
pub fn human(bytes: Option<u64>) -> String {
    let Some(b) = bytes else { return "?".into() };
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(Some(512)), "512 B");
        assert_eq!(human(Some(1536)), "1.5 KiB");
        assert_eq!(human(Some(3 << 30)), "3.0 GiB");
        assert_eq!(human(None), "?");
    }

    #[test]
    fn the_report_names_every_candidate_and_the_cpu() {
        let r = Report::gather();
        let text = r.to_text();
        assert!(text.contains("cpu"), "{text}");
        assert!(text.contains("cuda"), "{text}");
        let j = r.to_json();
        assert_eq!(j["deepspeed_rs"]["version"], crate::VERSION);
        assert!(j["candidates"].as_array().unwrap().len() >= 2);
    }
}
