#!/usr/bin/env python
"""Build a cohort: a thin wrapper of ``egan_med.cohort_cli`` (also installed as ``egan-build-cohort``).

    python scripts/build_cohort.py --csv CheXpert-v1.0-small/train.csv
    python scripts/build_cohort.py --help     # every option, with examples

Needs the package installed (``make setup`` does ``pip install -e .``).
"""
import sys

from egan_med.cohort_cli import main

if __name__ == "__main__":
    sys.exit(main())
