"""INRs from outside gmn_inr: reference modules of published MLPs and loaders for the files
researchers hold (layouts in ``docs/formats.md``)."""
from .reference import DeepSDFDecoder, DeepSDFShape, NeRFMLP, SineLayer, Siren

__all__ = ["DeepSDFDecoder", "DeepSDFShape", "NeRFMLP", "SineLayer", "Siren"]
