"""Z* Save Style / Z* Load Style: the style bank's nodes.

The file format is zstar_attention/style_file.py, the folders and allowed names
zstar_runtime/style_folders.py.
"""
from __future__ import annotations

import contextlib
import os

from comfy_api.latest import io
from comfy_execution.graph_utils import ExecutionBlocker

from ..zstar_attention import ZStarError
from ..zstar_runtime.style_folders import FOLDER, NONE, list_styles, load_style, resolve, save_name, save_style
from . import validation
from .search import search_aliases
from .types import InversionType, StyleFileType, StyleRecordType

IF_EXISTS = ("stop", "overwrite")


class ZStarSaveStyle(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZStarSaveStyle",
            display_name="Z* Save Style",
            category="sampling/zstar",
            **search_aliases("style bank", "save style", "style preset", "style transfer"),
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
            **search_aliases("style bank", "load style", "style preset", "reference image", "style transfer"),
            description=f"Loads a style saved with Z* Save Style (from output/{FOLDER}/ or models/{FOLDER}/). "
                        "Only .safetensors files; every tensor is checked against the file's metadata.",
            inputs=[
                io.Combo.Input("style", options=[NONE] + list_styles(), default=NONE,
                               tooltip="A saved style (refresh the page to list new ones). 'none': use the 'saved' input."),
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
