"""The wire protocols: native and Vertex AI (native.py), Open Inference Protocol v2 (v2_*.py)."""
