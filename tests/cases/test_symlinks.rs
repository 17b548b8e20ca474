//! Folders of symlinks, as a Hugging Face hub cache holds them: a symlink to a file is that
//! file's content, everywhere; a symlink to a directory is skipped, and said so.

use std::os::unix::fs::symlink;
use std::path::Path;

use crate::common::TestRepo;
use crate::common::fixtures;

/// A hub-cache layout for one model with two revisions, in the work tree:
/// `blobs/<hash>` files and `snapshots/<rev>/<name> -> ../../blobs/<hash>` links.
fn hub_cache(r: &TestRepo) {
    let staging = r.scratch("hub-files");
    let base = staging.join("rev1");
    let ft = staging.join("rev2");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::create_dir_all(&ft).unwrap();
    let w = fixtures::write_base(&base);
    fixtures::write_finetune(&ft, &w);
    std::fs::create_dir_all(r.path("blobs")).unwrap();
    for rev in ["rev1", "rev2"] {
        std::fs::create_dir_all(r.path(&format!("snapshots/{rev}"))).unwrap();
        for name in ["model.safetensors", "config.json", "tokenizer.json"] {
            let bytes = std::fs::read(staging.join(rev).join(name)).unwrap();
            let hash = blake3::hash(&bytes).to_hex().to_string();
            std::fs::write(r.path(&format!("blobs/{hash}")), &bytes).unwrap();
            symlink(format!("../../blobs/{hash}"), r.path(&format!("snapshots/{rev}/{name}"))).unwrap();
        }
    }
}

fn same_content(r: &TestRepo, rel: &str, expected: &Path) {
    let meta = std::fs::symlink_metadata(r.path(rel)).unwrap();
    assert!(meta.is_file(), "{rel} is not a regular file after checkout");
    assert_eq!(r.read(rel), std::fs::read(expected).unwrap(), "{rel}");
}

#[test]
fn a_hugging_face_cache_snapshot_is_tracked_as_its_content_and_checks_out_as_files() {
    let r = TestRepo::init();
    hub_cache(&r);
    let out = r.json(&["add", "snapshots/rev1", "--json"]);
    assert_eq!(out["staged"].as_array().unwrap().len(), 3, "{out}");
    let c1 = r.commit("rev1");
    let s = r.json(&["status", "--json"]);
    assert!(s["unstaged"].as_array().unwrap().is_empty(), "a committed symlinked file shows as changed: {s}");
    let untracked = s["untracked"].as_array().unwrap();
    assert!(
        untracked.iter().all(|p| ["blobs/", "snapshots/rev2/"].iter().any(|d| p.as_str().unwrap().starts_with(d))),
        "{s}"
    );
    r.ok(&["add", "snapshots/rev2"]);
    r.commit("rev2");
    // Retargeting a link is a change to the content it stands for.
    std::fs::remove_file(r.path("snapshots/rev1/config.json")).unwrap();
    symlink("../rev2/config.json", r.path("snapshots/rev1/config.json")).unwrap();
    let s = r.json(&["status", "--json"]);
    assert_eq!(s["unstaged"][0]["path"], "snapshots/rev1/config.json", "{s}");
    r.ok(&["commit", "-a", "-m", "rev1 points at rev2's config"]);
    assert!(r.json(&["status", "--json"])["unstaged"].as_array().unwrap().is_empty());

    // Checkout writes regular files, never through the links.
    let originals = r.scratch("hub-files");
    r.ok(&["checkout", "-f", &c1]);
    for name in ["model.safetensors", "config.json", "tokenizer.json"] {
        same_content(&r, &format!("snapshots/rev1/{name}"), &originals.join("rev1").join(name));
    }
    // The checked-out snapshot loads in the reference Python library.
    if let Some(v) = crate::test_python::python_inspect(&[&r.path("snapshots/rev1/model.safetensors")]) {
        assert!(v.to_string().contains("embeddings"), "{v}");
    }
    let blobs_before = crate::common::snapshot(&r.path("blobs"));
    r.ok(&["switch", "-f", "main"]);
    assert_eq!(crate::common::snapshot(&r.path("blobs")), blobs_before, "checkout wrote through a symlink");
    same_content(&r, "snapshots/rev1/config.json", &originals.join("rev2/config.json"));
}

#[test]
fn links_to_directories_or_nothing_are_skipped_and_said_so() {
    let r = TestRepo::init();
    r.write("real/a.txt", "a\n");
    symlink("real", r.path("dirlink")).unwrap();
    symlink("missing-target", r.path("dangling")).unwrap();
    r.ok(&["add", "."]);
    let s = r.json(&["status", "--json"]);
    let skipped: Vec<String> = s["skipped"].as_array().unwrap().iter().map(|k| k.to_string()).collect();
    assert!(skipped.iter().any(|k| k.contains("dirlink") && k.contains("directory")), "{s}");
    assert!(skipped.iter().any(|k| k.contains("dangling") && k.contains("nothing")), "{s}");
    let text = r.ok(&["status"]);
    assert!(text.contains("Not tracked") && text.contains("dirlink"), "{text}");
    r.commit("real files only");
    let tree = r.json(&["show", "--json"]);
    assert!(!tree.to_string().contains("dirlink/a.txt"), "followed a directory link: {tree}");
}

#[test]
fn adding_a_symlinked_file_by_name_then_removing_it_agree_with_status() {
    let r = TestRepo::init();
    r.write("target.bin", vec![1u8; 1000]);
    symlink("target.bin", r.path("link.bin")).unwrap();
    r.ok(&["add", "link.bin", "target.bin"]);
    r.commit("both");
    assert!(r.json(&["status", "--json"])["unstaged"].as_array().unwrap().is_empty());
    r.ok(&["rm", "link.bin"]);
    assert!(!r.path("link.bin").exists() && r.path("target.bin").exists());
    r.commit("link gone");
    assert!(r.ok(&["status"]).contains("nothing to commit"));
}

#[test]
fn checkout_never_writes_through_a_symlinked_directory() {
    let r = TestRepo::init();
    r.write("sub/f.txt", "inside\n");
    let c = r.add_commit(&["sub/f.txt"], "sub");
    let outside = r.scratch("outside");
    std::fs::remove_dir_all(r.path("sub")).unwrap();
    symlink(&outside, r.path("sub")).unwrap();
    let out = r.run(&["checkout", &c, "--", "sub/f.txt"]);
    assert!(!out.success(), "{}", out.describe());
    assert!(!outside.join("f.txt").exists(), "checkout wrote outside the work tree");
    r.ok(&["checkout", "-f", &c]);
    assert!(!outside.join("f.txt").exists(), "checkout -f wrote outside the work tree");
    assert!(std::fs::symlink_metadata(r.path("sub")).unwrap().is_dir());
    assert_eq!(r.read("sub/f.txt"), b"inside\n");
}
