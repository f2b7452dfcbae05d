"""The compute seam: where the GPU job runs.

A flow hands a :class:`~tasks.compute.base.GpuJob` to a
:class:`~tasks.compute.base.ComputeBackend`: :mod:`tasks.compute.local` runs it under
``mpiexec`` here, :mod:`tasks.compute.azureml` as an Azure ML command job.
:mod:`tasks.compute.run` chooses between them and holds the Prefect task and the flows' hook.

This package's ``__init__`` imports nothing: each process of a local job starts through
:mod:`tasks.compute.orphan_guard`, which must load in milliseconds.
"""
