"""Kept for ``from osnet_edge.tflite import ...``: the TFLite conversion lives in :mod:`osnet_edge.export.tflite`."""
from .export.tflite import (MODEL_FILE, AvgPoolAsDepthwise, ChannelsLast, ChannelsLastUint8,  # noqa: F401
                            ZeroPaddedMaxPool, condition_weights, convert_in_subprocess, fold_batchnorm,
                            litert_versions, rewrite_average_pools, rewrite_stem_max_pool, to_tflite)
