"""Writing a results page whose hand-written reading survives re-runs of its script."""

from pathlib import Path

MARKER = "<!-- end of generated part; the reading below is written by hand and kept on re-runs -->"


def write_results(path: Path, generated: str) -> None:
    """Write ``generated`` + MARKER to ``path``, followed by whatever stood below MARKER in the old file."""
    previous = path.read_text() if path.exists() else ""
    reading = previous.split(MARKER, 1)[1] if MARKER in previous else "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(generated + MARKER + reading)
    print(f"wrote {path}")
