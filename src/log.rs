//! Logging.
//!
//! deepspeed_rs writes log records to a *sink*: by default standard error, formatted like
//! DeepSpeed's lines (`[2026-11-21 12:55:24,869] [WARNING] [accelerator] ...`), or a host
//! callback installed with [`set_sink`] (the C ABI's `dsrs_set_log_callback`).
//!
//! The level filter comes from [`set_max_level`] or, until that is called, from the
//! `DSRS_LOG` environment variable (`off`, `error`, `warn`, `info`, `debug`, `trace`);
//! the default is `warn`.
//!
//! A sink may call back into the library: the sink is copied out of its lock before it is
//! invoked, and records emitted *while a sink runs on the same thread* are dropped instead
//! of recursing.

use std::cell::Cell;
use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;

/// The severity of a log record. The numbers are the C ABI's `dsrs_log_level` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i32)]
pub enum Level {
    /// A failure the library reports.
    Error = 1,
    /// Something suspicious that did not fail.
    Warn = 2,
    /// Choices the library made (which accelerator, which kernel).
    Info = 3,
    /// Details useful when debugging a host.
    Debug = 4,
    /// Very detailed tracing.
    Trace = 5,
}

impl Level {
    /// The level for a C ABI value, if it names one.
    pub fn from_i32(v: i32) -> Option<Level> {
        Some(match v {
            1 => Level::Error,
            2 => Level::Warn,
            3 => Level::Info,
            4 => Level::Debug,
            5 => Level::Trace,
            _ => return None,
        })
    }

    /// The label used on standard error (DeepSpeed's spelling).
    pub fn label(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARNING",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        }
    }
}

/// Parses `off`, `error`, `warn`/`warning`, `info`, `debug`, `trace` or `0`..`5` into a
/// maximum level (`None` = off).
pub fn parse_filter(s: &str) -> Option<Option<Level>> {
    let s = s.trim();
    if let Ok(n) = i32::from_str(s) {
        return match n {
            0 => Some(None),
            n => Level::from_i32(n).map(Some),
        };
    }
    Some(match s.to_ascii_lowercase().as_str() {
        "off" | "none" => None,
        "error" => Some(Level::Error),
        "warn" | "warning" => Some(Level::Warn),
        "info" => Some(Level::Info),
        "debug" => Some(Level::Debug),
        "trace" => Some(Level::Trace),
        _ => return None,
    })
}

/// A log sink: receives the level, the target (the library area, e.g. `"accelerator"`) and
/// the formatted message.
pub type Sink = Arc<dyn Fn(Level, &str, &str) + Send + Sync>;

/// Sentinel meaning "not yet initialised from `DSRS_LOG`".
const UNSET: i32 = -1;
static MAX_LEVEL: AtomicI32 = AtomicI32::new(UNSET);
static SINK: RwLock<Option<Sink>> = RwLock::new(None);

thread_local! {
    static IN_SINK: Cell<bool> = const { Cell::new(false) };
}

fn max_level_raw() -> i32 {
    let v = MAX_LEVEL.load(Ordering::Relaxed);
    if v != UNSET {
        return v;
    }
    let from_env = match std::env::var("DSRS_LOG") {
        Ok(s) => match parse_filter(&s) {
            Some(f) => f.map_or(0, |l| l as i32),
            None => {
                // A bad DSRS_LOG value is itself worth a warning, once.
                let _ = writeln!(
                    std::io::stderr(),
                    "[dsrs] [WARNING] DSRS_LOG={s:?} is not a log level (off, error, warn, info, debug, trace); using warn"
                );
                Level::Warn as i32
            }
        },
        Err(_) => Level::Warn as i32,
    };
    // Another thread may have set it meanwhile; keep whichever came first.
    match MAX_LEVEL.compare_exchange(UNSET, from_env, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => from_env,
        Err(current) => current,
    }
}

/// The current maximum level (`None` = logging off).
pub fn max_level() -> Option<Level> {
    Level::from_i32(max_level_raw())
}

/// Sets the maximum level; `None` turns logging off. Overrides `DSRS_LOG`.
pub fn set_max_level(level: Option<Level>) {
    MAX_LEVEL.store(level.map_or(0, |l| l as i32), Ordering::Relaxed);
}

/// Whether a record at `level` would be emitted.
#[inline]
pub fn enabled(level: Level) -> bool {
    (level as i32) <= max_level_raw()
}

/// Installs a sink, or restores the standard-error sink with `None`.
pub fn set_sink(sink: Option<Sink>) {
    *SINK.write() = sink;
}

/// Emits one record. Prefer the crate's `dsrs_warn!`-style macros, which skip formatting
/// when the level is disabled.
pub fn log(level: Level, target: &str, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    if IN_SINK.with(|f| f.get()) {
        return; // a sink that logs would recurse forever
    }
    let message = fmt::format(args);
    let sink = SINK.read().clone();
    IN_SINK.with(|f| f.set(true));
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            IN_SINK.with(|f| f.set(false));
        }
    }
    let _reset = Reset;
    match sink {
        Some(sink) => sink(level, target, &message),
        None => {
            let line = format!(
                "[{}] [{}] [dsrs.{}] {}\n",
                timestamp(),
                level.label(),
                target,
                message
            );
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS,mmm` in UTC.
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02},{:03}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// Converts days since 1970-01-01 into a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Logs at [`Level::Error`](crate::log::Level::Error): `dsrs_error!("target", "fmt", args..)`.
#[macro_export]
macro_rules! dsrs_error {
    ($target:expr, $($arg:tt)+) => {
        if $crate::log::enabled($crate::log::Level::Error) {
            $crate::log::log($crate::log::Level::Error, $target, format_args!($($arg)+))
        }
    };
}

/// Logs at [`Level::Warn`](crate::log::Level::Warn).
#[macro_export]
macro_rules! dsrs_warn {
    ($target:expr, $($arg:tt)+) => {
        if $crate::log::enabled($crate::log::Level::Warn) {
            $crate::log::log($crate::log::Level::Warn, $target, format_args!($($arg)+))
        }
    };
}

/// Logs at [`Level::Info`](crate::log::Level::Info).
#[macro_export]
macro_rules! dsrs_info {
    ($target:expr, $($arg:tt)+) => {
        if $crate::log::enabled($crate::log::Level::Info) {
            $crate::log::log($crate::log::Level::Info, $target, format_args!($($arg)+))
        }
    };
}

/// Logs at [`Level::Debug`](crate::log::Level::Debug).
#[macro_export]
macro_rules! dsrs_debug {
    ($target:expr, $($arg:tt)+) => {
        if $crate::log::enabled($crate::log::Level::Debug) {
            $crate::log::log($crate::log::Level::Debug, $target, format_args!($($arg)+))
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        // 2026-11-21 is 20_778 days after the epoch.
        assert_eq!(civil_from_days(20_778), (2026, 11, 21));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn filters_parse_names_and_numbers() {
        assert_eq!(parse_filter("off"), Some(None));
        assert_eq!(parse_filter("WARNING"), Some(Some(Level::Warn)));
        assert_eq!(parse_filter(" debug "), Some(Some(Level::Debug)));
        assert_eq!(parse_filter("5"), Some(Some(Level::Trace)));
        assert_eq!(parse_filter("0"), Some(None));
        assert_eq!(parse_filter("6"), None);
        assert_eq!(parse_filter("loud"), None);
    }
}
