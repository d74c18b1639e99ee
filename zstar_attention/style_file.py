"""The style file format: a style inversion and/or a fast-mode record in one .safetensors file.

Reading never unpickles: safetensors only, the header is read first, and every tensor's name,
shape and dtype must be what the file's own metadata promises before anything is built from
it; values must be finite. Writing is atomic. Where the files live (and which names are
allowed) is the runtime's business: zstar_runtime/style_folders.py.

File layout (format version 1). Header metadata: "format" = FORMAT, "format_version", and
"zstar" = JSON {"inversion": {...}, "record": {...}} (either may be absent). Tensors:

    inversion.trajectory.<i>   (batch, C, H, W) for i = 0..steps (x_T first, the clean latent last)
    inversion.sigmas           (steps + 1,) float32
    inversion.uncond.<i>       null-text embeddings, one per step (only for null-text inversions)
    record.sigmas              (steps + 1,) float32
    record.k|v.<step>.<block>.<id>.<index>.<half>   (1, M, C) for every recorded step, layer, CFG half
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from typing import Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import ZStarError
from .grid import token_grid
from .style_types import Inversion, StyleRecord

__all__ = ["FORMAT", "FORMAT_VERSION", "EXTENSION", "write_style_file", "read_style_file"]

EXTENSION = ".safetensors"
FORMAT = "comfyui-zstar.style"
FORMAT_VERSION = 1
DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
DTYPE_NAMES = {v: str(v).removeprefix("torch.") for v in DTYPES.values()}


def record_tensor_name(kind: str, step: int, key: tuple, half: int) -> str:
    block, block_id, index = key
    return f"record.{kind}.{step}.{block}.{block_id}.{index}.{half}"


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous().clone()  # own storage: safetensors refuses shared views


def _dtype_name(dtype: torch.dtype, what: str) -> str:
    if dtype not in DTYPE_NAMES:
        raise ZStarError(f"{what}: {str(dtype).removeprefix('torch.')} data cannot be saved; a style file holds "
                         f"{', '.join(sorted(DTYPE_NAMES.values()))}")
    return DTYPE_NAMES[dtype]


def inversion_payload(inv: Inversion) -> tuple[dict, dict]:
    dtype = inv.trajectory[0].dtype
    meta = {"arch": inv.arch, "model_type": inv.model_type, "steps": inv.steps,
            "sigmas": [float(s) for s in inv.sigmas], "timesteps": [int(t) for t in inv.timesteps],
            "batch": inv.batch, "latent_shape": list(inv.latent_shape), "dtype": _dtype_name(dtype, "inversion"),
            "nulltext_cfg": inv.nulltext_cfg, "uncond": None, "guidance": inv.guidance}
    tensors = {f"inversion.trajectory.{i}": _plain(t) for i, t in enumerate(inv.trajectory)}
    tensors["inversion.sigmas"] = _plain(inv.sigmas.float())
    if inv.uncond_embeddings is not None:
        first = inv.uncond_embeddings[0]
        meta["uncond"] = {"shape": list(first.shape), "dtype": _dtype_name(first.dtype, "inversion")}
        tensors.update({f"inversion.uncond.{i}": _plain(e) for i, e in enumerate(inv.uncond_embeddings)})
    return meta, tensors


def record_payload(rec: StyleRecord) -> tuple[dict, dict]:
    first = next(iter(rec.kv.values()))[0]
    shapes = {}
    tensors = {"record.sigmas": _plain(rec.sigmas.float())}
    for (step, key, half), (k, v) in rec.kv.items():
        shapes[".".join(map(str, key))] = list(k.shape[1:])
        tensors[record_tensor_name("k", step, key, half)] = _plain(k)
        tensors[record_tensor_name("v", step, key, half)] = _plain(v)
    meta = {"arch": rec.arch, "model_type": rec.model_type, "steps": rec.steps,
            "sigmas": [float(s) for s in rec.sigmas], "layers": list(rec.layers), "keys": [list(k) for k in rec.keys],
            "start_step": rec.start_step, "end_step": rec.end_step, "halves": list(rec.halves),
            "latent_shape": list(rec.latent_shape), "dtype": _dtype_name(first.dtype, "record"), "shapes": shapes}
    return meta, tensors


def _write_safetensors(tensors: dict, metadata: dict, path: str):
    save_file(tensors, path, metadata=metadata)


def write_style_file(folder: str, file_name: str, inversion: Inversion | None = None,
                     record: StyleRecord | None = None, overwrite: bool = False) -> str:
    """Write a style atomically to folder/file_name (readers see the old file or the whole new
    one, never half of it); returns the path."""
    if inversion is None and record is None:
        raise ZStarError("inversion/record: connect a style inversion, a style record, or both")
    path = os.path.join(folder, file_name)
    if os.path.lexists(path) and not overwrite:
        raise ZStarError(f"name: {file_name} already exists in {folder}; choose another name or set if_exists to "
                         "'overwrite'")
    contents, tensors = {}, {}
    for key, source, payload in (("inversion", inversion, inversion_payload), ("record", record, record_payload)):
        if source is not None:
            contents[key], part = payload(source)
            tensors.update(part)
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "zstar": json.dumps(contents)}
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{file_name}.", suffix=".tmp")
    os.close(fd)
    try:
        _write_safetensors(tensors, metadata, tmp)
        os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


# --------------------------------------------------------------------------- reading


class _Header:
    """A style file's header, checked piece by piece; `fail` names the file in every message."""

    def __init__(self, handle, label: str, layer_tables: Mapping[str, tuple]):
        self.handle, self.label, self.layer_tables = handle, label, layer_tables
        self.names = set(handle.keys())
        self.used = set()

    def fail(self, message: str):
        raise ZStarError(f"style file {self.label}: {message}")

    def tensor(self, name: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        if name not in self.names:
            self.fail(f"tensor '{name}' is missing")
        sl = self.handle.get_slice(name)
        got_shape, got_dtype = tuple(sl.get_shape()), DTYPES.get(sl.get_dtype())
        if got_shape != tuple(shape):
            self.fail(f"tensor '{name}' has shape {list(got_shape)}, the metadata promises {list(shape)}")
        if got_dtype != dtype:
            self.fail(f"tensor '{name}' is {sl.get_dtype()}, the metadata promises {DTYPE_NAMES[dtype]}")
        t = self.handle.get_tensor(name)
        if not torch.isfinite(t).all():
            self.fail(f"tensor '{name}' holds NaN or infinite values")
        self.used.add(name)
        return t


def _field(meta: dict, name: str, kind, header: _Header, section: str):
    value = meta.get(name)
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        header.fail(f"metadata {section}.{name} is missing or not a {getattr(kind, '__name__', kind)}")
    return value


def _dtype(meta: dict, header: _Header, section: str) -> torch.dtype:
    name = _field(meta, "dtype", str, header, section)
    for dtype, dtype_name in DTYPE_NAMES.items():
        if dtype_name == name:
            return dtype
    header.fail(f"metadata {section}.dtype '{name}' is not one of {sorted(DTYPE_NAMES.values())}")


def _schedule(meta: dict, header: _Header, section: str) -> tuple[int, torch.Tensor, str, str]:
    arch = _field(meta, "arch", str, header, section)
    if arch not in header.layer_tables:
        header.fail(f"metadata {section}.arch '{arch}' is not one of {sorted(header.layer_tables)}")
    model_type = _field(meta, "model_type", str, header, section)
    steps = _field(meta, "steps", int, header, section)
    listed = _field(meta, "sigmas", list, header, section)
    if steps < 1 or len(listed) != steps + 1:
        header.fail(f"metadata {section} lists {len(listed)} sigmas for {steps} steps (needs steps + 1)")
    sigmas = header.tensor(f"{section}.sigmas", (steps + 1,), torch.float32)
    if not all(isinstance(s, (int, float)) and math.isfinite(s) for s in listed) or \
            not torch.equal(sigmas, torch.tensor(listed, dtype=torch.float32)):
        header.fail(f"tensor '{section}.sigmas' differs from the metadata's sigmas")
    if not (sigmas[:-1] > 0).all() or not sigmas[-1] >= 0 or not (sigmas[1:] < sigmas[:-1]).all():
        header.fail(f"'{section}.sigmas' must be decreasing and positive (a flow schedule may end at 0)")
    return steps, sigmas, arch, model_type


def _shape(value, header: _Header, what: str, length: int | tuple) -> tuple:
    lengths = length if isinstance(length, tuple) else (length,)
    if not isinstance(value, list) or len(value) not in lengths or not all(
            isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in value):
        header.fail(f"metadata {what} must be {' or '.join(map(str, lengths))} positive integers, got {value!r}")
    return tuple(value)


def read_inversion(meta: dict, header: _Header) -> Inversion:
    steps, sigmas, arch, model_type = _schedule(meta, header, "inversion")
    dtype = _dtype(meta, header, "inversion")
    batch = _field(meta, "batch", int, header, "inversion")
    # (C, H, W), or (C, 1, H, W) for the one-frame video-VAE latents of Qwen-Image
    latent_shape = _shape(meta.get("latent_shape"), header, "inversion.latent_shape", (3, 4))
    timesteps = _field(meta, "timesteps", list, header, "inversion")
    if len(timesteps) != steps or not all(isinstance(t, int) and not isinstance(t, bool) for t in timesteps):
        header.fail(f"metadata inversion.timesteps must be {steps} integers")
    if batch < 1:
        header.fail("metadata inversion.batch must be at least 1")
    trajectory = tuple(header.tensor(f"inversion.trajectory.{i}", (batch, *latent_shape), dtype)
                       for i in range(steps + 1))
    uncond, nulltext_cfg = None, meta.get("nulltext_cfg")
    if meta.get("uncond") is not None:
        spec = meta["uncond"]
        if not isinstance(spec, dict):
            header.fail("metadata inversion.uncond must be an object")
        shape = _shape(spec.get("shape"), header, "inversion.uncond.shape", 3)  # (1, tokens, width)
        uncond = tuple(header.tensor(f"inversion.uncond.{i}", shape, _dtype(spec, header, "inversion.uncond"))
                       for i in range(steps))
        if not isinstance(nulltext_cfg, (int, float)) or isinstance(nulltext_cfg, bool):
            header.fail("metadata inversion.nulltext_cfg must be a number for a null-text inversion")
        nulltext_cfg = float(nulltext_cfg)
    guidance = meta.get("guidance")  # optional: files written before Flux support have none
    if guidance is not None and (not isinstance(guidance, (int, float)) or isinstance(guidance, bool)
                                 or not math.isfinite(guidance)):
        header.fail("metadata inversion.guidance must be a finite number or null")
    return Inversion(trajectory=trajectory, sigmas=sigmas, timesteps=tuple(timesteps), arch=arch,
                     model_type=model_type, uncond_embeddings=uncond, nulltext_cfg=nulltext_cfg if uncond else None,
                     guidance=None if guidance is None else float(guidance))


def read_record(meta: dict, header: _Header) -> StyleRecord:
    steps, sigmas, arch, model_type = _schedule(meta, header, "record")
    dtype = _dtype(meta, header, "record")
    all_keys = header.layer_tables[arch]
    layers = _field(meta, "layers", list, header, "record")
    if not layers or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < len(all_keys) for n in layers):
        header.fail(f"metadata record.layers must be layer numbers 0-{len(all_keys) - 1}")
    keys = tuple(all_keys[n] for n in layers)
    if _field(meta, "keys", list, header, "record") != [list(k) for k in keys]:
        header.fail(f"metadata record.keys do not match layers {layers} of {arch}")
    start, end = _field(meta, "start_step", int, header, "record"), _field(meta, "end_step", int, header, "record")
    if not 0 <= start < end <= steps:
        header.fail(f"metadata record steps {start}-{end} do not fit {steps} steps")
    halves = _field(meta, "halves", list, header, "record")
    if not halves or len(set(halves)) != len(halves) or not set(halves) <= {0, 1}:
        header.fail(f"metadata record.halves must be CFG halves among [0, 1], got {halves!r}")
    latent_shape = _shape(meta.get("latent_shape"), header, "record.latent_shape", 3)
    shapes = _field(meta, "shapes", dict, header, "record")
    kv = {}
    for key in keys:
        label = ".".join(map(str, key))
        tokens, width = _shape(shapes.get(label), header, f"record.shapes['{label}']", 2)
        try:
            token_grid(tokens, latent_shape[1:])
        except ZStarError:
            header.fail(f"layer {label} has {tokens} tokens, which is no level of a {list(latent_shape[1:])} latent")
        for step in range(start, end):
            for half in halves:
                kv[(step, key, half)] = tuple(header.tensor(record_tensor_name(kind, step, key, half),
                                                            (1, tokens, width), dtype) for kind in ("k", "v"))
    return StyleRecord(kv=kv, layers=tuple(layers), keys=keys, start_step=start, end_step=end, sigmas=sigmas,
                       arch=arch, model_type=model_type, halves=tuple(sorted(halves)), latent_shape=latent_shape)


def read_style_file(path: str, label: str, layer_tables: Mapping[str, tuple]) -> tuple[Inversion | None, StyleRecord | None]:
    """Read and check a style file. layer_tables: {family name: its layer keys in numbering
    order}, the families whose inversions and records this Z* can use."""
    try:
        handle_cm = safe_open(path, framework="pt", device="cpu")
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise ZStarError(f"style file {label}: not a valid safetensors file ({e})") from None
    with handle_cm as handle:
        header = _Header(handle, label, layer_tables)
        meta = handle.metadata() or {}
        if meta.get("format") != FORMAT:
            header.fail("not a Z* style (no Z* metadata); save styles with Z* Save Style")
        version = meta.get("format_version", "")
        if not version.isdigit():
            header.fail(f"format version {version!r} is not a version number; save the style again with Z* Save Style")
        if int(version) > FORMAT_VERSION:
            header.fail(f"format version {version!r} is newer than this Z* ({FORMAT_VERSION}); update comfyui-zstar")
        try:
            contents = json.loads(meta.get("zstar", ""))
        except ValueError:
            header.fail("its Z* metadata is not valid JSON")
        if not isinstance(contents, dict) or not ({"inversion", "record"} & contents.keys()):
            header.fail("its metadata holds neither an inversion nor a record")
        for section in ("inversion", "record"):
            if section in contents and not isinstance(contents[section], dict):
                header.fail(f"metadata {section} must be an object")
        inversion = read_inversion(contents["inversion"], header) if "inversion" in contents else None
        record = read_record(contents["record"], header) if "record" in contents else None
        extra = sorted(header.names - header.used)
        if extra:
            header.fail(f"tensors the metadata does not describe: {extra[:5]}{' …' if len(extra) > 5 else ''}")
    return inversion, record
