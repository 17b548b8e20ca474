//! Notes for the user that the library gathers instead of printing (it never prints): the
//! command line shows them after the command, e.g. that a stale lock was taken over.

use std::sync::Mutex;

static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Adds a note.
pub fn push(note: String) {
    if let Ok(mut notes) = NOTES.lock() {
        notes.push(note);
    }
}

/// Takes every note gathered so far.
pub fn drain() -> Vec<String> {
    NOTES.lock().map(|mut n| std::mem::take(&mut *n)).unwrap_or_default()
}
