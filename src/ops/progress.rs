//! Build progress: op, step and elapsed time — on standard error when it is a terminal, as
//! log lines (target `ops`, level info) otherwise. `DSRS_PROGRESS=0` silences the terminal
//! lines; `DSRS_PROGRESS=1` forces them.

use std::time::Instant;

pub(crate) struct Progress {
    op: String,
    start: Instant,
    tty: bool,
}

impl Progress {
    pub(crate) fn new(op: &str) -> Progress {
        let tty = match std::env::var("DSRS_PROGRESS")
            .ok()
            .as_deref()
            .map(str::trim)
        {
            Some("0") | Some("off") | Some("false") => false,
            Some("1") | Some("on") | Some("true") => true,
            // SAFETY: isatty only inspects the descriptor.
            _ => unsafe { libc::isatty(2) == 1 },
        };
        Progress {
            op: op.to_string(),
            start: Instant::now(),
            tty,
        }
    }

    pub(crate) fn elapsed_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1e3
    }

    pub(crate) fn step(&self, step: &str) {
        let msg = format!(
            "op {}: {step} [{:.1} s]",
            self.op,
            self.start.elapsed().as_secs_f64()
        );
        if self.tty {
            eprintln!("dsrs: {msg}");
        } else {
            crate::dsrs_info!("ops", "{msg}");
        }
    }
}
