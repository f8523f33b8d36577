//! A provider that panics during selection must not wedge the factory: the next selection
//! on the same thread works. (Its own test binary: it changes the process-wide selection.)

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use deepspeed_rs::accelerator::{self, Accelerator, AcceleratorProvider, Probe};
use serde_json::Value;

struct PanicsOnce(AtomicBool);

impl AcceleratorProvider for PanicsOnce {
    fn name(&self) -> &str {
        "panics_once"
    }
    fn probe(&self) -> Probe {
        Probe {
            available: true,
            detail: "test provider".into(),
        }
    }
    fn create(&self, options: &Value) -> deepspeed_rs::Result<Arc<dyn Accelerator>> {
        if !self.0.swap(true, Ordering::SeqCst) {
            panic!("provider failed during creation");
        }
        accelerator::create("cpu", Some(&options.to_string()))
    }
}

#[test]
fn selection_recovers_after_a_provider_panics() {
    accelerator::register_provider(Arc::new(PanicsOnce(AtomicBool::new(false)))).unwrap();
    let first = catch_unwind(AssertUnwindSafe(accelerator::current));
    assert!(
        first.is_err(),
        "the provider's panic propagates to the caller (the C boundary catches it)"
    );
    let second = accelerator::current().expect("the factory is usable again on the same thread");
    assert_eq!(second.name(), "cpu");
    assert_eq!(
        accelerator::selection().unwrap().method,
        accelerator::SelectionMethod::Detected
    );
}
