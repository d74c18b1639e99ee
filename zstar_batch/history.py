"""Reading a finished prompt's /history entry: did it fail, and which images did it save."""
from __future__ import annotations

from .errors import JobFailed


def status_messages(entry: dict) -> list:
    return [(m[0], m[1]) for m in entry.get("status", {}).get("messages", [])]


def check_history(name: str, entry: dict) -> dict:
    for event, data in status_messages(entry):
        if event == "execution_error":
            raise JobFailed(f"{name}: node {data.get('node_id')} ({data.get('node_type')}) failed: "
                            f"{data.get('exception_type')}: {data.get('exception_message', '').strip()}")
        if event == "execution_interrupted":
            raise JobFailed(f"{name}: the job was interrupted on the server")
    if entry.get("status", {}).get("status_str") == "error":
        raise JobFailed(f"{name}: the job ended with an error")
    return entry


def output_images(entry: dict) -> list[dict]:
    """Every saved image (type 'output') in a history entry, in node order."""
    images = []
    for node_id in sorted(entry.get("outputs", {}), key=lambda k: (len(k), k)):
        for img in entry["outputs"][node_id].get("images", []):
            if img.get("type", "output") == "output":
                images.append(img)
    return images
