import contextlib
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.diffusion.state import StateBundle


def _bundle() -> StateBundle:
    return StateBundle(
        meta={"scheduler": "dpm", "next_step": 7, "seed": 3},
        tensors={
            "sample": torch.randn(4, 1, 16, 16),
            "labels": torch.tensor([1, 2, 3, 4]),
            "history_1": torch.randn(4, 1, 16, 16).half(),
        },
    )


def test_frames_round_trip_exactly():
    bundle = _bundle()
    again = StateBundle.from_frames(bundle.to_frames())
    assert again.meta == bundle.meta
    assert list(again.tensors) == list(bundle.tensors)
    for name, tensor in bundle.tensors.items():
        assert again.tensors[name].dtype == tensor.dtype
        assert torch.equal(again.tensors[name], tensor)


def test_bytes_round_trip_and_payload_size():
    bundle = _bundle()
    blob = bundle.to_bytes()
    assert bundle.payload_bytes() == 4 * 256 * 4 + 4 * 8 + 4 * 256 * 2
    again = StateBundle.from_bytes(blob)
    assert torch.equal(again.tensors["sample"], bundle.tensors["sample"])
    assert b"pickle" not in blob and len(blob) < bundle.payload_bytes() + 1024


def test_header_is_plain_json_naming_tensors():
    header = json.loads(bytes(_bundle().to_frames()[0]))
    assert header["tensors"][0] == {"name": "sample", "dtype": "float32", "shape": [4, 1, 16, 16]}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: [b"not json"] + f[1:], "not JSON"),
        (lambda f: [b"[1]"] + f[1:], "not a JSON object"),
        (lambda f: f[:-1], "frames follow"),
        (lambda f: f[:1] + [bytes(f[1])[:-4]] + f[2:], "needs 4096 bytes"),
        (lambda f: [f[0].replace(b'"version": 1', b'"version": 9')] + f[1:], "version"),
        (lambda f: [f[0].replace(b'"float32"', b'"object"')] + f[1:], "unknown dtype"),
        (lambda f: [f[0].replace(b"[4, 1, 16, 16]", b"[-4, 1, 16, 16]")] + f[1:], "bad shape"),
    ],
)
def test_malformed_frames_are_rejected_with_a_reason(mutate, message):
    frames = [bytes(f) for f in _bundle().to_frames()]
    with pytest.raises(ValueError, match=message):
        StateBundle.from_frames(mutate(frames))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=0, max_size=4))
def test_arbitrary_frames_raise_only_value_error(frames):
    with contextlib.suppress(ValueError):
        StateBundle.from_frames(frames)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_blobs_raise_only_value_error(blob):
    with contextlib.suppress(ValueError):
        StateBundle.from_bytes(blob)


def test_deeply_nested_header_is_rejected_not_crashing():
    with pytest.raises(ValueError, match="not JSON"):
        StateBundle.from_frames([b"[" * 30_000 + b"]" * 30_000])


_specs = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.one_of(st.text(max_size=5), st.integers()),
            "dtype": st.sampled_from(["float32", "int64", "uint8", "float16", "bogus", 3]),
            "shape": st.one_of(
                st.lists(st.integers(min_value=-2, max_value=6), max_size=4),
                st.lists(st.integers(min_value=2**30, max_value=2**40), min_size=1, max_size=3),
                st.text(max_size=3),
            ),
        }
    ),
    max_size=3,
)


@settings(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(
        {"version": st.sampled_from([1, 1, 2, "1"]), "meta": st.one_of(st.dictionaries(
            st.text(max_size=3), st.integers(), max_size=2), st.integers()), "tensors": _specs}
    ),
    st.lists(st.binary(max_size=200), max_size=4),
)
def test_structured_headers_with_wrong_sizes_raise_only_value_error(header, frames):
    with contextlib.suppress(ValueError):
        bundle = StateBundle.from_frames([json.dumps(header).encode(), *frames])
        for spec, tensor in zip(header["tensors"], bundle.tensors.values(), strict=True):
            assert list(tensor.shape) == spec["shape"]
