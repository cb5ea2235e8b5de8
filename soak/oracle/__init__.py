"""The wrong-answer oracle: teacher-forced logits compared with a reference (issue 23).

- `native`: the per-step comparison and the reference's top-k, in C (native/oracle), one implementation
  for the Python worker and soak-runner;
- `reference`: the reference file (what the oracle engine produced, per turn and step), streamed.
"""
