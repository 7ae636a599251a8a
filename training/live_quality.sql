-- Live quality: every answered row of one model, joined with the last label given for it.
-- BigQuery's dialect, over the table the Log Router sink writes (`timestamp`, the entry's time;
-- `jsonPayload`, the record's fields). training/live_query.py runs this same text on BigQuery and,
-- offline, on DuckDB over the local records arranged in that shape.
-- One row per labelled answer, plus each (version, role)'s first row so that a version with no
-- label yet still reports how many rows it answered.
WITH answers AS (
  SELECT
    p.jsonPayload.version AS version,
    p.jsonPayload.role AS role,
    p.jsonPayload.request_id AS request_id,
    pos AS row_index,
    COALESCE(JSON_VALUE(output, '$.label'), JSON_VALUE(output, '$.value')) AS predicted
  FROM {payloads} AS p, UNNEST(JSON_QUERY_ARRAY(p.jsonPayload.outputs)) AS output WITH OFFSET AS pos
  WHERE p.timestamp >= @since
    AND p.jsonPayload.kind = 'prediction'
    AND p.jsonPayload.model = @model
    AND p.jsonPayload.outcome = 'ok'
  -- A log line delivered twice is one answer.
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY p.jsonPayload.version, p.jsonPayload.role, p.jsonPayload.request_id, pos
    ORDER BY p.timestamp) = 1
),
truths AS (
  SELECT
    f.jsonPayload.request_id AS request_id,
    f.jsonPayload.`row` AS row_index,
    JSON_VALUE(f.jsonPayload.truth, '$') AS truth
  FROM {payloads} AS f
  WHERE f.timestamp >= @since
    AND f.jsonPayload.kind = 'feedback'
    AND f.jsonPayload.model = @model
  -- The last label given for a row wins.
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY f.jsonPayload.request_id, f.jsonPayload.`row`
    ORDER BY f.timestamp DESC) = 1
),
joined AS (
  SELECT
    a.version,
    a.role,
    a.predicted,
    t.truth,
    COUNT(*) OVER (PARTITION BY a.version, a.role) AS answered,
    ROW_NUMBER() OVER (PARTITION BY a.version, a.role ORDER BY a.request_id, a.row_index) AS nth
  FROM answers AS a
  LEFT JOIN truths AS t ON t.request_id = a.request_id AND t.row_index = a.row_index
)
SELECT version, role, predicted, truth, answered
FROM joined
WHERE truth IS NOT NULL OR nth = 1
