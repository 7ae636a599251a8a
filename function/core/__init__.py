"""The core every part imports: the storage layer and the model store on it, artifacts, schemas,
prediction, rollout state and drift bins. No Flask here: training/, infra/ and the batch job
import it."""
