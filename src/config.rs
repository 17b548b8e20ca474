//! Repository configuration, `.mlv/config` in TOML (example: `.zipllm-example/config`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The repository format version this build writes.
pub const FORMAT_VERSION: u32 = 1;

/// The values `delta.zstd_level` may take.
pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=22;

/// The values `pack.chunk_elems` may take.
pub const CHUNK_ELEMS: std::ops::RangeInclusive<u64> = 1..=(8 << 20);

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Repository-wide settings.
    #[serde(default)]
    pub core: Core,
    /// Identity used for commits when no environment variable is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// Delta compression settings.
    #[serde(default)]
    pub delta: Delta,
    /// Pack layout settings.
    #[serde(default)]
    pub pack: PackConfig,
    /// Garbage collection.
    #[serde(default)]
    pub gc: GcConfig,
    /// Checkout.
    #[serde(default)]
    pub checkout: CheckoutConfig,
    /// Remotes by name: `[remote.origin]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub remote: BTreeMap<String, RemoteConfig>,
    /// Upstreams of local branches: `[branch.main]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub branch: BTreeMap<String, BranchConfig>,
}

/// `[gc]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    /// `commit` runs `gc` when the repository has more packs than this (0: never).
    pub auto_packs: usize,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig { auto_packs: 50 }
    }
}

/// `[checkout]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CheckoutConfig {
    /// Keep the disk of replaced files for the next checkout to write into ([`crate::spare`]).
    pub keep_spares: bool,
}

impl Default for CheckoutConfig {
    fn default() -> Self {
        CheckoutConfig { keep_spares: true }
    }
}

/// `[remote.<name>]`: another repository this one pushes to and fetches from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// A path, `file://`, `http(s)://` or `s3://bucket/prefix` URL.
    pub url: String,
    /// Bearer token for an HTTP remote (`MLV_TOKEN` wins). Never printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// S3: endpoint URL of an S3-compatible server (`AWS_ENDPOINT_URL` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3: region (`AWS_REGION` otherwise, else us-east-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// S3: allow a plain-http endpoint (local servers).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_http: bool,
}

/// `[branch.<name>]`: where a local branch pulls from and pushes to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BranchConfig {
    /// The remote's name.
    pub remote: String,
    /// The branch on the remote, as a full ref (`refs/heads/main`).
    pub merge: String,
}

/// `[core]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Core {
    /// Repository format version.
    pub format: u32,
    /// True for a repository without a work tree (a server's or a backup's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bare: bool,
}

impl Default for Core {
    fn default() -> Self {
        Core { format: FORMAT_VERSION, bare: false }
    }
}

/// `[user]`. Either key may be left out (`mlv config --set user.name` sets one at a time);
/// the other then comes from git's configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Name recorded in commits.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// E-mail recorded in commits.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub email: String,
}

/// `[delta]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Delta {
    /// Longest allowed chain of deltas on deltas.
    pub max_chain: u8,
    /// zstd level for byte streams other than the exponent planes of floats, which are coded
    /// with short matches all but off at any level; 1 is the default.
    pub zstd_level: i32,
    /// Search the whole repository for bases of tensors that have none by path and name.
    pub discover: bool,
    /// Per path (file or directory in the work tree): a revision whose same path is the base.
    pub bases: BTreeMap<String, String>,
}

impl Default for Delta {
    fn default() -> Self {
        Delta { max_chain: 8, zstd_level: 1, discover: true, bases: BTreeMap::new() }
    }
}

/// `[pack]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PackConfig {
    /// Elements per chunk of new tensors.
    pub chunk_elems: u64,
}

impl Default for PackConfig {
    fn default() -> Self {
        PackConfig { chunk_elems: crate::store::DEFAULT_CHUNK_ELEMS }
    }
}

/// The configuration file is unreadable or invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Could not read it.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not valid TOML for this schema.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The cause.
        source: Box<toml::de::Error>,
    },
    /// A value out of range.
    #[error("{path}: {what}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        what: String,
    },
}

impl Config {
    /// Parses TOML text and checks ranges.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let p = path.display().to_string();
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: p.clone(), source: Box::new(e) })?;
        let invalid = |what: String| Err(ConfigError::Invalid { path: p.clone(), what });
        if config.core.format != FORMAT_VERSION {
            return invalid(format!(
                "repository format {} is not supported (this mlv reads {FORMAT_VERSION})",
                config.core.format
            ));
        }
        if !ZSTD_LEVELS.contains(&config.delta.zstd_level) {
            let (lo, hi) = (ZSTD_LEVELS.start(), ZSTD_LEVELS.end());
            return invalid(format!("delta.zstd_level must be {lo}..={hi}, not {}", config.delta.zstd_level));
        }
        if config.delta.max_chain as usize > crate::store::MAX_DECODE_DEPTH {
            let max = crate::store::MAX_DECODE_DEPTH;
            return invalid(format!("delta.max_chain must be 0..={max}, not {}", config.delta.max_chain));
        }
        if !CHUNK_ELEMS.contains(&config.pack.chunk_elems) {
            let (lo, hi) = (CHUNK_ELEMS.start(), CHUNK_ELEMS.end());
            return invalid(format!("pack.chunk_elems must be {lo}..={hi}, not {}", config.pack.chunk_elems));
        }
        Ok(config)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Io { path: path.display().to_string(), source: e })?;
        Config::parse(&text, path)
    }

    /// TOML text of this configuration.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".zipllm-example/config");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.delta.max_chain, 8);
        assert!(!config.delta.bases.is_empty());
    }

    #[test]
    fn defaults_round_trip() {
        let c = Config::default();
        assert_eq!(Config::parse(&c.to_toml(), Path::new("x")).unwrap(), c);
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(Config::parse("[delta]\nzstd_level = 99\n", Path::new("x")).is_err());
        assert!(Config::parse("[core]\nformat = 7\n", Path::new("x")).is_err());
        assert!(Config::parse("[nonsense]\n", Path::new("x")).is_err());
    }
}
