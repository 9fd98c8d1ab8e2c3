"""INRs from outside gmn_inr: reference modules of published MLPs and loaders for the files
researchers hold (layouts in ``docs/formats.md``; the loaders themselves in ``formats``, ``gmnerf``,
``cardace``, ``ingp``, ``deepsdf`` and ``nglod``, and the forms of ``sources`` (a module's state dict,
tiny-cuda-nn params with their config, a plain Linear stack), all reached through :func:`load_inr`)."""
from .formats import FORMATS, FormatError, save_field, sniff_format
from .reference import DeepSDFDecoder, DeepSDFShape, NeRFMLP, SineLayer, Siren
from .sources import ReadOptions, add_reader_arguments, load_inr, read_inr, reader_from_args

__all__ = ["DeepSDFDecoder", "DeepSDFShape", "FORMATS", "FormatError", "NeRFMLP", "ReadOptions", "SineLayer", "Siren",
           "add_reader_arguments", "load_inr", "read_inr", "reader_from_args", "save_field", "sniff_format"]
