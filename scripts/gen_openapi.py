"""Writes openapi.json (the HTTP shim's OpenAPI description, every provider's routes) from the code; `make proto` runs it."""

import json
import sys
from pathlib import Path

from payments_svc.api.http.openapi import build_openapi

target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "openapi.json"
target.write_text(json.dumps(build_openapi(), indent=2) + "\n")
