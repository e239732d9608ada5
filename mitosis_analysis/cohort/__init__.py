"""Cohort mode: many slides through the slide mode on Dask distributed (local worker processes or
a cluster), resumable, with one table (CSV, Parquet) and an overview picture of the results.

    from mitosis_analysis.cohort import read_slide_list, run_cohort
    rows = run_cohort(read_slide_list("slides.csv"), "out/cohort")   # -> one dict per slide
"""

from .run import run_cohort
from .slides import CohortSlide, read_slide_list

__all__ = ["CohortSlide", "read_slide_list", "run_cohort"]
