"""Export the envelopes' JSON Schema: `python -m aperio_hookspecs.schema DIR`.

One file per envelope, named after the model, so that non-Python consumers
(a SIEM pipeline, a registry validator) can check envelopes without this package.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ._envelopes import ENVELOPE_MODELS
from ._version import __version__


def envelope_schemas() -> dict[str, dict[str, object]]:
    """Return each envelope's JSON Schema keyed by its file name."""
    schemas: dict[str, dict[str, object]] = {}
    for model in ENVELOPE_MODELS:
        schema = model.model_json_schema()
        schema["$comment"] = f"aperio plugin API {__version__}"
        schemas[f"{model.__name__}.schema.json"] = schema
    return schemas


def write_schemas(directory: Path) -> list[Path]:
    """Write every schema into `directory`; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in envelope_schemas().items():
        path = directory / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m aperio_hookspecs.schema DIRECTORY", file=sys.stderr)
        return 2
    for path in write_schemas(Path(args[0])):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
