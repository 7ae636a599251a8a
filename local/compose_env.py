"""Write local/.env for `make local` (Docker Compose)."""

from __future__ import annotations

from function.store import bucket_store, model_root
from local.mirror import LOCAL, ROOT
from local.serve import NAME, dev_key


def environment(example: str, key: str) -> str:
    """local/.env from the example: the key filled in, the store and the model's root derived
    from MODEL_BUCKET the one way function/store.py defines."""
    values = dict(line.split("=", 1) for line in example.splitlines() if "=" in line)
    store = bucket_store(values["MODEL_BUCKET"])
    derived = {"MODELRUN_API_KEY": key, "MODEL_STORE": store, "MODEL_URI": model_root(store, NAME)}
    lines = []
    for line in example.splitlines():
        name = line.partition("=")[0]
        lines.append(f"{name}={derived[name]}" if name in derived else line)
    return "\n".join(lines) + "\n"


def main() -> None:
    key = dev_key()
    (LOCAL / ".env").write_text(environment((LOCAL / ".env.example").read_text(), key))
    (LOCAL / ".env").chmod(0o600)
    print(f"wrote {(LOCAL / '.env').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
