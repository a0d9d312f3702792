"""The verified importer: a plugin's modules, resources and extensions served from its verified files only."""

from ..errors import TamperedFileError
from ._finder import ImportStats, VerifiedImporter, VerifiedTree, install_importer, remove_importer
from ._finder import _LoaderBase as VerifiedLoader

__all__ = [
    "ImportStats",
    "TamperedFileError",
    "VerifiedImporter",
    "VerifiedLoader",
    "VerifiedTree",
    "install_importer",
    "remove_importer",
]
