//! Progress bars on stderr (only when it is a terminal), and Ctrl-C: the first SIGINT or
//! SIGTERM asks the running operation to stop cleanly, a second one exits at once.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use indicatif::{ProgressBar, ProgressStyle};
use mlv::progress::Progress;

/// Set by the first SIGINT or SIGTERM.
fn interrupt_flag() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Installs the signal handlers: the first signal sets the flag long operations check, the
/// second exits with status 130 without waiting.
pub fn install_interrupt_handler() {
    let flag = interrupt_flag();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone());
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
}

/// True once the user asked to stop.
pub fn interrupted() -> bool {
    interrupt_flag().load(Ordering::Relaxed)
}

/// An indicatif bar per phase, when stderr is a terminal; always the interrupt flag.
struct CliProgress {
    bar: Option<Mutex<Option<ProgressBar>>>,
}

impl CliProgress {
    fn with_bar(&self, f: impl FnOnce(&ProgressBar)) {
        if let Some(bar) = self.bar.as_ref().and_then(|b| b.lock().ok())
            && let Some(bar) = bar.as_ref()
        {
            f(bar);
        }
    }
}

impl Progress for CliProgress {
    fn start(&self, label: &str, total: u64) {
        let Some(slot) = &self.bar else { return };
        let bar = ProgressBar::new(total);
        let style =
            ProgressStyle::with_template("{msg:>14} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(label.to_string());
        if let Ok(mut b) = slot.lock() {
            *b = Some(bar);
        }
    }

    fn advance(&self, bytes: u64) {
        self.with_bar(|bar| bar.inc(bytes));
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.as_ref().and_then(|b| b.lock().ok()).and_then(|mut b| b.take()) {
            bar.finish_and_clear();
        }
    }

    fn cancelled(&self) -> bool {
        interrupted()
    }
}

/// A progress sink: a bar when stderr is a terminal, and the interrupt flag either way.
pub fn for_stderr() -> Box<dyn Progress> {
    let bar = std::io::stderr().is_terminal().then(|| Mutex::new(None));
    Box::new(CliProgress { bar })
}
