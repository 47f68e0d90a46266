-- Metering that sees its own losses (issue 14). Each gateway process run (a meter) numbers its
-- events per tenant and UTC month, 1, 2, 3, …; a gap is a lost event. Events stored before this
-- migration keep 0 (not numbered) and are left out of the check.
ALTER TABLE usage_events ADD COLUMN seq bigint NOT NULL DEFAULT 0;

-- One row per meter run: its heartbeat (written by the meter's reporter every second, on a path
-- apart from the events) and how it ended. "crashed" is recorded by the next meter started on the
-- same spool directory when it finds the run's marker unlocked and not marked clean.
CREATE TABLE meter_runs (
    meter_id        text PRIMARY KEY CHECK (length(meter_id) BETWEEN 1 AND 300),
    gateway         text NOT NULL,
    started_at      timestamptz NOT NULL,
    last_report_at  timestamptz NOT NULL,
    state           text NOT NULL CHECK (state IN ('running', 'clean', 'crashed')),
    ended_at        timestamptz
);
-- Installation-wide, not tenant data: gateways write it in system scope; anyone may read which
-- meter runs exist (reconciliation of a tenant names the runs that served it).
ALTER TABLE meter_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE meter_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY meter_runs_read ON meter_runs FOR SELECT USING (true);
CREATE POLICY meter_runs_insert ON meter_runs FOR INSERT WITH CHECK ((SELECT tollgate_system_scope()));
CREATE POLICY meter_runs_update ON meter_runs FOR UPDATE USING ((SELECT tollgate_system_scope())) WITH CHECK ((SELECT tollgate_system_scope()));
CREATE POLICY meter_runs_delete ON meter_runs FOR DELETE USING ((SELECT tollgate_system_scope()));
