"""The state that crosses a stage boundary: named tensors plus a small JSON header. No pickle.

Two encodings of the same thing:
- frames (for ZeroMQ multipart): [header JSON, raw buffer of tensor 1, raw buffer of tensor 2, ...]
- bytes (one blob, e.g. for a file): MAGIC, u32 header length, header JSON, the raw buffers.
Decoding checks every field and size and raises ValueError naming what is wrong.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nodes.schema import MAX_SEED, MAX_STEPS, SchedulerName, validation_message

PROTOCOL_VERSION = 1
MAGIC = b"ESTB"
MAX_HEADER_BYTES = 64 * 1024
MAX_DIMS = 8

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "uint8": torch.uint8,
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


class DenoisingMeta(BaseModel):
    """What a denoising state's header says: which schedule it is on and where, the request's
    seed, and what its scheduler carries across a stage boundary (DPM-Solver's order counter;
    nodes/diffusion/schedulers.py); a latent pipeline's state also the classifier-free guidance
    scale its stages denoise with.  `StateBundle.meta` holds it as JSON (`header()`): the optional
    fields are left out where unset, so that a pixel state's header is what it was before them."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    scheduler: SchedulerName
    steps: int = Field(ge=1, le=MAX_STEPS)
    next_step: int = Field(ge=0, le=MAX_STEPS)
    seed: int = Field(ge=0, lt=MAX_SEED)
    lower_order_nums: int | None = Field(None, ge=0, le=8)
    guidance_scale: float | None = Field(None, gt=0, le=1000, allow_inf_nan=False)

    @classmethod
    def of(cls, state: StateBundle) -> DenoisingMeta:
        """A state's header, checked; ValueError naming the field."""
        try:
            return cls.model_validate(state.meta)
        except ValidationError as exc:
            raise ValueError(f"state {validation_message(exc)}") from None

    def header(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


@dataclass
class StateBundle:
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def header(self) -> dict[str, Any]:
        specs = []
        for name, tensor in self.tensors.items():
            if tensor.dtype not in _NAMES:
                raise ValueError(f"tensor {name!r} has unsupported dtype {tensor.dtype}")
            specs.append({"name": name, "dtype": _NAMES[tensor.dtype], "shape": list(tensor.shape)})
        return {"version": PROTOCOL_VERSION, "meta": self.meta, "tensors": specs}

    def to_frames(self) -> list[bytes | memoryview]:
        """Header then one zero-copy buffer per tensor (contiguous CPU memory)."""
        frames: list[bytes | memoryview] = [json.dumps(self.header()).encode()]
        for tensor in self.tensors.values():
            frames.append(memoryview(tensor.detach().cpu().contiguous().numpy()).cast("B"))
        return frames

    def to_bytes(self) -> bytes:
        frames = self.to_frames()
        return MAGIC + struct.pack("<I", len(frames[0])) + b"".join(bytes(f) for f in frames)

    def payload_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    @classmethod
    def from_frames(cls, frames: Sequence[bytes | memoryview]) -> StateBundle:
        if not frames:
            raise ValueError("state bundle: no frames")
        header = _parse_header(bytes(frames[0]))
        specs = header["tensors"]
        if len(frames) != len(specs) + 1:
            raise ValueError(
                f"state bundle: header names {len(specs)} tensors but {len(frames) - 1} frames follow"
            )
        tensors = {}
        for spec, frame in zip(specs, frames[1:], strict=True):
            tensors[spec["name"]] = _tensor_from(spec, frame)
        return cls(meta=header["meta"], tensors=tensors)

    @classmethod
    def from_bytes(cls, blob: bytes) -> StateBundle:
        if len(blob) < 8 or blob[:4] != MAGIC:
            raise ValueError("state bundle: bad magic")
        (header_len,) = struct.unpack("<I", blob[4:8])
        if header_len > MAX_HEADER_BYTES or 8 + header_len > len(blob):
            raise ValueError(f"state bundle: header length {header_len} out of range")
        header_raw = blob[8 : 8 + header_len]
        specs = _parse_header(header_raw)["tensors"]
        frames: list[bytes | memoryview] = [header_raw]
        offset = 8 + header_len
        view = memoryview(blob)
        for spec in specs:
            size = _nbytes(spec)
            frames.append(view[offset : offset + size])
            offset += size
        if offset != len(blob):
            raise ValueError(f"state bundle: {len(blob) - offset} bytes left over or missing")
        return cls.from_frames(frames)


def _parse_header(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_HEADER_BYTES:
        raise ValueError(f"state bundle: header of {len(raw)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"state bundle: header is not JSON ({exc.__class__.__name__})") from None
    if not isinstance(header, dict):
        raise ValueError("state bundle: header is not a JSON object")
    if header.get("version") != PROTOCOL_VERSION:
        raise ValueError(f"state bundle: protocol version {header.get('version')!r} unsupported")
    if not isinstance(header.get("meta"), dict):
        raise ValueError("state bundle: header 'meta' missing or not an object")
    specs = header.get("tensors")
    if not isinstance(specs, list):
        raise ValueError("state bundle: header 'tensors' missing or not a list")
    names = set()
    for spec in specs:
        _check_spec(spec)
        if spec["name"] in names:
            raise ValueError(f"state bundle: tensor {spec['name']!r} appears twice")
        names.add(spec["name"])
    return header


def _check_spec(spec: Any) -> None:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
        raise ValueError("state bundle: tensor spec without a name")
    if spec.get("dtype") not in _DTYPES:
        raise ValueError(f"state bundle: tensor {spec['name']!r} has unknown dtype {spec.get('dtype')!r}")
    shape = spec.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in shape)
    ):
        raise ValueError(f"state bundle: tensor {spec['name']!r} has a bad shape {shape!r}")


def _nbytes(spec: dict[str, Any]) -> int:
    count = 1
    for dim in spec["shape"]:
        count *= dim
    return count * torch.empty((), dtype=_DTYPES[spec["dtype"]]).element_size()


def _tensor_from(spec: dict[str, Any], frame: bytes | memoryview) -> torch.Tensor:
    buffer = memoryview(frame).cast("B") if not isinstance(frame, bytes) else frame
    if len(buffer) != _nbytes(spec):
        raise ValueError(
            f"state bundle: tensor {spec['name']!r} needs {_nbytes(spec)} bytes, frame has {len(buffer)}"
        )
    dtype = _DTYPES[spec["dtype"]]
    if len(buffer) == 0:
        return torch.empty(spec["shape"], dtype=dtype)
    # a writable copy: received frames are read-only and are kept by the sender's buffers
    return torch.frombuffer(bytearray(buffer), dtype=dtype).reshape(spec["shape"])
