import Foundation
import Logging
import PostgresNIO

/// Plan workflows: providers define and revise plans; consumers see the public current ones.
struct PlanService: Sendable {
    let database: Database
    let plans: PlanRepository
    let apis: APIRepository
    let audit: AuditLog

    /// Current plans of an API the viewer can see; hidden plans only for the API's managers.
    func list(tenant: Tenant, viewer: Principal?, apiID: UUID) async throws -> [Plan] {
        try await database.withTenant(tenant.id) { connection in
            guard let api = try await apis.find(id: apiID, on: connection), CatalogVisibility.canSee(viewer, api) else { throw AppError.notFound("API") }
            let manager = viewer.map { Policy.allows($0, .manageAPIs(team: api.teamID)) } ?? false
            return try await plans.current(apiID: apiID, on: connection).filter { manager || $0.terms.visibility == .public }
        }
    }

    func create(tenant: Tenant, actor: Principal, apiID: UUID, terms: PlanTerms, clientIP: String?) async throws -> Plan {
        let terms = try terms.validated()
        return try await database.withTenant(tenant.id) { connection in
            let api = try await managedAPI(apiID, actor: actor, on: connection)
            guard api.state != .retired else { throw AppError.conflict("A retired API takes no new plans.") }
            let plan = try await plans.insert(tenantID: tenant.id, apiID: apiID, family: nil, terms: terms, actor: actor.user.id, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .planCreated, target: "\(api.slug)/\(api.version)/\(terms.name)",
                clientIP: clientIP, on: connection)
            return plan
        }
    }

    /// New terms for a plan: a new version supersedes the current one, never an edit in place.
    func revise(tenant: Tenant, actor: Principal, planID: UUID, terms: PlanTerms, clientIP: String?) async throws -> Plan {
        let terms = try terms.validated()
        return try await database.withTenant(tenant.id) { connection in
            guard let current = try await plans.find(id: planID, on: connection) else { throw AppError.notFound("Plan") }
            let api = try await managedAPI(current.apiID, actor: actor, on: connection)
            guard current.isCurrent else { throw AppError.conflict("Only the current version of a plan can be revised (this is version \(current.version)).") }
            let plan = try await plans.insert(
                tenantID: tenant.id, apiID: current.apiID, family: current.familyID, terms: terms, actor: actor.user.id, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .planRevised, target: "\(api.slug)/\(api.version)/\(terms.name)",
                clientIP: clientIP, details: ["version": String(plan.version)], on: connection)
            return plan
        }
    }

    func show(tenant: Tenant, viewer: Principal?, planID: UUID) async throws -> (Plan, versions: [Plan]) {
        try await database.withTenant(tenant.id) { connection in
            guard let plan = try await plans.find(id: planID, on: connection), let api = try await apis.find(id: plan.apiID, on: connection),
                CatalogVisibility.canSee(viewer, api)
            else { throw AppError.notFound("Plan") }
            let manager = viewer.map { Policy.allows($0, .manageAPIs(team: api.teamID)) } ?? false
            guard manager || plan.terms.visibility == .public else { throw AppError.notFound("Plan") }
            return (plan, manager ? try await plans.versions(familyID: plan.familyID, on: connection) : [plan])
        }
    }

    private func managedAPI(_ id: UUID, actor: Principal, on connection: PostgresConnection) async throws -> APIProduct {
        guard let api = try await apis.find(id: id, on: connection), CatalogVisibility.canSee(actor, api) else { throw AppError.notFound("API") }
        try Policy.authorize(actor, .manageAPIs(team: api.teamID))
        return api
    }
}
