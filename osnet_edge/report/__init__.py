"""Trade-off reports: latency x accuracy per width, resolution, runtime and precision.

What a camera developer needs to choose a configuration for *their* hardware: the paper's
Table 6 (params, mult-adds) with measured latency/throughput next to it, CMC/mAP where
labelled data and trained weights exist, fidelity to FP32 otherwise, a Pareto plot, a
budget-driven recommendation, an embedding compatibility matrix for mixed fleets, and
foreign peers (Open Model Zoo, third-party ONNX) measured on the same images and machine.

Configurations without trained weights never get an accuracy number: their embeddings
are meaningless for re-identification, so only latency, counts and fidelity are shown.

Evaluation helpers (:class:`EvalSet`, :func:`evaluate_embedder`, :class:`TorchReference`)
are shared with ``osnet-edge evaluate``. numpy + matplotlib here; torch only inside
:class:`TorchReference` and when bundles must be exported.

Layout, in the order a report is made: :mod:`.evaluation` (protocol sets, embedders, cached
features, rank-1 / mAP), :mod:`.measure` (:func:`run_report`: every measurement step),
:mod:`.compatibility`, :mod:`.results` (:class:`ReportData`, labels), :mod:`.recommendation`
(Pareto frontier, INT8 vs FP32, the budget pick), :mod:`.plots`, :mod:`.markdown` and
:mod:`.files` (report.md / .csv / .json).
"""
from __future__ import annotations

from .compatibility import compatibility_matrices
from .evaluation import (PROTOCOL_ORDER, EvalSet, FeatureCache, TorchReference, available_protocols, bundle_identity,
                         embed, evaluate_embedder, file_identity, foreign_identity, folder_set, market1501_set, protocol_set)
from .files import report_csv_rows, write_report
from .markdown import hardware_line, render_markdown
from .measure import run_report
from .plots import PEER_COLOUR, PRECISION_COLOURS, RUNTIME_MARKERS, plot_tradeoff
from .recommendation import (DEFAULT_ACCURACY_TOL, int8_accuracy_cost, int8_comparisons, mean_accuracy, pareto_front,
                             recommend, tradeoff_points)
from .results import ReportData, config_label, full_label

__all__ = ["PROTOCOL_ORDER", "EvalSet", "FeatureCache", "TorchReference", "available_protocols", "bundle_identity",
           "embed", "evaluate_embedder", "file_identity", "foreign_identity", "folder_set", "market1501_set", "protocol_set",
           "run_report", "compatibility_matrices", "ReportData", "config_label", "full_label",
           "DEFAULT_ACCURACY_TOL", "int8_accuracy_cost", "int8_comparisons", "mean_accuracy", "pareto_front",
           "recommend", "tradeoff_points", "PEER_COLOUR", "PRECISION_COLOURS", "RUNTIME_MARKERS", "plot_tradeoff",
           "hardware_line", "render_markdown", "report_csv_rows", "write_report"]
