"""A simulated lab (issue 26): 30 nights x 4 phones x 3 driver versions per GPU, built from
one real test-engine run whose classification has six root causes.  Each night's run
folder is a copy of that run with the context of its night (device, GPU driver, MNN build,
model) in the manifest and only the causes of that night in classification.json: every
cause record is the classifier's own, nothing is invented.

The script of the lab (what the tests expect, stated here once):

  nights      2026-11-01 .. 2026-11-30 (runs start at 22:00 UTC: night = that date)
  builds      MNN 3.6.0 nights 1-9, 3.6.1 nights 10-19, 3.6.2 nights 20-30
  phones      SM-S911 and SM-A546 (Adreno, drivers 512.700 / 512.744 / 512.800),
              Pixel-8 and Pixel-7 (Mali, drivers r44p0 / r45p0 / r47p0)
  drivers     SM-S911: .700 nights 1-5, .744 6-14, .800 15-30; SM-A546: .700 1-5, .744 6-16,
              .800 17-30; both Mali: r44p0 1-7, r45p0 8-21, r47p0 22-30
  models      qwen2 0.5B everywhere, except Pixel-7, which runs qwen2 1.5B until night 20 and
              qwen2 0.5B from night 21 (the 1.5B workload is dropped from the lab)

  REGRESSION  the crash: on every phone from night 10 (build 3.6.1) on       -> regressed, 3.6.0 -> 3.6.1
  FIXED       out of resources: on the Adreno phones until their driver .800  -> fixed, driver 512.744 -> 512.800
  FLAKY       no outputs: Pixel-8 on 9 of its 30 nights (30 %)                -> flaky, 9/30
  STOPPED     OOM kill: Pixel-7 with qwen2 1.5B, nights 1-20                  -> not seen lately (never fixed)
  NEW         empty output: SM-A546 on night 30 only                          -> new
  OPEN        KV-cache growth failure: SM-S911 every night                    -> open
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

PLAN = [{"kind": "crash", "at": [3], "signal": "segv"}, {"kind": "kv_map_error", "at": [6]},
        {"kind": "cl_error", "at": [9], "code": -5, "info": "Raster", "repeat": 3},
        {"kind": "sticky_error", "at": [12]}, {"kind": "oom_kill", "at": [15]}, {"kind": "repeat", "at": [17]},
        {"kind": "empty", "at": [19]}, {"kind": "invalid_utf8", "at": [21]}]
# the lab's roles, by the kind of the cause the classifier made of each injected fault
ROLE_KIND = {"REGRESSION": "crash", "FIXED": "cl_error", "FLAKY": "error_line:onforward", "STOPPED": "oom_kill",
             "NEW": "bad_output", "OPEN": "error_line:kv"}
FLAKY_NIGHTS = {3, 7, 8, 13, 18, 21, 24, 27, 29}
PHONES = {
    "SM-S911": ("Adreno 740", lambda n: "512.700" if n <= 5 else "512.744" if n <= 14 else "512.800"),
    "SM-A546": ("Adreno 642L", lambda n: "512.700" if n <= 5 else "512.744" if n <= 16 else "512.800"),
    "Pixel-8": ("Mali-G715", lambda n: "r44p0" if n <= 7 else "r45p0" if n <= 21 else "r47p0"),
    "Pixel-7": ("Mali-G710", lambda n: "r44p0" if n <= 7 else "r45p0" if n <= 21 else "r47p0"),
}


def build(n: int) -> str:
    return "3.6.0" if n <= 9 else "3.6.1" if n <= 19 else "3.6.2"


def model(phone: str, n: int) -> str:
    return "1.5B" if phone == "Pixel-7" and n <= 20 else "0.5B"


def roles_tonight(phone: str, n: int) -> set[str]:
    out = set()
    if n >= 10:
        out.add("REGRESSION")
    if phone in ("SM-S911", "SM-A546") and PHONES[phone][1](n) != "512.800":
        out.add("FIXED")
    if phone == "Pixel-8" and n in FLAKY_NIGHTS:
        out.add("FLAKY")
    if phone == "Pixel-7" and model(phone, n) == "1.5B":
        out.add("STOPPED")
    if phone == "SM-A546" and n == 30:
        out.add("NEW")
    if phone == "SM-S911":
        out.add("OPEN")
    return out


def _role_of(cause: dict) -> str | None:
    kind = cause.get("kind")
    fid = cause.get("fault_id") or ""
    for role, want in ROLE_KIND.items():
        k, _, hint = want.partition(":")
        if kind == k and (not hint or hint in fid):
            return role
    return None


def real_run(root: Path) -> Path:
    """The one real test-engine run the lab is made of (as `soak run` writes it)."""
    from soak.judges import run_judged
    from soak.loop.config import RunConfig

    cfg = RunConfig(engine="test", iterations=24, seed=0, out_dir=str(root), run_id="lab-source", fault_plan=PLAN,
                    max_new_tokens=8, quiet=True, argv=["pytest", "lab"])
    return Path(run_judged(cfg).run_dir)


def keys_by_role(source: Path) -> dict[str, str]:
    causes = json.loads((source / "classification.json").read_text())["causes"]
    out = {}
    for c in causes:
        role = _role_of(c)
        if role:
            out[role] = c.get("fault_id") or c["signature"]
    assert set(out) == set(ROLE_KIND), f"the test engine's causes changed: {[(c['kind'], c.get('fault_id')) for c in causes]}"
    return out


def make_lab(source: Path, dest: Path) -> list[Path]:
    """The 120 run folders of the lab, night by night."""
    classification = json.loads((source / "classification.json").read_text())
    by_role = {_role_of(c): c for c in classification["causes"]}
    runs = []
    for n in range(1, 31):
        for k, (phone, (gpu, driver)) in enumerate(PHONES.items()):
            run = dest / f"night{n:02d}-{phone}"
            shutil.copytree(source, run)
            m = json.loads((run / "manifest.json").read_text())
            m.update({"run_id": run.name, "started": f"2026-11-{n:02d}T22:{10 * k:02d}:00+00:00",
                      "mnn_version": build(n), "backend_actual": "opencl",
                      "opencl": {"device": gpu, "driver_version": driver(n)},
                      "device": {"model": phone, "serial": phone.lower()},
                      "model": {"family": "qwen2", "size_label": model(phone, n)}})
            (run / "manifest.json").write_text(json.dumps(m))
            c = dict(classification, run_id=run.name,
                     causes=[by_role[r] for r in sorted(roles_tonight(phone, n))])
            (run / "classification.json").write_text(json.dumps(c))
            runs.append(run)
    return runs
