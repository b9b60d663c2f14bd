"""Vendor toolchains that cannot share our environment, each in an isolated venv the project creates itself.

``rknn``: Rockchip's rknn-toolkit2 (pins numpy <= 1.26.4, onnx <= 1.18, protobuf <= 4.25.4, torch <= 2.4), driven
through ``rknn_worker.py`` by subprocess with files and JSON. ``osnet-edge setup rknn`` makes its venv.
"""
