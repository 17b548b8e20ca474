//! The hostile corpus in `tests/hostile/`: safetensors files and packs made to break the
//! consumers of untrusted bytes. `mlv add`, `mlv checkout`, `mlv serve` receiving a push, and
//! fetch and clone from a path or over HTTP must each refuse every one of them cleanly: an
//! error message and a non-zero exit (or a 4xx reply), never a panic, and nothing left behind
//! (refs as they were, `fsck` clean, no temporary files, nothing written outside the work tree).
//!
//! The corpus is committed; `write_hostile_corpus` (ignored) writes it again after a format
//! change: `cargo test --release --test runner write_hostile_corpus -- --ignored`.

use std::path::{Path, PathBuf};

use crate::common::serve::{Server, http};
use crate::common::{Out, TestRepo, assert_clean_failure, snapshot, temp_files};

/// The file every hostile commit shares with the repositories it is thrown at, so that a
/// refused checkout has something to leave alone.
const KEEP_PATH: &str = "keep.txt";
/// What [`KEEP_PATH`] holds.
const KEEP_TEXT: &str = "keep\n";
/// The name an escaping tree entry tries to create outside the work tree.
const ESCAPE: &str = "mlv-hostile-escape";
/// Where the absolute tree entry points.
const ABSOLUTE_ESCAPE: &str = "/tmp/mlv-hostile-escape";

/// What `tests/hostile/manifest.json` lists.
#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    /// Files `mlv add` must refuse.
    safetensors: Vec<BadFile>,
    /// Packs that checkout, the server and the client must refuse.
    packs: Vec<BadPack>,
}

/// A safetensors file in `safetensors/`.
#[derive(serde::Serialize, serde::Deserialize)]
struct BadFile {
    /// File name.
    file: String,
    /// Text the error must contain.
    expect: String,
    /// What is wrong with it.
    why: String,
}

/// A pack `packs/<case>.pack` with the index a hostile sender serves beside it,
/// `packs/<case>.idx`.
#[derive(serde::Serialize, serde::Deserialize)]
struct BadPack {
    /// Its file stem in the corpus.
    case: String,
    /// The name it travels under, `pack-<hex>` (for a damaged pack, not its content's hash).
    name: String,
    /// The commit a hostile ref points at.
    tip: String,
    /// True when only the sender's index lies: a receiver builds its own, so a push of it is
    /// accepted, while a reader that used the index would be misled.
    push_is_sound: bool,
    /// What is wrong with it.
    why: String,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile")
}

fn manifest() -> Manifest {
    let text = std::fs::read_to_string(corpus_dir().join("manifest.json")).expect("tests/hostile/manifest.json");
    serde_json::from_str(&text).expect("a readable manifest")
}

impl BadPack {
    fn bytes(&self, ext: &str) -> Vec<u8> {
        let path = corpus_dir().join("packs").join(format!("{}.{ext}", self.case));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Writes the pack and its sender's index into a pack directory, as a copy or a hostile
    /// server would leave them; returns the two paths.
    fn plant(&self, pack_dir: &Path) -> [PathBuf; 2] {
        ["pack", "idx"].map(|ext| {
            let path = pack_dir.join(format!("{}.{ext}", self.name));
            std::fs::write(&path, self.bytes(ext)).unwrap();
            path
        })
    }
}

/// A repository whose one commit holds [`KEEP_PATH`].
fn repo_with_keep() -> TestRepo {
    let r = TestRepo::init();
    r.write(KEEP_PATH, KEEP_TEXT);
    r.add_commit(&[KEEP_PATH], "keep");
    r
}

/// `mlv fsck` (every object, reachable or not) finds nothing wrong in the repository at `dir`.
fn assert_fsck_clean(r: &TestRepo, dir: &Path) {
    let out = r.run_at(dir, &["fsck", "--unreachable"]);
    assert!(out.success() && out.stdout.contains("no problems"), "fsck of {}:\n{}", dir.display(), out.describe());
}

/// Nothing a hostile tree names outside the work tree `root` exists.
fn assert_nothing_escaped(root: &Path) {
    for p in [root.parent().unwrap().join(ESCAPE), PathBuf::from(ABSOLUTE_ESCAPE)] {
        assert!(!p.exists(), "a hostile tree wrote {}", p.display());
    }
}

fn describe_case(case: &str, out: &Out) -> String {
    format!("hostile case {case}:\n{}", out.describe())
}

#[test]
fn add_refuses_every_hostile_safetensors_file() {
    let m = manifest();
    assert!(m.safetensors.len() >= 10, "the corpus has only {} safetensors files", m.safetensors.len());
    let r = repo_with_keep();
    let before = r.mlv_snapshot();
    for f in &m.safetensors {
        std::fs::copy(corpus_dir().join("safetensors").join(&f.file), r.path(&f.file)).unwrap();
        let out = r.fail(&["add", &f.file]);
        assert!(out.stderr.contains(&f.file), "the error must name the file: {}", describe_case(&f.file, &out));
        assert!(out.stderr.contains(&f.expect), "expected {:?}: {}", f.expect, describe_case(&f.file, &out));
        assert_eq!(r.mlv_snapshot(), before, "{}: .mlv changed although add failed", f.file);
        std::fs::remove_file(r.path(&f.file)).unwrap();
    }
    assert_fsck_clean(&r, &r.root);
}

#[test]
fn checkout_refuses_every_hostile_pack_and_leaves_the_work_tree_alone() {
    let m = manifest();
    let r = repo_with_keep();
    let (mlv_before, tree_before) = (r.mlv_snapshot(), r.worktree_snapshot());
    let pack_dir = r.path(".mlv/objects/pack");
    for p in &m.packs {
        let planted = p.plant(&pack_dir);
        let out = r.run(&["checkout", &p.tip]);
        assert_clean_failure(&out);
        for file in planted {
            std::fs::remove_file(file).unwrap();
        }
        let case = describe_case(&p.case, &out);
        assert!(!out.stderr.contains("unknown revision"), "the error must say what is wrong: {case}");
        assert_eq!(r.worktree_snapshot(), tree_before, "the work tree changed: {case}");
        assert_eq!(r.mlv_snapshot(), mlv_before, ".mlv changed (HEAD, refs or index): {case}");
        assert_eq!(temp_files(&r.root), Vec::<String>::new(), "{case}");
        assert_nothing_escaped(&r.root);
    }
    assert_fsck_clean(&r, &r.root);
    let status = r.json(&["status", "--json"]);
    assert!(status["unstaged"].as_array().is_some_and(Vec::is_empty), "{status}");
}

#[test]
fn the_server_refuses_every_hostile_push_and_keeps_nothing() {
    let m = manifest();
    let r = repo_with_keep();
    let srv = r.scratch("srv");
    let server = Server::start(&r, &srv, &["--allow-create"]);
    r.ok(&["push", &server.url("target"), "main"]);
    let target = srv.join("target");
    let mut refs_expected = snapshot(&target.join("refs"));
    for p in &m.packs {
        let put = format!("/target/mlv/v1/packs/{}.pack", p.name);
        let (put_status, put_body) = http(&server.addr, "PUT", &put, &[], &p.bytes("pack"));
        let branch = format!("refs/heads/hostile/{}", p.case);
        let update = format!(r#"{{"name":"{branch}","old":null,"new":"{}"}}"#, p.tip);
        let (ref_status, ref_body) = http(&server.addr, "POST", "/target/mlv/v1/refs", &[], update.as_bytes());
        let what = format!("{}: PUT {put_status} {put_body}\nPOST refs {ref_status} {ref_body}", p.case);
        if p.push_is_sound {
            assert_eq!((put_status, ref_status), (200, 200), "{what}");
            refs_expected = snapshot(&target.join("refs"));
        } else {
            // A pack may be sound on its own (units arrive one by one); the ref never moves.
            assert!([200, 400, 422].contains(&put_status), "{what}");
            assert_eq!(ref_status, 422, "{what}");
        }
        assert_eq!(temp_files(&target), Vec::<String>::new(), "{what}");
        assert_eq!(snapshot(&target.join("refs")), refs_expected, "{what}");
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
    assert_fsck_clean(&r, &target);
}

/// A bare repository `dir` holding one hostile pack (and its sender's index) with `main`
/// pointing at the pack's tip: a remote that lies.
fn hostile_remote(r: &TestRepo, dir: &Path, p: &BadPack) {
    r.ok_at(r.root.parent().unwrap(), &["init", "--bare", dir.to_str().unwrap()]);
    p.plant(&dir.join("objects/pack"));
    std::fs::write(dir.join("refs/heads/main"), format!("{}\n", p.tip)).unwrap();
}

/// Clone and fetch from `url` (serving `p`) both fail cleanly, and `local`, which fetched,
/// is as it was: refs, no temporary files, fsck clean.
fn assert_client_refuses(r: &TestRepo, p: &BadPack, url: &str) {
    let dest = r.beside(&format!("clone-{}", p.case));
    let out = r.run_at(r.root.parent().unwrap(), &["clone", url, dest.to_str().unwrap()]);
    assert_clean_failure(&out);
    assert!(!dest.exists(), "a failed clone left {}: {}", dest.display(), describe_case(&p.case, &out));
    let refs_before = snapshot(&r.path(".mlv/refs"));
    r.ok(&["remote", "set-url", "hostile", url]);
    let out = r.run(&["fetch", "hostile"]);
    assert_clean_failure(&out);
    let case = describe_case(&p.case, &out);
    assert!(out.stderr.contains(url), "the error must name the remote: {case}");
    assert_eq!(snapshot(&r.path(".mlv/refs")), refs_before, "refs changed: {case}");
    assert_eq!(temp_files(&r.root), Vec::<String>::new(), "{case}");
    assert_fsck_clean(r, &r.root);
    assert_nothing_escaped(&r.root);
}

/// A repository to fetch into, with a remote `hostile` whose URL each case sets.
fn fetching_repo() -> TestRepo {
    let r = repo_with_keep();
    r.ok(&["remote", "add", "hostile", "http://127.0.0.1:9/unused"]);
    r
}

#[test]
fn fetch_and_clone_from_a_path_refuse_every_hostile_pack() {
    let m = manifest();
    let r = fetching_repo();
    for p in &m.packs {
        let remote = r.beside(&format!("remote-{}", p.case));
        hostile_remote(&r, &remote, p);
        assert_client_refuses(&r, p, remote.to_str().unwrap());
    }
}

#[test]
fn fetch_and_clone_over_http_refuse_every_hostile_pack() {
    let m = manifest();
    let r = fetching_repo();
    let srv = r.scratch("srv");
    for p in &m.packs {
        hostile_remote(&r, &srv.join(&p.case), p);
    }
    let server = Server::start(&r, &srv, &[]);
    for p in &m.packs {
        assert_client_refuses(&r, p, &server.url(&p.case));
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn the_manifest_lists_every_corpus_file() {
    let m = manifest();
    let mut listed: Vec<String> = m.safetensors.iter().map(|f| format!("safetensors/{}", f.file)).collect();
    for p in &m.packs {
        listed.extend(["pack", "idx"].map(|ext| format!("packs/{}.{ext}", p.case)));
    }
    listed.sort();
    let mut found: Vec<String> = ["safetensors", "packs"]
        .iter()
        .flat_map(|d| std::fs::read_dir(corpus_dir().join(d)).unwrap())
        .map(|e| {
            let path = e.unwrap().path();
            path.strip_prefix(corpus_dir()).unwrap().to_string_lossy().into_owned()
        })
        .collect();
    found.sort();
    assert_eq!(found, listed);
}

/// Writing the corpus: safetensors files laid out byte by byte, and packs assembled in memory
/// with the crate's own encoders, each sound but for the one defect it is named after.
mod generate {
    use mlv::codec::{Codec, EncodeOptions, encode_with};
    use mlv::object::{
        Commit, DType, EntryKind, MAX_TREE_DEPTH, ObjectId, ObjectKind, Segment, Signature, TensorFile, TensorMeta,
        Tree, TreeEntry,
    };
    use mlv::pack::{EntryHeader, IndexRecord, MAX_CHUNK_ELEMS, PACK_MAGIC, PackIndex, PackName, VERSION};
    use mlv::store::{DEFAULT_CHUNK_ELEMS as CHUNK_ELEMS, MAX_DECODE_DEPTH as MAX_CHAIN};

    use super::{ABSOLUTE_ESCAPE, BadFile, BadPack, ESCAPE, KEEP_PATH, KEEP_TEXT, Manifest, corpus_dir};
    use crate::common::st::{self, T};

    fn object_header(kind: ObjectKind, id: ObjectId, len: u64, chunk_elems: u64) -> EntryHeader {
        let meta = TensorMeta { dtype: DType::U8, shape: Vec::new(), data_len: len };
        EntryHeader { kind, id, meta, chunk_elems }
    }

    fn raw_chunk(data: &[u8]) -> Vec<u8> {
        encode_with(Codec::Raw, DType::U8, data, None, EncodeOptions::default())
    }

    /// `n` bytes no compressor shrinks, different for every `seed`.
    fn noise(seed: &str, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        blake3::Hasher::new().update(seed.as_bytes()).finalize_xof().fill(&mut out);
        out
    }

    /// F32 values of a small tensor, different for every `seed`.
    fn values(seed: usize) -> Vec<u8> {
        (0..TENSOR_ELEMS).flat_map(|i| (1.0f32 + (i + seed) as f32 / 64.0).to_le_bytes()).collect()
    }

    /// Elements of every tensor in the corpus.
    const TENSOR_ELEMS: usize = 64;

    fn tensor_meta(data: &[u8]) -> TensorMeta {
        TensorMeta { dtype: DType::F32, shape: vec![TENSOR_ELEMS as u64], data_len: data.len() as u64 }
    }

    fn tensor_id(data: &[u8]) -> ObjectId {
        let mut h = tensor_meta(data).hasher();
        h.update(data);
        h.finish()
    }

    fn tree_entry(name: &str, kind: EntryKind, id: ObjectId, size: u64) -> TreeEntry {
        TreeEntry { name: name.into(), kind, executable: false, id, size }
    }

    /// A pack being assembled: its bytes, and the records of the index its sender serves.
    struct Pack {
        bytes: Vec<u8>,
        entries: Vec<(IndexRecord, Vec<ObjectId>)>,
    }

    impl Pack {
        fn new() -> Pack {
            let mut bytes = PACK_MAGIC.to_vec();
            bytes.extend_from_slice(&VERSION.to_le_bytes());
            bytes.extend_from_slice(&0u32.to_le_bytes());
            Pack { bytes, entries: Vec::new() }
        }

        /// Appends an entry as given, honest or not; returns its id.
        fn entry(&mut self, header: EntryHeader, chunks: &[Vec<u8>], bases: Vec<ObjectId>, depth: u8) -> ObjectId {
            let offset = self.bytes.len() as u64;
            self.bytes.extend_from_slice(&header.encode());
            for c in chunks {
                self.bytes.extend_from_slice(&(c.len() as u32).to_le_bytes());
                self.bytes.extend_from_slice(c);
            }
            let len = self.bytes.len() as u64 - offset;
            let (id, kind, data_len) = (header.id, header.kind, header.meta.data_len);
            let record = IndexRecord { id, offset, len, data_len, kind, depth, base_count: 0, first_base: 0 };
            self.entries.push((record, bases));
            id
        }

        /// Stores `body` under `id`, whatever it hashes to, in one raw chunk.
        fn put_as(&mut self, kind: ObjectKind, id: ObjectId, body: &[u8]) -> ObjectId {
            let chunks = if body.is_empty() { Vec::new() } else { vec![raw_chunk(body)] };
            self.entry(object_header(kind, id, body.len() as u64, CHUNK_ELEMS), &chunks, Vec::new(), 0)
        }

        /// Stores an object that is not a tensor, honestly.
        fn put(&mut self, kind: ObjectKind, body: &[u8]) -> ObjectId {
            self.put_as(kind, ObjectId::hash(kind, body), body)
        }

        /// Stores an F32 tensor in one chunk, as a delta when `base` (id, data, depth) is given.
        fn tensor(&mut self, id: ObjectId, data: &[u8], base: Option<(ObjectId, &[u8], u8)>) -> ObjectId {
            let header =
                EntryHeader { kind: ObjectKind::Tensor, id, meta: tensor_meta(data), chunk_elems: TENSOR_ELEMS as u64 };
            let (codec, base_id, base_data, depth) = match base {
                Some((b, bytes, d)) => (Codec::DiffContext, Some(b), Some(bytes), d.saturating_add(1)),
                None => (Codec::Raw, None, None, 0),
            };
            let chunk = encode_with(codec, DType::F32, data, base_id.zip(base_data), EncodeOptions::default());
            self.entry(header, &[chunk], base_id.into_iter().collect(), depth)
        }

        /// The entry for [`KEEP_PATH`].
        fn keep(&mut self) -> TreeEntry {
            let id = self.put(ObjectKind::Blob, KEEP_TEXT.as_bytes());
            tree_entry(KEEP_PATH, EntryKind::Blob, id, KEEP_TEXT.len() as u64)
        }

        /// A tree of `entries` (sorted here, checked nowhere).
        fn tree(&mut self, mut entries: Vec<TreeEntry>) -> ObjectId {
            entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
            self.put(ObjectKind::Tree, &Tree { entries }.encode())
        }

        /// A commit of `tree` whose message names the case.
        fn commit_of(&mut self, tree: ObjectId, case: &str) -> ObjectId {
            let who = Signature { name: "Hostile".into(), email: "hostile@example.com".into(), time: 0, tz_minutes: 0 };
            let message = format!("hostile: {case}\n");
            let commit = Commit { tree, parents: Vec::new(), author: who.clone(), committer: who, git: None, message };
            self.put(ObjectKind::Commit, &commit.encode())
        }

        /// A commit of [`KEEP_PATH`] and `extra`.
        fn commit(&mut self, case: &str, extra: Vec<TreeEntry>) -> ObjectId {
            let mut entries = vec![self.keep()];
            entries.extend(extra);
            let tree = self.tree(entries);
            self.commit_of(tree, case)
        }

        /// `model.safetensors` holding one F32 tensor `w`, stored as `tensor`.
        fn model(&mut self, tensor: ObjectId) -> TreeEntry {
            let len = TENSOR_ELEMS as u64 * 4;
            let header = format!(r#"{{"w":{{"dtype":"F32","shape":[{TENSOR_ELEMS}],"data_offsets":[0,{len}]}}}}"#);
            let mut prefix = (header.len() as u64).to_le_bytes().to_vec();
            prefix.extend_from_slice(header.as_bytes());
            let file = TensorFile { prefix, segments: vec![Segment::Tensor { id: tensor, len }] };
            let id = self.put(ObjectKind::TensorFile, &file.encode());
            tree_entry("model.safetensors", EntryKind::TensorFile, id, file.file_len())
        }

        /// The pack's bytes with their trailer, and the index its sender serves with it.
        fn seal(mut self) -> (Vec<u8>, PackIndex) {
            let hash = *blake3::hash(&self.bytes).as_bytes();
            self.bytes.extend_from_slice(&hash);
            (self.bytes, PackIndex::build(hash, self.entries))
        }
    }

    /// One hostile pack, ready to write.
    struct Built {
        pack: Vec<u8>,
        index: PackIndex,
        /// The name it travels under.
        name: PackName,
        tip: ObjectId,
    }

    impl Built {
        /// A pack as sealed, travelling under its own name.
        fn sealed(p: Pack, tip: ObjectId) -> Built {
            let (pack, index) = p.seal();
            Built { name: PackName(index.pack_hash), pack, index, tip }
        }
    }

    /// A sound commit of [`KEEP_PATH`] and a `payload.bin` of noise.
    fn sound(case: &str) -> (Pack, ObjectId) {
        let mut p = Pack::new();
        let payload = noise(case, 512);
        let id = p.put(ObjectKind::Blob, &payload);
        let tip = p.commit(case, vec![tree_entry("payload.bin", EntryKind::Blob, id, 512)]);
        (p, tip)
    }

    fn truncated() -> Built {
        let (p, tip) = sound("truncated");
        let mut b = Built::sealed(p, tip);
        b.pack.truncate(b.pack.len() / 2);
        b
    }

    fn bad_magic() -> Built {
        let (mut p, tip) = sound("bad-magic");
        p.bytes[..8].copy_from_slice(b"NOTMLV\0\0");
        Built::sealed(p, tip)
    }

    fn lying_index() -> Built {
        let (mut p, tip) = sound("lying-index");
        // The tip's record points at the entry before it (its tree), and the tree's at the tip.
        let n = p.entries.len();
        let (tip_at, tree_at) =
            ((p.entries[n - 1].0.offset, p.entries[n - 1].0.len), (p.entries[n - 2].0.offset, p.entries[n - 2].0.len));
        (p.entries[n - 1].0.offset, p.entries[n - 1].0.len) = tree_at;
        (p.entries[n - 2].0.offset, p.entries[n - 2].0.len) = tip_at;
        Built::sealed(p, tip)
    }

    /// A commit whose `payload.bin` is stored by `store`, which gets the pack, the payload and
    /// its honest id.
    fn with_payload(case: &str, store: impl FnOnce(&mut Pack, &[u8], ObjectId) -> ObjectId) -> Built {
        let mut p = Pack::new();
        let payload = noise(case, 512);
        let id = store(&mut p, &payload, ObjectId::hash(ObjectKind::Blob, &payload));
        let tip = p.commit(case, vec![tree_entry("payload.bin", EntryKind::Blob, id, 512)]);
        Built::sealed(p, tip)
    }

    fn flipped_byte() -> Built {
        with_payload("flipped-byte", |p, payload, id| {
            let mut chunk = raw_chunk(payload);
            let last = chunk.len() - 1;
            chunk[last] ^= 0x01;
            p.entry(object_header(ObjectKind::Blob, id, payload.len() as u64, CHUNK_ELEMS), &[chunk], Vec::new(), 0)
        })
    }

    fn size_lies() -> Built {
        with_payload("size-lies", |p, payload, id| {
            let claimed = 2 * payload.len() as u64;
            let header = object_header(ObjectKind::Blob, id, claimed, claimed);
            p.entry(header, &[raw_chunk(payload)], Vec::new(), 0)
        })
    }

    fn huge_size() -> Built {
        // The payload comes last: nothing follows that its claimed 16,384 chunks could borrow.
        let mut p = Pack::new();
        let payload = noise("huge-size", 512);
        let id = ObjectId::hash(ObjectKind::Blob, &payload);
        let tip = p.commit("huge-size", vec![tree_entry("payload.bin", EntryKind::Blob, id, 1 << 40)]);
        let header = object_header(ObjectKind::Blob, id, 1 << 40, MAX_CHUNK_ELEMS);
        p.entry(header, &[raw_chunk(&payload)], Vec::new(), 0);
        Built::sealed(p, tip)
    }

    fn wrong_id() -> Built {
        with_payload("wrong-id", |p, payload, _| {
            p.put_as(ObjectKind::Blob, ObjectId::hash(ObjectKind::Blob, b"what the tree expects"), payload)
        })
    }

    fn duplicate_object() -> Built {
        with_payload("duplicate-object", |p, payload, _| {
            p.put(ObjectKind::Blob, payload);
            p.put(ObjectKind::Blob, payload)
        })
    }

    fn self_delta() -> Built {
        let mut p = Pack::new();
        let data = values(0);
        let id = tensor_id(&data);
        p.tensor(id, &data, Some((id, &values(1), 0)));
        let model = p.model(id);
        let tip = p.commit("self-delta", vec![model]);
        Built::sealed(p, tip)
    }

    fn long_chain() -> Built {
        let mut p = Pack::new();
        let mut base: Option<(ObjectId, Vec<u8>, u8)> = None;
        for k in 0..=MAX_CHAIN + 1 {
            let data = values(k);
            let id = tensor_id(&data);
            p.tensor(id, &data, base.as_ref().map(|(b, bytes, d)| (*b, bytes.as_slice(), *d)));
            let depth = base.as_ref().map_or(0, |b| b.2.saturating_add(1));
            base = Some((id, data, depth));
        }
        let last = base.map(|b| b.0).unwrap_or(ObjectId::NULL);
        let model = p.model(last);
        let tip = p.commit("long-chain", vec![model]);
        Built::sealed(p, tip)
    }

    /// A commit with the entry `name`: a file, or (`dir`) a directory holding [`ESCAPE`].
    fn unsafe_name(case: &str, name: &str, dir: bool) -> Built {
        let mut p = Pack::new();
        let escaped = p.put(ObjectKind::Blob, b"escaped\n");
        let entry = match dir {
            true => {
                let inner = p.tree(vec![tree_entry(ESCAPE, EntryKind::Blob, escaped, 8)]);
                tree_entry(name, EntryKind::Tree, inner, 8)
            }
            false => tree_entry(name, EntryKind::Blob, escaped, 8),
        };
        let tip = p.commit(case, vec![entry]);
        Built::sealed(p, tip)
    }

    fn too_deep() -> Built {
        let mut p = Pack::new();
        let file = p.put(ObjectKind::Blob, b"deep\n");
        let mut entry = tree_entry("deep.txt", EntryKind::Blob, file, 5);
        for _ in 0..MAX_TREE_DEPTH + 44 {
            let tree = p.tree(vec![entry]);
            entry = tree_entry("d", EntryKind::Tree, tree, 5);
        }
        let tip = p.commit("tree-too-deep", vec![entry]);
        Built::sealed(p, tip)
    }

    fn missing_tree() -> Built {
        let mut p = Pack::new();
        p.keep();
        let tip = p.commit_of(ObjectId::hash(ObjectKind::Tree, b"a tree nobody has"), "commit-missing-tree");
        Built::sealed(p, tip)
    }

    /// Every hostile pack: case name, how to build it, whether a push of it is sound, why.
    fn packs() -> Vec<(&'static str, Built, bool, &'static str)> {
        vec![
            ("truncated", truncated(), false, "a sound pack cut in half: no trailer, entries run off the end"),
            ("bad-magic", bad_magic(), false, "a sound pack whose first 8 bytes are not MLVPACK\\0"),
            ("size-lies", size_lies(), false, "a blob entry declaring twice the bytes its chunk holds"),
            ("huge-size", huge_size(), false, "a blob entry declaring 1 TiB in 16,384 chunks, with one present"),
            ("flipped-byte", flipped_byte(), false, "a chunk with one payload byte flipped (checksum mismatch)"),
            ("wrong-id", wrong_id(), false, "a blob whose content does not hash to its id"),
            ("duplicate-object", duplicate_object(), false, "the same object stored twice in one pack"),
            ("self-delta", self_delta(), false, "a tensor whose chunk is a delta against the tensor itself"),
            ("long-chain", long_chain(), false, "a tensor at the end of a 33-link delta chain (the limit is 32)"),
            ("tree-dotdot", unsafe_name("tree-dotdot", "..", true), false, "a tree entry named `..`"),
            (
                "tree-absolute",
                unsafe_name("tree-absolute", ABSOLUTE_ESCAPE, false),
                false,
                "a tree entry that is an absolute path",
            ),
            (
                "tree-slash",
                unsafe_name("tree-slash", &format!("../{ESCAPE}"), false),
                false,
                "a tree entry name with `/` in it, climbing out",
            ),
            ("tree-nul", unsafe_name("tree-nul", "a\0b", false), false, "a tree entry name with a NUL byte"),
            (
                "tree-dot-mlv",
                unsafe_name("tree-dot-mlv", ".mlv", true),
                false,
                "a tree entry named `.mlv`, over the repository",
            ),
            ("tree-too-deep", too_deep(), false, "directories nested 300 levels deep (the limit is 256)"),
            ("commit-missing-tree", missing_tree(), false, "a commit whose tree is in no pack"),
            (
                "lying-index",
                lying_index(),
                true,
                "a sound pack whose sender's index swaps the records of the tip and its tree",
            ),
        ]
    }

    /// Every hostile safetensors file: name, bytes, text its error must hold, why.
    fn safetensors() -> Vec<(&'static str, Vec<u8>, &'static str, &'static str)> {
        let valid = st::serialize(&[T::f32("a", &[4, 4], &[0.5; 16]), T::f32("b", &[8], &[0.25; 8])], None);
        let with_len = |len: u64| {
            let mut bytes = valid.clone();
            bytes[..8].copy_from_slice(&len.to_le_bytes());
            bytes
        };
        let raw = |header: &str, data_len: usize| st::raw(header.as_bytes(), &vec![0u8; data_len]);
        let two = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}"#;
        let dup = r#"{"layer.0.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"layer.0.weight":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#;
        let dims = vec!["1"; 256].join(",");
        vec![
            (
                "header-past-end.safetensors",
                with_len(valid.len() as u64 + 1000),
                "runs past the end",
                "the header length points 1000 bytes past the end of the file",
            ),
            (
                "huge-header.safetensors",
                with_len(u64::MAX),
                "exceeds the 100000000-byte limit",
                "a header length of 2^64 - 1",
            ),
            ("empty.safetensors", Vec::new(), "shorter than the 8-byte header length", "an empty file"),
            (
                "truncated-data.safetensors",
                valid[..valid.len() - 10].to_vec(),
                "outside the",
                "the data region ends 10 bytes before the last tensor does",
            ),
            (
                "offsets-out-of-range.safetensors",
                raw(two, 16),
                "outside the 16-byte data region",
                "tensor `b` lies at data bytes 16..32 of a 16-byte data region",
            ),
            (
                "overlapping.safetensors",
                raw(
                    r#"{"a":{"dtype":"F32","shape":[4,4],"data_offsets":[0,64]},"b":{"dtype":"F32","shape":[8],"data_offsets":[32,64]}}"#,
                    64,
                ),
                "overlaps the tensor before it",
                "tensor `b` starts inside tensor `a`",
            ),
            (
                "shape-overflow.safetensors",
                raw(r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,2],"data_offsets":[0,64]}}"#, 64),
                "overflows its byte size",
                "the shape's element count overflows 64 bits",
            ),
            (
                "byte-size-overflow.safetensors",
                raw(r#"{"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,64]}}"#, 64),
                "overflows its byte size",
                "2^62 F32 elements: the count fits 64 bits, the byte size does not",
            ),
            (
                "huge-tensor.safetensors",
                raw(r#"{"a":{"dtype":"U8","shape":[1099511627776],"data_offsets":[0,1099511627776]}}"#, 64),
                "outside the 64-byte data region",
                "a 1 TiB tensor declared in a 64-byte data region",
            ),
            (
                "shape-mismatch.safetensors",
                raw(r#"{"a":{"dtype":"F32","shape":[4,4],"data_offsets":[0,60]}}"#, 60),
                "needs 64 bytes",
                "a [4, 4] F32 tensor given 60 bytes",
            ),
            (
                "invalid-json.safetensors",
                raw(r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},, "b": }"#, 16),
                "not a JSON object",
                "a header that is not JSON",
            ),
            ("not-an-object.safetensors", raw("[1, 2, 3]", 0), "not a JSON object", "a header that is a JSON array"),
            (
                "not-utf8.safetensors",
                st::raw(b"{\"\xff\xfe\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", &[]),
                "not valid UTF-8",
                "a tensor name that is not UTF-8",
            ),
            (
                "duplicate-name.safetensors",
                raw(dup, 16),
                r#""layer.0.weight" appears twice"#,
                "two tensors named `layer.0.weight`",
            ),
            (
                "unknown-dtype.safetensors",
                raw(r#"{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}"#, 16),
                "unknown dtype",
                "a dtype no loader knows",
            ),
            (
                "too-many-dims.safetensors",
                raw(&format!(r#"{{"a":{{"dtype":"U8","shape":[{dims}],"data_offsets":[0,1]}}}}"#), 1),
                "too many",
                "256 dimensions (the format holds 255)",
            ),
            (
                "bad-metadata.safetensors",
                raw(r#"{"__metadata__":{"epoch":3},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#, 2),
                "__metadata__ must be",
                "metadata that is not a map of strings",
            ),
        ]
    }

    /// The top of `README.md`; the list of files follows.
    const README_INTRO: &str = "# Hostile inputs

Files that `mlv add`, `mlv checkout`, `mlv serve` (receiving a push) and fetch and clone (from
a path and over HTTP) must each refuse cleanly: an error and a non-zero exit (or a 4xx reply),
no panic, refs unchanged, `fsck` clean, no temporary file left, nothing written outside the
work tree. `tests/cases/test_hostile_corpus.rs` throws every file at every consumer that reads
it; `manifest.json` lists them for it (and the text each `add` error must hold).

Generated by `cargo test --release --test runner write_hostile_corpus -- --ignored`: edit the
generator, not these files. Every pack commits `keep.txt` beside its one defect, so a refused
checkout has something to leave alone; `<case>.idx` is the index a hostile sender serves with
`<case>.pack`, built from what the pack claims to hold (receivers build their own).

## safetensors/ (for `mlv add`)

";

    fn readme(m: &Manifest) -> String {
        let mut s = README_INTRO.to_string();
        for f in &m.safetensors {
            s += &format!("- `{}`: {}\n", f.file, f.why);
        }
        s += "\n## packs/ (for checkout, the server and the client)\n\n";
        for p in &m.packs {
            s += &format!("- `{}.pack`: {}\n", p.case, p.why);
        }
        s
    }

    fn write(rel: &str, bytes: &[u8]) {
        let path = corpus_dir().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    #[ignore = "writes tests/hostile; run by hand after a format change"]
    fn write_hostile_corpus() {
        let _ = std::fs::remove_dir_all(corpus_dir());
        let mut m = Manifest { safetensors: Vec::new(), packs: Vec::new() };
        for (file, bytes, expect, why) in safetensors() {
            write(&format!("safetensors/{file}"), &bytes);
            m.safetensors.push(BadFile { file: file.into(), expect: expect.into(), why: why.into() });
        }
        for (case, built, push_is_sound, why) in packs() {
            write(&format!("packs/{case}.pack"), &built.pack);
            write(&format!("packs/{case}.idx"), &built.index.encode());
            let (name, tip) = (built.name.stem(), built.tip.to_hex());
            m.packs.push(BadPack { case: case.into(), name, tip, push_is_sound, why: why.into() });
        }
        write("manifest.json", (serde_json::to_string_pretty(&m).unwrap() + "\n").as_bytes());
        write("README.md", readme(&m).as_bytes());
    }
}
