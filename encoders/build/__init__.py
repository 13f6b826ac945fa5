"""Making the models: everything that writes a model folder the runtime then loads.

:mod:`~encoders.build.export` (a Hugging Face encoder to ONNX, validated against torch, and its
int8 quantisation), :mod:`~encoders.build.torch_export` (the torch half of that export),
:mod:`~encoders.build.fp16` (the fused float16 GPU graph and its card),
:mod:`~encoders.build.sequence_data` (what sequence training takes),
:mod:`~encoders.build.sequence_train` (the sequence Transformer in torch and its training) and
:mod:`~encoders.build.sequence_export` (its validated ONNX export). torch and transformers (the
``export`` extra) are imported lazily: ``export`` and ``fp16`` import without them, and
``torch_export``, ``sequence_train`` and ``sequence_export`` are imported only when an export or
a training runs. The build may import the runtime; the runtime never imports the build.
"""
