//! The accelerator factory (DeepSpeed's `real_accelerator`): detection, the
//! `DSRS_ACCELERATOR` override, creation by name, and the process-wide current accelerator.
//!
//! Detection order (first available wins):
//! 1. accelerator plugins and other providers registered at run time (the plugins of
//!    `DSRS_ACCELERATOR_PLUGINS` first, loaded on first use), in registration order;
//! 2. `cuda`, when its driver (CUDA 12.0 or newer) loads and reports a device;
//! 3. `cpu`, always available.
//!
//! `DSRS_ACCELERATOR=<name>` skips detection. An unknown name, or an accelerator that is not
//! available, is an error that lists the valid names — never a silent fallback.
//!
//! All functions are thread-safe. The first [`current`] call selects; concurrent first calls
//! wait for one selection.

use std::cell::Cell;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use serde_json::Value;

use super::Accelerator;
use super::cpu::{CpuAccelerator, CpuOptions};
use super::cuda;
use crate::error::{Error, Result};
use crate::{dsrs_info, dsrs_warn};

/// The environment variable that overrides detection.
pub const ENV_OVERRIDE: &str = "DSRS_ACCELERATOR";

/// The result of probing one accelerator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// Whether it can be created now.
    pub available: bool,
    /// What was found, or why it is unavailable.
    pub detail: String,
}

/// Something that can create accelerators of one name: the built-in CPU and CUDA
/// providers, or one registered at run time (a plugin).
pub trait AcceleratorProvider: Send + Sync {
    /// The accelerator's name (lower case; matched case-insensitively).
    fn name(&self) -> &str;
    /// Whether the accelerator is usable here, and why (not).
    fn probe(&self) -> Probe;
    /// Creates an instance; `options` is `null` or a JSON object.
    fn create(&self, options: &Value) -> Result<Arc<dyn Accelerator>>;
}

struct CpuProvider;

impl AcceleratorProvider for CpuProvider {
    fn name(&self) -> &str {
        "cpu"
    }
    fn probe(&self) -> Probe {
        let info = super::cpu::cpu_info();
        Probe {
            available: true,
            detail: format!(
                "{} ({} logical CPUs, {})",
                info.model,
                info.logical_cpus,
                info.simd.name()
            ),
        }
    }
    fn create(&self, options: &Value) -> Result<Arc<dyn Accelerator>> {
        Ok(Arc::new(CpuAccelerator::new(CpuOptions::from_json(
            options,
        )?)))
    }
}

struct CudaProvider;

impl AcceleratorProvider for CudaProvider {
    fn name(&self) -> &str {
        "cuda"
    }
    fn probe(&self) -> Probe {
        let p = cuda::probe();
        match &p.reason {
            Some(reason) => Probe {
                available: false,
                detail: reason.clone(),
            },
            None => Probe {
                available: true,
                detail: format!(
                    "{} device(s), CUDA driver {}",
                    p.device_count,
                    p.driver_version_string().unwrap_or_else(|| "?".into())
                ),
            },
        }
    }
    fn create(&self, options: &Value) -> Result<Arc<dyn Accelerator>> {
        Ok(Arc::new(cuda::CudaAccelerator::new(
            cuda::CudaOptions::from_json(options)?,
        )?))
    }
}

static PLUGINS: RwLock<Vec<Arc<dyn AcceleratorProvider>>> = RwLock::new(Vec::new());

fn providers() -> Vec<Arc<dyn AcceleratorProvider>> {
    super::plugin::load_env_plugins();
    let mut v: Vec<Arc<dyn AcceleratorProvider>> = PLUGINS.read().clone();
    v.push(Arc::new(CudaProvider));
    v.push(Arc::new(CpuProvider));
    v
}

fn find(name: &str) -> Option<Arc<dyn AcceleratorProvider>> {
    providers()
        .into_iter()
        .find(|p| p.name().eq_ignore_ascii_case(name))
}

/// Every accelerator name, in detection order.
pub fn names() -> Vec<String> {
    providers().iter().map(|p| p.name().to_string()).collect()
}

/// Registers a provider; it is tried before the built-in ones, after earlier registrations.
pub fn register_provider(provider: Arc<dyn AcceleratorProvider>) -> Result<()> {
    let name = provider.name().to_string();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Error::invalid(format!(
            "accelerator name {name:?} must be non-empty ASCII letters, digits, '_' or '-'"
        )));
    }
    let mut plugins = PLUGINS.write();
    if plugins.iter().any(|p| p.name().eq_ignore_ascii_case(&name))
        || ["cpu", "cuda"].contains(&name.to_ascii_lowercase().as_str())
    {
        return Err(Error::invalid(format!(
            "an accelerator named {name:?} is already registered"
        )));
    }
    plugins.push(provider);
    drop(plugins);
    dsrs_info!("accelerator", "registered accelerator {name:?}");
    Ok(())
}

/// One accelerator considered by detection.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// Its name.
    pub name: String,
    /// Position in detection order (0 first).
    pub order: usize,
    /// Whether it is built in (`cpu`, `cuda`) or registered at run time.
    pub builtin: bool,
    /// The probe's result.
    #[serde(flatten)]
    pub probe: Probe,
}

/// Probes every accelerator, in detection order, followed by the plugins of
/// `DSRS_ACCELERATOR_PLUGINS` that failed to load (named `plugin:<path>`).
pub fn probe_all() -> Vec<Candidate> {
    let providers = providers();
    let n_plugins = PLUGINS.read().len();
    let mut all: Vec<Candidate> = providers
        .iter()
        .enumerate()
        .map(|(order, p)| Candidate {
            name: p.name().to_string(),
            order,
            builtin: order >= n_plugins,
            probe: p.probe(),
        })
        .collect();
    for (path, error) in super::plugin::env_failures() {
        all.push(Candidate {
            name: format!("plugin:{path}"),
            order: all.len(),
            builtin: false,
            probe: Probe {
                available: false,
                detail: error,
            },
        });
    }
    all
}

fn parse_options(options: Option<&str>) -> Result<Value> {
    match options {
        None => Ok(Value::Null),
        Some(s) if s.trim().is_empty() => Ok(Value::Null),
        Some(s) => serde_json::from_str(s).map_err(|e| Error::Json {
            what: "accelerator options".into(),
            source: e,
        }),
    }
}

/// Where a requested accelerator name came from.
#[derive(Clone, Copy)]
enum Origin {
    Argument,
    Environment,
}

fn create_from(name: &str, origin: Origin, options: &Value) -> Result<Arc<dyn Accelerator>> {
    let Some(provider) = find(name) else {
        return Err(Error::UnknownAccelerator {
            name: name.to_string(),
            origin: match origin {
                Origin::Argument => format!("accelerator name {name:?}"),
                Origin::Environment => format!("{ENV_OVERRIDE}={name:?}"),
            },
            valid: names(),
        });
    };
    let origin = match origin {
        Origin::Argument => "name".to_string(),
        Origin::Environment => format!("{ENV_OVERRIDE}={name}"),
    };
    let probe = provider.probe();
    if !probe.available {
        let available: Vec<String> = probe_all()
            .into_iter()
            .filter(|c| c.probe.available)
            .map(|c| c.name)
            .collect();
        return Err(Error::unavailable(
            provider.name(),
            format!(
                "{} (requested by {origin}; available accelerators: {})",
                probe.detail,
                available.join(", ")
            ),
        ));
    }
    provider.create(options)
}

/// Creates a new accelerator by name (case-insensitive) with options given as JSON text
/// (`None` or empty for defaults). The new instance is not made current.
pub fn create(name: &str, options: Option<&str>) -> Result<Arc<dyn Accelerator>> {
    let options = parse_options(options)?;
    create_from(name, Origin::Argument, &options)
}

/// How the current accelerator was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectionMethod {
    /// `DSRS_ACCELERATOR` named it.
    Override,
    /// Auto-detection picked it.
    Detected,
    /// [`set_current`] installed it.
    Explicit,
}

/// The current accelerator's name, how it was chosen and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Selection {
    /// The accelerator's name.
    pub name: String,
    /// How it was chosen.
    pub method: SelectionMethod,
    /// A sentence explaining the choice.
    pub reason: String,
}

struct Current {
    accel: Arc<dyn Accelerator>,
    selection: Selection,
}

static CURRENT: Mutex<Option<Current>> = Mutex::new(None);

thread_local! {
    static SELECTING: Cell<bool> = const { Cell::new(false) };
}

fn select() -> Result<(Arc<dyn Accelerator>, Selection)> {
    if let Ok(name) = std::env::var(ENV_OVERRIDE) {
        let name = name.trim().to_string();
        if !name.is_empty() {
            let accel = create_from(&name, Origin::Environment, &Value::Null)?;
            let selection = Selection {
                name: accel.name().to_string(),
                method: SelectionMethod::Override,
                reason: format!("override: {ENV_OVERRIDE}={name}"),
            };
            return Ok((accel, selection));
        }
    }
    let mut skipped = Vec::new();
    for provider in providers() {
        let probe = provider.probe();
        if !probe.available {
            skipped.push(format!("{} unavailable: {}", provider.name(), probe.detail));
            continue;
        }
        match provider.create(&Value::Null) {
            Ok(accel) => {
                let reason = if skipped.is_empty() {
                    "detected".to_string()
                } else {
                    format!("detected; {}", skipped.join("; "))
                };
                let selection = Selection {
                    name: accel.name().to_string(),
                    method: SelectionMethod::Detected,
                    reason,
                };
                return Ok((accel, selection));
            }
            Err(e) => {
                skipped.push(match e.kind() {
                    // Already "<name> unavailable: <why>".
                    crate::ErrorKind::Unavailable => e.to_string(),
                    _ => format!("{} failed to initialize: {e}", provider.name()),
                });
            }
        }
    }
    Err(Error::Internal(format!(
        "no accelerator could be created: {}",
        skipped.join("; ")
    )))
}

/// The process-wide current accelerator, selected on first use.
pub fn current() -> Result<Arc<dyn Accelerator>> {
    if SELECTING.with(|s| s.get()) {
        return Err(Error::InvalidState(
            "the accelerator is being selected on this thread (called from a log callback during selection?)".into(),
        ));
    }
    let mut guard = CURRENT.lock();
    if let Some(c) = guard.as_ref() {
        return Ok(Arc::clone(&c.accel));
    }
    // Reset by a guard, so a provider that panics (the C boundary catches it) does not leave
    // this thread marked as selecting forever.
    struct Selecting;
    impl Drop for Selecting {
        fn drop(&mut self) {
            SELECTING.with(|s| s.set(false));
        }
    }
    SELECTING.with(|s| s.set(true));
    let selecting = Selecting;
    let chosen = select();
    drop(selecting);
    let (accel, selection) = chosen?;
    let reason = selection.reason.clone();
    *guard = Some(Current {
        accel: Arc::clone(&accel),
        selection,
    });
    drop(guard);
    dsrs_info!(
        "accelerator",
        "Setting accelerator to {} ({reason})",
        accel.name()
    );
    Ok(accel)
}

/// Makes `accel` the process-wide current accelerator. Objects created from the previous
/// one (buffers, streams) stay valid and keep using it.
pub fn set_current(accel: Arc<dyn Accelerator>) {
    let name = accel.name().to_string();
    let previous = CURRENT.lock().replace(Current {
        accel,
        selection: Selection {
            name: name.clone(),
            method: SelectionMethod::Explicit,
            reason: "set explicitly".into(),
        },
    });
    if let Some(p) = &previous {
        if p.accel.name() != name {
            dsrs_warn!(
                "accelerator",
                "replacing the current accelerator {} with {name}; objects made from {} keep using it",
                p.accel.name(),
                p.accel.name()
            );
        }
    }
    drop(previous);
    dsrs_info!(
        "accelerator",
        "Setting accelerator to {name} (set explicitly)"
    );
}

/// How the current accelerator was chosen, if one has been.
pub fn selection() -> Option<Selection> {
    CURRENT.lock().as_ref().map(|c| c.selection.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_list_builtins_last_in_detection_order() {
        let n = names();
        assert_eq!(&n[n.len() - 2..], &["cuda".to_string(), "cpu".to_string()]);
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = create("bogus", None).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::UnknownAccelerator);
        assert!(
            e.to_string().starts_with(
                "accelerator name \"bogus\" is not a known accelerator; valid accelerators:"
            ),
            "{e}"
        );
        assert!(e.to_string().contains("cpu"));
    }

    #[test]
    fn creation_is_case_insensitive_and_validates_options() {
        let a = create("CPU", Some(r#"{"devices": 2}"#)).unwrap();
        assert_eq!((a.name(), a.device_count()), ("cpu", 2));
        let e = create("cpu", Some("{devices: 2")).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidJson);
        assert!(
            e.to_string()
                .starts_with("invalid JSON in accelerator options"),
            "{e}"
        );
    }

    #[test]
    fn cuda_is_unavailable_with_a_reason_here() {
        let c = probe_all().into_iter().find(|c| c.name == "cuda").unwrap();
        assert!(!c.probe.available);
        let e = create("cuda", None).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unavailable);
        assert!(e.to_string().contains("available accelerators: cpu"), "{e}");
    }

    #[test]
    fn duplicate_and_bad_provider_names_are_refused() {
        struct Named(&'static str);
        impl AcceleratorProvider for Named {
            fn name(&self) -> &str {
                self.0
            }
            fn probe(&self) -> Probe {
                Probe {
                    available: false,
                    detail: "test".into(),
                }
            }
            fn create(&self, _: &Value) -> Result<Arc<dyn Accelerator>> {
                Err(Error::unavailable(self.0, "test"))
            }
        }
        assert!(register_provider(Arc::new(Named("cpu"))).is_err());
        assert!(register_provider(Arc::new(Named("bad name"))).is_err());
        register_provider(Arc::new(Named("factory_test_dummy"))).unwrap();
        assert!(register_provider(Arc::new(Named("FACTORY_TEST_DUMMY"))).is_err());
        let all = probe_all();
        let pos = all
            .iter()
            .position(|c| c.name == "factory_test_dummy")
            .unwrap();
        assert!(!all[pos].builtin);
        assert!(pos < all.iter().position(|c| c.name == "cpu").unwrap());
    }
}
