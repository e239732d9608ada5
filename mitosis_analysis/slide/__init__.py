"""Whole-slide mode: stream a slide through the ROI pipeline, count mitoses per mm^2 of tissue,
find the 2 mm^2 hotspot and export the figures for QuPath.

    from mitosis_analysis.slide import analyse_slide
    summary = analyse_slide("slide.svs", "out/")   # -> SlideSummary (also out/summary.json)
"""

from .export import SlideSummary
from .run import SlideOptions, analyse_slide

__all__ = ["SlideOptions", "SlideSummary", "analyse_slide"]
