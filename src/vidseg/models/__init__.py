"""Recurrent UNet models: building blocks, temporal units, the UNet and the named zoo."""

from vidseg.models.inference import InferenceUNet, optimize_for_inference
from vidseg.models.unet import RecurrentUNet, State
from vidseg.models.zoo import MODEL_NAMES, REPORT_PARAMS, SIZES, build_model, count_parameters, parse_model_name

__all__ = [
    "InferenceUNet",
    "optimize_for_inference",
    "MODEL_NAMES",
    "REPORT_PARAMS",
    "SIZES",
    "RecurrentUNet",
    "State",
    "build_model",
    "count_parameters",
    "parse_model_name",
]
