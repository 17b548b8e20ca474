"""The mlv Python package against the reference `safetensors` library and the `mlv` binary.

The repository has two commits: the first made with the CLI (found through MLV_BIN, else
target/release/mlv; without it, with the package), the second with `repo.commit`.
"""

import json
import os
import pathlib
import shutil
import subprocess
import threading

import numpy as np
import pytest
import safetensors
import safetensors.numpy

import mlv

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
AUTHOR = {"MLV_AUTHOR_NAME": "Py Test", "MLV_AUTHOR_EMAIL": "py@example.com"}


def mlv_bin():
    """The built `mlv` binary, or None."""
    for candidate in (os.environ.get("MLV_BIN"), REPO_ROOT / "target/release/mlv"):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def run_cli(root, *args):
    env = {**os.environ, **AUTHOR}
    out = subprocess.run([mlv_bin(), *args], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"mlv {' '.join(args)} failed:\n{out.stderr}"
    return out.stdout


def save_bf16(path, tensors):
    """Writes BF16 tensors given as their uint16 bits (numpy has no bfloat16)."""
    specs = {
        name: safetensors.TensorSpec(dtype="bfloat16", shape=a.shape, data_ptr=a.ctypes.data, data_len=a.nbytes)
        for name, a in tensors.items()
    }
    safetensors.serialize_file(specs, str(path))


def raw_bf16(path):
    """BF16 tensors of a file as uint16 bits, read by the reference library."""
    out = {}
    for name, info in safetensors.deserialize(pathlib.Path(path).read_bytes()):
        assert info["dtype"] == "BF16"
        out[name] = np.frombuffer(bytes(info["data"]), dtype="<u2").reshape(info["shape"])
    return out


def model(seed, base=None):
    rng = np.random.default_rng(seed)
    if base is not None:
        tuned = dict(base)
        tuned["w"] = base["w"] + rng.normal(0, 1e-3, base["w"].shape).astype(np.float32) * (rng.random(base["w"].shape) < 0.3)
        tuned["h"] = (base["h"] + np.float16(0.5)).astype(np.float16)
        return tuned
    return {
        "w": rng.normal(0, 0.02, (64, 48)).astype(np.float32),
        "h": rng.normal(0, 1, (3, 5)).astype(np.float16),
        "ids": np.arange(-10, 10, dtype=np.int64).reshape(4, 5),
        "mask": rng.random(7) < 0.5,
        "bytes": rng.integers(0, 255, (2, 2, 2), dtype=np.uint8),
        "scalar": np.array(3.5, dtype=np.float64),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


def bf16_bits(seed):
    rng = np.random.default_rng(seed)
    f = rng.normal(0, 1, (33, 9)).astype(np.float32)
    return {"emb": (f.view(np.uint32) >> 16).astype(np.uint16), "one": np.array([0x3F80], dtype=np.uint16)}


@pytest.fixture(scope="module", autouse=True)
def identity():
    """Every commit, the CLI's and the package's, by the test author."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in AUTHOR.items():
            mp.setenv(k, v)
        yield


@pytest.fixture(scope="module")
def repo(tmp_path_factory, identity):
    """(repository, originals): commit 1 by the CLI, commit 2 by the package."""
    root = tmp_path_factory.mktemp("repo")
    originals = tmp_path_factory.mktemp("originals")
    v1 = model(1)
    v2 = model(2, base=v1)
    for version, weights, bits in (("v1", v1, bf16_bits(3)), ("v2", v2, bf16_bits(4))):
        (originals / version).mkdir()
        safetensors.numpy.save_file(weights, str(originals / version / "model.safetensors"))
        save_bf16(originals / version / "bf16.safetensors", bits)

    def place(version):
        for name in ("model.safetensors", "bf16.safetensors"):
            shutil.copy(originals / version / name, root / "ckpt" / name)

    (root / "ckpt").mkdir()
    place("v1")
    (root / "config.json").write_text('{"layers": 2}\n')
    if mlv_bin():
        run_cli(root, "init")
        run_cli(root, "add", ".")
        run_cli(root, "commit", "-m", "v1 from the CLI")
        r = mlv.Repository(root)
    else:
        r = mlv.init(root)
        r.add(".")
        r.commit("v1 from the CLI")
    place("v2")
    (root / "config.json").write_text('{"layers": 3}\n')
    # A list of a PathLike, a relative and an absolute path.
    report = r.add([pathlib.Path("ckpt/model.safetensors"), "ckpt/bf16.safetensors", root / "config.json"])
    assert sorted(report["staged"]) == ["ckpt/bf16.safetensors", "ckpt/model.safetensors", "config.json"]
    r.commit("v2 from Python")
    return r, originals


def assert_same(got, want):
    """Same names, dtypes, shapes and bytes (NaN-safe)."""
    assert list(sorted(got)) == list(sorted(want))
    for name, w in want.items():
        g = got[name]
        assert g.dtype == w.dtype, name
        assert g.shape == w.shape, name
        assert g.tobytes() == w.tobytes(), name


@pytest.mark.parametrize("rev,version", [("HEAD~1", "v1"), ("HEAD", "v2")])
def test_load_matches_safetensors_load_file(repo, rev, version):
    r, originals = repo
    want = safetensors.numpy.load_file(str(originals / version / "model.safetensors"))
    got = r.load(rev, "ckpt/model.safetensors")
    assert_same(got, want)
    assert got["w"].dtype == np.float32 and got["h"].dtype == np.float16 and got["ids"].dtype == np.int64
    assert got["mask"].dtype == np.bool_ and got["scalar"].shape == ()
    for name in want:
        assert_same({name: r.tensor(rev, "ckpt/model.safetensors", name)}, {name: want[name]})


def test_arrays_are_writable_copies(repo):
    r, _ = repo
    w = r.tensor("HEAD", "ckpt/model.safetensors", "w")
    w[0, 0] = 42.0
    assert r.tensor("HEAD", "ckpt/model.safetensors", "w")[0, 0] != 42.0


def test_bf16_is_ml_dtypes_bfloat16_when_installed(repo):
    r, originals = repo
    want = raw_bf16(originals / "v1" / "bf16.safetensors")
    got = r.load("HEAD~1", "ckpt/bf16.safetensors")
    try:
        import ml_dtypes
    except ImportError:
        assert mlv.BFLOAT16 == np.dtype("<u2")
        assert_same(got, want)
        return
    assert mlv.BFLOAT16 == np.dtype(ml_dtypes.bfloat16)
    assert got["emb"].dtype == ml_dtypes.bfloat16
    assert_same({k: v.view(np.uint16) for k, v in got.items()}, want)
    # The values are the bits' values: bfloat16 is float32's top half.
    emb32 = (want["emb"].astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(got["emb"].astype(np.float32), emb32)
    assert got["one"][0] == 1.0


def test_bf16_is_raw_uint16_without_ml_dtypes(repo, monkeypatch):
    r, originals = repo
    monkeypatch.setattr(mlv, "BFLOAT16", np.dtype("<u2"))
    got = r.tensor("HEAD", "ckpt/bf16.safetensors", "emb")
    assert_same({"emb": got}, {"emb": raw_bf16(originals / "v2" / "bf16.safetensors")["emb"]})


def test_reading_without_a_checkout_leaves_the_work_tree_alone(repo):
    r, originals = repo
    assert r.read_bytes("HEAD~1", "ckpt/model.safetensors") == (originals / "v1" / "model.safetensors").read_bytes()
    assert r.read_bytes("HEAD~1", "config.json") == b'{"layers": 2}\n'
    assert (pathlib.Path(r.root) / "config.json").read_text() == '{"layers": 3}\n'
    assert r.files("HEAD~1")["ckpt/model.safetensors"]["kind"] == "safetensors"
    info = r.tensor_info("HEAD", pathlib.Path(r.root) / "ckpt" / "model.safetensors")
    assert info["w"] == {"dtype": "F32", "shape": [64, 48]}


def test_log_lists_both_commits_newest_first(repo):
    r, _ = repo
    log = r.log()
    assert [e["message"] for e in log] == ["v2 from Python\n", "v1 from the CLI\n"]
    assert log[0]["id"] == r.head() == r.resolve("HEAD")
    assert log[0]["parents"] == [log[1]["id"]]
    assert log[0]["author"]["name"] == "Py Test" and log[0]["author"]["email"] == "py@example.com"
    assert log[0]["date"] and log[0]["logical_bytes"] > 0
    assert r.log(max_count=1) == log[:1]
    assert r.log(stat=True)[0]["stored_bytes_added"] > 0


def test_a_python_commit_is_what_mlv_log_shows(repo):
    if not mlv_bin():
        pytest.skip("no mlv binary (set MLV_BIN or build target/release/mlv)")
    r, _ = repo
    cli = json.loads(run_cli(r.root, "log", "--json"))
    mine = r.log()
    assert [e["id"] for e in cli] == [e["id"] for e in mine]
    assert cli[0]["message"] == "v2 from Python\n"
    for c, m in zip(cli, mine):
        assert {k: v for k, v in m.items() if k != "date"} == c
    assert run_cli(r.root, "status").count("modified") == 0


def test_diff_has_the_numbers_of_the_cli(repo):
    r, originals = repo
    diff = r.diff("HEAD~1", "HEAD")
    if mlv_bin():
        assert diff == json.loads(run_cli(r.root, "diff", "--json", "HEAD~1", "HEAD"))
    files = {f["path"]: f for f in diff}
    assert sorted(files) == ["ckpt/bf16.safetensors", "ckpt/model.safetensors", "config.json"]
    assert "+{\"layers\": 3}" in files["config.json"]["text"]
    tensors = files["ckpt/model.safetensors"]["tensors"]
    changed = {t["name"]: t for t in tensors["changed"]}
    assert sorted(changed) == ["h", "w"] and tensors["unchanged"] == 5
    v1 = safetensors.numpy.load_file(str(originals / "v1" / "model.safetensors"))
    v2 = safetensors.numpy.load_file(str(originals / "v2" / "model.safetensors"))
    delta = np.abs(v1["w"].astype(np.float64) - v2["w"].astype(np.float64))
    assert changed["w"]["elements"] == v1["w"].size
    assert changed["w"]["changed"] == np.count_nonzero(v1["w"] != v2["w"])
    assert changed["w"]["max_abs_diff"] == pytest.approx(delta.max())
    assert changed["w"]["mean_abs_diff"] == pytest.approx(delta.mean())
    assert r.diff("HEAD") == [], "the work tree is what HEAD has"


def test_unknown_revision_raises_with_the_cli_message_and_hint(repo):
    r, _ = repo
    with pytest.raises(mlv.UnknownRevisionError) as e:
        r.load("nope", "ckpt/model.safetensors")
    assert isinstance(e.value, mlv.MlvError)
    assert e.value.message == 'unknown revision "nope"'
    assert e.value.hint and "mlv log" in e.value.hint
    assert str(e.value) == f"{e.value.message}\nhint: {e.value.hint}"
    with pytest.raises(mlv.UnknownRevisionError):
        r.log("HEAD~5")


def test_missing_files_and_tensors_raise_not_found(repo):
    r, _ = repo
    with pytest.raises(mlv.NotFoundError, match='"ckpt/none.safetensors" is not a file in HEAD'):
        r.load("HEAD", "ckpt/none.safetensors")
    with pytest.raises(mlv.NotFoundError, match='has no tensor named "nope"'):
        r.tensor("HEAD", "ckpt/model.safetensors", "nope")
    with pytest.raises(mlv.MlvError, match="config.json in HEAD is not a safetensors file"):
        r.load("HEAD", "config.json")
    with pytest.raises(mlv.MlvError, match="outside the repository"):
        r.load("HEAD", "/definitely/elsewhere.safetensors")
    with pytest.raises(mlv.NotFoundError, match="did not match any files"):
        r.add("no/such/file")


def test_not_a_repository_raises(tmp_path):
    with pytest.raises(mlv.NotARepositoryError, match="not an mlv repository") as e:
        mlv.Repository(tmp_path)
    assert "mlv init" in e.value.hint


def test_nothing_to_commit_raises(repo):
    r, _ = repo
    with pytest.raises(mlv.NothingToCommitError, match="nothing to commit"):
        r.commit("again")


def test_a_training_loop_commits_checkpoints_and_reads_them_back(tmp_path):
    r = mlv.init(tmp_path / "run")
    assert r.head() is None
    weights = model(7)
    ids = []
    for step in range(3):
        weights = model(8 + step, base=weights)
        safetensors.numpy.save_file(weights, str(tmp_path / "run" / "model.safetensors"))
        if step == 0:
            r.add("model.safetensors")
            ids.append(r.commit(f"step {step}"))
        else:
            ids.append(r.commit(f"step {step}", all=True))
    assert [e["id"] for e in r.log()] == ids[::-1]
    assert_same(r.load(ids[-1], "model.safetensors"), weights)
    assert r.log(stat=True)[0]["stored_bytes_added"] < (tmp_path / "run" / "model.safetensors").stat().st_size


def test_threads_share_one_repository(repo):
    r, originals = repo
    want = safetensors.numpy.load_file(str(originals / "v1" / "model.safetensors"))
    errors = []

    def read():
        try:
            for _ in range(5):
                assert_same(r.load("HEAD~1", "ckpt/model.safetensors"), want)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_large_file_that_is_not_safetensors_is_stored_chunked_and_read_back(tmp_path):
    r = mlv.init(tmp_path)
    payload = np.random.default_rng(7).integers(0, 256, size=600_000, dtype=np.uint8).tobytes()
    (tmp_path / "optimizer.pt").write_bytes(payload)
    r.add("optimizer.pt")
    r.commit("optimizer state")
    assert r.files()["optimizer.pt"] == {"kind": "chunked", "size": len(payload)}
    assert r.read_bytes("HEAD", "optimizer.pt") == payload
