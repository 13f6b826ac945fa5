"""Serving the models: what the worker loads and runs, with onnxruntime, tokenizers and numpy only.

:mod:`~encoders.runtime.text` (the text encoder, one ONNX Runtime session reused for every
batch), :mod:`~encoders.runtime.wordpiece` (its fast tokenising path for plain-ASCII texts),
:mod:`~encoders.runtime.sequence` (the sequence model: features and user vectors),
:mod:`~encoders.runtime.metadata` (the export folder's layout, ``encoder.json`` and the fp16
graph's card) and :mod:`~encoders.runtime.providers` (the execution provider, chosen, not
assumed, and session options). Nothing here imports :mod:`encoders.build` or torch.
"""
