"""tools/make_qwen2_model.py: offline, deterministic, and it reproduces the committed model.

Needs torch 2.13.0 CPU, transformers<5 and llmexport==0.0.5 (.ci/run installs them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_generator_reproduces_the_committed_tiny_model_offline(tmp_path, tiny_model, net_guard, netns_prefix):
    env, netlog = net_guard
    out = tmp_path / "qwen2-tiny"
    proc = subprocess.run([*netns_prefix, sys.executable, str(REPO / "tools" / "make_qwen2_model.py"),
                           "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    made = json.loads((out / "soak_model.json").read_text())
    committed = json.loads((tiny_model.parent / "soak_model.json").read_text())
    assert made["files"] == committed["files"], (      # byte-for-byte the same model
        f"the generator no longer reproduces soak/models/qwen2-tiny: made with {made['versions']}, "
        f"committed with {committed['versions']} (pin these versions, or regenerate and commit)")
    assert made["parameters"] == committed["parameters"] == 640384
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in tiny_model.parent.iterdir())
    # the chat template and special tokens MNN reads
    llm_config = json.loads((out / "llm_config.json").read_text())
    assert "<|im_start|>" in llm_config["jinja"]["chat_template"]
    assert made["special_tokens"] == {"<|endoftext|>": 2045, "<|im_start|>": 2046, "<|im_end|>": 2047}
    assert netlog() == [], netlog()
