//! The entry points of the CPU ops that Rust calls itself (`cpu_adam`, `cpu_adagrad`,
//! `cpu_lion`, `cpu_quantizer`): resolved once per op and build options, with the fallback
//! rule of [`Backend`](super::optim::Backend).

use std::collections::HashMap;
use std::ffi::{CStr, c_char};
use std::sync::OnceLock;

use parking_lot::Mutex;

use super::optim::{Backend, Exec};
use super::{BuildOptions, LoadedOp};
use crate::dsrs_warn;
use crate::error::Result;

/// Per (op, build options): the entry points, or `None` once the op failed under
/// `Backend::Auto`.
type Memo<K> = Mutex<HashMap<(&'static str, String), Option<K>>>;

/// A memo of entry points `K` (a struct of function addresses and the SIMD level), one per
/// op and build options, for a `static`.
pub(crate) struct EntryPoints<K> {
    /// The log target of the fallback warning.
    target: &'static str,
    memo: OnceLock<Memo<K>>,
}

impl<K: Clone> EntryPoints<K> {
    /// An empty memo whose fallback warnings go to `target`.
    pub(crate) const fn new(target: &'static str) -> EntryPoints<K> {
        EntryPoints {
            target,
            memo: OnceLock::new(),
        }
    }

    /// Op `op`'s entry points for `exec` (`resolve` takes them from the loaded op), or
    /// `None` to run the reference. `Reference` never builds; `Auto` falls back (warning
    /// once per op and options, and not retrying the build); `Kernel` reports the load
    /// error (retrying a build that failed under `Auto`, so the caller sees the real error).
    pub(crate) fn get(
        &self,
        op: &'static str,
        exec: &Exec,
        resolve: impl FnOnce(&LoadedOp) -> Result<K>,
    ) -> Result<Option<K>> {
        if exec.backend == Backend::Reference {
            return Ok(None);
        }
        let memo = self.memo.get_or_init(Default::default);
        let key = (op, options_key(&exec.build));
        if let Some(hit) = memo.lock().get(&key) {
            match (hit, exec.backend) {
                (Some(k), _) => return Ok(Some(k.clone())),
                (None, Backend::Auto) => return Ok(None),
                (None, _) => {} // retry, so the caller sees the real error
            }
        }
        match super::load(op, &exec.build).and_then(|o| resolve(&o)) {
            Ok(k) => {
                memo.lock().insert(key, Some(k.clone()));
                Ok(Some(k))
            }
            Err(e) if exec.backend == Backend::Auto => {
                dsrs_warn!(
                    self.target,
                    "op {op} cannot be used ({e}); using the pure-Rust reference implementation, which is slower"
                );
                memo.lock().insert(key, None);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// The SIMD level that `op` reports through its entry point `symbol`.
///
/// # Safety
///
/// `symbol` must be the op's `const char* dsrs_<op>_simd_level(void)`, returning a
/// NUL-terminated string.
pub(crate) unsafe fn simd_level(op: &LoadedOp, symbol: &str) -> Result<String> {
    let level = op.symbol(symbol, 0)?;
    // SAFETY: the caller's contract.
    unsafe {
        let f: unsafe extern "C" fn() -> *const c_char = std::mem::transmute(level);
        Ok(CStr::from_ptr(f()).to_string_lossy().into_owned())
    }
}

fn options_key(b: &BuildOptions) -> String {
    serde_json::to_string(b).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn the_fallback_rule() {
        static KERNELS: EntryPoints<usize> = EntryPoints::new("dsrs::test");
        let op = "dsrs_kernels_test_no_such_op";
        let exec = |backend| Exec {
            backend,
            ..Default::default()
        };
        let never = |_: &LoadedOp| -> Result<usize> { panic!("resolved a missing op") };
        // Reference never builds (nothing is memoized).
        assert_eq!(
            KERNELS.get(op, &exec(Backend::Reference), never).unwrap(),
            None
        );
        assert!(KERNELS.memo.get().is_none());
        // Auto falls back and remembers the failure.
        assert_eq!(KERNELS.get(op, &exec(Backend::Auto), never).unwrap(), None);
        let key = (op, options_key(&BuildOptions::default()));
        assert_eq!(KERNELS.memo.get().unwrap().lock().get(&key), Some(&None));
        assert_eq!(KERNELS.get(op, &exec(Backend::Auto), never).unwrap(), None);
        // Kernel retries, and reports the real error.
        let e = KERNELS.get(op, &exec(Backend::Kernel), never).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownOp, "{e}");
        assert!(e.to_string().contains(op), "{e}");
    }
}
