"""Style bank: save a style inversion and/or a fast-mode record to .safetensors, load it back.

Files live in `<ComfyUI output>/zstar_styles/` (where Z* Save Style writes) and in any
`zstar_styles` model folder (models/zstar_styles, or extra_model_paths.yaml), so a style can
be shared without its source image. Loading never unpickles: safetensors only, the header is
read first, and every tensor's name, shape and dtype must be what the file's own metadata
promises before anything is built from it. Names are confined to those folders.

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
import re
import tempfile

import torch
from comfy_api.latest import io
from comfy_execution.graph_utils import ExecutionBlocker
from safetensors import safe_open
from safetensors.torch import save_file

import folder_paths

from ..zstar_attention import ARCHITECTURES, ZStarError
from . import validation
from .style_map import token_grid
from .types import Inversion, InversionType, StyleRecord, StyleRecordType

FOLDER = "zstar_styles"
EXTENSION = ".safetensors"
FORMAT = "comfyui-zstar.style"
FORMAT_VERSION = 1
NONE = "none"
IF_EXISTS = ("stop", "overwrite")
DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
DTYPE_NAMES = {v: str(v).removeprefix("torch.") for v in DTYPES.values()}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,99}$")

StyleFileType = io.Custom("ZSTAR_STYLE_FILE")

if FOLDER not in folder_paths.folder_names_and_paths:  # models/zstar_styles, like any model folder
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))


# --------------------------------------------------------------------------- names and folders


def output_folder() -> str:
    return os.path.join(folder_paths.get_output_directory(), FOLDER)


def style_folders() -> list[str]:
    """Where styles are looked up, in order: the output folder, then the model folders."""
    folders = [output_folder()]
    with contextlib.suppress(KeyError):
        folders += [f for f in folder_paths.get_folder_paths(FOLDER) if f not in folders]
    return folders


def check_part(part: str, what: str) -> str:
    if part in (".", "..") or not _NAME.match(part) or part.endswith((".", " ")):
        raise ZStarError(f"{what}: '{part}' is not allowed; use letters, digits, space, '_', '-' and '.', "
                         "starting with a letter or digit (at most 100 characters)")
    return part


def save_name(name: str) -> str:
    """'my style' or 'my style.safetensors' → 'my style.safetensors' (no folders)."""
    name = name.strip()
    if name.lower().endswith(EXTENSION):
        name = name[: -len(EXTENSION)]
    if "/" in name or "\\" in name:
        raise ZStarError(f"name: '{name}' contains a path separator; give a plain name, it is saved in "
                         f"output/{FOLDER}/")
    return check_part(name, "name") + EXTENSION


def inside(path: str, folder: str) -> bool:
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([real, root]) == root


def resolve(name: str) -> str:
    """The file a style name refers to: a relative path with '/' separators, ending in
    .safetensors, that stays inside one of style_folders() once symlinks are resolved."""
    if not isinstance(name, str) or not name or name == NONE:
        raise ZStarError(f"style: no style chosen; pick a file saved with Z* Save Style (in output/{FOLDER}/)")
    if not name.endswith(EXTENSION):
        raise ZStarError(f"style: '{name}' is not a {EXTENSION} file; Z* loads styles from safetensors only")
    if "\\" in name or name.startswith("/") or os.path.isabs(name):
        raise ZStarError(f"style: '{name}' must be a name relative to the style folders, not a path")
    for part in name.split("/"):
        check_part(part, "style")
    for folder in style_folders():
        path = os.path.join(folder, *name.split("/"))
        if os.path.lexists(path):
            if not inside(path, folder):
                raise ZStarError(f"style: '{name}' points outside {folder} (a link?); refusing to read it")
            if os.path.isfile(path):
                return os.path.realpath(path)
    raise ZStarError(f"style: '{name}' not found in {', '.join(style_folders())}; save it with Z* Save Style first")


def list_styles() -> list[str]:
    """Every loadable style file, as names relative to its folder (first folder wins)."""
    names = []
    for folder in style_folders():
        if not os.path.isdir(folder):
            continue
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file in files:
                path = os.path.join(root, file)
                rel = os.path.relpath(path, folder).replace(os.sep, "/")
                if file.startswith(".") or not file.endswith(EXTENSION) or not inside(path, folder):
                    continue
                if all(_NAME.match(p) for p in rel.split("/")) and rel not in names:
                    names.append(rel)
    return sorted(names, key=str.lower)


# --------------------------------------------------------------------------- writing


def record_tensor_name(kind: str, step: int, key: tuple, half: int) -> str:
    block, block_id, index = key
    return f"record.{kind}.{step}.{block}.{block_id}.{index}.{half}"


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous().clone()  # own storage: safetensors refuses shared views


def inversion_payload(inv: Inversion) -> tuple[dict, dict]:
    dtype = inv.trajectory[0].dtype
    meta = {"arch": inv.arch, "model_type": inv.model_type, "steps": inv.steps,
            "sigmas": [float(s) for s in inv.sigmas], "timesteps": [int(t) for t in inv.timesteps],
            "batch": inv.batch, "latent_shape": list(inv.latent_shape), "dtype": DTYPE_NAMES[dtype],
            "nulltext_cfg": inv.nulltext_cfg, "uncond": None}
    tensors = {f"inversion.trajectory.{i}": _plain(t) for i, t in enumerate(inv.trajectory)}
    tensors["inversion.sigmas"] = _plain(inv.sigmas.float())
    if inv.uncond_embeddings is not None:
        first = inv.uncond_embeddings[0]
        meta["uncond"] = {"shape": list(first.shape), "dtype": DTYPE_NAMES[first.dtype]}
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
            "latent_shape": list(rec.latent_shape), "dtype": DTYPE_NAMES[first.dtype], "shapes": shapes}
    return meta, tensors


def _write_safetensors(tensors: dict, metadata: dict, path: str):
    save_file(tensors, path, metadata=metadata)


def save_style(name: str, inversion: Inversion | None = None, record: StyleRecord | None = None,
               overwrite: bool = False) -> str:
    """Write the style atomically to output/zstar_styles/<name>.safetensors; returns the style name."""
    if inversion is None and record is None:
        raise ZStarError("inversion/record: connect a style inversion, a style record, or both")
    file_name = save_name(name)
    folder = output_folder()
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
    return file_name


# --------------------------------------------------------------------------- reading


class _Header:
    """A style file's header, checked piece by piece; `fail` names the file in every message."""

    def __init__(self, handle, label: str):
        self.handle, self.label = handle, label
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
    if arch not in ARCHITECTURES:
        header.fail(f"metadata {section}.arch '{arch}' is not one of {sorted(ARCHITECTURES)}")
    model_type = _field(meta, "model_type", str, header, section)
    steps = _field(meta, "steps", int, header, section)
    listed = _field(meta, "sigmas", list, header, section)
    if steps < 1 or len(listed) != steps + 1:
        header.fail(f"metadata {section} lists {len(listed)} sigmas for {steps} steps (needs steps + 1)")
    sigmas = header.tensor(f"{section}.sigmas", (steps + 1,), torch.float32)
    if not all(isinstance(s, (int, float)) and math.isfinite(s) for s in listed) or \
            not torch.equal(sigmas, torch.tensor(listed, dtype=torch.float32)):
        header.fail(f"tensor '{section}.sigmas' differs from the metadata's sigmas")
    if not (sigmas > 0).all() or not (sigmas[1:] < sigmas[:-1]).all():
        header.fail(f"'{section}.sigmas' must be positive and decreasing")
    return steps, sigmas, arch, model_type


def _shape(value, header: _Header, what: str, length: int) -> tuple:
    if not isinstance(value, list) or len(value) != length or not all(
            isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in value):
        header.fail(f"metadata {what} must be {length} positive integers, got {value!r}")
    return tuple(value)


def read_inversion(meta: dict, header: _Header) -> Inversion:
    steps, sigmas, arch, model_type = _schedule(meta, header, "inversion")
    dtype = _dtype(meta, header, "inversion")
    batch = _field(meta, "batch", int, header, "inversion")
    latent_shape = _shape(meta.get("latent_shape"), header, "inversion.latent_shape", 3)
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
    return Inversion(trajectory=trajectory, sigmas=sigmas, timesteps=tuple(timesteps), arch=arch,
                     model_type=model_type, uncond_embeddings=uncond, nulltext_cfg=nulltext_cfg if uncond else None)


def read_record(meta: dict, header: _Header) -> StyleRecord:
    steps, sigmas, arch, model_type = _schedule(meta, header, "record")
    dtype = _dtype(meta, header, "record")
    all_keys = ARCHITECTURES[arch].keys
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


def load_style(name: str) -> tuple[Inversion | None, StyleRecord | None]:
    """Read and check a style file by its name in the style folders."""
    path = resolve(name)
    label = f"'{name}'"
    try:
        handle_cm = safe_open(path, framework="pt", device="cpu")
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise ZStarError(f"style file {label}: not a valid safetensors file ({e})") from None
    with handle_cm as handle:
        header = _Header(handle, label)
        meta = handle.metadata() or {}
        if meta.get("format") != FORMAT:
            header.fail("not a Z* style (no Z* metadata); save styles with Z* Save Style")
        version = meta.get("format_version", "")
        if not version.isdigit() or int(version) > FORMAT_VERSION:
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


# --------------------------------------------------------------------------- nodes


class ZStarSaveStyle(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZStarSaveStyle",
            display_name="Z* Save Style",
            category="sampling/zstar",
            description=f"Saves a style inversion and/or a fast-mode style record to output/{FOLDER}/<name>.safetensors, "
                        "so the style can be reused or shared without its source image. The file is written "
                        "atomically (never half-written under its name).",
            is_output_node=True,
            inputs=[
                io.String.Input("name", default="my_style",
                                tooltip="File name (letters, digits, space, _ - .); saved as <name>.safetensors in the output folder's zstar_styles."),
                InversionType.Input("inversion", optional=True,
                                    tooltip="The style's Z* DDIM Inversion (paper path). Connect this, a record, or both."),
                StyleRecordType.Input("record", optional=True,
                                      tooltip="The style's Z* Style Record (fast mode). Connect this, an inversion, or both."),
                io.Combo.Input("if_exists", options=list(IF_EXISTS), default=IF_EXISTS[0],
                               tooltip="When a style of this name exists: 'stop' with an error (nothing is replaced), or 'overwrite' it."),
            ],
            outputs=[StyleFileType.Output(display_name="saved",
                                          tooltip="The saved style's name; connect to Z* Load Style's 'saved' input to load exactly this file.")],
        )

    @classmethod
    def validate_inputs(cls, name=None):
        return True if name is None else validation.report(save_name, name)

    @classmethod
    def execute(cls, name, if_exists, inversion=None, record=None) -> io.NodeOutput:
        validation.check_widgets(cls, if_exists=if_exists)
        saved = save_style(name, inversion, record, overwrite=if_exists == "overwrite")
        parts = [p for p, x in (("inversion", inversion), ("record", record)) if x is not None]
        return io.NodeOutput(saved, ui={"text": [f"saved {' + '.join(parts)} to {FOLDER}/{saved}"]})


class ZStarLoadStyle(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZStarLoadStyle",
            display_name="Z* Load Style",
            category="sampling/zstar",
            description=f"Loads a style saved with Z* Save Style (from output/{FOLDER}/ or models/{FOLDER}/). "
                        "Only .safetensors files; every tensor is checked against the file's metadata.",
            inputs=[
                io.Combo.Input("style", options=[NONE] + list_styles(), default=NONE,
                               tooltip=f"A saved style (refresh the page to list new ones). 'none': use the 'saved' input."),
                StyleFileType.Input("saved", optional=True,
                                    tooltip="Optional: the output of a Z* Save Style; loads exactly that file (the list is then ignored)."),
            ],
            outputs=[
                InversionType.Output(display_name="inversion", tooltip="The style inversion, for the Z* Sampler's style input (paper path)."),
                StyleRecordType.Output(display_name="record", tooltip="The style record, for the Z* Sampler's style input (fast mode)."),
                io.String.Output(display_name="info", tooltip="What the file holds."),
            ],
        )

    @classmethod
    def validate_inputs(cls, style=None):
        if style is None or style == NONE:  # linked, or 'saved' is connected (execute says if it is not)
            return True
        try:
            resolve(style)
        except ZStarError as e:
            return str(e)
        return True

    @classmethod
    def fingerprint_inputs(cls, style, saved=None):
        name = saved or style
        with contextlib.suppress(ZStarError, OSError):
            stat = os.stat(resolve(name))
            return f"{name}:{stat.st_mtime_ns}:{stat.st_size}"
        return name

    @classmethod
    def execute(cls, style, saved=None) -> io.NodeOutput:
        name = saved or style
        inversion, record = load_style(name)
        info = [f"{name}:"]
        if inversion is not None:
            info.append(f"inversion ({inversion.describe()})")
        if record is not None:
            info.append(record.describe())
        missing = f"the style file {name} holds no {{}}; use its {{}} output"
        return io.NodeOutput(
            inversion if inversion is not None else ExecutionBlocker(missing.format("inversion", "record")),
            record if record is not None else ExecutionBlocker(missing.format("record", "inversion")),
            " ".join(info))
