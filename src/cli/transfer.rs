//! Output shared by the commands that move data between repositories.

use mlv::ops::fetch::{RefChange, RefNote};
use mlv::sync::TransferStats;

use super::{count, human};

/// `sent 12.4 MiB for 1.02 GiB logical (3 packs, 1.2 s, 10.3 MiB/s)`.
pub fn summary(verb: &str, s: &TransferStats) -> String {
    let rate = if s.seconds > 0.0 { s.wire_bytes as f64 / s.seconds } else { 0.0 };
    let skipped = if s.packs_skipped > 0 { format!(", {} already there", s.packs_skipped) } else { String::new() };
    format!(
        "{verb} {} for {} logical ({}, {}{skipped}, {:.1} s, {}/s)",
        human(s.wire_bytes),
        human(s.logical_bytes),
        count(s.objects, "object"),
        count(s.packs, "pack"),
        s.seconds,
        human(rate as u64)
    )
}

/// A line for one ref, as git prints them: ` * [new branch]  main -> origin/main`.
pub fn ref_line(c: &RefChange, from: &str, to: &str) -> String {
    let short = |id: Option<mlv::ObjectId>| id.map_or_else(String::new, |i| i.short());
    let (flag, what) = match c.note {
        RefNote::New => ('*', "[new]".to_string()),
        RefNote::FastForward => (' ', format!("{}..{}", short(c.old), short(c.new))),
        RefNote::Forced => ('+', format!("{}...{}", short(c.old), short(c.new))),
        RefNote::Deleted => ('-', "[deleted]".to_string()),
        RefNote::UpToDate => ('=', "[up to date]".to_string()),
        RefNote::KeptLocalTag => ('!', "[rejected]".to_string()),
    };
    let arrow = if to.is_empty() { from.to_string() } else { format!("{from} -> {to}") };
    let extra = match c.note {
        RefNote::Forced => " (forced update)",
        RefNote::KeptLocalTag => " (would clobber existing tag)",
        _ => "",
    };
    format!(" {flag} {what:<20} {arrow}{extra}")
}
