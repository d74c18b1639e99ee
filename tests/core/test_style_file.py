"""The style file format without ComfyUI: exact round trips, atomic writes, and every bad file
refused with a message that names the file and the problem (zstar_attention/style_file.py).

Synthetic SD1.5-shaped inversions and records on an 8×8 latent (token levels 64, 16, 4, 1)
stand in for real ones: the format only cares about names, shapes, dtypes and the schedule.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import random
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import zstar_attention.style_file as style_file
from zstar_attention import ZStarError
from zstar_attention.style_file import FORMAT, FORMAT_VERSION, read_style_file, write_style_file
from zstar_attention.style_types import Inversion, StyleRecord

SD15_KEYS = (tuple(("input", i, 0) for i in (1, 2, 4, 5, 7, 8)) + (("middle", 0, 0),)
             + tuple(("output", i, 0) for i in range(3, 12)))
LAYER_TABLES = {"sd15": SD15_KEYS}
STEPS = 6
START = 2
LATENT = (4, 8, 8)
LAYERS = {10: (16, 24), 13: (64, 16)}  # output.6: a 4×4 level, output.9: the full 8×8 level (tokens, width)
SIGMAS = [14.5, 7.25, 3.5, 1.75, 0.875, 0.4375, 0.03125]  # exact in float32
LABEL = "'bad.safetensors'"


def make_inversion(batch=1, dtype=torch.float32, nulltext_dtype=None, seed=0) -> Inversion:
    """Trajectory latents are views of one tensor: the writer must store them by value."""
    gen = torch.Generator().manual_seed(seed)
    trajectory = torch.randn(STEPS + 1, batch, *LATENT, generator=gen).to(dtype).unbind(0)
    uncond = None if nulltext_dtype is None else tuple(
        torch.randn(1, 77, 64, generator=gen).to(nulltext_dtype) for _ in range(STEPS))
    return Inversion(trajectory=trajectory, sigmas=torch.tensor(SIGMAS),
                     timesteps=tuple(999 - 166 * i for i in range(STEPS)), arch="sd15", model_type="EPS",
                     uncond_embeddings=uncond, nulltext_cfg=None if uncond is None else 7.5)


def make_record(halves=(0,), dtype=torch.float32, seed=1) -> StyleRecord:
    gen = torch.Generator().manual_seed(seed)
    keys = tuple(SD15_KEYS[n] for n in LAYERS)
    kv = {(step, SD15_KEYS[n], half): tuple(torch.randn(1, *LAYERS[n], generator=gen).to(dtype) for _ in "kv")
          for step in range(START, STEPS) for n in LAYERS for half in halves}
    return StyleRecord(kv=kv, layers=tuple(LAYERS), keys=keys, start_step=START, end_step=STEPS,
                       sigmas=torch.tensor(SIGMAS), arch="sd15", model_type="EPS", halves=halves, latent_shape=LATENT)


def read(path, tables=LAYER_TABLES):
    return read_style_file(str(path), LABEL, tables)


def refused(path, pattern: str, tables=LAYER_TABLES):
    """Reading must fail with a ZStarError that names the file, then says the problem."""
    with pytest.raises(ZStarError) as err:
        read(path, tables)
    message = str(err.value)
    assert message.startswith(f"style file {LABEL}: "), message
    assert re.search(pattern, message), message


def identical(a, b) -> bool:
    """Equal to the bit for tensors (dtype, shape and bytes), recursively; plain == otherwise."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(a.contiguous().view(-1).view(torch.uint8), b.contiguous().view(-1).view(torch.uint8)))
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(identical(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def assert_identical(got, want):
    if want is None:
        assert got is None
        return
    assert type(got) is type(want)
    for field in dataclasses.fields(want):
        assert identical(getattr(got, field.name), getattr(want, field.name)), field.name


# --------------------------------------------------------------------------- round trips


ROUND_TRIPS = {
    "inversion": lambda: dict(inversion=make_inversion()),
    "inversion float16": lambda: dict(inversion=make_inversion(dtype=torch.float16)),
    "inversion bfloat16 batch 2": lambda: dict(inversion=make_inversion(batch=2, dtype=torch.bfloat16)),
    "null-text inversion": lambda: dict(inversion=make_inversion(nulltext_dtype=torch.float32)),
    "null-text float16 embeddings beside bfloat16 latents":
        lambda: dict(inversion=make_inversion(dtype=torch.bfloat16, nulltext_dtype=torch.float16)),
    "record cond half": lambda: dict(record=make_record()),
    "record both halves float16": lambda: dict(record=make_record(halves=(0, 1), dtype=torch.float16)),
    "record uncond half bfloat16": lambda: dict(record=make_record(halves=(1,), dtype=torch.bfloat16)),
    "inversion and record": lambda: dict(inversion=make_inversion(batch=2), record=make_record(halves=(0, 1))),
}


@pytest.mark.parametrize("case", list(ROUND_TRIPS))
def test_round_trip_reads_back_every_tensor_bitwise_and_every_field(tmp_path, case):
    style = ROUND_TRIPS[case]()
    path = write_style_file(str(tmp_path), "style.safetensors", **style)
    assert path == str(tmp_path / "style.safetensors")
    inversion, record = read(path)
    assert_identical(inversion, style.get("inversion"))
    assert_identical(record, style.get("record"))


def test_the_file_holds_exactly_the_documented_tensors_and_metadata(tmp_path):
    """The layout in style_file's docstring is the format other readers can rely on."""
    inversion, record = make_inversion(nulltext_dtype=torch.float32), make_record(halves=(0, 1))
    path = write_style_file(str(tmp_path), "style.safetensors", inversion=inversion, record=record)
    with safe_open(path, framework="pt") as f:
        names, metadata = set(f.keys()), f.metadata()
    kv = {f"record.{kind}.{step}.output.{block}.0.{half}" for kind in "kv" for step in range(START, STEPS)
          for block in (6, 9) for half in (0, 1)}
    assert names == ({f"inversion.trajectory.{i}" for i in range(STEPS + 1)} | {"inversion.sigmas", "record.sigmas"}
                     | {f"inversion.uncond.{i}" for i in range(STEPS)} | kv)
    assert metadata.keys() == {"format", "format_version", "zstar"}
    assert (metadata["format"], metadata["format_version"]) == (FORMAT, str(FORMAT_VERSION))
    contents = json.loads(metadata["zstar"])
    assert contents["inversion"] == {
        "arch": "sd15", "model_type": "EPS", "steps": STEPS, "sigmas": SIGMAS, "timesteps": list(inversion.timesteps),
        "batch": 1, "latent_shape": list(LATENT), "dtype": "float32", "nulltext_cfg": 7.5,
        "uncond": {"shape": [1, 77, 64], "dtype": "float32"}, "guidance": None}
    assert contents["record"] == {
        "arch": "sd15", "model_type": "EPS", "steps": STEPS, "sigmas": SIGMAS, "layers": [10, 13],
        "keys": [["output", 6, 0], ["output", 9, 0]], "start_step": START, "end_step": STEPS, "halves": [0, 1],
        "latent_shape": list(LATENT), "dtype": "float32", "shapes": {"output.6.0": [16, 24], "output.9.0": [64, 16]}}


# --------------------------------------------------------------------------- writing


@pytest.mark.parametrize("crash_with", [OSError("No space left on device"), KeyboardInterrupt()],
                         ids=["disk full", "interrupted"])
def test_a_crash_mid_write_leaves_no_file_under_the_name(tmp_path, monkeypatch, crash_with):
    def crash(tensors, metadata, path):
        with open(path, "wb") as f:
            f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"partial")  # a header cut short
        raise crash_with

    folder = tmp_path / "styles"
    monkeypatch.setattr(style_file, "_write_safetensors", crash)
    with pytest.raises(type(crash_with)):
        write_style_file(str(folder), "new.safetensors", inversion=make_inversion())
    assert os.listdir(folder) == []  # neither the name nor the temporary file


def test_an_interrupted_overwrite_keeps_the_old_file_whole(tmp_path, monkeypatch):
    old = make_inversion(seed=0)
    path = Path(write_style_file(str(tmp_path), "kept.safetensors", inversion=old))
    before = path.read_bytes()

    def crash(tensors, metadata, tmp):
        Path(tmp).write_bytes(b"\x00" * 16)
        raise OSError("No space left on device")

    monkeypatch.setattr(style_file, "_write_safetensors", crash)
    with pytest.raises(OSError, match="No space left"):
        write_style_file(str(tmp_path), "kept.safetensors", inversion=make_inversion(seed=1), overwrite=True)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["kept.safetensors"]
    assert_identical(read(path)[0], old)


def test_an_existing_name_is_refused_unless_overwrite_is_set(tmp_path):
    folder = str(tmp_path)
    write_style_file(folder, "mine.safetensors", inversion=make_inversion(seed=0))
    (tmp_path / "dangling.safetensors").symlink_to(tmp_path / "gone")  # a name taken by a broken link counts
    for name in ("mine.safetensors", "dangling.safetensors"):
        with pytest.raises(ZStarError) as err:
            write_style_file(folder, name, inversion=make_inversion(seed=1))
        assert str(err.value) == (f"name: {name} already exists in {folder}; choose another name or set if_exists "
                                  "to 'overwrite'")
    new = make_inversion(seed=1)
    write_style_file(folder, "mine.safetensors", inversion=new, overwrite=True)
    assert_identical(read(tmp_path / "mine.safetensors")[0], new)
    assert sorted(os.listdir(tmp_path)) == ["dangling.safetensors", "mine.safetensors"]


def test_writing_neither_an_inversion_nor_a_record_is_refused(tmp_path):
    with pytest.raises(ZStarError) as err:
        write_style_file(str(tmp_path / "styles"), "empty.safetensors")
    assert str(err.value) == "inversion/record: connect a style inversion, a style record, or both"
    assert not (tmp_path / "styles").exists()


# --------------------------------------------------------------------------- files that are not styles


class Trap:
    """Unpickling this creates a file: proof that the reader never unpickles."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _truncated(path: Path):
    good = write_style_file(str(path.parent), "good.safetensors", inversion=make_inversion())
    data = Path(good).read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _header(length: int, text: bytes) -> bytes:
    return length.to_bytes(8, "little") + text


NOT_SAFETENSORS = {
    "random bytes": lambda p: p.write_bytes(random.Random(0).randbytes(300)),
    "empty file": lambda p: p.write_bytes(b""),
    "truncated file": _truncated,
    "header longer than the file": lambda p: p.write_bytes(_header(2**40, b"{}")),
    "header that is not JSON": lambda p: p.write_bytes(_header(5, b"{oops")),
    "pickle": lambda p: p.write_bytes(pickle.dumps({"x": Trap(p.with_name("unpickled"))})),
    "torch.save": lambda p: torch.save({"x": Trap(p.with_name("unpickled"))}, str(p)),
}


@pytest.mark.parametrize("case", list(NOT_SAFETENSORS))
def test_files_that_are_not_safetensors_are_refused_without_unpickling(tmp_path, case):
    path = tmp_path / "bad.safetensors"
    NOT_SAFETENSORS[case](path)
    refused(path, r"^style file 'bad\.safetensors': not a valid safetensors file \(")
    assert not (tmp_path / "unpickled").exists()


def test_the_pickle_trap_is_live(tmp_path):
    """The unpickling check above proves something only if unpickling really fires the trap."""
    pickle.loads(pickle.dumps(Trap(tmp_path / "unpickled"))).close()
    assert (tmp_path / "unpickled").exists()


def test_a_plain_safetensors_file_is_not_a_style(tmp_path):
    save_file({"x": torch.zeros(2)}, str(tmp_path / "bad.safetensors"))
    refused(tmp_path / "bad.safetensors", r"not a Z\* style \(no Z\* metadata\); save styles with Z\* Save Style$")


# --------------------------------------------------------------------------- tampered styles


def tampered(good: str, tensors=None, meta=None, contents=None) -> Path:
    """A copy of a good style file with its tensors, header metadata or Z* JSON changed."""
    with safe_open(good, framework="pt") as f:
        raw, metadata = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
    if tensors:
        tensors(raw)
    if contents:
        data = json.loads(metadata["zstar"])
        contents(data)
        metadata["zstar"] = json.dumps(data)
    if meta:
        meta(metadata)
    bad = Path(good).with_name("bad.safetensors")
    save_file(raw, str(bad), metadata=metadata)
    return bad


def _drop(name):
    return lambda raw: raw.pop(name)


def _set(name, value):
    return lambda raw: raw.__setitem__(name, value(raw[name]))


def _poke(value):
    """One element of a tensor set to value (NaN, inf)."""
    def change(t):
        t = t.clone()
        t.view(-1)[0] = value
        return t
    return change


def _update(section, **fields):
    return lambda c: c[section].update(fields)


def _sigmas(section, values):
    """A schedule changed in the metadata and the tensor alike, so only the schedule check can object."""
    return dict(tensors=lambda raw: raw.__setitem__(f"{section}.sigmas", torch.tensor(values)),
                contents=_update(section, sigmas=values))


def _extras(n):
    return lambda raw: raw.update({f"extra.{i}": torch.zeros(1) for i in range(n)})


HEADER_TAMPERING = {
    "no format": (dict(meta=lambda m: m.pop("format")), r"not a Z\* style"),
    "another format": (dict(meta=lambda m: m.update(format="someone.else")), r"not a Z\* style"),
    "newer format_version": (dict(meta=lambda m: m.update(format_version="2")),
                             r"format version '2' is newer than this Z\* \(1\); update comfyui-zstar$"),
    "format_version not a number": (dict(meta=lambda m: m.update(format_version="1.0")),
                                    "format version '1.0' is not a version number"),
    "no format_version": (dict(meta=lambda m: m.pop("format_version")), "format version '' is not a version number"),
    "invalid JSON": (dict(meta=lambda m: m.update(zstar="{oops")), r"its Z\* metadata is not valid JSON$"),
    "no Z* JSON": (dict(meta=lambda m: m.pop("zstar")), "not valid JSON"),
    "neither section": (dict(meta=lambda m: m.update(zstar="{}")), "its metadata holds neither an inversion nor a record$"),
    "JSON list": (dict(meta=lambda m: m.update(zstar="[]")), "holds neither an inversion nor a record"),
    "only unknown sections": (dict(meta=lambda m: m.update(zstar='{"other": {}}')), "holds neither"),
    "inversion not an object": (dict(contents=lambda c: c.update(inversion=[1])), "metadata inversion must be an object$"),
    "record not an object": (dict(contents=lambda c: c.update(record="x")), "metadata record must be an object$"),
}

INVERSION_TAMPERING = {
    "missing latent": (dict(tensors=_drop("inversion.trajectory.3")), "tensor 'inversion.trajectory.3' is missing$"),
    "latent of another size": (dict(tensors=_set("inversion.trajectory.2", lambda t: t[..., :4, :4].contiguous())),
                               r"'inversion.trajectory.2' has shape \[1, 4, 4, 4\], the metadata promises \[1, 4, 8, 8\]$"),
    "latent in another dtype": (dict(tensors=_set("inversion.trajectory.1", lambda t: t.half())),
                                "'inversion.trajectory.1' is F16, the metadata promises float32$"),
    "latent in float64": (dict(tensors=_set("inversion.trajectory.1", lambda t: t.double())),
                          "'inversion.trajectory.1' is F64, the metadata promises float32$"),
    "one latent too many": (dict(contents=_update("inversion", steps=STEPS + 1)),
                            rf"lists {STEPS + 1} sigmas for {STEPS + 1} steps \(needs steps \+ 1\)$"),
    "no steps": (dict(contents=_update("inversion", steps=0, sigmas=[1.0])), "lists 1 sigmas for 0 steps"),
    "steps as a bool": (dict(contents=_update("inversion", steps=True)),
                        "metadata inversion.steps is missing or not a int$"),
    "missing model_type": (dict(contents=lambda c: c["inversion"].pop("model_type")),
                           "metadata inversion.model_type is missing or not a str$"),
    "sigmas disagree": (dict(tensors=_set("inversion.sigmas", lambda t: t * 1.001)),
                        "tensor 'inversion.sigmas' differs from the metadata's sigmas$"),
    "NaN sigma in the metadata": (dict(contents=lambda c: c["inversion"]["sigmas"].__setitem__(0, float("nan"))),
                                  "differs from the metadata's sigmas"),
    "sigma as a string": (dict(contents=lambda c: c["inversion"]["sigmas"].__setitem__(0, "14.5")),
                          "differs from the metadata's sigmas"),
    "sigmas in float64": (dict(tensors=_set("inversion.sigmas", lambda t: t.double())),
                          "'inversion.sigmas' is F64, the metadata promises float32$"),
    "short sigma list": (dict(contents=lambda c: c["inversion"]["sigmas"].pop()), f"lists {STEPS} sigmas for {STEPS} steps"),
    "increasing sigmas": (_sigmas("inversion", SIGMAS[::-1]), "'inversion.sigmas' must be decreasing and positive \\(a flow schedule may end at 0\\)$"),
    "a repeated sigma": (_sigmas("inversion", [14.5, 7.25, 7.25, 1.75, 0.875, 0.4375, 0.03125]),
                         "must be decreasing and positive"),
    "a zero sigma inside": (_sigmas("inversion", [14.5, 7.25, 0.0, 1.75, 0.875, 0.4375, 0.03125]),
                            "must be decreasing and positive"),
    "a negative last sigma": (_sigmas("inversion", SIGMAS[:-1] + [-0.5]), "must be decreasing and positive"),
    "stray tensor": (dict(tensors=lambda raw: raw.update(extra=torch.zeros(1))),
                     r"tensors the metadata does not describe: \['extra'\]$"),
    "NaN": (dict(tensors=_set("inversion.trajectory.0", lambda t: t * float("nan"))),
            "tensor 'inversion.trajectory.0' holds NaN or infinite values$"),
    "one infinite value": (dict(tensors=_set("inversion.trajectory.5", _poke(float("-inf")))),
                           "'inversion.trajectory.5' holds NaN or infinite values$"),
    "unknown arch": (dict(contents=_update("inversion", arch="flux")), r"arch 'flux' is not one of \['sd15'\]$"),
    "timesteps": (dict(contents=_update("inversion", timesteps=[1, 2])), f"timesteps must be {STEPS} integers$"),
    "float timesteps": (dict(contents=_update("inversion", timesteps=[999.0] * STEPS)),
                        f"timesteps must be {STEPS} integers"),
    "unknown dtype": (dict(contents=_update("inversion", dtype="float64")),
                      r"metadata inversion.dtype 'float64' is not one of \['bfloat16', 'float16', 'float32'\]$"),
    "no batch": (dict(contents=_update("inversion", batch=0)), "metadata inversion.batch must be at least 1$"),
    "guidance as text": (dict(contents=_update("inversion", guidance="strong")),
                         "metadata inversion.guidance must be a finite number or null$"),
    "guidance as a bool": (dict(contents=_update("inversion", guidance=True)),
                           "metadata inversion.guidance must be a finite number or null$"),
    "batch disagrees": (dict(contents=_update("inversion", batch=2)),
                        r"'inversion.trajectory.0' has shape \[1, 4, 8, 8\], the metadata promises \[2, 4, 8, 8\]"),
}

NULLTEXT_TAMPERING = {
    "missing embedding": (dict(tensors=_drop("inversion.uncond.5")), "tensor 'inversion.uncond.5' is missing$"),
    "embedding of another width": (dict(tensors=_set("inversion.uncond.0", lambda t: t[..., :32].contiguous())),
                                   r"'inversion.uncond.0' has shape \[1, 77, 32\], the metadata promises \[1, 77, 64\]$"),
    "NaN embedding": (dict(tensors=_set("inversion.uncond.2", _poke(float("nan")))), "'inversion.uncond.2' holds NaN"),
    "uncond not an object": (dict(contents=_update("inversion", uncond="yes")),
                             "metadata inversion.uncond must be an object$"),
    "unknown embedding dtype": (dict(contents=lambda c: c["inversion"]["uncond"].update(dtype="int8")),
                                "metadata inversion.uncond.dtype 'int8' is not one of"),
    "no nulltext_cfg": (dict(contents=_update("inversion", nulltext_cfg=None)),
                        "metadata inversion.nulltext_cfg must be a number for a null-text inversion$"),
    "nulltext_cfg as a bool": (dict(contents=_update("inversion", nulltext_cfg=True)), "nulltext_cfg must be a number"),
}

KV = "record.k.3.output.9.0.0"
RECORD_TAMPERING = {
    "missing step": (dict(tensors=_drop(KV)), f"tensor '{KV}' is missing$"),
    "missing value": (dict(tensors=_drop("record.v.5.output.6.0.0")), "tensor 'record.v.5.output.6.0.0' is missing$"),
    "wrong token count": (dict(tensors=_set(KV, lambda t: t[:, 1:].contiguous())),
                          rf"'{KV}' has shape \[1, 63, 16\], the metadata promises \[1, 64, 16\]$"),
    "record in another dtype": (dict(tensors=_set(KV, lambda t: t.half())),
                                f"'{KV}' is F16, the metadata promises float32$"),
    "infinite value": (dict(tensors=_set(KV, _poke(float("inf")))), f"'{KV}' holds NaN or infinite values$"),
    "record sigmas disagree": (dict(tensors=_set("record.sigmas", lambda t: t / 2)),
                               "tensor 'record.sigmas' differs from the metadata's sigmas$"),
    "decreasing then increasing sigmas": (_sigmas("record", [14.5, 7.25, 3.5, 7.0, 0.875, 0.4375, 0.03125]),
                                          "'record.sigmas' must be decreasing and positive \\(a flow schedule may end at 0\\)$"),
    "not a token grid": (dict(contents=lambda c: c["record"]["shapes"].update({"output.9.0": [63, 16]})),
                         r"layer output.9.0 has 63 tokens, which is no level of a \[8, 8\] latent$"),
    "more tokens than the latent": (dict(contents=lambda c: c["record"]["shapes"].update({"output.6.0": [128, 24]})),
                                    "layer output.6.0 has 128 tokens, which is no level"),
    "keys disagree with layers": (dict(contents=_update("record", layers=[0, 1])),
                                  r"metadata record.keys do not match layers \[0, 1\] of sd15$"),
    "layer past the table": (dict(contents=_update("record", layers=[10, 16])),
                             "metadata record.layers must be layer numbers 0-15$"),
    "negative layer": (dict(contents=_update("record", layers=[-1, 13])), "layers must be layer numbers 0-15"),
    "no layers": (dict(contents=_update("record", layers=[])), "layers must be layer numbers 0-15"),
    "unknown arch": (dict(contents=_update("record", arch="sdxl")), r"metadata record.arch 'sdxl' is not one of \['sd15'\]$"),
    "window past the end": (dict(contents=_update("record", end_step=STEPS + 1)),
                            f"metadata record steps {START}-{STEPS + 1} do not fit {STEPS} steps$"),
    "empty window": (dict(contents=_update("record", end_step=START)), "do not fit"),
    "negative start": (dict(contents=_update("record", start_step=-1)), "do not fit"),
    "bad half": (dict(contents=_update("record", halves=[2])), r"halves must be CFG halves among \[0, 1\], got \[2\]$"),
    "uncond half promised": (dict(contents=_update("record", halves=[0, 1])), "'record.k.2.output.6.0.1' is missing"),
    "stray step": (dict(tensors=lambda raw: raw.update({"record.k.6.output.9.0.0": raw[KV].clone()})),
                   r"the metadata does not describe: \['record.k.6.output.9.0.0'\]$"),
    "missing layer shape": (dict(contents=lambda c: c["record"]["shapes"].pop("output.9.0")),
                            r"metadata record.shapes\['output.9.0'\] must be 2 positive integers, got None$"),
    "shapes not an object": (dict(contents=_update("record", shapes=[])), "metadata record.shapes is missing or not a dict$"),
}

# What the reader refuses however consistent the rest of the file is: a shape is a list of
# positive integers of the right length, halves are at most [0, 1], a stray-tensor list is cut at 5.
LIMITS = {
    "latent_shape of two numbers": ("inversion", dict(contents=_update("inversion", latent_shape=[4, 8])),
                                    r"metadata inversion.latent_shape must be 3 or 4 positive integers, got \[4, 8\]$"),
    "latent_shape with a zero": ("inversion", dict(contents=_update("inversion", latent_shape=[4, 0, 8])),
                                 r"3 or 4 positive integers, got \[4, 0, 8\]"),
    "latent_shape with a bool": ("inversion", dict(contents=_update("inversion", latent_shape=[4, True, 8])),
                                 r"3 or 4 positive integers, got \[4, True, 8\]"),
    "latent_shape with a float": ("inversion", dict(contents=_update("inversion", latent_shape=[4, 8.0, 8])),
                                  r"3 or 4 positive integers, got \[4, 8.0, 8\]"),
    "latent_shape as a string": ("record", dict(contents=_update("record", latent_shape="4x8x8")),
                                 "metadata record.latent_shape must be 3 positive integers, got '4x8x8'$"),
    "embedding shape of two numbers": ("nulltext", dict(
        contents=lambda c: c["inversion"]["uncond"].update(shape=[77, 64])),
                                       r"metadata inversion.uncond.shape must be 3 positive integers, got \[77, 64\]$"),
    "negative layer width": ("record", dict(contents=lambda c: c["record"]["shapes"].update({"output.9.0": [64, -16]})),
                             r"metadata record.shapes\['output.9.0'\] must be 2 positive integers, got \[64, -16\]$"),
    "layer shape of three numbers": ("record", dict(contents=lambda c: c["record"]["shapes"].update(
        {"output.9.0": [1, 64, 16]})), r"must be 2 positive integers, got \[1, 64, 16\]"),
    "a half listed twice": ("record", dict(contents=_update("record", halves=[0, 0])),
                            r"halves must be CFG halves among \[0, 1\], got \[0, 0\]$"),
    "three halves": ("record", dict(contents=_update("record", halves=[0, 1, 1])), r"got \[0, 1, 1\]$"),
    "no halves": ("record", dict(contents=_update("record", halves=[])), r"got \[\]$"),
    "halves as a bool": ("record", dict(contents=_update("record", halves=True)),
                         "metadata record.halves is missing or not a list$"),
    "seven stray tensors": ("inversion", dict(tensors=_extras(7)),
                            r"does not describe: \['extra.0', 'extra.1', 'extra.2', 'extra.3', 'extra.4'\] …$"),
    "five stray tensors": ("inversion", dict(tensors=_extras(5)), r"'extra.4'\]$"),
}

SOURCES = {
    "both": lambda: dict(inversion=make_inversion(), record=make_record()),
    "inversion": lambda: dict(inversion=make_inversion()),
    "nulltext": lambda: dict(inversion=make_inversion(nulltext_dtype=torch.float32)),
    "record": lambda: dict(record=make_record()),
}
TAMPERING = [pytest.param(source, change, message, id=f"{source}: {case}") for source, table in (
    ("both", HEADER_TAMPERING), ("inversion", INVERSION_TAMPERING), ("nulltext", NULLTEXT_TAMPERING),
    ("record", RECORD_TAMPERING)) for case, (change, message) in table.items()] + [
    pytest.param(source, change, message, id=f"limit: {case}") for case, (source, change, message) in LIMITS.items()]


@pytest.mark.parametrize("source, change, message", TAMPERING)
def test_tampered_files_are_refused_naming_the_file_and_the_problem(tmp_path, source, change, message):
    good = write_style_file(str(tmp_path), "good.safetensors", **SOURCES[source]())
    read(good)  # the untouched file is fine: only the change can be refused
    refused(tampered(good, **change), message)


@pytest.mark.parametrize("source", ["inversion", "record"])
def test_a_family_this_z_star_lacks_is_refused(tmp_path, source):
    """layer_tables is what this Z* can use: a file of any other family is refused by name."""
    path = write_style_file(str(tmp_path), "bad.safetensors", **SOURCES[source]())
    refused(path, rf"metadata {source}.arch 'sd15' is not one of \['sdxl'\]$", tables={"sdxl": SD15_KEYS})
    refused(path, rf"metadata {source}.arch 'sd15' is not one of \[\]$", tables={})


@pytest.mark.parametrize("what", ["inversion", "record"])
def test_data_in_a_dtype_the_format_lacks_is_refused_before_writing(tmp_path, what):
    """float64 latents (a hand-built inversion, say) get the pack's error, not a KeyError, and no file."""
    data = make_inversion() if what == "inversion" else make_record()
    if what == "inversion":
        data = dataclasses.replace(data, trajectory=tuple(t.double() for t in data.trajectory))
    else:
        data = dataclasses.replace(data, kv={k: (a.double(), b.double()) for k, (a, b) in data.kv.items()})
    with pytest.raises(ZStarError, match=rf"^{what}: float64 data cannot be saved; a style file holds "
                                         r"bfloat16, float16, float32$"):
        write_style_file(str(tmp_path), "s.safetensors", **{what: data})
    assert os.listdir(tmp_path) == []


def test_a_flow_inversion_keeps_its_guidance_and_its_schedule_ending_at_zero(tmp_path):
    """Flux.1-dev inversions carry the guidance they ran with; flow schedules end at σ = 0."""
    sigmas = [1.0, 0.75, 0.5, 0.25, 0.125, 0.0625, 0.0]
    base = make_inversion()
    inv = Inversion(trajectory=base.trajectory, sigmas=torch.tensor(sigmas), timesteps=tuple(range(9999, 9993, -1)),
                    arch="flux", model_type="Flux/Flux (flux)", guidance=1.5)
    path = write_style_file(str(tmp_path), "flux.safetensors", inversion=inv)
    back, _ = read(path, {**LAYER_TABLES, "flux": ()})
    assert back.guidance == 1.5 and back.sigmas.tolist() == sigmas and back.arch == "flux"
    assert all(torch.equal(a, b) for a, b in zip(back.trajectory, inv.trajectory))


def test_a_file_from_before_guidance_reads_as_none(tmp_path):
    good = write_style_file(str(tmp_path), "good.safetensors", inversion=make_inversion())
    back, _ = read(tampered(good, contents=lambda c: c["inversion"].pop("guidance")))
    assert back.guidance is None
