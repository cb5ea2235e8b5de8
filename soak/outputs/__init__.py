"""Outputs of a run folder: the CI gate (+ JUnit), bug-report bundles, the HTML report."""
