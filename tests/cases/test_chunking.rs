//! Large files that are not safetensors are cut into content-defined chunks: an edit stores
//! (and sends) about one chunk, not the whole file again. Their content is noise, which
//! nothing compresses, so sizes measure what was stored.

use crate::common::TestRepo;
use crate::common::st::Rng;

#[test]
fn a_one_byte_edit_and_an_insertion_store_about_one_chunk_each() {
    let r = TestRepo::init();
    let v1 = Rng::new(1).bytes(8 << 20);
    r.write("optimizer.pt", &v1);
    let c1 = r.add_commit(&["optimizer.pt"], "v1");
    let mut v2 = v1.clone();
    v2[3 << 20] ^= 1;
    r.write("optimizer.pt", &v2);
    let before = r.mlv_size();
    let c2 = r.add_commit(&["optimizer.pt"], "one byte");
    let grew = r.mlv_size() - before;
    assert!(grew < 600 << 10, "a one-byte edit of 8 MiB stored {grew} bytes");
    let mut v3 = v2.clone();
    v3.splice(4 << 20..4 << 20, Rng::new(9).bytes(1024));
    r.write("optimizer.pt", &v3);
    let before = r.mlv_size();
    let c3 = r.add_commit(&["optimizer.pt"], "1 KiB inserted");
    let grew = r.mlv_size() - before;
    assert!(grew < 600 << 10, "a 1 KiB insertion into 8 MiB stored {grew} bytes");
    assert!(r.ok(&["status"]).contains("nothing to commit"));
    for (c, bytes) in [(&c1, &v1), (&c2, &v2), (&c3, &v3)] {
        r.ok(&["checkout", "-f", c]);
        assert_eq!(&r.read("optimizer.pt"), bytes, "commit {c}");
    }
    r.ok(&["fsck"]);
}

#[test]
fn a_push_after_an_edit_sends_only_the_changed_chunks() {
    let r = TestRepo::init();
    let v1 = Rng::new(2).bytes(6 << 20);
    r.write("data.bin", &v1);
    r.add_commit(&["data.bin"], "v1");
    let srv = r.beside("srv");
    r.ok(&["init", "--bare", srv.to_str().unwrap()]);
    r.ok(&["push", srv.to_str().unwrap(), "main"]);
    let mut v2 = v1;
    v2[1 << 20] ^= 0x55;
    r.write("data.bin", &v2);
    r.add_commit(&["data.bin"], "v2");
    let v = r.json(&["push", srv.to_str().unwrap(), "main", "--json"]);
    let sent = v["stats"]["wire_bytes"].as_u64().unwrap();
    assert!(sent < 600 << 10, "sent {sent} bytes for a one-byte edit");
    let b = r.beside("b");
    r.ok_at(r.root.parent().unwrap(), &["clone", srv.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(std::fs::read(b.join("data.bin")).unwrap(), v2);
}

#[test]
fn small_files_stay_single_blobs_and_identical_chunks_are_stored_once() {
    let r = TestRepo::init();
    let big = Rng::new(3).bytes(2 << 20);
    r.write("a.bin", &big);
    r.write("copy/a.bin", &big);
    r.write("small.txt", "hello\n");
    let before = r.mlv_size();
    r.add_commit(&["."], "dups");
    let grew = r.mlv_size() - before;
    assert!(grew < (2 << 20) + (200 << 10), "two copies of 2 MiB stored {grew} bytes");
    let show = r.json(&["show", "--json"]);
    assert!(show.to_string().contains("small.txt"), "{show}");
}
