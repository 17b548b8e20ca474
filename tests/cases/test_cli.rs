//! The command line as a new user meets it: help with examples, shell completions, man pages,
//! singular and plural counts, and messages for empty repositories, tags and detached HEADs.

use crate::common::{TestRepo, array};

/// A repository with `a.txt` and `b.txt` committed; returns it and the commit id.
fn two_files() -> (TestRepo, String) {
    let r = TestRepo::init();
    r.write("a.txt", "a\n");
    r.write("b.txt", "b\n");
    let c = r.add_commit(&["a.txt", "b.txt"], "two files");
    (r, c)
}

#[test]
fn help_of_the_main_commands_has_examples() {
    let r = TestRepo::uninit();
    for cmd in ["add", "commit", "status", "diff", "du", "log", "checkout", "switch", "push", "fetch", "pull", "clone"]
    {
        let help = r.ok(&[cmd, "--help"]);
        assert!(help.contains("Examples:"), "`mlv {cmd} --help` has no examples:\n{help}");
        assert!(help.contains(&format!("mlv {cmd}")), "`mlv {cmd} --help` shows no use of it:\n{help}");
    }
    let diff = r.ok(&["diff", "--help"]);
    for term in ["work tree", "HEAD", "low mantissa", "rounded", "n/a"] {
        assert!(diff.contains(term), "diff --help does not explain {term:?}:\n{diff}");
    }
    let du = r.ok(&["du", "--help"]);
    for term in ["duplicate", "delta", "standalone", "raw", "grouped", "bitx-xor", "bitx-diff-ctx"] {
        assert!(du.contains(term), "du --help does not explain {term:?}:\n{du}");
    }
    // The long description of a command is shown, not only its one-line summary.
    assert!(r.ok(&["add", "--help"]).contains(".mlvignore"));
}

#[test]
fn completions_are_printed_for_each_shell() {
    let r = TestRepo::uninit();
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let script = r.ok(&["completions", shell]);
        assert!(
            script.contains("mlv") && script.contains("checkout") && script.contains("config"),
            "{shell}:\n{script}"
        );
    }
    r.fail(&["completions", "tcsh"]);
}

#[test]
fn man_writes_a_page_for_mlv_and_every_command() {
    let r = TestRepo::uninit();
    let dir = r.beside("man1");
    let out = r.ok(&["man", dir.to_str().unwrap()]);
    for page in ["mlv.1", "mlv-add.1", "mlv-diff.1", "mlv-config.1", "mlv-remote.1", "mlv-remote-add.1"] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}; {out}"));
        assert!(text.contains(".TH"), "{page} is not a man page:\n{text}");
    }
    assert!(out.contains("man pages"), "{out}");
    let page = r.ok(&["man"]);
    assert!(page.contains(".TH mlv") && page.contains("checkout"), "{page}");
}

#[test]
fn counts_are_singular_for_one() {
    let r = TestRepo::init();
    r.write("a.txt", "a\n");
    let out = r.ok(&["add", "a.txt"]);
    assert!(out.contains("staged 1 file,"), "{out}");
    let out = r.ok(&["commit", "-m", "one"]);
    assert!(out.contains(" 1 file,"), "{out}");
    r.write("a.txt", "changed\n");
    let out = r.ok(&["commit", "-am", "two"]);
    assert!(out.contains("for 1 changed file\n"), "{out}");
    r.write("a.txt", "scribbled\n");
    let out = r.ok(&["checkout", "-f", "HEAD"]);
    assert!(out.contains("1 file written"), "{out}");
    let out = r.ok(&["fsck"]);
    assert!(!out.contains("(s)"), "{out}");
}

#[test]
fn commands_in_an_empty_repository_say_no_commits_yet() {
    let r = TestRepo::init();
    for args in [&["log"][..], &["show"], &["du"], &["diff"], &["tag", "v1"], &["branch", "b"], &["log", "main"]] {
        let out = r.fail(args);
        assert!(out.stderr.contains("no commits yet"), "{}", out.describe());
        assert!(!out.stderr.contains("unknown revision"), "{}", out.describe());
        assert!(out.stderr.contains("hint:") && out.stderr.contains("mlv commit"), "{}", out.describe());
    }
}

#[test]
fn switch_to_a_tag_or_commit_suggests_checkout() {
    let (r, c) = two_files();
    r.ok(&["tag", "v1"]);
    let out = r.fail(&["switch", "v1"]);
    assert!(out.stderr.contains("\"v1\" is a tag, not a branch"), "{}", out.describe());
    assert!(out.stderr.contains("hint:") && out.stderr.contains("mlv checkout v1"), "{}", out.describe());
    let out = r.fail(&["switch", &c[..12]]);
    assert!(out.stderr.contains("is a commit, not a branch"), "{}", out.describe());
    let out = r.fail(&["switch", "nosuch"]);
    assert!(out.stderr.contains("unknown revision"), "{}", out.describe());
}

#[test]
fn checkout_of_a_commit_says_head_is_detached() {
    let (r, c) = two_files();
    r.ok(&["tag", "v1"]);
    let out = r.ok(&["checkout", "v1"]);
    assert!(out.contains(&format!("HEAD is now detached at {}", &c[..12])), "{out}");
    assert!(out.contains("no branch") && out.contains("mlv switch -c"), "{out}");
    let out = r.ok(&["checkout", "main"]);
    assert!(out.contains("Switched to branch 'main'") && !out.contains("detached"), "{out}");
}

#[test]
fn log_shows_branch_and_tag_names_next_to_commits() {
    let r = TestRepo::init();
    let mut ids = Vec::new();
    for i in 1..=3 {
        r.write("n.txt", format!("{i}\n"));
        ids.push(r.add_commit(&["n.txt"], &format!("commit {i}")));
    }
    r.ok(&["tag", "-m", "release", "v1", &ids[0]]);
    r.ok(&["branch", "exp", &ids[1]]);
    let lines: Vec<String> = r.ok(&["log", "--oneline"]).lines().map(String::from).collect();
    assert_eq!(
        lines,
        [
            format!("{} (HEAD -> main) commit 3", &ids[2][..12]),
            format!("{} (exp) commit 2", &ids[1][..12]),
            format!("{} (tag: v1) commit 1", &ids[0][..12]),
        ]
    );
    assert!(r.ok(&["log", "-n", "1"]).starts_with(&format!("commit {} (HEAD -> main)\n", ids[2])));
    let log = r.json(&["log", "--json"]);
    assert_eq!(log[1]["refs"], serde_json::json!(["exp"]), "{log}");
    r.ok(&["checkout", &ids[1]]);
    let v = r.json(&["log", "--json", "-n", "1"]);
    assert_eq!(v[0]["refs"], serde_json::json!(["HEAD", "exp"]), "{v}");
}

#[test]
fn checkout_force_rewrites_only_files_that_differ() {
    use std::os::unix::fs::MetadataExt;
    let (r, _) = two_files();
    r.write("a.txt", "scribbled\n");
    // Same content, new mtime: a stat change alone is no reason to rewrite.
    r.write("b.txt", "b\n");
    let inode = std::fs::metadata(r.path("b.txt")).unwrap().ino();
    let v = r.json(&["checkout", "-f", "HEAD", "--json"]);
    assert_eq!(v["written"], serde_json::json!(["a.txt"]), "{v}");
    assert_eq!(r.read("a.txt"), b"a\n");
    assert_eq!(std::fs::metadata(r.path("b.txt")).unwrap().ino(), inode, "b.txt was rewritten");
    assert!(r.json(&["status", "--json"])["unstaged"].as_array().unwrap().is_empty());
    let v = r.json(&["checkout", "-f", "HEAD", "--json"]);
    assert!(array(&v["written"], "written").is_empty(), "nothing differs, nothing is written: {v}");
}

#[test]
fn checkout_trusts_the_index_for_a_file_its_stat_shows_holds_other_content() {
    let (r, first) = two_files();
    r.write("a.txt", "A\n");
    r.add_commit(&["a.txt"], "same size");
    r.ok(&["checkout", &first]);
    // The bytes of the next commit, written behind the index's back with the stat it knows:
    // rather than read every byte of a file the index vouches for, checkout rewrites it.
    let file = std::fs::OpenOptions::new().write(true).open(r.path("a.txt")).unwrap();
    let mtime = file.metadata().unwrap().modified().unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"A\n", 0).unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    let v = r.json(&["checkout", "main", "--json"]);
    assert_eq!(v["written"], serde_json::json!(["a.txt"]), "{v}");
    assert_eq!(r.read("a.txt"), b"A\n");
}

#[test]
fn add_of_an_empty_directory_says_nothing_was_added() {
    let (r, _) = two_files();
    std::fs::create_dir_all(r.path("empty/sub")).unwrap();
    let out = r.ok(&["add", "empty"]);
    assert!(out.contains("nothing added") && out.contains("no files under empty"), "{out}");
    let out = r.ok(&["add", "a.txt"]);
    assert!(out.contains("nothing added") && out.contains("1 file under a.txt is already staged"), "{out}");
}
