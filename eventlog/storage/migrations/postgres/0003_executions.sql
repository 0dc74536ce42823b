-- One row per execution, updated in the same transaction as its events, so that listing and
-- summarising executions never scans the log.
CREATE TABLE executions (
    execution_id    bigint PRIMARY KEY,
    event_count     bigint NOT NULL,
    first_event_at  timestamptz NOT NULL,  -- created_at
    last_event_at   timestamptz NOT NULL,
    last_event_type text NOT NULL,   -- of the event with the highest seq
    last_seq        bigint NOT NULL,   -- newest activity; the listing's order and cursor
    status          text NOT NULL    -- RUNNING until a terminal event arrives
);

CREATE INDEX executions_last_seq ON executions (last_seq);

INSERT INTO executions
SELECT e.execution_id, count(*), min(e.created_at), max(e.created_at),
       (SELECT x.event_type FROM events x WHERE x.execution_id = e.execution_id
        ORDER BY x.seq DESC LIMIT 1),
       max(e.seq),
       COALESCE((SELECT CASE
                          WHEN lower(t.event_type) IN ('playbook.completed', 'playbook_completed',
                                                       'workflow.completed') THEN 'COMPLETED'
                          WHEN lower(t.event_type) IN ('playbook.failed', 'playbook_failed',
                                                       'workflow.failed') THEN 'FAILED'
                          ELSE 'CANCELLED' END
                 FROM events t
                 WHERE t.execution_id = e.execution_id AND lower(t.event_type) IN (
                     'playbook.completed', 'playbook.failed', 'playbook.cancelled',
                     'playbook_completed', 'playbook_failed', 'playbook_cancelled',
                     'workflow.completed', 'workflow.failed', 'execution.cancelled')
                 ORDER BY t.seq DESC LIMIT 1), 'RUNNING')
FROM events e GROUP BY e.execution_id;
