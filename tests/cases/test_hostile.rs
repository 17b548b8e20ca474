//! Invalid safetensors files are refused with the file name and a byte offset, and a refused
//! `add` leaves the repository exactly as it was.

use crate::common::st::{self, T};
use crate::common::{TestRepo, byte_offset_in};

/// Where the error message must point.
enum At {
    Exactly(u64),
    Within(u64, u64),
}

/// A repository with one commit, so `.mlv` already holds packs, refs and an index.
fn repo_with_history() -> TestRepo {
    let r = TestRepo::init();
    r.write("config.json", "{}\n");
    st::write(&r.path("good.safetensors"), &[T::f32("w", &[4], &[1.0, 2.0, 3.0, 4.0])], None);
    r.add_commit(&["."], "initial");
    r
}

/// `mlv add NAME` must fail naming the file and the byte offset, changing nothing in `.mlv`.
fn assert_add_rejects(name: &str, bytes: &[u8], at: At) {
    let r = repo_with_history();
    r.write(name, bytes);
    let before = r.mlv_snapshot();
    let out = r.fail(&["add", name]);
    assert!(out.stderr.contains(name), "the error must name the file:\n{}", out.describe());
    let offset =
        byte_offset_in(&out.stderr).unwrap_or_else(|| panic!("the error must give a byte offset:\n{}", out.describe()));
    match at {
        At::Exactly(want) => assert_eq!(offset, want, "wrong byte offset:\n{}", out.describe()),
        At::Within(lo, hi) => {
            assert!((lo..=hi).contains(&offset), "byte offset {offset} not in {lo}..={hi}:\n{}", out.describe())
        }
    }
    assert!(out.stderr.contains("hint:"), "a refused file deserves a hint:\n{}", out.describe());
    assert_eq!(r.mlv_snapshot(), before, ".mlv changed although add failed");
    // Adding the whole directory fails the same way, and also leaves no trace.
    let out = r.fail(&["add", "."]);
    assert!(out.stderr.contains(name), "{}", out.describe());
    assert_eq!(r.mlv_snapshot(), before, ".mlv changed although `add .` failed");
    let out = r.fail(&["commit", "-m", "x"]);
    assert!(out.stderr.contains("nothing to commit"), "{}", out.describe());
}

/// A valid two-tensor file: `a` F32 [4,4] at data bytes 0..64, `b` F32 [8] at 64..96.
fn valid() -> (Vec<u8>, u64) {
    let bytes = st::serialize(&[T::f32("a", &[4, 4], &[0.5; 16]), T::f32("b", &[8], &[0.25; 8])], None);
    let data_start = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap());
    (bytes, data_start)
}

#[test]
fn truncated_file_is_refused() {
    let (bytes, data_start) = valid();
    // The data region ends 10 bytes early: tensor `b` (data bytes 64..96) runs past it.
    assert_add_rejects("truncated.safetensors", &bytes[..bytes.len() - 10], At::Exactly(data_start + 64));
}

#[test]
fn file_shorter_than_the_length_prefix_is_refused() {
    assert_add_rejects("tiny.safetensors", &[1, 0, 0], At::Exactly(0));
}

#[test]
fn empty_safetensors_file_is_refused() {
    assert_add_rejects("empty.safetensors", &[], At::Exactly(0));
}

#[test]
fn header_length_past_end_of_file_is_refused() {
    let (mut bytes, _) = valid();
    let len = bytes.len() as u64;
    bytes[..8].copy_from_slice(&(len + 1000).to_le_bytes());
    assert_add_rejects("header_past_end.safetensors", &bytes, At::Exactly(0));
}

#[test]
fn header_cut_in_the_middle_is_refused() {
    let (bytes, data_start) = valid();
    assert_add_rejects("cut_header.safetensors", &bytes[..(data_start / 2) as usize], At::Exactly(0));
}

#[test]
fn huge_header_length_is_refused() {
    let (mut bytes, _) = valid();
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_add_rejects("huge_header.safetensors", &bytes, At::Exactly(0));
}

#[test]
fn overlapping_data_offsets_are_refused() {
    let header = br#"{"a":{"dtype":"F32","shape":[4,4],"data_offsets":[0,64]},"b":{"dtype":"F32","shape":[8],"data_offsets":[32,64]}}"#;
    let data_start = 8 + header.len() as u64;
    // `b` starts inside `a`: the error points at b's first byte.
    assert_add_rejects("overlap.safetensors", &st::raw(header, &[0u8; 64]), At::Exactly(data_start + 32));
}

#[test]
fn shape_product_overflowing_u64_is_refused() {
    let header = br#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,2],"data_offsets":[0,64]}}"#;
    let end = 8 + header.len() as u64;
    assert_add_rejects("overflow.safetensors", &st::raw(header, &[0u8; 64]), At::Within(8, end));
}

#[test]
fn byte_size_overflowing_u64_is_refused() {
    // 2^62 elements fit in u64, but 2^62 * 4 bytes do not.
    let header = br#"{"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,64]}}"#;
    let end = 8 + header.len() as u64;
    assert_add_rejects("byte_overflow.safetensors", &st::raw(header, &[0u8; 64]), At::Within(8, end));
}

#[test]
fn shape_not_matching_offsets_is_refused() {
    let header = br#"{"a":{"dtype":"F32","shape":[4,4],"data_offsets":[0,60]}}"#;
    let data_start = 8 + header.len() as u64;
    assert_add_rejects("mismatch.safetensors", &st::raw(header, &[0u8; 60]), At::Within(8, data_start));
}

#[test]
fn non_utf8_header_is_refused() {
    let mut header = br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"#.to_vec();
    let bad_at = 8 + header.len() as u64 + 1;
    header.extend_from_slice(b"\"\xff\xfe\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,16]}}");
    assert_add_rejects("non_utf8.safetensors", &st::raw(&header, &[0u8; 16]), At::Exactly(bad_at));
}

#[test]
fn invalid_json_header_is_refused() {
    let header = br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},, "b": }"#;
    let end = 8 + header.len() as u64;
    assert_add_rejects("bad_json.safetensors", &st::raw(header, &[0u8; 16]), At::Within(8, end));
}

#[test]
fn json_header_that_is_not_an_object_is_refused() {
    let header = b"[1, 2, 3]  ";
    assert_add_rejects("array.safetensors", &st::raw(header, &[]), At::Within(0, 8 + header.len() as u64));
}

#[test]
fn unknown_dtype_is_refused() {
    let header = br#"{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}"#;
    assert_add_rejects("f128.safetensors", &st::raw(header, &[0u8; 16]), At::Within(8, 8 + header.len() as u64));
}

#[test]
fn non_string_metadata_is_refused() {
    let header = br#"{"__metadata__":{"epoch":3},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#;
    assert_add_rejects("meta.safetensors", &st::raw(header, &[1, 2]), At::Within(8, 8 + header.len() as u64));
}

#[test]
fn a_bad_file_among_good_ones_stages_nothing() {
    let r = repo_with_history();
    let (bytes, _) = valid();
    st::write(&r.path("models/fine.safetensors"), &[T::f32("x", &[64], &[0.125; 64])], None);
    r.write("models/notes.txt", "new notes\n");
    r.write("models/zz_broken.safetensors", &bytes[..bytes.len() - 1]);
    let before = r.mlv_snapshot();
    let out = r.fail(&["add", "models"]);
    assert!(out.stderr.contains("zz_broken.safetensors"), "{}", out.describe());
    assert_eq!(r.mlv_snapshot(), before, "a failed add must not leave packs or index changes behind");
    let status = r.json(&["status", "--json"]);
    assert!(status["staged"].as_array().unwrap().is_empty(), "nothing may be staged: {status}");
}

#[test]
fn commit_all_with_a_corrupted_tracked_file_fails_and_changes_nothing() {
    let r = repo_with_history();
    let (bytes, _) = valid();
    r.write("good.safetensors", &bytes[..20]);
    let before = r.mlv_snapshot();
    let head = r.rev_id("HEAD");
    let out = r.fail(&["commit", "-a", "-m", "should fail"]);
    assert!(out.stderr.contains("good.safetensors"), "{}", out.describe());
    assert_eq!(r.mlv_snapshot(), before, ".mlv changed although commit -a failed");
    assert_eq!(r.rev_id("HEAD"), head);
}

#[test]
fn status_and_diff_with_a_corrupted_tracked_file_do_not_panic() {
    let r = repo_with_history();
    r.write("good.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all");
    for args in [&["status"][..], &["status", "--json"], &["diff"], &["diff", "--json"], &["commit", "-a", "-m", "x"]] {
        let out = r.run(args);
        if !out.success() {
            assert!(out.stderr.contains("good.safetensors"), "a failure must name the file:\n{}", out.describe());
        }
    }
}
