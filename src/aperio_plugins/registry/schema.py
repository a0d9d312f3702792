"""Export the plugin index's JSON Schema: `python -m aperio_plugins.registry.schema DIR`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ._index import index_schema

SCHEMA_FILE_NAME = "registry-index.schema.json"


def schema_text() -> str:
    return json.dumps(index_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m aperio_plugins.registry.schema DIRECTORY", file=sys.stderr)
        return 2
    path = Path(args[0]) / SCHEMA_FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema_text(), encoding="utf-8")
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
