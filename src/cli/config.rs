//! `mlv config`.

use clap::ArgGroup;
use mlv::ops::config::{self, Setting};

use super::{open_repo_any, print_json};

/// Read or change the repository's settings (.mlv/config) by dotted key.
///
/// Every value is checked as mlv checks the file when it loads it, before the file is
/// rewritten (atomically); an invalid value changes nothing and the error says what the key
/// takes. Unsetting a key brings back its default. Tokens are never printed: --get and --list
/// show `<set>`. Without an option, lists every key that has a value (defaults included).
#[derive(clap::Args)]
#[command(
    group(ArgGroup::new("action").args(["get", "set", "unset", "list"])),
    after_long_help = keys_and_examples()
)]
pub struct Args {
    /// Print the value of KEY.
    #[arg(long, value_name = "KEY")]
    get: Option<String>,
    /// Set KEY to VALUE.
    #[arg(long, num_args = 2, value_names = ["KEY", "VALUE"], allow_hyphen_values = true)]
    set: Option<Vec<String>>,
    /// Remove KEY, so that its default applies.
    #[arg(long, value_name = "KEY")]
    unset: Option<String>,
    /// List every key that has a value (the default).
    #[arg(long)]
    list: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn keys_and_examples() -> String {
    format!(
        "Keys (<name> is a remote's or a branch's name, <path> a work-tree path):\n{}\nExamples:\n  \
         mlv config --set user.name 'Ada Lovelace'\n  \
         mlv config --set delta.bases.checkpoints/llama-ft base-model\n  \
         mlv config --set remote.origin.token \"$TOKEN\"\n  \
         mlv config --get delta.zstd_level\n  \
         mlv config --unset gc.auto_packs",
        config::keys_help()
    )
}

/// A value as text: strings bare, numbers and booleans as written in the file.
fn text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_settings(list: &[Setting], json: bool) -> anyhow::Result<()> {
    if json {
        let map: serde_json::Map<String, serde_json::Value> =
            list.iter().map(|s| Ok((s.key.clone(), serde_json::to_value(&s.value)?))).collect::<anyhow::Result<_>>()?;
        return print_json(&map);
    }
    for s in list {
        outln!("{}={}", s.key, text(&s.value))?;
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut repo = open_repo_any()?;
    if let Some(key) = &args.get {
        let s = config::get(&repo.config, key)?;
        return if args.json { print_json(&s) } else { Ok(outln!("{}", text(&s.value))?) };
    }
    if let Some([key, value]) = args.set.as_deref() {
        config::set(&mut repo, key, value)?;
        return if args.json { print_json(&config::get(&repo.config, key)?) } else { Ok(()) };
    }
    if let Some(key) = &args.unset {
        return Ok(config::unset(&mut repo, key)?);
    }
    print_settings(&config::list(&repo.config)?, args.json)
}
