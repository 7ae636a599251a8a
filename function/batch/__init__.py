"""Batch scoring: large files through the same verified model, schema and checks as the API.

`python -m function.batch` runs one task of a job (a Cloud Run Jobs task, or a local process):
`shards.py` picks its share of the input, `rows.py` parses, checks and scores it a block at a
time, `output.py` formats the answers, `objects.py` holds the job's rules over core's storage
layer (no output inside its input; each object written once), and `task.py` ties them together
and writes the manifest.
"""
