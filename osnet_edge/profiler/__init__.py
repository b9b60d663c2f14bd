"""Profiler: exact params / mult-adds per width x resolution (x variant), and latency.

Counting needs torch (it walks the model); it is imported lazily so that the latency side
can run on a device without torch. Latency is measured two ways on every configuration:

* ``mode="extractor"``: ``Extractor(crops)`` end to end (resize, normalise, infer, L2-norm),
  what a camera application pays per call;
* ``mode="runtime"``: only ``Extractor.infer_raw`` on a prepared batch, what the runtime
  and precision alone cost.

Bundles that already exist (``osnet-edge profile BUNDLE ...``, :func:`profile_bundles`) are timed as they
are, on the device side alone: a camera without torch can time what the host exported.

Grids reuse a bundle export already wrote under bundles/ (same name, same network),
else export the bundles they need (host side, torch) into a cache under a work folder so that
reruns reuse them; they append rows to JSON/CSV as they finish and skip rows already there.
Throughput is batch / p50, the statistic of the latency column next to it.

Layout, in the order a grid runs: :mod:`.counting` (params, mult-adds), :mod:`.points` (the
configurations and their checkpoints), :mod:`.bundles` (the bundle each is timed with),
:mod:`.timing` (timed calls, latency rows), :mod:`.grid` (:func:`profile_grid`), :mod:`.rows`
(row files, resumable), :mod:`.arguments` (options shared by the profile and report commands).
"""
from __future__ import annotations

# Seed of the random initialisation of configurations without a checkpoint (latency, counts, fidelity):
# the one export_bundle uses by default, so bundles export wrote without --weights are reused.
from ..bundle import RANDOM_WEIGHTS_SEED
from .arguments import (adapted_resolution, add_grid_arguments, budget_from_args, calibration_from_args,
                        crops_from_args, default_calibration_dir, default_checkpoints, parse_weights_arg,
                        parse_weights_for_arg, weights_map_from_args)
from .bundles import (DEFAULT_BUNDLE_DIR, GRID_MAX_BATCH, CalibrationProvider, Int8Unavailable, bundle_dir_for,
                      ensure_bundle, holds_network)
from .counting import count_grid, count_macs, count_params, count_row, format_millions
from .grid import GridResult, format_latency_table, load_crop_folder, profile_bundles, profile_grid
from .points import GridPoint, WeightsMap, checkpoint_width, file_tag, grid_points
from .rows import (COUNT_FIELDS, KEY_FIELDS, LATENCY_FIELDS, RowStore, bundle_row_key, read_rows, row_key, rows_to_csv,
                   weights_label)
from .timing import (MODES, RUNTIME_PACKAGES, TimingBudget, default_threads, latency_stats, measure_bundle,
                     measure_embedder, runtime_version, time_calls)

__all__ = ["RANDOM_WEIGHTS_SEED", "adapted_resolution", "add_grid_arguments", "budget_from_args",
           "calibration_from_args", "crops_from_args", "default_calibration_dir", "default_checkpoints",
           "parse_weights_arg", "parse_weights_for_arg", "weights_map_from_args", "DEFAULT_BUNDLE_DIR",
           "GRID_MAX_BATCH", "CalibrationProvider", "Int8Unavailable", "bundle_dir_for", "ensure_bundle",
           "holds_network", "count_grid", "count_macs", "count_params", "count_row", "format_millions", "GridResult",
           "format_latency_table", "load_crop_folder", "profile_bundles", "profile_grid", "GridPoint", "WeightsMap", "checkpoint_width",
           "file_tag", "grid_points", "COUNT_FIELDS", "KEY_FIELDS", "LATENCY_FIELDS", "RowStore", "read_rows",
           "row_key", "bundle_row_key", "rows_to_csv", "weights_label", "MODES", "RUNTIME_PACKAGES", "TimingBudget", "default_threads",
           "latency_stats", "measure_bundle", "measure_embedder", "runtime_version", "time_calls"]
