"""ZStarFlowInversion: the flow-ODE inversion of the rectified-flow transformers (zstar_runtime.inversion)."""
from __future__ import annotations

from comfy_api.latest import io

from ..zstar_attention import PAPER_PRESET
from ..zstar_runtime.families import family_labels
from ..zstar_runtime.inversion import FLOW_SOLVERS, conditioning_or_empty, invert_latent
from . import validation
from .inputs import prompt_inputs
from .search import search_aliases
from .types import InversionType


class ZStarFlowInversion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZStarFlowInversion",
            display_name="Z* Flow Inversion",
            category="sampling/zstar",
            **search_aliases("inversion", "flow inversion", "rf inversion", "fireflow", "invert image", "image to noise", "flux inversion", "style transfer"),
            description=f"Inverts an image latent with a rectified-flow model ({family_labels('flow')}): the flow ODE run "
                        "from the image up to pure noise on the model's own schedule (shift included, ComfyUI's "
                        "'simple' scheduler), keeping the whole trajectory. Use it for the content and the style.",
            inputs=[
                io.Model.Input("model", tooltip=f"The MODEL ({family_labels('flow')}). Invert content and style with the same model and model-sampling settings."),
                io.Latent.Input("latent", tooltip="The image to invert, from VAE Encode."),
                io.Int.Input("steps", default=PAPER_PRESET.steps, min=1, max=1000,
                             tooltip="Flow steps. Every inversion given to one Z* Sampler needs the same count; the patch's step window counts these steps."),
                io.Combo.Input("solver", options=list(FLOW_SOLVERS), default="euler",
                               tooltip="euler: first order, the DDIM step written for flow (the Z* Sampler's own step). fireflow: second order at about the same cost (FireFlow's reused midpoint velocity, one extra model call in all), a more exact inversion."),
                io.Float.Input("guidance", default=1.0, min=0.0, max=100.0, step=0.1,
                               tooltip="Flux.1-dev's guidance embedding during the inversion (inversion papers use 1). The style rows replay with it in the sampler. Ignored by models without the embedding (Flux.1-schnell and the real-CFG models)."),
                *prompt_inputs(),
            ],
            outputs=[
                InversionType.Output(display_name="inversion", tooltip="The inversion trajectory for the Z* Sampler."),
                io.Latent.Output(display_name="noise_latent", tooltip="The inverted latent at the top of the schedule."),
            ],
        )

    @classmethod
    def validate_inputs(cls, steps=None, solver=None, guidance=None):
        return validation.report(validation.check_widgets, cls, steps=steps, solver=solver, guidance=guidance)

    @classmethod
    def execute(cls, model, latent, steps, solver, guidance, conditioning=None, clip=None) -> io.NodeOutput:
        validation.check_widgets(cls, steps=steps, solver=solver, guidance=guidance)
        conditioning = conditioning_or_empty(conditioning, clip)
        inv, x_t = invert_latent(model, latent["samples"], steps, conditioning, method="flow", solver=solver,
                                 guidance=guidance)
        out = latent.copy()
        out["samples"] = x_t
        return io.NodeOutput(inv, out)
