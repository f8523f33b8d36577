//! Facts about the host: CPU model and features, NUMA layout, memory.

use std::sync::OnceLock;

use serde::Serialize;

/// The widest SIMD instruction set the CPU offers to our kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SimdLevel {
    /// AVX-512 (F, BW, VL).
    Avx512,
    /// AVX2 with FMA and F16C.
    Avx2,
    /// Arm NEON (Advanced SIMD).
    Neon,
    /// No usable SIMD.
    Scalar,
}

impl SimdLevel {
    /// Lower-case name (`"avx512"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Avx512 => "avx512",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Neon => "neon",
            SimdLevel::Scalar => "scalar",
        }
    }
}

/// CPU features relevant to our kernels (all false on other architectures).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CpuFeatures {
    /// x86 AVX2.
    pub avx2: bool,
    /// x86 FMA3.
    pub fma: bool,
    /// x86 F16C (fp16 conversions).
    pub f16c: bool,
    /// x86 AVX-512 Foundation.
    pub avx512f: bool,
    /// x86 AVX-512 BW.
    pub avx512bw: bool,
    /// x86 AVX-512 VL.
    pub avx512vl: bool,
    /// x86 AVX-512 BF16 (bf16 conversions and dot products).
    pub avx512bf16: bool,
    /// x86 AVX-512 FP16 (fp16 arithmetic).
    pub avx512fp16: bool,
    /// x86 AMX-BF16 tiles.
    pub amx_bf16: bool,
    /// Arm NEON.
    pub neon: bool,
    /// Arm SVE.
    pub sve: bool,
    /// Arm half-precision arithmetic.
    pub arm_fp16: bool,
    /// Arm BF16 instructions.
    pub arm_bf16: bool,
}

impl CpuFeatures {
    /// Names of the features present.
    pub fn names(&self) -> Vec<&'static str> {
        let all = [
            ("avx2", self.avx2),
            ("fma", self.fma),
            ("f16c", self.f16c),
            ("avx512f", self.avx512f),
            ("avx512bw", self.avx512bw),
            ("avx512vl", self.avx512vl),
            ("avx512_bf16", self.avx512bf16),
            ("avx512_fp16", self.avx512fp16),
            ("amx_bf16", self.amx_bf16),
            ("neon", self.neon),
            ("sve", self.sve),
            ("fp16", self.arm_fp16),
            ("bf16", self.arm_bf16),
        ];
        all.into_iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| n)
            .collect()
    }

    /// bf16 in hardware (AVX-512 BF16, AMX-BF16 or Arm BF16).
    pub fn bf16_native(&self) -> bool {
        self.avx512bf16 || self.amx_bf16 || self.arm_bf16
    }

    /// fp16 in hardware (F16C conversions, AVX-512 FP16 or Arm FP16).
    pub fn fp16_native(&self) -> bool {
        self.f16c || self.avx512fp16 || self.arm_fp16
    }
}

/// A description of the host CPU.
#[derive(Debug, Clone, Serialize)]
pub struct CpuInfo {
    /// Model name (`/proc/cpuinfo`'s "model name", or the architecture).
    pub model: String,
    /// Architecture (`x86_64`, `aarch64`, ...).
    pub arch: &'static str,
    /// Logical CPUs this process may use.
    pub logical_cpus: usize,
    /// NUMA nodes that have CPUs.
    pub numa_nodes: usize,
    /// Feature flags.
    pub features: CpuFeatures,
    /// The SIMD level kernels will be built for.
    pub simd: SimdLevel,
}

/// The host CPU's description (computed once).
pub fn cpu_info() -> &'static CpuInfo {
    static INFO: OnceLock<CpuInfo> = OnceLock::new();
    INFO.get_or_init(|| {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let features = detect_features(&cpuinfo);
        let simd = if features.avx512f && features.avx512bw && features.avx512vl {
            SimdLevel::Avx512
        } else if features.avx2 && features.fma && features.f16c {
            SimdLevel::Avx2
        } else if features.neon {
            SimdLevel::Neon
        } else {
            SimdLevel::Scalar
        };
        CpuInfo {
            model: model_name(&cpuinfo),
            arch: std::env::consts::ARCH,
            logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            numa_nodes: numa_nodes_with_cpus(),
            features,
            simd,
        }
    })
}

fn cpuinfo_field<'a>(cpuinfo: &'a str, key: &str) -> Option<&'a str> {
    cpuinfo.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key)
            .then(|| v.trim())
            .filter(|v| !v.is_empty())
    })
}

fn model_name(cpuinfo: &str) -> String {
    if let Some(m) = cpuinfo_field(cpuinfo, "model name") {
        return m.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    // Arm kernels often print no model name; "Hardware"/"Model" or the implementer remain.
    for key in ["Hardware", "Model", "cpu model"] {
        if let Some(m) = cpuinfo_field(cpuinfo, key) {
            return m.to_string();
        }
    }
    #[cfg(target_os = "macos")]
    if let Some(m) = sysctl_string("machdep.cpu.brand_string") {
        return m;
    }
    format!("{} CPU", std::env::consts::ARCH)
}

#[cfg(target_os = "macos")]
fn sysctl_string(name: &str) -> Option<String> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut len: libc::size_t = 0;
    // SAFETY: standard two-call sysctlbyname.
    unsafe {
        if libc::sysctlbyname(
            cname.as_ptr(),
            std::ptr::null_mut(),
            &mut len,
            std::ptr::null_mut(),
            0,
        ) != 0
        {
            return None;
        }
        let mut buf = vec![0u8; len];
        if libc::sysctlbyname(
            cname.as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        ) != 0
        {
            return None;
        }
        buf.truncate(len.saturating_sub(1));
        String::from_utf8(buf).ok()
    }
}

#[allow(unused_variables, unused_mut)]
fn detect_features(cpuinfo: &str) -> CpuFeatures {
    let mut f = CpuFeatures::default();
    #[cfg(target_arch = "x86_64")]
    {
        f.avx2 = std::arch::is_x86_feature_detected!("avx2");
        f.fma = std::arch::is_x86_feature_detected!("fma");
        f.f16c = std::arch::is_x86_feature_detected!("f16c");
        f.avx512f = std::arch::is_x86_feature_detected!("avx512f");
        f.avx512bw = std::arch::is_x86_feature_detected!("avx512bw");
        f.avx512vl = std::arch::is_x86_feature_detected!("avx512vl");
        f.avx512bf16 = std::arch::is_x86_feature_detected!("avx512bf16");
        f.avx512fp16 = std::arch::is_x86_feature_detected!("avx512fp16");
        // AMX detection in std is unstable; the kernel's flag list is authoritative on Linux
        // (it also says whether the OS enabled the tile state).
        let flags = cpuinfo_field(cpuinfo, "flags").unwrap_or("");
        f.amx_bf16 = flags.split_whitespace().any(|x| x == "amx_bf16");
    }
    #[cfg(target_arch = "aarch64")]
    {
        f.neon = std::arch::is_aarch64_feature_detected!("neon");
        f.sve = std::arch::is_aarch64_feature_detected!("sve");
        f.arm_fp16 = std::arch::is_aarch64_feature_detected!("fp16");
        f.arm_bf16 = std::arch::is_aarch64_feature_detected!("bf16");
    }
    f
}

fn numa_nodes_with_cpus() -> usize {
    let Ok(dir) = std::fs::read_dir("/sys/devices/system/node") else {
        return 1;
    };
    let n = dir
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix("node")
                .is_some_and(|rest| rest.parse::<u32>().is_ok())
                && std::fs::read_to_string(e.path().join("cpulist"))
                    .map(|s| !s.trim().is_empty())
                    .unwrap_or(false)
        })
        .count();
    n.max(1)
}

/// System memory as the operating system reports it, tightened by the process's cgroup
/// limit when there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SystemMemory {
    /// Total bytes.
    pub total: u64,
    /// Bytes available for new allocations without swapping.
    pub available: u64,
    /// The cgroup memory limit, when one applies.
    pub cgroup_limit: Option<u64>,
}

/// Reads the current system memory figures.
pub fn system_memory() -> SystemMemory {
    let (mut total, mut available) = os_memory();
    let cgroup_limit = cgroup_memory_limit();
    if let Some((limit, usage)) = cgroup_limit {
        if limit < total {
            total = limit;
        }
        available = available.min(limit.saturating_sub(usage));
    }
    SystemMemory {
        total,
        available,
        cgroup_limit: cgroup_limit.map(|(l, _)| l),
    }
}

fn os_memory() -> (u64, u64) {
    if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") {
        let kib = |key: &str| -> Option<u64> {
            meminfo.lines().find_map(|l| {
                let rest = l.strip_prefix(key)?.strip_prefix(':')?;
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .map(|v| v * 1024)
            })
        };
        if let Some(total) = kib("MemTotal") {
            let available = kib("MemAvailable").or_else(|| kib("MemFree")).unwrap_or(0);
            return (total, available);
        }
    }
    sysconf_memory()
}

#[cfg(unix)]
fn sysconf_memory() -> (u64, u64) {
    // SAFETY: sysconf has no preconditions.
    unsafe {
        let page = libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64;
        let pages = libc::sysconf(libc::_SC_PHYS_PAGES).max(0) as u64;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let avail = libc::sysconf(libc::_SC_AVPHYS_PAGES).max(0) as u64;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let avail = pages / 2;
        (pages * page, avail * page)
    }
}

#[cfg(not(unix))]
fn sysconf_memory() -> (u64, u64) {
    (0, 0)
}

/// The tightest cgroup (v2, then v1) memory limit on this process, and the usage there.
fn cgroup_memory_limit() -> Option<(u64, u64)> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    // cgroup v2: a line "0::/path".
    if let Some(path) = cgroup.lines().find_map(|l| l.strip_prefix("0::")) {
        let mut best: Option<(u64, u64)> = None;
        let mut dir = std::path::PathBuf::from("/sys/fs/cgroup");
        dir.push(path.trim_start_matches('/'));
        loop {
            let max = std::fs::read_to_string(dir.join("memory.max")).ok();
            if let Some(limit) = max.and_then(|s| s.trim().parse::<u64>().ok()) {
                let usage = std::fs::read_to_string(dir.join("memory.current"))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                if best.is_none_or(|(l, _)| limit < l) {
                    best = Some((limit, usage));
                }
            }
            if dir.as_os_str() == "/sys/fs/cgroup" || !dir.pop() {
                break;
            }
        }
        return best;
    }
    // cgroup v1 memory controller (the root view is the common container layout).
    let limit = std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes")
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    if limit >= (1 << 60) {
        return None; // "unlimited" is a huge number in v1
    }
    let usage = std::fs::read_to_string("/sys/fs/cgroup/memory/memory.usage_in_bytes")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Some((limit, usage))
}

/// The operating system's page size.
pub fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        #[cfg(unix)]
        {
            // SAFETY: sysconf has no preconditions.
            let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            if p > 0 {
                return p as usize;
            }
        }
        4096
    })
}

/// The soft `RLIMIT_MEMLOCK` in bytes (`None` when unlimited or unknown).
pub fn memlock_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: r is a valid out-pointer.
        if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } == 0
            && r.rlim_cur != libc::RLIM_INFINITY
        {
            #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every platform
            return Some(r.rlim_cur as u64);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_facts_are_plausible() {
        let info = cpu_info();
        assert!(!info.model.is_empty());
        assert!(info.logical_cpus >= 1);
        assert!(info.numa_nodes >= 1);
        let mem = system_memory();
        assert!(mem.total > 0, "{mem:?}");
        assert!(mem.available <= mem.total, "{mem:?}");
        assert!(page_size().is_power_of_two());
    }

    #[test]
    fn simd_level_agrees_with_features() {
        let info = cpu_info();
        match info.simd {
            SimdLevel::Avx512 => assert!(info.features.avx512f),
            SimdLevel::Avx2 => assert!(info.features.avx2 && info.features.fma),
            SimdLevel::Neon => assert!(info.features.neon),
            SimdLevel::Scalar => {}
        }
    }

    #[test]
    fn model_name_comes_from_cpuinfo() {
        let text = "processor\t: 0\nmodel name\t: AMD   EPYC 9R14\nflags\t: fpu avx2\n";
        assert_eq!(model_name(text), "AMD EPYC 9R14");
        assert_eq!(cpuinfo_field(text, "flags"), Some("fpu avx2"));
    }
}
