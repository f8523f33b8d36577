//! NVRTC's C API, loaded by us rather than by cudarc: cudarc's loader looks for the library
//! names of the CUDA version it was built for (`libnvrtc.so.12` for its `cuda-12080`
//! bindings), so a CUDA 13 toolkit's `libnvrtc.so.13` — or any file `DSRS_NVRTC_LIB` names —
//! would not be found even after we loaded it by path. The dozen functions the JIT needs have
//! kept their C signatures since CUDA 11.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::{Path, PathBuf};

/// `nvrtcProgram`.
pub(crate) type Program = *mut c_void;

type Status = c_int;

/// NVRTC's entry points, resolved once; the library stays loaded for the process.
pub(crate) struct Lib {
    /// The file loaded (an absolute path, or the name the loader resolved).
    pub(crate) path: PathBuf,
    version: unsafe extern "C" fn(*mut c_int, *mut c_int) -> Status,
    num_archs: Option<unsafe extern "C" fn(*mut c_int) -> Status>,
    archs: Option<unsafe extern "C" fn(*mut c_int) -> Status>,
    create: unsafe extern "C" fn(
        *mut Program,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> Status,
    compile: unsafe extern "C" fn(Program, c_int, *const *const c_char) -> Status,
    log_size: unsafe extern "C" fn(Program, *mut usize) -> Status,
    log: unsafe extern "C" fn(Program, *mut c_char) -> Status,
    ptx_size: unsafe extern "C" fn(Program, *mut usize) -> Status,
    ptx: unsafe extern "C" fn(Program, *mut c_char) -> Status,
    cubin_size: unsafe extern "C" fn(Program, *mut usize) -> Status,
    cubin: unsafe extern "C" fn(Program, *mut c_char) -> Status,
    destroy: unsafe extern "C" fn(*mut Program) -> Status,
    error_string: unsafe extern "C" fn(Status) -> *const c_char,
}

// SAFETY: plain function pointers into a library that is never unloaded.
unsafe impl Send for Lib {}
unsafe impl Sync for Lib {}

impl Lib {
    /// Opens `file` (a path, or a bare name searched on the loader path) and resolves every
    /// entry point.
    pub(crate) fn open(file: &Path) -> std::result::Result<Lib, String> {
        // SAFETY: NVRTC's initializers are benign; the library is never unloaded (forgotten
        // below), so the function pointers stay valid.
        let lib = unsafe {
            libloading::os::unix::Library::open(
                Some(file),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
            )
        }
        .map_err(|e| crate::error::with_sources(&e))?;
        fn sym<T: Copy>(
            lib: &libloading::os::unix::Library,
            name: &str,
        ) -> std::result::Result<T, String> {
            // SAFETY: T is the function's C signature (the declarations above follow nvrtc.h).
            unsafe { lib.get::<T>(name.as_bytes()) }
                .map(|s| *s)
                .map_err(|_| format!("it has no {name} (is it NVRTC?)"))
        }
        let l = Lib {
            path: file.to_path_buf(),
            version: sym(&lib, "nvrtcVersion")?,
            num_archs: sym(&lib, "nvrtcGetNumSupportedArchs").ok(),
            archs: sym(&lib, "nvrtcGetSupportedArchs").ok(),
            create: sym(&lib, "nvrtcCreateProgram")?,
            compile: sym(&lib, "nvrtcCompileProgram")?,
            log_size: sym(&lib, "nvrtcGetProgramLogSize")?,
            log: sym(&lib, "nvrtcGetProgramLog")?,
            ptx_size: sym(&lib, "nvrtcGetPTXSize")?,
            ptx: sym(&lib, "nvrtcGetPTX")?,
            cubin_size: sym(&lib, "nvrtcGetCUBINSize")?,
            cubin: sym(&lib, "nvrtcGetCUBIN")?,
            destroy: sym(&lib, "nvrtcDestroyProgram")?,
            error_string: sym(&lib, "nvrtcGetErrorString")?,
        };
        std::mem::forget(lib);
        Ok(l)
    }

    fn check(&self, what: &str, s: Status) -> std::result::Result<(), String> {
        if s == 0 {
            return Ok(());
        }
        // SAFETY: nvrtcGetErrorString returns a static string (or NULL).
        let msg = unsafe {
            let p = (self.error_string)(s);
            if p.is_null() {
                format!("error {s}")
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        Err(format!("{what}: {msg}"))
    }

    /// `nvrtcVersion`.
    pub(crate) fn version(&self) -> std::result::Result<(i32, i32), String> {
        let (mut a, mut b) = (0, 0);
        // SAFETY: valid out-pointers.
        self.check("nvrtcVersion", unsafe { (self.version)(&mut a, &mut b) })?;
        Ok((a, b))
    }

    /// The real architectures NVRTC targets (empty when this NVRTC cannot say).
    pub(crate) fn supported_archs(&self) -> Vec<i32> {
        let (Some(num), Some(get)) = (self.num_archs, self.archs) else {
            return Vec::new();
        };
        let mut n = 0;
        // SAFETY: n is written, then the vector has room for n entries.
        unsafe {
            if num(&mut n) != 0 || n <= 0 {
                return Vec::new();
            }
            let mut v = vec![0; n as usize];
            if get(v.as_mut_ptr()) != 0 {
                return Vec::new();
            }
            v
        }
    }

    /// Compiles `src` (named `name` in messages) with `options`; returns the image (PTX
    /// without its NUL when `ptx`, else the CUBIN) and the log, or the error and the log.
    pub(crate) fn compile(
        &self,
        src: &CStr,
        name: &CStr,
        options: &[std::ffi::CString],
        ptx: bool,
    ) -> (std::result::Result<Vec<u8>, String>, String) {
        let mut prog: Program = std::ptr::null_mut();
        // SAFETY: valid strings; no headers passed (they are on the include path).
        let created = unsafe {
            (self.create)(
                &mut prog,
                src.as_ptr(),
                name.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if let Err(e) = self.check("nvrtcCreateProgram", created) {
            return (Err(e), String::new());
        }
        let opts: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
        // SAFETY: prog is live until destroy below; opts point into `options`.
        let compiled = unsafe { (self.compile)(prog, opts.len() as c_int, opts.as_ptr()) };
        let log = self
            .read(prog, self.log_size, self.log, "log")
            .map(|mut l| {
                while l.last() == Some(&0) {
                    l.pop();
                }
                String::from_utf8_lossy(&l).into_owned()
            })
            .unwrap_or_default();
        let image = self.check("nvrtcCompileProgram", compiled).and_then(|()| {
            if ptx {
                self.read(prog, self.ptx_size, self.ptx, "PTX")
                    .map(|mut p| {
                        while p.last() == Some(&0) {
                            p.pop();
                        }
                        p
                    })
            } else {
                self.read(prog, self.cubin_size, self.cubin, "CUBIN")
            }
        });
        // SAFETY: prog is live and destroyed once.
        unsafe { (self.destroy)(&mut prog) };
        (image, log)
    }

    fn read(
        &self,
        prog: Program,
        size: unsafe extern "C" fn(Program, *mut usize) -> Status,
        get: unsafe extern "C" fn(Program, *mut c_char) -> Status,
        what: &str,
    ) -> std::result::Result<Vec<u8>, String> {
        let mut n = 0usize;
        // SAFETY: n is written; the buffer then has room for n bytes.
        self.check(what, unsafe { size(prog, &mut n) })?;
        let mut buf = vec![0u8; n];
        self.check(what, unsafe { get(prog, buf.as_mut_ptr().cast()) })?;
        Ok(buf)
    }
}
