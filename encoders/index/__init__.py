"""Catalog search: which items score highest for a batch of query vectors.

:mod:`~encoders.index.exact` (:class:`~encoders.index.exact.ItemIndex`: every row scored, numpy),
:mod:`~encoders.index.ann` (:class:`~encoders.index.ann.AnnIndex`: faiss IVF-PQ candidates and
the moments of the rows they stand for), :mod:`~encoders.index.device`
(:class:`~encoders.index.device.DeviceIndex`: exact candidates on the encoder's ONNX Runtime
device, the GPU with CUDA) and :mod:`~encoders.index.device_graphs` (the small ONNX graphs it
runs, prebuilt).
"""
