//! `mlv config`: reading and changing `.mlv/config` by dotted key (`delta.zstd_level`,
//! `remote.origin.url`, `delta.bases.<path>`). Every change is checked by the rules that load
//! the file ([`Config::parse`]) before it is written, atomically.

use serde::Serialize;
use toml::{Table, Value};

use crate::config::{CHUNK_ELEMS, Config, ConfigError, ZSTD_LEVELS};
use crate::error::{Error, Result};
use crate::refs::{HEADS, check_full_name, check_name};
use crate::repo::Repository;

/// What a key's value may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Any text.
    Text,
    /// Text that is never printed (tokens).
    Secret,
    /// `true` or `false`.
    Bool,
    /// A whole number in this range.
    Number(u64, u64),
    /// Written by mlv itself; readable only.
    Fixed,
}

/// One key of the configuration file; `<name>` and `<path>` stand for any text.
struct Field {
    pattern: &'static str,
    kind: Kind,
    about: &'static str,
}

const MAX_CHAIN: u64 = crate::store::MAX_DECODE_DEPTH as u64;

/// Every key `.mlv/config` may hold, in file order.
const FIELDS: &[Field] = &[
    Field { pattern: "core.format", kind: Kind::Fixed, about: "repository format version (written by mlv)" },
    Field {
        pattern: "core.bare",
        kind: Kind::Fixed,
        about: "true for a repository without a work tree (written by mlv)",
    },
    Field {
        pattern: "user.name",
        kind: Kind::Text,
        about: "author name of commits (MLV_AUTHOR_NAME wins; git's user.name when unset)",
    },
    Field {
        pattern: "user.email",
        kind: Kind::Text,
        about: "author e-mail of commits (MLV_AUTHOR_EMAIL wins; git's user.email when unset)",
    },
    Field { pattern: "delta.max_chain", kind: Kind::Number(0, MAX_CHAIN), about: "longest chain of deltas on deltas" },
    Field {
        pattern: "delta.zstd_level",
        kind: Kind::Number(*ZSTD_LEVELS.start() as u64, *ZSTD_LEVELS.end() as u64),
        about: "zstd level of byte streams (exponent planes, standalone tensors)",
    },
    Field {
        pattern: "delta.discover",
        kind: Kind::Bool,
        about: "search the repository for a base when a tensor has none at its path",
    },
    Field {
        pattern: "delta.bases.<path>",
        kind: Kind::Text,
        about: "a revision whose same files are the delta bases of the files under <path>",
    },
    Field {
        pattern: "pack.chunk_elems",
        kind: Kind::Number(*CHUNK_ELEMS.start(), *CHUNK_ELEMS.end()),
        about: "elements per chunk of new tensors",
    },
    Field {
        pattern: "gc.auto_packs",
        kind: Kind::Number(0, u32::MAX as u64),
        about: "commit runs gc when there are more packs than this (0: never)",
    },
    Field {
        pattern: "checkout.keep_spares",
        kind: Kind::Bool,
        about: "keep the disk of files a checkout replaces, for the next to write into (`mlv gc` frees it)",
    },
    Field {
        pattern: "remote.<name>.url",
        kind: Kind::Text,
        about: "where the remote is: a path, file://, http(s):// or s3://bucket/prefix",
    },
    Field {
        pattern: "remote.<name>.token",
        kind: Kind::Secret,
        about: "bearer token for `mlv serve` (MLV_TOKEN wins; never printed)",
    },
    Field { pattern: "remote.<name>.endpoint", kind: Kind::Text, about: "S3: endpoint URL of an S3-compatible server" },
    Field { pattern: "remote.<name>.region", kind: Kind::Text, about: "S3: region" },
    Field { pattern: "remote.<name>.allow_http", kind: Kind::Bool, about: "S3: allow a plain-http endpoint" },
    Field {
        pattern: "branch.<name>.remote",
        kind: Kind::Text,
        about: "the remote the branch pulls from and pushes to (its upstream)",
    },
    Field {
        pattern: "branch.<name>.merge",
        kind: Kind::Text,
        about: "the upstream branch on that remote, as a full ref (refs/heads/main)",
    },
];

/// What `--list` and `--get` show in place of a secret.
pub const HIDDEN: &str = "<set>";

/// A key that cannot be read or set as asked.
#[derive(Debug, thiserror::Error)]
pub enum ConfigKeyError {
    /// No such key.
    #[error("unknown configuration key {0:?}")]
    Unknown(String),
    /// A known key that has no value.
    #[error("{0} is not set")]
    NotSet(String),
    /// A key mlv writes itself.
    #[error("{0} is written by mlv and cannot be changed")]
    Fixed(String),
    /// A value the key does not take, or a change the file's rules refuse.
    #[error("{key}: {what}")]
    Invalid {
        /// The key.
        key: String,
        /// What is wrong, and what is allowed.
        what: String,
    },
}

/// One key and its value, as `--list` and `--get` show them (secrets as [`HIDDEN`]).
#[derive(Debug, Clone, Serialize)]
pub struct Setting {
    /// Dotted key, e.g. `remote.origin.url`.
    pub key: String,
    /// Its value.
    pub value: Value,
}

/// A key matched against [`FIELDS`]: its field and the table names leading to it in the file.
struct Key {
    field: &'static Field,
    path: Vec<String>,
}

impl Key {
    fn parse(key: &str) -> Result<Key, ConfigKeyError> {
        FIELDS
            .iter()
            .find_map(|field| match_pattern(field.pattern, key).map(|path| Key { field, path }))
            .ok_or_else(|| ConfigKeyError::Unknown(key.to_string()))
    }

    /// The `<name>` or `<path>` part, for keys that have one.
    fn name(&self) -> &str {
        let at = self.field.pattern.split('.').position(|p| p.starts_with('<'));
        at.and_then(|i| self.path.get(i)).map_or("", String::as_str)
    }

    fn text(&self) -> String {
        self.path.join(".")
    }

    fn invalid(&self, what: impl Into<String>) -> ConfigKeyError {
        ConfigKeyError::Invalid { key: self.text(), what: what.into() }
    }
}

/// The table path `key` stands for under `pattern`, if it matches: `remote.<name>.url`
/// matches `remote.a.b.url` (a remote named `a.b`).
fn match_pattern(pattern: &str, key: &str) -> Option<Vec<String>> {
    let Some((prefix, rest)) = pattern.split_once('<') else {
        return (pattern == key).then(|| key.split('.').map(String::from).collect());
    };
    let suffix = rest.split_once('>')?.1;
    let middle = key.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if middle.is_empty() && !suffix.is_empty() {
        return None;
    }
    let mut path: Vec<String> = prefix.trim_end_matches('.').split('.').map(String::from).collect();
    path.push(middle.to_string());
    path.extend(suffix.strip_prefix('.').map(String::from));
    Some(path)
}

/// One line per key, for `mlv config --help`.
pub fn keys_help() -> String {
    let width = FIELDS.iter().map(|f| f.pattern.len()).max().unwrap_or(0);
    let allowed = |k: Kind| match k {
        Kind::Number(lo, hi) if hi >= u32::MAX as u64 => format!(" ({lo} or more)"),
        Kind::Number(lo, hi) => format!(" ({lo}..={hi})"),
        Kind::Bool => " (true or false)".into(),
        _ => String::new(),
    };
    FIELDS.iter().map(|f| format!("  {:<width$}  {}{}\n", f.pattern, f.about, allowed(f.kind))).collect()
}

/// The configuration as a TOML table, defaults included.
fn document(config: &Config) -> Result<Table> {
    Table::try_from(config)
        .map_err(|e| Error::Io(std::io::Error::other(format!("cannot write the configuration: {e}"))))
}

fn shown(key: &str, value: &Value) -> Setting {
    let secret = Key::parse(key).is_ok_and(|k| k.field.kind == Kind::Secret);
    let value = if secret { Value::String(HIDDEN.into()) } else { value.clone() };
    Setting { key: key.to_string(), value }
}

fn flatten(prefix: &str, table: &Table, out: &mut Vec<Setting>) {
    for (k, v) in table {
        let key = format!("{prefix}{k}");
        match v {
            Value::Table(t) => flatten(&format!("{key}."), t, out),
            leaf => out.push(shown(&key, leaf)),
        }
    }
}

/// Every key that has a value (defaults included), in file order; secrets hidden.
pub fn list(config: &Config) -> Result<Vec<Setting>> {
    let mut out = Vec::new();
    flatten("", &document(config)?, &mut out);
    Ok(out)
}

fn lookup<'a>(table: &'a Table, path: &[String]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut t = table;
    for p in parents {
        t = t.get(p)?.as_table()?;
    }
    t.get(last)
}

/// The value of `key` (its default when the file does not set it); secrets hidden.
pub fn get(config: &Config, key: &str) -> Result<Setting> {
    let k = Key::parse(key)?;
    let doc = document(config)?;
    let value = lookup(&doc, &k.path).ok_or_else(|| ConfigKeyError::NotSet(k.text()))?;
    Ok(shown(&k.text(), value))
}

/// Removes the value at `path`, if there is one.
fn remove(table: &mut Table, path: &[String]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut t = table;
    for p in parents {
        t = t.get_mut(p)?.as_table_mut()?;
    }
    t.remove(last)
}

/// `value` as the TOML value `key` takes, or why not (saying what is allowed).
fn typed(k: &Key, value: &str) -> Result<Value, ConfigKeyError> {
    match k.field.kind {
        Kind::Fixed => Err(ConfigKeyError::Fixed(k.text())),
        Kind::Text | Kind::Secret => Ok(Value::String(value.to_string())),
        Kind::Bool => {
            value.parse().map(Value::Boolean).map_err(|_| k.invalid(format!("takes true or false, not {value:?}")))
        }
        Kind::Number(lo, hi) => match value.parse::<u64>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(Value::Integer(n as i64)),
            _ => Err(k.invalid(format!("takes a whole number from {lo} to {hi}, not {value:?}"))),
        },
    }
}

/// Checks the names and values the file format alone does not: ref and remote names, URLs,
/// upstreams. Returns the value to store (a local path URL made absolute).
fn checked(repo: &Repository, k: &Key, value: Value) -> Result<Value> {
    let text = value.as_str().unwrap_or_default().to_string();
    match k.field.pattern {
        p if p.starts_with("remote.") => {
            super::remote::check_remote_name(k.name())?;
            if p.ends_with(".url") {
                return Ok(Value::String(super::remote::normalise_url(&text)?));
            }
        }
        p if p.starts_with("branch.") => {
            check_name(k.name())?;
            if p.ends_with(".remote") && !repo.config.remote.contains_key(&text) {
                return Err(Error::NoSuchRemote(text));
            }
            if p.ends_with(".merge") && (!text.starts_with(HEADS) || check_full_name(&text).is_err()) {
                return Err(k
                    .invalid(format!("takes a branch as a full ref, e.g. refs/heads/main, not {text:?}"))
                    .into());
            }
        }
        _ => {}
    }
    Ok(value)
}

/// The table `k` goes into, made when missing. A new `[branch.<name>]` gets the same-named
/// upstream branch; a remote must exist (or get its URL first), since it needs one.
fn table_for<'a>(doc: &'a mut Table, k: &Key) -> Result<&'a mut Table, ConfigKeyError> {
    let (_, parents) = k.path.split_last().ok_or_else(|| ConfigKeyError::Unknown(k.text()))?;
    let mut t = doc;
    for (i, p) in parents.iter().enumerate() {
        if !t.contains_key(p) {
            let mut new = Table::new();
            match (k.path[0].as_str(), i, k.path.last().map(String::as_str)) {
                ("remote", 1, Some(f)) if f != "url" => {
                    return Err(k.invalid(format!(
                        "there is no remote {p:?}: add it with `mlv remote add {p} <url>` (or set remote.{p}.url) first"
                    )));
                }
                ("branch", 1, Some("merge")) => {
                    return Err(k.invalid(format!("branch {p:?} has no upstream: set branch.{p}.remote first")));
                }
                ("branch", 1, _) => {
                    new.insert("merge".into(), Value::String(format!("{HEADS}{p}")));
                }
                _ => {}
            }
            t.insert(p.clone(), Value::Table(new));
        }
        t = t.get_mut(p).and_then(Value::as_table_mut).ok_or_else(|| k.invalid("is not a table"))?;
    }
    Ok(t)
}

/// What is wrong, without the file name [`ConfigError`] starts with.
fn reason(e: ConfigError) -> String {
    match e {
        ConfigError::Invalid { what, .. } => what,
        ConfigError::Parse { source, .. } => source.message().to_string(),
        ConfigError::Io { source, .. } => source.to_string(),
    }
}

/// Checks `doc` by the rules that load the file, then makes it the configuration and writes
/// it atomically.
fn commit(repo: &mut Repository, k: &Key, doc: &Table) -> Result<()> {
    let text = toml::to_string_pretty(doc).map_err(|e| k.invalid(e.to_string()))?;
    let config = Config::parse(&text, &repo.dir.join("config")).map_err(|e| k.invalid(reason(e)))?;
    repo.config = config;
    repo.save_config()
}

/// Sets `key` to `value` (text as typed; numbers and booleans are converted), checked by the
/// rules that load the file, and saves the file atomically.
pub fn set(repo: &mut Repository, key: &str, value: &str) -> Result<()> {
    let k = Key::parse(key)?;
    let value = checked(repo, &k, typed(&k, value)?)?;
    let mut doc = document(&repo.config)?;
    let last = k.path.last().cloned().unwrap_or_default();
    table_for(&mut doc, &k)?.insert(last, value);
    commit(repo, &k, &doc)
}

/// Removes `key`: it falls back to its default. Unsetting either half of a branch's upstream
/// removes the upstream; a remote's URL cannot be unset (`mlv remote remove` removes a remote).
pub fn unset(repo: &mut Repository, key: &str) -> Result<()> {
    let k = Key::parse(key)?;
    if k.field.kind == Kind::Fixed {
        return Err(ConfigKeyError::Fixed(k.text()).into());
    }
    let mut doc = document(&repo.config)?;
    if lookup(&doc, &k.path).is_none() {
        return Err(ConfigKeyError::NotSet(k.text()).into());
    }
    let (section, name) = (k.path[0].as_str(), k.name().to_string());
    match k.field.pattern {
        "remote.<name>.url" => {
            let what = format!("a remote needs a URL; `mlv remote remove {name}` removes the remote");
            return Err(k.invalid(what).into());
        }
        p if p.starts_with("branch.") => {
            remove(&mut doc, &[section.to_string(), name]);
        }
        _ => {
            remove(&mut doc, &k.path);
        }
    }
    if doc.get("user").and_then(Value::as_table).is_some_and(Table::is_empty) {
        doc.remove("user");
    }
    commit(repo, &k, &doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_with_dots() {
        assert_eq!(match_pattern("remote.<name>.url", "remote.a.b.url").unwrap(), ["remote", "a.b", "url"]);
        assert_eq!(match_pattern("delta.bases.<path>", "delta.bases.m/v1.5").unwrap(), ["delta", "bases", "m/v1.5"]);
        assert!(match_pattern("remote.<name>.url", "remote..url").is_none());
        assert!(match_pattern("delta.max_chain", "delta.max_chains").is_none());
    }

    #[test]
    fn every_key_of_the_example_config_is_known() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".zipllm-example/config");
        let config = Config::load(&path).unwrap();
        for s in list(&config).unwrap() {
            assert!(Key::parse(&s.key).is_ok(), "{} is not in FIELDS", s.key);
        }
    }

    #[test]
    fn values_are_typed_and_ranged() {
        let k = Key::parse("delta.zstd_level").unwrap();
        assert_eq!(typed(&k, "3").unwrap(), Value::Integer(3));
        assert!(typed(&k, "0").unwrap_err().to_string().contains("from 1 to 22"));
        assert!(typed(&Key::parse("delta.discover").unwrap(), "yes").is_err());
        assert!(matches!(typed(&Key::parse("core.format").unwrap(), "2"), Err(ConfigKeyError::Fixed(_))));
    }
}
