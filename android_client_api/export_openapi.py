"""Write android_client_api/openapi.json, the contract Android clients build against.

Run: .venv/bin/python -m android_client_api.export_openapi
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from android_client_api.app import create_app
from android_client_api.service import LanternService
from android_client_api.settings import ServerSettings
from app.assistant import Assistant

TARGET = Path(__file__).parent / "openapi.json"


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        assistant = Assistant(Path(home))
        service = LanternService.start(assistant, ServerSettings(slots=1))
        schema = create_app(service).openapi()
        service.close()
        assistant.close()
    TARGET.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
