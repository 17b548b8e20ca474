"""Turns bench/remote.sh's raw measurements into a markdown report and results.json."""
import json
import pathlib
import sys

raw = pathlib.Path(sys.argv[1])
transports = sys.argv[2:]
MiB = 1 << 20


def read(name, conv=float):
    p = raw / name
    return conv(p.read_text().strip()) if p.exists() else None


def report(name):
    return json.loads((raw / f"{name}.out").read_text())


log = json.loads((raw / "src-log.json").read_text())
stored = {e["message"].strip(): e["stored_bytes_added"] for e in log}
results = {}
rows = []
for t in transports:
    r = {}
    for step in ["push-base", "push-ft1", "push-ft2", "push-noop"]:
        rep = report(f"{t}-{step}")
        r[step] = {"seconds": read(f"{t}-{step}.wall"), "rss_kib": read(f"{t}-{step}.rss", int),
                   "wire_bytes": rep["stats"]["wire_bytes"]}
    for step in ["gc-mark", "gc-delete"]:
        rep = report(f"{t}-{step}")
        r[step] = {"seconds": read(f"{t}-{step}.wall"), "rss_kib": read(f"{t}-{step}.rss", int), "report": rep}
    for step in ["clone", "fetch", "fetch-noop", "checkout"]:
        r[step] = {"seconds": read(f"{t}-{step}.wall"), "rss_kib": read(f"{t}-{step}.rss", int)}
    fetch = report(f"{t}-fetch")["stats"]
    r["fetch"].update(wire_bytes=fetch["wire_bytes"], verify_seconds=fetch["verify_seconds"])
    r["server_rss_kib"] = read("http-server.rss", int) if t == "http" else None
    results[t] = r
    for step, member in [("push-ft1", "ft-1"), ("push-ft2", "ft-2")]:
        r[step]["ratio_to_stored"] = r[step]["wire_bytes"] / stored[member]
    wire = sum(r[s]["wire_bytes"] for s in ["push-base", "push-ft1", "push-ft2"])
    push_s = sum(r[s]["seconds"] for s in ["push-base", "push-ft1", "push-ft2"])
    r["push_rate_mib_s"] = wire / MiB / push_s
    r["fetch_rate_mib_s"] = r["fetch"]["wire_bytes"] / MiB / r["fetch"]["seconds"]
    wire_only = r["fetch"]["seconds"] - r["fetch"]["verify_seconds"]
    r["fetch_wire_rate_mib_s"] = r["fetch"]["wire_bytes"] / MiB / wire_only if wire_only > 0 else None
    r["clone_ratio"] = r["clone"]["seconds"] / (r["fetch"]["seconds"] + r["checkout"]["seconds"])
    rss = max(v["rss_kib"] for v in r.values() if isinstance(v, dict) and v.get("rss_kib"))
    rows.append((t, r, rss))

(raw.parent / "results.json").write_text(json.dumps({"stored": stored, "transports": results}, indent=2))
print(f"# Remote benchmark (loadavg {read('loadavg_start', str)} -> {read('loadavg_end', str)})\n")
print("| | " + " | ".join(t for t, _, _ in rows) + " |")
print("|---|" + "---|" * len(rows))


def line(label, f):
    print(f"| {label} | " + " | ".join(f(r) for _, r, _ in rows) + " |")


line("push ft-1: sent / its stored size", lambda r: f"{r['push-ft1']['wire_bytes']/MiB:.1f} MiB / {stored['ft-1']/MiB:.1f} MiB = {r['push-ft1']['ratio_to_stored']:.3f}x")
line("push ft-2: sent / its stored size", lambda r: f"{r['push-ft2']['ratio_to_stored']:.3f}x")
line("push of the family (3 pushes), stored MiB/s", lambda r: f"{r['push_rate_mib_s']:.0f}")
line("fetch of the family, stored MiB/s (wire only)", lambda r: f"{r['fetch_rate_mib_s']:.0f} ({r['fetch_wire_rate_mib_s'] or 0:.0f})")
line("fetch: verify share", lambda r: f"{r['fetch']['verify_seconds']:.1f} of {r['fetch']['seconds']:.1f} s")
line("no-op push / no-op fetch", lambda r: f"{r['push-noop']['seconds']*1000:.0f} / {r['fetch-noop']['seconds']*1000:.0f} ms")
line("clone / (fetch + checkout)", lambda r: f"{r['clone']['seconds']:.1f} / ({r['fetch']['seconds']:.1f} + {r['checkout']['seconds']:.1f}) = {r['clone_ratio']:.2f}")
line("gc --remote, run 1: packs, MiB kept, seconds", lambda r: f"{r['gc-mark']['report']['packs_before']} -> {r['gc-mark']['report']['packs_after']} (+{r['gc-mark']['report']['packs_marked']} marked), {r['gc-mark']['report']['bytes_after']/MiB:.0f} MiB, {r['gc-mark']['seconds']:.1f} s")
line("gc --remote, run 2: deleted, seconds", lambda r: f"{r['gc-delete']['report']['packs_deleted']} packs ({r['gc-delete']['report']['bytes_deleted']/MiB:.0f} MiB), {r['gc-delete']['seconds']:.1f} s")
line("client peak RSS", lambda r: f"{max(v['rss_kib'] for v in r.values() if isinstance(v, dict) and v.get('rss_kib'))/1024:.0f} MiB")
line("server peak RSS", lambda r: f"{r['server_rss_kib']/1024:.0f} MiB" if r["server_rss_kib"] else "-")
