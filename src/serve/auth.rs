//! Who may do what: bearer tokens, each with an access level and the repositories it covers.
//!
//! Only BLAKE3 hashes of the tokens are kept in memory, and a presented token is hashed and
//! compared against every one of them (`blake3::Hash` equality is constant-time), so neither
//! the comparison's timing nor a memory dump gives a token away.

use std::path::Path;

use serde::Deserialize;

use super::repos::check_repo_name;

/// What a request needs, or what a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// List refs and packs, download packs.
    Read,
    /// Also upload packs and move refs.
    ReadWrite,
}

/// A tokens file: `[[token]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    token: String,
    access: Access,
    repos: Vec<String>,
}

/// One token's rights.
struct Grant {
    hash: blake3::Hash,
    access: Access,
    /// Repository names, or `*` for every one.
    repos: Vec<String>,
}

impl Grant {
    fn covers(&self, repo: &str) -> bool {
        self.repos.iter().any(|r| r == "*" || r == repo)
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No token, or one the server does not know: 401.
    Unauthenticated(&'static str),
    /// A known token without the rights the request needs: 403.
    Forbidden(String),
}

/// A tokens file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {what}")]
pub struct TokensFileError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub what: String,
}

/// The tokens a server accepts. With none, every request is allowed.
#[derive(Default)]
pub struct Auth {
    grants: Vec<Grant>,
}

impl Auth {
    /// No tokens: the server is open to whoever can reach it.
    pub fn open() -> Auth {
        Auth::default()
    }

    /// One token that may read and write every repository (`--token`).
    pub fn single(token: &str) -> Auth {
        Auth {
            grants: vec![Grant {
                hash: blake3::hash(token.as_bytes()),
                access: Access::ReadWrite,
                repos: vec!["*".into()],
            }],
        }
    }

    /// Parses a tokens file's TOML; `path` names it in errors.
    pub fn parse_tokens(text: &str, path: &Path) -> Result<Auth, TokensFileError> {
        let err = |what: String| TokensFileError { path: path.display().to_string(), what };
        // The TOML error quotes the offending line, which may hold a token: say only where it is.
        let file: TokensFile = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(String::new(), |s| format!(" at byte {}", s.start));
            err(format!("not a valid tokens file{at}: {}", e.message()))
        })?;
        let mut grants = Vec::new();
        for (i, t) in file.token.into_iter().enumerate() {
            let which = format!("token #{}", i + 1);
            if t.token.trim().is_empty() || t.token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(err(format!("{which} is empty or holds whitespace")));
            }
            if t.repos.is_empty() {
                return Err(err(format!("{which} covers no repository: list names, or [\"*\"] for all")));
            }
            if let Some(bad) = t.repos.iter().find(|r| *r != "*" && !check_repo_name(r)) {
                return Err(err(format!("{which}: {bad:?} is not a repository name")));
            }
            grants.push(Grant { hash: blake3::hash(t.token.as_bytes()), access: t.access, repos: t.repos });
        }
        Ok(Auth { grants })
    }

    /// Reads a tokens file.
    pub fn load_tokens(path: &Path) -> Result<Auth, TokensFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TokensFileError { path: path.display().to_string(), what: e.to_string() })?;
        Auth::parse_tokens(&text, path)
    }

    /// These tokens and `other`'s.
    pub fn with(mut self, other: Auth) -> Auth {
        self.grants.extend(other.grants);
        self
    }

    /// True when no token is configured: every request is allowed.
    pub fn is_open(&self) -> bool {
        self.grants.is_empty()
    }

    /// May the bearer of `token` do `need` on repository `repo`?
    pub fn check(&self, token: Option<&str>, repo: &str, need: Access) -> Result<(), Denied> {
        if self.is_open() {
            return Ok(());
        }
        let token = token.ok_or(Denied::Unauthenticated("this server needs a token"))?;
        let hash = blake3::hash(token.as_bytes());
        // Every grant is compared, so the time taken does not tell which one matched.
        let mut found = None;
        for g in &self.grants {
            if g.hash == hash && found.is_none() {
                found = Some(g);
            }
        }
        let grant = found.ok_or(Denied::Unauthenticated("the server does not know this token"))?;
        if !grant.covers(repo) {
            return Err(Denied::Forbidden(format!("this token does not give access to repository {repo:?}")));
        }
        if grant.access < need {
            return Err(Denied::Forbidden(format!("this token may only read repository {repo:?}")));
        }
        Ok(())
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, token) = header?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[token]]
token = "admin-secret"
access = "read-write"
repos = ["*"]

[[token]]
token = "reader-secret"
access = "read"
repos = ["llama", "bert"]
"#;

    #[test]
    fn tokens_grant_what_the_file_says() {
        let auth = Auth::parse_tokens(FILE, Path::new("tokens.toml")).unwrap();
        assert_eq!(auth.check(Some("admin-secret"), "anything", Access::ReadWrite), Ok(()));
        assert_eq!(auth.check(Some("reader-secret"), "llama", Access::Read), Ok(()));
        assert!(matches!(auth.check(Some("reader-secret"), "llama", Access::ReadWrite), Err(Denied::Forbidden(_))));
        assert!(matches!(auth.check(Some("reader-secret"), "gpt", Access::Read), Err(Denied::Forbidden(_))));
        assert!(matches!(auth.check(Some("guess"), "llama", Access::Read), Err(Denied::Unauthenticated(_))));
        assert!(matches!(auth.check(None, "llama", Access::Read), Err(Denied::Unauthenticated(_))));
    }

    #[test]
    fn no_tokens_means_open_and_one_token_means_everything() {
        assert_eq!(Auth::open().check(None, "x", Access::ReadWrite), Ok(()));
        let one = Auth::single("s3cret");
        assert_eq!(one.check(Some("s3cret"), "x", Access::ReadWrite), Ok(()));
        assert!(one.check(Some("s3cre"), "x", Access::Read).is_err());
    }

    #[test]
    fn bad_files_are_refused_without_quoting_tokens() {
        for bad in [
            "[[token]]\ntoken = \"\"\naccess = \"read\"\nrepos = [\"*\"]\n",
            "[[token]]\ntoken = \"a b\"\naccess = \"read\"\nrepos = [\"*\"]\n",
            "[[token]]\ntoken = \"t\"\naccess = \"admin\"\nrepos = [\"*\"]\n",
            "[[token]]\ntoken = \"t\"\naccess = \"read\"\nrepos = []\n",
            "[[token]]\ntoken = \"t\"\naccess = \"read\"\nrepos = [\"../x\"]\n",
            "[[token]]\ntoken = \"hunter2\"\naccess = \"read\"\n",
        ] {
            let err = Auth::parse_tokens(bad, Path::new("t.toml")).err().unwrap_or_else(|| panic!("{bad}"));
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn bearer_headers_are_parsed() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
