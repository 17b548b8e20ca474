//! Commit and annotated-tag objects, in a line-oriented text encoding like git's.

use super::{ObjectId, ObjectKind};
use crate::encoding::DecodeError;

/// Who did something, and when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Signature {
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// Seconds since the Unix epoch.
    pub time: i64,
    /// Offset from UTC in minutes.
    pub tz_minutes: i32,
}

impl Signature {
    fn encode(&self) -> String {
        let sign = if self.tz_minutes < 0 { '-' } else { '+' };
        let tz = self.tz_minutes.unsigned_abs();
        format!("{} <{}> {} {sign}{:02}{:02}", self.name, self.email, self.time, tz / 60, tz % 60)
    }

    fn decode(s: &str) -> Option<Signature> {
        let (name, rest) = s.split_once(" <")?;
        let (email, rest) = rest.split_once("> ")?;
        let (time, tz) = rest.split_once(' ')?;
        let (sign, digits) = tz.split_at_checked(1)?;
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let hours: i32 = digits[..2].parse().ok()?;
        let minutes: i32 = digits[2..].parse().ok()?;
        // One spelling per offset: "+0090" would be written back as "+0130", and "+9999" as
        // five digits that no longer parse.
        if minutes >= 60 {
            return None;
        }
        let magnitude = hours * 60 + minutes;
        let tz_minutes = match sign {
            "+" => magnitude,
            "-" => -magnitude,
            _ => return None,
        };
        Some(Signature { name: name.into(), email: email.into(), time: time.parse().ok()?, tz_minutes })
    }

    /// A valid name or e-mail has no angle brackets or newlines.
    pub fn is_valid_part(s: &str) -> bool {
        !s.contains(['<', '>', '\n'])
    }
}

/// The git commit that produced a checkpoint, when the work tree sits in a git repository.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GitProvenance {
    /// The git HEAD commit (hex).
    pub commit: String,
    /// True if the git work tree had uncommitted changes.
    pub dirty: bool,
}

/// A snapshot of the work tree with its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The root tree.
    pub tree: ObjectId,
    /// Parent commits, first parent first.
    pub parents: Vec<ObjectId>,
    /// Who wrote the change.
    pub author: Signature,
    /// Who committed it.
    pub committer: Signature,
    /// The source-code commit that produced the checkpoint.
    pub git: Option<GitProvenance>,
    /// The message.
    pub message: String,
}

/// Header fields (`key value` lines) and the message of a commit or tag body.
type Fields<'a> = (Vec<(&'a str, &'a str)>, String);

fn header_lines(body: &[u8]) -> Result<Fields<'_>, DecodeError> {
    let text =
        std::str::from_utf8(body).map_err(|e| DecodeError { what: "not UTF-8".into(), offset: e.valid_up_to() })?;
    let (head, message) = text
        .split_once("\n\n")
        .ok_or(DecodeError { what: "no blank line before the message".into(), offset: text.len() })?;
    let mut fields = Vec::new();
    let mut offset = 0;
    for line in head.split('\n') {
        let kv = line.split_once(' ').ok_or(DecodeError { what: format!("malformed line {line:?}"), offset })?;
        fields.push(kv);
        offset += line.len() + 1;
    }
    Ok((fields, message.to_string()))
}

fn bad(what: String) -> DecodeError {
    DecodeError { what, offset: 0 }
}

fn parse_id(v: &str) -> Result<ObjectId, DecodeError> {
    v.parse().map_err(|e: super::BadId| bad(e.to_string()))
}

fn parse_signature(v: &str) -> Result<Signature, DecodeError> {
    Signature::decode(v).ok_or_else(|| bad(format!("malformed signature {v:?}")))
}

impl Commit {
    /// Canonical body.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("tree {}\n", self.tree);
        for p in &self.parents {
            s += &format!("parent {p}\n");
        }
        s += &format!("author {}\ncommitter {}\n", self.author.encode(), self.committer.encode());
        if let Some(g) = &self.git {
            s += &format!("git-source {} {}\n", g.commit, if g.dirty { "dirty" } else { "clean" });
        }
        s += "\n";
        s += &self.message;
        s.into_bytes()
    }

    /// Parses a canonical body.
    pub fn decode(body: &[u8]) -> Result<Commit, DecodeError> {
        let (fields, message) = header_lines(body)?;
        let (mut tree, mut author, mut committer, mut git) = (None, None, None, None);
        let mut parents = Vec::new();
        for (key, value) in fields {
            match key {
                "tree" => tree = Some(parse_id(value)?),
                "parent" => parents.push(parse_id(value)?),
                "author" => author = Some(parse_signature(value)?),
                "committer" => committer = Some(parse_signature(value)?),
                "git-source" => {
                    let (commit, state) = value.split_once(' ').ok_or_else(|| bad("malformed git-source".into()))?;
                    git = Some(GitProvenance { commit: commit.into(), dirty: state == "dirty" });
                }
                other => return Err(bad(format!("unknown commit field {other:?}"))),
            }
        }
        Ok(Commit {
            tree: tree.ok_or_else(|| bad("commit has no tree".into()))?,
            parents,
            author: author.ok_or_else(|| bad("commit has no author".into()))?,
            committer: committer.ok_or_else(|| bad("commit has no committer".into()))?,
            git,
            message,
        })
    }

    /// The object id.
    pub fn id(&self) -> ObjectId {
        ObjectId::hash(ObjectKind::Commit, &self.encode())
    }
}

/// An annotated tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// The tagged object (a commit).
    pub object: ObjectId,
    /// Tag name.
    pub name: String,
    /// Who tagged.
    pub tagger: Signature,
    /// Tag message.
    pub message: String,
}

impl Tag {
    /// Canonical body.
    pub fn encode(&self) -> Vec<u8> {
        format!("object {}\ntag {}\ntagger {}\n\n{}", self.object, self.name, self.tagger.encode(), self.message)
            .into_bytes()
    }

    /// Parses a canonical body.
    pub fn decode(body: &[u8]) -> Result<Tag, DecodeError> {
        let (fields, message) = header_lines(body)?;
        let (mut object, mut name, mut tagger) = (None, None, None);
        for (key, value) in fields {
            match key {
                "object" => object = Some(parse_id(value)?),
                "tag" => name = Some(value.to_string()),
                "tagger" => tagger = Some(parse_signature(value)?),
                other => return Err(bad(format!("unknown tag field {other:?}"))),
            }
        }
        Ok(Tag {
            object: object.ok_or_else(|| bad("tag has no object".into()))?,
            name: name.ok_or_else(|| bad("tag has no name".into()))?,
            tagger: tagger.ok_or_else(|| bad("tag has no tagger".into()))?,
            message,
        })
    }

    /// The object id.
    pub fn id(&self) -> ObjectId {
        ObjectId::hash(ObjectKind::Tag, &self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(tz: i32) -> Signature {
        Signature { name: "A U Thor".into(), email: "a@example.com".into(), time: 1_700_000_000, tz_minutes: tz }
    }

    #[test]
    fn commit_round_trip_with_parents_zone_and_provenance() {
        let c = Commit {
            tree: ObjectId([1; 32]),
            parents: vec![ObjectId([2; 32]), ObjectId([3; 32])],
            author: sig(-330),
            committer: sig(60),
            git: Some(GitProvenance { commit: "ab".repeat(20), dirty: true }),
            message: "fine-tune\n\nwith details\n".into(),
        };
        assert_eq!(Commit::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn tag_round_trip() {
        let t = Tag { object: ObjectId([9; 32]), name: "v1".into(), tagger: sig(0), message: "release".into() };
        assert_eq!(Tag::decode(&t.encode()).unwrap(), t);
    }

    #[test]
    fn zone_minutes_past_59_are_refused() {
        let body = |tz: &str| format!("tree {}\nauthor a <e> 1 {tz}\ncommitter a <e> 1 +0000\n\nm", ObjectId([1; 32]));
        assert!(Commit::decode(body("+9960").as_bytes()).is_err());
        assert!(Commit::decode(body("-0090").as_bytes()).is_err());
        let c = Commit::decode(body("+9959").as_bytes()).unwrap();
        assert_eq!(c.author.tz_minutes, 99 * 60 + 59);
        assert_eq!(Commit::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn hostile_commits_are_errors() {
        for body in [&b"tree zz\n\nm"[..], b"\xff\xfe", b"tree 00\n", b"author x\n\nm", b"foo bar\n\nm"] {
            assert!(Commit::decode(body).is_err());
        }
    }
}
