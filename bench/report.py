#!/usr/bin/env python3
"""Turn the raw measurements of bench/run.sh into results.json and a Markdown report.

Usage:
    python3 bench/report.py --raw target/bench/raw [--json-out PATH] [--md-out PATH] FAMILY...

Reads, per family, RAW/FAMILY/members (one member per line, in commit order)
and per member RAW/FAMILY/MEMBER/:
    source_dir        the original checkpoint folder
    logical_bytes     sum of its file sizes
    stored_bytes      growth of the files under .mlv across `mlv add` + `mlv commit`
    add.json          `mlv add --json` (mlv's own account of what it stored)
    ingest.*, checkout.*, cp.*
                      `/usr/bin/time -v` output (.timev) and a nanosecond wall time (.wall)
    zstd3_bytes       sum over files of `zstd -3 -c FILE | wc -c`
    paper_bitx.json   shared/tools/paper_bitx.py --json --skip-19 output
    delta_base        the member it was committed after (empty for the base)
and RAW/date, RAW/mlv_commit, RAW/mlv_version, RAW/args, RAW/large_mb.

When bench/run.sh was given the reference implementation (--zipllm), also
RAW/zipllm_commit, RAW/zipllm_mapping, RAW/FAMILY/zipllm_base_ft.json,
RAW/FAMILY/zipllm_repo_bytes, RAW/FAMILY/zipllm_repo_raw_tensor_bytes and per member:
    zipllm_input_bytes      sum of the member's top-level *.safetensors (all it reads)
    zipllm_stored_bytes     growth of its storage folder across `zipllm CONFIG`
    zipllm_raw_tensor_bytes of which under tensors/ (new tensors, uncompressed)
    zipllm_restored_bytes   bytes written by `restore CONFIG MEMBER OUT` (verified)
    zipllm_ingest.*, zipllm_restore.*
                            `/usr/bin/time -v` output, wall time, and its RUST_LOG=info log
Prints the Markdown report on stdout.
"""
import argparse
import json
import os
import platform
import sys

MiB = float(1 << 20)   # sizes
MB = 1e6               # throughput


# ------------------------------------------------------------------ reading raw files
def read_text(path, default=None):
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        if default is not None:
            return default
        sys.exit("report.py: missing %s (did bench/run.sh finish?)" % path)


def read_int(path):
    return int(read_text(path))


def parse_time_v(path):
    """Wall seconds, CPU seconds and peak RSS bytes from GNU `time -v` output."""
    text = read_text(path)
    wall = rss_kb = None
    cpu = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("User time (seconds)"):
            cpu["user_s"] = float(line.rsplit(":", 1)[1])
        elif line.startswith("System time (seconds)"):
            cpu["sys_s"] = float(line.rsplit(":", 1)[1])
        elif line.startswith("Elapsed (wall clock) time"):
            # "... (h:mm:ss or m:ss): 1:02.03"
            parts = [float(p) for p in line.rsplit(": ", 1)[1].split(":")]
            wall = 0.0
            for p in parts:
                wall = wall * 60 + p
        elif line.startswith("Maximum resident set size (kbytes)"):
            rss_kb = int(line.rsplit(":", 1)[1])
    if wall is None or rss_kb is None:
        sys.exit("report.py: %s is not /usr/bin/time -v output" % path)
    return dict(cpu, time_v_wall_s=wall, peak_rss_bytes=rss_kb * 1024)


def timing(prefix):
    """Merge the time -v numbers with the finer wall time measured by run.sh."""
    t = parse_time_v(prefix + ".timev")
    wall = read_text(prefix + ".wall", default="")
    t["wall_s"] = float(wall) if wall else t["time_v_wall_s"]
    return t


def paper_totals(path):
    """Totals of the single fine-tune entry of paper_bitx.py --json."""
    with open(path) as f:
        results = json.load(f)
    if len(results) != 1:
        sys.exit("report.py: expected one result in %s, found %d" % (path, len(results)))
    r = results[0]
    return {"total": r["total"], "bitx_encode_MBps": r.get("bitx_encode_MBps"),
            "base_dir": r["base"], "finetune_dir": r["finetune"]}


def zipllm_log_counts(path):
    """Tensor counts from the reference's RUST_LOG=info ingest log."""
    counts = {"bitx_tensors": 0, "zstd_tensors": 0, "dedup_tensors": None, "base": None,
              "compressed_bytes": None}
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            body = line.split("] ", 1)[1] if line.startswith("[") and "] " in line else line
            if body.startswith("  - Paired tensors:"):
                counts["bitx_tensors"] = int(body.rsplit(":", 1)[1]) // 2   # both sides of each pair
            elif body.startswith("  - Solo tensors:"):
                counts["zstd_tensors"] = int(body.rsplit(":", 1)[1])
            elif body.startswith("  - Total tensors:"):                     # a base: all zstd
                counts["zstd_tensors"] = int(body.rsplit(":", 1)[1])
            elif body.startswith("  - Compressed size:"):
                # its own account: the compressed tensor data of this model (BitX and zstd)
                counts["compressed_bytes"] = int(body.rsplit(":", 1)[1].split()[0])
            elif "Deduplication completed:" in body:
                counts["dedup_tensors"] = int(body.split("completed:", 1)[1].split()[0])
            elif "Found base model:" in body:
                counts["base"] = body.rsplit(":", 1)[1].strip()
    return counts


def load_zipllm(mdir):
    """The reference implementation's numbers for one member, or None if not measured."""
    if not os.path.exists(os.path.join(mdir, "zipllm_ingest.timev")):
        return None
    z = {
        "input_bytes": read_int(os.path.join(mdir, "zipllm_input_bytes")),
        "stored_bytes": read_int(os.path.join(mdir, "zipllm_stored_bytes")),
        "raw_tensor_bytes": read_int(os.path.join(mdir, "zipllm_raw_tensor_bytes")),
        "restored_bytes": read_int(os.path.join(mdir, "zipllm_restored_bytes")),
        "ingest": timing(os.path.join(mdir, "zipllm_ingest")),
        "restore": timing(os.path.join(mdir, "zipllm_restore")),
    }
    z["stored_without_raw_bytes"] = z["stored_bytes"] - z["raw_tensor_bytes"]
    z.update(zipllm_log_counts(os.path.join(mdir, "zipllm_ingest.log")))
    if z["compressed_bytes"] is None:
        sys.exit("report.py: %s: no \"Compressed size\" in zipllm_ingest.log" % mdir)
    if z["restored_bytes"] != z["input_bytes"]:
        sys.exit("report.py: %s: ZipLLM restored %d bytes of %d" % (mdir, z["restored_bytes"], z["input_bytes"]))
    for key in ("ingest", "restore"):
        t = z[key]
        t["MBps"] = z["input_bytes"] / MB / t["wall_s"] if t["wall_s"] > 0 else None
    return z


def load_member(mdir):
    delta_base = read_text(os.path.join(mdir, "delta_base"), default="")
    paper = paper_totals(os.path.join(mdir, "paper_bitx.json"))
    with open(os.path.join(mdir, "add.json")) as f:
        add = json.load(f)
    m = {
        "source_dir": read_text(os.path.join(mdir, "source_dir")),
        "delta_base": delta_base or None,
        "logical_bytes": read_int(os.path.join(mdir, "logical_bytes")),
        "zstd3_bytes": read_int(os.path.join(mdir, "zstd3_bytes")),
        # grouped3 does not depend on the reference, so it is valid for the base too
        "grouped3_bytes": paper["total"]["grouped3"],
        # the base was measured against itself: its bitx3 is meaningless
        "bitx3_bytes": paper["total"]["bitx3"] if delta_base else None,
        "zigzag3_bytes": paper["total"]["zigzag3"] if delta_base else None,
        "paper_bitx_encode_MBps": paper["bitx_encode_MBps"] if delta_base else None,
        "mlv_stored_bytes": read_int(os.path.join(mdir, "stored_bytes")),
        "mlv_add_report": add,
        "ingest": timing(os.path.join(mdir, "ingest")),
        "checkout": timing(os.path.join(mdir, "checkout")),
        "checkout_over": (timing(os.path.join(mdir, "checkout_over"))
                          if os.path.exists(os.path.join(mdir, "checkout_over.timev")) else None),
        "cp": timing(os.path.join(mdir, "cp")),
    }
    if m["logical_bytes"] != paper["total"]["raw"]:
        sys.exit("report.py: %s: logical bytes %d != paper_bitx raw %d"
                 % (mdir, m["logical_bytes"], paper["total"]["raw"]))
    for key in ("ingest", "checkout", "checkout_over", "cp"):
        t = m[key]
        if t is None:
            continue
        t["MBps"] = m["logical_bytes"] / MB / t["wall_s"] if t["wall_s"] > 0 else None
    m["zipllm"] = load_zipllm(mdir)
    return m


def load_family(raw, family):
    fdir = os.path.join(raw, family)
    members = read_text(os.path.join(fdir, "members")).split()
    out = {"members": {name: load_member(os.path.join(fdir, name)) for name in members},
           "order": members,
           "repo_bytes": read_int(os.path.join(fdir, "repo_bytes"))}
    if family == "large":
        out["size_mb"] = int(read_text(os.path.join(raw, "large_mb")))
    if all(out["members"][n]["zipllm"] for n in members):
        with open(os.path.join(fdir, "zipllm_base_ft.json")) as f:
            base_ft = json.load(f)
        out["zipllm"] = {"repo_bytes": read_int(os.path.join(fdir, "zipllm_repo_bytes")),
                         "repo_raw_tensor_bytes": read_int(os.path.join(fdir, "zipllm_repo_raw_tensor_bytes")),
                         "base_ft": base_ft}
    return out


# ------------------------------------------------------------------ machine
def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine(raw):
    return {
        # like nproc: the CPUs this process may run on
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "mem_total_bytes": mem_total_bytes(),
        "kernel": platform.release(),
        "mlv_commit": read_text(os.path.join(raw, "mlv_commit")),
        "mlv_version": read_text(os.path.join(raw, "mlv_version"), default="?"),
        "date_utc": read_text(os.path.join(raw, "date")),
        "args": read_text(os.path.join(raw, "args"), default=""),
        "tries": read_text(os.path.join(raw, "tries"), default="1"),
        "loadavg_start": read_text(os.path.join(raw, "loadavg_start"), default="?"),
        "loadavg_end": read_text(os.path.join(raw, "loadavg_end"), default="?"),
        "zipllm_commit": read_text(os.path.join(raw, "zipllm_commit"), default="") or None,
        "zipllm_mapping": read_text(os.path.join(raw, "zipllm_mapping"), default="") or None,
    }


# ------------------------------------------------------------------ formatting
def mib(b):
    return "—" if b is None else "%.2f" % (b / MiB)


def mib0(b):
    return "—" if b is None else "%.0f" % (b / MiB)


def num(x, fmt="%.1f"):
    return "—" if x is None else fmt % x


def ratio(a, b):
    return "—" if a is None or not b else "%.2f" % (a / b)


HEADER = ["member", "logical MiB", "zstd-3 MiB", "grouped MiB", "paper BitX MiB",
          "mlv stored MiB", "mlv/BitX ratio", "ingest MB/s", "ingest peak RSS MiB",
          "checkout MB/s", "checkout peak RSS MiB", "checkout over previous MB/s", "cp MB/s"]


def member_row(name, m):
    label = name if not m["delta_base"] else "%s (vs %s)" % (name, m["delta_base"])
    return [label, mib(m["logical_bytes"]), mib(m["zstd3_bytes"]), mib(m["grouped3_bytes"]),
            mib(m["bitx3_bytes"]), mib(m["mlv_stored_bytes"]),
            ratio(m["mlv_stored_bytes"], m["bitx3_bytes"]),
            num(m["ingest"]["MBps"]), mib0(m["ingest"]["peak_rss_bytes"]),
            num(m["checkout"]["MBps"]), mib0(m["checkout"]["peak_rss_bytes"]),
            num(m["checkout_over"]["MBps"]) if m["checkout_over"] else "—",
            num(m["cp"]["MBps"])]


def family_totals(fam):
    """Whole-family sums; the paper pipeline stores the base byte-grouped and
    every fine-tune as BitX against its predecessor."""
    ms = [fam["members"][n] for n in fam["order"]]
    paper = sum(m["bitx3_bytes"] if m["delta_base"] else m["grouped3_bytes"] for m in ms)
    t = {k: sum(m[k] for m in ms) for k in
         ("logical_bytes", "zstd3_bytes", "grouped3_bytes", "mlv_stored_bytes")}
    t["paper_pipeline_bytes"] = paper
    t["ingest_wall_s"] = sum(m["ingest"]["wall_s"] for m in ms)
    t["checkout_wall_s"] = sum(m["checkout"]["wall_s"] for m in ms)
    t["cp_wall_s"] = sum(m["cp"]["wall_s"] for m in ms)
    return t


def total_row(t):
    return ["**total**", mib(t["logical_bytes"]), mib(t["zstd3_bytes"]), mib(t["grouped3_bytes"]),
            mib(t["paper_pipeline_bytes"]) + "¹", mib(t["mlv_stored_bytes"]),
            ratio(t["mlv_stored_bytes"], t["paper_pipeline_bytes"]) + "¹",
            num(t["logical_bytes"] / MB / t["ingest_wall_s"]), "",
            num(t["logical_bytes"] / MB / t["checkout_wall_s"]), "", "",
            num(t["logical_bytes"] / MB / t["cp_wall_s"])]


def md_table(rows, header=HEADER, left=1):
    """A Markdown table, the first `left` columns left-aligned and the rest right-aligned."""
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join(["---"] * left + ["---:"] * (len(header) - left)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


FAMILY_TITLES = {
    "minilm": "MiniLM (real: all-MiniLM-L6-v2 FP32 base, two real BF16 fine-tunes)",
    "minilm-f": "MiniLM FP32 fine-tune (real: all-MiniLM-L6-v2 FP32 base, the real FP32 fine-tune ft-f)",
    "large": "Large synthetic family (`mlv demo --generate-only`, %d MB FP32 base, 2 BF16 fine-tunes)",
}


# ------------------------------------------------------------------ side by side with ZipLLM
ZSIZE_HEADER = ["member", "ZipLLM stores it as", "safetensors MiB", "mlv stored MiB",
                "ZipLLM compressed MiB", "mlv/ZipLLM compressed", "ZipLLM stored MiB",
                "mlv/ZipLLM stored"]
ZSPEED_HEADER = ["member", "ingest MB/s mlv", "ZipLLM", "mlv/ZipLLM",
                 "ingest RSS MiB mlv", "ZipLLM", "mlv/ZipLLM",
                 "restore MB/s mlv", "ZipLLM", "mlv/ZipLLM",
                 "restore RSS MiB mlv", "ZipLLM", "mlv/ZipLLM",
                 "checkout over previous MB/s mlv", "mlv over previous/ZipLLM restore", "cp MB/s"]


ZCPU_HEADER = ["member", "ingest CPU s mlv", "ZipLLM", "mlv/ZipLLM",
               "restore CPU s mlv", "ZipLLM", "mlv/ZipLLM"]


def cpu_s(t):
    return t.get("user_s", 0.0) + t.get("sys_s", 0.0)


def zipllm_how(z):
    parts = []
    if z["bitx_tensors"]:
        parts.append("%d BitX vs %s" % (z["bitx_tensors"], z["base"]))
    if z["zstd_tensors"]:
        parts.append("%d zstd" % z["zstd_tensors"])
    if z["dedup_tensors"]:
        parts.append("%d dedup" % z["dedup_tensors"])
    return ", ".join(parts) or "—"


def over_previous(m, z):
    """mlv's checkout over the member before, and its ratio to ZipLLM's restore (which has no
    such case: it always writes into an empty folder)."""
    over = m["checkout_over"]
    if not over:
        return ["—", "—"]
    return [num(over["MBps"]), ratio(over["MBps"], z["restore"]["MBps"])]


def zipllm_rows(fam):
    size_rows, speed_rows, cpu_rows = [], [], []
    for n in fam["order"]:
        m = fam["members"][n]
        z = m["zipllm"]
        size_rows.append([n, zipllm_how(z), mib(z["input_bytes"]), mib(m["mlv_stored_bytes"]),
                          mib(z["compressed_bytes"]), ratio(m["mlv_stored_bytes"], z["compressed_bytes"]),
                          mib(z["stored_bytes"]), ratio(m["mlv_stored_bytes"], z["stored_bytes"])])
        speed_rows.append([n,
                           num(m["ingest"]["MBps"]), num(z["ingest"]["MBps"]),
                           ratio(m["ingest"]["MBps"], z["ingest"]["MBps"]),
                           mib0(m["ingest"]["peak_rss_bytes"]), mib0(z["ingest"]["peak_rss_bytes"]),
                           ratio(m["ingest"]["peak_rss_bytes"], z["ingest"]["peak_rss_bytes"]),
                           num(m["checkout"]["MBps"]), num(z["restore"]["MBps"]),
                           ratio(m["checkout"]["MBps"], z["restore"]["MBps"]),
                           mib0(m["checkout"]["peak_rss_bytes"]), mib0(z["restore"]["peak_rss_bytes"]),
                           ratio(m["checkout"]["peak_rss_bytes"], z["restore"]["peak_rss_bytes"]),
                           *over_previous(m, z),
                           num(m["cp"]["MBps"])])
        cpu_rows.append([n, num(cpu_s(m["ingest"]), "%.2f"), num(cpu_s(z["ingest"]), "%.2f"),
                         ratio(cpu_s(m["ingest"]), cpu_s(z["ingest"])),
                         num(cpu_s(m["checkout"]), "%.2f"), num(cpu_s(z["restore"]), "%.2f"),
                         ratio(cpu_s(m["checkout"]), cpu_s(z["restore"]))])
    t = fam["zipllm_totals"]
    size_rows.append(["**total**", "", mib(t["input_bytes"]), mib(t["mlv_stored_bytes"]),
                      mib(t["compressed_bytes"]), ratio(t["mlv_stored_bytes"], t["compressed_bytes"]),
                      mib(t["stored_bytes"]), ratio(t["mlv_stored_bytes"], t["stored_bytes"])])
    speed_rows.append(["**total**",
                       num(t["mlv_ingest_MBps"]), num(t["ingest_MBps"]),
                       ratio(t["mlv_ingest_MBps"], t["ingest_MBps"]),
                       mib0(t["mlv_ingest_peak_rss_bytes"]), mib0(t["ingest_peak_rss_bytes"]),
                       ratio(t["mlv_ingest_peak_rss_bytes"], t["ingest_peak_rss_bytes"]),
                       num(t["mlv_checkout_MBps"]), num(t["restore_MBps"]),
                       ratio(t["mlv_checkout_MBps"], t["restore_MBps"]),
                       mib0(t["mlv_checkout_peak_rss_bytes"]), mib0(t["restore_peak_rss_bytes"]),
                       ratio(t["mlv_checkout_peak_rss_bytes"], t["restore_peak_rss_bytes"]),
                       "", "",
                       num(t["cp_MBps"])])
    cpu_rows.append(["**total**", num(t["mlv_ingest_cpu_s"], "%.2f"), num(t["ingest_cpu_s"], "%.2f"),
                     ratio(t["mlv_ingest_cpu_s"], t["ingest_cpu_s"]),
                     num(t["mlv_checkout_cpu_s"], "%.2f"), num(t["restore_cpu_s"], "%.2f"),
                     ratio(t["mlv_checkout_cpu_s"], t["restore_cpu_s"])])
    return size_rows, speed_rows, cpu_rows


def zipllm_totals(fam):
    """Family sums for the side-by-side table: throughput is total bytes over total
    wall time, RSS the largest of any step."""
    ms = [fam["members"][n] for n in fam["order"]]
    zs = [m["zipllm"] for m in ms]
    logical = sum(m["logical_bytes"] for m in ms)
    inp = sum(z["input_bytes"] for z in zs)
    return {
        "input_bytes": inp,
        "stored_bytes": sum(z["stored_bytes"] for z in zs),
        "stored_without_raw_bytes": sum(z["stored_without_raw_bytes"] for z in zs),
        "compressed_bytes": sum(z["compressed_bytes"] for z in zs),
        "mlv_stored_bytes": sum(m["mlv_stored_bytes"] for m in ms),
        "ingest_MBps": inp / MB / sum(z["ingest"]["wall_s"] for z in zs),
        "restore_MBps": inp / MB / sum(z["restore"]["wall_s"] for z in zs),
        "ingest_peak_rss_bytes": max(z["ingest"]["peak_rss_bytes"] for z in zs),
        "restore_peak_rss_bytes": max(z["restore"]["peak_rss_bytes"] for z in zs),
        "mlv_ingest_MBps": logical / MB / sum(m["ingest"]["wall_s"] for m in ms),
        "mlv_checkout_MBps": logical / MB / sum(m["checkout"]["wall_s"] for m in ms),
        "mlv_ingest_peak_rss_bytes": max(m["ingest"]["peak_rss_bytes"] for m in ms),
        "mlv_checkout_peak_rss_bytes": max(m["checkout"]["peak_rss_bytes"] for m in ms),
        "cp_MBps": logical / MB / sum(m["cp"]["wall_s"] for m in ms),
        "ingest_cpu_s": sum(cpu_s(z["ingest"]) for z in zs),
        "restore_cpu_s": sum(cpu_s(z["restore"]) for z in zs),
        "mlv_ingest_cpu_s": sum(cpu_s(m["ingest"]) for m in ms),
        "mlv_checkout_cpu_s": sum(cpu_s(m["checkout"]) for m in ms),
    }


def render_zipllm(results):
    mc = results["machine"]
    fams = [(name, fam) for name, fam in results["families"].items() if "zipllm" in fam]
    if not fams:
        return []
    lines = ["## Side by side with the reference implementation (ds2-lab/ZipLLM)", "",
             "- ZipLLM commit `%s`, built with `cargo build --release`; fine-tunes mapped to their"
             " base in its `base_ft.json` by `%s` (%s)" % (
                 mc["zipllm_commit"], mc["zipllm_mapping"],
                 "each member against the one before it, as mlv sees them"
                 if mc["zipllm_mapping"] == "chain" else "every fine-tune against the first member"),
             ""]
    for name, fam in fams:
        title = FAMILY_TITLES.get(name, name)
        if "%d" in title:
            title = title % fam["size_mb"]
        size_rows, speed_rows, cpu_rows = zipllm_rows(fam)
        lines += ["### " + title, "", md_table(size_rows, ZSIZE_HEADER, left=2), "",
                  md_table(speed_rows, ZSPEED_HEADER), "",
                  md_table(cpu_rows, ZCPU_HEADER), "",
                  "ZipLLM storage folder after all members: %s MiB, of which %s MiB uncompressed"
                  " tensors (`tensors/`) and %s MiB the rest; mlv's `.mlv`: %s MiB." % (
                      mib(fam["zipllm"]["repo_bytes"]), mib(fam["zipllm"]["repo_raw_tensor_bytes"]),
                      mib(fam["zipllm"]["repo_bytes"] - fam["zipllm"]["repo_raw_tensor_bytes"]),
                      mib(fam["repo_bytes"])), ""]
    lines += [
        "Notes on the side-by-side tables:",
        "",
        "- ZipLLM ingest: `zipllm CONFIG` with the member alone in `models_to_process` (one process"
        " per member, its storage kept across members); restore: `restore CONFIG MEMBER OUT` into an"
        " empty folder, each restored file compared with `cmp`. Both under `/usr/bin/time -v`,"
        " with `RUST_LOG=info` logged to a file.",
        "- ZipLLM reads and restores only a model folder's top-level `*.safetensors`; its MB/s are"
        " over those bytes (\"safetensors MiB\"), mlv's over the whole folder as above.",
        "- ZipLLM compressed: the \"Compressed size\" its ingest logs for the member, the sum of"
        " its tensors' BitX or zstd-3 encodings (the paper's accounting; safetensors header and"
        " metadata not included). ZipLLM stored: growth of its storage folder, which also keeps"
        " every new tensor uncompressed in `tensors/`; its restore reads BitX bases (and tensors"
        " identical to their base) from there, so that folder is part of what it needs.",
        "- CPU s: user + system seconds from `/usr/bin/time -v`, all threads; less sensitive than"
        " wall time to other load on the machine.",
        "- Ratios are mlv over ZipLLM: below 1 for size, RSS and CPU s, above 1 for MB/s favour mlv.",
        "",
    ]
    return lines


def render(results):
    mc = results["machine"]
    lines = ["# mlv benchmark", "",
             "- date (UTC): %s" % mc["date_utc"],
             "- mlv: %s, commit `%s`" % (mc["mlv_version"], mc["mlv_commit"]),
             "- machine: %s, nproc %d, %s RAM, Linux %s" % (
                 mc["cpu_model"], mc["nproc"],
                 "%.1f GiB" % (mc["mem_total_bytes"] / 2**30) if mc["mem_total_bytes"] else "?",
                 mc["kernel"]),
             "- load average (1/5/15 min) at start: %s, at end: %s" % (
                 mc["loadavg_start"], mc["loadavg_end"]),
             "- command: `bash bench/run.sh%s`" % ((" " + mc["args"]) if mc["args"] else ""),
             ""]
    for name, fam in results["families"].items():
        title = FAMILY_TITLES.get(name, name)
        if "%d" in title:
            title = title % fam["size_mb"]
        rows = [member_row(n, fam["members"][n]) for n in fam["order"]]
        rows.append(total_row(fam["totals"]))
        lines += ["## " + title, "", md_table(rows), "",
                  "Repository size after all commits (all files under `.mlv`): %s MiB." % mib(fam["repo_bytes"]),
                  ""]
    lines += [
        "Notes:",
        "",
        "- Sizes in MiB (2^20 bytes); throughput in MB/s (10^6 bytes per second) of logical bytes"
        " (sum of the member's file sizes).",
        "- Each fine-tune is measured against the member committed before it (shown as `vs`);"
        " mlv sees the same history: every member is committed as `ckpt/` in one repository, in order.",
        "- zstd-3: `zstd -3` of each file, summed. grouped: byte-grouped standalone zstd-3"
        " (ZipNN-like), BitX: the paper's XOR delta, both from `shared/tools/paper_bitx.py --skip-19`"
        " (non-safetensors files identical to the reference count 0 in BitX).",
        "- mlv stored: growth of the total size of the files under `.mlv` across"
        " `mlv add ckpt && mlv commit` (packs, index and refs included).",
        "- ¹ total row: the paper pipeline stores the base byte-grouped and each fine-tune as BitX;"
        " the ratio is mlv's total over that.",
        "- ingest: wall time of `mlv add ckpt && mlv commit -m MEMBER` together; checkout:"
        " `mlv checkout -f MEMBER` into an empty work tree (verified byte for byte with `cmp`);"
        " checkout over previous: `mlv checkout MEMBER` with the member before it checked out;"
        " cp: `cp -r` of the same folder, the speed ceiling. Peak RSS from `/usr/bin/time -v`"
        " (for ingest, the larger of the two processes). Page cache warm, nothing dropped; what setting"
        " up a run wrote is synced before it, and no timed command syncs what it writes."
        " Every checkout, checkout over previous and cp (and ZipLLM restore) is timed %s times, the"
        " fastest kept (its wall time, CPU and RSS); an ingest (mlv's and ZipLLM's) as often,"
        " each try from a copy of the store as it was before it." % mc["tries"],
        "",
    ]
    lines += render_zipllm(results)
    return "\n".join(lines)


# ------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--raw", required=True, help="raw measurement directory written by run.sh")
    ap.add_argument("--json-out", help="write all numbers as JSON here")
    ap.add_argument("--md-out", help="write the Markdown report here too")
    ap.add_argument("families", nargs="+")
    args = ap.parse_args()

    results = {"units": {"size": "bytes (report: MiB = 2^20)", "throughput": "MB/s = 10^6 bytes/s"},
               "machine": machine(args.raw), "families": {}}
    for family in args.families:
        fam = load_family(args.raw, family)
        fam["totals"] = family_totals(fam)
        if "zipllm" in fam:
            fam["zipllm_totals"] = zipllm_totals(fam)
        results["families"][family] = fam

    md = render(results)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1)
            f.write("\n")
    if args.md_out:
        with open(args.md_out, "w") as f:
            f.write(md)
    sys.stdout.write(md)


if __name__ == "__main__":
    main()
