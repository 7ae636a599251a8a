"""`make monitor`: the local mirror without Docker.

The GCS emulator (fake-gcs-server) with the trained model published into it, the function
started as the container starts it and reading the model from the emulated bucket, and — when
the Debian packages are installed — the real Prometheus and Alertmanager with the mirror's own
configuration files (only addresses substituted), plus the webhook that receives alerts.
Grafana needs Docker: `make local`.

Your own model instead, as `make serve` takes it: MODEL (a name in STORE, default
.modelrun/store) or MODEL_URI (a model's root). The function then reads that root itself, so that
`promote`, `rollback` and `rollout` there reach it (MODEL_REFRESH_SECONDS, default 2 here), and
`rollout status` / `promote --auto` have this Prometheus to read; no emulator is started.

Ports (all on 127.0.0.1): PORT (the function, 8080), METRICS_PORT (its keyless metrics, 9464,
which Prometheus scrapes as the sidecar does on Cloud Run), GCS_PORT (4443), PROMETHEUS_PORT
(9090), ALERTMANAGER_PORT (9093), ALERT_SINK_PORT (5001). SIGTERM or Ctrl-C stops every child and
removes the working folder.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from function.core.baseline import BASELINE_FILE, parse_baseline
from function.core.errors import IntegrityError
from function.core.store import bucket_store, model_root
from local import container, drift_traffic
from local.alert_sink import AlertSink
from local.mirror import (
    ALERTMANAGER_BINARY,
    PROMETHEUS_BINARY,
    ROOT,
    Mirror,
    fake_gcs_command,
    installed,
    process,
    wait_for,
)
from local.serve import STATE, dev_key, ensure_model, trusted_key
from training.__main__ import main as training

BUCKET = "models-local"
# The drift demo: Prometheus's drift window and alert hold, shortened from 1h and 30m.
DEMO_WINDOW, DEMO_HOLD, DEMO_STEADY_SECONDS = "2m", "1m", 180
OWN_MODEL_REFRESH_SECONDS = "2"  # your model's rollouts are followed: see the module's doc
ARTIFACT = ROOT / "artifacts" / "iris"


def needs_training(artifact: Path) -> bool:
    """Whether the default model must be trained: missing, or trained by a modelrun whose drift
    baseline this one cannot read (the service would refuse to load it)."""
    try:
        parse_baseline((artifact / BASELINE_FILE).read_bytes(), str(artifact))
    except (OSError, IntegrityError):
        return True
    return False


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Unwind like Ctrl-C: every `with` below stops its process and the folder is removed.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m local.monitor", description=__doc__)
    parser.add_argument(
        "--drift",
        action="store_true",
        help=f"the drift demo: the drift window shortened to {DEMO_WINDOW} (alerts held "
        f"{DEMO_HOLD}), training-like rows for {DEMO_STEADY_SECONDS}s, then "
        f"{drift_traffic.SHIFTED_FEATURE} moved by two standard deviations",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    with contextlib.suppress(KeyboardInterrupt):
        run(os.environ, drift=args.drift)


def run(environ: Mapping[str, str], drift: bool = False) -> None:
    """Start the mirror and serve until interrupted; stop everything it started on the way out."""
    port = environ.get("PORT", "8080")
    metrics_port = environ.get("METRICS_PORT", "9464")
    own = bool(environ.get("MODEL_URI", "").strip() or environ.get("MODEL", "").strip())
    if own and drift:
        raise SystemExit("the drift demo sends Iris rows: run it without MODEL or MODEL_URI")
    key = dev_key()
    if not own and needs_training(ARTIFACT) and training(["train", "--out", str(ARTIFACT)]):
        raise SystemExit("training the default model failed")
    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="modelrun-monitor-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        function = f"127.0.0.1:{port}"
        mirror = Mirror(
            workdir,
            metrics=f"127.0.0.1:{metrics_port}",
            prometheus=f"127.0.0.1:{environ.get('PROMETHEUS_PORT', '9090')}",
            alertmanager=f"127.0.0.1:{environ.get('ALERTMANAGER_PORT', '9093')}",
            alert_sink=f"127.0.0.1:{environ.get('ALERT_SINK_PORT', '5001')}",
            drift=(DEMO_WINDOW, DEMO_HOLD) if drift else None,
        )
        served, model_line = _own_model(environ) if own else _emulated_iris(environ, stack, workdir)
        env = container.process_environment(
            {
                **served,
                **trusted_key(environ),
                "API_KEYS": key,
                "ENVIRONMENT": "development",
                "PORT": port,
                "HOST": "127.0.0.1",
                "METRICS_PORT": metrics_port,
                # Payload records (with PAYLOAD_SAMPLE_RATE), as `make serve` keeps them.
                "PAYLOAD_DIR": environ.get("PAYLOAD_DIR", "").strip() or str(STATE / "payloads"),
            },
            environ,
        )
        stack.enter_context(process(container.command(), workdir / "function.log", env))
        wait_for(f"http://{function}/ready", timeout=60)
        lines = [
            f"function      http://{function}  (key: {key}; logs {workdir}/function.log)",
            f"its metrics   http://{mirror.metrics}/metrics  (no key: this machine only)",
            model_line,
        ]
        if installed(PROMETHEUS_BINARY) and installed(ALERTMANAGER_BINARY):
            sink = AlertSink("127.0.0.1", int(mirror.alert_sink.rsplit(":", 1)[1])).start()
            stack.callback(sink.stop)
            stack.enter_context(process(mirror.alertmanager_command(), workdir / "am.log"))
            stack.enter_context(process(mirror.prometheus_command(), workdir / "prom.log"))
            wait_for(f"http://{mirror.alertmanager}/-/ready")
            wait_for(f"http://{mirror.prometheus}/-/ready")  # the banner links work when shown
            # Debian's Prometheus has no React UI: its pages are the classic ones, which the
            # upstream 2.x builds (Compose's) serve too.
            lines += [
                f"Prometheus    http://{mirror.prometheus}/classic/alerts  "
                f"(targets: http://{mirror.prometheus}/classic/targets)",
                f"Alertmanager  http://{mirror.alertmanager}",
                f"alert webhook http://{mirror.alert_sink}/alerts (alerts print below)",
            ]
        else:
            lines.append(
                "Prometheus and Alertmanager are not installed: "
                "apt-get install prometheus prometheus-alertmanager"
            )
        lines.append("Grafana needs Docker: `make local` provisions it with the dashboard.")
        if drift:
            psi = "modelrun:drift_feature_psi"
            lines.append(f"drift PSI     http://{mirror.prometheus}/classic/graph?g0.expr={psi}")
        print("\nmodelrun mirror is up:\n  " + "\n  ".join(lines) + "\n\nStop with Ctrl-C.")
        sys.stdout.flush()
        if drift:
            stopped = threading.Event()
            stack.callback(stopped.set)
            started = time.monotonic()
            threading.Thread(
                target=drift_traffic.replay,
                args=(
                    f"http://{function}",
                    key,
                    lambda: time.monotonic() - started > DEMO_STEADY_SECONDS,
                    stopped,
                ),
                name="drift-demo",
                daemon=True,
            ).start()
        while True:
            time.sleep(3600)


def _own_model(environ: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """Your model's root (MODEL_URI, or MODEL in STORE as `make serve` finds it), served from
    there and followed (its promotions and rollouts)."""
    model_uri = environ.get("MODEL_URI", "").strip()
    if not model_uri:
        store = environ.get("STORE", "").strip() or (STATE / "store").as_uri()
        model_uri = ensure_model(store, environ["MODEL"].strip())
    refresh = environ.get("MODEL_REFRESH_SECONDS", "").strip() or OWN_MODEL_REFRESH_SECONDS
    served = {"MODEL_URI": model_uri, "MODEL_REFRESH_SECONDS": refresh}
    line = f"model         {model_uri}  (promotions and rollouts there followed every {refresh} s)"
    return served, line


def _emulated_iris(
    environ: Mapping[str, str], stack: contextlib.ExitStack, workdir: Path
) -> tuple[dict[str, str], str]:
    """The default: the GCS emulator with the trained Iris model published into it, as the
    Compose mirror does."""
    gcs_port = int(environ.get("GCS_PORT", "4443"))
    gcs = f"http://127.0.0.1:{gcs_port}"
    stack.enter_context(
        process(fake_gcs_command(gcs_port, workdir / "gcs", BUCKET), workdir / "gcs.log")
    )
    wait_for(f"{gcs}/storage/v1/b")
    store = bucket_store(BUCKET)
    model_uri = model_root(store, "iris")
    emulated = {**environ, "STORAGE_EMULATOR_HOST": gcs}
    published = subprocess.run(  # as Compose's publish service does; no global change here
        [sys.executable, "-m", "training", "publish", "--store", store,
         str(ARTIFACT), "--promote"],
        cwd=ROOT, env=emulated, capture_output=True, text=True,
    )  # fmt: skip
    if published.returncode != 0:
        raise SystemExit(f"publishing to the emulator failed: {published.stderr.strip()}")
    served = {"STORAGE_EMULATOR_HOST": gcs, "MODEL_URI": model_uri}
    return served, f"GCS emulator  {gcs}  (bucket {BUCKET}, model {model_uri})"


if __name__ == "__main__":
    main()
