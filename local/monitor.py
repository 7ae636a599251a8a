"""`make monitor`: the local mirror without Docker.

The GCS emulator (fake-gcs-server) with the trained model published into it, the function
started as the container starts it and reading the model from the emulated bucket, and — when
the Debian packages are installed — the real Prometheus and Alertmanager with the mirror's own
configuration files (only addresses substituted), plus the webhook that receives alerts.
Grafana needs Docker: `make local`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from function.store import ModelStore
from local import container
from local.alert_sink import AlertSink
from local.mirror import (
    ALERTMANAGER_BINARY,
    PROMETHEUS_BINARY,
    ROOT,
    Mirror,
    fake_gcs_command,
    free_port,
    installed,
    process,
    wait_for,
)
from local.serve import dev_key
from training.__main__ import main as training

BUCKET = "models-local"
ARTIFACT = ROOT / "artifacts" / "iris"


def main() -> None:
    port = os.environ.get("PORT", "8080")
    workdir = Path(tempfile.mkdtemp(prefix="modelrun-monitor-"))
    mirror = Mirror(
        workdir,
        function=f"127.0.0.1:{port}",
        prometheus=f"127.0.0.1:{os.environ.get('PROMETHEUS_PORT', '9090')}",
        alertmanager=f"127.0.0.1:{os.environ.get('ALERTMANAGER_PORT', '9093')}",
        alert_sink=f"127.0.0.1:{os.environ.get('ALERT_SINK_PORT', '5001')}",
    )
    key = dev_key()
    if not (ARTIFACT / "metadata.json").exists() and training(["train", "--out", str(ARTIFACT)]):
        raise SystemExit("training the default model failed")
    gcs_port = free_port()
    gcs = f"http://127.0.0.1:{gcs_port}"
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        stack.enter_context(
            process(fake_gcs_command(gcs_port, workdir / "gcs", BUCKET), workdir / "gcs.log")
        )
        wait_for(f"{gcs}/storage/v1/b")
        os.environ["STORAGE_EMULATOR_HOST"] = gcs
        store = ModelStore(f"gs://{BUCKET}/models/iris")
        store.promote(store.publish(ARTIFACT))
        env = {
            **os.environ,
            **container.environment(),
            "MODEL_URI": store.uri,
            "API_KEYS": key,
            "ENVIRONMENT": "development",
            "PORT": port,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        stack.enter_context(process(container.command(), workdir / "function.log", env))
        wait_for(f"http://{mirror.function}/ready", timeout=60)
        lines = [
            f"function      http://{mirror.function}  (key: {key}; logs {workdir}/function.log)",
            f"GCS emulator  {gcs}  (bucket {BUCKET}, model {store.uri})",
        ]
        if installed(PROMETHEUS_BINARY) and installed(ALERTMANAGER_BINARY):
            sink = AlertSink("127.0.0.1", int(mirror.alert_sink.rsplit(":", 1)[1])).start()
            stack.callback(sink.stop)
            stack.enter_context(process(mirror.alertmanager_command(), workdir / "am.log"))
            stack.enter_context(process(mirror.prometheus_command(key), workdir / "prom.log"))
            lines += [
                f"Prometheus    http://{mirror.prometheus}  (alerts: /alerts, targets: /targets)",
                f"Alertmanager  http://{mirror.alertmanager}",
                f"alert webhook http://{mirror.alert_sink}/alerts (alerts print below)",
            ]
        else:
            lines.append(
                "Prometheus and Alertmanager are not installed: "
                "apt-get install prometheus prometheus-alertmanager"
            )
        lines.append("Grafana needs Docker: `make local` provisions it with the dashboard.")
        print("\nmodelrun mirror is up:\n  " + "\n  ".join(lines) + "\n\nStop with Ctrl-C.")
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
