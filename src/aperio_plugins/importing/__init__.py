"""The verified importer: a plugin's modules, resources and extensions served from its verified files only.

One job per module: `_files` (the signed list, checked reads), `_finder` (the meta-path
finder and its install), `_loaders`, `_resources`, `_code_cache`, `_extensions`.
"""

from ..errors import TamperedFileError
from ._files import ImportStats, VerifiedTree
from ._finder import VerifiedImporter, install_importer, remove_importer
from ._loaders import _LoaderBase as VerifiedLoader

__all__ = [
    "ImportStats",
    "TamperedFileError",
    "VerifiedImporter",
    "VerifiedLoader",
    "VerifiedTree",
    "install_importer",
    "remove_importer",
]
