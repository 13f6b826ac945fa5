"""The two ONNX graphs of :class:`encoders.index.device.DeviceIndex`, embedded.

A search: ``Gemm(queries, items^T) + bias`` then ``TopK`` along the rows. A patch: ``Gather``
of the rows' old vectors, ``ScatterND`` of their new ones and ``ScatterElements`` of their
biases, into outputs the caller binds to a spare pair of device buffers. Each in float32 and
float16. They are embedded (a few hundred bytes each, as :mod:`encoders.runtime.providers` embeds
its probe model) so that a worker needs no ``onnx`` package at run time; :func:`build` makes them
with ``onnx.helper`` and ``tests/unit/encoders/index/test_device.py`` checks that the embedded
copies are what it builds. After changing :func:`build`: ``python -m encoders.index.device_graphs``
prints the new constants.
"""

from __future__ import annotations

import base64
import textwrap

from encoders.errors import ExportDependencyError

__all__ = ["build", "graphs"]

_OPSET = 17


def graphs(half: bool) -> tuple[bytes, bytes]:
    """The embedded search and patch graphs, float16 (``half``) or float32."""
    if half:
        return base64.b64decode(_SEARCH_F16), base64.b64decode(_PATCH_F16)
    return base64.b64decode(_SEARCH_F32), base64.b64decode(_PATCH_F32)


def build(half: bool) -> tuple[bytes, bytes]:
    """The search graph and the patch graph, serialised, for float16 (``half``) or float32,
    built with the ``onnx`` package (the source of the embedded copies)."""
    try:
        from onnx import TensorProto, checker, helper
    except ImportError as exc:
        raise ExportDependencyError(
            "building the device index's graphs needs the onnx package: "
            "pip install 'interest-stream[export]'"
        ) from exc
    elem = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    typed = helper.make_tensor_value_info
    search = helper.make_graph(
        [
            helper.make_node("Gemm", ["queries", "items", "bias"], ["scores"], transB=1),
            helper.make_node("TopK", ["scores", "k"], ["values", "rows"], axis=1),
        ],
        "device_index_search",
        [typed("queries", elem, ["m", "dim"]), typed("items", elem, ["room", "dim"]),
         typed("bias", elem, ["room"]), typed("k", TensorProto.INT64, [1])],
        [typed("values", elem, ["m", "k"]), typed("rows", TensorProto.INT64, ["m", "k"])],
    )  # fmt: skip
    patch = helper.make_graph(
        [
            helper.make_node("Gather", ["items", "rows"], ["old"], axis=0),
            helper.make_node("Unsqueeze", ["rows", "last"], ["where"]),
            helper.make_node("ScatterND", ["items", "where", "values"], ["new_items"]),
            helper.make_node("ScatterElements", ["bias", "rows", "bias_values"], ["new_bias"],
                             axis=0),  # fmt: skip
        ],
        "device_index_patch",
        [typed("items", elem, ["room", "dim"]), typed("bias", elem, ["room"]),
         typed("rows", TensorProto.INT64, ["r"]), typed("values", elem, ["r", "dim"]),
         typed("bias_values", elem, ["r"])],
        [typed("old", elem, ["r", "dim"]), typed("new_items", elem, ["room", "dim"]),
         typed("new_bias", elem, ["room"])],
        initializer=[helper.make_tensor("last", TensorProto.INT64, [1], [1])],
    )  # fmt: skip
    models = [helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)],
                                ir_version=8) for graph in (search, patch)]  # fmt: skip
    for model in models:
        checker.check_model(model, full_check=True)
    return models[0].SerializeToString(), models[1].SerializeToString()


def _constants() -> str:
    out = []
    for half, tag in ((False, "F32"), (True, "F16")):
        for name, data in zip(("SEARCH", "PATCH"), build(half), strict=True):
            parts = textwrap.wrap(base64.b64encode(data).decode(), 90)
            out.append(f"_{name}_{tag} = (\n" + "".join(f'    "{p}"\n' for p in parts) + ")")
    return "\n".join(out)


_SEARCH_F32 = (
    "CAg6lgIKMwoHcXVlcmllcwoFaXRlbXMKBGJpYXMSBnNjb3JlcyIER2VtbSoNCgZ0cmFuc0IYAaABAgosCgZzY29yZX"
    "MKAWsSBnZhbHVlcxIEcm93cyIEVG9wSyoLCgRheGlzGAGgAQISE2RldmljZV9pbmRleF9zZWFyY2haHQoHcXVlcmll"
    "cxISChAIARIMCgMSAW0KBRIDZGltWh4KBWl0ZW1zEhUKEwgBEg8KBhIEcm9vbQoFEgNkaW1aFgoEYmlhcxIOCgwIAR"
    "IICgYSBHJvb21aDwoBaxIKCggIBxIECgIIAWIaCgZ2YWx1ZXMSEAoOCAESCgoDEgFtCgMSAWtiGAoEcm93cxIQCg4I"
    "BxIKCgMSAW0KAxIBa0IECgAQEQ=="
)
_PATCH_F32 = (
    "CAg6vwMKJwoFaXRlbXMKBHJvd3MSA29sZCIGR2F0aGVyKgsKBGF4aXMYAKABAgoeCgRyb3dzCgRsYXN0EgV3aGVyZS"
    "IJVW5zcXVlZXplCiwKBWl0ZW1zCgV3aGVyZQoGdmFsdWVzEgluZXdfaXRlbXMiCVNjYXR0ZXJORApBCgRiaWFzCgRy"
    "b3dzCgtiaWFzX3ZhbHVlcxIIbmV3X2JpYXMiD1NjYXR0ZXJFbGVtZW50cyoLCgRheGlzGACgAQISEmRldmljZV9pbm"
    "RleF9wYXRjaCoNCAEQBzoBAUIEbGFzdFoeCgVpdGVtcxIVChMIARIPCgYSBHJvb20KBRIDZGltWhYKBGJpYXMSDgoM"
    "CAESCAoGEgRyb29tWhMKBHJvd3MSCwoJCAcSBQoDEgFyWhwKBnZhbHVlcxISChAIARIMCgMSAXIKBRIDZGltWhoKC2"
    "JpYXNfdmFsdWVzEgsKCQgBEgUKAxIBcmIZCgNvbGQSEgoQCAESDAoDEgFyCgUSA2RpbWIiCgluZXdfaXRlbXMSFQoT"
    "CAESDwoGEgRyb29tCgUSA2RpbWIaCghuZXdfYmlhcxIOCgwIARIICgYSBHJvb21CBAoAEBE="
)
_SEARCH_F16 = (
    "CAg6lgIKMwoHcXVlcmllcwoFaXRlbXMKBGJpYXMSBnNjb3JlcyIER2VtbSoNCgZ0cmFuc0IYAaABAgosCgZzY29yZX"
    "MKAWsSBnZhbHVlcxIEcm93cyIEVG9wSyoLCgRheGlzGAGgAQISE2RldmljZV9pbmRleF9zZWFyY2haHQoHcXVlcmll"
    "cxISChAIChIMCgMSAW0KBRIDZGltWh4KBWl0ZW1zEhUKEwgKEg8KBhIEcm9vbQoFEgNkaW1aFgoEYmlhcxIOCgwICh"
    "IICgYSBHJvb21aDwoBaxIKCggIBxIECgIIAWIaCgZ2YWx1ZXMSEAoOCAoSCgoDEgFtCgMSAWtiGAoEcm93cxIQCg4I"
    "BxIKCgMSAW0KAxIBa0IECgAQEQ=="
)
_PATCH_F16 = (
    "CAg6vwMKJwoFaXRlbXMKBHJvd3MSA29sZCIGR2F0aGVyKgsKBGF4aXMYAKABAgoeCgRyb3dzCgRsYXN0EgV3aGVyZS"
    "IJVW5zcXVlZXplCiwKBWl0ZW1zCgV3aGVyZQoGdmFsdWVzEgluZXdfaXRlbXMiCVNjYXR0ZXJORApBCgRiaWFzCgRy"
    "b3dzCgtiaWFzX3ZhbHVlcxIIbmV3X2JpYXMiD1NjYXR0ZXJFbGVtZW50cyoLCgRheGlzGACgAQISEmRldmljZV9pbm"
    "RleF9wYXRjaCoNCAEQBzoBAUIEbGFzdFoeCgVpdGVtcxIVChMIChIPCgYSBHJvb20KBRIDZGltWhYKBGJpYXMSDgoM"
    "CAoSCAoGEgRyb29tWhMKBHJvd3MSCwoJCAcSBQoDEgFyWhwKBnZhbHVlcxISChAIChIMCgMSAXIKBRIDZGltWhoKC2"
    "JpYXNfdmFsdWVzEgsKCQgKEgUKAxIBcmIZCgNvbGQSEgoQCAoSDAoDEgFyCgUSA2RpbWIiCgluZXdfaXRlbXMSFQoT"
    "CAoSDwoGEgRyb29tCgUSA2RpbWIaCghuZXdfYmlhcxIOCgwIChIICgYSBHJvb21CBAoAEBE="
)


if __name__ == "__main__":
    print(_constants())
