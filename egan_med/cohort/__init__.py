"""Cohorts: which images are minority/majority, which split each is in, and why the rest were left out.

``options`` (what to build), ``sources`` (one reader per label source), ``builder`` (splitting, leakage check,
writing the folder) and ``splits`` (a manifest cut into the trainer's splits). No torch import anywhere here:
building a cohort stays fast. The builder's public names are re-exported: ``from egan_med.cohort import build``.
"""
from egan_med.cohort.builder import (BUILDER_FILES, FORMAT, MANIFEST_COLUMNS, REASONS, SPLITS, CohortError,  # noqa: F401
                                   CohortOptions, assign, build, check_no_leak, check_paths_inside, check_real_paths,
                                   load_manifest, stage, write_atomic)
