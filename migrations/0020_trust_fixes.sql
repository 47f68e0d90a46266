-- A plan change to a plan that needs approval waits for the provider: the subscription keeps its
-- plan (and keeps being served and billed on it) while `requested_plan_id` holds the request.
ALTER TABLE subscriptions ADD COLUMN requested_plan_id uuid;
ALTER TABLE subscriptions ADD COLUMN plan_change_requested_at timestamptz;
ALTER TABLE subscriptions ADD FOREIGN KEY (tenant_id, requested_plan_id) REFERENCES plans(tenant_id, id);
ALTER TABLE subscriptions ADD CONSTRAINT subscriptions_request_only_when_active
    CHECK (requested_plan_id IS NULL OR state = 'active');
-- The history names the plan a request asked for (to_plan_id stays the plan after the event).
ALTER TABLE subscription_events ADD COLUMN requested_plan_id uuid;

-- Whether apps of a team may use an API: public, owned by the team, or the team is allowed.
-- The app's team decides (never the caller's other teams); the portal's Swift twin is
-- CatalogVisibility.isOpen. Used by the gateway snapshot and the token endpoint's scopes.
CREATE FUNCTION tollgate_api_open_to_team(p_api uuid, p_team uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM apis a
        WHERE a.id = p_api AND (a.visibility = 'public' OR a.team_id = p_team
            OR EXISTS (SELECT 1 FROM api_allowed_teams t WHERE t.api_id = a.id AND t.team_id = p_team)))
$$;

-- Allowed teams decide which subscriptions the gateway serves, so their changes reach gateways too.
CREATE TRIGGER notify_config AFTER INSERT OR UPDATE OR DELETE ON api_allowed_teams
    FOR EACH ROW EXECUTE FUNCTION tollgate_notify_config();

-- Custom hosts are compared as DNS compares them: case-insensitively and without the root dot.
UPDATE tenants SET custom_host = lower(rtrim(custom_host, '.')) WHERE custom_host IS NOT NULL;
CREATE UNIQUE INDEX tenants_custom_host_lower ON tenants (lower(custom_host));

-- A rotated-in key is published (JWKS, gateway snapshots) before it signs: tokens are signed with
-- it only from `signs_from`, while the key it replaces keeps signing until then.
ALTER TABLE signing_keys ADD COLUMN signs_from timestamptz NOT NULL DEFAULT now();

-- Audit events are shown and paged by a random id: the bigserial is one sequence for every tenant,
-- so showing it told each tenant how busy the others were.
ALTER TABLE audit_events ADD COLUMN public_id uuid NOT NULL DEFAULT gen_random_uuid();
CREATE UNIQUE INDEX audit_events_public_id ON audit_events (public_id);
