//! What a killed process, a stale lock or a concurrent command leaves behind never needs
//! hand repair.

use std::time::{Duration, Instant};

use crate::common::TestRepo;

#[test]
fn a_lock_left_by_a_killed_process_is_taken_over_at_once_with_a_note() {
    let r = TestRepo::init();
    r.write("a.txt", "a\n");
    std::fs::write(r.root.join(".mlv/index.lock"), "4194000\n").unwrap();
    let start = Instant::now();
    let out = r.run(&["add", "a.txt"]);
    assert!(out.success(), "{}", out.describe());
    assert!(start.elapsed() < Duration::from_secs(5), "waited for a dead process's lock");
    assert!(out.stderr.contains("note: took over") && out.stderr.contains("4194000"), "{}", out.describe());
    assert!(!r.root.join(".mlv/index.lock").exists());
    r.commit("a");
}

#[test]
fn a_commit_killed_at_any_point_leaves_a_repository_the_next_commit_can_use() {
    let r = TestRepo::init();
    r.write("a.txt", "a\n");
    r.add_commit(&["a.txt"], "first");
    let big: Vec<u8> = (0..4_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    for trial in 0..8u64 {
        r.write("big.bin", &big[trial as usize..]);
        let mut child = r
            .std_cmd_in(&r.root, ["commit", "-a", "-m", "killed"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(2 + 3 * trial));
        child.kill().ok();
        child.wait().unwrap();
        let start = Instant::now();
        r.ok(&["add", "big.bin"]);
        assert!(start.elapsed() < Duration::from_secs(5), "the next command waited for a lock");
        r.ok(&["status"]);
        r.ok(&["log", "-n", "1"]);
    }
    r.write("b.txt", "b\n");
    r.add_commit(&["b.txt"], "after the kills");
    r.clear_worktree();
    r.ok(&["checkout", "-f", "HEAD"]);
    assert_eq!(r.read("big.bin"), &big[7..]);
    assert_eq!(r.read("a.txt"), b"a\n");
}

#[test]
fn deleting_an_unmerged_branch_needs_capital_d_and_says_what_it_pointed_at() {
    let r = TestRepo::init();
    r.write("a.txt", "a\n");
    r.add_commit(&["a.txt"], "first");
    r.ok(&["switch", "-c", "dev"]);
    r.write("b.txt", "b\n");
    let dev = r.add_commit(&["b.txt"], "only on dev");
    r.ok(&["switch", "main"]);
    let out = r.fail(&["branch", "-d", "dev"]);
    assert!(out.stderr.contains("not fully merged") && out.stderr.contains("-D dev"), "{}", out.describe());
    assert_eq!(r.rev_id("dev"), dev);
    let out = r.ok(&["branch", "-D", "dev"]);
    assert_eq!(out.trim(), format!("Deleted branch dev (was {})", &dev[..12]));
}

#[test]
fn mlv_refuses_to_track_its_own_directory() {
    let r = TestRepo::init();
    r.write("a.txt", "a\n");
    r.add_commit(&["a.txt"], "first");
    for path in [".mlv", ".mlv/objects", "./.mlv/../.mlv"] {
        let out = r.fail(&["add", path]);
        assert!(out.stderr.contains("refusing to add"), "{}", out.describe());
    }
    r.ok(&["add", "."]);
    r.ok(&["status"]);
    r.ok(&["log"]);
}

#[test]
fn a_truncated_safetensors_file_shows_as_modified_with_the_way_back() {
    let (r, _base, ft) = crate::common::fixtures::family_repo();
    let path = r.path("model.safetensors");
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let out = r.ok(&["status"]);
    assert!(out.contains("modified:") && out.contains("not valid safetensors"), "{out}");
    assert!(out.contains("mlv checkout HEAD -- model.safetensors"), "{out}");
    let v = r.json(&["status", "--json"]);
    assert!(v["unstaged"][0]["problem"].as_str().is_some_and(|p| p.contains("not valid")), "{v}");
    let out = r.fail(&["commit", "-a", "-m", "broken"]);
    assert!(out.stderr.contains("checkout HEAD --"), "{}", out.describe());
    r.ok(&["checkout", "HEAD", "--", "model.safetensors"]);
    r.assert_worktree_eq(&ft);
}

/// The largest pack of a repository (it holds the tensors) and its index.
fn largest_pack(mlv_dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let pack = std::fs::read_dir(mlv_dir.join("objects/pack"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let idx = pack.with_extension("idx");
    (pack, idx)
}

/// Offsets of the first entry's parts: (entry start, first chunk's header, its checksum field).
fn first_entry_offsets(pack: &[u8]) -> (usize, usize, usize) {
    let entry = 16;
    let ndim = pack[entry + 34] as usize;
    let count_end = entry + 1 + 32 + 1 + 1 + 8 * ndim + 8 + 8 + 4;
    let chunk = count_end + 4;
    (entry, chunk, chunk + 6)
}

#[test]
fn fsck_finds_a_flipped_byte_in_every_part_of_a_pack_and_checkout_never_writes_it() {
    let (r, _base, ft) = crate::common::fixtures::family_repo();
    let clean = r.json(&["fsck", "--json"]);
    assert_eq!(clean["problems"].as_array().map(Vec::len), Some(0), "{clean}");
    // Checkouts rewrite the staging index's stat data; everything else must come back as it was.
    let snapshot = || {
        let mut s = r.mlv_snapshot();
        s.remove("index");
        s
    };
    let pristine = snapshot();
    let (pack_path, idx_path) = largest_pack(&r.root.join(".mlv"));
    let pack = std::fs::read(&pack_path).unwrap();
    let idx = std::fs::read(&idx_path).unwrap();
    let (entry, chunk, checksum) = first_entry_offsets(&pack);
    let cases: Vec<(&str, &std::path::Path, usize)> = vec![
        ("pack header", &pack_path, 3),
        ("entry framing", &pack_path, entry + 5),
        ("chunk header", &pack_path, chunk),
        ("chunk checksum", &pack_path, checksum),
        ("payload", &pack_path, pack.len() / 2),
        ("trailer", &pack_path, pack.len() - 1),
        ("index", &idx_path, idx.len() / 2),
    ];
    for (class, file, at) in cases {
        let original = std::fs::read(file).unwrap();
        let mut bad = original.clone();
        bad[at] ^= 0x20;
        std::fs::write(file, &bad).unwrap();
        let out = r.run(&["fsck", "--json"]);
        assert_eq!(out.code, Some(1), "{class}: fsck passed a flipped byte\n{}", out.describe());
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let problems = v["problems"].as_array().unwrap();
        assert!(!problems.is_empty(), "{class}: {v}");
        let named = |p: &serde_json::Value| p["file"].as_str().is_some_and(|f| f.contains("pack-"));
        assert!(problems.iter().any(named), "{class}: no problem names the pack or index file: {v}");
        if class != "index" && class != "pack header" {
            assert!(problems.iter().any(|p| p["offset"].is_u64()), "{class}: no offset given: {v}");
        }
        // Whatever is damaged, checkout either refuses or writes the right bytes.
        r.clear_worktree();
        let co = r.run(&["checkout", "-f", "HEAD"]);
        if co.success() {
            r.assert_worktree_eq(&ft);
        } else {
            assert!(
                !r.exists("model.safetensors")
                    || r.read("model.safetensors") == std::fs::read(ft.join("model.safetensors")).unwrap()
            );
        }
        std::fs::write(file, &original).unwrap();
    }
    assert_eq!(snapshot(), pristine);
    r.ok(&["fsck"]);
}

/// fsck decodes objects in batches; one damaged object must still be named on its own, with
/// the objects that depend on it, and every other object counted as checked.
#[test]
fn fsck_names_each_damaged_object_and_checks_all_the_others() {
    let (r, _base, _ft) = crate::common::fixtures::family_repo();
    let clean = r.json(&["fsck", "--json"]);
    let total = clean["objects"].as_u64().unwrap();
    let (pack_path, _) = largest_pack(&r.root.join(".mlv"));
    let mut pack = std::fs::read(&pack_path).unwrap();
    let (entry, _, checksum) = first_entry_offsets(&pack);
    let damaged: String = pack[entry + 1..entry + 33].iter().map(|b| format!("{b:02x}")).collect();
    pack[checksum] ^= 0x20;
    std::fs::write(&pack_path, &pack).unwrap();

    let out = r.run(&["fsck", "--json"]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let named: std::collections::BTreeSet<&str> =
        v["problems"].as_array().unwrap().iter().filter_map(|p| p["object"].as_str()).collect();
    assert!(named.contains(damaged.as_str()), "the damaged object {damaged} is not named: {v}");
    assert!(named.len() < total as usize / 2, "one damaged object failed most of the others: {v}");
    assert_eq!(v["objects"].as_u64().unwrap() + named.len() as u64, total, "objects not checked or counted twice: {v}");
}

#[test]
fn fsck_checks_refs_bare_repositories_and_remotes() {
    let (r, _base, _ft) = crate::common::fixtures::family_repo();
    let srv = r.beside("srv");
    r.ok(&["init", "--bare", srv.to_str().unwrap()]);
    r.ok(&["remote", "add", "origin", srv.to_str().unwrap()]);
    r.ok(&["push", "origin", "main", "--tags"]);
    let out = r.ok_at(&srv, &["fsck"]);
    assert!(out.contains("no problems"), "{out}");
    let out = r.ok(&["fsck", "--remote", "origin"]);
    assert!(out.contains("no problems"), "{out}");
    std::fs::write(srv.join("refs/heads/ghost"), format!("{}\n", "ab".repeat(32))).unwrap();
    let out = r.run(&["fsck", "--remote", "origin"]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(out.stdout.contains("refs/heads/ghost"), "{}", out.describe());
}

/// Peak resident memory of `mlv ARGS` run in `dir`, in bytes, as the kernel's high-water mark
/// of the process (which, as `/usr/bin/time` shows, counts the pages of mapped files it
/// touched), read until it exits. Not `wait4`'s usage: that counts the memory of this test
/// process too, which the child shares until it starts `mlv`.
fn peak_rss(r: &TestRepo, dir: &std::path::Path, args: &[&str]) -> u64 {
    let mut child = r.std_cmd_in(dir, args).stdout(std::process::Stdio::null()).spawn().unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        let hwm = std::fs::read_to_string(&status).ok().and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        });
        peak = peak.max(hwm.unwrap_or(0) * 1024);
        if let Some(exit) = child.try_wait().unwrap() {
            assert!(exit.success(), "mlv {args:?} failed");
            return peak;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn fsck_and_clone_keep_little_of_a_large_pack_in_memory() {
    use crate::common::st;
    const LEN: usize = 192 << 20;
    let r = TestRepo::init();
    // Noise, so the pack is as large as the model.
    let model = st::serialize(&[st::T::new("w", "U8", &[LEN as u64], st::Rng::new(7).bytes(LEN))], None);
    r.write("model.safetensors", &model);
    r.add_commit(&["model.safetensors"], "large");
    let pack = std::fs::metadata(crate::common::largest_pack(&r.root.join(".mlv/objects/pack"))).unwrap().len();
    assert!(pack > LEN as u64, "the model was compressed: {pack} bytes");
    // Reading the whole pack at once (as fsck's and clone's checks of its bytes did) peaks
    // above its size.
    let fsck = peak_rss(&r, &r.root, &["fsck"]);
    assert!(fsck < pack / 2, "fsck peaked at {fsck} bytes for a pack of {pack}");
    let dest = r.beside("clone");
    let clone = peak_rss(&r, &r.root, &["clone", "--bare", r.root.to_str().unwrap(), dest.to_str().unwrap()]);
    assert!(clone < pack / 2, "clone peaked at {clone} bytes for a pack of {pack}");
    assert!(r.ok_at(&dest, &["fsck"]).contains("no problems"));
}

/// A repository with a chain of BF16 fine-tunes (each a delta on the one before) on `main`,
/// a side branch, and the files of every commit by commit id.
fn chain_repo(len: usize) -> (TestRepo, Vec<(String, Vec<u8>)>) {
    use crate::common::st;
    let r = TestRepo::init();
    let mut w = st::base_model(7, 64, 2, 128);
    let mut commits = Vec::new();
    for k in 0..len {
        w = st::fine_tune(&w, 100 + k as u64, 0.2);
        let tensors: Vec<_> = w.iter().map(st::Weights::to_bf16).collect();
        st::write(&r.path("model.safetensors"), &tensors, None);
        let id = r.add_commit(&["model.safetensors"], &format!("step {k}"));
        commits.push((id, r.read("model.safetensors")));
        if k == len / 2 {
            r.ok(&["branch", "side"]);
        }
    }
    (r, commits)
}

/// Every pack of a repository by age, oldest first.
fn packs_by_age(r: &TestRepo) -> Vec<std::path::PathBuf> {
    let mut packs: Vec<_> = std::fs::read_dir(r.root.join(".mlv/objects/pack"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .collect();
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    packs
}

/// The top of a chain of fine-tunes is decoded a part at a time through every link below it;
/// a damaged link makes its checkout fail, naming the link's object as `fsck` does (not the
/// fine-tune being checked out), and never writes a wrong byte.
#[test]
fn a_damaged_link_in_a_chain_is_named_by_checkout() {
    let (r, commits) = chain_repo(3);
    let (_, top) = commits.last().unwrap();
    // Each commit wrote a pack of tensors, then one of its tree and commit: the middle
    // commit's tensors are the third pack.
    let middle = packs_by_age(&r)[2].clone();
    let middle_name = middle.file_name().unwrap().to_string_lossy().into_owned();
    let original = std::fs::read(&middle).unwrap();
    let mut failed = 0;
    for eighth in 2..7 {
        let mut bad = original.clone();
        bad[original.len() * eighth / 8] ^= 0x20;
        std::fs::write(&middle, &bad).unwrap();
        let fsck = r.run(&["fsck", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&fsck.stdout).unwrap();
        let damaged: Vec<String> = v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["file"].as_str().is_some_and(|f| f.ends_with(middle_name.as_str())))
            .filter_map(|p| p["object"].as_str().map(|id| id[..12].to_string()))
            .collect();
        r.clear_worktree();
        let out = r.run(&["checkout", "-f", "HEAD"]);
        if out.success() {
            assert_eq!(&r.read("model.safetensors"), top, "a damaged link produced a wrong file");
        } else {
            failed += 1;
            assert!(!damaged.is_empty(), "checkout failed but fsck found no object of {middle_name}: {v}");
            assert!(
                damaged.iter().any(|id| out.stderr.contains(id)),
                "not named as fsck names it ({damaged:?})\n{}",
                out.describe()
            );
            assert!(!r.exists("model.safetensors") || &r.read("model.safetensors") == top);
        }
    }
    std::fs::write(&middle, &original).unwrap();
    assert!(failed > 0, "no damage reached the chain");
    r.ok(&["checkout", "-f", "HEAD"]);
    assert_eq!(&r.read("model.safetensors"), top);
}

fn pack_count(r: &TestRepo) -> usize {
    std::fs::read_dir(r.root.join(".mlv/objects/pack"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "idx"))
        .count()
}

#[test]
fn gc_repacks_into_one_pack_and_every_commit_still_checks_out_exactly() {
    let (r, commits) = chain_repo(6);
    let before = r.mlv_size();
    assert!(pack_count(&r) >= 12, "{}", pack_count(&r));
    let v = r.json(&["gc", "--json"]);
    assert_eq!(v["packs_after"], 1, "{v}");
    assert_eq!(pack_count(&r), 1);
    assert!(r.mlv_size() <= before, "gc grew the store: {} -> {}", before, r.mlv_size());
    r.ok(&["fsck"]);
    for (id, bytes) in &commits {
        r.ok(&["checkout", "-f", id]);
        assert_eq!(&r.read("model.safetensors"), bytes, "commit {id}");
    }
    r.ok(&["switch", "-f", "main"]);
}

#[test]
fn gc_cuts_chains_longer_than_max_chain_and_keeps_what_deltas_need() {
    let (r, commits) = chain_repo(5);
    let config = std::fs::read_to_string(r.root.join(".mlv/config")).unwrap();
    std::fs::write(r.root.join(".mlv/config"), config.replace("max_chain = 8", "max_chain = 2")).unwrap();
    let v = r.json(&["gc", "--json"]);
    assert!(v["chains_cut"].as_u64().unwrap() > 0, "{v}");
    r.ok(&["fsck"]);
    let du = r.json(&["du", "--tensors", "--json"]);
    let deep = du.to_string().matches("\"depth\":3").count();
    assert_eq!(deep, 0, "a chain longer than 2 survived: {du}");
    for (id, bytes) in &commits {
        r.ok(&["checkout", "-f", id]);
        assert_eq!(&r.read("model.safetensors"), bytes, "commit {id}");
    }
}

#[test]
fn unreachable_objects_survive_the_grace_period_and_go_with_prune_now() {
    let (r, commits) = chain_repo(3);
    r.ok(&["switch", "-c", "doomed"]);
    r.write("extra.bin", vec![7u8; 200_000]);
    let doomed = r.add_commit(&["extra.bin"], "doomed");
    r.ok(&["switch", "main"]);
    r.ok(&["branch", "-D", "doomed"]);
    r.ok(&["gc"]);
    assert!(r.run(&["log", "-n", "1", &doomed]).success(), "a fresh unreachable commit was dropped");
    let v = r.json(&["gc", "--prune=now", "--json"]);
    assert!(v["objects_dropped"].as_u64().unwrap() >= 3, "{v}");
    assert!(!r.run(&["log", "-n", "1", &doomed]).success(), "prune=now kept an unreachable commit");
    r.ok(&["fsck", "--unreachable"]);
    r.ok(&["checkout", "-f", &commits[0].0]);
    assert_eq!(r.read("model.safetensors"), commits[0].1);
}

#[test]
fn commit_repacks_on_its_own_once_packs_pile_up() {
    let r = TestRepo::init();
    let config = std::fs::read_to_string(r.root.join(".mlv/config")).unwrap();
    std::fs::write(r.root.join(".mlv/config"), config.replace("auto_packs = 50", "auto_packs = 4")).unwrap();
    for k in 0..4 {
        r.write("n.txt", format!("{k}\n"));
        r.add_commit(&["n.txt"], &format!("c{k}"));
    }
    assert!(pack_count(&r) <= 4, "{}", pack_count(&r));
    r.ok(&["fsck"]);
    assert_eq!(r.ok(&["log", "--oneline"]).lines().count(), 4);
}

#[test]
fn readers_and_committers_never_fail_while_gc_runs_or_is_killed() {
    let (r, commits) = chain_repo(4);
    for round in 0..6u64 {
        let readers: Vec<_> = (0..3).map(|_| r.spawn_at(&r.root, &["log", "--stat"])).collect();
        let mut gc = r
            .std_cmd_in(&r.root, ["gc", "--prune=now"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if round % 2 == 1 {
            std::thread::sleep(Duration::from_millis(3 * round));
            gc.kill().ok();
        }
        gc.wait().unwrap();
        for reader in readers {
            let out = reader.wait_with_output().unwrap();
            assert!(out.status.success(), "a reader failed during gc: {}", String::from_utf8_lossy(&out.stderr));
        }
        r.ok(&["fsck"]);
        r.write("round.txt", format!("{round}\n"));
        r.add_commit(&["round.txt"], &format!("round {round}"));
    }
    r.ok(&["checkout", "-f", &commits[1].0]);
    assert_eq!(r.read("model.safetensors"), commits[1].1);
}

#[test]
fn gc_aggressive_finds_bases_a_history_was_added_without_and_keeps_chains_short() {
    use crate::common::st;
    let r = TestRepo::init();
    r.ok(&["config", "--set", "delta.discover", "false"]);
    let base = st::base_model(11, 96, 2, 192);
    let tensors: Vec<_> = base.iter().map(st::Weights::to_bf16).collect();
    st::write(&r.path("model.safetensors"), &tensors, None);
    r.add_commit(&["model.safetensors"], "base");
    let base_bytes = r.read("model.safetensors");
    // Fine-tunes on a separate history, added without a base.
    r.ok(&["switch", "--orphan", "ft"]);
    let mut w = base.clone();
    let mut tunes = Vec::new();
    for k in 0..4 {
        w = st::fine_tune(&w, 200 + k, 0.2);
        let tensors: Vec<_> = w.iter().map(st::Weights::to_bf16).collect();
        st::write(&r.path("model.safetensors"), &tensors, None);
        tunes.push((r.add_commit(&["model.safetensors"], &format!("ft {k}")), r.read("model.safetensors")));
    }
    r.ok(&["gc", "--prune=now"]);
    let plain = r.mlv_size();
    r.ok(&["config", "--set", "delta.discover", "true"]);
    r.ok(&["config", "--set", "delta.max_chain", "2"]);
    let v = r.json(&["gc", "--aggressive", "--prune=now", "--json"]);
    assert!(v["tensors_rewritten"].as_u64().unwrap() >= 10, "{v}");
    assert!(v["bases_changed"].as_u64().unwrap() >= 4, "{v}");
    let aggressive = r.mlv_size();
    // 0.76x when the commits share a second (ties keep history order), 0.84x when each has its own.
    assert!(aggressive * 10 < plain * 9, "aggressive gc saved too little: {plain} -> {aggressive}");
    let du = r.json(&["du", "--tensors", "--json"]);
    assert_eq!(du.to_string().matches("\"depth\":3").count(), 0, "a chain longer than 2: {du}");
    r.ok(&["fsck"]);
    for (id, bytes) in &tunes {
        r.ok(&["checkout", "-f", id]);
        assert_eq!(&r.read("model.safetensors"), bytes, "commit {id}");
    }
    r.ok(&["switch", "-f", "main"]);
    assert_eq!(r.read("model.safetensors"), base_bytes);
    // A second run finds nothing better.
    let v = r.json(&["gc", "--aggressive", "--prune=now", "--json"]);
    assert_eq!(v["bases_changed"], 0, "{v}");
    assert!(r.mlv_size() <= aggressive + aggressive / 50, "{} -> {}", aggressive, r.mlv_size());
}
