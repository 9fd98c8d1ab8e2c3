"""INRs from outside gmn_inr: reference modules of published MLPs and loaders for the files
researchers hold (layouts in ``docs/formats.md``; the loaders themselves in ``formats``, ``gmnerf``,
``cardace``, ``ingp``, ``deepsdf`` and ``nglod``, all reached through :func:`load_inr`)."""
from .formats import FORMATS, FormatError, load_inr, save_field, sniff_format
from .reference import DeepSDFDecoder, DeepSDFShape, NeRFMLP, SineLayer, Siren

__all__ = ["DeepSDFDecoder", "DeepSDFShape", "FORMATS", "FormatError", "NeRFMLP", "SineLayer", "Siren", "load_inr",
           "save_field", "sniff_format"]
