"""The core every part imports: the model store, artifacts, schemas, prediction, rollout state and
drift bins. No Flask here: training/, infra/ and the batch job import it."""
