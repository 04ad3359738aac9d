"""Recurrent UNet models: building blocks, temporal units, the UNet and the named zoo."""

from vidseg.models.unet import RecurrentUNet, State
from vidseg.models.zoo import MODEL_NAMES, REPORT_PARAMS, SIZES, build_model, count_parameters, parse_model_name

__all__ = [
    "MODEL_NAMES",
    "REPORT_PARAMS",
    "SIZES",
    "RecurrentUNet",
    "State",
    "build_model",
    "count_parameters",
    "parse_model_name",
]
