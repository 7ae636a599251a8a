"""The image's size and cold start, as docs/PERFORMANCE.md ("The image") reports them.

    .venv/bin/python -m tests.perf.image_start [--image localhost/modelrun] [--runs 5]

Size: the layers the image adds to its base (uncompressed, as stored). Cold start: from
`buildah run` of the image's CMD (its user, the host's network, the store mounted read-only) until
`/ready` answers 200, serving the Iris model through its verified model.onnx from a folder; the
median of RUNS starts, each a fresh server in the same working container. Run after `make image`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

from function.core.store import ModelStore
from local.mirror import free_port
from tests.image import IMAGE, added_layers, end, open_image
from training.__main__ import main as training

KEY = "image-start-key-0123456789"


def ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/ready", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.image_start")
    parser.add_argument("--image", default=IMAGE)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    layers = added_layers(args.image)
    with tempfile.TemporaryDirectory(prefix="image-start-") as tmp, open_image(args.image) as image:
        Path(tmp).chmod(0o755)
        artifact = Path(tmp) / "iris"
        assert training(["train", "--no-report", "--out", str(artifact)]) == 0
        store = Path(tmp) / "store"
        models = ModelStore((store / "iris").as_uri())
        models.promote(models.publish(artifact, "v1"))
        for path in store.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        store.chmod(0o755)
        starts = []
        for _ in range(args.runs):
            port = free_port()
            env = {"PORT": str(port), "HOST": "127.0.0.1", "API_KEYS": KEY,
                   "MODEL_URI": "file:///models/iris", "ALLOW_UNSIGNED_MODELS": "true"}  # fmt: skip
            started = time.monotonic()
            process = image.run(image.command, env, [f"{store}:/models:ro"])
            try:
                while not ready(f"http://127.0.0.1:{port}"):
                    if process.poll() is not None or time.monotonic() - started > 120:
                        raise SystemExit(f"the image's server did not become ready ({port})")
                    time.sleep(0.02)
                starts.append(time.monotonic() - started)
            finally:
                end(process)
    result = {
        "image": args.image,
        "added_layers_bytes": layers,
        "added_mb": round(sum(layers) / 1e6, 1),
        "cold_start_s": [round(s, 2) for s in starts],
        "cold_start_median_s": round(statistics.median(starts), 2),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
