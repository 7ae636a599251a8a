"""Write local/.env and the key file Prometheus reads, for `make local` (Docker Compose)."""

from __future__ import annotations

from local.mirror import LOCAL, ROOT
from local.serve import STATE, dev_key


def main() -> None:
    key = dev_key()
    lines = (LOCAL / ".env.example").read_text().splitlines()
    env = [
        f"MODELRUN_API_KEY={key}" if line.startswith("MODELRUN_API_KEY=") else line
        for line in lines
    ]
    (LOCAL / ".env").write_text("\n".join(env) + "\n")
    (LOCAL / ".env").chmod(0o600)
    # Prometheus runs as nobody in its container: its copy of the (development) key is readable.
    prometheus_key = STATE / "prometheus-api-key"
    prometheus_key.write_text(key)
    prometheus_key.chmod(0o644)
    print(f"wrote {(LOCAL / '.env').relative_to(ROOT)} and {prometheus_key.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
