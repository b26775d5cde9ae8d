"""Usage at scale: ``usage_events`` partitioned by month of ``ts``, ids and hourly rollups beside it.

The existing table is converted in one statement (a ``DO`` block, so all or nothing): it is
renamed away, the partitioned table is created under its name (monthly RANGE partitions on
``ts`` for every month holding events and for the current window, plus a DEFAULT partition so
no insert ever fails), the rows are moved over with their ``seq`` (the sequence is handed to the
new table), the ``(customer_id, meter_id, ts)`` index is built on the partitioned table, and
the old table is dropped.

- **Idempotency.** A unique key on a partitioned table must include the partition key, and an
  event id alone must stay unique whatever its timestamp (a retried event with no timestamp
  gets a new one). So the ids move to ``usage_event_ids`` (``event_id`` its primary key): the
  ingest statement inserts each new event's id there in the same statement as the event, and the
  key refuses a repeat exactly as the old primary key did — in one batch, across batches and
  between concurrent ones.
- **Rollups.** ``usage_rollups`` holds, per (customer, meter, UTC hour), the events' count, sum,
  max and the latest ``(ts, seq, value)``: the ingest statement appends one row per hour its
  batch touches, in the same statement (append-only: no upsert, no row locks shared between
  concurrent batches), and the worker merges an hour's rows into one (``usage_rollup_state``
  holds how far it got; a BRIN index on ``id`` finds the newer rows). It is built here from the
  existing events.
- **Forwarding.** ``usage_outbox`` rows carry their event's ``customer_id``, ``meter_id`` and
  ``ts`` so the forwarder finds the event through the partitioned index (there is no index on
  ``event_id`` in ``usage_events`` any more); filled here for the rows that exist.
- **Deletes.** A trigger keeps ids and rollups exact when raw events are deleted (an operator's
  repair): the deleted events' ids are forgotten and their hours recomputed from what remains.
  Dropping a partition (retention) fires no trigger: ids and rollups stay.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine.finder import engine_finder

ID = "2026-12-07T22:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "usage_events partitioned by month; usage_event_ids; usage_rollups"

CONVERT = r"""
DO $convert$
DECLARE
    first_month timestamptz;
    last_month timestamptz;
    month timestamptz;
BEGIN
    PERFORM set_config('timezone', 'UTC', true);

    CREATE TABLE usage_event_ids (
        event_id varchar(255) NOT NULL,
        CONSTRAINT usage_event_ids_pkey PRIMARY KEY (event_id)
    );
    CREATE TABLE usage_rollups (
        id bigserial NOT NULL,
        customer_id uuid NOT NULL,
        meter_id uuid NOT NULL,
        hour timestamptz NOT NULL,
        events bigint NOT NULL,
        total numeric NOT NULL,
        peak numeric NOT NULL,
        latest_ts timestamptz NOT NULL,
        latest_seq bigint NOT NULL,
        latest_value numeric NOT NULL
    );
    CREATE INDEX usage_rollups_hour_idx ON usage_rollups (customer_id, meter_id, hour);
    CREATE INDEX usage_rollups_id_idx ON usage_rollups USING brin (id);
    CREATE TABLE usage_rollup_state (
        id int NOT NULL DEFAULT 1,
        compacted_to bigint NOT NULL DEFAULT 0,
        horizon bigint NOT NULL DEFAULT 0,
        CONSTRAINT usage_rollup_state_pkey PRIMARY KEY (id),
        CONSTRAINT usage_rollup_state_single_row CHECK (id = 1)
    );
    INSERT INTO usage_rollup_state DEFAULT VALUES;

    ALTER TABLE usage_events RENAME TO usage_events_unpartitioned;
    ALTER TABLE usage_events_unpartitioned
        RENAME CONSTRAINT usage_events_pkey TO usage_events_unpartitioned_pkey;
    ALTER INDEX usage_events_customer_meter_ts_idx RENAME TO usage_events_unpartitioned_idx;
    ALTER SEQUENCE usage_events_seq_seq OWNED BY NONE;

    CREATE TABLE usage_events (
        event_id varchar(255) NOT NULL,
        customer_id uuid NOT NULL,
        meter_id uuid NOT NULL,
        ts timestamptz NOT NULL,
        value numeric NOT NULL DEFAULT 1,
        properties jsonb,
        ingested_at timestamptz NOT NULL,
        seq bigint NOT NULL DEFAULT nextval('usage_events_seq_seq')
    ) PARTITION BY RANGE (ts);
    ALTER SEQUENCE usage_events_seq_seq OWNED BY usage_events.seq;
    CREATE TABLE usage_events_default PARTITION OF usage_events DEFAULT;

    SELECT least(date_trunc('month', min(ts)), date_trunc('month', now()) - interval '1 month'),
           greatest(date_trunc('month', max(ts)), date_trunc('month', now()) + interval '2 months')
      INTO first_month, last_month
      FROM usage_events_unpartitioned;
    month := first_month;
    WHILE month <= last_month LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF usage_events FOR VALUES FROM (%L) TO (%L)',
            'usage_events_p' || to_char(month, 'YYYY_MM'), month, month + interval '1 month');
        month := month + interval '1 month';
    END LOOP;

    INSERT INTO usage_event_ids (event_id) SELECT event_id FROM usage_events_unpartitioned;
    INSERT INTO usage_events
        (event_id, customer_id, meter_id, ts, value, properties, ingested_at, seq)
    SELECT event_id, customer_id, meter_id, ts, value, properties, ingested_at, seq
      FROM usage_events_unpartitioned;
    CREATE INDEX usage_events_customer_meter_ts_idx ON usage_events (customer_id, meter_id, ts);

    INSERT INTO usage_rollups (customer_id, meter_id, hour, events, total, peak, latest_ts,
                               latest_seq, latest_value)
    SELECT customer_id, meter_id, date_bin('1 hour', ts, timestamptz '2000-01-01 00:00+00'),
           count(*), sum(value), max(value), max(ts),
           (array_agg(seq ORDER BY ts DESC, seq DESC))[1],
           (array_agg(value ORDER BY ts DESC, seq DESC))[1]
      FROM usage_events GROUP BY 1, 2, 3;

    ALTER TABLE usage_outbox ADD COLUMN customer_id uuid, ADD COLUMN meter_id uuid,
        ADD COLUMN event_ts timestamptz;
    UPDATE usage_outbox o SET customer_id = e.customer_id, meter_id = e.meter_id, event_ts = e.ts
      FROM usage_events_unpartitioned e WHERE e.event_id = o.event_id;

    DROP TABLE usage_events_unpartitioned;
END
$convert$
"""

FORGET = r"""
CREATE FUNCTION usage_events_forget() RETURNS trigger LANGUAGE plpgsql AS $forget$
BEGIN
    DELETE FROM usage_event_ids i USING gone g WHERE i.event_id = g.event_id;
    DELETE FROM usage_rollups r
     USING (SELECT DISTINCT customer_id, meter_id,
                   date_bin('1 hour', ts, timestamptz '2000-01-01 00:00+00') AS hour FROM gone) h
     WHERE r.customer_id = h.customer_id AND r.meter_id = h.meter_id AND r.hour = h.hour;
    INSERT INTO usage_rollups (customer_id, meter_id, hour, events, total, peak, latest_ts,
                               latest_seq, latest_value)
    SELECT e.customer_id, e.meter_id, h.hour, count(*), sum(e.value), max(e.value), max(e.ts),
           (array_agg(e.seq ORDER BY e.ts DESC, e.seq DESC))[1],
           (array_agg(e.value ORDER BY e.ts DESC, e.seq DESC))[1]
      FROM (SELECT DISTINCT customer_id, meter_id,
                   date_bin('1 hour', ts, timestamptz '2000-01-01 00:00+00') AS hour FROM gone) h
      JOIN usage_events e ON e.customer_id = h.customer_id AND e.meter_id = h.meter_id
       AND e.ts >= h.hour AND e.ts < h.hour + interval '1 hour'
     GROUP BY e.customer_id, e.meter_id, h.hour;
    RETURN NULL;
END
$forget$
"""

STATEMENTS = [
    CONVERT,
    FORGET,
    "CREATE TRIGGER usage_events_forget AFTER DELETE ON usage_events "
    "REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION usage_events_forget()",
]


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="billing_gql", description=DESCRIPTION)

    async def run() -> None:
        engine = engine_finder()
        assert engine is not None
        for statement in STATEMENTS:
            await engine.run_ddl(statement)

    manager.add_raw(run)
    return manager
