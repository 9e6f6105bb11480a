//! The log output (`[log] format`): human-readable text, or one JSON object per line for a log
//! collector, both on standard error and filtered by `RUST_LOG`. A panic is logged the same
//! way, so that even it does not break a JSON stream.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// What is logged when `RUST_LOG` says nothing: the scheduler's own start-up chatter is not
/// news to an operator.
const DEFAULT_FILTER: &str = "info,tokio_cron_scheduler=warn";

/// Sets up the process's logging in `format`; call once, before anything logs.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // Each event's fields at the top level beside "timestamp", "level", "message" and
        // "target": `tguid`, `endpoint`, `webhook_id` where an event has them.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    std::panic::set_hook(Box::new(log_panic));
}

/// The text a panic was raised with.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic without a message)".to_owned())
}

/// A panic as one error event (with its thread and place, and a backtrace when
/// `RUST_BACKTRACE` asks for one), instead of the default hook's lines of text.
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let message = panic_message(info.payload());
    let thread = std::thread::current();
    let backtrace = std::backtrace::Backtrace::capture();
    let backtrace = match backtrace.status() {
        std::backtrace::BacktraceStatus::Captured => Some(backtrace.to_string()),
        _ => None,
    };
    tracing::error!(
        thread = thread.name().unwrap_or("unnamed"),
        location = info.location().map(|l| l.to_string()),
        panic = %message,
        backtrace,
        "panicked"
    );
}
