-- Invoices per consumer team and calendar month, and the gateway-side answered-call counters the
-- reconciliation compares with stored events, rollups and invoices.

-- One invoice per team and period at a time: a draft (recomputed as usage arrives) or an issued
-- invoice (immutable, numbered). Voiding frees the slot for a re-issued invoice that names the one
-- it replaces.
CREATE TABLE invoices (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    team_id         uuid NOT NULL,
    team_name       text NOT NULL,
    period          date NOT NULL CHECK (extract(day FROM period) = 1),
    status          text NOT NULL CHECK (status IN ('draft', 'issued', 'void')),
    number          text,
    currency        char(3) NOT NULL,
    total_minor     bigint NOT NULL,
    replaces_id     uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    issued_at       timestamptz,
    voided_at       timestamptz,
    void_reason     text,
    CHECK ((status = 'draft') = (number IS NULL)),
    UNIQUE (tenant_id, id),
    UNIQUE (tenant_id, number),
    FOREIGN KEY (tenant_id, team_id) REFERENCES teams(tenant_id, id)
);
CREATE UNIQUE INDEX invoices_one_open ON invoices (tenant_id, team_id, period) WHERE status IN ('draft', 'issued');
CREATE INDEX invoices_period ON invoices (tenant_id, period, status);

CREATE TABLE invoice_lines (
    tenant_id       uuid NOT NULL,
    invoice_id      uuid NOT NULL,
    position        int NOT NULL,
    subscription_id uuid NOT NULL,
    app_id          uuid,
    api_id          uuid,
    plan_id         uuid,
    app_name        text NOT NULL,
    api_name        text NOT NULL,
    plan_name       text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('fee', 'included', 'usage')),
    description     text NOT NULL,
    quantity        bigint NOT NULL,
    unit_price_micros bigint NOT NULL,
    amount_minor    bigint NOT NULL,
    PRIMARY KEY (invoice_id, position),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices(tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX invoice_lines_subscription ON invoice_lines (tenant_id, subscription_id);

-- Sequential numbers per tenant, taken in the closing transaction, so they have no gaps.
CREATE TABLE invoice_counters (
    tenant_id       uuid PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    last_number     bigint NOT NULL
);

SELECT tollgate_isolate_tenant_table(t) FROM unnest(ARRAY['invoices', 'invoice_lines', 'invoice_counters']::regclass[]) AS t;

-- Issued invoices are immutable: the only change allowed is issued → void (with its time and
-- reason); void invoices do not change; only drafts may be deleted or have their lines changed.
CREATE FUNCTION tollgate_invoice_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'draft' THEN
            RAISE EXCEPTION 'invoice % is %; only drafts can be deleted', OLD.number, OLD.status USING ERRCODE = 'check_violation';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status = 'void' THEN
        RAISE EXCEPTION 'invoice % is void and cannot change', OLD.number USING ERRCODE = 'check_violation';
    END IF;
    IF OLD.status = 'issued' AND (NEW.status <> 'void'
        OR (NEW.number, NEW.team_id, NEW.team_name, NEW.period, NEW.currency, NEW.total_minor, NEW.issued_at, NEW.replaces_id)
           IS DISTINCT FROM (OLD.number, OLD.team_id, OLD.team_name, OLD.period, OLD.currency, OLD.total_minor, OLD.issued_at, OLD.replaces_id)) THEN
        RAISE EXCEPTION 'invoice % is issued and immutable; void it and re-issue', OLD.number USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER invoices_guard BEFORE UPDATE OR DELETE ON invoices FOR EACH ROW EXECUTE FUNCTION tollgate_invoice_guard();

CREATE FUNCTION tollgate_invoice_line_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    invoice_status text;
BEGIN
    SELECT status INTO invoice_status FROM invoices WHERE id = coalesce(NEW.invoice_id, OLD.invoice_id);
    IF invoice_status IS NOT NULL AND invoice_status <> 'draft' THEN
        RAISE EXCEPTION 'lines of a % invoice cannot change', invoice_status USING ERRCODE = 'check_violation';
    END IF;
    RETURN coalesce(NEW, OLD);
END
$$;
CREATE TRIGGER invoice_lines_guard BEFORE INSERT OR UPDATE OR DELETE ON invoice_lines FOR EACH ROW EXECUTE FUNCTION tollgate_invoice_line_guard();

-- Calls answered, counted by each gateway process in memory as it answers them, independently of
-- the event pipeline, and persisted with the event batches as running totals (so a replay or a
-- reordering can only repeat a total, never add to it). `meter_id` is one gateway process run.
CREATE TABLE usage_answered (
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    meter_id        text NOT NULL,
    subscription_id uuid NOT NULL,
    hour            timestamptz NOT NULL,
    answered        bigint NOT NULL,
    billable        bigint NOT NULL,
    PRIMARY KEY (tenant_id, subscription_id, hour, meter_id)
);
SELECT tollgate_isolate_tenant_table('usage_answered');

-- Rollups keep calls under different plan versions apart (a plan change within an hour would
-- otherwise bill the hour's calls to one of them). No plan is the nil UUID, as for subscriptions.
UPDATE usage_hourly SET plan_id = '00000000-0000-0000-0000-000000000000' WHERE plan_id IS NULL;
ALTER TABLE usage_hourly
    ALTER COLUMN plan_id SET DEFAULT '00000000-0000-0000-0000-000000000000',
    ALTER COLUMN plan_id SET NOT NULL,
    DROP CONSTRAINT usage_hourly_pkey,
    ADD PRIMARY KEY (tenant_id, subscription_id, hour, plan_id);
