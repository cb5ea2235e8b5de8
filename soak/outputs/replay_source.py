"""What `soak replay` replays: a run folder, or a bundle extracted safely to a temp dir.

Also the replay verdict: the catalog signatures (soak.catalog.signature) of
the faults recorded at the iteration, against those of the replay.  The
signature is the one notion of "the same fault".
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Iterator

from soak.errors import BadInput


def is_bundle(path: str | Path) -> bool:
    p = Path(path)
    return p.is_file() and (p.name.endswith((".tar.gz", ".tgz", ".tar")))


def is_bundle_folder(path: str | Path) -> bool:
    """A bundle someone extracted by hand: as much a stranger's data as the .tar.gz."""
    return (Path(path) / "bundle.json").is_file()


@contextlib.contextmanager
def replay_source(source: str | Path, iteration: int | None) -> Iterator[tuple[Path, int, bool]]:
    """Yields (run folder, iteration, from_bundle).  A bundle's temp dir is removed afterwards."""
    src = Path(source)
    if is_bundle(src):
        from soak.outputs.bundle import open_bundle

        with tempfile.TemporaryDirectory(prefix="soak-replay-bundle-") as tmp:
            run_dir, meta = open_bundle(src, tmp)
            if (meta.get("redacted") or {}).get("prompts"):
                raise BadInput(f"{src} was made with --redact-prompts: its prompts are gone, so it cannot be replayed",
                               hint="ask for a bundle made without --redact-prompts")
            it = iteration if iteration is not None else meta.get("replay_iteration")
            if it is None:
                raise BadInput(f"{src} names no failing iteration to replay",
                               hint="pass --iteration N (see the bundle's README.md and bundle.json)")
            yield run_dir, int(it), True
        return
    if src.is_file():
        raise BadInput(f"{src} is neither a run folder nor a bundle (.tar.gz)",
                       hint="pass logs/<run-id> or a file written by `soak bundle`")
    if iteration is None:
        raise BadInput("--iteration N is required when replaying a run folder",
                       hint="see `soak classify RUN` for the iterations that failed")
    yield src, iteration, False


def signatures_at(run_dir: str | Path, iteration: int) -> dict[str, str]:
    """{signature id: signature text} of the faults recorded at `iteration` (load faults excluded)."""
    from soak.analysis.loaded_run import RunFolder
    from soak.catalog.signature import signature
    from soak.outputs._findings import fault_events

    out = {}
    for ev in fault_events(RunFolder(run_dir)):
        if ev.get("iteration") == iteration and ev.get("phase") != "load":
            sig_id, text = signature(ev["kind"], ev.get("phase"), ev)
            out[sig_id] = text
    return out


def replay_verdict(original_run: str | Path, iteration: int, replay_run: str | Path) -> dict:
    """Reproduced: every signature recorded at `iteration` came back in the replay."""
    want = signatures_at(original_run, iteration)
    got = signatures_at(replay_run, iteration)
    return {
        "original_faults": want,
        "replayed_faults": got,
        "reproduced": bool(want) and set(want) <= set(got),
        "clean_both": not want and not got,
    }
