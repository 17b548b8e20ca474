//! `mlv config`: dotted keys read and written in `.mlv/config`, checked by the rules that load
//! the file, tokens never shown.

use crate::common::{TestRepo, fixtures};

fn config_text(r: &TestRepo) -> String {
    std::fs::read_to_string(r.path(".mlv/config")).unwrap()
}

#[test]
fn config_set_get_and_unset_round_trip() {
    let r = TestRepo::init();
    assert_eq!(r.ok(&["config", "--get", "delta.zstd_level"]).trim(), "1", "the default is shown");
    r.ok(&["config", "--set", "delta.zstd_level", "3"]);
    r.ok(&["config", "--set", "delta.discover", "false"]);
    r.ok(&["config", "--set", "user.email", "ada@example.com"]);
    assert_eq!(r.ok(&["config", "--get", "delta.zstd_level"]).trim(), "3");
    assert_eq!(r.json(&["config", "--get", "delta.discover", "--json"])["value"], false);
    let text = config_text(&r);
    assert!(text.contains("zstd_level = 3") && text.contains("email = \"ada@example.com\""), "{text}");
    let list = r.ok(&["config", "--list"]);
    for line in ["delta.zstd_level=3", "delta.discover=false", "user.email=ada@example.com", "gc.auto_packs=50"] {
        assert!(list.lines().any(|l| l == line), "{line} not in:\n{list}");
    }
    assert_eq!(r.json(&["config", "--json"])["delta.zstd_level"], 3, "--list is the default");
    r.ok(&["config", "--unset", "delta.zstd_level"]);
    assert_eq!(r.ok(&["config", "--get", "delta.zstd_level"]).trim(), "1", "unset brings the default back");
    r.ok(&["config", "--unset", "user.email"]);
    let out = r.fail(&["config", "--get", "user.email"]);
    assert!(out.stderr.contains("user.email is not set"), "{}", out.describe());
    r.ok(&["status"]);
}

#[test]
fn config_rejects_invalid_values_naming_the_key_and_what_is_allowed() {
    let r = TestRepo::init();
    let before = config_text(&r);
    for (args, needles) in [
        (&["config", "--set", "delta.zstd_level", "40"][..], &["delta.zstd_level", "from 1 to 22"][..]),
        (&["config", "--set", "delta.max_chain", "-1"], &["delta.max_chain", "whole number"]),
        (&["config", "--set", "pack.chunk_elems", "0"], &["pack.chunk_elems", "from 1 to 8388608"]),
        (&["config", "--set", "delta.discover", "maybe"], &["delta.discover", "true or false"]),
        (&["config", "--set", "core.format", "2"], &["core.format", "written by mlv"]),
        (&["config", "--set", "no.such.key", "1"], &["unknown configuration key", "no.such.key"]),
        (&["config", "--set", "branch.main.merge", "main"], &["branch.main.merge"]),
        (&["config", "--set", "remote.origin.token", "x"], &["no remote \"origin\"", "mlv remote add origin"]),
        (&["config", "--set", "remote.bad/name.url", "/tmp"], &["bad/name"]),
        (&["config", "--unset", "core.bare"], &["written by mlv"]),
        (&["config", "--get", "delta.nonsense"], &["unknown configuration key"]),
    ] {
        let out = r.fail(args);
        for n in needles {
            assert!(out.stderr.contains(n), "{n:?} missing:\n{}", out.describe());
        }
        assert_eq!(config_text(&r), before, "a refused change modified the file:\n{}", out.describe());
    }
    let out = r.fail(&["config", "--get", "nosuch"]);
    assert!(out.stderr.contains("hint:") && out.stderr.contains("mlv config --help"), "{}", out.describe());
}

#[test]
fn config_never_prints_tokens() {
    let r = TestRepo::init();
    r.ok(&["remote", "add", "origin", "http://127.0.0.1:1/models"]);
    r.ok(&["config", "--set", "remote.origin.token", "s3cr3t-t0ken"]);
    assert!(config_text(&r).contains("s3cr3t-t0ken"), "the token was not saved");
    for args in
        [&["config", "--list"][..], &["config", "--list", "--json"], &["config", "--get", "remote.origin.token"]]
    {
        let out = r.ok(args);
        assert!(!out.contains("s3cr3t"), "`mlv {}` printed the token:\n{out}", args.join(" "));
        assert!(out.contains("<set>"), "`mlv {}` should say the token is set:\n{out}", args.join(" "));
    }
    let out = r.ok(&["config", "--set", "remote.origin.token", "other", "--json"]);
    assert!(!out.contains("other") && out.contains("<set>"), "{out}");
}

#[test]
fn config_upstreams_and_remotes_follow_the_file_rules() {
    let r = TestRepo::init();
    r.ok(&["config", "--set", "remote.origin.url", "http://127.0.0.1:1/models"]);
    assert!(r.ok(&["remote", "-v"]).contains("http://127.0.0.1:1/models"));
    let out = r.fail(&["config", "--set", "branch.main.remote", "nosuch"]);
    assert!(out.stderr.contains("no remote named \"nosuch\""), "{}", out.describe());
    r.ok(&["config", "--set", "branch.main.remote", "origin"]);
    assert_eq!(
        r.ok(&["config", "--get", "branch.main.merge"]).trim(),
        "refs/heads/main",
        "an upstream needs both keys"
    );
    r.ok(&["config", "--unset", "branch.main.remote"]);
    r.fail(&["config", "--get", "branch.main.merge"]);
    let out = r.fail(&["config", "--unset", "remote.origin.url"]);
    assert!(out.stderr.contains("mlv remote remove origin"), "{}", out.describe());
}

#[test]
fn configured_identity_and_bases_are_used_by_commands() {
    let r = TestRepo::init();
    let (base, ft) = (r.scratch("base"), r.scratch("ft"));
    fixtures::write_finetune(&ft, &fixtures::write_base(&base));
    r.copy_in(&base);
    r.add_commit(&["."], "base");
    r.ok(&["tag", "base-model"]);
    // A path with dots in it: the key is everything after `delta.bases.`.
    r.ok(&["config", "--set", "delta.bases.model.safetensors", "base-model"]);
    assert_eq!(r.ok(&["config", "--get", "delta.bases.model.safetensors"]).trim(), "base-model");
    r.ok(&["switch", "--orphan", "ft"]);
    r.copy_in(&ft);
    let report = r.json(&["add", "--json", "."]);
    assert!(report["tensors_delta"].as_u64().unwrap() > 0, "delta.bases should give delta bases: {report}");
    r.ok(&["config", "--set", "user.name", "Ada Lovelace"]);
    r.ok(&["config", "--set", "user.email", "ada@example.com"]);
    let mut cmd = r.cmd(&["commit", "-m", "fine-tune"]);
    cmd.env_remove("MLV_AUTHOR_NAME").env_remove("MLV_AUTHOR_EMAIL");
    let out = TestRepo::exec(&mut cmd, "mlv commit (no MLV_AUTHOR_*)".into());
    assert!(out.success(), "{}", out.describe());
    let log = r.json(&["log", "--json", "-n", "1"]);
    assert_eq!(log[0]["author"]["name"], "Ada Lovelace", "{log}");
    assert_eq!(log[0]["author"]["email"], "ada@example.com", "{log}");
}
