import Testing

@testable import Portal

@Suite struct APILifecycleTests {
    @Test(arguments: [
        (APIState.draft, APILifecycle.Transition.publish, APIState?.some(.published)),
        (.published, .deprecate, .deprecated),
        (.deprecated, .undeprecate, .published),
        (.published, .retire, .retired),
        (.deprecated, .retire, .retired),
        (.draft, .retire, .retired),
        (.draft, .deprecate, nil),
        (.published, .publish, nil),
        (.retired, .publish, nil),
        (.retired, .undeprecate, nil),
        (.retired, .retire, nil),
        (.published, .undeprecate, nil),
    ])
    func transitions(from: APIState, transition: APILifecycle.Transition, to expected: APIState?) {
        let next = try? APILifecycle.apply(transition, to: from)
        #expect(next == expected)
    }

    @Test func illegalTransitionExplainsWhatIsAllowed() {
        do {
            _ = try APILifecycle.apply(.deprecate, to: .draft)
            Issue.record("expected a refusal")
        } catch {
            #expect(error.description.contains("draft"))
            #expect(error.description.contains("publish, retire"))
        }
        #expect(APILifecycle.allowed(from: .retired).isEmpty)
    }

    @Test func whatEachStateAllows() {
        #expect(APIState.allCases.filter(\.acceptsNewSubscriptions) == [.published])
        #expect(APIState.allCases.filter(\.servesTraffic) == [.published, .deprecated])
    }
}

@Suite struct SubscriptionStateMachineTests {
    typealias Machine = SubscriptionStateMachine

    @Test(arguments: [
        (Machine.Event.request(automaticApproval: true), SubscriptionState?.none, SubscriptionActor.developer, SubscriptionState?.some(.active)),
        (.request(automaticApproval: false), nil, .developer, .pending),
        (.request(automaticApproval: true), .active, .developer, nil),
        (.request(automaticApproval: true), nil, .provider, nil),
        (.approve, .pending, .provider, .active),
        (.approve, .pending, .developer, nil),
        (.approve, .active, .provider, nil),
        (.reject(reason: "not a fit"), .pending, .provider, .rejected),
        (.reject(reason: "  "), .pending, .provider, nil),
        (.reject(reason: "x"), .active, .provider, nil),
        (.suspend(reason: "abuse"), .active, .provider, .suspended),
        (.suspend(reason: "abuse"), .active, .developer, nil),
        (.suspend(reason: "abuse"), .pending, .provider, nil),
        (.resume, .suspended, .provider, .active),
        (.resume, .suspended, .developer, nil),
        (.resume, .active, .provider, nil),
        (.cancel, .active, .developer, .cancelled),
        (.cancel, .pending, .developer, .cancelled),
        (.cancel, .suspended, .developer, .cancelled),
        (.cancel, .active, .provider, nil),
        (.cancel, .cancelled, .developer, nil),
        (.cancel, .rejected, .developer, nil),
        (.changePlan(automaticApproval: true), .active, .developer, .active),
        (.changePlan(automaticApproval: true), .suspended, .developer, nil),
        (.changePlan(automaticApproval: false), .active, .developer, .active),
        (.withdrawPlanChange, .active, .developer, nil),
    ])
    func events(event: Machine.Event, from: SubscriptionState?, actor: SubscriptionActor, to expected: SubscriptionState?) {
        let next = try? Machine.apply(event, to: SubscriptionPosition(state: from), by: actor)
        #expect(next?.state == expected)
    }

    /// A change to a manual plan is a request: same state, same plan, until the provider decides.
    @Test(arguments: [
        (Machine.Event.changePlan(automaticApproval: false), SubscriptionPosition.of(.active), SubscriptionActor.developer,
            SubscriptionTransition?.some(.init(state: .active, plan: .request, name: "request_plan_change"))),
        (.changePlan(automaticApproval: false), .of(.active), .provider, .init(state: .active, plan: .switchNow, name: "change_plan")),
        (.changePlan(automaticApproval: true), .of(.active), .developer, .init(state: .active, plan: .switchNow, name: "change_plan")),
        (.changePlan(automaticApproval: true), .of(.active, planChangeRequested: true), .developer,
            .init(state: .active, plan: .switchNow, name: "change_plan")),
        (.approve, .of(.active, planChangeRequested: true), .provider, .init(state: .active, plan: .applyRequested, name: "approve_plan_change")),
        (.approve, .of(.active, planChangeRequested: true), .developer, nil),
        (.approve, .of(.active), .provider, nil),
        (.reject(reason: "no"), .of(.active, planChangeRequested: true), .provider, .init(state: .active, plan: .dropRequest, name: "reject_plan_change")),
        (.reject(reason: " "), .of(.active, planChangeRequested: true), .provider, nil),
        (.withdrawPlanChange, .of(.active, planChangeRequested: true), .developer,
            .init(state: .active, plan: .dropRequest, name: "withdraw_plan_change")),
        (.withdrawPlanChange, .of(.active, planChangeRequested: true), .provider, nil),
        (.suspend(reason: "abuse"), .of(.active, planChangeRequested: true), .provider, .init(state: .suspended, plan: .dropRequest, name: "suspend")),
        (.cancel, .of(.active, planChangeRequested: true), .developer, .init(state: .cancelled, plan: .dropRequest, name: "cancel")),
        (.cancel, .of(.active), .developer, .init(state: .cancelled, plan: .unchanged, name: "cancel")),
    ])
    func planChanges(event: Machine.Event, from: SubscriptionPosition, actor: SubscriptionActor, to expected: SubscriptionTransition?) {
        #expect((try? Machine.apply(event, to: from, by: actor)) == expected)
    }

    @Test func refusalsSayWhy() {
        #expect(throws: Machine.Refusal.reasonRequired(event: "reject")) { try Machine.apply(.reject(reason: ""), to: .of(.pending), by: .provider) }
        #expect(throws: Machine.Refusal.wrongActor(event: "approve", actor: .developer)) { try Machine.apply(.approve, to: .of(.pending), by: .developer) }
        #expect(throws: Machine.Refusal.notAllowed(state: .cancelled, event: "resume")) { try Machine.apply(.resume, to: .of(.cancelled), by: .provider) }
    }

    @Test func openStatesBlockASecondSubscription() {
        #expect(SubscriptionState.allCases.filter(\.isOpen) == [.pending, .active, .suspended])
        #expect(SubscriptionState.allCases.filter(\.allowsTraffic) == [.active])
    }
}

@Suite struct SubscriptionActionsOfferedTests {
    @Test(arguments: [
        (SubscriptionState.pending, SubscriptionActor.provider, [SubscriptionService.Action.approve, .reject]),
        (.pending, .developer, [.cancel]),
        (.active, .provider, [.suspend, .changePlan]),
        (.active, .developer, [.cancel, .changePlan]),
        (.suspended, .provider, [.resume]),
        (.suspended, .developer, [.cancel]),
        (.cancelled, .developer, []),
        (.rejected, .provider, []),
    ])
    func offersOnlyWhatTheStateMachineAccepts(state: SubscriptionState, side: SubscriptionActor, expected: [SubscriptionService.Action]) {
        #expect(SubscriptionService.allowedActions(position: .of(state), side: side) == expected)
    }

    @Test func aPendingPlanChangeOffersTheProviderApproveAndRejectAndTheDeveloperWithdraw() {
        let position = SubscriptionPosition.of(.active, planChangeRequested: true)
        #expect(SubscriptionService.allowedActions(position: position, side: .provider) == [.approve, .reject, .suspend, .changePlan])
        #expect(SubscriptionService.allowedActions(position: position, side: .developer) == [.cancel, .changePlan, .withdrawPlanChange])
    }
}
